//! Line framing over a byte buffer: finds complete lines, enforces the line limit and
//! skips the rest of an overlong line. No I/O here: the connection reads into
//! [`LineReader::spare`] and calls [`LineReader::filled`].

use super::telnet::{self, Telnet};

/// Bytes allocated for reading when the buffer is empty.
const INITIAL: usize = 4096;

/// Buffered input of one connection.
pub struct LineReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    scan: usize,
    max_line: usize,
    /// True while the rest of an overlong line is being discarded.
    skipping: bool,
    /// Telnet's command state, once the client has sent one.
    telnet: Option<Box<Telnet>>,
}

/// What the reader found in its buffer.
pub enum Line<'a> {
    /// A complete line, without `\n` (a trailing `\r` is left to the parser).
    Complete(&'a [u8]),
    /// A line longer than the limit; its first bytes say what format it looked like.
    TooLong(Vec<u8>),
}

impl LineReader {
    pub fn new(max_line: usize, initial: Vec<u8>) -> Self {
        let n = initial.len();
        let mut r = LineReader {
            buf: initial,
            start: 0,
            end: 0,
            scan: 0,
            max_line,
            skipping: false,
            telnet: None,
        };
        r.filled(n);
        r
    }

    /// Longest buffer needed: a line at the limit plus `\r\n`.
    fn cap(&self) -> usize {
        self.max_line + 2
    }

    /// Room to read into, growing or compacting the buffer as needed. Empty only when
    /// the buffer holds a full line's worth with no newline, which `next_line` reports.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scan -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() && self.buf.len() < self.cap() {
                let want = (self.buf.len() * 2).max(INITIAL).min(self.cap());
                self.buf.resize(want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into `spare()`.
    pub fn filled(&mut self, n: usize) {
        let new = self.end..self.end + n;
        if self.telnet.is_none() && memchr::memchr(0xFF, &self.buf[new.clone()]).is_none() {
            self.end += n;
            return;
        }
        self.filter_telnet(new);
    }

    /// Takes telnet's commands out of the bytes just read, in place.
    #[inline(never)]
    fn filter_telnet(&mut self, new: std::ops::Range<usize>) {
        let t = self.telnet.get_or_insert_with(Box::default);
        let mut w = new.start;
        for i in new {
            let b = self.buf[i];
            match t.step(b, telnet::ends_mid_char(&self.buf[self.start..w])) {
                telnet::Step::Keep(b) => {
                    self.buf[w] = b;
                    w += 1;
                }
                telnet::Step::Drop => {}
                telnet::Step::DiscardLine => {
                    w = match memchr::memrchr(b'\n', &self.buf[self.start..w]) {
                        Some(nl) => self.start + nl + 1,
                        None => self.start,
                    };
                    self.skipping = false;
                }
            }
        }
        self.end = w;
        self.scan = self.scan.min(w);
    }

    /// Answers owed to a telnet client (to send as they are), if any.
    pub fn telnet_replies(&mut self) -> Option<Vec<u8>> {
        let t = self.telnet.as_mut()?;
        (!t.replies.is_empty()).then(|| std::mem::take(&mut t.replies))
    }

    /// The next complete (or overlong) line, if any.
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        loop {
            let found = memchr::memchr(b'\n', &self.buf[self.scan..self.end]);
            match found {
                Some(i) => {
                    let nl = self.scan + i;
                    let line_start = self.start;
                    self.start = nl + 1;
                    self.scan = self.start;
                    if self.skipping {
                        self.skipping = false;
                        continue;
                    }
                    let line = &self.buf[line_start..nl];
                    let body = line.strip_suffix(b"\r").unwrap_or(line);
                    if body.len() > self.max_line {
                        return Some(Line::TooLong(head(body)));
                    }
                    return Some(Line::Complete(line));
                }
                None => {
                    self.scan = self.end;
                    if self.skipping {
                        self.start = self.end;
                        self.scan = self.end;
                        return None;
                    }
                    if self.end - self.start > self.max_line + 1 {
                        let first = head(&self.buf[self.start..self.end]);
                        self.skipping = true;
                        self.start = self.end;
                        return Some(Line::TooLong(first));
                    }
                    return None;
                }
            }
        }
    }

