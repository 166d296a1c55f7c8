//! Starting and stopping a server: [`Config`], [`Server::start`] and the
//! [`ServerHandle`] it returns.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use may::net::TcpListener;

use crate::auth::{Auth, AuthSettings};
use crate::commands::table_api::Tables;
use crate::conn::{self, ConnContext, ConnSettings};
use crate::framework::{Framework, Hub};
use crate::http::keys::ApiKeys;
use crate::http::{Health, HttpContext, HttpSettings};
use crate::manager::liveness::Liveness;
pub use crate::manager::stats::Stats;
use crate::manager::{ChannelOp, Manager, ManagerSettings};
use crate::protocol::ParseLimits;
use crate::store::files::{FileLimits, Files};
use crate::store::journal::{FsyncPolicy, Journal};
use crate::store::load;
use crate::store::lock::DataLock;
use crate::store::persist::{DiskRequest, Persistence};
use crate::store::{StoreLimits, TableStore};

/// Server settings; every limit has a default a small deployment can keep.
#[derive(Clone, Debug)]
pub struct Config {
    /// Longest request line (or WebSocket message) in bytes, newline excluded.
    pub max_line: usize,
    /// Most connections served at once; more are told `-ERR too_many_connections`.
    pub max_connections: usize,
    /// Connections the kernel may hold ready for the acceptor (the `listen` backlog);
    /// `None` takes the system's maximum (`net.core.somaxconn`). Past it, the kernel
    /// drops new connection attempts and clients wait for their retries, seconds.
    pub listen_backlog: Option<u32>,
    /// Bytes that may wait in one connection's outbox before it is disconnected as a
    /// slow consumer.
    pub outbox_limit: usize,
    /// How long a new TCP connection may stay silent before it is greeted as a line client.
    pub greet_delay: Duration,
    /// Coroutine worker threads (the channel manager has its own thread besides).
    pub workers: usize,
    /// Pins worker `i` to core `i`. Off by default: a pinned worker whose core another
    /// process is using waits for it while other cores idle, which on a machine shared
    /// with clients or other services is the common case (p50 latency at 20k msgs/s
    /// 51-62 us pinned against 49-53 us not, with the load generator on the same two
    /// cores). A machine given to the server alone may gain from it.
    pub pin_workers: bool,
    /// The cluster this node joins (`--redis`), if any: see `docs/CLUSTER.md`.
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// How long a connection's coroutine runs before it gives way to the others on its
    /// worker (default 250 µs; shorter is fairer, longer does more per switch).
    pub slice: Duration,
    /// Stack per connection coroutine, in bytes. Only touched pages use memory.
    pub stack_size: usize,
    /// Disconnected clients remembered for `HISTORY`.
    pub history_limit: usize,
    /// Deepest JSON nesting accepted in a request.
    pub max_json_depth: usize,
    /// How long shutdown waits for connections to flush their last lines.
    pub drain_timeout: Duration,
    /// Folder where tables are saved (CSV plus journal); `None` keeps them in memory only.
    pub data_dir: Option<PathBuf>,
    /// When the journal is synced to disk.
    pub fsync: FsyncPolicy,
    /// Seconds between automatic snapshots; 0 for none (snapshots still happen at
    /// start, on `SAVE` and at shutdown).
    pub snapshot_secs: u64,
    /// Silence after which a client is sent `PING` (and again each interval); `None`
    /// for never.
    pub ping_interval: Option<Duration>,
    /// Unanswered `PING`s after which a connection is closed as stale.
    pub max_pings_out: u32,
    /// The longest a request line may stay incomplete; `None` for no limit.
    pub line_timeout: Option<Duration>,
    /// TCP keepalive idle time, so the kernel notices peers that vanished without a
    /// FIN; `None` for off.
    pub tcp_keepalive: Option<Duration>,
    /// Bytes of incomplete lines all connections together may hold; past it, a
    /// connection whose incomplete line passes 64 KiB is closed.
    pub input_budget: usize,
    /// Channels the server may hold.
    pub max_channels: usize,
    /// Channels one connection may create.
    pub max_channels_per_client: usize,
    /// Subscriptions (channels, patterns) and watches one connection may hold.
    pub max_subscriptions: usize,
    /// Tables, rows and bytes the store may hold.
    pub store_limits: StoreLimits,
    /// `--auth` mode, roles from an ACL file, session lifetime, password-hash cost.
    pub auth: AuthSettings,
    /// How long a service request waits for its answer (JSON `timeout_ms` overrides).
    pub request_timeout: Duration,
    /// Service requests one connection may have waiting; past it, it stops reading
    /// until answers come back.
    pub max_pending_requests: usize,
    /// The HTTP port (health, metrics, API).
    pub http: HttpPort,
    /// API keys for the HTTP API: `<name> <role> <sha256 of the key>` a line.
    pub api_key_file: Option<PathBuf>,
    /// The largest file and each user's quota on the HTTP port's files.
    pub files: FileLimits,
}

