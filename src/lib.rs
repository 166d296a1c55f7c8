//! leviathan: a lightweight real-time messaging server on `may` coroutines.
//!
//! # Layout
//! The code is a house of floors; each module imports only from floors below it
//! (`ARCHITECTURE.md` draws it). From the ground up:
//! 0. ground: [`coop`] (sleeping and giving way inside a coroutine without tripping
//!    may's timer thread) and [`collections`] (randomly keyed hash maps).
//! 1. wire, [`protocol`]: a line becomes a [`protocol::Envelope`] (format, id, verb, raw
//!    arguments); the argument cursors ([`protocol::args`]); typed values
//!    ([`protocol::value`]); [`protocol::Reply`] and [`protocol::Push`] encoded for text
//!    or JSON. No I/O.
//! 2. data, [`store`]: typed tables behind `parking_lot` locks, the `WHERE` language
//!    ([`store::expr`]), CSV snapshots and the journal. It reports row changes through
//!    a sink and durability through [`store::journal::Waiter`], both handed to it.
//!    Above it, [`auth`]: roles and rights, accounts (argon2id hashes), sessions.
//! 3. routing, [`manager`]: the channel-manager OS thread owning names, channels,
//!    subscriptions and watches; [`manager::outbox`], where replies and pushes queue
//!    for a connection; the shared counters. It applies commands through the
//!    [`manager::Handler`] it is handed.
//! 4. application, [`commands`]: [`commands::Command`], the verb registry, and one file
//!    per command family (specs, parsers, help, apply); [`Tables`] for embedders.
//!    The application's own floor above it, [`framework`]: what an embedding program
//!    registers (actions, tasks, the header gate, models) and how they run.
//! 5. transport, [`conn`]: the acceptor and one coroutine per connection: sniffs line
//!    client vs HTTP/WebSocket, frames lines ([`conn::lines`]), keeps replies in order
//!    ([`conn::session`]), runs a connection's action calls.
//! 6. assembly, [`server`]: [`Config`], [`Server::start`] on a bound listener, the
//!    [`ServerHandle`] that stops it; the only module that knows `Config`. On top of
//!    it, [`app`]: [`App`], the builder a program (and `servermain`) runs.
//!
//! Beside the server: [`client`] (a blocking client library) and [`console`] (the
//! engine of `clientmain`) speak the wire over a socket and import nothing of the
//! server's floors.
//!
//! # Flow of a command
//! socket bytes → `LineReader` (or a WebSocket frame) → `parse_envelope` → the family's
//! parser → `Command` → applied by the connection (`PING`, `HELP`, `QUIT`, tables) or
//! sent as a `ChannelOp` to the manager, which answers through the connection's `Outbox`
//! in request order → encoded in the request's format → written in batches.

pub mod app;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod collections;
pub mod commands;
pub mod conn;
pub mod console;
pub mod coop;
pub mod framework;
pub mod http;
pub mod manager;
pub mod protocol;
pub mod server;
pub mod store;

pub use app::App;
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
        // Every batch of requests crosses the manager's queue as one: rare ops box
        // what is large, so the slot every op takes stays small.
        assert!(size_of::<crate::commands::Op>() <= 64);
    }
}
