//! The Redis state store: shared by any number of firmcast instances.
//!
//! # Key layout
//!
//! Every key starts with the configured prefix `P` (`state.redis_prefix`), so
//! several deployments or test runs share one Redis safely. Keys that one
//! atomic step touches together carry one hash tag, so the layout works
//! unchanged on Redis Cluster (a Lua script may only touch keys of one slot):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{catalog}:releases` | hash | `product \0 version` -> `StoredRelease` JSON |
//! | `P:{catalog}:order` | sorted set, all scores 0 | `product \0 seq \0 version`, seq as 20 zero-padded digits, so lexical order is product, then seq |
//! | `P:{catalog}:max-seq` | hash | product -> highest seq ever published (20 digits; yanked included) |
//! | `P:{catalog}:version` | string | the catalog version counter (absent = 0) |
//! | `P:{audit}:log` | stream | entry id `<n>-0`, field `entry` = `AuditEntry` JSON |
//! | `P:{audit}:next-id` | string | the last audit id handed out |
//!
//! Pub/sub channel `P:catalog-changes` carries the new catalog version after
//! each change; it is published by the same Lua script that makes the change,
//! so no change goes unannounced.
//!
//! Seqs are compared as zero-padded strings inside Lua, never as Lua numbers
//! (doubles, exact only up to 2^53). Release JSON is never parsed in Lua
//! either (its u64 seed would lose precision): a rollout patch is read,
//! applied here, and written back by a compare-and-set script that retries
//! when another instance changed the release in between.
//!
//! Product names and versions never contain NUL (the API validates them),
//! which is what makes `\0` a safe separator.
//!
//! # Failures
//!
//! Every operation runs under `timeout` and maps any failure to
//! `StateError::Unavailable { backend: "redis", .. }`, so the HTTP layer
//! answers 503 at once instead of hanging. A timed-out or broken connection
//! is replaced by a fresh, lazily connected one, so when Redis comes back the
//! next operation simply works.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use redis::{RedisError, Script};
use tokio::sync::mpsc;

use super::{AuditEntry, ReleasePatch, StateError, StateStore, StoredRelease};
pub use crate::storage::redis::redact_url;
use crate::storage::redis::RedisLink;

/// How often an idle change feed proves its connection is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Reconnect backoff of the change feed: from the first to the last value.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Duplicate-version check, stale-seq check, insert, version bump and
/// announcement, atomically.
///
/// KEYS: releases, order, max-seq, version.
/// ARGV: product, version, seq (20 digits), release JSON, channel.
const INSERT_LUA: &str = r"
local field = ARGV[1] .. '\0' .. ARGV[2]
if redis.call('HEXISTS', KEYS[1], field) == 1 then
  return {'duplicate'}
end
local max = redis.call('HGET', KEYS[3], ARGV[1])
if max and ARGV[3] <= max then
  return {'stale', max}
end
redis.call('HSET', KEYS[1], field, ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[1] .. '\0' .. ARGV[3] .. '\0' .. ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
local v = redis.call('INCR', KEYS[4])
redis.call('PUBLISH', ARGV[5], v)
return {'ok'}
";

/// Compare-and-set of one release's JSON, with version bump and announcement.
///
/// KEYS: releases, version. ARGV: field, expected JSON, new JSON, channel.
const UPDATE_LUA: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  return {'missing'}
end
if cur ~= ARGV[2] then
  return {'conflict'}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[4], v)
return {'ok'}
";

/// Id assignment and append in one step, so stream ids always increase.
///
/// KEYS: next-id, log. ARGV: entry JSON.
const AUDIT_LUA: &str = r"
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], id .. '-0', 'entry', ARGV[1])
return id
";

struct Keys {
    releases: String,
    order: String,
    max_seq: String,
    version: String,
    audit_log: String,
    audit_next_id: String,
    channel: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            releases: format!("{prefix}:{{catalog}}:releases"),
            order: format!("{prefix}:{{catalog}}:order"),
            max_seq: format!("{prefix}:{{catalog}}:max-seq"),
            version: format!("{prefix}:{{catalog}}:version"),
            audit_log: format!("{prefix}:{{audit}}:log"),
            audit_next_id: format!("{prefix}:{{audit}}:next-id"),
            channel: format!("{prefix}:catalog-changes"),
        }
    }
}

struct Scripts {
    insert: Script,
    update: Script,
    audit: Script,
}

