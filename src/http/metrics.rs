//! `GET /metrics`: the server's figures in the Prometheus text format (version
//! 0.0.4): `# HELP` and `# TYPE` before each family, names prefixed `leviathan_`,
//! counters ending `_total`, base units (bytes, seconds).

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::Value;

use super::HttpContext;
use crate::commands::services::ServiceCommand;
use crate::commands::session::SessionCommand;
use crate::commands::Command;
use crate::manager::stats::{ClusterStats, FAMILIES, LATENCY_BOUNDS_US};
use crate::manager::SERVER_ID;
use crate::protocol::Reply;

/// Writes one metric family of a single sample.
fn one(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "leviathan_{name} {value}");
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP leviathan_{name} {help}");
    let _ = writeln!(out, "# TYPE leviathan_{name} {kind}");
}

/// A label value with `\`, `"` and line breaks escaped.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// The figures `INFO` gives, by name.
fn info(ctx: &HttpContext) -> serde_json::Map<String, Value> {
    match ctx
        .hub
        .apply(SERVER_ID, Command::Session(SessionCommand::Info))
    {
        Ok(Reply::Record { fields, .. }) => fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        _ => Default::default(),
    }
}

/// Services offered now.
fn services(ctx: &HttpContext) -> usize {
    let list = Command::Service(Box::new(ServiceCommand::Services));
    match ctx.hub.apply(SERVER_ID, list) {
        Ok(Reply::List { items, .. }) => items.len(),
        _ => 0,
    }
}

/// The cluster's figures, when the node is in one.
fn cluster(out: &mut String, c: &ClusterStats) {
    if !c.enabled.load(Relaxed) {
        return;
    }
    let up = if c.up.load(Relaxed) { 1.0 } else { 0.0 };
    let figures = [
        (
            "cluster_up",
            "gauge",
            "1 while the links to the cluster's Redis are up.",
            up,
        ),
        (
            "cluster_nodes",
            "gauge",
            "Other nodes of the cluster seen alive at the last look (every second).",
            c.nodes.load(Relaxed) as f64,
        ),
        (
            "cluster_sent_total",
            "counter",
            "Publications handed to the other nodes through Redis.",
            c.sent.load(Relaxed) as f64,
        ),
        (
            "cluster_received_total",
            "counter",
            "Publications other nodes made, received through Redis.",
            c.received.load(Relaxed) as f64,
        ),
        (
            "cluster_dropped_total",
            "counter",
            "Publications the other nodes did not get: Redis was down or too far behind.",
            c.dropped.load(Relaxed) as f64,
        ),
        (
            "cluster_outages_total",
            "counter",
            "Times a link to the cluster's Redis was lost.",
            c.outages.load(Relaxed) as f64,
        ),
    ];
    for (name, kind, help, value) in figures {
        one(out, name, kind, help, value);
    }
}

