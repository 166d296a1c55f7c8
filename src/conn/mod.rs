//! One coroutine per connection. It first sniffs what the client is (a line client
//! that stays silent or sends a command, or an HTTP request, possibly a WebSocket
//! upgrade), then runs that transport's loop: read what has arrived, handle every
//! complete request, encode replies and pushes, write what the socket takes, and
//! sleep in `wait_io` when nothing more can be done. The channel manager wakes it
//! through its [`Outbox`].

mod accounts;
mod calls;
mod context;
pub mod lines;
mod publish;
pub mod session;
mod sniff;
mod stream;
mod telnet;
mod ws;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::io::WaitIo;
use may::net::{TcpListener, TcpStream};

pub use context::{ConnContext, ConnSettings};

use crate::manager::outbox::Outbox;
use crate::manager::Transport;
use crate::protocol::push::ByeReason;
use lines::{Line, LineReader};
use session::{Ending, Session};

/// Encoded output held before the connection stops taking more from its outbox or
/// reading more requests: enough for large batches, small enough to bound memory.
const OUT_BUDGET: usize = 256 << 10;

/// How long a slow consumer's last `BYE` may take to write.
const BYE_TIMEOUT: Duration = Duration::from_millis(100);

/// Keeps `connections_current` true however the coroutine ends.
struct LiveGuard(Arc<ConnContext>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0
            .stats
            .connections_current
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections until shutdown, one coroutine each; past `max_connections`,
/// each is told why it is refused.
pub(crate) fn accept_loop(listener: TcpListener, ctx: Arc<ConnContext>) {
    loop {
        let (stream, addr) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                if ctx.stopping.load(Ordering::Acquire) {
                    return;
                }
                // Out of file descriptors and the like: say so and let the pressure
                // ease instead of spinning.
                log::warn!("accept failed: {e}");
                crate::coop::nap(Duration::from_millis(50));
                continue;
            }
        };
        if ctx.stopping.load(Ordering::Acquire) {
            return;
        }
        ctx.stats.connections_total.fetch_add(1, Ordering::Relaxed);
        let current = ctx.stats.connections_current.fetch_add(1, Ordering::AcqRel);
        let ctx = ctx.clone();
        if current >= ctx.settings.max_connections {
            ctx.stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            may::go!(move || refuse(stream, ctx));
        } else {
            may::go!(move || serve(stream, addr, ctx));
        }
    }
}

/// Serves one accepted connection to its end.
pub(crate) fn serve(mut stream: TcpStream, addr: SocketAddr, ctx: Arc<ConnContext>) {
    let _live = LiveGuard(ctx.clone());
    let _ = stream.set_nodelay(true);
    if let Some(idle) = ctx.settings.tcp_keepalive {
        if let Err(e) = keepalive(&stream, idle) {
            log::debug!("{addr}: cannot set TCP keepalive: {e}");
        }
    }
    match sniff::sniff(&mut stream, ctx.settings.greet_delay) {
        sniff::Sniffed::Lines(initial) => {
            if ctx.stopping.load(Ordering::Acquire) {
                return;
            }
            run_lines(stream, addr, initial, ctx);
        }
        sniff::Sniffed::Http(head) => ws::serve_http(stream, addr, head, ctx),
        sniff::Sniffed::Gone => {}
    }
}

/// TCP keepalive: after `idle` without traffic the kernel probes the peer every 10 s
/// and, after 3 unanswered probes, reports the connection broken, so a peer that
/// vanished without a FIN (a cable pulled, a machine gone) is noticed.
fn keepalive(stream: &TcpStream, idle: Duration) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt reads `value` (a c_int of the size given) for this call
        // only, on a descriptor the stream owns.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(
        libc::IPPROTO_TCP,
        libc::TCP_KEEPIDLE,
        idle.as_secs().max(1) as libc::c_int,
    )?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)
}

/// Turns away a connection over `max_connections`, with a reason.
pub(crate) fn refuse(mut stream: TcpStream, ctx: Arc<ConnContext>) {
    let _live = LiveGuard(ctx.clone());
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if let Ok(addr) = stream.peer_addr() {
        log::info!(
            "refused a connection from {addr}: already serving the maximum of {} (--max-connections)",
            ctx.settings.max_connections
        );
    }
    let msg = format!(
        "-ERR too_many_connections the server is serving its maximum of {} connections; try again later\n",
        ctx.settings.max_connections
    );
    let _ = stream.write_all(msg.as_bytes());
}

fn new_id(ctx: &ConnContext) -> u64 {
    ctx.next_id.fetch_add(1, Ordering::Relaxed)
}

