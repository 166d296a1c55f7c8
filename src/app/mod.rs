#![warn(missing_docs)]
//! The embedding API's front door: [`App`] assembles a server from models, actions,
//! tasks and a header gate (as the original frameworks' `Server(models=…, actions=…,
//! tasks=…)`), then runs it the way `servermain` does, or starts it on a bound
//! listener for tests. `servermain` itself is an `App` with nothing registered.

pub mod operator;

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::framework::{ActionError, Answer, Ctx, Framework, Headers, Model, Schedule, Task};
use crate::server::{Config, Server, ServerHandle};

/// A server under construction: read the chain top to bottom like the app it makes.
///
/// ```
/// use leviathan::framework::{ActionError, Answer, Ctx};
/// use leviathan::{App, Config};
///
/// #[derive(serde::Deserialize)]
/// struct Echo {
///     text: String,
/// }
///
/// fn echo(_ctx: &mut Ctx, req: Echo) -> Result<Answer, ActionError> {
///     if req.text.is_empty() {
///         return Err(ActionError::new("empty", "say something"));
///     }
///     Ok(Answer::new(req.text))
/// }
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let mut server = App::new()
///     .config(Config::default())
///     .action("echo", "answers with the text it is given", echo)
///     .every("tick", std::time::Duration::from_secs(60), |ctx: &mut Ctx| {
///         ctx.publish("ticks", "tick").map(|_| ())
///     })
///     .start(listener)
///     .unwrap();
/// // … clients send `CALL echo {"text":"hi"}` and get `+OK hi` …
/// server.shutdown();
/// ```
pub struct App {
    config: Config,
    framework: Framework,
    roles: Vec<crate::auth::Role>,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

impl App {
    /// An app with the default [`Config`] and nothing registered.
    pub fn new() -> App {
        App {
            config: Config::default(),
            framework: Framework::default(),
            roles: Vec::new(),
        }
    }

    /// The server's settings (limits, data folder, fsync policy, …).
    pub fn config(mut self, config: Config) -> App {
        self.config = config;
        self
    }

    /// Registers a model: its table is defined at start when it does not exist yet,
    /// before the startup tasks run.
    pub fn model<T: Model>(mut self) -> App {
        self.framework.add_model::<T>();
        self
    }

    /// Registers an action that clients `CALL` by `name`; `summary` is its line in
    /// `ACTIONS`. The payload is decoded into `Req` (any `serde` type; a
    /// `serde_json::Value` takes anything), and a payload that does not fit is
    /// answered `bad_args` before the handler runs. The handler runs in a coroutine
    /// of its own; a panic answers `action_failed` and is logged.
    pub fn action<Req, F>(mut self, name: &str, summary: &str, handler: F) -> App
    where
        Req: DeserializeOwned,
        F: Fn(&mut Ctx, Req) -> Result<Answer, ActionError> + Send + Sync + 'static,
    {
        let action = name.to_string();
        let run = move |ctx: &mut Ctx, payload: serde_json::Value| {
            let req = serde_json::from_value(payload).map_err(|e| {
                ActionError::new(
                    "bad_args",
                    format!("the payload does not fit action '{action}': {e}"),
                )
            })?;
            handler(ctx, req)
        };
        self.framework.add_action(name, summary, Arc::new(run));
        self
    }

    /// Registers a task run once at start, before the port opens (after the models'
    /// tables are defined). The first that fails stops the start.
    pub fn on_startup<F>(self, name: &str, task: F) -> App
    where
        F: Fn(&mut Ctx) -> Result<(), ActionError> + Send + Sync + 'static,
    {
        self.task(name, Schedule::Startup, move |ctx| task(ctx).map(|_| None))
    }

    /// Registers a task run once at shutdown, before the final snapshot, while the
    /// clients are still connected.
    pub fn on_shutdown<F>(self, name: &str, task: F) -> App
    where
        F: Fn(&mut Ctx) -> Result<(), ActionError> + Send + Sync + 'static,
    {
        self.task(name, Schedule::Shutdown, move |ctx| task(ctx).map(|_| None))
    }

    /// Registers a task run every `interval`. A run still going when the next is due
    /// makes that one skipped (and counted in `TASKS`), never overlapped.
    pub fn every<F>(self, name: &str, interval: Duration, task: F) -> App
    where
        F: Fn(&mut Ctx) -> Result<(), ActionError> + Send + Sync + 'static,
    {
        let schedule = Schedule::Every {
            first: interval,
            recomputed: false,
        };
        self.task(name, schedule, move |ctx| task(ctx).map(|_| None))
    }

    /// Registers a task first run after `first`, which returns the wait before its
    /// next run each time (the original frameworks' dynamic interval).
    pub fn every_recomputed<F>(self, name: &str, first: Duration, task: F) -> App
    where
        F: Fn(&mut Ctx) -> Result<Duration, ActionError> + Send + Sync + 'static,
    {
        let schedule = Schedule::Every {
            first,
            recomputed: true,
        };
        self.task(name, schedule, move |ctx| task(ctx).map(Some))
    }

    fn task<F>(mut self, name: &str, schedule: Schedule, run: F) -> App
    where
        F: Fn(&mut Ctx) -> Result<Option<Duration>, ActionError> + Send + Sync + 'static,
    {
        self.framework
            .add_task(Task::new(name, schedule, Arc::new(run)));
        self
    }

    /// Adds a role (or changes a built-in one: `admin`, `user`, `guest`): for each right,
    /// the patterns it grants. An ACL file's roles (`--acl`) go over these.
    ///
    /// ```
    /// use leviathan::auth::{Right, Role};
    /// let app = leviathan::App::new()
    ///     .role(Role::new("reader", &[(Right::Sub, &["news.>"]), (Right::Read, &["articles"])]));
    /// ```
    pub fn role(mut self, role: crate::auth::Role) -> App {
        self.roles.push(role);
        self
    }

