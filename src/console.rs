//! The engine of `clientmain`: a line-mode connection that sends what the user types
//! (text or JSON), prints pushes the moment they arrive, waits for each reply, and
//! formats both for people (or shows the exact wire lines with `raw`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// Where output goes: stdout, or above an interactive prompt.
pub trait Printer: Send + Sync {
    fn print(&self, text: String);
}

/// Prints to stdout.
pub struct Stdout;

impl Printer for Stdout {
    fn print(&self, text: String) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// How output looks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    /// Show the exact lines the server sent.
    pub raw: bool,
    /// Pretty-print JSON replies and pushes.
    pub json: bool,
    /// ANSI colours (only on a terminal, never with `NO_COLOR`).
    pub color: bool,
    /// Say when connected, lost and back (interactive use).
    pub notices: bool,
}

/// A reply: its item lines and its final status line.
#[derive(Debug)]
pub struct ReplyLines {
    pub items: Vec<String>,
    pub status: String,
}

impl ReplyLines {
    /// Whether the server accepted the command.
    pub fn ok(&self) -> bool {
        if let Some(json) = self.status.strip_prefix('{') {
            return serde_json::from_str::<serde_json::Value>(&format!("{{{json}"))
                .map(|v| v["ok"] == serde_json::Value::Bool(true))
                .unwrap_or(false);
        }
        self.status.starts_with('+')
    }
}

enum FromReader {
    Reply(ReplyLines),
    Lost,
}

/// A connection driven by a person or a script.
pub struct Console {
    addr: String,
    style: Style,
    out: Arc<dyn Printer>,
    /// Shared with the reader, which replaces it after a reconnection.
    writer: Arc<Mutex<Option<TcpStream>>>,
    replies: crossbeam_channel::Receiver<FromReader>,
    quitting: Arc<AtomicBool>,
    /// What the server accepted that a reconnection must bring back.
    state: Arc<Mutex<State>>,
}

/// The lines that set up this connection's state, as the user typed them: sent again
/// after a reconnection.
#[derive(Debug, Default)]
struct State {
    name: Option<String>,
    /// The line that takes up the session after a reconnect (`RESUME <token>`, from a
    /// `LOGIN`'s or `RESUME`'s reply); it restores the name with it.
    session: Option<String>,
    /// Channel or pattern → the SUB line.
    subs: std::collections::BTreeMap<String, String>,
    /// Table → the WATCH line.
    watches: std::collections::BTreeMap<String, String>,
    /// History channels subscribed by name → the offset of the last message received
    /// and its epoch: a reconnection resumes after it (`SUB … SINCE … EPOCH …`).
    positions: std::collections::BTreeMap<String, (u64, String)>,
    /// Channels whose `SUB` (typed, or sent again after a reconnection) awaits its
    /// reply → the text `MSG` lines received on it meanwhile. A subscriber of a
    /// history channel gets every message after the reply's offset, in order, so the
    /// reply's offset plus this count is the last one received (text lines carry no
    /// offset).
    counting: std::collections::BTreeMap<String, u64>,
}

/// The `offset=`, `epoch=` and `recovered=` of a `SUB` reply on a history channel
/// (text or JSON).
fn history_fields(status: &str) -> Option<(u64, String, Option<bool>)> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(status) {
        let h = &v["history"];
        let offset = h["offset"].as_u64()?;
        let epoch = h["epoch"].as_str()?.to_string();
        return Some((offset, epoch, h["recovered"].as_bool()));
    }
    let field = |k: &str| {
        status
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
    };
    let offset = field("offset")?.parse().ok()?;
    let epoch = field("epoch")?.to_string();
    Some((offset, epoch, field("recovered").map(|r| r == "true")))
}

/// The channel of a `SUB` line that could resume (an exact channel without `WHERE`),
/// and whether it is JSON.
fn resumable_sub(line: &str) -> Option<(String, bool)> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        let ok = v["op"]
            .as_str()
            .is_some_and(|o| o.eq_ignore_ascii_case("sub"))
            && v.get("where").is_none();
        let c = v["channel"].as_str().filter(|c| ok && is_exact(c))?;
        return Some((c.to_string(), true));
    }
    let mut words = line.split_whitespace();
    let verb = words.next()?;
    let c = words.next()?;
    (verb.eq_ignore_ascii_case("SUB") && words.next().is_none() && is_exact(c))
        .then(|| (c.to_string(), false))
}

