//! Counters that connections and the manager keep and anyone may read while the
//! server runs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

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
    /// How long requests take, from the line read to the reply ready, per command
    /// family ([`FAMILIES`]); sampled (one request in [`SAMPLE_EVERY`] per connection).
    pub latency: [Histogram; FAMILIES.len()],
    /// The cluster's backplane, when the node is in one (`cluster/`).
    pub cluster: ClusterStats,
}

/// What the node's link to the cluster's backplane did.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Whether the node is in a cluster at all.
    pub enabled: AtomicBool,
    /// Whether all its links (publishing, receiving, control) are up now.
    pub up: AtomicBool,
    /// Other nodes whose keys were there at the last look.
    pub nodes: AtomicU64,
    /// Publications handed to the backplane.
    pub sent: AtomicU64,
    /// Publications received from other nodes.
    pub received: AtomicU64,
    /// Publications not handed over: the backplane was down or too far behind.
    pub dropped: AtomicU64,
    /// Times a link to the backplane was lost.
    pub outages: AtomicU64,
}

/// The command families whose request latency is measured, by index.
pub const FAMILIES: [&str; 8] = [
    "session", "channel", "live", "table", "app", "account", "service", "file",
];

/// One request in this many (per connection) has its latency measured: reading the
/// clock for each would cost the publish path a few percent.
pub const SAMPLE_EVERY: u32 = 16;

/// Upper bounds of the latency buckets, in microseconds (then +Inf).
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// A latency histogram with fixed buckets, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last for +Inf.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts per bound (the last is +Inf, the total) and the sum in
    /// microseconds.
    pub fn snapshot(&self) -> (Vec<u64>, u64) {
        let mut total = 0;
        let counts = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        (counts, self.sum_us.load(Ordering::Relaxed))
    }
}
