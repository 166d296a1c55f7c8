//! Services: who serves what, and the requests in flight. A request goes to the
//! provider with the fewest requests pending, ties in turn; it fails at once when
//! nobody serves it (`no_responders`), when its provider leaves or unserves
//! (`service_gone`), or when it times out (`timeout`); a requester that leaves cancels
//! its requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::outbox::{ConnId, Outbox};
use super::Manager;
use crate::collections::Map;
use crate::protocol::push::{Push, ServiceRequest};
use crate::protocol::{ErrorReply, Item, Payload, Reply};

/// One service's providers and figures.
#[derive(Default)]
pub struct Service {
    /// In the order they offered it.
    providers: Vec<ConnId>,
    /// Where the next tie is broken.
    turn: usize,
    served: u64,
    failed: u64,
    /// Microseconds from request to answer, summed over the answered ones.
    latency_us: u64,
}

/// Where a request's answer goes.
pub enum Requester {
    /// A client's `REQ`: its outbox, with the token that finds the answer's place.
    Client { outbox: Arc<Outbox>, token: u64 },
    /// An action or task waiting in its coroutine (`Ctx::request`), on behalf of
    /// connection `id` (the server's own for a task).
    Callback {
        id: ConnId,
        done: Box<dyn FnOnce(Reply) + Send>,
    },
}

impl Requester {
    fn id(&self) -> ConnId {
        match self {
            Requester::Client { outbox, .. } => outbox.id,
            Requester::Callback { id, .. } => *id,
        }
    }

    fn answer(self, reply: Reply) {
        match self {
            Requester::Client { outbox, token } => outbox.answer(token, reply),
            Requester::Callback { done, .. } => done(reply),
        }
    }
}

/// A request waiting for its provider's answer.
struct Pending {
    service: Arc<str>,
    requester: Requester,
    provider: ConnId,
    deadline: Instant,
    /// When it was sent, for the service's latency.
    sent: Instant,
}

/// Every service and request in flight; owned by the manager.
#[derive(Default)]
pub struct Services {
    by_name: Map<Arc<str>, Service>,
    pending: Map<u64, Pending>,
    /// Requests pending per provider.
    load: Map<ConnId, u32>,
    next_req: u64,
    /// No pending request times out before this: lowered as requests are sent, set
    /// again whenever the requests are looked through for timeouts. Answers leave it
    /// early, which only costs one look too many.
    earliest: Option<Instant>,
    /// How long a request may wait for its answer unless it says otherwise.
    pub timeout: Duration,
}

impl Services {
    /// No services yet; requests wait `timeout` for their answer unless they say otherwise.
    pub fn new(timeout: Duration) -> Services {
        Services {
            timeout,
            ..Services::default()
        }
    }

    /// When to look for requests that timed out (none before), without a scan: the
    /// manager asks at every turn of its loop.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.earliest
    }

    fn take(&mut self, req: u64) -> Option<Pending> {
        let p = self.pending.remove(&req)?;
        if let Some(n) = self.load.get_mut(&p.provider) {
            *n = n.saturating_sub(1);
        }
        Some(p)
    }
}

fn gone(service: &str, why: &str) -> Reply {
    Reply::Error(ErrorReply::new(
        "service_gone",
        format!("the provider of '{service}' {why} before answering"),
    ))
}

impl Manager {
    /// `SERVE`.
    pub fn serve(&mut self, id: ConnId, name: &str) -> Result<Reply, ErrorReply> {
        let s = self.services.by_name.entry(Arc::from(name)).or_default();
        if !s.providers.contains(&id) {
            s.providers.push(id);
        }
        Ok(Reply::Done(None))
    }

    /// `UNSERVE`: its requests still open with this provider fail with `service_gone`.
    pub fn unserve(&mut self, id: ConnId, name: &str) -> Result<Reply, ErrorReply> {
        let served = self
            .services
            .by_name
            .get(name)
            .is_some_and(|s| s.providers.contains(&id));
        if !served {
            return Err(ErrorReply::new(
                "not_serving",
                format!("you do not serve '{}'", crate::protocol::args::clip(name)),
            ));
        }
        self.drop_provider(id, Some(name), "stopped serving it");
        Ok(Reply::Done(None))
    }

