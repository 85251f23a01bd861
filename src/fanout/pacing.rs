//! Pacing: at most `max_per_second` sends per provider, across every
//! worker of every instance, and a provider-wide pause when the provider
//! says "not before then" (FCM's QUOTA_EXCEEDED, a `Retry-After`).
//!
//! The limit is a GCRA schedule: one "theoretical arrival time" per
//! provider, moved on by `1 / max_per_second` per send. With Redis it is a
//! key moved by one Lua script on Redis' clock, so all instances share it;
//! embedded, it is a value in this process. An instance reserves a chunk
//! of slots per round trip (a fiftieth of a second's worth) and spaces its
//! sends over them, so the sum of all instances stays on the schedule
//! without a Redis call per send.

use crate::storage::{Backend, RedisLink};
use redis::Script;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Reserves `ARGV[2]` slots `ARGV[1]` µs apart; answers how many µs from
/// now the first one is. A pause (`ARGV[3]` µs from now, 0 for none) moves
/// the schedule past it first.
///
/// KEYS: the provider's schedule.
const RESERVE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local pause = tonumber(ARGV[3])
if pause > 0 and tat < now + pause then tat = now + pause end
local first = tat
tat = tat + tonumber(ARGV[1]) * tonumber(ARGV[2])
redis.call('SET', KEYS[1], tat, 'PX', math.floor((tat - now) / 1000) + 1000)
return first - now
";

/// Where the schedule lives.
enum Schedule {
    /// This process only (embedded state: one instance).
    Local(Mutex<Instant>),
    Shared {
        link: RedisLink,
        key: String,
        script: Script,
        /// Set while Redis fails: paced locally meanwhile, warned once.
        failing: std::sync::atomic::AtomicBool,
        fallback: Mutex<Instant>,
    },
}

/// This instance's reserved slots not yet handed out.
struct Chunk {
    next: Instant,
    left: u32,
}

pub struct Pacer {
    /// `None`: no limit; only pauses apply.
    interval: Option<Duration>,
    chunk: u32,
    schedule: Schedule,
    reserved: tokio::sync::Mutex<Chunk>,
    /// Milliseconds since `epoch` before which nobody here sends.
    paused_until_ms: AtomicU64,
    epoch: Instant,
}

impl Pacer {
    /// A pacer for `provider` (`fcm`, `apns`) at `max_per_second` (0: no
    /// limit), shared through Redis when the backend is Redis.
    pub fn new(provider: &str, max_per_second: u32, backend: Option<&Backend>) -> Pacer {
        let now = Instant::now();
        let schedule = match backend {
            Some(Backend::Redis(link)) => Schedule::Shared {
                key: format!("{}:{{fanout}}:pace:{provider}", link.prefix()),
                link: link.clone(),
                script: Script::new(RESERVE_LUA),
                failing: Default::default(),
                fallback: Mutex::new(now),
            },
            _ => Schedule::Local(Mutex::new(now)),
        };
        let interval = (max_per_second > 0)
            .then(|| Duration::from_nanos(1_000_000_000 / u64::from(max_per_second)));
        Pacer {
            interval,
            chunk: (max_per_second / 50).clamp(1, 100),
            schedule,
            reserved: tokio::sync::Mutex::new(Chunk { next: now, left: 0 }),
            paused_until_ms: AtomicU64::new(0),
            epoch: now,
        }
    }

    pub fn limited(&self) -> bool {
        self.interval.is_some()
    }

    /// Waits for this send's turn: a slot on the schedule, and past any pause.
    pub async fn wait(&self) {
        loop {
            self.sit_out_pause().await;
            let Some(interval) = self.interval else {
                return;
            };
            let slot = {
                let mut chunk = self.reserved.lock().await;
                if chunk.left == 0 {
                    let delay = self.reserve(interval, self.chunk, Duration::ZERO).await;
                    *chunk = Chunk {
                        next: Instant::now() + delay,
                        left: self.chunk,
                    };
                }
                let slot = chunk.next;
                chunk.next += interval;
                chunk.left -= 1;
                slot
            };
            tokio::time::sleep_until(slot).await;
            // A pause that came while this send waited for its slot wins.
            if !self.paused() {
                return;
            }
        }
    }

