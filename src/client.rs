//! A blocking client for leviathan, usable from plain threads and from `may` coroutines.
//!
//! It speaks the JSON form of the protocol: each request carries an `id` the server
//! echoes, so replies are matched to requests, and pushes (`"event"`) go to an event
//! channel read by the caller ([`Client::events`]) or a handler thread
//! ([`Client::on_event`]). A thread of the library's own reads the socket, so a slow
//! event handler never holds up replies. When the server goes away the client
//! reconnects with backoff (capped at `Options::max_backoff`), restores its name,
//! subscriptions and watches, and says so with [`Event::Disconnected`] and
//! [`Event::Reconnected`], which lists anything the server refused to restore.
//!
//! ```no_run
//! let client = leviathan::client::Client::connect("127.0.0.1:7000")?;
//! client.name("alice")?;
//! client.create("news")?;
//! client.subscribe("news")?;
//! client.publish("news", &serde_json::json!({"headline": "hi"}))?;
//! for event in client.events().iter() {
//!     println!("{event:?}");
//!     break;
//! }
//! # Ok::<(), leviathan::client::ClientError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// What went wrong with a request.
#[derive(Debug)]
pub enum ClientError {
    /// The server answered with an error: its stable code and message.
    Server { code: String, message: String },
    /// Not connected (the connection dropped; the client may be reconnecting).
    Disconnected,
    /// No reply within `Options::timeout`.
    Timeout,
    /// Connecting or writing failed.
    Io(io::Error),
    /// The server sent something this client does not understand.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Server { code, message } => write!(f, "{code}: {message}"),
            ClientError::Disconnected => write!(f, "not connected to the server"),
            ClientError::Timeout => write!(f, "no reply in time"),
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl ClientError {
    /// The server's error code, if the server refused the request.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A message delivered to this client.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The channel (`None` for a direct message).
    pub channel: Option<String>,
    pub from: String,
    pub data: Value,
}

impl Delivery {
    /// The message's data as any deserializable type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }
}

/// Something the server pushed, or a change of connection.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A message on a subscribed channel.
    Message(Delivery),
    /// A direct message (`SEND`).
    Direct(Delivery),
    /// A subscribed channel was dropped.
    Dropped { channel: String },
    /// A watched table changed (`change` is insert, update, delete or drop).
    Row {
        table: String,
        change: String,
        row: Option<Value>,
    },
    /// The server is closing the connection (`shutdown`, `slow_consumer`).
    Bye { reason: String },
    /// The connection dropped; the client is reconnecting (if enabled).
    Disconnected,
    /// A request for a service this client offers without a handler
    /// ([`Client::serve`] answers by itself): answer it with `REPLY` or `FAIL`
    /// (`{"op":"reply","req":…}`).
    Request {
        req: String,
        service: String,
        from: String,
        data: Value,
    },
    /// The client is connected again. Its name, subscriptions and watches were sent
    /// again; `not_restored` says which the server refused, and why (a channel that no
    /// longer exists, a name taken meanwhile), so nothing is lost silently. Channels
    /// that keep a history were resumed from the last message received, and watches
    /// from the last row change: what happened meanwhile arrived before this event,
    /// except for those in `lost` (`SUB <channel>`, `WATCH <table>`), whose server
    /// no longer held all of it (reload them: `REPLAY`, `SELECT`). Messages on
    /// channels without a history published while disconnected are gone.
    Reconnected {
        not_restored: Vec<String>,
        lost: Vec<String>,
    },
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Reconnect when the connection drops.
    pub reconnect: bool,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// How long a request waits for its reply.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reconnect: true,
            max_backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

type ReplySender = may::sync::mpsc::Sender<Result<Value, ClientError>>;

/// `req` with a `where` filter, when there is one.
fn with_where(mut req: Value, filter: Option<&str>) -> Value {
    if let Some(f) = filter {
        req["where"] = Value::from(f);
    }
    req
}

/// What a reconnection restores: the state the server accepted, whichever way it was
/// asked for (the helpers or `request`).
#[derive(Default)]
struct Restore {
    name: Option<String>,
    /// The token of the session logged in to: resumed first after a reconnect (it
    /// brings the user and its name back).
    session: Option<String>,
    /// Channel or pattern → its WHERE filter.
    subs: BTreeMap<String, Option<String>>,
    /// Table → its WHERE filter.
    watches: BTreeMap<String, Option<String>>,
    /// Services offered.
    serves: std::collections::BTreeSet<String>,
    /// History channels → the offset of the last message received and its epoch: a
    /// reconnection resumes after it.
    positions: BTreeMap<String, (u64, String)>,
    /// Watched tables → the number of the last row change received.
    watched_up_to: BTreeMap<String, u64>,
}

impl Restore {
    /// Notes a request the server accepted, and its reply.
    fn accepted(&mut self, req: &Value, reply: &Value) {
        let s = |k: &str| req[k].as_str().map(str::to_string);
        match req["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("name") => self.name = s("name"),
            Some("login") => {
                self.session = reply["login"]["session"].as_str().map(str::to_string);
                self.name = None;
            }
            Some("resume") => {
                self.session = s("token");
                self.name = None;
            }
            Some("logout") => self.session = None,
            Some("serve") => {
                if let Some(svc) = s("service") {
                    self.serves.insert(svc);
                }
            }
            Some("unserve") => {
                if let Some(svc) = s("service") {
                    self.serves.remove(&svc);
                }
            }
            Some("sub") => {
                if let Some(c) = s("channel") {
                    let h = &reply["history"];
                    if let (Some(o), Some(e)) = (h["offset"].as_u64(), h["epoch"].as_str()) {
                        self.position(&c, o, e);
                    }
                    self.subs.insert(c, s("where"));
                }
            }
            Some("unsub") => {
                if let Some(c) = s("channel") {
                    self.subs.remove(&c);
                    self.positions.remove(&c);
                }
            }
            Some("watch") => {
                if let Some(t) = s("table") {
                    if let Some(seq) = reply["watch"]["seq"].as_u64() {
                        self.watched(&t, seq);
                    }
                    self.watches.insert(t, s("where"));
                }
            }
            Some("unwatch") => {
                if let Some(t) = s("table") {
                    self.watches.remove(&t);
                    self.watched_up_to.remove(&t);
                }
            }
            _ => {}
        }
    }