    /// `REQ` from connection `id`: the answer reaches its outbox with `token`, now (no
    /// provider) or later.
    pub fn request(
        &mut self,
        id: ConnId,
        service: &str,
        data: Payload,
        timeout: Option<Duration>,
        token: u64,
    ) {
        let Some(outbox) = self.clients.get(&id).map(|c| c.outbox.clone()) else {
            return;
        };
        let requester = Requester::Client { outbox, token };
        self.send_request(id, service, None, data, timeout, requester);
    }

    /// Sends a request for `service` from `from` (a client, or the server itself) to
    /// one provider, or to the client named `to` when it serves it (a reverse
    /// request); `requester` gets the answer.
    pub fn send_request(
        &mut self,
        from: ConnId,
        service: &str,
        to: Option<&str>,
        data: Payload,
        timeout: Option<Duration>,
        requester: Requester,
    ) {
        let chosen = match to {
            None => self.pick_provider(service),
            Some(name) => self.named_provider(service, name),
        };
        let Some((name, provider)) = chosen else {
            let clip = crate::protocol::args::clip;
            let who = to.map_or(String::new(), |n| format!(" at {}", clip(n)));
            let e = ErrorReply::new(
                "no_responders",
                format!("nobody serves '{}'{who} now", clip(service)),
            );
            requester.answer(Reply::Error(e));
            return;
        };
        let Some(outbox) = self.clients.get(&provider).map(|c| c.outbox.clone()) else {
            return;
        };
        self.services.next_req += 1;
        let req = self.services.next_req;
        let timeout = timeout.unwrap_or(self.services.timeout);
        let now = Instant::now();
        let deadline = now + timeout;
        let s = &mut self.services;
        s.earliest = Some(s.earliest.map_or(deadline, |e| e.min(deadline)));
        self.services.pending.insert(
            req,
            Pending {
                service: name.clone(),
                requester,
                provider,
                deadline,
                sent: now,
            },
        );
        *self.services.load.entry(provider).or_default() += 1;
        let push = ServiceRequest {
            req,
            service: name,
            from: self.name_of(from),
            data,
        };
        if self.push(&outbox, Push::Request(Arc::new(push))) {
            // As with a publisher and a crowded subscriber: the requester pauses (a
            // bounded time) for the provider to catch up, and a provider that does not
            // is cut as a slow consumer, failing what it holds.
            if let Some(c) = self.clients.get(&from) {
                c.outbox.request_stall(&outbox);
            }
        }
    }

    /// The provider with the fewest pending requests, ties in turn.
    fn pick_provider(&mut self, service: &str) -> Option<(Arc<str>, ConnId)> {
        let (name, s) = self.services.by_name.get_key_value(service)?;
        let n = s.providers.len();
        let load = &self.services.load;
        let best = (0..n)
            .map(|k| (s.turn + k) % n)
            .min_by_key(|&i| load.get(&s.providers[i]).copied().unwrap_or(0))?;
        let (name, provider) = (name.clone(), s.providers[best]);
        if let Some(s) = self.services.by_name.get_mut(service) {
            s.turn = (best + 1) % n;
        }
        Some((name, provider))
    }

    /// The client named `name`, if it serves `service`.
    fn named_provider(&self, service: &str, name: &str) -> Option<(Arc<str>, ConnId)> {
        let id = *self.names.get(name)?;
        let (svc, s) = self.services.by_name.get_key_value(service)?;
        s.providers.contains(&id).then(|| (svc.clone(), id))
    }

