//! Counting in memory, between flushes: adoption (per product, channel,
//! installed version and day) and install outcomes, in sharded maps; and
//! the rule that one address counts once per release, outcome and day,
//! decided under a salt that changes daily and is never stored.
//!
//! Every key comes from a client, so each kind is capped per product and
//! day: past [`Caps::versions`] distinct installed versions (or `from`
//! versions) a product's further ones count as `other`; past
//! [`Caps::codes`] distinct failure codes a release's further ones do too.

use crate::stats::{AdoptionCount, Flush, Outcome, ReportCount, Stage};
use hashbrown::HashTable;
use siphasher::sip::SipHasher13;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;

const SHARDS: usize = 8;

/// What a capped key counts as once its product's cap is reached.
pub const OTHER: &str = "other";

#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub versions: usize,
    pub codes: usize,
}

/// A cap's scope: (day, product, kind of value).
type CapKey = (u32, Box<str>, &'static str);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AdoptionKey {
    day: u32,
    product: Box<str>,
    channel: Box<str>,
    version: Box<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ReportKey {
    day: u32,
    product: Box<str>,
    to: Box<str>,
    from: Box<str>,
    outcome: Outcome,
    stage: Option<Stage>,
    code: Option<Box<str>>,
    window: u32,
}

#[derive(Default)]
struct Shard {
    /// Looked up by a hash of borrowed parts, so a check that finds its
    /// key (nearly all) allocates nothing.
    adoption: HashTable<(AdoptionKey, [u64; 2])>,
    reports: HashMap<ReportKey, u64>,
}

impl AdoptionKey {
    fn is(&self, day: u32, product: &str, channel: &str, version: &str) -> bool {
        self.day == day
            && *self.product == *product
            && *self.channel == *channel
            && *self.version == *version
    }
}

pub struct Counts {
    shards: Box<[Mutex<Shard>]>,
    /// Seeded per process: keys come from clients.
    hasher: foldhash::fast::RandomState,
    /// (day, product, kind) -> the distinct values counted so far.
    seen: Mutex<HashMap<CapKey, HashSet<Box<str>>>>,
    caps: Caps,
}

/// One app's report, validated.
pub struct Report<'a> {
    pub product: &'a str,
    pub to: &'a str,
    pub from: &'a str,
    pub outcome: Outcome,
    pub stage: Option<Stage>,
    pub code: Option<&'a str>,
    /// The release's report window (its gate reads this one).
    pub window: u32,
}

impl Counts {
    pub fn new(caps: Caps) -> Self {
        Counts {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            seen: Mutex::default(),
            caps,
        }
    }

