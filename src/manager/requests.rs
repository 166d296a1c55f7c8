//! Service requests in one hop: a requester's connection hands its request to the
//! provider's outbox itself, and the provider's `REPLY` goes straight back to the
//! requester's outbox, neither through the manager thread.
//!
//! The manager stays the only writer of who serves what. It publishes each service's
//! providers as an immutable [`ServiceRoute`], and keeps on each provider's outbox a
//! [`Desk`]: the services it serves now and the requests it holds. A request is
//! entered at the desk under the desk's lock, and the manager withdraws a service
//! there under the same lock (`UNSERVE`, a disconnect): so a request either finds the
//! service still served, and is then failed by the withdrawal, or finds it gone and
//! tries another provider. No `service_gone` is missed, and after `UNSERVE`'s `+OK` no
//! request reaches the provider, whatever route a requester still read.
//!
//! Timeouts stay with the manager, which looks through the desks at the earliest
//! deadline; a requester wakes it only when its request lowered that deadline.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::outbox::Outbox;
use super::route::{await_release, RELEASE_WAIT};
use crate::collections::Map;
use crate::protocol::args::clip;
use crate::protocol::push::{Push, ServiceRequest};
use crate::protocol::{ErrorReply, Payload, Reply};

/// Where a request's answer goes.
pub enum Requester {
    /// A client's `REQ`: its outbox, with the token that finds the answer's place.
    Client { outbox: Arc<Outbox>, token: u64 },
    /// An action or task waiting in its coroutine (`Ctx::request`).
    Callback(Box<dyn FnOnce(Reply) + Send>),
}

impl Requester {
    /// A client that has left: its requests are cancelled (their answers refused).
    fn is_gone(&self) -> bool {
        matches!(self, Requester::Client { outbox, .. } if outbox.is_closed())
    }

    pub fn answer(self, reply: Reply) {
        match self {
            Requester::Client { outbox, token } => outbox.answer(token, reply),
            Requester::Callback(done) => done(reply),
        }
    }
}

/// A service's figures, counted wherever its requests end.
#[derive(Default)]
pub struct Figures {
    pub served: AtomicU64,
    pub failed: AtomicU64,
    /// Microseconds from request to answer, summed over the answered ones.
    pub latency_us: AtomicU64,
}

