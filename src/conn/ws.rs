//! HTTP on the line port: WebSocket upgrades are handed to tungstenite, anything else
//! gets a short HTTP error saying how to connect.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::io::WaitIo;
use may::net::TcpStream;
use serde_json::Value as Json;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::session::Session;
use super::ConnContext;
use super::{new_id, write_until, InputShare, OUT_BUDGET};
use crate::framework::Headers;
use crate::manager::outbox::Outbox;
use crate::manager::Transport;
use crate::protocol::Format;

/// The socket as tungstenite sees it: the bytes already read while sniffing, then the
/// socket itself, read and written without blocking.
pub struct PrefixStream {
    prefix: Vec<u8>,
    pos: usize,
    pub stream: TcpStream,
    /// Bytes handed to tungstenite since it last returned a whole message: about what
    /// it holds of a message still arriving, for the input budget and the line timeout.
    unfinished: usize,
    /// Where the bytes read and written are counted.
    stats: Arc<crate::manager::stats::Stats>,
}

impl Read for PrefixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.pos);
            buf[..n].copy_from_slice(&self.prefix[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            self.unfinished += n;
            return Ok(n);
        }
        let n = self.stream.inner_mut().read(buf)?;
        self.unfinished += n;
        self.stats
            .bytes_in
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl Write for PrefixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.inner_mut().write(buf)?;
        self.stats
            .bytes_out
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serves a connection whose first line was an HTTP request line.
#[inline(never)]
pub(crate) fn serve_http(
    stream: TcpStream,
    addr: SocketAddr,
    head: Vec<u8>,
    ctx: Arc<ConnContext>,
) {
    let mut s = PrefixStream {
        prefix: head,
        pos: 0,
        stream,
        unfinished: 0,
        stats: ctx.stats.clone(),
    };
    match classify(&s.prefix) {
        Ok(true) => {}
        Ok(false) => match ctx.settings.http_port {
            Some(port) => return point_at_http(s.stream, &s.prefix, port),
            None => return http_error(s.stream, 426, "Upgrade Required", ""),
        },
        Err(why) => return http_error(s.stream, 400, "Bad Request", &why),
    }
    let fixed = match requested_format(&s.prefix) {
        Ok(f) => f,
        Err(why) => return http_error(s.stream, 400, "Bad Request", &why),
    };
    let headers = upgrade_headers(&s.prefix);
    // A session token in the URL (browsers cannot set headers) or as a bearer token
    // resumes that session at once; one that opens nothing is refused before the
    // upgrade.
    let token = session_token(&headers);
    if let Some(t) = &token {
        if ctx.auth.sessions.find(t).is_none() {
            log::warn!("{addr}: WebSocket upgrade with an invalid or expired session token");
            let why = "the session token is invalid or expired: LOGIN again";
            return http_error(s.stream, 401, "Unauthorized", why);
        }
    }
    let max = ctx.settings.max_line;
    // tungstenite's own write buffer counts against the outbox limit like everything
    // else queued for this client: past it, a client that does not read is cut.
    let defaults = WebSocketConfig::default();
    let config = defaults
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .max_write_buffer_size(
            ctx.settings
                .outbox_limit
                .max(defaults.write_buffer_size + 1),
        );
    let deadline = Instant::now() + Duration::from_secs(10);
    // The handshake's own bytes are no part of a message.
    let mut attempt = tungstenite::accept_with_config(&mut s, Some(config));
    let mut ws = loop {
        match attempt {
            Ok(ws) => break ws,
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() > deadline {
                    return;
                }
                // The head is already buffered, so only writing the 101 can stall:
                // rare and short, a brief sleep suffices.
                crate::coop::nap(Duration::from_millis(5));
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(e)) => {
                let why = format!("WebSocket handshake failed: {e}");
                return http_error(s.stream, 400, "Bad Request", &why);
            }
        }
    };
    ws.get_mut().unfinished = 0;
    run_ws(ws, addr, ctx, fixed, headers, token);
}

/// The session token a WebSocket upgrade brings: `?token=` or `Authorization: Bearer`.
fn session_token(headers: &Headers) -> Option<String> {
    let query = headers.get("token").and_then(|t| t.as_str());
    let bearer = headers
        .get("authorization")
        .and_then(|a| a.as_str())
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        });
    query.or(bearer).map(|t| t.trim().to_string())
}

