//! The server console: `servermain` started on a terminal reads operator commands from
//! its standard input (the session engine's interactive console). Off when stdin is
//! not a terminal, so a server under a supervisor or in a pipe never waits on it.

use std::io::BufRead;
use std::sync::Arc;

use crate::protocol::{Format, Reply};
use crate::server::ServerHandle;

const HELP: &str = "server console commands:
  clients         who is connected (CLIENTS)
  kick <id>       close a connection at once (it gets BYE kicked)
  channels        channels and their subscribers (CHANNELS)
  tables          tables and their rows (TABLES)
  save            take a snapshot now (SAVE)
  stats           the server's figures (INFO)
  log <level>     log at most this much: off, error, warn, info, debug, trace
                  (up to what RUST_LOG allowed at start)
  shutdown        stop the server as Ctrl-C does
  help            this list";

/// Whether standard input is a terminal.
pub fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only reads the descriptor's state.
    unsafe { libc::isatty(0) == 1 }
}

/// What one operator line does: the text to print, and whether to stop the server.
pub fn run_line(server: &ServerHandle, line: &str) -> (String, bool) {
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next() else {
        return (String::new(), false);
    };
    let arg = words.next();
    let wire = |line: &str| text(&server.operate(line));
    let out = match (cmd.to_ascii_lowercase().as_str(), arg) {
        ("help", _) => HELP.to_string(),
        ("clients", None) => wire("CLIENTS"),
        ("channels", None) => wire("CHANNELS"),
        ("tables", None) => wire("TABLES"),
        ("save", None) => wire("SAVE"),
        ("stats", None) => wire("INFO"),
        ("kick", Some(id)) => match id.parse::<u64>() {
            Ok(n) if server.kick(n) => format!("connection {n} closed (BYE kicked)"),
            Ok(n) => format!("no connection {n} (clients lists them)"),
            Err(_) => format!("'{id}' is not a connection id (clients lists them)"),
        },
        ("log", Some(level)) => match level.parse::<log::LevelFilter>() {
            Ok(l) => {
                log::set_max_level(l);
                format!("logging at most {l}")
            }
            Err(_) => format!("'{level}' is no level: off, error, warn, info, debug, trace"),
        },
        ("shutdown", None) => return ("shutting down".into(), true),
        _ => format!("unknown or incomplete command '{}'; type help", line.trim()),
    };
    (out, false)
}

/// A reply as the text protocol writes it, without the final newline.
fn text(reply: &Reply) -> String {
    let mut out = Vec::new();
    reply.encode(Format::Text, None, &mut out);
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// Reads operator lines from stdin on a thread of its own until stdin closes or the
/// operator asks for `shutdown` (then `stop` is sent).
pub fn start(
    server: std::sync::Weak<parking_lot::Mutex<ServerHandle>>,
    stop: crossbeam_channel::Sender<()>,
) -> std::io::Result<()> {
    println!("server console: type help for commands");
    std::thread::Builder::new()
        .name("operator".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let Some(server) = server.upgrade() else {
                    break;
                };
                let (out, shutdown) = run_line(&server.lock(), &line);
                drop(server);
                if !out.is_empty() {
                    println!("{out}");
                }
                if shutdown {
                    let _ = stop.try_send(());
                    break;
                }
            }
        })
        .map(|_| ())
}

/// Starts the console if stdin is a terminal.
pub fn start_if_terminal(
    server: &Arc<parking_lot::Mutex<ServerHandle>>,
    stop: crossbeam_channel::Sender<()>,
) {
    if !stdin_is_terminal() {
        return;
    }
    if let Err(e) = start(Arc::downgrade(server), stop) {
        log::warn!("cannot start the server console: {e}");
    }
}
