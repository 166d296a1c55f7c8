//! The transport-independent half of a connection: turns request lines into replies
//! and outbox items into encoded lines, keeping replies in request order.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use serde_json::Value;

mod cluster_wide;
mod services;

use super::accounts::AccountEnv;
use super::calls::{Call, Calls, Work};
use super::publish::Publisher;
use super::stream::{Step, Streaming, STREAM_ITEMS_FROM};
use super::ConnContext;
use crate::auth::{Identity, Role};
use crate::commands;
use crate::commands::accounts::AccountCommand;
use crate::commands::app::AppCommand;
use crate::commands::channels::ChannelCommand;
use crate::commands::services::ServiceCommand;
use crate::commands::session::SessionCommand;
use crate::commands::tables::select::RowStream;
use crate::commands::tables::TableCommand;
use crate::commands::Command;
use crate::framework::{Ctx, Headers, Hub};
use crate::manager::outbox::{ConnId, OutItem, Outbox};
use crate::manager::stats::SAMPLE_EVERY;
use crate::manager::{ChannelOp, Transport};
use crate::protocol::push::ByeReason;
use crate::protocol::{guess_format, ErrorReply, Format, FormatChoice, Push, Reply};
use crate::store::journal::{Journal, Waiter};

/// Requests a connection may have waiting on the channel manager before it stops
/// reading: this is what keeps a fast pipelining publisher from queueing without bound.
const MAX_IN_FLIGHT: usize = 1024;

/// Actions one connection may have running at once before it stops reading.
const MAX_CALLS: usize = 64;

/// Why a connection is ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The client sent `QUIT` (the reply is written first).
    Quit,
    /// The server said `BYE` (shutdown, slow consumer).
    Bye(ByeReason),
    /// The channel manager is gone (the server is stopping).
    ManagerGone,
}

/// A reply that must wait for an earlier one still being computed by the manager.
enum Pending {
    Manager {
        format: Format,
        id: Option<Value>,
        /// When it was read, and its family, if its latency is measured.
        at: Timing,
    },
    /// The answer to a request running elsewhere (an action's coroutine), which comes
    /// back through the outbox as `OutItem::Answer(token, …)`.
    Answer {
        token: u64,
        format: Format,
        id: Option<Value>,
        at: Timing,
    },
    Ready(Vec<u8>),
    /// The reply to a table write whose journal record is `seq`.
    Write(Held, Vec<u8>),
    /// A `SELECT` to stream once everything before it is out.
    Stream(Box<(RowStream, Format, Option<Value>)>),
    Quit,
}

/// A timed request's command family (index in `stats::FAMILIES`) and when it was read.
type Timing = Option<(u8, std::time::Instant)>;

/// The channel family's index in `stats::FAMILIES` (`PUB`'s).
const CHANNEL_FAMILY: u8 = 1;

/// The family of `c`, as an index in `stats::FAMILIES`.
fn family(c: &Command) -> u8 {
    match c {
        Command::Session(_) => 0,
        Command::Channel(_) => CHANNEL_FAMILY,
        Command::Live(_) => 2,
        Command::Table(_) => 3,
        Command::App(_) => 4,
        Command::Account(_) => 5,
        Command::Service(_) => 6,
        Command::File(_) => 7,
    }
}

/// A reply to a table write that is encoded but must not be written before its journal
/// record `seq` is durable: `start..end` in `out` (in its own buffer while pending).
/// If the journal fails first, the reply is replaced by an error.
struct Held {
    start: usize,
    end: usize,
    seq: u64,
    format: Format,
    id: Option<Value>,
}

