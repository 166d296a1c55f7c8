//! A name or a channel in a cluster: claimed across the cluster before the manager
//! applies the command (`framework/cluster_wide.rs`), so two nodes never grant the same
//! name or make the same channel twice.

use serde_json::Value;

use super::Session;
use crate::commands::Command;
use crate::protocol::{Format, Reply};

impl Session {
    /// Applies `command` in the call runner, where the claim waits for Redis (in a
    /// coroutine). Nothing more is read until the answer is in, so what the client asks
    /// next sees its effect.
    pub(super) fn cluster_wide(&mut self, command: Command, format: Format, id: Option<Value>) {
        let hub = self.hub();
        let conn = self.id;
        let work = Box::new(move || {
            let reply = hub.apply(conn, command).unwrap_or_else(Reply::Error);
            (reply, None)
        });
        let token = self.run_later(format, id, work);
        self.account_waiting = Some(token);
    }
}