/// Where the HTTP side listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpPort {
    /// No HTTP port.
    Off,
    /// The main port + 1 (a free port if that one is taken, logged).
    NextToMain,
    /// This port on the main address; 0 picks a free one (logged).
    Port(u16),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_line: 1 << 20,
            max_connections: 10_000,
            listen_backlog: None,
            outbox_limit: 4 << 20,
            greet_delay: Duration::from_millis(200),
            workers: default_workers(),
            pin_workers: false,
            cluster: None,
            slice: crate::coop::SLICE,
            stack_size: if cfg!(debug_assertions) {
                256 << 10
            } else {
                128 << 10
            },
            history_limit: 1000,
            max_json_depth: 32,
            drain_timeout: Duration::from_secs(5),
            data_dir: None,
            fsync: FsyncPolicy::EverySec,
            snapshot_secs: 300,
            ping_interval: Some(Duration::from_secs(120)),
            max_pings_out: 2,
            line_timeout: Some(Duration::from_secs(60)),
            tcp_keepalive: Some(Duration::from_secs(60)),
            input_budget: 256 << 20,
            max_channels: 100_000,
            max_channels_per_client: 10_000,
            max_subscriptions: 10_000,
            store_limits: StoreLimits::default(),
            auth: AuthSettings {
                session_ttl: Duration::from_secs(24 * 3600),
                ..AuthSettings::default()
            },
            request_timeout: Duration::from_secs(5),
            max_pending_requests: 256,
            http: HttpPort::NextToMain,
            api_key_file: None,
            files: FileLimits::default(),
        }
    }
}

/// One worker per core. Publishers deliver their messages themselves, so the channel
/// manager's thread no longer needs a core of its own: on two cores, two workers
/// published to 50 channels about 1.6 times as fast as one (`benches/pubsub.rs`).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().max(1))
        .unwrap_or(1)
}

/// The server entry point.
pub struct Server;

impl Server {
    /// Serves `listener` as the plain server (no actions, tasks or gate) until
    /// [`ServerHandle::shutdown`]. Sets `may`'s worker count and stack size, which take
    /// effect only if no coroutine has run yet in this process.
    pub fn start(listener: StdListener, config: Config) -> io::Result<ServerHandle> {
        Server::start_with(listener, config, Framework::default())
    }

    /// Serves `listener` with what an embedding program registered ([`crate::App`]
    /// builds it). Its startup tasks run before the first connection is accepted; the
    /// first that fails stops the start, and the error says which and why.
    pub fn start_with(
        listener: StdListener,
        config: Config,
        framework: Framework,
    ) -> io::Result<ServerHandle> {
        may::config()
            .set_workers(config.workers.max(1))
            .set_stack_size(config.stack_size / 8);
        may::config().set_worker_pin(config.pin_workers);
        let local_addr = listener.local_addr()?;
        let backlog = config.listen_backlog.unwrap_or_else(system_backlog);
        set_backlog(&listener, backlog)?;
        // Bound before anything starts, so a port in use stops the start at once.
        let http_listener = bind_http(local_addr, config.http, backlog)?;
        let api_keys = match &config.api_key_file {
            Some(path) => ApiKeys::load(path).map_err(io::Error::other)?,
            None => ApiKeys::default(),
        };
        let http_addr = http_listener
            .as_ref()
            .map(StdListener::local_addr)
            .transpose()?;
        listener.set_nonblocking(true)?;
        // SAFETY: the fd comes from a listener we own and give up here, so the may
        // listener becomes its only owner.
        let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };

