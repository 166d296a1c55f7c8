//! Services: who serves what. The manager is the only writer of registrations: it
//! publishes each service's providers for requesters (`requests.rs`, where requests
//! travel in one hop and are answered, failed and timed out) and answers `SERVE`,
//! `UNSERVE` and `SERVICES`. It also sends the requests that come through it: those of
//! actions and tasks, and a client's `REQ` that must wait for the commands before it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::outbox::{ConnId, Outbox};
use super::requests::{self, Ask, Figures, Placed, Refused, Requester, ServiceRoute};
use super::Manager;
use crate::collections::Map;
use crate::protocol::{ErrorReply, Item, Payload, Reply};

/// One service's providers and figures.
struct Service {
    /// In the order they offered it.
    providers: Vec<Arc<Outbox>>,
    figures: Arc<Figures>,
}

/// Every service, and the connections serving any; owned by the manager.
#[derive(Default)]
pub struct Services {
    by_name: Map<Arc<str>, Service>,
    /// Connections serving something, with how many services each: the desks the
    /// manager looks through for timeouts.
    providers: Map<ConnId, (Arc<Outbox>, usize)>,
}

impl Manager {
    /// Publishes `name`'s providers for requesters, and forgets a service nobody
    /// serves that never answered anything.
    fn publish_service(&mut self, name: &Arc<str>) {
        if let Some(backplane) = self.routes.backplane.get() {
            let n = self
                .services
                .by_name
                .get(name)
                .map_or(0, |s| s.providers.len());
            backplane.serves(name, n);
        }
        let routes = &self.routes.services;
        match self.services.by_name.get(name) {
            Some(s) if !s.providers.is_empty() => {
                let route = ServiceRoute::new(name.clone(), s.providers.clone(), s.figures.clone());
                routes.set(name, Some(route));
            }
            Some(s) => {
                routes.set(name, None);
                let f = &s.figures;
                if f.served.load(Ordering::Relaxed) + f.failed.load(Ordering::Relaxed) == 0 {
                    self.services.by_name.remove(name);
                }
            }
            None => routes.set(name, None),
        }
    }

