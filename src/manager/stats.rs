//! Counters that connections and the manager keep and anyone may read while the
//! server runs.

use std::sync::atomic::{AtomicU64, AtomicUsize};

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
}