        let store = Arc::new(TableStore::new(config.store_limits));
        let persistence = match &config.data_dir {
            Some(dir) => Some(Persist::open(dir, &store, &config)?),
            None => None,
        };
        let files = match &config.data_dir {
            Some(dir) => {
                let (files, note) = Files::open(dir, config.files).map_err(io::Error::other)?;
                log::info!("{note}");
                Some(Arc::new(files))
            }
            None => None,
        };
        let admin_password = config
            .auth
            .admin_password
            .clone()
            .or_else(|| std::env::var("LEVIATHAN_ADMIN_PASSWORD").ok());
        let auth = Auth::open(
            &config.auth,
            config.data_dir.as_deref(),
            admin_password.as_deref(),
        )
        .map_err(io::Error::other)?;
        let auth = Arc::new(auth);
        let auth_handle = auth.clone();
        let acl_file = config.auth.acl_file.clone();
        let stats = Arc::new(Stats::default());
        let (ops, ops_rx) = crossbeam_channel::unbounded();
        let settings = ManagerSettings {
            history_limit: config.history_limit,
            liveness: Liveness {
                ping_interval: config.ping_interval,
                max_pings_out: config.max_pings_out,
                line_timeout: config.line_timeout,
            },
            max_channels: config.max_channels,
            max_channels_per_client: config.max_channels_per_client,
            max_subscriptions: config.max_subscriptions,
        };
        let routes = Arc::new(crate::manager::route::Routes::new(config.request_timeout));
        let manager = Manager::new(
            stats.clone(),
            store.clone(),
            settings,
            auth.clone(),
            routes.clone(),
        );
        {
            // Writers of watched tables report their changes to the manager.
            let ops = ops.clone();
            store.attach_change_sink(Box::new(move |note| {
                let _ = ops.send(ChannelOp::TableChange(note));
            }));
        }
        let cluster = match &config.cluster {
            Some(settings) => {
                let ops = ops.clone();
                let deliver = Box::new(move |m| {
                    let _ = ops.send(ChannelOp::Cluster(Box::new(m)));
                });
                let parts = crate::cluster::NodeParts {
                    stats: stats.clone(),
                    store: store.clone(),
                    routes: routes.clone(),
                };
                let cluster = crate::cluster::Cluster::start(settings, parts, deliver)
                    .map_err(io::Error::other)?;
                let _ = routes.backplane.set(cluster.clone());
                store.set_node(cluster.node());
                // Left if the start fails from here on.
                Some(crate::cluster::Membership(cluster))
            }
            None => None,
        };
        let manager = std::thread::Builder::new()
            .name("channel-manager".into())
            .spawn(move || manager.run(ops_rx, crate::commands::Routed))?;
        let settings = ConnSettings {
            max_line: config.max_line,
            max_connections: config.max_connections,
            outbox_limit: config.outbox_limit,
            greet_delay: config.greet_delay,
            slice: config.slice,
            tcp_keepalive: config.tcp_keepalive,
            input_budget: config.input_budget,
            max_pending_requests: config.max_pending_requests,
            http_port: http_addr.map(|a| a.port()),
            parse: ParseLimits {
                max_json_depth: config.max_json_depth,
            },
        };
        let framework = Arc::new(framework);
        let hub = Hub {
            ops: ops.clone(),
            store: store.clone(),
            files: files.clone(),
            backplane: routes.backplane.get().cloned(),
        };
        let http_ctx = Arc::new(HttpContext::new(
            hub.clone(),
            stats.clone(),
            store.clone(),
            auth.clone(),
            framework.clone(),
            HttpSettings {
                parse: ParseLimits {
                    max_json_depth: config.max_json_depth,
                },
                max_body: config.max_line,
                keys: parking_lot::RwLock::new(api_keys),
                main_port: local_addr.port(),
                body_timeout: config.line_timeout,
            },
        ));
        // Served from here on, so /healthz answers 503 while the startup tasks run.
        let mut http = match http_listener {
            Some(l) => Some(crate::http::start(l, http_ctx.clone())?),
            None => None,
        };
        if let Err(why) = framework.run_startup(&hub) {
            stop_http(http.take());
            let _ = ops.send(ChannelOp::Shutdown);
            let _ = manager.join();
            if let Some(p) = persistence {
                p.close(&store);
            }
            return Err(io::Error::other(why));
        }
        framework.start_intervals(&hub);
        let ctx = Arc::new(
            ConnContext::new(
                settings,
                store.clone(),
                ops,
                stats.clone(),
                framework.clone(),
                auth,
                routes,
            )
            .with_files(files)
            .with_first_id(cluster.as_ref().map_or(1, |c| c.0.first_id())),
        );
        let acceptor = {
            let ctx = ctx.clone();
            may::go!(move || conn::accept_loop(listener, ctx))
        };
        http_ctx.set_health(Health::Serving);
        Ok(ServerHandle {
            store,
            persistence,
            local_addr,
            ctx,
            drain_timeout: config.drain_timeout,
            stats,
            acceptor: Some(acceptor),
            manager: Some(manager),
            framework,
            hub,
            auth: auth_handle,
            acl_file,
            api_key_file: config.api_key_file.clone(),
            http,
            http_ctx,
            http_addr,
            cluster,
        })
    }
}