/// One client's protocol state, whichever transport carries it.
pub struct Session {
    pub id: ConnId,
    /// The peer, for logs.
    pub addr: std::net::SocketAddr,
    opened: std::time::Instant,
    pub outbox: Arc<Outbox>,
    /// The outbox, as the journal wakes it.
    waiter: Arc<dyn Waiter>,
    ctx: Arc<ConnContext>,
    /// Format of the most recent request, or the one fixed by `FORMAT`; pushes are
    /// encoded in it.
    format: Format,
    /// Set by `FORMAT json|text` (or `?format=` on the WebSocket URL): requests no
    /// longer change `format`.
    fixed: bool,
    pending: VecDeque<Pending>,
    in_flight: usize,
    /// `PUB`s this connection delivers itself.
    publisher: Publisher,
    /// Requests read so far (the latency of one in `SAMPLE_EVERY` is measured).
    requests_read: u32,
    /// The request being handled, if its latency is measured: its family and when it
    /// was read. Taken by the reply that waits for it, else observed when it is done.
    timing: Timing,
    /// Commands parsed but not yet sent to the manager: sent together by `send_batch`.
    batch: Vec<Command>,
    /// Items taken from the outbox and not yet encoded.
    inbox: VecDeque<OutItem>,
    /// Encoded lines, each ending in `\n`, waiting for the transport.
    pub out: Vec<u8>,
    /// Set once the connection must stop reading and close after flushing `out`.
    pub ending: Option<Ending>,
    quit_requested: bool,
    /// Journal sequence number that must be durable before `out` may be written (0:
    /// nothing to wait for).
    durable_needed: u64,
    /// Replies in `out` to writes not yet durable, in order.
    held: Vec<Held>,
    stream: Option<Box<Streaming>>,
    /// A listing request is with the manager: no more requests are read until its
    /// reply is in.
    listing: bool,
    /// `Pending::Stream`s queued.
    streams_waiting: usize,
    /// Since when this connection has run without letting others run (streaming).
    slice: crate::coop::Slice,
    /// Longest single reply line this transport can carry whole (WebSocket frames are
    /// whole messages); `None` for no limit.
    line_limit: Option<usize>,
    transport: Transport,
    /// Whether the client passed the framework's gate (always, without a gate).
    admitted: bool,
    /// The headers it passed the gate with, for actions.
    headers: Arc<Headers>,
    /// Actions running for it.
    calls: usize,
    /// The token of its next action's answer.
    next_token: u64,
    /// Its actions and account work waiting to run.
    call_queue: Calls,
    /// Who the client is, as last read from its outbox, and that read's version.
    identity: Arc<Identity>,
    /// Its role as it was when last read.
    role: Arc<Role>,
    /// The outbox's identity version and the roles' version when last read.
    identity_seen: (u64, u64),
    /// The token of an account request (`LOGIN`…) not yet answered: nothing more is
    /// read meanwhile, so what follows a `LOGIN` is checked against who the client
    /// became.
    account_waiting: Option<u64>,
    /// Failed logins on this connection.
    login_failures: Arc<AtomicU32>,
    /// Service requests waiting for their answers.
    requests: usize,
    /// JSON requests with an id, answered as soon as ready: token and id.
    detached: Vec<(u64, Option<Value>)>,
}

/// Marks the tokens of service requests (their answers come from the manager, not from
/// the call runner).
const REQUEST: u64 = 1 << 63;

impl Session {
    /// Registers the connection with the channel manager and queues the greeting.
    /// `None` when the manager is gone (the server is stopping).
    /// `fixed`: a format asked for when connecting (the greeting is in it too).
    pub(crate) fn start(
        ctx: Arc<ConnContext>,
        id: ConnId,
        outbox: Arc<Outbox>,
        addr: std::net::SocketAddr,
        transport: Transport,
        fixed: Option<Format>,
    ) -> Option<Session> {
        let line_limit = (transport == Transport::WebSocket)
            .then(|| ctx.settings.max_line.max(ctx.settings.outbox_limit));
        let name = commands::session::default_name(id);
        let version = env!("CARGO_PKG_VERSION");
        let hello = match fixed {
            Some(Format::Json) => format!(
                "{{\"event\":\"hello\",\"server\":\"leviathan\",\"version\":\"{version}\",\"name\":\"{name}\"}}\n"
            ),
            _ => format!("HELLO leviathan {version} {name}\n"),
        };
        let name: Arc<str> = name.into();
        // Set here, not only when the manager hears of the connection: this connection
        // may publish (naming itself in each message) before the manager has.
        outbox.set_name(name.clone());
        ctx.ops
            .send(ChannelOp::Connect {
                outbox: outbox.clone(),
                name,
                addr,
                transport,
            })
            .ok()?;
        log::debug!(
            "connection {id} from {addr} ({}): opened",
            transport.as_str()
        );
        Some(Session {
            id,
            addr,
            opened: std::time::Instant::now(),
            waiter: outbox.clone(),
            outbox,
            format: fixed.unwrap_or(Format::Text),
            fixed: fixed.is_some(),
            pending: VecDeque::new(),
            in_flight: 0,
            publisher: Publisher::default(),
            requests_read: 0,
            timing: None,
            batch: Vec::new(),
            inbox: VecDeque::new(),
            out: hello.into_bytes(),
            ending: None,
            quit_requested: false,
            durable_needed: 0,
            held: Vec::new(),
            stream: None,
            listing: false,
            streams_waiting: 0,
            slice: crate::coop::Slice::new(),
            line_limit,
            transport,
            admitted: !ctx.framework.has_gate(),
            headers: Arc::default(),
            calls: 0,
            next_token: 0,
            call_queue: Calls::default(),
            identity: Arc::new(Identity::guest()),
            role: Arc::new(Role::default()),
            identity_seen: (u64::MAX, 0),
            account_waiting: None,
            login_failures: Arc::default(),
            requests: 0,
            detached: Vec::new(),
            ctx,
        })
    }