/// A WebSocket client's headers for the framework's gate: the upgrade request's HTTP
/// headers (names in lower case) and its URL's query parameters (which win, since
/// browsers cannot set headers).
fn upgrade_headers(head: &[u8]) -> Headers {
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut raw);
    let _ = req.parse(head);
    let mut headers = Headers::new();
    for h in req.headers.iter().filter(|h| !h.name.is_empty()) {
        let value = String::from_utf8_lossy(h.value).into_owned();
        headers.insert(h.name.to_ascii_lowercase(), Json::String(value));
    }
    if let Some((_, query)) = req.path.and_then(|p| p.split_once('?')) {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            headers.insert(percent_decode(k), Json::String(percent_decode(v)));
        }
    }
    headers
}

/// `%XX` escapes and `+` (a space) in a query parameter.
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The format asked for with `?format=json|text` on the URL, if any.
fn requested_format(head: &[u8]) -> Result<Option<Format>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(head);
    let query = req.path.and_then(|p| p.split_once('?')).map(|(_, q)| q);
    let Some(query) = query else {
        return Ok(None);
    };
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("format=") {
            return match v.to_ascii_lowercase().as_str() {
                "json" => Ok(Some(Format::Json)),
                "text" => Ok(Some(Format::Text)),
                _ => Err(format!(
                    "format={} in the URL: use format=json or format=text",
                    crate::protocol::args::clip(v)
                )),
            };
        }
    }
    Ok(None)
}

/// `Ok(true)` for a WebSocket upgrade request, `Ok(false)` for other HTTP.
fn classify(head: &[u8]) -> Result<bool, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete HTTP request head".into()),
        Err(e) => return Err(format!("malformed HTTP request: {e}")),
    }
    let upgrade = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("websocket")
    });
    Ok(req.method == Some("GET") && upgrade)
}

/// Answers a plain HTTP request on the main port with a redirect to the same path on
/// the HTTP port (a browser lands on the console), saying so in the body.
fn point_at_http(stream: TcpStream, head: &[u8], port: u16) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(head);
    let path = req.path.filter(|p| p.starts_with('/')).unwrap_or("/");
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(host_part)
        // Only a plain host name or address goes into the Location header.
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
        })
        .unwrap_or("127.0.0.1");
    let url = format!("http://{host}:{port}{path}");
    let body = format!(
        "leviathan {}: this port speaks text lines, JSON and WebSocket; HTTP (health, \
         metrics, the API, the console) is served on port {port}: {url}\n",
        env!("CARGO_PKG_VERSION")
    );
    respond(
        stream,
        "307 Temporary Redirect",
        &format!("Location: {url}\r\n"),
        &body,
    );
}