/// Binds the HTTP port `port` asks for, on the main port's address.
fn bind_http(main: SocketAddr, port: HttpPort, backlog: u32) -> io::Result<Option<StdListener>> {
    let at = |p: u16| SocketAddr::new(main.ip(), p);
    let listener = match port {
        HttpPort::Off => return Ok(None),
        HttpPort::Port(p) => StdListener::bind(at(p)).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on HTTP port {p}: {e}"))
        })?,
        HttpPort::NextToMain => {
            let next = main.port().checked_add(1).filter(|_| main.port() != 0);
            match next.map(|p| StdListener::bind(at(p))) {
                Some(Ok(l)) => l,
                other => {
                    if let Some(Err(e)) = other {
                        log::warn!(
                            "HTTP: port {} (the main port + 1) is not free ({e}); using a free one",
                            main.port() + 1
                        );
                    }
                    StdListener::bind(at(0))?
                }
            }
        }
    };
    set_backlog(&listener, backlog)?;
    Ok(Some(listener))
}

/// A running server.
pub struct ServerHandle {
    store: Arc<TableStore>,
    persistence: Option<Persist>,
    local_addr: SocketAddr,
    ctx: Arc<ConnContext>,
    drain_timeout: Duration,
    stats: Arc<Stats>,
    acceptor: Option<may::coroutine::JoinHandle<()>>,
    manager: Option<std::thread::JoinHandle<()>>,
    framework: Arc<Framework>,
    hub: Hub,
    auth: Arc<Auth>,
    acl_file: Option<std::path::PathBuf>,
    api_key_file: Option<std::path::PathBuf>,
    /// The HTTP side's acceptor, cancelled at shutdown.
    http: Option<may::coroutine::JoinHandle<()>>,
    http_ctx: Arc<HttpContext>,
    http_addr: Option<SocketAddr>,
    /// The node's place in its cluster (`--redis`).
    cluster: Option<crate::cluster::Membership>,
}

impl ServerHandle {
    /// Runs a wire command (text form) as the server itself, for its operator, and
    /// returns the reply. Call it from an OS thread: it waits for the channel manager.
    pub fn operate(&self, line: &str) -> crate::protocol::Reply {
        use crate::protocol::Reply;
        let line = line.trim();
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let command = match crate::commands::parse_text(verb, rest) {
            Ok(c) => c,
            Err(e) => return Reply::Error(e),
        };
        if command.is_local() {
            return crate::commands::apply_local(command, &self.store).0;
        }
        self.hub
            .apply(crate::manager::SERVER_ID, command)
            .unwrap_or_else(Reply::Error)
    }