    /// The client sent its last byte. A last line without its `\n` is dropped, never
    /// run: a command cut short can mean something else than the whole one (a
    /// `DELETE … WHERE a = 1 AND b = 2` cut after `a = 1`). Returns its first bytes, if
    /// there was one, so the client can be told.
    pub fn end_of_input(&mut self) -> Option<Vec<u8>> {
        let partial = (!self.skipping && self.start < self.end)
            .then(|| head(&self.buf[self.start..self.end]));
        self.skipping = false;
        self.start = self.end;
        self.scan = self.end;
        partial
    }

    /// Whether a line has begun and not ended (also while an overlong one is being
    /// skipped), and how many of its bytes are held.
    pub fn partial(&self) -> (bool, usize) {
        if self.skipping {
            return (true, 0);
        }
        let buffered = &self.buf[self.start..self.end];
        let tail = match memchr::memrchr(b'\n', buffered) {
            Some(i) => buffered.len() - i - 1,
            None => buffered.len(),
        };
        (tail > 0, tail)
    }

    /// Whether unprocessed bytes are buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Frees the buffer of an idle connection with nothing buffered.
    pub fn shrink_idle(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scan = 0;
            if !self.buf.is_empty() {
                self.buf = Vec::new();
            }
        }
    }
}

fn head(b: &[u8]) -> Vec<u8> {
    b[..b.len().min(16)].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` the way a connection does (taking lines whenever the buffer is
    /// full) and returns every line reported.
    fn run(r: &mut LineReader, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let spare = r.spare();
                if spare.is_empty() {
                    let before = out.len();
                    drain(r, &mut out);
                    assert!(out.len() > before, "full buffer but no line reported");
                    continue;
                }
                let n = spare.len().min(rest.len());
                spare[..n].copy_from_slice(&rest[..n]);
                r.filled(n);
                rest = &rest[n..];
            }
            drain(r, &mut out);
        }
        out
    }

    fn drain(r: &mut LineReader, out: &mut Vec<String>) {
        while let Some(l) = r.next_line() {
            out.push(match l {
                Line::Complete(b) => String::from_utf8_lossy(b).into_owned(),
                Line::TooLong(h) => format!("TOOLONG:{}", String::from_utf8_lossy(&h)),
            });
        }
    }

    #[test]
    fn splits_lines_across_reads() {
        let mut r = LineReader::new(100, Vec::new());
        assert_eq!(run(&mut r, &[b"PING a\r\nPI"]), vec!["PING a\r"]);
        assert_eq!(run(&mut r, &[b"NG b\n\n"]), vec!["PING b", ""]);
        assert!(r.is_empty());
    }

    #[test]
    fn overlong_line_is_reported_once_and_skipped() {
        let mut r = LineReader::new(10, Vec::new());
        let got = run(
            &mut r,
            &[b"PUB news 0123456789", b"0123456789", b"tail\nPING\n"],
        );
        assert_eq!(got, vec!["TOOLONG:PUB news 012", "PING"]);
    }

    #[test]
    fn line_at_the_limit_passes_and_one_over_fails() {
        let mut r = LineReader::new(4, Vec::new());
        let got = run(&mut r, &[b"abcd\r\nabcde\nok\n"]);
        assert_eq!(got, vec!["abcd\r", "TOOLONG:abcde", "ok"]);
    }

    #[test]
    fn starts_from_sniffed_bytes() {
        let mut r = LineReader::new(100, b"PING\nPA".to_vec());
        assert_eq!(run(&mut r, &[b"RT\n"]), vec!["PING", "PART"]);
    }

    #[test]
    fn idle_shrink_frees_the_buffer() {
        let mut r = LineReader::new(100, Vec::new());
        run(&mut r, &[b"PING\n"]);
        r.shrink_idle();
        assert_eq!(r.buf.capacity(), 0);
    }
}