    /// The provider asked for quiet until `for_` from now: no send here
    /// starts before then, and with Redis the shared schedule moves past
    /// it, so other instances wait too.
    pub async fn pause(&self, for_: Duration) {
        let until = (Instant::now() + for_).duration_since(self.epoch);
        self.paused_until_ms
            .fetch_max(until.as_millis() as u64, Relaxed);
        if let Some(interval) = self.interval {
            // Slots reserved before the pause are dropped; the next ones
            // come after it.
            self.reserved.lock().await.left = 0;
            self.reserve(interval, 0, for_).await;
        }
    }

    fn paused(&self) -> bool {
        let until = self.paused_until_ms.load(Relaxed);
        until > 0 && (Instant::now().duration_since(self.epoch).as_millis() as u64) < until
    }

    async fn sit_out_pause(&self) {
        let until = self.paused_until_ms.load(Relaxed);
        if until > 0 {
            tokio::time::sleep_until(self.epoch + Duration::from_millis(until)).await;
        }
    }

    /// `n` slots on the schedule (after a pause of `pause`); how long from
    /// now until the first.
    async fn reserve(&self, interval: Duration, n: u32, pause: Duration) -> Duration {
        match &self.schedule {
            Schedule::Local(tat) => local_reserve(tat, interval, n, pause),
            Schedule::Shared {
                link,
                key,
                script,
                failing,
                fallback,
            } => {
                let (key, script) = (key.as_str(), script);
                let micros = |d: Duration| d.as_micros().min(u64::MAX as u128) as u64;
                let answer: Result<i64, crate::storage::StoreError> = link
                    .run(|mut c| async move {
                        c.invoke(
                            script
                                .key(key)
                                .arg(micros(interval))
                                .arg(n)
                                .arg(micros(pause)),
                        )
                        .await
                    })
                    .await;
                match answer {
                    Ok(us) => {
                        if failing.swap(false, Relaxed) {
                            tracing::info!("push pacing shared through Redis again");
                        }
                        Duration::from_micros(us.max(0) as u64)
                    }
                    Err(e) => {
                        if !failing.swap(true, Relaxed) {
                            tracing::warn!(error = %e, "push pacing cannot reach Redis; pacing this instance alone meanwhile");
                        }
                        local_reserve(fallback, interval, n, pause)
                    }
                }
            }
        }
    }
}

fn local_reserve(tat: &Mutex<Instant>, interval: Duration, n: u32, pause: Duration) -> Duration {
    let now = Instant::now();
    let mut tat = tat.lock().unwrap_or_else(|e| e.into_inner());
    *tat = (*tat).max(now).max(now + pause);
    let first = *tat;
    *tat += interval * n;
    first - now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sends_keep_to_the_rate_from_many_tasks() {
        let pacer = std::sync::Arc::new(Pacer::new("fcm", 500, None));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let pacer = pacer.clone();
            tasks.spawn(async move {
                for _ in 0..50 {
                    pacer.wait().await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        // 1000 sends at 500/s: the last starts 1998 ms in (slots 2 ms apart).
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_send_and_then_the_rate_resumes() {
        let pacer = Pacer::new("fcm", 100, None);
        pacer.wait().await;
        pacer.pause(Duration::from_secs(3)).await;
        let start = Instant::now();
        pacer.wait().await;
        assert!(
            start.elapsed() >= Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        let unlimited = Pacer::new("apns", 0, None);
        unlimited.pause(Duration::from_secs(2)).await;
        let start = Instant::now();
        unlimited.wait().await;
        assert!(start.elapsed() >= Duration::from_secs(2));
        unlimited.wait().await; // past the pause: at once
        assert!(start.elapsed() < Duration::from_millis(2010));
    }
}
