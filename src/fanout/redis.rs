//! The Redis push store: subscriptions, jobs and the batch queue shared by
//! every firmcast instance. The queue is a Redis Stream read through one
//! consumer group, so the workers of all instances share the batches and a
//! crashed worker's batch is taken over (`XAUTOCLAIM`) after `stale`.
//!
//! # Key layout
//!
//! Every key starts with the configured prefix `P` (`state.redis_prefix`,
//! shared with the state store, whose keys never collide with these).
//! `<member>` is a member key `provider:token` ([`member_key`]).
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:push:sub:<member>` | hash | one subscription: `locale`, `last_seen` (RFC 3339, ns), `p:<product>` = `1` per product, `i:<product>` = `1` per product index that may hold the member (written before the index entry, dropped after it) |
//! | `P:push:product:<product>` | sorted set, all scores 0 | member keys of the product's subscribers; byte order, so `ZRANGEBYLEX` pages and cuts ranges and `ZCARD` counts |
//! | `P:push:seen` | sorted set | member key -> `last_seen` in ms since the epoch, so `sweep_idle` is a `ZRANGEBYSCORE` |
//! | `P:push:lock:<member>` | string, expires | the writer lease of one member (see below); a random nonce |
//! | `P:{fanout}:queue` | stream, consumer group `workers` | one entry per batch, field `batch` = `Batch` JSON; a claimed entry sits in the group's pending list until `complete` acknowledges and deletes it |
//! | `P:{fanout}:jobs` | sorted set | job ids by `created_at` in ms since the epoch, written with the job by `put_job`: what `list_jobs` reads (jobs put before it existed are not listed) |
//! | `P:{fanout}:job:<id>` | hash | one job: `id`, `product`, `version`, `dry_run` (`0`/`1`), `state` (`planning`, `running`, `done`, `cancelled`, `failed`), `reason` (failed only), `created_at` (RFC 3339, ns), `created_by`, and the counters `total`, `sent`, `failed`, `removed`, `retried`, `batches_total`, `batches_done` as decimal integers (`HINCRBY`), `finished_at` once final, `f:<provider>:<code>` = failed sends with that code (`HINCRBY`), `e:<provider>` = the provider's last error in words, `c:<provider>` = `1` once its first answers passed the mix-up check |
//!
//! A subscription hash only counts as a subscription once it has
//! `last_seen`: a hash holding only `i:` fields is the trace of an upsert
//! that crashed half way, and reads as absent.
//!
//! # Redis Cluster
//!
//! Subscriptions are not pinned to one slot: millions of tokens spread over
//! every node, one key each. A product index must be one key (it is paged
//! and cut with `ZRANGEBYLEX`), so it lives in one slot; so does `seen`.
//! The queue and the jobs share the `{fanout}` hash tag because `complete`
//! acknowledges the batch and counts it in one Lua script. Every other Lua
//! script touches a single key.
//!
//! # Consistency without cross-slot transactions
//!
//! A subscription, its index entries and its `seen` entry live in different
//! slots, so an upsert or a removal is a sequence of steps, each sent after
//! the previous one answered, ordered so that a crash (or a timeout)
//! anywhere leaves at worst an index entry whose subscription is absent or
//! no longer lists the product. `subscribers_in` skips such entries, so
//! nobody is notified for a product they left; only `count_subscribers` (a
//! plain `ZCARD`) may count them. Every index entry is recorded in its
//! subscription's `i:` fields *before* it is written and forgotten only
//! *after* it is gone, and the hash is deleted last, so a retried removal,
//! or the sweep (which finds the member in `seen`, written first), always
//! finds every index that may still hold the token.
//!
//! - upsert: `ZADD seen`; `HSET i:<product>` for each product; `ZADD` each
//!   product index; a commit script (products, locale, last_seen; answers
//!   which recorded indexes are no longer wanted); `ZREM` those; `HDEL` their
//!   `i:` fields.
//! - remove (and the sweep, per chunk): read the hash; `ZREM` from every
//!   `i:`/`p:` index; `DEL` the hash; `ZREM seen`.
//!
//! Writers of one member take turns: each holds the member's lease
//! (`SET lock NX PX`, twice the store timeout, released by compare-and-
//! delete) for its steps, so racing registrations and removals of one token
//! (from any instance) never interleave. A writer that dies keeps the lease
//! until it expires; meanwhile other writers of that token wait, and answer
//! `Unavailable` if it outlasts their timeout. Readers never wait.
//!
//! # Failures
//!
//! Operations run through the shared link ([`RedisLink::run`]): bounded by
//! `state.redis_timeout_ms`, mapped to
//! `PushError::Unavailable { backend: "redis", .. }`, and reconnecting
//! after a broken or silent connection. `sweep_idle` is bounded per chunk.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use redis::Script;

use super::store::{
    member_key, parse_member, Batch, Claimed, Failures, Job, JobCounters, JobDelta, JobState,
    ProviderKind, PushError, PushStore, Subscription,
};
use crate::storage::redis::{Conn, RedisLink};

/// The consumer group every instance's workers read the queue through.
const GROUP: &str = "workers";
/// Index entries read per round trip by `subscribers_in`.
const RANGE_CHUNK: usize = 500;
/// Idle members removed per round of `sweep_idle` (each round is one
/// operation under the timeout).
const SWEEP_CHUNK: usize = 256;

/// Writes the subscription once its index entries exist, and answers the
/// recorded indexes (`i:`) no longer wanted, whose entries are to be removed.
///
/// KEYS: subscription. ARGV: locale, last_seen, products...
const COMMIT_LUA: &str = r"
local key = KEYS[1]
local want, stale = {}, {}
for i = 3, #ARGV do
  want[ARGV[i]] = true
end
for _, f in ipairs(redis.call('HKEYS', key)) do
  local kind, name = string.sub(f, 1, 2), string.sub(f, 3)
  if not want[name] then
    if kind == 'p:' then
      redis.call('HDEL', key, f)
    elseif kind == 'i:' then
      table.insert(stale, name)
    end
  end
end
for i = 3, #ARGV do
  redis.call('HSET', key, 'p:' .. ARGV[i], '1')
end
redis.call('HSET', key, 'locale', ARGV[1], 'last_seen', ARGV[2])
return stale
";

/// Releases a writer lease if it is still ours.
///
/// KEYS: lock. ARGV: nonce.
const UNLOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Sets a job's state unless it is final. Answers the job as stored, or nil
/// when there is no such job.
///
/// KEYS: job. ARGV: state, reason (for `failed`), now (RFC 3339).
const SET_STATE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local cur = redis.call('HGET', KEYS[1], 'state')
if cur ~= 'done' and cur ~= 'cancelled' and cur ~= 'failed' then
  redis.call('HSET', KEYS[1], 'state', ARGV[1])
  if ARGV[1] == 'done' or ARGV[1] == 'cancelled' or ARGV[1] == 'failed' then
    redis.call('HSET', KEYS[1], 'finished_at', ARGV[3])
  end
  if ARGV[1] == 'failed' then
    redis.call('HSET', KEYS[1], 'reason', ARGV[2])
  else
    redis.call('HDEL', KEYS[1], 'reason')
  end
end
return redis.call('HGETALL', KEYS[1])
";

/// The next batch for a consumer: one pending longer than `min idle` under
/// another (crashed) consumer, else a new one. Creates the group (and the
/// stream) when missing, from the stream's start so nothing queued before
/// is skipped. Answers `{entry id, batch JSON}` or nil.
///
/// KEYS: queue. ARGV: group, consumer, min idle ms.
const CLAIM_LUA: &str = r"
local q, g = KEYS[1], ARGV[1]
local exists = false
if redis.call('EXISTS', q) == 1 then
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', q)) do
    if info[2] == g then
      exists = true
    end
  end
end
if not exists then
  redis.call('XGROUP', 'CREATE', q, g, '0', 'MKSTREAM')
end
local cursor = '0-0'
repeat
  local r = redis.call('XAUTOCLAIM', q, g, ARGV[2], ARGV[3], cursor, 'COUNT', 1)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e and e[2] then
      return {e[1], e[2][2]}
    end
  end
until cursor == '0-0'
local r = redis.call('XREADGROUP', 'GROUP', g, ARGV[2], 'COUNT', 1, 'STREAMS', q, '>')
if r then
  local e = r[1][2][1]
  if e then
    return {e[1], e[2][2]}
  end
end
return false
";

/// Acknowledges a batch and counts it, exactly once: only the call whose
/// XACK removed the entry from the pending list adds the counters. Answers
/// the job afterwards, or nil when nothing was counted.
///
/// KEYS: queue, job. ARGV: group, entry id, sent, failed, removed,
/// retried, n, then n (field, increment) pairs, then (field, value) pairs
/// to set (failure codes and last errors, see the key layout).
const COMPLETE_LUA: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) ~= 1 then
  return false
end
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then
  return false
end
redis.call('HINCRBY', KEYS[2], 'sent', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'failed', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'removed', ARGV[5])
redis.call('HINCRBY', KEYS[2], 'retried', ARGV[6])
redis.call('HINCRBY', KEYS[2], 'batches_done', 1)
local n = tonumber(ARGV[7])
local i = 8
for _ = 1, n do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
return redis.call('HGETALL', KEYS[2])
";

/// Resets the idle time of a pending entry if `consumer` still owns it.
/// Answers 1, or 0 when the entry is gone or owned by another consumer.
///
/// KEYS: queue. ARGV: group, consumer, entry id.
const RENEW_LUA: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p[1] == nil or p[1][2] ~= ARGV[2] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
";

struct Keys {
    prefix: String,
    seen: String,
    queue: String,
    jobs: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            seen: format!("{prefix}:push:seen"),
            queue: format!("{prefix}:{{fanout}}:queue"),
            jobs: format!("{prefix}:{{fanout}}:jobs"),
        }
    }

    fn sub(&self, member: &str) -> String {
        format!("{}:push:sub:{member}", self.prefix)
    }

    fn product(&self, product: &str) -> String {
        format!("{}:push:product:{product}", self.prefix)
    }

    fn lock(&self, member: &str) -> String {
        format!("{}:push:lock:{member}", self.prefix)
    }

    fn job(&self, id: &str) -> String {
        format!("{}:{{fanout}}:job:{id}", self.prefix)
    }
}

struct Scripts {
    commit: Script,
    set_state: Script,
    claim: Script,
    complete: Script,
    renew: Script,
}

/// See the module docs for the key layout, the write order and failures.
pub struct RedisPushStore {
    /// The shared connection (deadline, reconnects).
    link: RedisLink,
    keys: Keys,
    scripts: Scripts,
    /// How long a writer lease lasts: past the deadline of the operation
    /// holding it, so it only expires under a writer that died.
    lease: Duration,
}

type Fields = HashMap<String, String>;

/// What removing one member came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Removal {
    /// Gone from every key; `existed`: it was a (committed) subscription.
    Removed { existed: bool },
    /// Not idle after all, or busy with another writer (sweep only);
    /// `in_range`: its `seen` score may still be at or below the bound.
    Kept { in_range: bool },
}

impl RedisPushStore {
    /// Connects and proves Redis answers within `timeout`, like
    /// [`RedisLink::connect`]; `timeout` bounds every later operation.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, PushError> {
        Ok(Self::new(RedisLink::connect(url, prefix, timeout).await?))
    }

    /// Like [`connect`](Self::connect) without the start-up round trip.
    pub fn connect_lazy(url: &str, prefix: &str, timeout: Duration) -> Result<Self, PushError> {
        Ok(Self::new(RedisLink::connect_lazy(url, prefix, timeout)?))
    }

    /// The store on a shared link; its keys start with the link's prefix.
    pub fn new(link: RedisLink) -> Self {
        Self {
            lease: link.timeout() * 2,
            keys: Keys::new(link.prefix()),
            link,
            scripts: Scripts {
                commit: Script::new(COMMIT_LUA),
                set_state: Script::new(SET_STATE_LUA),
                claim: Script::new(CLAIM_LUA),
                complete: Script::new(COMPLETE_LUA),
                renew: Script::new(RENEW_LUA),
            },
        }
    }

    async fn index_add(
        &self,
        c: &mut Conn<'_>,
        member: &str,
        products: &[String],
    ) -> Result<(), PushError> {
        if products.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for p in products {
            pipe.cmd("ZADD")
                .arg(self.keys.product(p))
                .arg(0)
                .arg(member)
                .ignore();
        }
        Ok(c.pipe(&pipe).await?)
    }

    /// Takes the writer lease of each member it can (at once, no waiting);
    /// answers which it got.
    async fn try_lock(
        &self,
        c: &mut Conn<'_>,
        members: &[String],
        nonce: &str,
    ) -> Result<Vec<bool>, PushError> {
        let mut pipe = redis::pipe();
        for m in members {
            pipe.cmd("SET")
                .arg(self.keys.lock(m))
                .arg(nonce)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms(self.lease));
        }
        let replies: Vec<Option<String>> = c.pipe(&pipe).await?;
        Ok(replies.into_iter().map(|r| r.is_some()).collect())
    }

    /// Takes one member's writer lease, waiting while another writer holds
    /// it (bounded by the operation's deadline).
    async fn lock(&self, c: &mut Conn<'_>, member: &str, nonce: &str) -> Result<(), PushError> {
        let member = [member.to_owned()];
        let mut pause = Duration::from_millis(2);
        while !self.try_lock(c, &member, nonce).await?[0] {
            tokio::time::sleep(pause.mul_f64(rand::random::<f64>() + 0.5)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        Ok(())
    }

    fn unlock(&self, pipe: &mut redis::Pipeline, member: &str, nonce: &str) {
        pipe.cmd("EVAL")
            .arg(UNLOCK_LUA)
            .arg(1)
            .arg(self.keys.lock(member))
            .arg(nonce)
            .ignore();
    }

    /// Runs `steps` holding `member`'s writer lease, and releases it after,
    /// also when a step failed (a lease left behind expires by itself).
    async fn locked<T>(
        &self,
        c: &mut Conn<'_>,
        member: &str,
        steps: impl AsyncFnOnce(&mut Conn<'_>) -> Result<T, PushError>,
    ) -> Result<T, PushError> {
        let nonce = new_nonce();
        self.lock(c, member, &nonce).await?;
        let result = steps(c).await;
        let mut release = redis::pipe();
        self.unlock(&mut release, member, &nonce);
        let released = send(c, &release).await;
        let value = result?;
        released?;
        Ok(value)
    }

    /// Removes `members` from every key (see the module docs for the
    /// order). With `idle_before` (the sweep), only those not seen since,
    /// and members busy with another writer are left for the next sweep;
    /// without it, waits for each member's lease.
    async fn remove_members(
        &self,
        c: &mut Conn<'_>,
        members: &[String],
        idle_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<Removal>, PushError> {
        let keys = &self.keys;
        let nonce = new_nonce();
        let locked = match (idle_before, members) {
            (None, [member]) => {
                self.lock(c, member, &nonce).await?;
                vec![true]
            }
            _ => self.try_lock(c, members, &nonce).await?,
        };
        let mut out = vec![Removal::Kept { in_range: true }; members.len()];
        let mine: Vec<usize> = (0..members.len()).filter(|&i| locked[i]).collect();
        let outcome = async {
            let mut read = redis::pipe();
            for &i in &mine {
                read.cmd("HGETALL").arg(keys.sub(&members[i]));
            }
            let hashes: Vec<Fields> = if mine.is_empty() {
                Vec::new()
            } else {
                c.pipe(&read).await?
            };
            let (mut zrem, mut del, mut seen) = (redis::pipe(), redis::pipe(), redis::pipe());
            for (&i, fields) in mine.iter().zip(&hashes) {
                let member = &members[i];
                let last_seen = match fields.get("last_seen") {
                    Some(t) => Some(parse_time(t, || format!("last_seen of {member}"))?),
                    None => None,
                };
                if let (Some(before), Some(last_seen)) = (idle_before, last_seen) {
                    if last_seen >= before {
                        // Not idle: make its score right (GT: only ever up).
                        let ms = last_seen.timestamp_millis();
                        seen.cmd("ZADD")
                            .arg(&keys.seen)
                            .arg("GT")
                            .arg(ms)
                            .arg(member)
                            .ignore();
                        out[i] = Removal::Kept {
                            in_range: ms <= before.timestamp_millis(),
                        };
                        continue;
                    }
                }
                let mut indexes: BTreeSet<String> = listed(fields, "i:").into_iter().collect();
                indexes.extend(listed(fields, "p:"));
                for p in &indexes {
                    zrem.cmd("ZREM").arg(keys.product(p)).arg(member).ignore();
                }
                if !fields.is_empty() {
                    del.cmd("DEL").arg(keys.sub(member)).ignore();
                }
                seen.cmd("ZREM").arg(&keys.seen).arg(member).ignore();
                out[i] = Removal::Removed {
                    existed: last_seen.is_some(),
                };
            }
            // Indexes first, the hash after, `seen` last.
            send(c, &zrem).await?;
            send(c, &del).await?;
            send(c, &seen).await
        }
        .await;
        let mut release = redis::pipe();
        for &i in &mine {
            self.unlock(&mut release, &members[i], &nonce);
        }
        let released = send(c, &release).await;
        outcome?;
        released?;
        Ok(out)
    }
}

fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Sends a pipeline whose replies are all ignored; nothing when empty.
async fn send(c: &mut Conn<'_>, pipe: &redis::Pipeline) -> Result<(), PushError> {
    if pipe.cmd_iter().next().is_none() {
        return Ok(());
    }
    Ok(c.pipe(pipe).await?)
}

/// The names of the fields starting with `kind` (`p:` or `i:`), sorted.
fn listed(fields: &Fields, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = fields
        .keys()
        .filter_map(|f| f.strip_prefix(kind))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_time(s: &str, what: impl FnOnce() -> String) -> Result<DateTime<Utc>, PushError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| PushError::Corrupt(format!("{} is not a time ({s:?}): {e}", what())))
}

/// A subscription from its hash; `None` unless committed (has `last_seen`).
fn decode_sub(member: &str, fields: &Fields) -> Result<Option<Subscription>, PushError> {
    let Some(last_seen) = fields.get("last_seen") else {
        return Ok(None);
    };
    let (provider, token) = parse_member(member)
        .ok_or_else(|| PushError::Corrupt(format!("push member key {member:?} is malformed")))?;
    let locale = fields
        .get("locale")
        .ok_or_else(|| PushError::Corrupt(format!("subscription {member} has no locale")))?;
    Ok(Some(Subscription {
        provider,
        token: token.to_owned(),
        products: listed(fields, "p:"),
        locale: locale.clone(),
        last_seen: parse_time(last_seen, || format!("last_seen of {member}"))?,
    }))
}

fn job_fields(job: &Job) -> Vec<(&'static str, String)> {
    let c = &job.counters;
    let mut fields = vec![
        ("id", job.id.clone()),
        ("product", job.product.clone()),
        ("version", job.version.clone()),
        ("dry_run", if job.dry_run { "1" } else { "0" }.to_owned()),
        ("state", job.state.as_str().to_owned()),
        ("created_at", time_text(job.created_at)),
        ("created_by", job.created_by.clone()),
        ("total", c.total.to_string()),
        ("sent", c.sent.to_string()),
        ("failed", c.failed.to_string()),
        ("removed", c.removed.to_string()),
        ("retried", c.retried.to_string()),
        ("batches_total", job.batches_total.to_string()),
        ("batches_done", job.batches_done.to_string()),
    ];
    if let Some(reason) = job.state.reason() {
        fields.push(("reason", reason.to_owned()));
    }
    if let Some(at) = job.finished_at {
        fields.push(("finished_at", time_text(at)));
    }
    fields
}

/// A hash field and its value.
type Field = (String, String);

/// The failure fields of a job: `f:<provider>:<code>` counts,
/// `e:<provider>` last errors, `c:<provider>` checked providers.
fn failure_fields(failures: &Failures, checked: &[ProviderKind]) -> (Vec<Field>, Vec<Field>) {
    let counts = failures
        .by_code
        .iter()
        .flat_map(|(p, codes)| {
            codes
                .iter()
                .map(move |(code, n)| (format!("f:{}:{code}", p.as_str()), n.to_string()))
        })
        .collect();
    let mut set: Vec<(String, String)> = failures
        .last_error
        .iter()
        .map(|(p, words)| (format!("e:{}", p.as_str()), words.clone()))
        .collect();
    set.extend(
        checked
            .iter()
            .map(|p| (format!("c:{}", p.as_str()), "1".to_owned())),
    );
    (counts, set)
}

fn decode_failures(id: &str, fields: &Fields) -> Result<(Failures, Vec<ProviderKind>), PushError> {
    let mut failures = Failures::default();
    let mut checked = vec![];
    for (name, value) in fields {
        let Some((kind, rest)) = name.split_once(':') else {
            continue;
        };
        let bad = || PushError::Corrupt(format!("job {id}: field {name:?} = {value:?}"));
        match kind {
            "f" => {
                let (p, code) = rest.split_once(':').ok_or_else(bad)?;
                let p = ProviderKind::parse(p).ok_or_else(bad)?;
                let n = value.parse::<u64>().map_err(|_| bad())?;
                failures.count(p, code, "", n);
            }
            "e" => {
                let p = ProviderKind::parse(rest).ok_or_else(bad)?;
                failures.last_error.insert(p, value.clone());
            }
            "c" => checked.push(ProviderKind::parse(rest).ok_or_else(bad)?),
            _ => {}
        }
    }
    checked.sort();
    Ok((failures, checked))
}

fn decode_job(id: &str, fields: &Fields) -> Result<Job, PushError> {
    let text = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| PushError::Corrupt(format!("job {id} has no {name}")))
    };
    let number = |name: &str| {
        let t = text(name)?;
        t.parse::<u64>()
            .map_err(|_| PushError::Corrupt(format!("job {id}: {name} {t:?} is not a count")))
    };
    let name = text("state")?;
    let state = JobState::from_parts(&name, fields.get("reason").cloned())
        .ok_or_else(|| PushError::Corrupt(format!("job {id}: unknown state {name:?}")))?;
    let (failures, checked) = decode_failures(id, fields)?;
    Ok(Job {
        id: text("id")?,
        product: text("product")?,
        version: text("version")?,
        dry_run: text("dry_run")? == "1",
        state,
        created_at: parse_time(&text("created_at")?, || format!("created_at of job {id}"))?,
        created_by: text("created_by")?,
        counters: JobCounters {
            total: number("total")?,
            sent: number("sent")?,
            failed: number("failed")?,
            removed: number("removed")?,
            retried: number("retried")?,
        },
        batches_total: number("batches_total")?,
        batches_done: number("batches_done")?,
        finished_at: fields
            .get("finished_at")
            .map(|t| parse_time(t, || format!("finished_at of job {id}")))
            .transpose()?,
        failures,
        checked,
    })
}

fn encode_batch(batch: &Batch) -> String {
    serde_json::to_string(batch).expect("batches serialize to JSON")
}

#[async_trait]
impl PushStore for RedisPushStore {
    async fn upsert_subscription(&self, sub: &Subscription) -> Result<(), PushError> {
        let member = member_key(sub.provider, &sub.token);
        let key = self.keys.sub(&member);
        let products: Vec<String> = sub
            .products
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let seen_ms = sub.last_seen.timestamp_millis();
        let last_seen = time_text(sub.last_seen);
        let (keys, scripts) = (&self.keys, &self.scripts);
        self.link
            .run(|mut c| async move {
                self.locked(&mut c, &member, async |c: &mut Conn<'_>| {
                    // Sweepable before anything else exists.
                    c.query::<()>(redis::cmd("ZADD").arg(&keys.seen).arg(seen_ms).arg(&member))
                        .await?;
                    if !products.is_empty() {
                        let mut intent = redis::cmd("HSET");
                        intent.arg(&key);
                        for p in &products {
                            intent.arg(format!("i:{p}")).arg(1);
                        }
                        c.query::<()>(&intent).await?;
                    }
                    self.index_add(c, &member, &products).await?;
                    let stale: Vec<String> = c
                        .invoke(
                            scripts
                                .commit
                                .key(&key)
                                .arg(&sub.locale)
                                .arg(&last_seen)
                                .arg(&products),
                        )
                        .await?;
                    if stale.is_empty() {
                        return Ok(());
                    }
                    let mut zrem = redis::pipe();
                    for p in &stale {
                        zrem.cmd("ZREM").arg(keys.product(p)).arg(&member).ignore();
                    }
                    send(c, &zrem).await?;
                    let mut forget = redis::cmd("HDEL");
                    forget.arg(&key);
                    for p in &stale {
                        forget.arg(format!("i:{p}"));
                    }
                    Ok(c.query::<()>(&forget).await?)
                })
                .await
            })
            .await
    }

    async fn remove_subscription(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Result<bool, PushError> {
        let members = [member_key(provider, token)];
        let outcome = self
            .link
            .run(|mut c| async move { self.remove_members(&mut c, &members, None).await })
            .await?;
        Ok(matches!(
            outcome.first(),
            Some(Removal::Removed { existed: true })
        ))
    }

    async fn get_subscription(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Result<Option<Subscription>, PushError> {
        let member = member_key(provider, token);
        let key = self.keys.sub(&member);
        let fields: Fields = self
            .link
            .run(|mut c| async move { c.query(redis::cmd("HGETALL").arg(&key)).await })
            .await?;
        decode_sub(&member, &fields)
    }

    async fn subscriber_page(
        &self,
        product: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, PushError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.keys.product(product);
        let min = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        self.link
            .run(|mut c| async move {
                let page = c
                    .query(
                        redis::cmd("ZRANGEBYLEX")
                            .arg(&key)
                            .arg(&min)
                            .arg("+")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(limit),
                    )
                    .await?;
                Ok(page)
            })
            .await
    }

    async fn subscribers_in(
        &self,
        product: &str,
        first: &str,
        last: &str,
    ) -> Result<Vec<Subscription>, PushError> {
        let key = self.keys.product(product);
        let listed_as = format!("p:{product}");
        let keys = &self.keys;
        self.link
            .run(|mut c| async move {
                let mut out = Vec::new();
                let mut min = format!("[{first}");
                let max = format!("[{last}");
                loop {
                    let members: Vec<String> = c
                        .query(
                            redis::cmd("ZRANGEBYLEX")
                                .arg(&key)
                                .arg(&min)
                                .arg(&max)
                                .arg("LIMIT")
                                .arg(0)
                                .arg(RANGE_CHUNK),
                        )
                        .await?;
                    let Some(tail) = members.last() else { break };
                    let mut read = redis::pipe();
                    for m in &members {
                        read.cmd("HGETALL").arg(keys.sub(m));
                    }
                    let hashes: Vec<Fields> = c.pipe(&read).await?;
                    for (m, fields) in members.iter().zip(&hashes) {
                        // An entry left by a crashed upsert, or one whose
                        // subscription left the product meanwhile: skipped.
                        if !fields.contains_key(&listed_as) {
                            continue;
                        }
                        if let Some(sub) = decode_sub(m, fields)? {
                            out.push(sub);
                        }
                    }
                    if members.len() < RANGE_CHUNK {
                        break;
                    }
                    min = format!("({tail}");
                }
                Ok(out)
            })
            .await
    }

    async fn count_subscribers(&self, product: &str) -> Result<u64, PushError> {
        let key = self.keys.product(product);
        self.link
            .run(|mut c| async move { Ok(c.query(redis::cmd("ZCARD").arg(&key)).await?) })
            .await
    }

    async fn sweep_idle(&self, before: DateTime<Utc>) -> Result<u64, PushError> {
        // Everything last seen before `before` has a score at or below its
        // millisecond; the hash's exact time decides.
        let bound = before.timestamp_millis();
        let seen = &self.keys.seen;
        let mut removed = 0u64;
        // Members in range that are kept (not idle but in the same
        // millisecond as `before`, or busy with a writer): page past them.
        let mut skip = 0usize;
        loop {
            let chunk: Vec<String> = self
                .link
                .run(|mut c| async move {
                    c.query(
                        redis::cmd("ZRANGEBYSCORE")
                            .arg(seen)
                            .arg("-inf")
                            .arg(bound)
                            .arg("LIMIT")
                            .arg(skip)
                            .arg(SWEEP_CHUNK),
                    )
                    .await
                })
                .await?;
            if chunk.is_empty() {
                return Ok(removed);
            }
            let chunk = &chunk;
            let outcomes = self
                .link
                .run(|mut c| async move { self.remove_members(&mut c, chunk, Some(before)).await })
                .await?;
            for o in outcomes {
                match o {
                    Removal::Removed { existed: true } => removed += 1,
                    Removal::Removed { existed: false } | Removal::Kept { in_range: false } => {}
                    Removal::Kept { in_range: true } => skip += 1,
                }
            }
        }
    }

    async fn put_job(&self, job: &Job) -> Result<(), PushError> {
        let key = self.keys.job(&job.id);
        let fields = job_fields(job);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("HSET")
            .arg(&key)
            .arg(&fields)
            .ignore()
            .cmd("ZADD")
            .arg(&self.keys.jobs)
            .arg(job.created_at.timestamp_millis())
            .arg(&job.id)
            .ignore();
        let (counts, set) = failure_fields(&job.failures, &job.checked);
        if !counts.is_empty() || !set.is_empty() {
            pipe.cmd("HSET").arg(&key).arg(&counts).arg(&set).ignore();
        }
        self.link
            .run(|mut c| async move { Ok(c.pipe::<()>(&pipe).await?) })
            .await
    }

    async fn list_jobs(&self, limit: usize) -> Result<Vec<Job>, PushError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let index = &self.keys.jobs;
        let ids: Vec<String> = self
            .link
            .run(|mut c| async move {
                c.query(redis::cmd("ZREVRANGE").arg(index).arg(0).arg(limit - 1))
                    .await
            })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.keys.job(id));
        }
        let all: Vec<Fields> = self
            .link
            .run(|mut c| async move { c.pipe(&pipe).await })
            .await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, fields) in ids.iter().zip(all) {
            // Listed but gone: nothing to show.
            if !fields.is_empty() {
                jobs.push(decode_job(id, &fields)?);
            }
        }
        Ok(jobs)
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, PushError> {
        let key = self.keys.job(id);
        let fields: Fields = self
            .link
            .run(|mut c| async move { c.query(redis::cmd("HGETALL").arg(&key)).await })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode_job(id, &fields).map(Some)
    }

    async fn set_job_state(&self, id: &str, state: JobState) -> Result<Job, PushError> {
        let key = self.keys.job(id);
        let (tag, reason) = (state.as_str(), state.reason().unwrap_or(""));
        let script = &self.scripts.set_state;
        let fields: Option<Fields> = self
            .link
            .run(|mut c| async move {
                let now = time_text(chrono::Utc::now());
                c.invoke(script.key(&key).arg(tag).arg(reason).arg(now))
                    .await
            })
            .await?;
        match fields {
            Some(fields) if !fields.is_empty() => decode_job(id, &fields),
            _ => Err(PushError::UnknownJob { id: id.into() }),
        }
    }

    async fn enqueue_all(&self, batches: &[Batch]) -> Result<(), PushError> {
        if batches.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for batch in batches {
            pipe.cmd("XADD")
                .arg(&self.keys.queue)
                .arg("*")
                .arg("batch")
                .arg(encode_batch(batch))
                .ignore();
        }
        let pipe = &pipe;
        self.link
            .run(|mut c| async move { Ok(c.pipe(pipe).await?) })
            .await
    }

    async fn claim(&self, consumer: &str, stale: Duration) -> Result<Option<Claimed>, PushError> {
        let queue = &self.keys.queue;
        let script = &self.scripts.claim;
        let min_idle = u64::try_from(stale.as_millis()).unwrap_or(u64::MAX);
        let entry: Option<(String, String)> = self
            .link
            .run(|mut c| async move {
                c.invoke(script.key(queue).arg(GROUP).arg(consumer).arg(min_idle))
                    .await
            })
            .await?;
        let Some((delivery, json)) = entry else {
            return Ok(None);
        };
        let batch: Batch = serde_json::from_str(&json).map_err(|e| {
            PushError::Corrupt(format!("queued batch {delivery} is not a batch: {e}"))
        })?;
        Ok(Some(Claimed { delivery, batch }))
    }

    async fn complete(
        &self,
        claimed: &Claimed,
        delta: &JobDelta,
    ) -> Result<Option<Job>, PushError> {
        let job_id = &claimed.batch.job_id;
        let job_key = self.keys.job(job_id);
        let queue = &self.keys.queue;
        let script = &self.scripts.complete;
        let c = &delta.counters;
        let (counts, set) = failure_fields(&delta.failures, &delta.checked);
        let (counts, set) = (&counts, &set);
        let fields: Option<Fields> = self
            .link
            .run(|mut conn| async move {
                let mut call = script.key(queue);
                call.key(&job_key)
                    .arg(GROUP)
                    .arg(&claimed.delivery)
                    .arg(c.sent)
                    .arg(c.failed)
                    .arg(c.removed)
                    .arg(c.retried)
                    .arg(counts.len());
                for (field, value) in counts.iter().chain(set) {
                    call.arg(field).arg(value);
                }
                conn.invoke(&call).await
            })
            .await?;
        match fields {
            Some(fields) if !fields.is_empty() => decode_job(job_id, &fields).map(Some),
            _ => Ok(None),
        }
    }

    async fn renew(&self, claimed: &Claimed, consumer: &str) -> Result<bool, PushError> {
        let queue = &self.keys.queue;
        let script = &self.scripts.renew;
        let owned: i64 = self
            .link
            .run(|mut c| async move {
                c.invoke(
                    script
                        .key(queue)
                        .arg(GROUP)
                        .arg(consumer)
                        .arg(&claimed.delivery),
                )
                .await
            })
            .await?;
        Ok(owned == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The states the set-state script treats as final.
    const FINAL_STATES: [&str; 3] = ["done", "cancelled", "failed"];

    #[test]
    fn final_states_agree_with_the_trait() {
        for state in [
            JobState::Planning,
            JobState::Running,
            JobState::Done,
            JobState::Cancelled,
            JobState::Failed("x".into()),
        ] {
            let tag = state.as_str();
            assert_eq!(FINAL_STATES.contains(&tag), state.is_final(), "{tag}");
            assert!(
                !state.is_final() || SET_STATE_LUA.contains(&format!("'{tag}'")),
                "the set-state script must treat {tag} as final"
            );
        }
    }

    #[test]
    fn keys_follow_the_layout() {
        let k = Keys::new("P");
        assert_eq!(k.sub("fcm:abc"), "P:push:sub:fcm:abc");
        assert_eq!(k.product("WH-1000XM5"), "P:push:product:WH-1000XM5");
        assert_eq!(k.seen, "P:push:seen");
        // complete touches both atomically: one hash tag, one slot.
        assert_eq!(k.queue, "P:{fanout}:queue");
        assert_eq!(k.job("j1"), "P:{fanout}:job:j1");
    }
}