fn is_exact(channel: &str) -> bool {
    !channel.split('.').any(|t| t == "*" || t == ">")
}

impl State {
    /// Notes a line the server accepted (text or JSON), with the reply's status line.
    fn accepted(&mut self, line: &str, status: &str) {
        let (verb, arg) = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => {
                let op = v["op"].as_str().unwrap_or_default().to_ascii_uppercase();
                let arg = ["name", "channel", "table"]
                    .iter()
                    .find_map(|k| v[*k].as_str())
                    .unwrap_or_default()
                    .to_string();
                (op, arg)
            }
            Err(_) => {
                let mut words = line.split_whitespace();
                let verb = words.next().unwrap_or_default().to_ascii_uppercase();
                (verb, words.next().unwrap_or_default().to_string())
            }
        };
        match verb.as_str() {
            "NAME" => self.name = Some(line.to_string()),
            "LOGIN" | "RESUME" => {
                let token = if verb == "RESUME" {
                    Some(arg.clone()).filter(|t| !t.is_empty()).or_else(|| {
                        serde_json::from_str::<serde_json::Value>(line)
                            .ok()
                            .and_then(|v| v["token"].as_str().map(str::to_string))
                    })
                } else {
                    session_token(status)
                };
                if let Some(t) = token {
                    self.session = Some(format!("RESUME {t}"));
                    self.name = None;
                }
            }
            "LOGOUT" => self.session = None,
            "SUB" => {
                self.started(&arg, status);
                self.subs.insert(arg, line.to_string());
            }
            "UNSUB" => {
                self.subs.remove(&arg);
                self.positions.remove(&arg);
                self.counting.remove(&arg);
            }
            "WATCH" => {
                self.watches.insert(arg, line.to_string());
            }
            "UNWATCH" => {
                self.watches.remove(&arg);
            }
            _ => {}
        }
    }

    /// A `SUB` of `channel` was answered `status`: on a history channel, notes where
    /// its messages start (a resume that recovered keeps the position it resumed
    /// from). Returns the reply's `recovered=`, if any.
    fn started(&mut self, channel: &str, status: &str) -> Option<bool> {
        let counted = self.counting.remove(channel).unwrap_or(0);
        let Some((offset, epoch, recovered)) = history_fields(status) else {
            // A subscription renewed (the server says nothing new): what came
            // meanwhile still counts.
            if let Some((o, _)) = self.positions.get_mut(channel) {
                *o += counted;
            }
            return None;
        };
        let base = match (recovered, self.positions.get(channel)) {
            (Some(true), Some((o, e))) if *e == epoch => *o,
            _ => offset,
        };
        self.position(channel, base + counted, &epoch);
        recovered
    }

    /// Everything up to `offset` of `epoch` on `channel` was received; within an epoch
    /// the highest wins, a new epoch replaces the old one.
    fn position(&mut self, channel: &str, offset: u64, epoch: &str) {
        match self.positions.get_mut(channel) {
            Some((o, e)) if e == epoch => *o = (*o).max(offset),
            _ => {
                self.positions
                    .insert(channel.to_string(), (offset, epoch.to_string()));
            }
        }
    }

    /// A push arrived: a message on a history channel moves its position on.
    fn pushed(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("MSG ") {
            let channel = rest.split(' ').next().unwrap_or_default();
            if let Some(n) = self.counting.get_mut(channel) {
                *n += 1;
            } else if let Some((o, _)) = self.positions.get_mut(channel) {
                *o += 1;
            }
        } else if line.starts_with('{') {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                return;
            };
            if let (Some(c), Some(o), Some(e)) = (
                v["channel"].as_str(),
                v["offset"].as_u64(),
                v["epoch"].as_str(),
            ) {
                if v["event"] == "msg" && self.subs.contains_key(c) {
                    self.position(c, o, e);
                }
            }
        }
    }

    /// A line is about to be sent: a `SUB` of a channel starts counting its messages.
    fn sending(&mut self, line: &str) {
        if let Some((channel, false)) = resumable_sub(line) {
            self.counting.insert(channel, 0);
        }
    }

    /// The lines that bring this connection's state back; history channels resume
    /// after the last message received.
    fn lines(&mut self) -> Vec<String> {
        let mut v: Vec<String> = self.session.iter().cloned().collect();
        v.extend(self.name.iter().cloned());
        let mut subs = Vec::new();
        for (channel, line) in &self.subs {
            let Some(((offset, epoch), (_, json))) =
                self.positions.get(channel).zip(resumable_sub(line))
            else {
                subs.push(line.clone());
                continue;
            };
            if json {
                let mut req: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                req["since"] = (*offset).into();
                req["epoch"] = epoch.as_str().into();
                subs.push(req.to_string());
            } else {
                subs.push(format!("SUB {channel} SINCE {offset} EPOCH {epoch}"));
                self.counting.insert(channel.clone(), 0);
            }
        }
        v.extend(subs);
        v.extend(self.watches.values().cloned());
        v
    }
}