    /// Shows the gate the headers a WebSocket client connected with (its upgrade
    /// request's headers and query parameters); passing admits it at once.
    pub fn admit_headers(&mut self, headers: Headers) {
        if self.ctx.framework.admit(&headers).is_ok() {
            self.admitted = true;
        }
        self.headers = Arc::new(headers);
    }

    /// Whether more requests should be read now. False while too many requests wait on
    /// the manager, while `out` holds more than `out_budget` bytes, or once ending.
    pub fn wants_input(&self, out_budget: usize) -> bool {
        self.ending.is_none()
            && !self.quit_requested
            && self.stream.is_none()
            && !self.listing
            && self.streams_waiting == 0
            && self.in_flight < MAX_IN_FLIGHT
            && self.calls < MAX_CALLS
            && self.account_waiting.is_none()
            && self.out.len() < out_budget
    }

    /// Whether everything owed to the client has been encoded (the transport may close
    /// once `out` is written).
    pub fn is_finished(&self) -> bool {
        self.ending.is_some() && self.pending.is_empty() || self.ending == Some(Ending::ManagerGone)
    }

    /// Pauses this coroutine (never its worker) while something it published or sent
    /// is crowding a receiver's outbox, so a receiver that reads, only slower, keeps up
    /// instead of being cut. Bounded: the pause ends once the receiver has room, after
    /// [`STALL_MAX`], or as soon as the receiver makes no progress for
    /// [`STALL_NO_PROGRESS`]; a receiver that does not read still overflows and is cut.
    pub fn pause_if_crowding(&mut self) {
        let Some(receiver) = self.outbox.take_stall() else {
            return;
        };
        // What this connection published is handed over before it waits for a receiver
        // to catch up on it.
        self.publisher.flush(&self.ctx.stats);
        receiver.wait_while_crowded(crate::coop::nap);
    }

    /// Whether `out` may be written. Replies to table writes wait until the journal holds
    /// them: written to the OS (so a `kill -9` loses no acknowledged write, as with
    /// Redis's AOF), and under fsync `always` also synced. The journal wakes this
    /// connection when they are.
    pub fn output_durable(&mut self) -> bool {
        if self.durable_needed == 0 {
            return true;
        }
        let Some(journal) = self.ctx.store.journal().cloned() else {
            return true;
        };
        if journal.durable_or_wake(self.durable_needed, &self.waiter) {
            self.durable_needed = 0;
            self.held.clear();
            return true;
        }
        match journal.failure() {
            Some(why) => {
                self.refuse_held(&journal, &why);
                true
            }
            None => false,
        }
    }

    /// The journal cannot write: every reply to a write that is not durable becomes an
    /// `unavailable` error, so the client hears now instead of when the disk is back.
    /// Nothing is acknowledged that is not in the journal.
    fn refuse_held(&mut self, journal: &Journal, why: &str) {
        let refusal = || {
            Reply::Error(ErrorReply::new(
                "unavailable",
                format!(
                    "{why}; this change is applied in memory and will be journaled once the disk can be written, but it is not durable now"
                ),
            ))
        };
        let mut out = Vec::with_capacity(self.out.len());
        let mut pos = 0;
        for h in std::mem::take(&mut self.held) {
            out.extend_from_slice(&self.out[pos..h.start]);
            if journal.is_durable(h.seq) {
                out.extend_from_slice(&self.out[h.start..h.end]);
            } else {
                refusal().encode(h.format, h.id.as_ref(), &mut out);
            }
            pos = h.end;
        }
        out.extend_from_slice(&self.out[pos..]);
        self.out = out;
        for p in self.pending.iter_mut() {
            if let Pending::Write(h, bytes) = p {
                let bytes = if journal.is_durable(h.seq) {
                    std::mem::take(bytes)
                } else {
                    let mut b = Vec::new();
                    refusal().encode(h.format, h.id.as_ref(), &mut b);
                    b
                };
                *p = Pending::Ready(bytes);
            }
        }
        self.durable_needed = 0;
    }

