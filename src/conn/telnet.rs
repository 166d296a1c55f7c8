//! Telnet's commands on a line connection (RFC 854), so that `telnet HOST PORT` works as
//! people use it. Nothing here runs until a client sends an `IAC` byte (255), which no
//! UTF-8 text contains.
//!
//! - Ctrl-C makes telnet send `IAC IP IAC DO TIMING-MARK` and discard all output until
//!   the server answers the timing mark. The line typed so far is discarded and the
//!   mark answered `WILL TIMING-MARK`, so the session goes on.
//! - In its default mode telnet takes a typed byte whose low seven bits are a control
//!   character for that key: the `0x9c` inside `本` is sent as `IAC BRK` (Ctrl-\), the
//!   `0x83` inside `ă` as `IAC IP`. Inside an unfinished UTF-8 character such a command
//!   cannot be a key press, so the byte is put back.
//! - Other negotiation is refused (`DO x` gets `WONT x`, `WILL x` gets `DONT x`) and
//!   subnegotiation skipped; `IAC IAC` is a data byte 255.

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;
const EL: u8 = 248;
const AO: u8 = 245;
const IP: u8 = 244;
const BRK: u8 = 243;
const SUSP: u8 = 237;
const TIMING_MARK: u8 = 6;

/// Where the filter is in the command syntax; commands may be split across reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Data,
    Iac,
    /// After `WILL`/`WONT`/`DO`/`DONT`: the option byte comes next.
    Option(u8),
    Sub,
    SubIac,
}

/// A connection's telnet state: made when its first `IAC` arrives.
#[derive(Debug, Default)]
pub struct Telnet {
    state: State,
    /// Bytes to send back (negotiation answers), in order.
    pub replies: Vec<u8>,
}

/// What to do with a byte of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// It is data.
    Keep(u8),
    /// It was part of a command.
    Drop,
    /// Ctrl-C (or Ctrl-\, Ctrl-Z, erase-line): discard the line typed so far.
    DiscardLine,
}

impl Telnet {
    /// Takes one input byte. `mid_char` says whether the data kept so far ends inside
    /// a UTF-8 character (then a control command is a mangled byte of it).
    pub fn step(&mut self, b: u8, mid_char: bool) -> Step {
        match self.state {
            State::Data if b == IAC => {
                self.state = State::Iac;
                Step::Drop
            }
            State::Data => Step::Keep(b),
            State::Iac => {
                self.state = State::Data;
                match b {
                    IAC => Step::Keep(IAC),
                    WILL | WONT | DO | DONT => {
                        self.state = State::Option(b);
                        Step::Drop
                    }
                    SB => {
                        self.state = State::Sub;
                        Step::Drop
                    }
                    IP | BRK | SUSP | AO if mid_char => Step::Keep(mangled(b)),
                    IP | BRK | SUSP | EL => Step::DiscardLine,
                    _ => Step::Drop,
                }
            }
            State::Option(verb) => {
                self.state = State::Data;
                match (verb, b) {
                    (DO, TIMING_MARK) => self.replies.extend([IAC, WILL, TIMING_MARK]),
                    (DO, opt) => self.replies.extend([IAC, WONT, opt]),
                    (WILL, opt) => self.replies.extend([IAC, DONT, opt]),
                    // Refusals of what we never offered need no answer.
                    _ => {}
                }
                Step::Drop
            }
            State::Sub => {
                if b == IAC {
                    self.state = State::SubIac;
                }
                Step::Drop
            }
            State::SubIac => {
                self.state = if b == SE { State::Data } else { State::Sub };
                Step::Drop
            }
        }
    }
}

/// The byte telnet turned into `cmd`: its special key's character with the high bit.
fn mangled(cmd: u8) -> u8 {
    0x80 | match cmd {
        IP => 0x03,   // Ctrl-C
        BRK => 0x1c,  // Ctrl-\
        SUSP => 0x1a, // Ctrl-Z
        _ => 0x0f,    // AO: Ctrl-O
    }
}

/// Whether `kept` ends inside a UTF-8 character (a lead byte without all its
/// continuation bytes).
pub fn ends_mid_char(kept: &[u8]) -> bool {
    let tail = &kept[kept.len().saturating_sub(3)..];
    for (back, &b) in tail.iter().rev().enumerate() {
        let is_continuation = b & 0xC0 == 0x80;
        if is_continuation {
            continue;
        }
        let len = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return false,
        };
        return back + 1 < len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `input` through a filter; returns the data kept, the answers, and where the
    /// line was discarded (as a `|` in the kept text).
    fn run(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut t = Telnet::default();
        let mut kept = Vec::new();
        for &b in input {
            match t.step(b, ends_mid_char(&kept)) {
                Step::Keep(b) => kept.push(b),
                Step::Drop => {}
                Step::DiscardLine => kept.push(b'|'),
            }
        }
        (kept, t.replies)
    }

    #[test]
    fn ctrl_c_discards_the_line_and_answers_the_timing_mark() {
        let (kept, replies) = run(b"PING a\xff\xf4\xff\xfd\x06PING b\r\n");
        assert_eq!(kept, b"PING a|PING b\r\n");
        assert_eq!(replies, [IAC, WILL, TIMING_MARK]);
    }

    #[test]
    fn bytes_telnet_mangled_inside_utf8_are_put_back() {
        // What telnet sent for "PING ă Ϛ Ï 本" (seen from GNU inetutils telnet 2.4).
        let sent = b"PING \xc4\xff\xf4\xff\xfd\x06 \xcf\xff\xed\xff\xfd\x06 \xc3\xff\xf5\xff\xfd\x06 \xe6\xff\xf3\xff\xfd\x06\xac\r\n";
        let (kept, replies) = run(sent);
        assert_eq!(String::from_utf8(kept).unwrap(), "PING ă Ϛ Ï 本\r\n");
        assert_eq!(replies, [IAC, WILL, TIMING_MARK].repeat(4));
    }

    #[test]
    fn negotiation_is_refused_subnegotiation_skipped_and_iac_iac_is_data() {
        let (kept, replies) = run(
            b"a\xff\xfd\x18b\xff\xfb\x1fc\xff\xfc\x01\xff\xfa\x18\x01\xff\xff\xff\xf0d\xff\xff\n",
        );
        assert_eq!(kept, b"abcd\xff\n");
        assert_eq!(replies, [IAC, WONT, 0x18, IAC, DONT, 0x1f]);
    }

    #[test]
    fn split_across_reads_the_state_carries_over() {
        let mut t = Telnet::default();
        assert_eq!(t.step(IAC, false), Step::Drop);
        assert_eq!(t.step(DO, false), Step::Drop);
        assert_eq!(t.step(TIMING_MARK, false), Step::Drop);
        assert_eq!(t.replies, [IAC, WILL, TIMING_MARK]);
        assert_eq!(t.step(b'x', false), Step::Keep(b'x'));
    }

    #[test]
    fn mid_char_detection() {
        assert!(ends_mid_char("本".as_bytes().split_at(1).0));
        assert!(ends_mid_char("本".as_bytes().split_at(2).0));
        assert!(!ends_mid_char("本".as_bytes()));
        assert!(!ends_mid_char(b"abc"));
        assert!(ends_mid_char(b"ab\xc4"));
        assert!(!ends_mid_char(b""));
    }
}