/// The session token in a `LOGIN` reply, text (`+OK user=… session=<token>`) or JSON.
fn session_token(status: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(status) {
        return v["login"]["session"].as_str().map(str::to_string);
    }
    status
        .split_whitespace()
        .find_map(|f| f.strip_prefix("session="))
        .map(str::to_string)
}

/// How long a command waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl Console {
    /// Connects to `addr` and starts the reader thread.
    pub fn connect(addr: &str, style: Style, out: Arc<dyn Printer>) -> io::Result<Console> {
        let stream = dial(addr)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let quitting = Arc::new(AtomicBool::new(false));
        let writer = Arc::new(Mutex::new(Some(stream.try_clone()?)));
        let state = Arc::new(Mutex::new(State::default()));
        let reader = Reader {
            addr: addr.to_string(),
            style,
            out: out.clone(),
            replies: tx,
            quitting: quitting.clone(),
            writer: writer.clone(),
            state: state.clone(),
        };
        std::thread::Builder::new()
            .name("console-reader".into())
            .spawn(move || reader.run(stream))?;
        Ok(Console {
            addr: addr.to_string(),
            style,
            out,
            writer,
            replies: rx,
            quitting,
            state,
        })
    }

    /// Sends one line and prints its reply. `Ok(true)` when the server accepted it.
    pub fn run(&self, line: &str) -> io::Result<bool> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(true);
        }
        if line.trim().eq_ignore_ascii_case("quit") || is_json_quit(line) {
            self.quitting.store(true, Ordering::Release);
        }
        // Drop replies left over from a command that timed out.
        while self.replies.try_recv().is_ok() {}
        self.state.lock().sending(line);
        {
            let mut w = self.writer.lock();
            let Some(s) = w.as_mut() else {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "not connected (reconnecting)",
                ));
            };
            s.write_all(line.as_bytes())?;
            s.write_all(b"\n")?;
        }
        match self.replies.recv_timeout(REPLY_TIMEOUT) {
            Ok(FromReader::Reply(r)) => {
                let ok = r.ok();
                if ok {
                    self.state.lock().accepted(line, &r.status);
                }
                for l in format_reply(&r, self.style) {
                    self.out.print(l);
                }
                Ok(ok)
            }
            Ok(FromReader::Lost) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection was lost before the reply",
            )),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no reply in time")),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }
}

fn is_json_quit(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .map(|v| v["op"] == "quit")
        .unwrap_or(false)
}

fn dial(addr: &str) -> io::Result<TcpStream> {
    let sock = addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot resolve {addr}"),
        )
    })?;
    let s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    Ok(s)
}

struct Reader {
    addr: String,
    style: Style,
    out: Arc<dyn Printer>,
    replies: crossbeam_channel::Sender<FromReader>,
    quitting: Arc<AtomicBool>,
    writer: Arc<Mutex<Option<TcpStream>>>,
    state: Arc<Mutex<State>>,
}