    fn shard(&self, key: &impl Hash) -> std::sync::MutexGuard<'_, Shard> {
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        let i = h.finish() as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `value` if it is among the first `cap` distinct values of its
    /// product, kind and day, else [`OTHER`].
    fn capped<'v>(
        &self,
        day: u32,
        product: &str,
        kind: &'static str,
        value: &'v str,
        cap: usize,
    ) -> &'v str {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let set = seen.entry((day, product.into(), kind)).or_default();
        if set.contains(value) {
            return value;
        }
        if set.len() >= cap {
            return OTHER;
        }
        set.insert(value.into());
        value
    }

    /// One check of `product` on `channel` from `version` on `day`: active,
    /// and new when the app sent no `last_day`. The version is capped only
    /// the first time it is counted since the last take.
    pub fn check(&self, day: u32, product: &str, channel: &str, version: &str, new: bool) {
        let add = |n: &mut [u64; 2]| {
            n[0] += 1;
            n[1] += u64::from(new);
        };
        let hash = self.adoption_hash(day, product, channel, version);
        {
            let mut shard = self.shard_of(hash);
            let found = shard
                .adoption
                .find_mut(hash, |(k, _)| k.is(day, product, channel, version));
            if let Some((_, n)) = found {
                return add(n);
            }
        }
        let kind = channel_kind(channel);
        let version = self.capped(day, product, kind, version, self.caps.versions);
        let hash = self.adoption_hash(day, product, channel, version);
        let mut shard = self.shard_of(hash);
        let found = shard
            .adoption
            .find_mut(hash, |(k, _)| k.is(day, product, channel, version));
        if let Some((_, n)) = found {
            return add(n);
        }
        let key = AdoptionKey {
            day,
            product: product.into(),
            channel: channel.into(),
            version: version.into(),
        };
        let mut n = [0; 2];
        add(&mut n);
        let rehash = |(k, _): &(AdoptionKey, [u64; 2])| {
            self.adoption_hash(k.day, &k.product, &k.channel, &k.version)
        };
        shard.adoption.insert_unique(hash, (key, n), rehash);
    }

    fn adoption_hash(&self, day: u32, product: &str, channel: &str, version: &str) -> u64 {
        self.hasher.hash_one((day, product, channel, version))
    }

    fn shard_of(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // The table uses the low bits; the shard, the high ones.
        let i = (hash >> 58) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn report(&self, day: u32, r: &Report<'_>) {
        let from = self.capped(day, r.product, "from", r.from, self.caps.versions);
        let code = r
            .code
            .map(|c| self.capped(day, r.product, "code", c, self.caps.codes));
        let key = ReportKey {
            day,
            product: r.product.into(),
            to: r.to.into(),
            from: from.into(),
            outcome: r.outcome,
            stage: r.stage,
            code: code.map(Into::into),
            window: r.window,
        };
        *self.shard(&key).reports.entry(key).or_default() += 1;
    }

    /// Everything counted since the last take, as a flush with `id`; the
    /// maps start over. Forgets the capped values of days before `today`.
    pub fn take(&self, id: String, today: u32) -> Flush {
        let mut flush = Flush {
            id,
            ..Flush::default()
        };
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (k, [active, new]) in shard.adoption.drain() {
                flush.adoption.push(AdoptionCount {
                    day: k.day,
                    product: k.product.into(),
                    channel: k.channel.into(),
                    version: k.version.into(),
                    active,
                    new,
                });
            }
            for (k, count) in shard.reports.drain() {
                flush.reports.push(ReportCount {
                    day: k.day,
                    product: k.product.into(),
                    to: k.to.into(),
                    from: k.from.into(),
                    outcome: k.outcome,
                    stage: k.stage,
                    code: k.code.map(Into::into),
                    window: k.window,
                    count,
                });
            }
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|(day, _, _), _| *day >= today);
        flush
    }
}

/// The cap's kind for a channel's versions (caps are per channel).
fn channel_kind(channel: &str) -> &'static str {
    match channel {
        "stable" => "versions:stable",
        "beta" => "versions:beta",
        _ => "versions:other-channels",
    }
}

/// One address, once per release, outcome and day: keyed hashes of the
/// client under a random salt made each day and never stored, in a set of
/// bounded size (full, it counts nothing more that day: the gate errs
/// toward fewer reports, never toward forged ones).
pub struct OncePerDay {
    inner: Mutex<OnceInner>,
    capacity: usize,
}

struct OnceInner {
    day: u32,
    salt: (u64, u64),
    seen: HashSet<u64>,
}

impl OncePerDay {
    pub fn new(capacity: usize) -> Self {
        OncePerDay {
            inner: Mutex::new(OnceInner {
                day: 0,
                salt: rand::random(),
                seen: HashSet::new(),
            }),
            capacity,
        }
    }

