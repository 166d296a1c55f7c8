//! The receiving link's connection: a socket of our own with a small reader for what a
//! pattern subscriber is sent (RESP2 arrays of bulk strings), so that the link can see
//! what Redis has already sent and hand it to the manager as one batch, and parse it
//! cheaply. Through the `redis` crate's connection, messages came one call at a time
//! (1 -> 100 across two nodes: 0.59 M deliveries/s, every message waking all hundred
//! receivers by itself) and its general parser took 57% of a node's CPU in a profile
//! of 1 -> 1 across nodes. Commands sent here (AUTH, PSUBSCRIBE) are packed by the
//! crate.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};

/// A value as Redis sends it to a subscriber.
#[derive(Debug, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

/// One publication as it arrives, on the pattern or on a channel subscribed by name.
#[derive(Debug)]
pub struct Published {
    pub channel: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Longest bulk string taken (Redis's own limit is 512 MB; a frame here is a message).
const MAX_BULK: usize = 64 << 20;

/// A connection subscribed to one pattern and a few channels.
pub struct Subscriber {
    reader: BufReader<TcpStream>,
}

fn broken(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Subscriber {
    /// Connects (within `timeout`, which also bounds every read and write), logs in as
    /// `info` says and subscribes to `pattern` and to `channels`.
    pub fn connect(
        info: &ConnectionInfo,
        pattern: &str,
        channels: &[&str],
        timeout: Duration,
    ) -> io::Result<Self> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(io::Error::other(format!(
                "the cluster link speaks redis:// over TCP only, not {}",
                info.addr()
            )));
        };
        let addr = (host.as_str(), *port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{host} has no address")))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_read_timeout(Some(timeout))?;
        let mut sub = Subscriber {
            reader: BufReader::with_capacity(1 << 16, stream),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            sub.send(&auth)?;
            if let Resp::Error(e) = sub.read()? {
                return Err(io::Error::other(format!("AUTH: {e}")));
            }
        }
        sub.send(redis::cmd("PSUBSCRIBE").arg(pattern))?;
        sub.confirmed("PSUBSCRIBE")?;
        if !channels.is_empty() {
            sub.send(redis::cmd("SUBSCRIBE").arg(channels))?;
            for _ in channels {
                sub.confirmed("SUBSCRIBE")?;
            }
        }
        Ok(sub)
    }

    /// Reads the confirmation of one (pattern) subscription.
    fn confirmed(&mut self, what: &str) -> io::Result<()> {
        match self.read()? {
            Resp::Array(v) if v.len() == 3 => Ok(()),
            Resp::Error(e) => Err(io::Error::other(format!("{what}: {e}"))),
            other => Err(broken(format!("{what} answered {other:?}"))),
        }
    }

    fn send(&mut self, cmd: &redis::Cmd) -> io::Result<()> {
        self.reader.get_mut().write_all(&cmd.get_packed_command())
    }

    /// Whether something has arrived (buffered here, or in the socket), waiting up to
    /// `wait` for it.
    pub fn readable(&self, wait: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let mut fd = libc::pollfd {
            fd: self.reader.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd: a readiness check, bounded by `ms`.
        unsafe { libc::poll(&mut fd, 1, ms) == 1 }
    }

    /// The next publication, once [`Subscriber::readable`] said something came (a read
    /// then waits at most the connect timeout: a value cut off for that long breaks
    /// the link). `None` for anything else Redis sends.
    pub fn next_published(&mut self) -> io::Result<Option<Published>> {
        let Resp::Array(parts) = self.read()? else {
            return Ok(None);
        };
        let mut parts = parts.into_iter();
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (
                Some(Resp::Bulk(Some(kind))),
                Some(_pattern),
                Some(Resp::Bulk(Some(channel))),
                Some(Resp::Bulk(Some(payload))),
            ) if kind == b"pmessage" => Ok(Some(Published { channel, payload })),
            (
                Some(Resp::Bulk(Some(kind))),
                Some(Resp::Bulk(Some(channel))),
                Some(Resp::Bulk(Some(payload))),
                None,
            ) if kind == b"message" => Ok(Some(Published { channel, payload })),
            _ => Ok(None),
        }
    }

    fn read(&mut self) -> io::Result<Resp> {
        read_value(&mut self.reader, 0)
    }
}

/// One RESP2 value from `r` (arrays nested at most two deep, as a subscriber is sent).
pub fn read_value(r: &mut impl BufRead, depth: u32) -> io::Result<Resp> {
    let mut line = Vec::with_capacity(16);
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(if line.is_empty() {
            io::ErrorKind::UnexpectedEof.into()
        } else {
            broken("a RESP line cut short".into())
        });
    }
    let text = std::str::from_utf8(&line[1..line.len() - 2])
        .map_err(|_| broken("a RESP header that is not UTF-8".into()))?;
    let number = || -> io::Result<i64> {
        text.parse()
            .map_err(|_| broken(format!("a RESP length '{text}'")))
    };
    Ok(match line[0] {
        b'+' => Resp::Simple(text.to_string()),
        b'-' => Resp::Error(text.to_string()),
        b':' => Resp::Int(number()?),
        b'$' => match number()? {
            -1 => Resp::Bulk(None),
            n if n < 0 || n as usize > MAX_BULK => {
                return Err(broken(format!("a bulk string of {n} bytes")))
            }
            n => {
                let mut body = vec![0; n as usize + 2];
                r.read_exact(&mut body)?;
                if !body.ends_with(b"\r\n") {
                    return Err(broken("a bulk string without its line end".into()));
                }
                body.truncate(n as usize);
                Resp::Bulk(Some(body))
            }
        },
        b'*' if depth < 2 => match number()? {
            -1 => Resp::Array(Vec::new()),
            n if !(0..=16).contains(&n) => return Err(broken(format!("an array of {n} values"))),
            n => {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_value(r, depth + 1)?);
                }
                Resp::Array(items)
            }
        },
        other => return Err(broken(format!("a RESP value starting '{}'", other as char))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_subscriber_is_sent_reads_back() {
        let wire = b"*3\r\n$10\r\npsubscribe\r\n$5\r\nlev:*\r\n:1\r\n*4\r\n$8\r\npmessage\r\n$5\r\nlev:*\r\n$6\r\nlev:ab\r\n$7\r\nhi\r\nyou\r\n+OK\r\n-ERR no\r\n$-1\r\n";
        let mut r = &wire[..];
        let b = |s: &str| Resp::Bulk(Some(s.as_bytes().to_vec()));
        assert_eq!(
            read_value(&mut r, 0).unwrap(),
            Resp::Array(vec![b("psubscribe"), b("lev:*"), Resp::Int(1)])
        );
        assert_eq!(
            read_value(&mut r, 0).unwrap(),
            Resp::Array(vec![b("pmessage"), b("lev:*"), b("lev:ab"), b("hi\r\nyou")])
        );
        assert_eq!(read_value(&mut r, 0).unwrap(), Resp::Simple("OK".into()));
        assert_eq!(read_value(&mut r, 0).unwrap(), Resp::Error("ERR no".into()));
        assert_eq!(read_value(&mut r, 0).unwrap(), Resp::Bulk(None));
        assert_eq!(
            read_value(&mut r, 0).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn broken_input_is_an_error_not_a_guess() {
        for bad in [
            &b"$5\r\nhi\r\n"[..],
            b"$x\r\n",
            b"$99999999999\r\n",
            b"*100\r\n",
            b"*1\r\n*1\r\n*1\r\n:1\r\n",
            b"?what\r\n",
            b"+OK\n",
            b"$2\r\nhixx",
        ] {
            assert!(read_value(&mut &bad[..], 0).is_err(), "{bad:?}");
        }
    }
}
