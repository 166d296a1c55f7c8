//! `NAME` in a cluster: the name is claimed across the cluster before the manager sets
//! it, so two nodes never grant the same one (`cluster/control.rs`).

use serde_json::Value;

use super::Session;
use crate::commands::session::{check_name, SessionCommand};
use crate::commands::Command;
use crate::protocol::{Format, Reply};

impl Session {
    /// Claims the name in the call runner (the claim waits for Redis, in a coroutine),
    /// then has the manager set it; a name the manager refuses is given up again.
    /// Nothing more is read until the answer is in, so what the client asks next sees
    /// its new name.
    pub(super) fn claim_name(&mut self, name: String, format: Format, id: Option<Value>) {
        let Some(backplane) = self.ctx.routes.backplane.get().cloned() else {
            return;
        };
        let hub = self.hub();
        let conn = self.id;
        let current = self.outbox.name();
        // A logged-in client's name is its user's: the manager keeps or refuses it.
        let user = self.identity.user.is_some();
        let work = Box::new(move || {
            let claim = !user && *current != *name && check_name(&name).is_ok();
            if claim {
                if let Err(e) = backplane.claim(&name, conn) {
                    return (Reply::Error(e), None);
                }
            }
            match hub.apply(conn, Command::Session(SessionCommand::Name(name.clone()))) {
                Ok(reply) => (reply, None),
                Err(e) => {
                    if claim {
                        backplane.release(&name, conn);
                    }
                    (Reply::Error(e), None)
                }
            }
        });
        let token = self.run_later(format, id, work);
        self.account_waiting = Some(token);
    }
}
