//! Commands that hold for the whole cluster (DESIGN section 5): a name is unique and
//! a channel exists cluster-wide. Each is claimed across the cluster before the
//! manager applies it here, and the claim is given up when the manager refuses it, so
//! every way in (a client, an action, a task, the HTTP API) goes through the same check.

use super::ctx::Hub;
use crate::commands::channels::ChannelCommand;
use crate::commands::session::{check_name, SessionCommand};
use crate::commands::Command;
use crate::manager::backplane::Backplane;
use crate::manager::outbox::ConnId;
use crate::protocol::{ErrorReply, Reply};

impl Hub {
    /// Applies `command` for connection `id` on this node of a cluster: `NAME`,
    /// `CREATE` and `DROP` are claimed or told across the cluster around it.
    pub(super) fn apply_cluster_wide(
        &self,
        backplane: &dyn Backplane,
        id: ConnId,
        command: Command,
    ) -> Result<Reply, ErrorReply> {
        match &command {
            Command::Session(SessionCommand::Name(name)) if check_name(name).is_ok() => {
                let name = name.clone();
                backplane.claim(&name, id)?;
                self.apply_here(id, command).inspect_err(|_| {
                    backplane.release(&name, id);
                })
            }
            Command::Channel(ChannelCommand::Create(name, options))
                if crate::protocol::subject::check_channel(name).is_ok() =>
            {
                let (name, options) = (name.clone(), *options);
                backplane.claim_channel(&name, options, id)?;
                let reply = self.apply_here(id, command);
                match &reply {
                    Ok(_) => backplane.channel_created(&name, options),
                    Err(_) => backplane.release_channel(&name, id),
                }
                reply
            }
            Command::Channel(ChannelCommand::Drop(name)) => {
                // Dropped here alone, it would come back from the others when this
                // node rejoins.
                if !backplane.is_up() {
                    return Err(ErrorReply::new(
                        "unavailable",
                        "channels are dropped across the cluster, which this node cannot reach now; try again".into(),
                    ));
                }
                let name = name.clone();
                let reply = self.apply_here(id, command)?;
                backplane.channel_dropped(&name);
                Ok(reply)
            }
            _ => self.apply_here(id, command),
        }
    }
}