    /// Notes that everything up to `offset` of `epoch` on `channel` was received (or
    /// will be: a subscription's starting point). Replies and messages arrive on
    /// different threads, so within an epoch the highest wins; a new epoch replaces
    /// the old one.
    fn position(&mut self, channel: &str, offset: u64, epoch: &str) {
        match self.positions.get_mut(channel) {
            Some((o, e)) if e == epoch => *o = (*o).max(offset),
            Some(p) => *p = (offset, epoch.to_string()),
            None => {
                self.positions
                    .insert(channel.to_string(), (offset, epoch.to_string()));
            }
        }
    }

    /// Notes that the changes of `table` up to `seq` were received (or will be).
    fn watched(&mut self, table: &str, seq: u64) {
        let up_to = self.watched_up_to.entry(table.to_string()).or_default();
        *up_to = (*up_to).max(seq);
    }

    /// The requests that bring it back, each with how to name it to a person.
    fn requests(&self) -> Vec<(String, Value)> {
        let mut reqs = Vec::new();
        if let Some(t) = &self.session {
            reqs.push(("RESUME".to_string(), json!({"op": "resume", "token": t})));
        }
        if let Some(n) = &self.name {
            reqs.push((format!("NAME {n}"), json!({"op": "name", "name": n})));
        }
        for (target, filter) in &self.subs {
            let mut r = with_where(json!({"op": "sub", "channel": target}), filter.as_deref());
            if let Some((offset, epoch)) = self.positions.get(target) {
                r["since"] = Value::from(*offset);
                r["epoch"] = Value::from(epoch.as_str());
            }
            reqs.push((format!("SUB {target}"), r));
        }
        for (table, filter) in &self.watches {
            let mut r = with_where(json!({"op": "watch", "table": table}), filter.as_deref());
            if let Some(seq) = self.watched_up_to.get(table) {
                r["since"] = Value::from(*seq);
            }
            reqs.push((format!("WATCH {table}"), r));
        }
        for service in &self.serves {
            reqs.push((
                format!("SERVE {service}"),
                json!({"op": "serve", "service": service}),
            ));
        }
        reqs
    }
}

/// What a service handler answers instead of a value: the error code and message its
/// requester gets (`FAIL <req-id> <code> <message>`).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceError {
    /// A snake_case word.
    pub code: String,
    pub message: String,
}