impl Figures {
    fn fail(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A service's providers, as of one moment.
pub struct ServiceRoute {
    pub name: Arc<str>,
    /// In the order they offered it.
    pub providers: Vec<Arc<Outbox>>,
    pub figures: Arc<Figures>,
    /// Where the next tie is broken.
    turn: AtomicUsize,
}

impl ServiceRoute {
    pub fn new(name: Arc<str>, providers: Vec<Arc<Outbox>>, figures: Arc<Figures>) -> Self {
        ServiceRoute {
            name,
            providers,
            figures,
            turn: AtomicUsize::new(0),
        }
    }
}

/// A request waiting for its provider's answer.
struct Pending {
    service: Arc<str>,
    figures: Arc<Figures>,
    requester: Requester,
    deadline: Instant,
    /// When it was sent, for the service's latency.
    sent: Instant,
}

/// What a provider serves now and the requests it holds; kept on its outbox.
#[derive(Default)]
pub struct Desk {
    inner: Mutex<DeskInner>,
    /// Requests held, readable without the lock (for choosing a provider).
    load: AtomicU32,
}

#[derive(Default)]
struct DeskInner {
    serving: Vec<Arc<str>>,
    pending: Map<u64, Pending>,
}

impl Desk {
    /// Requests for `service` it holds.
    pub fn pending_of(&self, service: &str) -> usize {
        let inner = self.inner.lock();
        inner
            .pending
            .values()
            .filter(|p| &*p.service == service)
            .count()
    }
}

/// A request to send: from the client named `from`, `requester` gets the answer.
pub struct Ask {
    pub from: Arc<str>,
    pub data: Payload,
    /// How long it may wait (the server's request timeout when `None`).
    pub timeout: Option<Duration>,
    pub requester: Requester,
}

/// A request no provider took, given back with why: boxed, as requests are placed on
/// the hot path and refused on a cold one.
pub struct Refused {
    pub ask: Ask,
    pub error: ErrorReply,
}

/// A request entered at its provider's desk, for the caller to hand over.
pub struct Placed {
    /// Held until the push is handed over (see [`ServiceRoutes::set`]).
    pub route: Arc<ServiceRoute>,
    pub provider: Arc<Outbox>,
    pub push: Push,
    /// The request lowered the earliest deadline: the manager must be told, to look at
    /// its clock again (it sleeps until the earliest it knew).
    pub wake_manager: bool,
}

/// Every service's current route, read by requesters, written by the manager; and the
/// deadline of the request that times out first.
pub struct ServiceRoutes {
    map: RwLock<Map<Arc<str>, Arc<ServiceRoute>>>,
    next_req: AtomicU64,
    /// Microseconds from `epoch` to the earliest deadline of any request sent since the
    /// manager last looked ([`NONE`]: none). It may be earlier than any still pending
    /// (answers leave it): that only costs the manager one look too many.
    earliest: AtomicU64,
    epoch: Instant,
    /// How long a request may wait for its answer unless it says otherwise.
    timeout: Duration,
}

const NONE: u64 = u64::MAX;

fn no_responders(service: &str, to: Option<&str>) -> ErrorReply {
    let who = to.map_or(String::new(), |n| format!(" at {}", clip(n)));
    ErrorReply::new(
        "no_responders",
        format!("nobody serves '{}'{who} now", clip(service)),
    )
}

fn gone(service: &str, why: &str) -> Reply {
    Reply::Error(ErrorReply::new(
        "service_gone",
        format!("the provider of '{service}' {why} before answering"),
    ))
}

impl ServiceRoutes {
    /// No services; requests wait `timeout` for their answer unless they say otherwise.
    pub fn new(timeout: Duration) -> Self {
        ServiceRoutes {
            map: RwLock::default(),
            next_req: AtomicU64::new(0),
            earliest: AtomicU64::new(NONE),
            epoch: Instant::now(),
            timeout,
        }
    }

    fn get(&self, service: &str) -> Option<Arc<ServiceRoute>> {
        self.map.read().get(service).cloned()
    }

    /// Swaps in `service`'s route (`None`: nobody serves it). When providers left it,
    /// waits (bounded) until no requester still holds the route it replaced: a request
    /// entered at a desk is staged for its provider while its requester holds the
    /// route, so once it is let go, a provider withdrawn before the swap is sent
    /// nothing more.
    pub fn set(&self, service: &Arc<str>, route: Option<ServiceRoute>) {
        let now = route.as_ref().map_or(0, |r| r.providers.len());
        let old = {
            let mut map = self.map.write();
            match route {
                Some(r) => map.insert(service.clone(), Arc::new(r)),
                None => map.remove(service),
            }
        };
        let deadline = Instant::now() + RELEASE_WAIT;
        let shrunk = old.filter(|old| old.providers.len() > now);
        if shrunk.is_some_and(|old| !await_release(&old, deadline)) {
            log::debug!(
                "a requester still held service '{service}''s old route after {RELEASE_WAIT:?}"
            );
        }
    }

    /// How long a request may wait for its answer unless it says otherwise.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When the manager must look for requests that timed out (none before).
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.earliest.load(Ordering::SeqCst) {
            NONE => None,
            us => Some(self.epoch + Duration::from_micros(us)),
        }
    }

    /// Enters a request for `service` at one provider's desk: the one holding the
    /// fewest requests, ties in turn. Gives the request back, with `no_responders`,
    /// when nobody here serves it.
    pub fn place(&self, service: &str, ask: Ask) -> Result<Placed, Box<Refused>> {
        let no_one = |ask| {
            Box::new(Refused {
                ask,
                error: no_responders(service, None),
            })
        };
        let Some(route) = self.get(service) else {
            return Err(no_one(ask));
        };
        let n = route.providers.len();
        let load = |i: usize| {
            route.providers[i]
                .desk()
                .map_or(0, |d| d.load.load(Ordering::Relaxed))
        };
        let start = route.turn.load(Ordering::Relaxed);
        let in_turn = (0..n).map(|k| (start + k) % n);
        let Some(best) = in_turn.clone().min_by_key(|&i| load(i)) else {
            return Err(no_one(ask));
        };
        route.turn.store((best + 1) % n, Ordering::Relaxed);
        // The best one may have stopped serving since the route was read: then the
        // others, in turn.
        let order = std::iter::once(best).chain(in_turn.filter(|&i| i != best));
        let candidates = order.map(|i| route.providers[i].clone());
        self.place_first(&route, candidates, ask)
            .map_err(|ask| no_one(*ask))
    }

    /// Enters a request for `service` at the desk of `provider` (named `to`), if it
    /// serves it: a reverse request.
    pub fn place_at(
        &self,
        provider: Option<&Arc<Outbox>>,
        to: &str,
        service: &str,
        ask: Ask,
    ) -> Result<Placed, Box<Refused>> {
        let placed = match (self.get(service), provider) {
            (Some(route), Some(p)) => self.place_first(&route, std::iter::once(p.clone()), ask),
            _ => Err(Box::new(ask)),
        };
        placed.map_err(|ask| {
            Box::new(Refused {
                ask: *ask,
                error: no_responders(service, Some(to)),
            })
        })
    }

    /// Enters the request at the desk of the first of `candidates` still serving the
    /// route's service; gives it back when none does.
    fn place_first(
        &self,
        route: &Arc<ServiceRoute>,
        candidates: impl Iterator<Item = Arc<Outbox>>,
        ask: Ask,
    ) -> Result<Placed, Box<Ask>> {
        let Ask {
            from,
            data,
            timeout,
            mut requester,
        } = ask;
        for provider in candidates {
            match self.enter(&provider, route, requester, timeout) {
                Ok((req, wake_manager)) => {
                    return Ok(Placed {
                        route: route.clone(),
                        push: request_push(req, &route.name, from, data),
                        provider,
                        wake_manager,
                    })
                }
                Err(r) => requester = r,
            }
        }
        Err(Box::new(Ask {
            from,
            data,
            timeout,
            requester,
        }))
    }

    /// Enters a request at `provider`'s desk if it still serves the route's service.
    /// Returns its id and whether it lowered the earliest deadline.
    fn enter(
        &self,
        provider: &Outbox,
        route: &ServiceRoute,
        requester: Requester,
        timeout: Option<Duration>,
    ) -> Result<(u64, bool), Requester> {
        let Some(desk) = provider.desk().filter(|_| !provider.is_closed()) else {
            return Err(requester);
        };
        let now = Instant::now();
        let deadline = now + timeout.unwrap_or(self.timeout);
        let req = {
            let mut inner = desk.inner.lock();
            if !inner.serving.iter().any(|s| **s == *route.name) {
                return Err(requester);
            }
            let req = self.next_req.fetch_add(1, Ordering::Relaxed) + 1;
            let pending = Pending {
                service: route.name.clone(),
                figures: route.figures.clone(),
                requester,
                deadline,
                sent: now,
            };
            inner.pending.insert(req, pending);
            desk.load.fetch_add(1, Ordering::Relaxed);
            req
        };
        // After the entry: a manager that missed the entry in its look through the
        // desks had set `earliest` before that look, so it sees this lowering.
        let us = deadline.saturating_duration_since(self.epoch).as_micros() as u64;
        let lowered = self.earliest.fetch_min(us, Ordering::SeqCst) > us;
        Ok((req, lowered))
    }

    /// Fails the requests whose time is up, at the desks of `providers`, with
    /// `timeout`; called by the manager at [`ServiceRoutes::next_deadline`].
    pub fn expire<'a>(&self, providers: impl Iterator<Item = &'a Arc<Outbox>>) {
        self.earliest.store(NONE, Ordering::SeqCst);
        let now = Instant::now();
        let mut next = NONE;
        let mut expired = Vec::new();
        for desk in providers.filter_map(|o| o.desk()) {
            let mut inner = desk.inner.lock();
            let before = expired.len();
            expired.extend(inner.pending.extract_if(|_, p| p.deadline <= now));
            desk.load
                .fetch_sub((expired.len() - before) as u32, Ordering::Relaxed);
            if let Some(d) = inner.pending.values().map(|p| p.deadline).min() {
                next = next.min(d.saturating_duration_since(self.epoch).as_micros() as u64);
            }
        }
        self.earliest.fetch_min(next, Ordering::SeqCst);
        for (_, p) in expired {
            p.figures.fail();
            let e = ErrorReply::new("timeout", format!("'{}' did not answer in time", p.service));
            p.requester.answer(Reply::Error(e));
        }
    }
}

