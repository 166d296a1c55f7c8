//! A connection's service requests and answers, in one hop (`manager/requests.rs`): a
//! `REQ` is entered at a provider's desk and staged for it with what the connection
//! publishes, a `REPLY` or `FAIL` goes straight to the requester. Either goes through
//! the manager instead while commands of this client are still on their way there
//! (a `SERVE`, a `NAME`), so it sees their effects.

use std::time::Duration;

use serde_json::Value;

use super::{Ending, Pending, Session, REQUEST};
use crate::commands::services::ServiceCommand;
use crate::commands::Command;
use crate::manager::requests::{self, Ask, Requester};
use crate::manager::ChannelOp;
use crate::protocol::{ErrorReply, Format, Reply};

impl Session {
    /// Whether commands of this client are still on their way to the manager, or
    /// waiting there for their replies.
    fn waiting_on_manager(&self) -> bool {
        self.in_flight > 0 || !self.batch.is_empty()
    }

    /// Sends a service request with a token its answer comes back with: in its place
    /// among the replies, or, for a JSON request with an id, as soon as it is ready (so
    /// a slow service holds back none of this client's other replies).
    pub(super) fn service_request(
        &mut self,
        mut c: ServiceCommand,
        format: Format,
        id: Option<Value>,
    ) {
        let most = self.ctx.settings.max_pending_requests;
        if self.requests >= most {
            let e = ErrorReply::new(
                "limit_reached",
                format!("this connection has {most} requests waiting for answers (--max-pending-requests)"),
            );
            return self.local_reply(format, id, Reply::Error(e));
        }
        let token = REQUEST | self.next_token;
        self.next_token += 1;
        self.requests += 1;
        let at = self.timing.take();
        if format == Format::Json && id.is_some() {
            // Answered whenever ready, out of order: not timed.
            self.detached.push((token, id));
        } else {
            self.pending.push_back(Pending::Answer {
                token,
                format,
                id,
                at,
            });
        }
        if let ServiceCommand::Req { token: t, .. } = &mut c {
            *t = token;
        }
        if self.waiting_on_manager() {
            self.batch.push(Command::Service(Box::new(c)));
            return;
        }
        let ServiceCommand::Req {
            service,
            data,
            timeout_ms,
            ..
        } = c
        else {
            return;
        };
        let ask = Ask {
            from: self.outbox.name(),
            data,
            timeout: timeout_ms.map(Duration::from_millis),
            requester: Requester::Client {
                outbox: self.outbox.clone(),
                token,
            },
        };
        match self.ctx.routes.services.place(&service, ask) {
            Ok(placed) => {
                let (provider, wake_manager) = (placed.provider.clone(), placed.wake_manager);
                if self.publisher.stage_request(placed, &self.ctx.stats) {
                    // A crowded provider: pause, as a publisher does for a subscriber.
                    self.outbox.request_stall(&provider);
                }
                if wake_manager && self.ctx.ops.send(ChannelOp::Deadline).is_err() {
                    self.ending = Some(Ending::ManagerGone);
                }
            }
            // Nobody here serves it; in a cluster, the manager knows who elsewhere does.
            Err(refused)
                if refused.error.code == "no_responders"
                    && self.ctx.routes.backplane.get().is_some() =>
            {
                self.batch
                    .push(Command::Service(Box::new(ServiceCommand::Req {
                        service,
                        data: refused.ask.data,
                        timeout_ms,
                        token,
                    })));
            }
            Err(refused) => self.answer(token, Reply::Error(refused.error)),
        }
    }

    /// `REPLY` or `FAIL`: the answer goes to the requester, and this provider is told
    /// whether the request was still waiting.
    pub(super) fn service_answer(&mut self, c: ServiceCommand, format: Format, id: Option<Value>) {
        if self.waiting_on_manager() {
            self.batch.push(Command::Service(Box::new(c)));
            self.in_flight += 1;
            let at = self.timing.take();
            self.pending.push_back(Pending::Manager { format, id, at });
            return;
        }
        let result = match c {
            ServiceCommand::Reply { req, data } => {
                let answer = Ok(Reply::Value("data", Box::new(data)));
                requests::answer(&self.outbox, req, answer)
            }
            ServiceCommand::Fail { req, code, message } => {
                requests::answer(&self.outbox, req, Err(ErrorReply::new(code, message)))
            }
            _ => return,
        };
        let reply = result.map_or_else(Reply::Error, |()| Reply::Done(None));
        self.local_reply(format, id, reply);
    }
}