impl ServiceError {
    pub fn new(code: &str, message: impl Into<String>) -> ServiceError {
        ServiceError {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

type ServiceHandler = Arc<dyn Fn(Value) -> Result<Value, ServiceError> + Send + Sync>;

struct Inner {
    /// The services this client offers, by name.
    handlers: Mutex<HashMap<String, ServiceHandler>>,
    addr: String,
    opts: Options,
    writer: Mutex<Option<Writer>>,
    pending: Mutex<HashMap<u64, ReplySender>>,
    next_id: AtomicU64,
    restore: Mutex<Restore>,
    closed: AtomicBool,
    events: crossbeam_channel::Sender<Event>,
}

/// A connection to a leviathan server. Cloning is cheap; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    events: crossbeam_channel::Receiver<Event>,
}

type Ws = tungstenite::WebSocket<TcpStream>;

/// How long the WebSocket reader holds the socket before letting writers in.
const WS_POLL: Duration = Duration::from_millis(20);

/// The sending half of a connection.
enum Writer {
    Tcp(TcpStream),
    /// tungstenite's socket cannot be split: the reader and writers share it.
    Ws(Arc<Mutex<Ws>>),
}

impl Writer {
    fn send_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Writer::Tcp(s) => s.write_all(line),
            Writer::Ws(ws) => {
                let body = line.strip_suffix(b"\n").unwrap_or(line);
                let text = String::from_utf8_lossy(body).into_owned();
                ws.lock()
                    .send(tungstenite::Message::text(text))
                    .map_err(|e| io::Error::other(e.to_string()))
            }
        }
    }

    fn shutdown(&self) {
        match self {
            Writer::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Writer::Ws(ws) => {
                let _ = ws.lock().get_ref().shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// The receiving half of a connection.
enum ReadSide {
    Tcp(BufReader<TcpStream>),
    Ws(Arc<Mutex<Ws>>),
}

impl ReadSide {
    /// The next line or text frame into `line`; false when the connection ended.
    fn next_line(&mut self, line: &mut String) -> bool {
        line.clear();
        match self {
            ReadSide::Tcp(r) => matches!(r.read_line(line), Ok(n) if n > 0),
            ReadSide::Ws(ws) => loop {
                let mut guard = ws.lock();
                match guard.read() {
                    Ok(tungstenite::Message::Text(t)) => {
                        line.push_str(t.as_str());
                        return true;
                    }
                    Ok(tungstenite::Message::Close(_)) => return false,
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        // Hand the socket to any writer waiting for it.
                        parking_lot::MutexGuard::unlock_fair(guard);
                    }
                    Err(_) => return false,
                }
            },
        }
    }
}

/// Connects (`host:port`, or `ws://host:port/`) and reads the greeting.
fn open(addr: &str, timeout: Duration) -> io::Result<(Writer, ReadSide)> {
    if let Some(rest) = addr.strip_prefix("ws://") {
        let hostport = rest.split('/').next().unwrap_or(rest);
        let s = connect_tcp(hostport, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let (mut ws, _) = tungstenite::client(addr, s)
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) if t.as_str().starts_with("HELLO ") => {}
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a leviathan server (it sent {other:?})"),
                ))
            }
        }
        ws.get_ref().set_read_timeout(Some(WS_POLL))?;
        let ws = Arc::new(Mutex::new(ws));
        return Ok((Writer::Ws(ws.clone()), ReadSide::Ws(ws)));
    }
    let s = connect_tcp(addr, timeout)?;
    let mut w = s.try_clone()?;
    // Speaking first gets the greeting at once.
    w.write_all(b"{\"op\":\"ping\"}\n")?;
    s.set_read_timeout(Some(timeout))?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("HELLO ") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a leviathan server (it said {:?})", line.trim_end()),
        ));
    }
    line.clear();
    r.read_line(&mut line)?; // the ping's reply
    r.get_ref().set_read_timeout(None)?;
    Ok((Writer::Tcp(w), ReadSide::Tcp(r)))
}

fn connect_tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let s = TcpStream::connect_timeout(&sock, timeout)?;
    s.set_nodelay(true)?;
    Ok(s)
}

