//! The Redis stats store. Every key carries the `{stats}` hash tag, so one
//! Lua script adds a whole flush atomically (Redis Cluster runs a script on
//! one slot) together with its id, which makes a retried flush count once.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{stats}:adoption:<product>:<day>` | hash | `channel \0 version \0 a` (active) and `... \0 n` (new) -> count |
//! | `P:{stats}:reports:<product>:<day>` | hash | `to \0 from \0 outcome \0 stage \0 code` -> count |
//! | `P:{stats}:window:<product> \0 <version> \0 <window>` | hash | `installed`, `failed`, `stage:<s>`, `code:<c>` -> count |
//! | `P:{stats}:flush:<id>` | string, expires after a day | marks a flush as added |
//!
//! Day keys expire [`super::RETENTION_DAYS`] after their last write.

use super::{
    window_fields, window_from_fields, Adoption, DayAdoption, Flush, StatsError, StatsStore,
    WindowKey, WindowReports,
};
use crate::storage::RedisLink;
use async_trait::async_trait;
use redis::Script;
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;

/// Operations per script call: a large flush goes in parts, each with its
/// own id (`<flush id>.<part>`), so each part counts once.
const PART: usize = 2000;

/// Adds increments once per flush id.
///
/// KEYS: the flush marker, then the hashes. ARGV: ttl seconds, then
/// (key index, field, increment) triples.
const ADD_LUA: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', 86400) then
  return 0
end
local ttl = ARGV[1]
for i = 2, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
for k = 2, #KEYS do
  redis.call('EXPIRE', KEYS[k], ttl)
end
return 1
";

pub struct RedisStatsStore {
    link: RedisLink,
    add: Script,
}

impl RedisStatsStore {
    pub fn new(link: RedisLink) -> Self {
        RedisStatsStore {
            link,
            add: Script::new(ADD_LUA),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{{stats}}:{rest}", self.link.prefix())
    }
}

/// The operations of a flush: (hash key, field, increment).
fn operations(store: &RedisStatsStore, flush: &Flush) -> Vec<(String, String, u64)> {
    let mut ops = Vec::new();
    for a in &flush.adoption {
        let key = store.key(&format!("adoption:{}:{}", a.product, a.day));
        let field = format!("{}\0{}\0", a.channel, a.version);
        if a.active > 0 {
            ops.push((key.clone(), format!("{field}a"), a.active));
        }
        if a.new > 0 {
            ops.push((key, format!("{field}n"), a.new));
        }
    }
    for r in &flush.reports {
        let key = store.key(&format!("reports:{}:{}", r.product, r.day));
        let field = format!(
            "{}\0{}\0{}\0{}\0{}",
            r.to,
            r.from,
            r.outcome.as_str(),
            r.stage.map_or("", |s| s.as_str()),
            r.code.as_deref().unwrap_or("")
        );
        ops.push((key, field, r.count));
        let window = store.key(&format!("window:{}\0{}\0{}", r.product, r.to, r.window));
        for field in window_fields(r) {
            ops.push((window.clone(), field, r.count));
        }
    }
    ops
}

#[async_trait]
impl StatsStore for RedisStatsStore {
    async fn add(&self, flush: &Flush) -> Result<(), StatsError> {
        let ops = operations(self, flush);
        let ttl = u64::from(super::RETENTION_DAYS) * 86_400;
        for (part, ops) in ops.chunks(PART).enumerate() {
            let mut keys: Vec<String> = vec![self.key(&format!("flush:{}.{part}", flush.id))];
            let mut index: HashMap<&str, usize> = HashMap::new();
            let mut invocation = self.add.prepare_invoke();
            invocation.arg(ttl);
            for (key, field, n) in ops {
                let i = *index.entry(key.as_str()).or_insert_with(|| {
                    keys.push(key.clone());
                    keys.len()
                });
                invocation.arg(i).arg(field).arg(*n);
            }
            for key in &keys {
                invocation.key(key);
            }
            let invocation = &invocation;
            self.link
                .run(|mut c| async move {
                    let _: i64 = c.invoke(invocation).await?;
                    Ok::<_, StatsError>(())
                })
                .await?;
        }
        Ok(())
    }

    async fn adoption(
        &self,
        product: &str,
        channel: Option<&str>,
        days: RangeInclusive<u32>,
    ) -> Result<Vec<DayAdoption>, StatsError> {
        let days: Vec<u32> = days.collect();
        let mut pipe = redis::pipe();
        for day in &days {
            pipe.cmd("HGETALL")
                .arg(self.key(&format!("adoption:{product}:{day}")));
        }
        let pipe = &pipe;
        let hashes: Vec<HashMap<String, u64>> = self
            .link
            .run(|mut c| async move { Ok::<_, StatsError>(c.pipe(pipe).await?) })
            .await?;
        let mut out = Vec::new();
        for (day, fields) in days.into_iter().zip(hashes) {
            let mut versions: BTreeMap<String, Adoption> = BTreeMap::new();
            for (field, n) in fields {
                let mut parts = field.splitn(3, '\0');
                let (Some(ch), Some(version), Some(kind)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(StatsError::Corrupt(format!(
                        "adoption field {field:?} of {product} day {day}"
                    )));
                };
                if channel.is_some_and(|c| c != ch) {
                    continue;
                }
                let a = versions.entry(version.to_owned()).or_default();
                match kind {
                    "a" => a.active += n,
                    "n" => a.new += n,
                    _ => {}
                }
            }
            if !versions.is_empty() {
                out.push(DayAdoption { day, versions });
            }
        }
        Ok(out)
    }

    async fn windows(&self, keys: &[WindowKey]) -> Result<Vec<WindowReports>, StatsError> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for (product, version, window) in keys {
            pipe.cmd("HGETALL")
                .arg(self.key(&format!("window:{product}\0{version}\0{window}")));
        }
        let pipe = &pipe;
        let all: Vec<HashMap<String, u64>> = self
            .link
            .run(|mut c| async move { Ok::<_, StatsError>(c.pipe(pipe).await?) })
            .await?;
        Ok(all
            .iter()
            .map(|fields| window_from_fields(fields.iter().map(|(f, n)| (f.as_str(), *n))))
            .collect())
    }

    async fn prune(&self, _today: u32) -> Result<(), StatsError> {
        Ok(()) // every day key expires by itself
    }
}
