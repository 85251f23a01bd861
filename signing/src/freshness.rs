//! Freshness statements: the server's online timestamp key says "for this
//! product and channel the newest release is `latest_seq`, as of now". They
//! expire about a day ahead, so a frozen answer is detectable.

use crate::keyset::{format_time, parse_time};
use crate::{Envelope, Error, PrivateKey, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const TIMESTAMP_TYPE: &str = "application/vnd.firmcast.timestamp+json";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freshness {
    pub product: String,
    pub channel: String,
    pub latest_seq: u64,
    pub keyset_version: u64,
    pub expires: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct FreshnessJson {
    product: String,
    channel: String,
    latest_seq: u64,
    keyset_version: u64,
    expires: String,
}

impl Freshness {
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let raw: FreshnessJson = serde_json::from_slice(payload).map_err(|e| Error::Json {
            what: "freshness statement",
            reason: e.to_string(),
        })?;
        crate::names::validate_product(&raw.product)?;
        crate::names::validate_channel(&raw.channel)?;
        Ok(Freshness {
            expires: parse_time("freshness expires", &raw.expires)?,
            product: raw.product,
            channel: raw.channel,
            latest_seq: raw.latest_seq,
            keyset_version: raw.keyset_version,
        })
    }

    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(&FreshnessJson {
            product: self.product.clone(),
            channel: self.channel.clone(),
            latest_seq: self.latest_seq,
            keyset_version: self.keyset_version,
            expires: format_time(&self.expires),
        })
        .expect("a freshness statement always serializes")
    }

    pub fn sign(&self, timestamp_key: &PrivateKey) -> Envelope {
        Envelope::sign(TIMESTAMP_TYPE, self.to_payload(), timestamp_key)
    }
}