fn request_push(req: u64, service: &Arc<str>, from: Arc<str>, data: Payload) -> Push {
    Push::Request(Arc::new(ServiceRequest {
        req,
        service: service.clone(),
        from,
        data,
    }))
}

/// `provider` now serves `service`: requests for it may be entered at its desk.
pub fn offer(provider: &Outbox, service: &Arc<str>) {
    let mut inner = provider.open_desk().inner.lock();
    if !inner.serving.contains(service) {
        inner.serving.push(service.clone());
    }
}

/// `provider` stops serving `only` (or anything): no more of those requests are
/// entered at its desk, and those it holds fail with `service_gone` (`why` it left).
pub fn withdraw(provider: &Outbox, only: Option<&str>, why: &str) {
    let Some(desk) = provider.desk() else {
        return;
    };
    let failed: Vec<Pending> = {
        let mut inner = desk.inner.lock();
        inner.serving.retain(|s| only.is_some_and(|o| **s != *o));
        let failed: Vec<Pending> = inner
            .pending
            .extract_if(|_, p| only.is_none_or(|o| *p.service == *o))
            .map(|(_, p)| p)
            .collect();
        desk.load.fetch_sub(failed.len() as u32, Ordering::Relaxed);
        failed
    };
    for p in failed {
        p.figures.fail();
        p.requester.answer(gone(&p.service, why));
    }
}

/// `REPLY` (`Ok`) or `FAIL` (`Err`) from `provider` for its request `req`: the answer
/// goes to the requester. `no_such_request` when it holds no such request (answered,
/// timed out) or its requester left.
pub fn answer(
    provider: &Outbox,
    req: u64,
    answer: Result<Reply, ErrorReply>,
) -> Result<(), ErrorReply> {
    let pending = provider.desk().and_then(|desk| {
        let p = desk.inner.lock().pending.remove(&req);
        if p.is_some() {
            desk.load.fetch_sub(1, Ordering::Relaxed);
        }
        p
    });
    let Some(p) = pending.filter(|p| !p.requester.is_gone()) else {
        return Err(ErrorReply::new(
            "no_such_request",
            format!("no request {req} waits for your answer (answered, timed out, or its requester left)"),
        ));
    };
    let f = &p.figures;
    match answer {
        Ok(_) => f.served.fetch_add(1, Ordering::Relaxed),
        Err(_) => f.failed.fetch_add(1, Ordering::Relaxed),
    };
    let us = p.sent.elapsed().as_micros() as u64;
    f.latency_us.fetch_add(us, Ordering::Relaxed);
    p.requester.answer(answer.unwrap_or_else(Reply::Error));
    Ok(())
}