// Each transport's loop stays out of line: inlined into `serve`, the WebSocket loop's
// large frame would be reserved by every line connection too, and stack pages once
// touched stay resident for the life of a connection.
#[inline(never)]
fn run_lines(mut stream: TcpStream, addr: SocketAddr, initial: Vec<u8>, ctx: Arc<ConnContext>) {
    let id = new_id(&ctx);
    let outbox = Arc::new(Outbox::new(id, stream.waker(), ctx.settings.outbox_limit));
    let max_line = ctx.settings.max_line;
    let mut busy = crate::coop::Slice::of(ctx.settings.slice);
    let mut input = InputShare::new(&ctx);
    let stats = ctx.stats.clone();
    let Some(mut session) = Session::start(ctx, id, outbox, addr, Transport::Tcp, None) else {
        return;
    };
    let mut reader = LineReader::new(max_line, initial);
    let mut written = 0usize;
    let mut stack = crate::coop::StackReleaser::default();
    let mut eof = false;
    // The last read found the socket empty (it filled less than it could): anything
    // that arrives after it wakes the wait below, so the pass that follows need not
    // ask again (a read that would only say "nothing", one per message at low rates).
    // Not after a wake that brought the peer's end: the read that shows it (0) is
    // still to come, and no further event would.
    let mut drained = false;
    let mut hung_up = false;
    loop {
        let mut progress = session.pump(OUT_BUDGET);
        progress |= handle_lines(&mut reader, &mut session, max_line, &busy);
        if !eof && session.wants_input(OUT_BUDGET) && !std::mem::take(&mut drained) {
            session.pause_if_crowding();
            match read_into(&mut stream, &mut reader) {
                Ok((0, _)) => {
                    eof = true;
                    progress = true;
                    if let Some(first) = reader.end_of_input() {
                        session.reject_line(
                            &first,
                            "incomplete_line",
                            "the connection ended inside a line (no newline), which was not run"
                                .into(),
                        );
                    }
                }
                Ok((n, short)) => {
                    progress = true;
                    drained = short && !hung_up;
                    stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    session.outbox.note_input();
                    if let Some(answers) = reader.telnet_replies() {
                        // Telnet shows nothing more until its Ctrl-C is answered, and
                        // drops whatever comes before the answer: it goes out ahead of
                        // the replies to the lines read with it.
                        session.out.extend_from_slice(&answers);
                    }
                    handle_lines(&mut reader, &mut session, max_line, &busy);
                    let (in_line, held) = reader.partial();
                    session
                        .outbox
                        .note_partial(if in_line { held.max(1) } else { 0 });
                    input.hold(held, &session);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(e) => {
                    log::debug!("connection {id}: read failed: {e}");
                    return;
                }
            }
        }
        session.flush_sparse();
        let durable = session.output_durable();
        if durable {
            match write_out(&mut stream, &mut session.out, &mut written) {
                Ok(0) => {}
                Ok(n) => {
                    progress = true;
                    stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    log::debug!("connection {id}: write failed: {e}");
                    return;
                }
            }
        }
        if durable && session.is_finished() {
            finish(&mut stream, &mut session, written);
            return;
        }
        if eof && reader.is_empty() {
            // Nobody will read a service's answer on a connection that ended: its
            // requests are given up (so the manager cancels them), and what it is
            // still owed goes out.
            session.give_up_requests();
        }
        if eof && durable && !session.awaiting_replies() && reader.is_empty() {
            // Half-closed: the client sends nothing more. Its last replies get a bounded
            // time to go out, then the connection (and its slot) is released.
            finish(&mut stream, &mut session, written);
            return;
        }
        if progress {
            busy.give_way();
            continue;
        }
        if session.out.is_empty() {
            reader.shrink_idle();
            session.shrink_idle();
            written = 0;
        }
        session.flush_published();
        stack.idle();
        // Idle with nothing to write: publishers write to this socket themselves until
        // it wakes (one hop instead of two).
        let lent = session
            .lendable()
            .filter(|format| session.outbox.lend(stream.as_raw_fd(), *format))
            .map(|_| Lending(&session.outbox));
        let events = stream.wait_io() as libc::c_int;
        hung_up = events & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0;
        // The wait took in what arrived since that read: it must be read now (a pass
        // that did not want input left `drained` untaken).
        drained = false;
        if let Some(lent) = lent {
            stats.bytes_out.fetch_add(lent.end(), Ordering::Relaxed);
        }
        // A new slice starts on waking, not when going to sleep: counted from then, a
        // sleep longer than a slice left the first pass no time for the lines it read.
        busy.restart();
    }
}

/// The socket lent to publishers while the connection waits ([`Outbox::lend`]), taken
/// back when it wakes, and in any case before the socket can close (a coroutine
/// unwinding out of its wait drops this first): nobody may write to a descriptor the
/// connection no longer owns.
struct Lending<'a>(&'a Outbox);

impl Lending<'_> {
    /// Takes the socket back; the bytes others wrote to it.
    fn end(self) -> u64 {
        let sent = self.0.take_back();
        std::mem::forget(self);
        sent
    }
}

impl Drop for Lending<'_> {
    fn drop(&mut self) {
        self.0.take_back();
    }
}

/// This connection's part of the server's input budget: the bytes of an incomplete line
/// it holds, added to [`crate::manager::stats::Stats::input_buffered`] (and taken back when it
/// ends).
struct InputShare {
    ctx: Arc<ConnContext>,
    held: usize,
}

