//! What an action or task may do: [`Ctx`], handed to every handler.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::ActionError;
use crate::auth::Identity;
use crate::commands::channels::ChannelCommand;
use crate::commands::table_api::{wait_durable, Tables};
use crate::commands::{Command, Op};
use crate::manager::backplane::Backplane;
use crate::manager::outbox::ConnId;
use crate::manager::{ChannelOp, ClientInfo, ServiceAsk, Transport, SERVER_ID, SERVER_NAME};
use crate::protocol::{ErrorReply, Payload, Reply};
use crate::store::files::{FileOp, Files};
use crate::store::TableStore;

/// How the framework reaches the channel manager and the tables.
#[derive(Clone)]
pub(crate) struct Hub {
    pub ops: Sender<Op>,
    pub store: Arc<TableStore>,
    /// The files folder and its grants (`None` without a data folder).
    pub files: Option<Arc<Files>>,
    /// The cluster's backplane, when the node is in one: names and channels are
    /// claimed there first (`cluster_wide.rs`).
    pub backplane: Option<Arc<dyn Backplane>>,
}

impl Hub {
    /// Applies `command` for connection `id` on the manager's thread and waits for its
    /// reply (and, for a journaled change, until it is durable). Waits without blocking
    /// a worker when called from a coroutine. In a cluster, a name or a channel is
    /// claimed across the cluster first ([`Hub::apply_cluster_wide`]).
    pub fn apply(&self, id: ConnId, command: Command) -> Result<Reply, ErrorReply> {
        match &self.backplane {
            Some(backplane) => self.apply_cluster_wide(&**backplane, id, command),
            None => self.apply_here(id, command),
        }
    }

    /// Applies `command` on this node only.
    pub(super) fn apply_here(&self, id: ConnId, command: Command) -> Result<Reply, ErrorReply> {
        let (tx, rx) = may::sync::mpsc::channel();
        let op = ChannelOp::Direct {
            id,
            command: Box::new(command),
            done: Box::new(move |reply, durable| {
                let _ = tx.send((reply, durable));
            }),
        };
        let gone = || ErrorReply::new("unavailable", "the server is stopping".into());
        self.ops.send(op).map_err(|_| gone())?;
        let (reply, durable) = rx.recv().map_err(|_| gone())?;
        if let Some(seq) = durable {
            wait_durable(&self.store, seq)?;
        }
        match reply {
            Reply::Error(e) => Err(e),
            r => Ok(r),
        }
    }

    /// Sends a service request on behalf of connection `from` and waits for its answer
    /// (the request's own timeout bounds the wait).
    pub fn request(
        &self,
        from: ConnId,
        service: &str,
        to: Option<&str>,
        data: Payload,
        timeout: Option<Duration>,
    ) -> Result<Json, ErrorReply> {
        let (tx, rx) = may::sync::mpsc::channel();
        let op = ChannelOp::Request(Box::new(ServiceAsk {
            from,
            service: service.to_string(),
            to: to.map(str::to_string),
            data,
            timeout,
            done: Box::new(move |reply| {
                let _ = tx.send(reply);
            }),
        }));
        let gone = || ErrorReply::new("unavailable", "the server is stopping".to_string());
        self.ops.send(op).map_err(|_| gone())?;
        match rx.recv().map_err(|_| gone())? {
            Reply::Value(_, data) => Ok(match *data {
                Payload::Json(v) => v,
                Payload::Text(t) => Json::String(t),
            }),
            Reply::Error(e) => Err(e),
            _ => Ok(Json::Null),
        }
    }

    /// What the manager knows of connection `id`.
    pub fn inspect(&self, id: ConnId) -> Option<ClientInfo> {
        let (tx, rx) = may::sync::mpsc::channel();
        let op = ChannelOp::Inspect {
            id,
            done: Box::new(move |info| {
                let _ = tx.send(info);
            }),
        };
        self.ops.send(op).ok()?;
        rx.recv().ok().flatten()
    }
}

/// The context of one action call or task run: who is calling, and what the handler
/// may do on the server. Handlers run in a coroutine of their own: waiting here
/// ([`Ctx::sleep`], a channel operation) never blocks a worker thread.
pub struct Ctx {
    hub: Hub,
    id: ConnId,
    /// Who called, as it was when the call was read.
    identity: Arc<Identity>,
    transport: Option<Transport>,
    headers: Arc<Map<String, Json>>,
    /// The caller's name, asked of the manager when first needed.
    name: std::cell::OnceCell<Arc<str>>,
}

impl Ctx {
    pub(crate) fn for_client(
        hub: Hub,
        id: ConnId,
        transport: Transport,
        headers: Arc<Map<String, Json>>,
        identity: Arc<Identity>,
    ) -> Ctx {
        Ctx {
            hub,
            id,
            identity,
            transport: Some(transport),
            headers,
            name: std::cell::OnceCell::new(),
        }
    }

    /// A task's context: it acts as the server itself.
    pub(crate) fn for_server(hub: Hub) -> Ctx {
        Ctx {
            hub,
            id: SERVER_ID,
            identity: Arc::new(Identity {
                user: None,
                role: Arc::from("admin"),
                session: None,
            }),
            transport: None,
            headers: Arc::default(),
            name: std::cell::OnceCell::from(Arc::from(SERVER_NAME)),
        }
    }

    /// The caller's connection id (0 in a task, which acts as the server).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The caller's name (`server` in a task), as it was when first asked in this call.
    pub fn name(&self) -> String {
        let name = self.name.get_or_init(|| {
            self.hub
                .inspect(self.id)
                .map_or_else(|| Arc::from(""), |c| c.name)
        });
        name.to_string()
    }