    /// Closes connection `id` at once with `BYE kicked`; false when there is none.
    pub fn kick(&self, id: u64) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let op = ChannelOp::Cut {
            id,
            reason: crate::protocol::push::ByeReason::Kicked,
            done: Box::new(move |found| {
                let _ = tx.send(found);
            }),
        };
        self.ctx.ops.send(op).is_ok() && rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
    }

    /// Where the HTTP side listens (`None` with `HttpPort::Off`).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's tables, for programs that embed it: the same checked, journaled and
    /// watched path as the wire commands.
    pub fn tables(&self) -> Tables {
        Tables::new(self.store.clone())
    }

    /// Reads the ACL file (`--acl`) again and puts its roles in force for every client:
    /// later commands are checked against them, and subscriptions follow them (pattern
    /// subscriptions deliver what the new roles may read; subscriptions to channels a
    /// role may no longer read end). A file that does not parse changes nothing.
    pub fn reload_acl(&self) -> Result<(), String> {
        let Some(path) = &self.acl_file else {
            return Err("no ACL file was given (--acl)".into());
        };
        let roles = self.auth.roles_from(Some(&crate::auth::read_acl(path)?))?;
        let old = self.auth.reload_roles(roles);
        let _ = self.ctx.ops.send(ChannelOp::RolesChanged(old));
        Ok(())
    }

    /// Reads the API key file (`--api-key-file`) again and puts it in force; `Ok(false)`
    /// when there is none. A file that does not read changes nothing.
    pub fn reload_api_keys(&self) -> Result<bool, String> {
        let Some(path) = &self.api_key_file else {
            return Ok(false);
        };
        self.http_ctx.replace_keys(ApiKeys::load(path)?);
        Ok(true)
    }

    /// Whether roles come from an ACL file (`--acl`), which [`ServerHandle::reload_acl`]
    /// reads again.
    pub fn has_acl_file(&self) -> bool {
        self.acl_file.is_some()
    }

    /// Live counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops accepting, runs the shutdown tasks, sends every client `BYE shutdown`, waits up to
    /// `drain_timeout` for them to flush and close, and stops the channel manager.
    /// Call it from an OS thread, not from a coroutine.
    pub fn shutdown(&mut self) {
        if self.ctx.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        self.http_ctx.set_health(Health::Stopping);
        // The acceptor sleeps in accept(); a connection of our own wakes it to see
        // the flag.
        let mut wake_addr = self.local_addr;
        if wake_addr.ip().is_unspecified() {
            wake_addr.set_ip(match wake_addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = StdStream::connect_timeout(&wake_addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // Clients are still connected: what the shutdown tasks publish reaches them.
        self.framework.run_shutdown(&self.hub);
        let _ = self.ctx.ops.send(ChannelOp::Shutdown);
        if let Some(m) = self.manager.take() {
            let _ = m.join();
        }
        // After the manager: what shutdown tasks published has crossed too.
        drop(self.cluster.take());
        let deadline = Instant::now() + self.drain_timeout;
        while self.stats.connections_current.load(Ordering::Acquire) > 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = self.stats.connections_current.load(Ordering::Acquire);
        if left > 0 {
            log::warn!("shutdown: {left} connections still open after the drain timeout");
        }
        if let Some(p) = self.persistence.take() {
            p.close(&self.store);
        }
        stop_http(self.http.take());
    }
}

/// Stops the HTTP side's acceptor, if any.
fn stop_http(http: Option<may::coroutine::JoinHandle<()>>) {
    if let Some(h) = http {
        // SAFETY: cancelling the acceptor coroutine, which owns the HTTP listener: it
        // ends at its next blocking point and frees the port.
        unsafe { h.coroutine().cancel() };
        let _ = h.join();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The running parts of persistence: the journal thread and the snapshot thread.
struct Persist {
    persistence: Arc<Persistence>,
    /// Released last, once everything is saved and the journal is closed.
    _lock: DataLock,
    journal_thread: std::thread::JoinHandle<()>,
    saver_stop: Sender<()>,
    saver_thread: std::thread::JoinHandle<()>,
}

impl Persist {
    /// Loads `dir` into `store` (refusing damaged files with the file and line), starts
    /// the journal, takes a first snapshot (which compacts the replayed journal), and
    /// starts the snapshot thread.
    fn open(
        dir: &std::path::Path,
        store: &Arc<TableStore>,
        config: &Config,
    ) -> io::Result<Persist> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let started = Instant::now();
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
        let lock =
            DataLock::acquire(dir).map_err(|e| io::Error::new(io::ErrorKind::AddrInUse, e))?;
        let report = load::load(dir, store).map_err(invalid)?;
        if let Some(at) = &report.torn_tail {
            log::warn!(
                "journal: dropped a torn last record at {at}; everything before it was recovered"
            );
        }
        for note in &report.notes {
            log::warn!("data: {note}");
        }
        let (journal, journal_thread) =
            Journal::start(dir, report.next_segment, report.next_seq, config.fsync)?;
        store.attach_journal(journal.clone());
        let persistence = Arc::new(Persistence::new(dir.to_path_buf(), journal, report.on_disk));
        persistence.clear_clean_mark()?;
        persistence.snapshot(store)?;
        log::info!(
            "data: {} tables, {} rows loaded from {} ({} journal records replayed) in {} ms; fsync {:?}",
            report.tables,
            report.rows,
            dir.display(),
            report.records_replayed,
            started.elapsed().as_millis(),
            config.fsync
        );
        let (save_tx, save_rx) = crossbeam_channel::unbounded::<DiskRequest>();
        store.attach_saver(save_tx);
        let (saver_stop, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let saver_thread = {
            let (p, store) = (persistence.clone(), store.clone());
            let every = config.snapshot_secs;
            std::thread::Builder::new()
                .name("snapshots".into())
                .spawn(move || snapshot_loop(&p, &store, &save_rx, &stop_rx, every))?
        };
        Ok(Persist {
            persistence,
            _lock: lock,
            journal_thread,
            saver_stop,
            saver_thread,
        })
    }

    /// Final snapshot, then the journal is synced and stopped.
    fn close(self, store: &TableStore) {
        let _ = self.saver_stop.send(());
        let _ = self.saver_thread.join();
        match self.persistence.snapshot(store) {
            Ok(r) => {
                log::info!(
                    "saved {} tables ({} rows) in {} ms",
                    r.tables,
                    r.rows,
                    r.millis
                );
                if let Err(e) = self.persistence.mark_clean() {
                    log::error!("cannot mark the saved channel histories whole (they get new epochs at the next start): {e}");
                }
            }
            Err(e) => {
                log::error!("final snapshot failed (the journal still holds every change): {e}")
            }
        }
        self.persistence.journal.stop();
        let _ = self.journal_thread.join();
    }
}

/// Serves `SAVE` and file-removal requests and takes a snapshot every `every` seconds
/// (0: never).
fn snapshot_loop(
    p: &Persistence,
    store: &TableStore,
    requests: &crossbeam_channel::Receiver<DiskRequest>,
    stop: &crossbeam_channel::Receiver<()>,
    every: u64,
) {
    let tick = if every > 0 {
        crossbeam_channel::tick(Duration::from_secs(every))
    } else {
        crossbeam_channel::never()
    };
    loop {
        crossbeam_channel::select! {
            recv(requests) -> req => match req {
                Ok(DiskRequest::Save(reply)) => {
                    let r = p.snapshot(store).map_err(|e| e.to_string());
                    if let Err(e) = &r {
                        log::error!("SAVE failed: {e}");
                    }
                    let _ = reply.send(r);
                }
                Ok(DiskRequest::RemoveFiles(table)) => {
                    if let Err(e) = p.remove_files(store, &table) {
                        log::error!("cannot remove the files of table '{table}' (the next snapshot will): {e}");
                    }
                }
                Err(_) => return,
            },
            recv(tick) -> _ => {
                if let Err(e) = p.snapshot(store) {
                    log::error!("periodic snapshot failed (the journal still holds every change): {e}");
                }
            }
            recv(stop) -> _ => return,
        }
    }
}

/// The most the kernel allows a listener to hold waiting (`net.core.somaxconn`; 4096
/// when it cannot be read, Linux's default since 5.4).
pub fn system_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// Sets a listening socket's backlog. The standard library listens with 128, which a
/// burst of connections (thousands of clients reconnecting after a restart) overflows:
/// the kernel then drops their SYNs and each waits a second or more to retry. Calling
/// `listen` again on a listening socket only changes its backlog.
fn set_backlog(listener: &StdListener, backlog: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let backlog = backlog.clamp(1, i32::MAX as u32) as i32;
    // SAFETY: listen on a socket this function borrows; it touches no memory.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises this process's open-file limit to its hard limit (each connection holds a
/// file descriptor). Returns the limit now in force, if it can be read.
pub fn raise_open_file_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(lim.rlim_cur as usize)
}
