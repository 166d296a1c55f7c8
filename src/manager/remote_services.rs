//! Service requests across the nodes of a cluster. A request nobody here serves goes
//! to another node that serves it (in turn among those), where it is placed like a
//! local one with a requester that sends the answer back; this node keeps the request
//! until the answer comes, its time is up, or that node is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backplane::{PayloadRef, RemoteAsk};
use super::requests::{Ask, Placed, Requester};
use super::Manager;
use crate::collections::Map;
use crate::protocol::{ErrorReply, Payload, Reply};

/// How much longer than its own timeout a request sent to another node is waited for
/// here: that node answers `timeout` itself, and its answer needs the way back.
const GRACE: Duration = Duration::from_secs(1);

/// A request sent to another node.
struct Sent {
    node: Arc<str>,
    service: Arc<str>,
    requester: Requester,
    deadline: Instant,
}

/// Requests sent to other nodes, by number.
#[derive(Default)]
pub struct Outstanding {
    sent: Map<u64, Sent>,
    next: u64,
    /// Where the next choice among the nodes serving a service starts.
    turn: usize,
    /// No later than the first deadline of those waiting (answers leave it as it was:
    /// that costs one look too many, where finding the minimum on every look would
    /// cost a pass over them all).
    earliest: Option<Instant>,
}

impl Outstanding {
    /// When to look for requests that timed out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.earliest
    }
}

fn answer_of(reply: Reply) -> Result<Payload, ErrorReply> {
    match reply {
        Reply::Value(_, payload) => Ok(*payload),
        Reply::Error(e) => Err(e),
        _ => Ok(Payload::Json(serde_json::Value::Null)),
    }
}

impl Manager {
    /// Sends `ask` for `service`, which nobody here serves, to another node that does
    /// (the node of client `to`, for a reverse request); answers `no_such` (the local
    /// `no_responders`) when none does.
    pub(super) fn forward_request(
        &mut self,
        service: &str,
        to: Option<&str>,
        ask: Ask,
        no_such: ErrorReply,
    ) {
        let Some(backplane) = self.routes.backplane.get().cloned() else {
            return ask.requester.answer(Reply::Error(no_such));
        };
        let mut nodes: Vec<Arc<str>> = match to {
            // The client's own node says whether it serves it.
            Some(to) if !self.names.contains_key(to) => {
                self.remote.node_of(to).cloned().into_iter().collect()
            }
            Some(_) => Vec::new(),
            None => self
                .remote
                .providers_of(service)
                .filter(|(_, n)| *n > 0)
                .map(|(node, _)| node.clone())
                .collect(),
        };
        if nodes.is_empty() {
            return ask.requester.answer(Reply::Error(no_such));
        }
        nodes.sort();
        let out = &mut self.remote.requests;
        let node = nodes[out.turn % nodes.len()].clone();
        out.turn = out.turn.wrapping_add(1);
        out.next += 1;
        let req = out.next;
        let timeout = ask.timeout.unwrap_or(self.routes.services.timeout());
        let sent = backplane.request(
            &node,
            RemoteAsk {
                req,
                service,
                to,
                from: &ask.from,
                payload: PayloadRef::from(&ask.data),
                timeout,
            },
        );
        if !sent {
            let e = ErrorReply::new(
                "unavailable",
                format!("'{service}' is served on another node, which this node cannot reach now; try again"),
            );
            return ask.requester.answer(Reply::Error(e));
        }
        let deadline = Instant::now() + timeout + GRACE;
        out.earliest = Some(out.earliest.map_or(deadline, |e| e.min(deadline)));
        out.sent.insert(
            req,
            Sent {
                node,
                service: service.into(),
                requester: ask.requester,
                deadline,
            },
        );
    }

    /// A request from a client of `node` for a provider here (client `to`, for a
    /// reverse request): placed like a local one, its answer sent back. It is never
    /// sent on to a third node.
    pub(super) fn request_from_remote(
        &mut self,
        node: Arc<str>,
        req: u64,
        service: &str,
        to: Option<&str>,
        (from, data, timeout): (Arc<str>, Payload, Duration),
    ) {
        let Some(backplane) = self.routes.backplane.get().cloned() else {
            return;
        };
        let requester = Requester::Callback(Box::new(move |reply| {
            backplane.answer(&node, req, answer_of(reply));
        }));
        let ask = Ask {
            from,
            data,
            timeout: Some(timeout),
            requester,
        };
        match self.place_request(service, to, ask) {
            Ok(Placed { provider, push, .. }) => {
                self.push(&provider, push);
            }
            Err(refused) => refused.ask.requester.answer(Reply::Error(refused.error)),
        }
    }

    /// The answer to request `req`, sent to another node.
    pub(super) fn remote_answer(&mut self, req: u64, answer: Result<Payload, ErrorReply>) {
        if let Some(sent) = self.remote.requests.sent.remove(&req) {
            let reply = match answer {
                Ok(payload) => Reply::Value("data", Box::new(payload)),
                Err(e) => Reply::Error(e),
            };
            sent.requester.answer(reply);
        }
    }

    /// `node` is gone: the requests it held fail with `service_gone`.
    pub(super) fn fail_requests_to(&mut self, node: &str) {
        let gone: Vec<Sent> = self
            .remote
            .requests
            .sent
            .extract_if(|_, s| &*s.node == node)
            .map(|(_, s)| s)
            .collect();
        for s in gone {
            let e = ErrorReply::new(
                "service_gone",
                format!(
                    "the node serving '{}' left the cluster before answering",
                    s.service
                ),
            );
            s.requester.answer(Reply::Error(e));
        }
    }

    /// Fails the requests sent to other nodes whose time is up with `timeout`.
    pub(super) fn expire_remote_requests(&mut self) {
        let now = Instant::now();
        let out = &mut self.remote.requests;
        if out.earliest.is_none_or(|e| e > now) {
            return;
        }
        let expired: Vec<Sent> = out
            .sent
            .extract_if(|_, s| s.deadline <= now)
            .map(|(_, s)| s)
            .collect();
        out.earliest = out.sent.values().map(|s| s.deadline).min();
        for s in expired {
            let e = ErrorReply::new("timeout", format!("'{}' did not answer in time", s.service));
            s.requester.answer(Reply::Error(e));
        }
    }
}