    /// Adds a header check. With any check (or a gate), a client must pass the gate
    /// (`AUTH <json object>`, or its WebSocket upgrade's headers and query parameters)
    /// before anything but `PING`, `HELP`, `AUTH` and `QUIT`.
    pub fn header_check<F>(mut self, name: &str, check: F) -> App
    where
        F: Fn(&Headers) -> bool + Send + Sync + 'static,
    {
        self.framework.gate_mut().add_check(name, Arc::new(check));
        self
    }

    /// How the checks' results combine (in the order the checks were added); all of
    /// them must pass by default.
    pub fn gate<F>(mut self, gate: F) -> App
    where
        F: Fn(&[bool]) -> bool + Send + Sync + 'static,
    {
        self.framework.gate_mut().set_gate(Arc::new(gate));
        self
    }

    /// Starts serving `listener` (bind port 0 in tests) and returns the handle that
    /// stops it. Fails when a startup task fails.
    pub fn start(mut self, listener: TcpListener) -> std::io::Result<ServerHandle> {
        self.config.auth.roles.extend(self.roles);
        Server::start_with(listener, self.config, self.framework)
    }

    /// Runs the server on `host:port` until Ctrl-C or SIGTERM (SIGHUP reloads the ACL
    /// file), as `servermain` does:
    /// logs (`RUST_LOG`, default `info`), reports the system's limits, stops cleanly
    /// on a signal. Returns how the process should exit.
    pub fn run(self, host: &str, port: u16) -> ExitCode {
        init_logging();
        let addr = format!("{host}:{port}");
        let listener = match TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        report_limits(&self.config);
        let server = match self.start(listener) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = Arc::new(parking_lot::Mutex::new(server));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        operator::start_if_terminal(&server, stop_tx.clone());
        if let Err(e) = handle_signals(&server, stop_tx) {
            log::error!("cannot install the signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        if let Some(http) = server.lock().http_addr() {
            log::info!("HTTP on http://{http}/ (/healthz, /metrics, /api/…)");
        }
        log::info!(
            "leviathan {} listening on {} (text, JSON and WebSocket)",
            env!("CARGO_PKG_VERSION"),
            server.lock().local_addr()
        );
        let _ = stop_rx.recv();
        log::info!("shutting down: telling clients, flushing");
        let mut server = server.lock();
        server.shutdown();
        let s = server.stats();
        log::info!(
            "stopped; served {} connections ({} slow consumers disconnected)",
            s.connections_total
                .load(std::sync::atomic::Ordering::Relaxed),
            s.slow_consumers.load(std::sync::atomic::Ordering::Relaxed)
        );
        ExitCode::SUCCESS
    }
}

/// Ctrl-C (SIGINT) and SIGTERM stop the server; SIGHUP reads the ACL file again
/// (connections stay). One thread takes them all from signal-hook, whose handler only
/// writes to a pipe, as a signal handler must.
fn handle_signals(
    server: &Arc<parking_lot::Mutex<ServerHandle>>,
    stop: crossbeam_channel::Sender<()>,
) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let server = Arc::downgrade(server);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal != SIGHUP {
                    let _ = stop.try_send(());
                    continue;
                }
                let Some(server) = server.upgrade() else {
                    break;
                };
                let server = server.lock();
                if server.has_acl_file() {
                    match server.reload_acl() {
                        Ok(()) => log::info!(
                            "SIGHUP: the ACL file was read again; its roles are in force"
                        ),
                        Err(e) => log::warn!("SIGHUP: the roles stay as they were: {e}"),
                    }
                }
                match server.reload_api_keys() {
                    Ok(true) => {
                        log::info!("SIGHUP: the API key file was read again; its keys are in force")
                    }
                    Ok(false) => {}
                    Err(e) => log::warn!("SIGHUP: the API keys stay as they were: {e}"),
                }
            }
        })?;
    Ok(())
}

/// `RUST_LOG` as given (default `info`), with may's own logging kept at `warn` unless
/// `RUST_LOG` names it: at `debug`, may logs every epoll event. Does nothing when a
/// logger is already installed.
pub fn init_logging() {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut b = env_logger::Builder::new();
    b.parse_filters(&spec);
    let names_may = |d: &str| {
        let module = d.trim().split('=').next().unwrap_or("");
        module == "may" || module.starts_with("may::")
    };
    if !spec.split(',').any(names_may) {
        b.filter_module("may", log::LevelFilter::Warn);
    }
    let _ = b.try_init();
}

/// Says at start which system limits bound the connection count, and warns when the
/// configured maximum exceeds them.
fn report_limits(config: &Config) {
    let files = crate::server::raise_open_file_limit();
    let maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    log::info!(
        "limits: max connections {}, listen backlog {}, open files {}, vm.max_map_count {}",
        config.max_connections,
        config
            .listen_backlog
            .unwrap_or_else(crate::server::system_backlog),
        files.map_or("unknown".into(), |n| n.to_string()),
        maps.map_or("unknown".into(), |n| n.to_string())
    );
    if let Some(f) = files {
        if config.max_connections + 64 > f {
            log::warn!(
                "--max-connections {} is more than the open-file limit ({f}) allows; raise it with ulimit -n",
                config.max_connections
            );
        }
    }
    if let Some(m) = maps {
        // Each connection's coroutine stack takes about two memory maps.
        if config.max_connections * 2 + 1000 > m {
            log::warn!(
                "--max-connections {} may exceed vm.max_map_count ({m}): each connection uses about 2 maps",
                config.max_connections
            );
        }
    }
}