/// An incomplete line smaller than this never gets a connection cut for the budget.
const BUDGET_OFFENDER: usize = 64 << 10;

impl InputShare {
    fn new(ctx: &Arc<ConnContext>) -> InputShare {
        InputShare {
            ctx: ctx.clone(),
            held: 0,
        }
    }

    /// Records that the connection now holds `held` bytes of an incomplete line; when
    /// all connections together hold more than the budget and this one holds a large
    /// part, it is cut (and told why).
    fn hold(&mut self, held: usize, session: &Session) {
        let stats = &self.ctx.stats;
        let total = if held >= self.held {
            stats
                .input_buffered
                .fetch_add(held - self.held, Ordering::AcqRel)
                + held
                - self.held
        } else {
            stats
                .input_buffered
                .fetch_sub(self.held - held, Ordering::AcqRel)
                - (self.held - held)
        };
        self.held = held;
        if held >= BUDGET_OFFENDER && total > self.ctx.settings.input_budget {
            log::warn!(
                "connection {} from {}: incomplete lines of all clients hold {} bytes, over the {}-byte input budget; disconnecting this one, which holds {held}",
                session.id,
                session.addr,
                total,
                self.ctx.settings.input_budget
            );
            if session.outbox.cut(ByeReason::InputBudget) {
                session.outbox.wake();
            }
        }
    }
}

impl Drop for InputShare {
    fn drop(&mut self) {
        self.ctx
            .stats
            .input_buffered
            .fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Handles the complete lines buffered, as many as the session accepts now.
/// Runs the complete lines read so far, until the output budget or this coroutine's
/// slice is used up; the rest wait for the next pass.
fn handle_lines(
    reader: &mut LineReader,
    session: &mut Session,
    max_line: usize,
    busy: &crate::coop::Slice,
) -> bool {
    let mut lines = 0u32;
    while session.wants_input(OUT_BUDGET) {
        match reader.next_line() {
            Some(Line::Complete(line)) => session.handle_line(line),
            Some(Line::TooLong(first)) => session.reject_line(
                &first,
                "line_too_long",
                format!("line longer than {max_line} bytes; the rest of it was skipped"),
            ),
            None => break,
        }
        lines += 1;
        // At least one line per pass, however late the pass: lines left in the buffer
        // get no socket event to wake this loop again, so it must come back for them
        // (it does: a line run is progress) and never sleep on them. The clock is read
        // every few lines, not per line (it cost 3% of a PUB's time).
        if lines % LINES_PER_CLOCK == 1 && busy.is_due() {
            break;
        }
    }
    session.send_batch();
    lines > 0
}

/// Lines run between two looks at the clock: a few microseconds of work.
const LINES_PER_CLOCK: u32 = 8;

/// One non-blocking read into the reader's spare room: how many bytes, and whether that
/// was less than there was room for (so the socket was empty when read).
fn read_into(stream: &mut TcpStream, reader: &mut LineReader) -> io::Result<(usize, bool)> {
    let spare = reader.spare();
    if spare.is_empty() {
        // Full of an overlong line the next pass reports; report "progress".
        return Err(io::ErrorKind::Interrupted.into());
    }
    let room = spare.len();
    let n = stream.inner_mut().read(spare)?;
    reader.filled(n);
    Ok((n, n < room))
}

/// Writes as much of `out[*written..]` as the socket takes; returns how many bytes.
/// Clears `out` once it is all written.
fn write_out(stream: &mut TcpStream, out: &mut Vec<u8>, written: &mut usize) -> io::Result<usize> {
    let mut any = 0;
    while *written < out.len() {
        match stream.inner_mut().write(&out[*written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *written += n;
                any += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if *written == out.len() {
        out.clear();
        *written = 0;
    }
    Ok(any)
}

/// Writes what is left (bounded in time, since the client may not be reading) and
/// closes.
fn finish(stream: &mut TcpStream, session: &mut Session, written: usize) {
    let out = &session.out;
    let written = written.min(out.len());
    if matches!(session.ending, Some(Ending::Bye(r)) if r != ByeReason::Shutdown) {
        // Cut: the client may not be reading; skip the backlog, finish the line it is in the
        // middle of (if any), then try to say BYE, the last line queued.
        let mut last = Vec::new();
        let rest = &out[written..];
        if written > 0 && out[written - 1] != b'\n' {
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            last.extend_from_slice(&rest[..end]);
        }
        let body = out.strip_suffix(b"\n").unwrap_or(out);
        let bye_start = memchr::memrchr(b'\n', body).map_or(0, |i| i + 1);
        last.extend_from_slice(&out[bye_start.max(written)..]);
        let _ = write_until(stream, &last, Instant::now() + BYE_TIMEOUT);
    } else {
        let deadline = Instant::now() + Duration::from_secs(2);
        let _ = write_until(stream, &out[written..], deadline);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Blocking write (as far as this coroutine is concerned) that gives up at `deadline`.
fn write_until(stream: &mut TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        let n = stream.write(buf)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}
