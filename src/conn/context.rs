//! What every connection coroutine shares, and the transport's own settings (the
//! assembly layer fills them in from its `Config`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::auth::Auth;
use crate::commands::Op;
use crate::framework::Framework;
use crate::manager::route::Routes;
use crate::manager::stats::Stats;
use crate::protocol::ParseLimits;
use crate::store::files::Files;
use crate::store::TableStore;

/// The transport's limits and timings.
#[derive(Clone, Copy, Debug)]
pub struct ConnSettings {
    /// Longest request line (or WebSocket message) in bytes, newline excluded.
    pub max_line: usize,
    /// Most connections served at once; more are told `-ERR too_many_connections`.
    pub max_connections: usize,
    /// Bytes that may wait for one connection before it is a slow consumer.
    pub outbox_limit: usize,
    /// How long a new TCP connection may stay silent before it is greeted as a line client.
    pub greet_delay: Duration,
    /// How long a connection runs before it gives way to the others on its worker.
    pub slice: Duration,
    /// TCP keepalive idle time; `None` for off.
    pub tcp_keepalive: Option<Duration>,
    /// Bytes of incomplete lines all connections together may hold.
    pub input_budget: usize,
    /// Service requests one connection may have waiting.
    pub max_pending_requests: usize,
    /// The HTTP side's port, named to plain HTTP requests on the main port.
    pub http_port: Option<u16>,
    /// What the request parser refuses before doing expensive work.
    pub parse: ParseLimits,
}

/// What every connection coroutine shares.
pub struct ConnContext {
    pub settings: ConnSettings,
    /// Tables, applied to by connections themselves.
    pub store: Arc<TableStore>,
    /// The channel manager's queue.
    pub ops: Sender<Op>,
    pub stats: Arc<Stats>,
    /// Set once shutdown begins: the acceptor stops and sniffed connections are let go.
    pub stopping: AtomicBool,
    pub next_id: AtomicU64,
    /// What the embedding program registered (actions, tasks, the gate).
    pub framework: Arc<Framework>,
    /// Accounts, sessions and rights.
    pub auth: Arc<Auth>,
    /// Every channel's receivers, for publishing without the manager.
    pub routes: Arc<Routes>,
    /// The files folder and its grants (`None` without a data folder).
    pub files: Option<Arc<Files>>,
}

impl ConnContext {
    pub fn new(
        settings: ConnSettings,
        store: Arc<TableStore>,
        ops: Sender<Op>,
        stats: Arc<Stats>,
        framework: Arc<Framework>,
        auth: Arc<Auth>,
        routes: Arc<Routes>,
    ) -> ConnContext {
        ConnContext {
            settings,
            store,
            ops,
            stats,
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            framework,
            auth,
            routes,
            files: None,
        }
    }

    /// Numbers connections from `first` (a node of a cluster numbers its own range).
    pub fn with_first_id(self, first: u64) -> ConnContext {
        self.next_id.store(first, Ordering::Relaxed);
        self
    }

    /// Serves the files folder too (a server with a data folder).
    pub fn with_files(mut self, files: Option<Arc<Files>>) -> ConnContext {
        self.files = files;
        self
    }
}