/// Writes a short plain-text HTTP response (bounded in time) and closes.
fn respond(mut stream: TcpStream, status: &str, headers: &str, body: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Type: text/plain; charset=utf-8\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = write_until(
        &mut stream,
        resp.as_bytes(),
        Instant::now() + Duration::from_secs(2),
    );
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// The host of a `Host` header, without its port (`[::1]:7000` → `[::1]`).
fn host_part(host: &str) -> &str {
    let host = host.trim();
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

fn http_error(stream: TcpStream, status: u16, reason: &str, detail: &str) {
    let mut body = format!(
        "leviathan {}: connect with WebSocket (ws://HOST:PORT/, one command per text frame) \
         or plain TCP (telnet HOST PORT, one command per line; try HELP). \
         Plain HTTP requests are not served.\n",
        env!("CARGO_PKG_VERSION")
    );
    if !detail.is_empty() {
        body.push_str(detail);
        body.push('\n');
    }
    respond(
        stream,
        &format!("{status} {reason}"),
        "Upgrade: websocket\r\n",
        &body,
    );
}

/// WebSocket messages read in one pass of the connection's loop.
const READS_PER_PASS: usize = 256;

fn is_would_block(e: &WsError) -> bool {
    matches!(e, WsError::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

fn run_ws(
    mut ws: WebSocket<&mut PrefixStream>,
    addr: SocketAddr,
    ctx: Arc<ConnContext>,
    fixed: Option<Format>,
    headers: Headers,
    token: Option<String>,
) {
    let id = new_id(&ctx);
    let limit = ctx.settings.outbox_limit;
    let max_line = ctx.settings.max_line;
    let mut busy = crate::coop::Slice::of(ctx.settings.slice);
    let mut stack = crate::coop::StackReleaser::default();
    let outbox = Arc::new(Outbox::new(id, ws.get_ref().stream.waker(), limit));
    let mut input = InputShare::new(&ctx);
    let Some(mut session) = Session::start(ctx, id, outbox, addr, Transport::WebSocket, fixed)
    else {
        return;
    };
    session.admit_headers(headers);
    if let Some(token) = token {
        session.resume_now(token);
    }
    let mut dirty = false;
    loop {
        let mut progress = session.pump(OUT_BUDGET);
        session.flush_sparse();
        let durable = session.output_durable();
        if durable && !session.out.is_empty() {
            match send_lines(&mut ws, &mut session.out) {
                Ok(()) => dirty = true,
                Err(WsError::WriteBufferFull(_)) => {
                    slow_consumer(&session, &mut ws);
                    return;
                }
                Err(e) => {
                    log::debug!("connection {id}: websocket write failed: {e}");
                    return;
                }
            }
        }
        session.pause_if_crowding();
        // Bounded per pass, in count and in time (each ping read also writes its pong),
        // so a client that floods frames still lets the loop write, and give way to
        // others, between batches.
        let mut reads = 0;
        while reads < READS_PER_PASS && session.wants_input(OUT_BUDGET) {
            if reads > 0 && busy.is_due() {
                // Frames may wait in tungstenite's buffer, where no socket event would
                // wake this loop again: come back after giving way. (One frame is read
                // each pass however late, so the loop always moves on.)
                progress = true;
                break;
            }
            reads += 1;
            let read = ws.read();
            if read.is_ok() {
                session.outbox.note_input();
                ws.get_mut().unfinished = 0;
            }
            match read {
                Ok(Message::Text(t)) => {
                    for line in t.as_bytes().split(|&b| b == b'\n') {
                        session.handle_line(line);
                    }
                }
                Ok(Message::Binary(b)) => {
                    for line in b.split(|&b| b == b'\n') {
                        session.handle_line(line);
                    }
                }
                Ok(_) => {}
                Err(e) if is_would_block(&e) => {
                    // A message still arriving counts like a TCP client's incomplete
                    // line: against the server's input budget and the line timeout.
                    let held = ws.get_ref().unfinished;
                    session.outbox.note_partial(held);
                    input.hold(held, &session);
                    break;
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return,
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. })) => {
                    session.reject_line(
                        &[],
                        "line_too_long",
                        format!("message of {size} bytes is longer than the {max_line}-byte limit"),
                    );
                    let _ = send_lines(&mut ws, &mut session.out);
                    close(&mut ws, CloseCode::Size, "message too long");
                    return;
                }
                Err(e) => {
                    log::debug!("connection {id}: websocket read failed: {e}");
                    return;
                }
            }
            progress = true;
        }
        session.send_batch();
        if dirty {
            match ws.flush() {
                Ok(()) => {
                    dirty = false;
                    progress = true;
                }
                Err(e) if is_would_block(&e) => {}
                Err(e) => {
                    log::debug!("connection {id}: websocket flush failed: {e}");
                    return;
                }
            }
        }
        if durable && session.is_finished() {
            let _ = send_lines(&mut ws, &mut session.out);
            close(&mut ws, CloseCode::Away, "bye");
            return;
        }
        if progress {
            busy.give_way();
            continue;
        }
        session.shrink_idle();
        session.flush_published();
        stack.idle();
        ws.get_ref().stream.wait_io();
        // A new slice starts on waking (see the TCP loop).
        busy.restart();
    }
}

/// The client does not read what is sent to it: counted, logged, and the connection
/// closed at once (its write buffer is full, so no `BYE` can go out).
fn slow_consumer(session: &Session, ws: &mut WebSocket<&mut PrefixStream>) {
    session.count_slow_consumer();
    log::warn!(
        "connection {} from {} is a slow consumer: its WebSocket write buffer is full; disconnecting it",
        session.id,
        session.addr
    );
    let _ = ws.get_mut().stream.shutdown(std::net::Shutdown::Both);
}

/// Queues each complete encoded line as its own text frame; a line still being
/// produced (a streamed JSON reply) stays in `out` until it is whole.
fn send_lines(ws: &mut WebSocket<&mut PrefixStream>, out: &mut Vec<u8>) -> Result<(), WsError> {
    let Some(last) = memchr::memrchr(b'\n', out) else {
        return Ok(());
    };
    for line in out[..last].split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line).into_owned();
        match ws.write(Message::text(text)) {
            Ok(()) => {}
            Err(e) if is_would_block(&e) => {}
            Err(e) => return Err(e),
        }
    }
    out.drain(..=last);
    Ok(())
}

/// Sends a close frame and flushes for a bounded time.
fn close(ws: &mut WebSocket<&mut PrefixStream>, code: CloseCode, reason: &str) {
    let _ = ws.close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }));
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match ws.flush() {
            Err(e) if is_would_block(&e) => crate::coop::nap(Duration::from_millis(5)),
            _ => break,
        }
    }
}