    /// The user the caller is logged in as, if any.
    pub fn user(&self) -> Option<&str> {
        self.identity.user.as_deref()
    }

    /// The caller's role (`guest` when not logged in; a task acts as `admin`).
    pub fn role(&self) -> &str {
        &self.identity.role
    }

    /// The channels the caller is subscribed to by exact name, as it is now (none in a
    /// task).
    pub fn subscriptions(&self) -> Vec<String> {
        self.hub
            .inspect(self.id)
            .map(|c| c.channels.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
    }

    /// How the caller is connected: `tcp` or `ws` (`-` in a task).
    pub fn transport(&self) -> &'static str {
        self.transport.map_or("-", Transport::as_str)
    }

    /// The headers the caller passed the gate with (`AUTH`, or the WebSocket upgrade's
    /// headers and query parameters); empty without a gate.
    pub fn headers(&self) -> &Map<String, Json> {
        &self.headers
    }

    /// The server's tables: the same checked, journaled and watched path as the wire.
    pub fn tables(&self) -> Tables {
        Tables::new(self.hub.store.clone())
    }

    /// Publishes `data` on `channel` from the caller; returns how many received it.
    pub fn publish(&self, channel: &str, data: impl Serialize) -> Result<u64, ActionError> {
        let data = Payload::Json(to_json(data)?);
        let reply = self.channel(ChannelCommand::Pub {
            channel: channel.into(),
            data,
        })?;
        Ok(match reply {
            Reply::Count { n, .. } => n,
            _ => 0,
        })
    }

    /// Sends `data` to the client named `to`, from the caller.
    pub fn send(&self, to: &str, data: impl Serialize) -> Result<(), ActionError> {
        let data = Payload::Json(to_json(data)?);
        self.channel(ChannelCommand::Send {
            to: to.into(),
            data,
        })
        .map(|_| ())
    }

    /// Creates `channel`; `Ok(false)` when it already exists.
    pub fn create_channel(&self, channel: &str) -> Result<bool, ActionError> {
        let create = ChannelCommand::Create(channel.into(), Default::default());
        match self.channel(create) {
            Ok(_) => Ok(true),
            Err(e) if e.code == "channel_exists" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Subscribes the caller to a channel or pattern; once this returns, every later
    /// publish on it reaches the caller.
    pub fn subscribe(&self, target: &str) -> Result<(), ActionError> {
        self.caller_only("subscribe")?;
        self.channel(ChannelCommand::Sub {
            target: target.into(),
            filter: None,
            resume: None,
        })
        .map(|_| ())
    }

    /// Ends the caller's subscription to a channel or pattern.
    pub fn unsubscribe(&self, target: &str) -> Result<(), ActionError> {
        self.caller_only("unsubscribe")?;
        self.channel(ChannelCommand::Unsub(target.into()))
            .map(|_| ())
    }

    /// Asks one provider of `service` (as `REQ` does, on the caller's behalf) and waits
    /// for its answer, up to `timeout`; the coroutine waits, not its worker. A
    /// provider's `FAIL`, `no_responders`, `service_gone` and `timeout` come back as
    /// errors with those codes.
    pub fn request(
        &self,
        service: &str,
        data: impl Serialize,
        timeout: Duration,
    ) -> Result<Json, ActionError> {
        self.ask(None, service, data, timeout)
    }

    /// Asks the client named `client` for its `service` (a reverse request: the server
    /// asks a client), and waits for its answer, up to `timeout`.
    pub fn request_client(
        &self,
        client: &str,
        service: &str,
        data: impl Serialize,
        timeout: Duration,
    ) -> Result<Json, ActionError> {
        self.ask(Some(client), service, data, timeout)
    }

    fn ask(
        &self,
        client: Option<&str>,
        service: &str,
        data: impl Serialize,
        timeout: Duration,
    ) -> Result<Json, ActionError> {
        let data = Payload::Json(to_json(data)?);
        Ok(self
            .hub
            .request(self.id, service, client, data, Some(timeout))?)
    }

    /// A token allowing `op` (`FileOp::Put`, `Get` or `Delete`) on `path` over the
    /// HTTP port (`PUT|GET|DELETE /files/<path>`, the token as `Authorization: Bearer`
    /// or `?token=`), for `ttl` (at most 7 days). A path ending in `/` covers everything
    /// under that folder. What is uploaded with it counts against the caller's user's
    /// quota (anonymous callers and tasks share one). This is how an application lets
    /// a client upload its avatar without being an admin: the action decides.
    pub fn grant(&self, op: FileOp, path: &str, ttl: Duration) -> Result<String, ActionError> {
        let files = self.hub.files.as_ref().ok_or_else(|| {
            ActionError::new(
                "unavailable",
                "files need a data folder (this server keeps everything in memory)".to_string(),
            )
        })?;
        files
            .grant(op, path, ttl, self.user().unwrap_or(""))
            .map_err(|e| ActionError::new(e.code, e.message))
    }

    /// Waits without holding up anyone else.
    pub fn sleep(&self, duration: Duration) {
        if may::coroutine::is_coroutine() {
            crate::coop::nap(duration);
        } else {
            std::thread::sleep(duration);
        }
    }

    fn channel(&self, c: ChannelCommand) -> Result<Reply, ActionError> {
        Ok(self.hub.apply(self.id, c.into())?)
    }

    fn caller_only(&self, what: &str) -> Result<(), ActionError> {
        if self.id == SERVER_ID {
            return Err(ActionError::new(
                "bad_args",
                format!("a task has no connection to {what}"),
            ));
        }
        Ok(())
    }
}

fn to_json(data: impl Serialize) -> Result<Json, ActionError> {
    serde_json::to_value(data)
        .map_err(|e| ActionError::new("bad_args", format!("cannot serialize the data: {e}")))
}
