//! `clientmain HOST PORT`: talk to a leviathan server by hand or from a script.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use leviathan::console::{Console, Printer, Stdout, Style};
use parking_lot::Mutex;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter, Helper};

/// Interactive client for leviathan. With a terminal: a prompt with line editing,
/// history and tab completion, and messages shown the moment they arrive. With stdin
/// from a file or pipe: runs each line in order, prints each reply, and exits non-zero
/// if a command failed.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  clientmain 127.0.0.1 7000\n  \
echo 'PING' | clientmain 127.0.0.1 7000\n  clientmain 127.0.0.1 7000 -c 'SUB news' --wait 10\n\
Colours are used on a terminal unless NO_COLOR is set."
)]
struct Args {
    /// Server host
    host: String,
    /// Server port
    port: u16,
    /// Run one command, print its reply, and exit
    #[arg(short = 'c', long = "command")]
    command: Option<String>,
    /// Show the exact lines the server sends
    #[arg(long)]
    raw: bool,
    /// Pretty-print JSON replies and pushes (send JSON requests, one object per line)
    #[arg(long)]
    json: bool,
    /// In a script, run every line even after a command fails (still exits non-zero)
    #[arg(long)]
    keep_going: bool,
    /// After the script or -c command, keep printing pushes for this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let addr = format!("{}:{}", args.host, args.port);
    let interactive = args.command.is_none() && std::io::stdin().is_terminal();
    let style = Style {
        raw: args.raw,
        json: args.json,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        notices: interactive,
    };
    if interactive {
        return run_interactive(&addr, style);
    }
    let console = match Console::connect(&addr, style, Arc::new(Stdout)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clientmain: cannot connect to {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    let lines: Box<dyn Iterator<Item = String>> = match &args.command {
        Some(c) => Box::new(std::iter::once(c.clone())),
        None => Box::new(std::io::stdin().lock().lines().map_while(Result::ok)),
    };
    for line in lines {
        match console.run(&line) {
            Ok(true) => {}
            Ok(false) => failed = true,
            Err(e) => {
                eprintln!("clientmain: {line}: {e}");
                failed = true;
            }
        }
        if failed && !args.keep_going {
            break;
        }
    }
    if args.wait > 0 && (!failed || args.keep_going) {
        std::thread::sleep(Duration::from_secs(args.wait));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints above the prompt without disturbing what the user is typing.
struct PromptPrinter(Mutex<Box<dyn ExternalPrinter + Send>>);

impl Printer for PromptPrinter {
    fn print(&self, mut text: String) {
        // rustyline prints the text as it is and then redraws the prompt over the
        // current line: without its own newline, the text would be erased.
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = self.0.lock().print(text);
    }
}

/// Completes command names at the start of the line.
struct Commands(Vec<&'static str>);

impl Completer for Commands {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        if head.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let upper = head.to_ascii_uppercase();
        let found = self
            .0
            .iter()
            .filter(|c| c.starts_with(&upper))
            .map(|c| Pair {
                display: c.to_string(),
                replacement: format!("{c} "),
            })
            .collect();
        Ok((0, found))
    }
}

impl Hinter for Commands {
    type Hint = String;
}
impl Highlighter for Commands {}
impl Validator for Commands {}
impl Helper for Commands {}

fn history_file() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".leviathan_history"))
}

fn run_interactive(addr: &str, style: Style) -> ExitCode {
    let mut editor: Editor<Commands, DefaultHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("clientmain: cannot open the terminal: {e}");
            return ExitCode::FAILURE;
        }
    };
    editor.set_helper(Some(Commands(leviathan::commands::names())));
    let history = history_file();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let printer: Arc<dyn Printer> = match editor.create_external_printer() {
        Ok(p) => Arc::new(PromptPrinter(Mutex::new(Box::new(p)))),
        Err(_) => Arc::new(Stdout),
    };
    let console = match Console::connect(addr, style, printer.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clientmain: cannot connect to {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("leviathan at {addr}. Type HELP for commands; Ctrl-D or QUIT to leave.");
    loop {
        match editor.readline("leviathan> ") {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                let quit = line.trim().eq_ignore_ascii_case("quit");
                if let Err(e) = console.run(&line) {
                    printer.print(format!("{e}"));
                }
                if quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) | Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("clientmain: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    ExitCode::SUCCESS
}
