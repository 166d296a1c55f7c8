//! Telling a line client from an HTTP client on a fresh connection, so that WebSocket
//! and HTTP clients, who speak first, never see the line greeting.

use std::io::{self, Read};
use std::time::Instant;

use may::net::TcpStream;

/// Most bytes read while deciding; a line client past this is a line client.
const SNIFF_MAX: usize = 8 << 10;
/// Most bytes of HTTP request head accepted.
const HEAD_MAX: usize = 16 << 10;
/// How long an HTTP client may take to send its request head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub enum Sniffed {
    /// A line client; the bytes it already sent.
    Lines(Vec<u8>),
    /// An HTTP request; everything read so far (the head, and perhaps more).
    Http(Vec<u8>),
    /// The client left (or failed) before saying anything useful.
    Gone,
}

/// Waits up to `greet_delay` for the first line: silence, or a first line that is not
/// an HTTP request line, means a line client.
#[inline(never)]
pub fn sniff(stream: &mut TcpStream, greet_delay: std::time::Duration) -> Sniffed {
    let mut buf = Vec::new();
    let deadline = Instant::now() + greet_delay;
    loop {
        if let Some(nl) = memchr::memchr(b'\n', &buf) {
            if !is_http_request_line(&buf[..nl]) {
                return Sniffed::Lines(buf);
            }
            return read_head(stream, buf);
        }
        if buf.len() >= SNIFF_MAX {
            return Sniffed::Lines(buf);
        }
        match read_until(stream, &mut buf, deadline, SNIFF_MAX) {
            Ok(0) => return Sniffed::Gone,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Sniffed::Lines(buf),
            Err(_) => return Sniffed::Gone,
        }
    }
}

fn read_head(stream: &mut TcpStream, mut buf: Vec<u8>) -> Sniffed {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    loop {
        if memchr::memmem::find(&buf, b"\r\n\r\n").is_some()
            || memchr::memmem::find(&buf, b"\n\n").is_some()
        {
            return Sniffed::Http(buf);
        }
        if buf.len() >= HEAD_MAX {
            return Sniffed::Http(buf);
        }
        match read_until(stream, &mut buf, deadline, HEAD_MAX) {
            Ok(0) => return Sniffed::Gone,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Sniffed::Http(buf),
            Err(_) => return Sniffed::Gone,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// One read that blocks this coroutine (not its worker) until data or `deadline`.
fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    max: usize,
) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    let old = buf.len();
    buf.resize(max.min(old + 2048).max(old + 1), 0);
    let r = stream.read(&mut buf[old..]);
    let _ = stream.set_read_timeout(None);
    let n = r.inspect_err(|_| buf.truncate(old))?;
    buf.truncate(old + n);
    Ok(n)
}

/// `METHOD SP target SP HTTP/x.y`, the whole request line: a future text command that
/// happens to start with `GET ` is not mistaken for HTTP.
pub fn is_http_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|b| b.is_ascii_uppercase())
        && !target.is_empty()
        && version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_lines() {
        assert!(is_http_request_line(b"GET / HTTP/1.1\r"));
        assert!(is_http_request_line(b"POST /x?y=1 HTTP/1.0"));
        assert!(!is_http_request_line(b"GET users 1"));
        assert!(!is_http_request_line(b"GET / HTTP/1.1 extra"));
        assert!(!is_http_request_line(b"PING"));
        assert!(!is_http_request_line(b"get / HTTP/1.1"));
    }
}
