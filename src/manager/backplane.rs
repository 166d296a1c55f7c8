//! The seam where a cluster's backplane sits in the fan-out path (DESIGN section 5):
//! every local publication is also handed to it, and what arrives from it is fanned
//! out locally like any publish ([`RemoteMessage`], through the manager).
//!
//! The routing layer knows only this trait; the Redis backplane (`cluster/`) lives
//! beside it and is plugged in by the assembly layer.

use std::sync::Arc;

use serde_json::Value;

use crate::protocol::Payload;

/// A payload as the publisher holds it, lent for the moment of handing it over.
#[derive(Clone, Copy, Debug)]
pub enum PayloadRef<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl<'a> From<&'a Payload> for PayloadRef<'a> {
    fn from(p: &'a Payload) -> Self {
        match p {
            Payload::Text(s) => PayloadRef::Text(s),
            Payload::Json(v) => PayloadRef::Json(v),
        }
    }
}

/// Where a node hands its local publications for the other nodes.
pub trait Backplane: Send + Sync {
    /// `from` published `payload` on `channel` here. Never blocks: a publisher calls
    /// it on its hot path, in a coroutine.
    fn publish(&self, channel: &str, from: &str, payload: PayloadRef<'_>);
}

/// A publication another node made, to fan out here.
#[derive(Debug)]
pub struct RemoteMessage {
    pub channel: Arc<str>,
    pub from: Arc<str>,
    pub payload: Payload,
}