/// See the module docs for the key layout and failure behaviour.
pub struct RedisStateStore {
    link: RedisLink,
    keys: Keys,
    scripts: Scripts,
}

impl RedisStateStore {
    /// The store on a shared link; its keys start with the link's prefix.
    pub fn new(link: RedisLink) -> Self {
        RedisStateStore {
            keys: Keys::new(link.prefix()),
            link,
            scripts: Scripts {
                insert: Script::new(INSERT_LUA),
                update: Script::new(UPDATE_LUA),
                audit: Script::new(AUDIT_LUA),
            },
        }
    }

    /// Connects a link of its own and proves Redis answers (tools and tests).
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StateError> {
        Ok(Self::new(RedisLink::connect(url, prefix, timeout).await?))
    }

    /// Like [`connect`](Self::connect) without the start-up round trip.
    pub fn connect_lazy(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StateError> {
        Ok(Self::new(RedisLink::connect_lazy(url, prefix, timeout)?))
    }

    /// The catalog version key and channel, with the link, for the feed.
    fn feed(&self) -> Feed {
        Feed {
            link: self.link.clone(),
            version: self.keys.version.clone(),
            channel: self.keys.channel.clone(),
        }
    }
}

#[async_trait]
impl StateStore for RedisStateStore {
    fn backend(&self) -> &'static str {
        crate::storage::redis::BACKEND
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(self.link.ping().await?)
    }

    async fn catalog_version(&self) -> Result<u64, StateError> {
        self.feed().catalog_version().await
    }