    /// Counts this connection as a slow consumer cut by its transport.
    pub fn count_slow_consumer(&self) {
        self.ctx
            .stats
            .slow_consumers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether requests still wait on the manager.
    pub fn awaiting_replies(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Drops the places kept for service answers (the client stopped sending, and is
    /// taken to be gone), and writes what was waiting behind them.
    pub fn give_up_requests(&mut self) {
        if self.requests == 0 {
            return;
        }
        self.pending
            .retain(|p| !matches!(p, Pending::Answer { token, .. } if token & REQUEST != 0));
        self.detached.clear();
        self.requests = 0;
        self.flush_ready();
    }

    /// Handles one request line (without its `\n`), timing one request in
    /// [`SAMPLE_EVERY`].
    pub fn handle_line(&mut self, line: &[u8]) {
        self.requests_read = self.requests_read.wrapping_add(1);
        let started = self
            .requests_read
            .is_multiple_of(SAMPLE_EVERY)
            .then(std::time::Instant::now);
        if let Some((channel, text)) = commands::command::pub_text(line) {
            if self.publish_now(channel, text) {
                let done = started.map(|t| (CHANNEL_FAMILY, t));
                self.observe(done);
                return;
            }
        }
        let Some(req) = commands::parse_request(line, &self.ctx.settings.parse) else {
            return;
        };
        if let (Some(t), Ok(c)) = (started, &req.command) {
            self.timing = Some((family(c), t));
        }
        self.handle_request(req);
        // Answered here: timed now (a reply that waits took it).
        let done = self.timing.take();
        self.observe(done);
    }

    /// Whether a `PUB` read now may be delivered by this connection itself: nothing of
    /// it waits on the manager (see `Publisher::may_publish`).
    fn may_publish_now(&self) -> bool {
        let waiting = self.in_flight > 0 || !self.batch.is_empty();
        self.publisher.may_publish(waiting, &self.ctx.stats)
    }

    /// Publishes a text `PUB` read straight from its line, when it may go out at once:
    /// no command is made and the message is written into its run as the `MSG` line
    /// receivers get. `false` leaves it to the general path (which also gives any
    /// error: a gate not passed, a right missing, a channel unknown is answered there).
    fn publish_now(&mut self, channel: &str, text: &str) -> bool {
        if !self.admitted {
            return false;
        }
        self.refresh_identity();
        let mode = self.ctx.auth.mode;
        if !commands::rights::may_pub(mode, &self.identity, &self.role, channel) {
            return false;
        }
        if !self.may_publish_now() {
            return false;
        }
        if !self.fixed {
            self.format = Format::Text;
        }
        let reply = self.publisher.publish_text(
            &self.ctx.routes,
            &self.outbox,
            channel,
            text,
            &self.ctx.stats,
        );
        self.local_reply(Format::Text, None, reply);
        true
    }

    /// Records how long a timed request took, now that its reply is ready.
    fn observe(&self, timing: Timing) {
        if let Some((family, at)) = timing {
            self.ctx.stats.latency[family as usize].observe(at.elapsed());
        }
    }

    fn handle_request(&mut self, req: commands::Request) {
        if !self.fixed {
            self.format = req.format;
        }
        let command = match req.command {
            Ok(c) if !self.admitted && !c.passes_closed_gate() => Err(ErrorReply::new(
                "unauthorized",
                "this server admits clients that pass its gate: send AUTH <json object> with your headers first (PING, HELP, AUTH and QUIT work before)".into(),
            )),
            Ok(c) => {
                self.refresh_identity();
                let mode = self.ctx.auth.mode;
                commands::rights::check(mode, &self.identity, &self.role, &c).map(|()| c)
            }
            other => other,
        };
        if let Ok(Command::Channel(ChannelCommand::Pub { channel, data })) = command {
            if self.may_publish_now() {
                let reply = self.publisher.publish(
                    &self.ctx.routes,
                    &self.outbox,
                    &channel,
                    data,
                    &self.ctx.stats,
                );
                return self.local_reply(req.format, req.id, reply);
            }
            self.publisher.sent_through_manager();
            self.batch
                .push(Command::Channel(ChannelCommand::Pub { channel, data }));
            self.in_flight += 1;
            self.pending.push_back(Pending::Manager {
                format: req.format,
                id: req.id,
                at: self.timing.take(),
            });
            return;
        }
        // Anything else waits until what this batch published is out: its effects may
        // be seen by the receivers (an answer to a request, a table change). A request
        // is staged behind it instead.
        let is_request = matches!(&command, Ok(Command::Service(c)) if matches!(**c, ServiceCommand::Req { .. }));
        if !is_request {
            self.publisher.flush(&self.ctx.stats);
        }
        match command {
            Err(e) => self.local_reply(req.format, req.id, Reply::Error(e)),
            Ok(Command::App(c)) => self.app(*c, req.format, req.id),
            Ok(Command::Account(c)) => self.account(*c, req.format, req.id),
            Ok(Command::Service(c)) if is_request => self.service_request(*c, req.format, req.id),
            Ok(Command::Service(c))
                if matches!(
                    *c,
                    ServiceCommand::Reply { .. } | ServiceCommand::Fail { .. }
                ) =>
            {
                self.service_answer(*c, req.format, req.id)
            }
            Ok(Command::Session(SessionCommand::Format(choice))) => {
                match choice {
                    Some(FormatChoice::Fixed(f)) => {
                        self.format = f;
                        self.fixed = true;
                    }
                    Some(FormatChoice::Auto) => {
                        self.fixed = false;
                        self.format = req.format;
                    }
                    None => {}
                }
                let reply = Reply::Record {
                    key: "format",
                    fields: vec![
                        ("format", Value::from(self.format.as_str())),
                        ("fixed", Value::from(self.fixed)),
                    ],
                };
                self.local_reply(req.format, req.id, reply);
            }
            // Reading it was the point: the connection noted the input.
            Ok(Command::Session(SessionCommand::Pong)) => {}
            Ok(Command::Table(t)) if t.is_select() => self.select(*t, req.format, req.id),
            Ok(Command::File(c)) => {
                let user = self.identity.user.as_deref();
                let reply = commands::files::apply(self.ctx.files.as_deref(), user, *c);
                self.local_reply(req.format, req.id, reply);
            }
            Ok(Command::Session(SessionCommand::Quit)) => {
                let quit = Command::Session(SessionCommand::Quit);
                let (reply, _) = commands::apply_local(quit, &self.ctx.store);
                self.local_reply(req.format, req.id, reply);
                self.quit_requested = true;
                self.pending.push_back(Pending::Quit);
                self.flush_ready();
            }
            Ok(command)
                if command.is_cluster_wide() && self.ctx.routes.backplane.get().is_some() =>
            {
                self.cluster_wide(command, req.format, req.id)
            }
            Ok(cmd) if cmd.is_local() => {
                let (reply, seq) = commands::apply_local(cmd, &self.ctx.store);
                match seq {
                    Some(seq) => self.write_reply(req.format, req.id, reply, seq),
                    None => self.local_reply(req.format, req.id, reply),
                }
            }
            Ok(command) => {
                self.listing |= command.is_listing();
                self.batch.push(command);
                self.in_flight += 1;
                self.pending.push_back(Pending::Manager {
                    format: req.format,
                    id: req.id,
                    at: self.timing.take(),
                });
            }
        }
    }

    /// Carries out the application's own commands through the framework. An action
    /// runs in the connection's call runner (`calls.rs`), and its answer takes its turn
    /// among the replies.
    fn app(&mut self, c: AppCommand, format: Format, id: Option<Value>) {
        let framework = self.ctx.framework.clone();
        match c {
            AppCommand::Actions => self.local_reply(format, id, framework.actions_reply()),
            AppCommand::Tasks => self.local_reply(format, id, framework.tasks_reply()),
            AppCommand::Auth(headers) => {
                let reply = match framework.admit(&headers) {
                    Ok(()) => {
                        self.admitted = true;
                        self.headers = Arc::new(headers);
                        Reply::Done(None)
                    }
                    Err(why) => {
                        log::info!(
                            "connection {} from {}: not admitted: {why}",
                            self.id,
                            self.addr
                        );
                        Reply::Error(ErrorReply::new("unauthorized", why))
                    }
                };
                self.local_reply(format, id, reply);
            }
            AppCommand::Call { action, data } => {
                if !framework.has_action(&action) {
                    let reply = crate::framework::Framework::no_such_action(&action);
                    return self.local_reply(format, id, reply);
                }
                let ctx = Ctx::for_client(
                    self.hub(),
                    self.id,
                    self.transport,
                    self.headers.clone(),
                    self.identity.clone(),
                );
                self.run_later(
                    format,
                    id,
                    Box::new(move || (framework.call(ctx, &action, data), None)),
                );
            }
        }
    }

    /// Carries out `LOGIN`, `RESUME`, `LOGOUT`, `PASSWD` and the admin commands in the
    /// call runner: they wait for password hashing and for the manager. Nothing more
    /// is read until the answer is in.
    fn account(&mut self, c: AccountCommand, format: Format, id: Option<Value>) {
        let env = self.account_env();
        let token = self.run_later(format, id, Box::new(move || env.run(c)));
        self.account_waiting = Some(token);
    }

    /// Takes up the session `token` opens before anything is read (a WebSocket that
    /// connected with one); waits here, in this connection's coroutine.
    pub fn resume_now(&mut self, token: String) {
        let env = self.account_env();
        let (reply, _) = env.run(AccountCommand::Resume { token });
        if let Reply::Error(e) = reply {
            log::info!("connection {} from {}: {e}", self.id, self.addr);
        }
    }

    /// How work run for this client reaches the manager and the tables.
    fn hub(&self) -> Hub {
        Hub {
            ops: self.ctx.ops.clone(),
            store: self.ctx.store.clone(),
            files: self.ctx.files.clone(),
            backplane: self.ctx.routes.backplane.get().cloned(),
        }
    }

    fn account_env(&self) -> AccountEnv {
        AccountEnv {
            auth: self.ctx.auth.clone(),
            hub: self.hub(),
            id: self.id,
            addr: self.addr,
            outbox: self.outbox.clone(),
            failures: self.login_failures.clone(),
        }
    }

    /// Runs `work` in the connection's call runner; its reply takes its turn among the
    /// replies. What this client asked of the manager before goes first, so the work
    /// sees its effects.
    fn run_later(&mut self, format: Format, id: Option<Value>, work: Work) -> u64 {
        self.send_batch();
        let token = self.next_token;
        self.next_token += 1;
        self.calls += 1;
        let at = self.timing.take();
        self.pending.push_back(Pending::Answer {
            token,
            format,
            id,
            at,
        });
        self.call_queue.run(Call { token, work }, &self.outbox);
        token
    }

    /// Reads who the client is, and its role, again when either changed (a login, a
    /// reload of the roles); two atomic loads otherwise.
    fn refresh_identity(&mut self) {
        let seen = (self.outbox.identity_version(), self.ctx.auth.version());
        if seen != self.identity_seen {
            self.identity = self.outbox.identity();
            self.role = self.ctx.auth.role(&self.identity.role);
            self.identity_seen = seen;
        }
    }

    /// Sends the commands parsed since the last call to the manager, as one op. Call it
    /// after each round of `handle_line`s, before waiting.
    pub fn send_batch(&mut self) {
        self.publisher.flush_if_large(&self.ctx.stats);
        if self.batch.is_empty() {
            return;
        }
        let commands = std::mem::take(&mut self.batch);
        let op = ChannelOp::Apply {
            id: self.id,
            commands,
        };
        if self.ctx.ops.send(op).is_err() {
            self.ending = Some(Ending::ManagerGone);
        }
    }

    /// Hands over what this connection published if that is a few messages (a sparse
    /// flow): before the connection writes its replies, since a reply written first
    /// woke the publishing client, which on a busy machine took the core before the
    /// messages were handed over (p50 latency at 20k msgs/s measured 97-156 us instead
    /// of about 65). Many are left to gather into a larger batch.
    pub fn flush_sparse(&mut self) {
        self.publisher.flush_if_sparse(&self.ctx.stats);
    }

    /// Hands over what this connection published and has not yet: call it before the
    /// connection waits for I/O.
    pub fn flush_published(&mut self) {
        self.publisher.flush(&self.ctx.stats);
    }

    /// Answers a line that could not be read as a request (too long, say), in the
    /// format its first bytes suggest (the connection's current format when none are given).
    pub fn reject_line(&mut self, first_bytes: &[u8], code: &'static str, message: String) {
        let format = if first_bytes.is_empty() {
            self.format
        } else {
            guess_format(first_bytes)
        };
        if !self.fixed {
            self.format = format;
        }
        self.local_reply(format, None, Reply::Error(ErrorReply::new(code, message)));
    }

    fn local_reply(&mut self, format: Format, id: Option<Value>, reply: Reply) {
        if self.pending.is_empty() {
            reply.encode(format, id.as_ref(), &mut self.out);
        } else {
            let slot = self.waiting(format, id, reply, None);
            self.pending.push_back(slot);
        }
    }

    /// Opens a `SELECT` and streams it. Out of line: its frame would otherwise be
    /// reserved by every request, and stack pages once touched stay resident for the
    /// life of every connection.
    #[inline(never)]
    fn select(&mut self, c: TableCommand, format: Format, id: Option<Value>) {
        let TableCommand::Select { table, query } = c else {
            return;
        };
        match commands::tables::select::open(&self.ctx.store, &table, &query) {
            Ok(rows) => self.queue_stream(rows, format, id),
            Err(e) => self.local_reply(format, id, Reply::Error(e)),
        }
    }

    /// Streams `rows` now, or once the replies before it are out.
    fn queue_stream(&mut self, rows: RowStream, format: Format, id: Option<Value>) {
        if self.pending.is_empty() && self.stream.is_none() {
            self.start_stream(rows, format, id);
        } else {
            self.streams_waiting += 1;
            self.pending
                .push_back(Pending::Stream(Box::new((rows, format, id))));
        }
    }

    fn start_stream(&mut self, rows: RowStream, format: Format, id: Option<Value>) {
        self.stream = Some(Box::new(Streaming::rows(rows, format, id, &mut self.out)));
    }

    /// Adds one chunk of the reply being streamed to `out`, if it has room. Returns
    /// whether anything was done. Out of line, for the same reason as `select`.
    #[inline(never)]
    fn fill_stream(&mut self, budget: usize) -> bool {
        if self.out.len() >= budget {
            return false;
        }
        let Some(s) = self.stream.take() else {
            return false;
        };
        match s.step(&mut self.out, self.line_limit) {
            (Step::More, rest) => {
                self.stream = rest;
                // One chunk at a time: others on this worker run in between.
                self.slice.give_way();
            }
            (Step::Done, _) => self.flush_ready(),
        }
        true
    }

    /// Queues the reply to a table write, held until its journal record `seq` is durable.
    fn write_reply(&mut self, format: Format, id: Option<Value>, reply: Reply, seq: u64) {
        if self.pending.is_empty() {
            return self.hold(format, id, reply, seq);
        }
        let slot = self.waiting(format, id, reply, Some(seq));
        self.pending.push_back(slot);
    }

    /// A reply encoded to wait for the replies before it: ready, or (for a change
    /// journaled as record `durable`) held until that record is durable too.
    fn waiting(
        &mut self,
        format: Format,
        id: Option<Value>,
        reply: Reply,
        durable: Option<u64>,
    ) -> Pending {
        let mut buf = Vec::new();
        reply.encode(format, id.as_ref(), &mut buf);
        let Some(seq) = durable else {
            return Pending::Ready(buf);
        };
        self.durable_needed = self.durable_needed.max(seq);
        let held = Held {
            start: 0,
            end: 0,
            seq,
            format,
            id,
        };
        Pending::Write(held, buf)
    }

    /// Encodes a reply into `out`, where it is held until journal record `seq` is
    /// durable (and rewritten to an error if the journal fails first).
    fn hold(&mut self, format: Format, id: Option<Value>, reply: Reply, seq: u64) {
        self.durable_needed = self.durable_needed.max(seq);
        let start = self.out.len();
        reply.encode(format, id.as_ref(), &mut self.out);
        self.held.push(Held {
            start,
            end: self.out.len(),
            seq,
            format,
            id,
        });
    }

    /// Moves replies that no longer wait on anything into `out`.
    fn flush_ready(&mut self) {
        while let Some(p) = self.pending.front_mut() {
            match p {
                Pending::Manager { .. } | Pending::Answer { .. } => break,
                Pending::Ready(buf) => {
                    self.out.extend_from_slice(buf);
                    self.pending.pop_front();
                }
                Pending::Stream(..) => {
                    if self.stream.is_some() {
                        break;
                    }
                    if let Some(Pending::Stream(s)) = self.pending.pop_front() {
                        self.streams_waiting -= 1;
                        let (rows, format, id) = *s;
                        self.start_stream(rows, format, id);
                    }
                    break;
                }
                Pending::Write(..) => {
                    if let Some(Pending::Write(mut held, buf)) = self.pending.pop_front() {
                        held.start = self.out.len();
                        self.out.extend_from_slice(&buf);
                        held.end = self.out.len();
                        self.held.push(held);
                    }
                }
                Pending::Quit => {
                    self.pending.pop_front();
                    self.ending.get_or_insert(Ending::Quit);
                }
            }
        }
    }

    /// Encodes outbox items into `out` until it holds `budget` bytes. Returns whether
    /// anything was encoded.
    pub fn pump(&mut self, budget: usize) -> bool {
        if let Some(reason) = self.outbox.cut_reason().filter(|_| self.ending.is_none()) {
            // Cut (a slow consumer, a stale connection…): nothing still waiting matters
            // any more, and the connection must close now, not once the client reads
            // what fills `out`.
            self.inbox.clear();
            self.outbox.take_all(&mut self.inbox);
            self.inbox.clear();
            self.pending.clear();
            self.held.clear();
            self.stream = None;
            self.streams_waiting = 0;
            self.durable_needed = 0;
            Push::Bye(reason).encode(self.format, &mut self.out);
            self.ending = Some(Ending::Bye(reason));
            return true;
        }
        if self.stream.is_some() {
            // No push may come between a reply's rows: they wait in the outbox.
            return self.fill_stream(budget);
        }
        if self.inbox.is_empty() {
            self.outbox.take_all(&mut self.inbox);
        }
        let mut progressed = false;
        while self.out.len() < budget {
            let Some(item) = self.inbox.pop_front() else {
                break;
            };
            progressed = true;
            match item {
                OutItem::Reply(reply, durable) => {
                    self.manager_reply(reply, durable);
                    if self.stream.is_some() {
                        // Nothing may come between the items of the reply now streaming.
                        break;
                    }
                }
                OutItem::Push(Push::Bye(reason)) => {
                    Push::Bye(reason).encode(self.format, &mut self.out);
                    self.ending = Some(Ending::Bye(reason));
                    self.pending.clear();
                    self.inbox.clear();
                }
                OutItem::Push(push) => push.encode(self.format, &mut self.out),
                OutItem::Run(run) => self.out.extend_from_slice(run.encoded(self.format)),
                OutItem::Bytes(bytes) => self.out.extend_from_slice(&bytes),
                OutItem::Answer(token, reply) => self.answer(token, reply),
            }
        }
        if progressed {
            self.outbox.note_progress();
        }
        progressed
    }

    /// Puts the answer to request `token` in its place: written now if every reply
    /// before it is out, else kept until they are.
    fn answer(&mut self, token: u64, reply: Reply) {
        if token & REQUEST != 0 {
            self.requests = self.requests.saturating_sub(1);
            // A JSON request with an id is answered as soon as its answer is ready.
            if let Some(i) = self.detached.iter().position(|(t, _)| *t == token) {
                let (_, id) = self.detached.swap_remove(i);
                reply.encode(Format::Json, id.as_ref(), &mut self.out);
                return;
            }
        }
        let at = self
            .pending
            .iter()
            .position(|p| matches!(p, Pending::Answer { token: t, .. } if *t == token));
        let Some(at) = at else {
            return;
        };
        if token & REQUEST == 0 {
            self.calls -= 1;
        }
        if self.account_waiting == Some(token) {
            self.account_waiting = None;
        }
        let Some(Pending::Answer {
            format, id, at: t, ..
        }) = self.pending.remove(at)
        else {
            return;
        };
        self.observe(t);
        if at == 0 {
            reply.encode(format, id.as_ref(), &mut self.out);
            self.flush_ready();
        } else {
            let slot = self.waiting(format, id, reply, None);
            self.pending.insert(at, slot);
        }
    }

    fn manager_reply(&mut self, reply: Reply, durable: Option<u64>) {
        let first = self
            .pending
            .iter()
            .position(|p| matches!(p, Pending::Manager { .. }));
        if let Some(at) = first.filter(|at| *at > 0) {
            // An earlier request (an action) is still running: this reply waits its
            // turn, encoded whole.
            self.in_flight -= 1;
            if self.in_flight == 0 {
                self.listing = false;
            }
            let Some(Pending::Manager { format, id, at: t }) = self.pending.remove(at) else {
                return;
            };
            self.observe(t);
            let slot = self.waiting(format, id, reply, durable);
            self.pending.insert(at, slot);
            return;
        }
        match self.pending.pop_front() {
            Some(Pending::Manager { format, id, at }) => {
                self.observe(at);
                self.in_flight -= 1;
                if self.in_flight == 0 {
                    // A listing is always the last request sent, so its reply is in.
                    self.listing = false;
                }
                if let Some(seq) = durable {
                    // Answered in turn (it was the oldest), held until its record is durable.
                    self.hold(format, id, reply, seq);
                    self.flush_ready();
                    return;
                }
                match reply {
                    Reply::List { key, items } if items.len() >= STREAM_ITEMS_FROM => {
                        self.stream = Some(Box::new(Streaming::items(
                            key,
                            items,
                            format,
                            id,
                            &mut self.out,
                        )));
                    }
                    reply => {
                        reply.encode(format, id.as_ref(), &mut self.out);
                        self.flush_ready();
                    }
                }
            }
            other => {
                // Cannot happen: the manager answers each request once, in order.
                if let Some(p) = other {
                    self.pending.push_front(p);
                }
                log::error!("connection {}: unexpected reply from the manager", self.id);
            }
        }
    }

    /// Frees buffers an idle connection does not need, so idle connections stay small.
    /// Whether the connection is wholly idle (nothing to write, nothing awaited, not
    /// ending), so that others may write messages to its socket while it waits; the
    /// format they are written in.
    pub fn lendable(&self) -> Option<Format> {
        let idle = self.out.is_empty()
            && self.inbox.is_empty()
            && self.pending.is_empty()
            && self.held.is_empty()
            && self.stream.is_none()
            && self.ending.is_none()
            && !self.quit_requested
            && self.transport == Transport::Tcp;
        idle.then_some(self.format)
    }

    pub fn shrink_idle(&mut self) {
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = Vec::new();
        }
        if self.inbox.is_empty() && self.inbox.capacity() > 0 {
            self.inbox = VecDeque::new();
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let why = self
            .outbox
            .cut_reason()
            .map_or(String::new(), |r| format!(" ({})", r.as_str()));
        log::debug!(
            "connection {} from {}: closed after {:.1} s{why}",
            self.id,
            self.addr,
            self.opened.elapsed().as_secs_f64()
        );
        self.outbox.shut();
        let _ = self.ctx.ops.send(ChannelOp::Disconnect { id: self.id });
    }
}