    /// `SERVE`.
    pub fn serve(&mut self, id: ConnId, name: &str) -> Result<Reply, ErrorReply> {
        let Some(outbox) = self.clients.get(&id).map(|c| c.outbox.clone()) else {
            return Ok(Reply::Done(None));
        };
        let key = match self.services.by_name.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => Arc::from(name),
        };
        let s = self
            .services
            .by_name
            .entry(key.clone())
            .or_insert_with(|| Service {
                providers: Vec::new(),
                figures: Arc::default(),
            });
        if s.providers.iter().any(|p| p.id == id) {
            return Ok(Reply::Done(None));
        }
        requests::offer(&outbox, &key);
        s.providers.push(outbox.clone());
        self.services.providers.entry(id).or_insert((outbox, 0)).1 += 1;
        self.publish_service(&key);
        Ok(Reply::Done(None))
    }

    /// `UNSERVE`: its requests still open with this provider fail with `service_gone`.
    pub fn unserve(&mut self, id: ConnId, name: &str) -> Result<Reply, ErrorReply> {
        let found = self
            .services
            .by_name
            .get_key_value(name)
            .and_then(|(k, s)| {
                let at = s.providers.iter().position(|p| p.id == id)?;
                Some((k.clone(), at))
            });
        let Some((key, at)) = found else {
            return Err(ErrorReply::new(
                "not_serving",
                format!("you do not serve '{}'", crate::protocol::args::clip(name)),
            ));
        };
        if let Some(s) = self.services.by_name.get_mut(&key) {
            let outbox = s.providers.remove(at);
            requests::withdraw(&outbox, Some(name), "stopped serving it");
        }
        if let Some((_, n)) = self.services.providers.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.services.providers.remove(&id);
            }
        }
        self.publish_service(&key);
        Ok(Reply::Done(None))
    }

    /// `REQ` from connection `id` that came through the manager (it followed commands
    /// of the same client still on their way here): the answer reaches its outbox with
    /// `token`, now (no provider) or later.
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
        let ask = Ask {
            from: self.name_of(from),
            data,
            timeout,
            requester,
        };
        match self.place_request(service, to, ask) {
            Ok(Placed { provider, push, .. }) => {
                if self.push(&provider, push) {
                    // As with a publisher and a crowded subscriber: the requester pauses
                    // (a bounded time) for the provider to catch up, and a provider that
                    // does not is cut as a slow consumer, failing what it holds.
                    if let Some(c) = self.clients.get(&from) {
                        c.outbox.request_stall(&provider);
                    }
                }
            }
            // Nobody here serves it: in a cluster, another node may.
            Err(refused) if refused.error.code == "no_responders" => {
                let Refused { ask, error } = *refused;
                self.forward_request(service, to, ask, error)
            }
            Err(refused) => refused.ask.requester.answer(Reply::Error(refused.error)),
        }
    }

    /// Enters `ask` at the desk of one provider of `service` here, or of the client
    /// named `to` (a reverse request).
    pub(super) fn place_request(
        &self,
        service: &str,
        to: Option<&str>,
        ask: Ask,
    ) -> Result<Placed, Box<Refused>> {
        let services = &self.routes.services;
        match to {
            None => services.place(service, ask),
            Some(to) => {
                let provider = self.names.get(to).and_then(|id| self.clients.get(id));
                services.place_at(provider.map(|c| &c.outbox), to, service, ask)
            }
        }
    }

    /// `REPLY` or `FAIL` from provider `id` for request `req`, come through the manager.
    pub fn answer_request(
        &mut self,
        id: ConnId,
        req: u64,
        answer: Result<Reply, ErrorReply>,
    ) -> Result<Reply, ErrorReply> {
        let Some(c) = self.clients.get(&id) else {
            return Ok(Reply::Done(None));
        };
        requests::answer(&c.outbox, req, answer).map(|()| Reply::Done(None))
    }

    /// `SERVICES`: this node's services; in a cluster, also those only other nodes
    /// serve, each with `remote=<providers on other nodes>`.
    pub fn services_list(&self) -> Reply {
        let clustered = self.routes.backplane.get().is_some();
        let remote = self.remote.services();
        let mut names: Vec<&Arc<str>> = self.services.by_name.keys().collect();
        names.extend(
            remote
                .keys()
                .filter(|n| !self.services.by_name.contains_key(*n)),
        );
        names.sort();
        let items = names
            .into_iter()
            .map(|name| {
                let elsewhere = remote.get(name).copied().unwrap_or(0);
                let Some(s) = self.services.by_name.get(name) else {
                    return Item {
                        text: format!("{name} providers=0 pending=0 served=0 failed=0 latency_ms=0 remote={elsewhere}"),
                        json: json!({"service": &**name, "providers": 0, "pending": 0,
                                     "served": 0, "failed": 0, "latency_ms": 0.0,
                                     "remote": elsewhere}),
                    };
                };
                let pending: usize = s
                    .providers
                    .iter()
                    .filter_map(|p| p.desk())
                    .map(|d| d.pending_of(name))
                    .sum();
                let served = s.figures.served.load(Ordering::Relaxed);
                let failed = s.figures.failed.load(Ordering::Relaxed);
                let latency_us = s.figures.latency_us.load(Ordering::Relaxed);
                let answered = served + failed;
                let latency_ms = if answered == 0 {
                    0.0
                } else {
                    (latency_us as f64 / answered as f64 / 100.0).round() / 10.0
                };
                let mut item = Item {
                    text: format!(
                        "{name} providers={} pending={pending} served={served} failed={failed} latency_ms={latency_ms}",
                        s.providers.len(),
                    ),
                    json: json!({"service": &**name, "providers": s.providers.len(),
                                 "pending": pending, "served": served, "failed": failed,
                                 "latency_ms": latency_ms}),
                };
                if clustered {
                    item.text.push_str(&format!(" remote={elsewhere}"));
                    item.json["remote"] = json!(elsewhere);
                }
                item
            })
            .collect();
        Reply::List {
            key: "services",
            items,
        }
    }

    /// Connection `id` left: as a provider, its requests fail with `service_gone`. (As
    /// a requester, its requests are cancelled where they wait: their answers are
    /// refused with `no_such_request`, and they count for nothing.)
    pub(super) fn services_disconnect(&mut self, id: ConnId) {
        let Some((outbox, _)) = self.services.providers.remove(&id) else {
            return;
        };
        requests::withdraw(&outbox, None, "disconnected");
        let names: Vec<Arc<str>> = self
            .services
            .by_name
            .iter_mut()
            .filter_map(|(name, s)| {
                let before = s.providers.len();
                s.providers.retain(|p| p.id != id);
                (s.providers.len() != before).then(|| name.clone())
            })
            .collect();
        for name in &names {
            self.publish_service(name);
        }
    }

    /// When to look for requests that timed out (none before).
    pub fn next_request_deadline(&self) -> Option<std::time::Instant> {
        let here = self.routes.services.next_deadline();
        match (here, self.remote.requests.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fails the requests whose time is up with `timeout`.
    pub(super) fn expire_requests(&mut self) {
        let desks = self.services.providers.values().map(|(o, _)| o);
        self.routes.services.expire(desks);
        self.expire_remote_requests();
    }
}
