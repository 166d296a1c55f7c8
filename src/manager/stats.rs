//! Counters that connections and the manager keep and anyone may read while the
//! server runs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

/// Counters anyone may read while the server runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections being served now.
    pub connections_current: AtomicUsize,
    /// Connections refused because `max_connections` were already served.
    pub connections_refused: AtomicU64,
    /// Connections closed because their outbox overflowed.
    pub slow_consumers: AtomicU64,
    /// Bytes of incomplete request lines held by all connections now.
    pub input_buffered: AtomicUsize,
    /// `PUB`s connections delivered themselves (the manager counts its own).
    pub published: AtomicU64,
    /// Messages those `PUB`s queued for subscribers.
    pub delivered: AtomicU64,
    /// Set while the manager hands a batch's output to the connections: a connection
    /// whose earlier `PUB` went through the manager publishes itself only once that
    /// batch is out, so its messages keep their order.
    pub manager_flushing: AtomicBool,
    /// Bytes read from clients' sockets (TCP lines and WebSocket frames).
    pub bytes_in: AtomicU64,
    /// Bytes written to clients' sockets.
    pub bytes_out: AtomicU64,
}