    /// `REPLY` or `FAIL` from provider `id` for request `req`.
    pub fn answer_request(
        &mut self,
        id: ConnId,
        req: u64,
        answer: Result<Reply, ErrorReply>,
    ) -> Result<Reply, ErrorReply> {
        let mine = self
            .services
            .pending
            .get(&req)
            .is_some_and(|p| p.provider == id);
        let pending = mine.then(|| self.services.take(req)).flatten();
        let Some(p) = pending else {
            return Err(ErrorReply::new(
                "no_such_request",
                format!("no request {req} waits for your answer (answered, timed out, or its requester left)"),
            ));
        };
        if let Some(s) = self.services.by_name.get_mut(&p.service) {
            match answer {
                Ok(_) => s.served += 1,
                Err(_) => s.failed += 1,
            }
            s.latency_us += p.sent.elapsed().as_micros() as u64;
        }
        p.requester.answer(answer.unwrap_or_else(Reply::Error));
        Ok(Reply::Done(None))
    }

    /// `SERVICES`.
    pub fn services_list(&self) -> Reply {
        let mut names: Vec<&Arc<str>> = self.services.by_name.keys().collect();
        names.sort();
        let items = names
            .into_iter()
            .map(|name| {
                let s = &self.services.by_name[name];
                let pending = self
                    .services
                    .pending
                    .values()
                    .filter(|p| p.service == *name)
                    .count();
                let answered = s.served + s.failed;
                let latency_ms = if answered == 0 {
                    0.0
                } else {
                    (s.latency_us as f64 / answered as f64 / 100.0).round() / 10.0
                };
                Item {
                    text: format!(
                        "{name} providers={} pending={pending} served={} failed={} latency_ms={latency_ms}",
                        s.providers.len(),
                        s.served,
                        s.failed
                    ),
                    json: json!({"service": &**name, "providers": s.providers.len(),
                                 "pending": pending, "served": s.served, "failed": s.failed,
                                 "latency_ms": latency_ms}),
                }
            })
            .collect();
        Reply::List {
            key: "services",
            items,
        }
    }

    /// Provider `id` stops serving `only` (or everything): its pending requests fail
    /// with `service_gone`, and services left without providers are forgotten.
    fn drop_provider(&mut self, id: ConnId, only: Option<&str>, why: &str) {
        let names: Vec<Arc<str>> = self
            .services
            .by_name
            .keys()
            .filter(|n| only.is_none_or(|o| &***n == o))
            .cloned()
            .collect();
        for name in &names {
            if let Some(s) = self.services.by_name.get_mut(name) {
                s.providers.retain(|p| *p != id);
                if s.providers.is_empty() && s.served + s.failed == 0 {
                    self.services.by_name.remove(name);
                }
            }
        }
        let failed: Vec<u64> = self
            .services
            .pending
            .iter()
            .filter(|(_, p)| p.provider == id && only.is_none_or(|o| &*p.service == o))
            .map(|(r, _)| *r)
            .collect();
        for req in failed {
            if let Some(p) = self.services.take(req) {
                if let Some(s) = self.services.by_name.get_mut(&p.service) {
                    s.failed += 1;
                }
                p.requester.answer(gone(&p.service, why));
            }
        }
    }

    /// Connection `id` left: as a provider, its requests fail; as a requester, its
    /// requests are forgotten (a later `REPLY` gets `no_such_request`).
    pub(super) fn services_disconnect(&mut self, id: ConnId) {
        self.drop_provider(id, None, "disconnected");
        let cancelled: Vec<u64> = self
            .services
            .pending
            .iter()
            .filter(|(_, p)| p.requester.id() == id)
            .map(|(r, _)| *r)
            .collect();
        for req in cancelled {
            self.services.take(req);
        }
        self.services.load.remove(&id);
    }

    /// Fails the requests whose time is up with `timeout`.
    pub(super) fn expire_requests(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .services
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        self.services.earliest = self
            .services
            .pending
            .values()
            .map(|p| p.deadline)
            .filter(|d| *d > now)
            .min();
        for req in expired {
            if let Some(p) = self.services.take(req) {
                if let Some(s) = self.services.by_name.get_mut(&p.service) {
                    s.failed += 1;
                }
                let e =
                    ErrorReply::new("timeout", format!("'{}' did not answer in time", p.service));
                p.requester.answer(Reply::Error(e));
            }
        }
    }
}
