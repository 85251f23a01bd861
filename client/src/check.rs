//! The update check as a sans-I/O session: the keyset (from the pinned root
//! or the held one), then one batch `POST /v1/updates` for the app and every
//! paired device. Each answer is trusted only after its freshness statement,
//! release signatures, offer fields, `from` range and `seq` all verify.

use crate::http::{status_error, BaseUrl, Request, Response, MAX_JSON};
use crate::keychain::{Keychain, Progress};
use crate::{Error, State};
use chrono::{DateTime, Utc};
use firmcast_signing::names::{parse_version, validate_channel, validate_product};
use firmcast_signing::{Envelope, Freshness, Role, VerifiedKeyset};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The server's limit on one batch.
pub const MAX_ITEMS: usize = 32;
pub const DEFAULT_CHANNEL: &str = "stable";

/// One thing to check: the app itself or a paired device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckItem {
    pub product: String,
    /// The installed version (semver).
    pub version: String,
    /// `stable` when `None`.
    pub channel: Option<String>,
}

impl CheckItem {
    pub fn new(product: &str, version: &str) -> Self {
        CheckItem {
            product: product.into(),
            version: version.into(),
            channel: None,
        }
    }
}

/// A verified offer: every field below comes from the signed manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub product: String,
    pub version: String,
    /// The version it replaces (the `from` of an outcome report).
    pub installed: String,
    pub channel: String,
    pub seq: u64,
    pub sha256: String,
    pub size: u64,
    /// Absolute download URL.
    pub url: String,
    pub critical: bool,
    /// Release notes by locale.
    pub notes: BTreeMap<String, String>,
}

/// One item's verified answer, or why it was refused.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemResult {
    pub product: String,
    pub installed: String,
    pub channel: String,
    /// `Ok(None)`: up to date (a fresh, signed statement says so).
    pub outcome: Result<Option<Update>, Error>,
    /// The newest seq the freshness statement vouches for, when it verified.
    pub latest_seq: Option<u64>,
}

/// What a finished check hands back: the results in item order, and the
/// new state to persist (before acting on the results).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOutcome {
    pub results: Vec<ItemResult>,
    pub state: State,
    /// The server's day number, when it sent one.
    pub day: Option<u64>,
}

/// The server an app trusts: its base URL and the pinned root key.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) base: BaseUrl,
    pinned: Role,
}

impl Client {
    /// `root` is the pinned root public key: SPKI PEM (`root.pub.pem`) or
    /// base64 of the raw 32 bytes.
    pub fn new(server: &str, root: &str) -> Result<Self, Error> {
        let key = if root.contains("-----BEGIN") {
            firmcast_signing::PublicKey::from_pem(root, "the pinned root key")
        } else {
            firmcast_signing::PublicKey::from_base64(root.trim())
        }
        .map_err(|e| Error::InvalidInput(format!("the pinned root key is unusable: {e}")))?;
        Ok(Client {
            base: BaseUrl::parse(server)?,
            pinned: Role::single(key),
        })
    }

    pub fn server(&self) -> &str {
        self.base.as_str()
    }

    /// A check of `items` against `state`, now.
    pub fn check(&self, state: &State, items: Vec<CheckItem>) -> Result<Check, Error> {
        self.check_at(state, items, Utc::now())
    }

    /// As [`Client::check`], at a given time (tests, replays).
    pub fn check_at(
        &self,
        state: &State,
        items: Vec<CheckItem>,
        now: DateTime<Utc>,
    ) -> Result<Check, Error> {
        if items.is_empty() || items.len() > MAX_ITEMS {
            return Err(Error::InvalidInput(format!(
                "{} items; check 1 to {MAX_ITEMS} (the app and its paired devices)",
                items.len()
            )));
        }
        let mut checked = Vec::with_capacity(items.len());
        for item in items {
            let channel = item.channel.unwrap_or_else(|| DEFAULT_CHANNEL.into());
            let bad = |e: firmcast_signing::Error| Error::InvalidInput(e.to_string());
            validate_product(&item.product).map_err(bad)?;
            validate_channel(&channel).map_err(bad)?;
            let installed = parse_version(&item.version).map_err(bad)?;
            checked.push(Item {
                product: item.product,
                version: item.version,
                installed,
                channel,
            });
        }
        let held = state.held_keyset()?;
        Ok(Check {
            base: self.base.clone(),
            items: checked,
            state: state.clone(),
            now,
            keychain: Keychain::new(self.pinned.clone(), held, now),
            phase: Phase::Keys,
        })
    }
}

struct Item {
    product: String,
    version: String,
    installed: semver::Version,
    channel: String,
}

/// One check in progress. Drive it with [`Check::next_request`] and
/// [`Check::receive`] until no request is left, then take [`Check::outcome`].
pub struct Check {
    base: BaseUrl,
    items: Vec<Item>,
    state: State,
    now: DateTime<Utc>,
    keychain: Keychain,
    phase: Phase,
}

