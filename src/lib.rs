//! leviathan: a lightweight real-time messaging server on `may` coroutines.
//!
//! # Layout
//! - [`client`]: a blocking client (JSON on the wire, a reader thread, reconnects).
//! - [`server`]: [`server::Config`], [`server::Server::start`] on a bound listener, and
//!   the [`server::ServerHandle`] that stops it.
//! - [`conn`]: one coroutine per connection: sniffs line client vs HTTP/WebSocket,
//!   frames lines ([`conn::lines`]), and keeps replies in order ([`conn::session`]);
//!   [`manager::outbox`] is how other threads hand it replies and pushes.
//! - [`protocol`]: bytes → [`protocol::Request`] → [`protocol::Command`]; [`protocol::Reply`]
//!   and [`protocol::Push`] encoded for text or JSON. No I/O.
//! - [`commands`]: one file per command family: specs (usage, help, parsers) and apply.
//! - [`manager`]: the channel-manager OS thread owning names, channels, subscriptions.
//! - [`coop`]: sleeping and giving way inside a coroutine without tripping may's
//!   timer thread.
//! - [`store`]: the table store: typed tables behind `parking_lot` locks, the `WHERE`
//!   language ([`store::expr`]) and values ([`store::value`]).
//!
//! # Flow of a command
//! socket bytes → `LineReader` (or a WebSocket frame) → `parse_request` → `Command` →
//! applied by the connection (`PING`, `HELP`, `QUIT`) or sent as a `ChannelOp` to the
//! manager, which answers through the connection's `Outbox` in request order → encoded
//! in the request's format → written in batches.

pub mod client;
pub mod collections;
pub mod commands;
pub mod conn;
pub mod console;
pub mod coop;
pub mod manager;
pub mod protocol;
pub mod server;
pub mod store;

pub use commands::table_api::{TableError, Tables};
pub use server::{Config, Server, ServerHandle};

#[cfg(test)]
mod size_guard {
    /// Every delivered message moves an `OutItem` and every request a `Command`: when a
    /// variant grew them (a serde_json `Value` inline is 72 bytes), 1 -> 100 fan-out
    /// cost 50% more CPU per message. Box large variants instead.
    #[test]
    fn hot_path_types_stay_small() {
        use std::mem::size_of;
        assert!(size_of::<crate::manager::outbox::OutItem>() <= 64);
        assert!(size_of::<crate::protocol::Reply>() <= 64);
        assert!(size_of::<crate::protocol::Push>() <= 32);
        assert!(size_of::<crate::commands::Command>() <= 128);
    }
}
