//! Delivery recording: what an accepted notification leaves behind, kept
//! compact for the fan-out benchmark, rebuilt into [`ApnsDelivery`] on demand.

use serde_json::Value;

use crate::util::Span;

use super::request::UUID_LEN;
use super::{ApnsDelivery, State};

/// What the fake keeps of an accepted notification; [`ApnsDelivery`] is
/// rebuilt from it on demand. Compact and allocation-free per request: the
/// token in the arena, the payload and collapse id interned (a fan-out job
/// sends the same ones to every token), the rest inline. The topic is not
/// kept: only the fake's own topic is accepted.
pub(super) struct Delivered {
    pub(super) token: Span,
    pub(super) apns_id: [u8; UUID_LEN],
    pub(super) push_type: &'static str,
    pub(super) priority: Option<&'static str>,
    pub(super) expiration: Option<u64>,
    pub(super) collapse_id: Option<u32>,
    pub(super) payload: u32,
}

impl State {
    pub(super) fn delivery(&self, d: &Delivered, topic: &str, payloads: &[Value]) -> ApnsDelivery {
        ApnsDelivery {
            token: self.tokens.get(d.token).to_owned(),
            apns_id: String::from_utf8_lossy(&d.apns_id).into_owned(),
            topic: topic.to_owned(),
            push_type: d.push_type.to_owned(),
            priority: d.priority.map(str::to_owned),
            expiration: d.expiration,
            collapse_id: d
                .collapse_id
                .map(|id| String::from_utf8_lossy(self.collapse_ids.get(id)).into_owned()),
            payload: payloads[d.payload as usize].clone(),
        }
    }

    /// Every distinct payload, parsed (each was checked to be JSON).
    pub(super) fn payload_values(&self) -> Vec<Value> {
        (0..self.payloads.len())
            .map(|id| serde_json::from_slice(self.payloads.get(id as u32)).unwrap_or(Value::Null))
            .collect()
    }
}