impl Client {
    /// Connects to `addr` (`host:port` for TCP, `ws://host:port/` for WebSocket) with
    /// default options.
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, Options::default())
    }

    pub fn connect_with(addr: &str, opts: Options) -> Result<Client, ClientError> {
        let (w, r) = open(addr, opts.timeout)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            handlers: Mutex::new(HashMap::new()),
            addr: addr.to_string(),
            opts,
            writer: Mutex::new(Some(w)),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            restore: Mutex::new(Restore::default()),
            closed: AtomicBool::new(false),
            events: tx,
        });
        let reader = inner.clone();
        std::thread::Builder::new()
            .name("leviathan-client".into())
            .spawn(move || reader.read_loop(r))?;
        Ok(Client { inner, events: rx })
    }

    /// Pushed events, in arrival order: iterate with `.iter()` or poll with `try_recv`.
    pub fn events(&self) -> &crossbeam_channel::Receiver<Event> {
        &self.events
    }

    /// Runs `handler` for every event on a thread of its own.
    pub fn on_event(&self, mut handler: impl FnMut(Event) + Send + 'static) {
        let rx = self.events.clone();
        let _ = std::thread::Builder::new()
            .name("leviathan-events".into())
            .spawn(move || {
                for e in rx.iter() {
                    handler(e);
                }
            });
    }

    /// Sends a request (`{"op": ..., fields...}`) and waits for its reply object.
    /// A reply with `"ok": false` becomes [`ClientError::Server`].
    pub fn request(&self, req: Value) -> Result<Value, ClientError> {
        self.request_within(req, self.inner.opts.timeout)
    }

    fn request_within(&self, mut req: Value, wait: Duration) -> Result<Value, ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(obj) = req.as_object_mut() {
            obj.insert("id".into(), Value::from(id));
        }
        let (tx, rx) = may::sync::mpsc::channel();
        self.inner.pending.lock().insert(id, tx);
        if let Err(e) = self.inner.write(&req) {
            self.inner.pending.lock().remove(&id);
            return Err(e);
        }
        match rx.recv_timeout(wait) {
            Ok(r) => {
                if let Ok(reply) = &r {
                    self.inner.restore.lock().accepted(&req, reply);
                }
                r
            }
            Err(_) => {
                self.inner.pending.lock().remove(&id);
                Err(ClientError::Timeout)
            }
        }
    }

    /// `request` for an op and its fields.
    pub fn call(&self, op: &str, fields: Value) -> Result<Value, ClientError> {
        let mut req = match fields {
            Value::Object(m) => m,
            _ => Default::default(),
        };
        req.insert("op".into(), Value::from(op));
        self.request(Value::Object(req))
    }

    pub fn ping(&self) -> Result<(), ClientError> {
        self.call("ping", json!({})).map(|_| ())
    }

    /// Sets this client's name (restored after a reconnection).
    pub fn name(&self, name: &str) -> Result<(), ClientError> {
        self.call("name", json!({"name": name})).map(|_| ())
    }

    pub fn create(&self, channel: &str) -> Result<(), ClientError> {
        self.call("create", json!({"channel": channel})).map(|_| ())
    }

    /// Subscribes to a channel or pattern (restored after a reconnection).
    pub fn subscribe(&self, target: &str) -> Result<(), ClientError> {
        self.subscribe_where(target, None)
    }

    /// Subscribes with a `WHERE` filter on JSON messages.
    pub fn subscribe_where(&self, target: &str, filter: Option<&str>) -> Result<(), ClientError> {
        self.call("sub", with_where(json!({"channel": target}), filter))
            .map(|_| ())
    }

    pub fn unsubscribe(&self, target: &str) -> Result<(), ClientError> {
        // Not restored after a reconnection even if this request is lost with it.
        self.inner.restore.lock().subs.remove(target);
        self.call("unsub", json!({"channel": target})).map(|_| ())
    }

    /// Watches a table's row changes, those matching `filter` if given (restored after
    /// a reconnection). They arrive as [`Event::Row`].
    pub fn watch(&self, table: &str, filter: Option<&str>) -> Result<(), ClientError> {
        self.call("watch", with_where(json!({"table": table}), filter))
            .map(|_| ())
    }

    pub fn unwatch(&self, table: &str) -> Result<(), ClientError> {
        self.inner.restore.lock().watches.remove(table);
        self.call("unwatch", json!({"table": table})).map(|_| ())
    }

    /// Publishes any serializable value; returns how many clients received it.
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<u64, ClientError> {
        let data = serde_json::to_value(data).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let r = self.call("pub", json!({"channel": channel, "data": data}))?;
        Ok(r["receivers"].as_u64().unwrap_or(0))
    }

    /// Sends a direct message to the client named `to`.
    pub fn send<T: Serialize + ?Sized>(&self, to: &str, data: &T) -> Result<(), ClientError> {
        let data = serde_json::to_value(data).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call("send", json!({"to": to, "data": data}))
            .map(|_| ())
    }

    /// Closes the connection and stops reconnecting.
    /// Offers `service`: each request for it runs `handler` on a thread of its own
    /// (never the reader's), and its `Ok` answers the requester (`REPLY`) or its `Err`
    /// fails the request with that code and message (`FAIL`). After a reconnect the
    /// client offers it again by itself, so providers and requesters restart in any
    /// order.
    pub fn serve(
        &self,
        service: &str,
        handler: impl Fn(Value) -> Result<Value, ServiceError> + Send + Sync + 'static,
    ) -> Result<(), ClientError> {
        self.inner
            .handlers
            .lock()
            .insert(service.to_string(), Arc::new(handler));
        let r = self.call("serve", json!({ "service": service }));
        if r.is_err() {
            self.inner.handlers.lock().remove(service);
        }
        r.map(|_| ())
    }

    /// Stops offering `service`.
    pub fn unserve(&self, service: &str) -> Result<(), ClientError> {
        self.inner.handlers.lock().remove(service);
        self.call("unserve", json!({ "service": service }))
            .map(|_| ())
    }

    /// Asks one provider of `service` and waits up to `timeout` for its answer. A
    /// provider's `FAIL`, nobody serving it (`no_responders`), its provider leaving
    /// (`service_gone`) and `timeout` are [`ClientError::Server`] with that code.
    pub fn request_service<T: Serialize + ?Sized>(
        &self,
        service: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let data = serde_json::to_value(data).map_err(|e| ClientError::Server {
            code: "bad_args".into(),
            message: e.to_string(),
        })?;
        let req = json!({"op": "req", "service": service, "data": data,
                         "timeout_ms": timeout.as_millis() as u64});
        let r = self.request_within(req, timeout + self.inner.opts.timeout)?;
        Ok(r["data"].clone())
    }

    /// Logs in; after a reconnect the client resumes the session by itself (user, name
    /// and subscriptions). Returns the reply's `login` object (`user`, `role`,
    /// `session`).
    pub fn login(&self, user: &str, password: &str) -> Result<Value, ClientError> {
        let r = self.call("login", json!({"user": user, "password": password}))?;
        Ok(r["login"].clone())
    }

    /// Takes up a session from its token (from [`Client::login`], perhaps on another
    /// connection or before a restart).
    pub fn resume(&self, token: &str) -> Result<Value, ClientError> {
        let r = self.call("resume", json!({"token": token}))?;
        Ok(r["session"].clone())
    }

    /// Logs out, ending the session everywhere.
    pub fn logout(&self) -> Result<(), ClientError> {
        self.call("logout", json!({})).map(|_| ())
    }

    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(w) = self.inner.writer.lock().take() {
            w.shutdown();
        }
    }
}