impl Reader {
    fn run(self, mut stream: TcpStream) {
        let mut restoring = Vec::new();
        loop {
            self.serve(&stream, std::mem::take(&mut restoring));
            let _ = self.replies.send(FromReader::Lost);
            if self.quitting.load(Ordering::Acquire) {
                return;
            }
            *self.writer.lock() = None;
            self.notice(format!("connection to {} lost; reconnecting...", self.addr));
            let mut wait = Duration::from_millis(100);
            loop {
                std::thread::sleep(wait);
                if let Ok(s) = dial(&self.addr) {
                    if let Ok(mut w) = s.try_clone() {
                        self.notice(format!("reconnected to {}", self.addr));
                        // Sent before the user can type again, so their replies come
                        // first; the reader answers them itself.
                        restoring = self.state.lock().lines();
                        for l in &restoring {
                            let _ = w.write_all(format!("{l}\n").as_bytes());
                        }
                        *self.writer.lock() = Some(w);
                        stream = s;
                        break;
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }

    fn notice(&self, text: String) {
        if self.style.notices {
            self.out.print(paint(&text, DIM, self.style));
        } else {
            eprintln!("{text}");
        }
    }

    /// Reads until the connection ends. The first replies answer `restoring`, the
    /// lines sent again after a reconnection: each is reported, not handed to `run`.
    fn serve(&self, stream: &TcpStream, restoring: Vec<String>) {
        let mut restoring = restoring.into_iter();
        let mut failed = 0;
        let Ok(s) = stream.try_clone() else { return };
        let mut reader = BufReader::new(s);
        let mut items = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end_matches(['\r', '\n']).to_string();
            if l.starts_with("HELLO ") {
                if self.style.raw {
                    self.out.print(l);
                } else if self.style.notices {
                    self.out
                        .print(paint(&format!("connected: {l}"), DIM, self.style));
                }
                continue;
            }
            match classify(&l) {
                Kind::Item => items.push(l),
                Kind::Status => {
                    let r = ReplyLines {
                        items: std::mem::take(&mut items),
                        status: l,
                    };
                    if let Some(line) = restoring.next() {
                        if r.ok() {
                            self.notice(format!("restored: {line}"));
                            if let Some((channel, _)) = resumable_sub(&line)
                                .or_else(|| resumed_channel(&line).map(|c| (c, false)))
                            {
                                if self.state.lock().started(&channel, &r.status) == Some(false) {
                                    self.notice(format!(
                                        "messages published on {channel} while disconnected are lost: its history no longer holds them all (REPLAY {channel} shows what it keeps)"
                                    ));
                                }
                            }
                        } else {
                            failed += 1;
                            let why = format_reply(
                                &r,
                                Style {
                                    color: false,
                                    ..self.style
                                },
                            );
                            self.notice(format!("NOT restored: {line}: {}", why.join(" ")));
                        }
                        if restoring.len() == 0 && failed > 0 {
                            self.notice(format!(
                                "{failed} part(s) of this session could not be restored"
                            ));
                        }
                        continue;
                    }
                    let _ = self.replies.send(FromReader::Reply(r));
                }
                Kind::Push if is_server_ping(&l) => {
                    // Answered for the person, who need not see it.
                    if let Some(s) = self.writer.lock().as_mut() {
                        let _ = s.write_all(if l.starts_with('{') {
                            b"{\"op\":\"pong\"}\n"
                        } else {
                            b"PONG\n"
                        });
                    }
                }
                Kind::Push => {
                    self.state.lock().pushed(&l);
                    self.out.print(format_push(&l, self.style))
                }
            }
        }
    }
}

/// The channel a resuming `SUB … SINCE …` line (text or JSON) names.
fn resumed_channel(line: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return v["channel"].as_str().map(str::to_string);
    }
    let mut words = line.split_whitespace();
    let verb = words.next()?;
    let channel = words.next()?;
    let since = words.next()?;
    (verb.eq_ignore_ascii_case("SUB") && since.eq_ignore_ascii_case("SINCE"))
        .then(|| channel.to_string())
}

/// The server's `PING` push (text or JSON) to a client that has been silent.
fn is_server_ping(l: &str) -> bool {
    l == "PING" || l == r#"{"event":"ping"}"#
}

enum Kind {
    Item,
    Status,
    Push,
}

fn classify(l: &str) -> Kind {
    if l.starts_with('{') {
        return match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v.get("event").is_some() => Kind::Push,
            _ => Kind::Status,
        };
    }
    match l.as_bytes().first() {
        Some(b'*') => Kind::Item,
        Some(b'+') | Some(b'-') => Kind::Status,
        _ => Kind::Push,
    }
}

const RED: &str = "31";
const CYAN: &str = "36";
const DIM: &str = "2";

fn paint(text: &str, code: &str, style: Style) -> String {
    if style.color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn pretty(l: &str) -> String {
    serde_json::from_str::<serde_json::Value>(l)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| l.to_string())
}

/// A reply's lines as people read them: items indented, `+` dropped, errors spelled out.
pub fn format_reply(r: &ReplyLines, style: Style) -> Vec<String> {
    if style.raw {
        return r.items.iter().cloned().chain([r.status.clone()]).collect();
    }
    let mut out: Vec<String> = r
        .items
        .iter()
        .map(|i| format!("  {}", i.strip_prefix("* ").unwrap_or(i)))
        .collect();
    let s = &r.status;
    let status = if s.starts_with('{') {
        let text = if style.json { pretty(s) } else { s.clone() };
        if r.ok() {
            text
        } else {
            paint(&text, RED, style)
        }
    } else if let Some(rest) = s.strip_prefix("-ERR ") {
        let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        paint(&format!("error ({code}): {msg}"), RED, style)
    } else {
        s.strip_prefix('+').unwrap_or(s).to_string()
    };
    out.push(status);
    out
}

/// A push as people read it: `[news] alice: hello`.
pub fn format_push(l: &str, style: Style) -> String {
    if style.raw {
        return l.to_string();
    }
    if l.starts_with('{') {
        return paint(
            &if style.json { pretty(l) } else { l.to_string() },
            CYAN,
            style,
        );
    }
    let mut parts = l.splitn(2, ' ');
    let verb = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    let text = match verb {
        "MSG" => {
            let mut p = rest.splitn(3, ' ');
            let (ch, from, msg) = (
                p.next().unwrap_or(""),
                p.next().unwrap_or(""),
                p.next().unwrap_or(""),
            );
            format!("[{ch}] {from}: {msg}")
        }
        "DM" => {
            let (from, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            format!("(direct) {from}: {msg}")
        }
        "ROW" => {
            let (table, change) = rest.split_once(' ').unwrap_or((rest, ""));
            format!("[{table}] {change}")
        }
        "REQ" => {
            // REQ <req-id> <service> <from> [payload]
            let mut p = rest.splitn(4, ' ');
            let (req, service, from, data) = (
                p.next().unwrap_or(""),
                p.next().unwrap_or(""),
                p.next().unwrap_or(""),
                p.next().unwrap_or(""),
            );
            format!(
                "request {req} for {service} from {from}: {data}  (answer: REPLY {req} <answer>, or FAIL {req} <code> <message>)"
            )
        }
        "DROPPED" => format!("[{rest}] channel dropped"),
        "BYE" => format!("server closed the connection: {rest}"),
        _ => l.to_string(),
    };
    paint(&text, CYAN, style)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_for_people() {
        let s = Style::default();
        assert_eq!(
            format_push("MSG news alice hello there", s),
            "[news] alice: hello there"
        );
        assert_eq!(format_push("DM bob hi", s), "(direct) bob: hi");
        assert_eq!(
            format_push("ROW users insert id=1 name=a", s),
            "[users] insert id=1 name=a"
        );
        assert_eq!(
            format_push("BYE shutdown", s),
            "server closed the connection: shutdown"
        );
        let r = ReplyLines {
            items: vec!["* news 2".into()],
            status: "+OK 1".into(),
        };
        assert_eq!(format_reply(&r, s), vec!["  news 2", "OK 1"]);
        let e = ReplyLines {
            items: vec![],
            status: "-ERR no_such_channel no channel named 'x'".into(),
        };
        assert!(!e.ok());
        assert_eq!(
            format_reply(&e, s),
            vec!["error (no_such_channel): no channel named 'x'"]
        );
        let j = ReplyLines {
            items: vec![],
            status: r#"{"ok":false,"error":{"code":"x","message":"y"}}"#.into(),
        };
        assert!(!j.ok());
        let colored = Style { color: true, ..s };
        assert!(format_push("MSG a b c", colored).starts_with("\x1b[36m"));
        let raw = Style { raw: true, ..s };
        assert_eq!(format_push("MSG a b c", raw), "MSG a b c");
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;

    #[test]
    fn a_login_is_taken_up_again_with_its_token_not_the_password() {
        let mut s = State::default();
        s.accepted("NAME visitor", "+OK name=visitor");
        s.accepted("SUB news", "+OK");
        s.accepted(
            "LOGIN ann secret-pw",
            "+OK user=ann role=user session=abc123",
        );
        assert_eq!(s.lines(), ["RESUME abc123", "SUB news"]);
        assert!(!s.lines().concat().contains("secret-pw"));
        s.accepted(
            r#"{"op":"login","user":"bob","password":"pw-bob-123"}"#,
            r#"{"ok":true,"login":{"user":"bob","role":"user","session":"def456"}}"#,
        );
        assert_eq!(s.lines()[0], "RESUME def456");
        s.accepted("LOGOUT", "+OK");
        assert_eq!(s.lines(), ["SUB news"]);
    }
}