    async fn watch_catalog(&self) -> Option<mpsc::Receiver<u64>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watch(self.feed(), tx));
        Some(rx)
    }

    async fn insert_release(&self, release: &StoredRelease) -> Result<(), StateError> {
        let json = encode(release);
        let keys = &self.keys;
        let script = &self.scripts.insert;
        let reply: Vec<String> = self
            .link
            .run(|mut c| async move {
                c.invoke(
                    script
                        .key(&keys.releases)
                        .key(&keys.order)
                        .key(&keys.max_seq)
                        .key(&keys.version)
                        .arg(&release.product)
                        .arg(&release.version)
                        .arg(seq_text(release.seq))
                        .arg(&json)
                        .arg(&keys.channel),
                )
                .await
            })
            .await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(()),
            Some("duplicate") => Err(StateError::DuplicateVersion {
                product: release.product.clone(),
                version: release.version.clone(),
            }),
            Some("stale") => {
                let max = reply.get(1).and_then(|m| m.parse().ok()).ok_or_else(|| {
                    StateError::Corrupt(format!(
                        "max seq of {} is not a number: {reply:?}",
                        release.product
                    ))
                })?;
                Err(StateError::StaleSeq {
                    product: release.product.clone(),
                    seq: release.seq,
                    max,
                })
            }
            _ => Err(unexpected_reply("insert", &reply)),
        }
    }

    async fn update_release(
        &self,
        product: &str,
        version: &str,
        patch: &ReleasePatch,
        at: DateTime<Utc>,
    ) -> Result<StoredRelease, StateError> {
        let keys = &self.keys;
        let script = &self.scripts.update;
        let field = release_field(product, version);
        let not_found = || StateError::NotFound {
            product: product.to_owned(),
            version: version.to_owned(),
        };
        // The whole read-patch-write loop runs under one deadline: under
        // heavy contention it ends as Unavailable, never as a hang.
        self.link
            .run(|mut c| async move {
                loop {
                    let current: Option<String> = c
                        .query(redis::cmd("HGET").arg(&keys.releases).arg(&field))
                        .await?;
                    let Some(current) = current else {
                        return Err(not_found());
                    };
                    let mut release: StoredRelease =
                        decode(&current, || format!("release {product} {version}"))?;
                    patch.apply(&mut release, at)?;
                    let reply: Vec<String> = c
                        .invoke(
                            script
                                .key(&keys.releases)
                                .key(&keys.version)
                                .arg(&field)
                                .arg(&current)
                                .arg(encode(&release))
                                .arg(&keys.channel),
                        )
                        .await?;
                    match reply.first().map(String::as_str) {
                        Some("ok") => return Ok(release),
                        Some("missing") => return Err(not_found()),
                        // Changed by someone else since the read: redo.
                        Some("conflict") => tokio::task::yield_now().await,
                        _ => return Err(unexpected_reply("update", &reply)),
                    }
                }
            })
            .await
    }

    async fn get_release(
        &self,
        product: &str,
        version: &str,
    ) -> Result<Option<StoredRelease>, StateError> {
        let keys = &self.keys;
        let json: Option<String> = self
            .link
            .run(|mut c| async move {
                c.query(
                    redis::cmd("HGET")
                        .arg(&keys.releases)
                        .arg(release_field(product, version)),
                )
                .await
            })
            .await?;
        json.map(|j| decode(&j, || format!("release {product} {version}")))
            .transpose()
    }

    async fn list_releases(&self, product: Option<&str>) -> Result<Vec<StoredRelease>, StateError> {
        let keys = &self.keys;
        let (min, max) = match product {
            Some(p) => (format!("[{p}\0"), format!("({p}\x01")),
            None => ("-".to_owned(), "+".to_owned()),
        };
        self.link
            .run(|mut c| async move {
                let members: Vec<String> = c
                    .query(
                        redis::cmd("ZRANGEBYLEX")
                            .arg(&keys.order)
                            .arg(&min)
                            .arg(&max),
                    )
                    .await?;
                if members.is_empty() {
                    return Ok(Vec::new());
                }
                let mut names = Vec::with_capacity(members.len());
                for m in &members {
                    let mut parts = m.splitn(3, '\0');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(p), Some(_seq), Some(v)) => names.push((p, v)),
                        _ => {
                            return Err(StateError::Corrupt(format!(
                                "release index entry {m:?} is malformed"
                            )))
                        }
                    }
                }
                // Releases are never deleted and the index entry is written
                // by the same script as the release: every one is present.
                let mut hmget = redis::cmd("HMGET");
                hmget.arg(&keys.releases);
                for (p, v) in &names {
                    hmget.arg(release_field(p, v));
                }
                let values: Vec<Option<String>> = c.query(&hmget).await?;
                names
                    .iter()
                    .zip(values)
                    .map(|((p, v), json)| match json {
                        Some(json) => decode(&json, || format!("release {p} {v}")),
                        None => Err(StateError::Corrupt(format!(
                            "release {p} {v} is indexed but not stored"
                        ))),
                    })
                    .collect()
            })
            .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StateError> {
        let json = encode(entry);
        let keys = &self.keys;
        let script = &self.scripts.audit;
        self.link
            .run(|mut c| async move {
                let id = c
                    .invoke(
                        script
                            .key(&keys.audit_next_id)
                            .key(&keys.audit_log)
                            .arg(&json),
                    )
                    .await?;
                Ok(id)
            })
            .await
    }

    async fn list_audit(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StateError> {
        // Ids start at 1 and every entry's id is `<n>-0`, so "below before"
        // is "at most before - 1" (a bare ms part covers every seq part).
        let end = match before {
            Some(0) => return Ok(Vec::new()),
            Some(b) => (b - 1).to_string(),
            None => "+".to_owned(),
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = &self.keys;
        let reply: redis::streams::StreamRangeReply = self
            .link
            .run(|mut c| async move {
                c.query(
                    redis::cmd("XREVRANGE")
                        .arg(&keys.audit_log)
                        .arg(&end)
                        .arg("-")
                        .arg("COUNT")
                        .arg(limit),
                )
                .await
            })
            .await?;
        reply
            .ids
            .iter()
            .map(|item| {
                let id = item
                    .id
                    .split_once('-')
                    .and_then(|(ms, _)| ms.parse::<u64>().ok())
                    .ok_or_else(|| {
                        StateError::Corrupt(format!("audit stream id {:?} is not <n>-0", item.id))
                    })?;
                let json: String = item
                    .get("entry")
                    .ok_or_else(|| StateError::Corrupt(format!("audit entry {id} has no body")))?;
                let mut entry: AuditEntry = decode(&json, || format!("audit entry {id}"))?;
                // The stream id is authoritative.
                entry.id = id;
                Ok(entry)
            })
            .collect()
    }
}

/// Why a change feed connection ended.
enum Ended {
    /// The receiver is gone: stop for good.
    Closed,
    /// The connection failed or broke; `followed` says whether it had got as
    /// far as delivering (so the backoff starts over).
    Lost { followed: bool, reason: String },
}

/// The change feed task: subscribes, catches up, forwards announcements;
/// on any failure waits (exponential backoff with jitter) and starts over.
/// Ends only when the receiver is dropped. Never panics.
/// What the change feed needs: its own subscription connection (from the
/// link's client), the version key and the channel.
struct Feed {
    link: RedisLink,
    version: String,
    channel: String,
}

impl Feed {
    async fn catalog_version(&self) -> Result<u64, StateError> {
        let key = &self.version;
        self.link
            .run(|mut c| async move {
                let v: Option<u64> = c.query(redis::cmd("GET").arg(key)).await?;
                Ok(v.unwrap_or(0))
            })
            .await
    }
}

async fn watch(inner: Feed, tx: mpsc::Sender<u64>) {
    let mut last: Option<u64> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        let ended = tokio::select! {
            biased;
            () = tx.closed() => Ended::Closed,
            ended = follow(&inner, &tx, &mut last) => ended,
        };
        let Ended::Lost { followed, reason } = ended else {
            return;
        };
        if followed {
            backoff = BACKOFF_MIN;
        }
        tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "redis: catalog change feed lost; reconnecting");
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::select! {
            biased;
            () = tx.closed() => return,
            () = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's worth of the change feed.
async fn follow(inner: &Feed, tx: &mpsc::Sender<u64>, last: &mut Option<u64>) -> Ended {
    let lost = |followed: bool, reason: String| Ended::Lost { followed, reason };
    let deadline = inner.link.timeout();
    let pubsub = match tokio::time::timeout(deadline, async {
        let mut pubsub = inner.link.client().get_async_pubsub().await?;
        pubsub.subscribe(&inner.channel).await?;
        Ok::<_, RedisError>(pubsub)
    })
    .await
    {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return lost(false, format!("cannot subscribe: {e}")),
        Err(_) => {
            return lost(
                false,
                format!("cannot subscribe within {} ms", deadline.as_millis()),
            )
        }
    };
    // Subscribed first, then read: a change made while the feed was down
    // (or before it started) shows up here, anything later as a message.
    match inner.catalog_version().await {
        Ok(current) => {
            if *last != Some(current) {
                *last = Some(current);
                if tx.send(current).await.is_err() {
                    return Ended::Closed;
                }
            }
        }
        Err(e) => return lost(false, format!("cannot read the catalog version: {e}")),
    }

    let (mut sink, mut messages) = pubsub.split();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return lost(true, "the subscription connection closed".to_owned());
                };
                let Some(version) = std::str::from_utf8(message.get_payload_bytes())
                    .ok()
                    .and_then(|p| p.trim().parse::<u64>().ok())
                else {
                    tracing::debug!("redis: ignoring a catalog change message that is not a version");
                    continue;
                };
                // Announcements arrive in order; one below what the catch-up
                // read already saw is old news.
                if last.is_none_or(|l| version > l) {
                    *last = Some(version);
                    if tx.send(version).await.is_err() {
                        return Ended::Closed;
                    }
                }
            }
            _ = heartbeat.tick() => {
                match tokio::time::timeout(deadline, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return lost(true, format!("heartbeat failed: {e}")),
                    Err(_) => return lost(true, format!("no heartbeat answer within {} ms", deadline.as_millis())),
                }
            }
        }
    }
}

fn release_field(product: &str, version: &str) -> String {
    format!("{product}\0{version}")
}

/// Fixed width, so string order is numeric order (u64::MAX has 20 digits).
fn seq_text(seq: u64) -> String {
    format!("{seq:020}")
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    // Plain structs with string keys only: serde_json cannot fail on them.
    serde_json::to_string(value).expect("state records serialize to JSON")
}

fn decode<T: serde::de::DeserializeOwned>(
    json: &str,
    what: impl FnOnce() -> String,
) -> Result<T, StateError> {
    serde_json::from_str(json).map_err(|e| StateError::Corrupt(format!("{}: {e}", what())))
}

fn unexpected_reply(script: &str, reply: &[String]) -> StateError {
    StateError::Corrupt(format!("the {script} script answered {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_text_orders_numerically() {
        assert_eq!(seq_text(7), "00000000000000000007");
        assert_eq!(seq_text(u64::MAX).len(), 20);
        assert!(seq_text(999) < seq_text(1_000));
        assert!(seq_text(u64::MAX - 1) < seq_text(u64::MAX));
    }
}