impl Inner {
    fn write(&self, req: &Value) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let mut w = self.writer.lock();
        let Some(stream) = w.as_mut() else {
            return Err(ClientError::Disconnected);
        };
        stream
            .send_line(&line)
            .map_err(|_| ClientError::Disconnected)
    }

    fn read_loop(self: Arc<Self>, mut reader: ReadSide) {
        loop {
            self.serve(&mut reader);
            *self.writer.lock() = None;
            for (_, tx) in self.pending.lock().drain() {
                let _ = tx.send(Err(ClientError::Disconnected));
            }
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let _ = self.events.send(Event::Disconnected);
            if !self.opts.reconnect {
                return;
            }
            match self.reconnect() {
                Some(r) => reader = r,
                None => return,
            }
        }
    }

    /// Reads lines until the connection ends.
    fn serve(self: &Arc<Self>, reader: &mut ReadSide) {
        let mut line = String::new();
        loop {
            if !reader.next_line(&mut line) {
                return;
            }
            let Ok(v) = serde_json::from_str::<Value>(line.trim_end()) else {
                continue; // a text line (the greeting): nothing to route
            };
            if let Some(ev) = v.get("event").and_then(Value::as_str) {
                if ev == "ping" {
                    // The server checks that this client is still there.
                    let _ = self.write(&serde_json::json!({"op": "pong"}));
                    continue;
                }
                if ev == "req" && self.answer_request(&v) {
                    continue;
                }
                if let ("row", Some(t), Some(seq)) = (ev, v["table"].as_str(), v["seq"].as_u64()) {
                    self.restore.lock().watched(t, seq);
                }
                if ev == "msg" {
                    if let (Some(c), Some(o), Some(e)) = (
                        v["channel"].as_str(),
                        v["offset"].as_u64(),
                        v["epoch"].as_str(),
                    ) {
                        self.restore.lock().position(c, o, e);
                    }
                }
                if let Some(e) = event(ev, &v) {
                    let _ = self.events.send(e);
                }
                continue;
            }
            let Some(id) = v.get("id").and_then(Value::as_u64) else {
                continue;
            };
            let Some(tx) = self.pending.lock().remove(&id) else {
                continue;
            };
            let result = if v["ok"] == Value::Bool(true) {
                Ok(v)
            } else {
                Err(ClientError::Server {
                    code: v["error"]["code"].as_str().unwrap_or("unknown").to_string(),
                    message: v["error"]["message"].as_str().unwrap_or("").to_string(),
                })
            };
            let _ = tx.send(result);
        }
    }

    /// Runs the handler of the service a `req` push names on a thread of its own, and
    /// answers with its result. False when no handler serves it (the push then goes to
    /// the events, as [`Event::Request`]).
    fn answer_request(self: &Arc<Self>, v: &Value) -> bool {
        let service = v["service"].as_str().unwrap_or_default();
        let Some(handler) = self.handlers.lock().get(service).cloned() else {
            return false;
        };
        let req = v["req"].clone();
        let data = v["data"].clone();
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("leviathan-service".into())
            .spawn(move || {
                let answer = match handler(data) {
                    Ok(data) => json!({"op": "reply", "req": req, "data": data}),
                    Err(e) => {
                        json!({"op": "fail", "req": req, "code": e.code, "message": e.message})
                    }
                };
                let _ = inner.write(&answer);
            });
        if spawned.is_err() {
            log::warn!("cannot start a thread for a service request");
        }
        true
    }

    /// Sends the name, subscriptions and watches again. Their replies come to this
    /// (the reading) thread, so another thread waits for them and then reports
    /// [`Event::Reconnected`] with whatever the server refused.
    fn restore_state(self: &Arc<Self>) {
        let reqs = self.restore.lock().requests();
        let mut waiting = Vec::new();
        for (what, mut req) in reqs {
            let sent = req.clone();
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            req["id"] = Value::from(id);
            let (tx, rx) = may::sync::mpsc::channel();
            self.pending.lock().insert(id, tx);
            if self.write(&req).is_err() {
                self.pending.lock().remove(&id);
            }
            waiting.push((what, sent, rx));
        }
        let inner = self.clone();
        let report = move || {
            let mut not_restored = Vec::new();
            let mut lost = Vec::new();
            for (what, sent, rx) in waiting {
                match rx.recv_timeout(inner.opts.timeout) {
                    Ok(Ok(reply)) => {
                        let gone = Value::Bool(false);
                        if reply["history"]["recovered"] == gone
                            || reply["watch"]["recovered"] == gone
                        {
                            lost.push(what.clone());
                        }
                        inner.restore.lock().accepted(&sent, &reply);
                    }
                    Ok(Err(e)) => not_restored.push(format!("{what}: {e}")),
                    Err(_) => not_restored.push(format!("{what}: no reply in time")),
                }
            }
            let _ = inner.events.send(Event::Reconnected { not_restored, lost });
        };
        if std::thread::Builder::new()
            .name("leviathan-restore".into())
            .spawn(report)
            .is_err()
        {
            log::warn!("cannot start a thread to report the reconnection");
        }
    }

    /// Tries again with doubling waits (capped) until connected or closed; then
    /// restores the name, subscriptions and watches.
    fn reconnect(self: &Arc<Self>) -> Option<ReadSide> {
        let mut wait = Duration::from_millis(50);
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            std::thread::sleep(wait);
            if let Ok((w, r)) = open(&self.addr, self.opts.timeout) {
                *self.writer.lock() = Some(w);
                self.restore_state();
                return Some(r);
            }
            wait = (wait * 2).min(self.opts.max_backoff);
        }
    }
}

fn event(kind: &str, v: &Value) -> Option<Event> {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Some(match kind {
        "msg" => Event::Message(Delivery {
            channel: Some(s("channel")),
            from: s("from"),
            data: v["data"].clone(),
        }),
        "dm" => Event::Direct(Delivery {
            channel: None,
            from: s("from"),
            data: v["data"].clone(),
        }),
        "dropped" => Event::Dropped {
            channel: s("channel"),
        },
        "row" => Event::Row {
            table: s("table"),
            change: s("change"),
            row: v.get("row").cloned(),
        },
        "bye" => Event::Bye {
            reason: s("reason"),
        },
        "req" => Event::Request {
            req: s("req"),
            service: s("service"),
            from: s("from"),
            data: v["data"].clone(),
        },
        _ => return None,
    })
}