/// The whole page.
pub fn render(ctx: &HttpContext) -> String {
    let info = info(ctx);
    let n = |k: &str| info.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let s = &ctx.stats;
    let mut out = String::with_capacity(4096);
    one(&mut out, "up", "gauge", "1 while the server serves.", 1.0);
    one(
        &mut out,
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        n("uptime_secs"),
    );
    one(
        &mut out,
        "connections",
        "gauge",
        "Connections being served now (TCP and WebSocket).",
        s.connections_current.load(Relaxed) as f64,
    );
    one(
        &mut out,
        "connections_total",
        "counter",
        "Connections accepted since start.",
        s.connections_total.load(Relaxed) as f64,
    );
    one(
        &mut out,
        "connections_refused_total",
        "counter",
        "Connections refused over --max-connections.",
        s.connections_refused.load(Relaxed) as f64,
    );
    cluster(&mut out, &s.cluster);
    one(
        &mut out,
        "slow_consumers_total",
        "counter",
        "Connections closed because their outbox overflowed.",
        s.slow_consumers.load(Relaxed) as f64,
    );
    one(
        &mut out,
        "clients",
        "gauge",
        "Clients past their greeting, as CLIENTS lists them.",
        n("clients"),
    );
    one(&mut out, "channels", "gauge", "Channels.", n("channels"));
    one(
        &mut out,
        "subscriptions",
        "gauge",
        "Subscriptions, patterns and watches of all clients.",
        n("subscriptions"),
    );
    one(
        &mut out,
        "services",
        "gauge",
        "Services offered (SERVICES).",
        services(ctx) as f64,
    );
    one(
        &mut out,
        "messages_published_total",
        "counter",
        "Messages published (PUB).",
        n("published"),
    );
    one(
        &mut out,
        "messages_delivered_total",
        "counter",
        "Channel messages queued for subscribers, one per receiver.",
        n("delivered"),
    );
    one(
        &mut out,
        "direct_messages_total",
        "counter",
        "Direct messages (SEND).",
        n("direct"),
    );
    one(
        &mut out,
        "received_bytes_total",
        "counter",
        "Bytes read from clients.",
        s.bytes_in.load(Relaxed) as f64,
    );
    one(
        &mut out,
        "sent_bytes_total",
        "counter",
        "Bytes written to clients.",
        s.bytes_out.load(Relaxed) as f64,
    );
    one(&mut out, "tables", "gauge", "Tables.", n("tables"));
    family(&mut out, "table_rows", "gauge", "Rows of each table.");
    let mut tables: Vec<(String, usize)> = ctx
        .store
        .all()
        .iter()
        .map(|t| {
            let t = crate::store::read(t);
            (t.name.clone(), t.len())
        })
        .collect();
    tables.sort();
    for (name, rows) in tables {
        let _ = writeln!(
            out,
            "leviathan_table_rows{{table=\"{}\"}} {rows}",
            label(&name)
        );
    }
    one(
        &mut out,
        "table_bytes",
        "gauge",
        "Estimated bytes of all rows in memory.",
        n("table_bytes"),
    );
    one(
        &mut out,
        "resident_memory_bytes",
        "gauge",
        "Resident memory of the server process.",
        n("memory_bytes"),
    );
    let pending = ctx.store.journal().map_or(0, |j| j.pending_records());
    one(
        &mut out,
        "journal_pending_records",
        "gauge",
        "Journal records appended but not yet durable (written and synced as --fsync asks).",
        pending as f64,
    );
    let unsynced = ctx.store.journal().map_or(0, |j| j.unsynced_bytes());
    one(
        &mut out,
        "journal_unsynced_bytes",
        "gauge",
        "Journal bytes not yet synced to disk (buffered, or written but not fsynced).",
        unsynced as f64,
    );
    family(
        &mut out,
        "request_duration_seconds",
        "histogram",
        "Time from a request read to its reply ready, per command family (one request in 16 per connection is timed).",
    );
    for (i, name) in FAMILIES.iter().enumerate() {
        let (counts, sum_us) = s.latency[i].snapshot();
        for (bound, n) in LATENCY_BOUNDS_US.iter().zip(&counts) {
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "leviathan_request_duration_seconds_bucket{{family=\"{name}\",le=\"{le}\"}} {n}"
            );
        }
        let total = counts.last().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "leviathan_request_duration_seconds_bucket{{family=\"{name}\",le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "leviathan_request_duration_seconds_sum{{family=\"{name}\"}} {}",
            sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "leviathan_request_duration_seconds_count{{family=\"{name}\"}} {total}"
        );
    }
    one(
        &mut out,
        "snapshots_total",
        "counter",
        "Snapshots of the data folder taken since start.",
        ctx.store.snapshots.load(Relaxed) as f64,
    );
    one(
        &mut out,
        "snapshot_duration_seconds",
        "gauge",
        "How long the last snapshot took.",
        ctx.store.last_snapshot_millis.load(Relaxed) as f64 / 1000.0,
    );
    if let Some(files) = &ctx.hub.files {
        let (count, bytes) = files.totals();
        one(
            &mut out,
            "files",
            "gauge",
            "Files stored (PUT /files/…).",
            count as f64,
        );
        one(
            &mut out,
            "file_bytes",
            "gauge",
            "Bytes the stored files take.",
            bytes as f64,
        );
        one(
            &mut out,
            "file_uploads_total",
            "counter",
            "Uploads put in place since start.",
            files.uploads.load(Relaxed) as f64,
        );
        one(
            &mut out,
            "file_downloads_total",
            "counter",
            "Downloads begun since start.",
            files.downloads.load(Relaxed) as f64,
        );
    }
    out
}