enum Phase {
    Keys,
    Updates(VerifiedKeyset),
    Done(CheckOutcome),
    Failed(Error),
}

impl Check {
    /// The next request to send, or `None` when the check is over.
    pub fn next_request(&self) -> Option<Request> {
        match &self.phase {
            Phase::Keys => self.keychain.request(&self.base),
            Phase::Updates(_) => Some(self.updates_request()),
            Phase::Done(_) | Phase::Failed(_) => None,
        }
    }

    /// Hands back the answer to the last request. An error ends the check
    /// (and is returned again by [`Check::outcome`]).
    pub fn receive(&mut self, resp: Response) -> Result<(), Error> {
        let result =
            match std::mem::replace(&mut self.phase, Phase::Failed(Error::Usage(String::new()))) {
                Phase::Keys => match self.keychain.receive(&resp) {
                    Ok(Progress::More) => Ok(Phase::Keys),
                    Ok(Progress::Trusted(k)) => Ok(Phase::Updates(*k)),
                    Err(e) => Err(e),
                },
                Phase::Updates(keyset) => self.updates(&keyset, &resp).map(Phase::Done),
                done @ Phase::Done(_) => {
                    self.phase = done;
                    return Err(Error::Usage(
                        "the check is over; no answer was asked for".into(),
                    ));
                }
                Phase::Failed(e) => Err(e),
            };
        match result {
            Ok(phase) => {
                self.phase = phase;
                Ok(())
            }
            Err(e) => {
                self.phase = Phase::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// The verified results and new state, once no request is left.
    pub fn outcome(self) -> Result<CheckOutcome, Error> {
        match self.phase {
            Phase::Done(o) => Ok(o),
            Phase::Failed(e) => Err(e),
            Phase::Keys | Phase::Updates(_) => Err(Error::Usage(
                "the check is not finished: send next_request() and hand its answer to receive() first".into(),
            )),
        }
    }

    fn updates_request(&self) -> Request {
        let items: Vec<Value> = self
            .items
            .iter()
            .map(|i| {
                let mut item =
                    json!({"product": i.product, "version": i.version, "channel": i.channel});
                // Only a day this server sent: today's servers refuse unknown fields.
                if let Some(day) = self.state.last_day.get(&i.product) {
                    item["last_day"] = (*day).into();
                }
                item
            })
            .collect();
        Request::post_json(self.base.join("v1/updates"), &json!({ "items": items }))
    }

    fn updates(&self, keyset: &VerifiedKeyset, resp: &Response) -> Result<CheckOutcome, Error> {
        if !(200..300).contains(&resp.status) {
            return Err(status_error(resp.status, &resp.headers, &resp.body));
        }
        if resp.body.len() > MAX_JSON {
            return Err(Error::Malformed(format!(
                "the server's update answer is larger than {MAX_JSON} bytes; retry later"
            )));
        }
        let answer: BatchAnswer = serde_json::from_slice(&resp.body).map_err(|e| {
            Error::Malformed(format!(
                "the server's update answer is not what firmcast expects ({e}); retry later"
            ))
        })?;
        if answer.results.len() != self.items.len() {
            return Err(Error::Malformed(format!(
                "the server answered {} results for {} items; refusing",
                answer.results.len(),
                self.items.len()
            )));
        }
        // A missing or odd `day` (an older server) means nothing to store.
        let day = answer.day.as_ref().and_then(Value::as_u64);
        let mut state = self.state.clone();
        state.hold(keyset);
        let mut results = Vec::with_capacity(self.items.len());
        for (item, raw) in self.items.iter().zip(answer.results) {
            let (outcome, latest_seq, answered) = self.item(keyset, item, raw, &state);
            if let Ok(Some(u)) = &outcome {
                let seen = state.seq.entry(u.product.clone()).or_default();
                *seen = (*seen).max(u.seq);
            }
            if let (Some(day), true) = (day, answered) {
                state.last_day.insert(item.product.clone(), day);
            }
            results.push(ItemResult {
                product: item.product.clone(),
                installed: item.version.clone(),
                channel: item.channel.clone(),
                outcome,
                latest_seq,
            });
        }
        Ok(CheckOutcome {
            results,
            state,
            day,
        })
    }

    /// One item: (outcome, latest seq vouched for, whether the server answered it).
    fn item(
        &self,
        keyset: &VerifiedKeyset,
        item: &Item,
        raw: Value,
        state: &State,
    ) -> (Result<Option<Update>, Error>, Option<u64>, bool) {
        if let Some(code) = raw.get("error").and_then(Value::as_str) {
            let message = raw.get("message").and_then(Value::as_str).unwrap_or("");
            let status = if code.starts_with("unknown") {
                404
            } else {
                400
            };
            let e = Error::Refused {
                status,
                code: crate::http::one_line(code, 64),
                message: crate::http::one_line(message, 300),
            };
            return (Err(e), None, false);
        }
        let answer: ItemAnswer = match serde_json::from_value(raw) {
            Ok(a) => a,
            Err(e) => {
                let e = Error::Malformed(format!(
                    "the server's update answer is malformed ({e}); retry later"
                ));
                return (Err(e), None, false);
            }
        };
        if answer.product != item.product || answer.version != item.version {
            let e = Error::Mismatch(
                "the server answered for another product or version; refusing".into(),
            );
            return (Err(e), None, true);
        }
        let fresh = match verify_freshness(keyset, answer.freshness, item, self.now) {
            Ok(f) => f,
            Err(e) => return (Err(e), None, true),
        };
        let seen = state.seq.get(&item.product).copied().unwrap_or(0);
        let outcome = match answer.update {
            None => Ok(None),
            Some(offer) => self
                .verify_offer(keyset, offer, item, seen, &fresh)
                .map(Some),
        };
        (outcome, Some(fresh.latest_seq), true)
    }

    /// The offer's plain fields must equal the signed manifest's.
    fn verify_offer(
        &self,
        keyset: &VerifiedKeyset,
        offer: Offer,
        item: &Item,
        seen: u64,
        fresh: &Freshness,
    ) -> Result<Update, Error> {
        let env = Envelope::from_value(offer.release)
            .map_err(|e| Error::Malformed(format!("the offered release: {e}; retry later")))?;
        let m = keyset
            .verify_release(&env)
            .map_err(|e| crate::error::signing("the offered release does not verify", e))?;
        let offered = parse_version(&offer.version)
            .map_err(|e| Error::Malformed(format!("the offer: {e}; retry later")))?;
        let (product, channel) = (&item.product, &item.channel);
        // Every channel also carries stable releases (the server's rule); a
        // release signed for another channel never reaches this one.
        if m.product != *product || (m.channel != *channel && m.channel != DEFAULT_CHANNEL) {
            return Err(Error::Mismatch(format!(
                "the offered release is signed for {} on {}, not {product} on {channel}; refusing",
                m.product, m.channel
            )));
        }
        if m.version != offered
            || m.artifact.sha256 != offer.sha256
            || m.artifact.size != offer.size
        {
            return Err(Error::Mismatch(format!(
                "the offer ({} {}, sha256 {}, {} bytes) does not match its signed release ({}, sha256 {}, {} bytes); refusing",
                m.product,
                crate::http::one_line(&offer.version, 64),
                crate::http::one_line(&offer.sha256, 64),
                offer.size,
                m.version,
                m.artifact.sha256,
                m.artifact.size
            )));
        }
        if !m.applies_to(&item.installed) {
            return Err(Error::Mismatch(format!(
                "the offered release {} does not apply to installed version {} (not newer, or outside its `from` range); refusing",
                m.version, item.installed
            )));
        }
        if m.seq < seen {
            return Err(Error::Rollback(format!(
                "rollback: the offered release {} has seq {}, but seq {seen} was already seen for {product}; refusing",
                m.version, m.seq
            )));
        }
        if m.seq > fresh.latest_seq {
            return Err(Error::Mismatch(format!(
                "the offered release has seq {}, above the latest seq {} the freshness statement vouches for; refusing",
                m.seq, fresh.latest_seq
            )));
        }
        Ok(Update {
            url: self.base.resolve(&offer.url)?,
            product: m.product,
            version: m.version.to_string(),
            installed: item.version.clone(),
            channel: m.channel,
            seq: m.seq,
            sha256: m.artifact.sha256,
            size: m.artifact.size,
            critical: m.critical,
            notes: m.notes,
        })
    }
}

fn verify_freshness(
    keyset: &VerifiedKeyset,
    raw: Value,
    item: &Item,
    now: DateTime<Utc>,
) -> Result<Freshness, Error> {
    let env = Envelope::from_value(raw)
        .map_err(|e| Error::Malformed(format!("the freshness statement: {e}; retry later")))?;
    let fresh = keyset.verify_freshness(&env, now).map_err(|e| match e {
        // Frozen answers must not read as "no update".
        e @ firmcast_signing::Error::Expired { .. } => Error::Stale(e.to_string()),
        e => crate::error::signing("the freshness statement does not verify", e),
    })?;
    if fresh.product != item.product || fresh.channel != item.channel {
        return Err(Error::Mismatch(format!(
            "the freshness statement is for {} on {}, not {} on {}; refusing",
            fresh.product, fresh.channel, item.product, item.channel
        )));
    }
    Ok(fresh)
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<Value>,
    #[serde(default)]
    day: Option<Value>,
}

#[derive(Deserialize)]
struct ItemAnswer {
    product: String,
    version: String,
    update: Option<Offer>,
    freshness: Value,
}

#[derive(Deserialize)]
struct Offer {
    version: String,
    url: String,
    size: u64,
    sha256: String,
    release: Value,
}