    /// True the first time `client` reports `outcome` for `product` `to`
    /// on `day`.
    pub fn first(
        &self,
        day: u32,
        client: IpAddr,
        product: &str,
        to: &str,
        outcome: Outcome,
    ) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.day != day {
            inner.day = day;
            inner.salt = rand::random();
            inner.seen = HashSet::new();
        }
        let (key, len) = crate::catalog::rollout::client_key(client);
        let mut h = SipHasher13::new_with_keys(inner.salt.0, inner.salt.1);
        h.write(&key[..len]);
        h.write_u8(len as u8);
        h.write(product.as_bytes());
        h.write_u8(0);
        h.write(to.as_bytes());
        h.write_u8(outcome as u8);
        let hash = h.finish();
        if inner.seen.contains(&hash) {
            return false;
        }
        if inner.seen.len() >= self.capacity {
            return false;
        }
        inner.seen.insert(hash)
    }

    /// Addresses remembered today (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Caps {
        Caps {
            versions: 3,
            codes: 2,
        }
    }

    #[test]
    fn checks_count_active_and_new_per_key_and_take_starts_over() {
        let c = Counts::new(caps());
        c.check(10, "P", "stable", "1.0.0", true);
        c.check(10, "P", "stable", "1.0.0", false);
        c.check(10, "P", "beta", "1.0.0", false);
        let flush = c.take("f1".into(), 10);
        let mut a: Vec<_> = flush
            .adoption
            .iter()
            .map(|a| (a.channel.as_str(), a.active, a.new))
            .collect();
        a.sort();
        assert_eq!(a, vec![("beta", 1, 0), ("stable", 2, 1)]);
        assert!(c.take("f2".into(), 10).is_empty());
    }

    #[test]
    fn past_the_cap_versions_and_codes_count_as_other() {
        let c = Counts::new(caps());
        for v in ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.0.0"] {
            c.check(10, "P", "stable", v, false);
        }
        let report = |code| Report {
            product: "P",
            to: "2.0.0",
            from: "1.0.0",
            outcome: Outcome::Failed,
            stage: Some(Stage::Install),
            code: Some(code),
            window: 0,
        };
        for code in ["E1", "E2", "E3", "E1"] {
            c.report(10, &report(code));
        }
        let flush = c.take("f".into(), 10);
        let mut versions: Vec<_> = flush
            .adoption
            .iter()
            .map(|a| (a.version.clone(), a.active))
            .collect();
        versions.sort();
        assert_eq!(
            versions,
            vec![
                ("1.0.0".into(), 2),
                ("1.0.1".into(), 1),
                ("1.0.2".into(), 1),
                ("other".into(), 2)
            ]
        );
        let mut codes: Vec<_> = flush
            .reports
            .iter()
            .map(|r| (r.code.clone().unwrap(), r.count))
            .collect();
        codes.sort();
        assert_eq!(
            codes,
            vec![("E1".into(), 2), ("E2".into(), 1), ("other".into(), 1)]
        );
        // A new day starts a new cap.
        c.check(11, "P", "stable", "1.0.9", false);
        assert_eq!(c.take("g".into(), 11).adoption[0].version, "1.0.9");
    }

    #[test]
    fn one_address_once_per_release_outcome_and_day() {
        let once = OncePerDay::new(100);
        let a: IpAddr = "203.0.113.5".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64_b: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        assert!(once.first(10, a, "P", "2.0.0", Outcome::Failed));
        assert!(!once.first(10, a, "P", "2.0.0", Outcome::Failed));
        assert!(once.first(10, a, "P", "2.0.0", Outcome::Installed));
        assert!(once.first(10, a, "P", "2.1.0", Outcome::Failed));
        assert!(once.first(10, same_64, "P", "2.0.0", Outcome::Failed));
        assert!(
            !once.first(10, same_64_b, "P", "2.0.0", Outcome::Failed),
            "one /64"
        );
        // The next day, a new salt and an empty set.
        assert!(once.first(11, a, "P", "2.0.0", Outcome::Failed));
        assert_eq!(once.len(), 1);
        // Full: nothing more counts that day.
        let small = OncePerDay::new(1);
        assert!(small.first(10, a, "P", "2.0.0", Outcome::Failed));
        assert!(!small.first(10, same_64, "P", "2.0.0", Outcome::Failed));
    }
}
