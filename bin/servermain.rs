//! `servermain HOST PORT`: runs a leviathan server until Ctrl-C or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use leviathan::auth::AuthSettings;
use leviathan::server::HttpPort;
use leviathan::store::files::FileLimits;
use leviathan::store::StoreLimits;
use leviathan::{App, Config};

// Messages are allocated on the manager thread and freed on worker threads; mimalloc's
// per-thread free lists handle that pattern far better than glibc's arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// leviathan: a real-time messaging server. Speak to it with telnet/nc (one text
/// command per line, or one JSON object per line) or over WebSocket on the same port.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Try: telnet HOST PORT, then type HELP.\n\
Logging: RUST_LOG=debug also logs each connection's open and close (default: info);\n\
the coroutine runtime's own logs stay at warn unless named: RUST_LOG=debug,may=debug."
)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1 or 0.0.0.0
    host: String,
    /// Port to listen on (0 picks a free one; the chosen address is printed)
    port: u16,
    /// Longest request line or WebSocket message, in bytes
    #[arg(long, default_value_t = Config::default().max_line)]
    max_line: usize,
    /// Most connections served at once
    #[arg(long, default_value_t = Config::default().max_connections)]
    max_connections: usize,
    /// Connections the kernel holds for the acceptor before it drops new attempts
    /// (default: the system's maximum, net.core.somaxconn)
    #[arg(long)]
    listen_backlog: Option<u32>,
    /// Bytes queued for one client before it is disconnected as a slow consumer
    #[arg(long, default_value_t = Config::default().outbox_limit)]
    outbox_limit: usize,
    /// Milliseconds a silent new TCP connection waits before its HELLO greeting
    #[arg(long, default_value_t = 200)]
    greet_delay_ms: u64,
    /// Coroutine worker threads (the channel manager has its own thread)
    #[arg(long, default_value_t = leviathan::server::default_workers())]
    workers: usize,
    /// Pin worker i to core i (for a machine given to the server alone)
    #[arg(long)]
    pin_workers: bool,
    /// Stack per connection coroutine, in KiB (only touched pages use memory)
    #[arg(long, default_value_t = Config::default().stack_size >> 10)]
    stack_kib: usize,
    /// Disconnected clients remembered by HISTORY
    #[arg(long, default_value_t = Config::default().history_limit)]
    history_limit: usize,
    /// Seconds to wait at shutdown for clients to receive their last lines
    #[arg(long, default_value_t = 5)]
    drain_secs: u64,
    /// Folder for the tables' CSV files and journal (created if missing)
    #[arg(long, default_value = "data")]
    data_dir: std::path::PathBuf,
    /// Keep tables in memory only: nothing is read from or written to disk
    #[arg(long)]
    in_memory: bool,
    /// When the journal is synced: always (an +OK survives power loss), everysec (a machine
    /// crash loses at most about a second) or no (the OS decides); an +OK survives kill -9 under all three
    #[arg(long, default_value = "everysec")]
    fsync: leviathan::store::journal::FsyncPolicy,
    /// Seconds between automatic snapshots (0: only at start, on SAVE and at shutdown)
    #[arg(long, default_value_t = Config::default().snapshot_secs)]
    snapshot_secs: u64,
    /// Seconds of silence after which a client is sent PING (and again each interval);
    /// any line from it answers (PONG is meant for this). 0: never
    #[arg(long, default_value_t = 120)]
    ping_interval_secs: u64,
    /// Unanswered PINGs after which a connection is closed (BYE stale_connection)
    #[arg(long, default_value_t = Config::default().max_pings_out)]
    max_pings_out: u32,
    /// Seconds a request line may stay incomplete before the connection is closed
    /// (BYE line_timeout). 0: no limit
    #[arg(long, default_value_t = 60)]
    line_timeout_secs: u64,
    /// TCP keepalive idle seconds, so peers that vanished without closing are noticed. 0: off
    #[arg(long, default_value_t = 60)]
    tcp_keepalive_secs: u64,
    /// MiB of incomplete lines all connections together may hold; past it, connections
    /// holding over 64 KiB of one are closed (BYE input_budget)
    #[arg(long, default_value_t = Config::default().input_budget >> 20)]
    input_budget_mib: usize,
    /// Channels the server may hold
    #[arg(long, default_value_t = Config::default().max_channels)]
    max_channels: usize,
    /// Channels one connection may create
    #[arg(long, default_value_t = Config::default().max_channels_per_client)]
    max_channels_per_client: usize,
    /// Subscriptions and watches one connection may hold
    #[arg(long, default_value_t = Config::default().max_subscriptions)]
    max_subscriptions: usize,
    /// Tables the server may hold
    #[arg(long, default_value_t = StoreLimits::default().max_tables)]
    max_tables: usize,
    /// Rows one table may hold
    #[arg(long, default_value_t = StoreLimits::default().max_table_rows)]
    max_table_rows: usize,
    /// Largest row, in bytes (as held in memory)
    #[arg(long, default_value_t = StoreLimits::default().max_row_bytes)]
    max_row_bytes: usize,
    /// MiB all tables' rows may take in memory
    #[arg(long, default_value_t = StoreLimits::default().max_store_bytes >> 20)]
    max_store_mib: usize,
    /// Who may connect: off (no accounts, no checks), optional (anonymous clients are
    /// guests, who may what users may), required (log in first). LEVIATHAN_ADMIN_PASSWORD
    /// creates or resets the user admin at start
    #[arg(long, default_value = "optional")]
    auth: leviathan::auth::AuthMode,
    /// Roles in TOML ([roles.NAME] with pub, sub, call, serve, req, read, write, admin
    /// lists of patterns), over the built-in admin, user and guest; read again on SIGHUP
    #[arg(long)]
    acl: Option<std::path::PathBuf>,
    /// Seconds a service request (REQ) waits for its answer (JSON timeout_ms overrides)
    #[arg(long, default_value_t = Config::default().request_timeout.as_secs_f64())]
    request_timeout: f64,
    /// Service requests one connection may have waiting for answers
    #[arg(long, default_value_t = Config::default().max_pending_requests)]
    max_pending_requests: usize,
    /// Seconds a session (a LOGIN's token) lasts
    #[arg(long, default_value_t = 24 * 3600)]
    session_ttl: u64,
    /// Port of the HTTP side (/healthz, /metrics, /api/…), on the same address
    /// (default: the main port + 1; 0 picks a free one; the URL is logged)
    #[arg(long, conflicts_with = "no_http")]
    http_port: Option<u16>,
    /// No HTTP side
    #[arg(long)]
    no_http: bool,
    /// Join a cluster of nodes through this Redis (redis://[user:password@]host:port[/db]):
    /// publications cross to every node (docs/CLUSTER.md)
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Prefix of the cluster's Redis keys and channels
    #[arg(long, default_value = "leviathan")]
    redis_prefix: String,
    /// API keys for the HTTP API, one a line: NAME ROLE SHA256-OF-THE-KEY (the key
    /// itself is never stored; sha256sum gives the hash)
    #[arg(long)]
    api_key_file: Option<std::path::PathBuf>,
    /// Largest file uploaded over the HTTP port (PUT /files/…): bytes, or with K, M, G
    /// or T (powers of 1024); 0 for no limit
    #[arg(long, default_value = "1G", value_parser = size)]
    max_file_size: u64,
    /// Bytes one user's files may take together (anonymous uploads share one quota);
    /// same units; 0 for no limit
    #[arg(long, default_value = "10G", value_parser = size)]
    file_quota: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();

    let config = Config {
        max_line: args.max_line,
        max_connections: args.max_connections,
        listen_backlog: args.listen_backlog,
        outbox_limit: args.outbox_limit,
        greet_delay: Duration::from_millis(args.greet_delay_ms),
        workers: args.workers,
        pin_workers: args.pin_workers,
        stack_size: args.stack_kib << 10,
        history_limit: args.history_limit,
        drain_timeout: Duration::from_secs(args.drain_secs),
        data_dir: (!args.in_memory).then(|| args.data_dir.clone()),
        fsync: args.fsync,
        snapshot_secs: args.snapshot_secs,
        ping_interval: secs(args.ping_interval_secs),
        max_pings_out: args.max_pings_out,
        line_timeout: secs(args.line_timeout_secs),
        tcp_keepalive: secs(args.tcp_keepalive_secs),
        input_budget: args.input_budget_mib << 20,
        max_channels: args.max_channels,
        max_channels_per_client: args.max_channels_per_client,
        max_subscriptions: args.max_subscriptions,
        store_limits: StoreLimits {
            max_tables: args.max_tables,
            max_table_rows: args.max_table_rows,
            max_row_bytes: args.max_row_bytes,
            max_store_bytes: args.max_store_mib << 20,
        },
        auth: AuthSettings {
            mode: args.auth,
            acl_file: args.acl.clone(),
            session_ttl: Duration::from_secs(args.session_ttl.max(1)),
            ..AuthSettings::default()
        },
        request_timeout: Duration::from_secs_f64(args.request_timeout.clamp(0.001, 86_400.0)),
        max_pending_requests: args.max_pending_requests.max(1),
        http: match (args.no_http, args.http_port) {
            (true, _) => HttpPort::Off,
            (false, Some(p)) => HttpPort::Port(p),
            (false, None) => HttpPort::NextToMain,
        },
        api_key_file: args.api_key_file.clone(),
        files: FileLimits {
            max_file_size: args.max_file_size,
            quota: args.file_quota,
        },
        cluster: args
            .redis
            .clone()
            .map(|url| leviathan::cluster::ClusterSettings {
                url,
                prefix: args.redis_prefix.clone(),
            }),
        ..Config::default()
    };
    App::new().config(config).run(&args.host, args.port)
}

/// A size from a flag: `1048576`, `512K`, `1M`, `1.5G`, `2T` (also `MiB`, `GB`…: all
/// powers of 1024).
fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => return Err(format!("'{other}' is no size unit: use K, M, G or T")),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a size (say 1048576, 512K, 1G)"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !(0.0..1.8e19).contains(&bytes) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(bytes as u64)
}

/// A number of seconds from a flag, where 0 means off.
fn secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}
