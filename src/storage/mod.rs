//! The storage backend, opened once at start-up and shared by every store
//! built on it: the release store ([`crate::state`]), the push store
//! ([`crate::fanout`]). `embedded` is redb files under `server.data_dir`
//! (one instance); `redis` is one Redis (or Redis Cluster: keys that change
//! together share a hash tag) shared by any number of instances.
//!
//! The embedded backend keeps two files: `state.redb` (releases, audit:
//! rare, durable writes) and `push.redb` (subscriptions, jobs, the batch
//! queue: a launch-day flood of registrations and a fan-out's bookkeeping),
//! because redb admits one writer per file and a sweep of a million tokens
//! must not hold up a publish.

pub mod embedded;
pub mod redis;

use crate::config::{Settings, StateBackend};
use anyhow::Context;
use std::time::Duration;

pub use self::embedded::EmbeddedDb;
pub use self::redis::RedisLink;

/// What any store can fail with besides its own rules. Each store's error
/// type has these two cases too (`From<StoreError>`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the state store ({backend}) is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("the state store holds data it cannot read ({0}); restore from a backup or `firmcast state export`")]
    Corrupt(String),
}

/// redb's page cache for the release store: releases are read at start-up
/// and after changes, then served from the catalog snapshot.
const STATE_CACHE_BYTES: usize = 2 << 20;
/// For the push store: a fan-out walks the index once; caching all of it
/// would grow RSS with the token count.
const PUSH_CACHE_BYTES: usize = 64 << 20;

/// The opened backend.
#[derive(Clone)]
pub enum Backend {
    Embedded { state: EmbeddedDb, push: EmbeddedDb },
    Redis(RedisLink),
}

impl Backend {
    /// Opens the configured backend: the embedded files under
    /// `server.data_dir`, or Redis at `state.redis_url` (failing fast, with
    /// the reason, when it does not answer within `state.redis_timeout_ms`).
    pub async fn open(settings: &Settings) -> anyhow::Result<Backend> {
        match settings.state.backend {
            StateBackend::Embedded => {
                let dir = &settings.server.data_dir;
                let state = dir.join("state.redb");
                let push = dir.join("push.redb");
                tracing::info!(dir = %dir.display(), "storage: embedded (single instance; use redis to run several)");
                let state = EmbeddedDb::open_async(&state, STATE_CACHE_BYTES)
                    .await
                    .with_context(|| {
                        format!("cannot open the state store at {}", state.display())
                    })?;
                let push = EmbeddedDb::open_async(&push, PUSH_CACHE_BYTES)
                    .await
                    .with_context(|| format!("cannot open the push store at {}", push.display()))?;
                Ok(Backend::Embedded { state, push })
            }
            StateBackend::Redis => {
                let s = &settings.state;
                let timeout = Duration::from_millis(s.redis_timeout_ms);
                let link = RedisLink::connect(&s.redis_url, &s.redis_prefix, timeout)
                    .await
                    .context(
                        "cannot open the redis store; check [state] redis_url and that Redis is running",
                    )?;
                tracing::info!(url = %redis::redact_url(&s.redis_url), prefix = %s.redis_prefix, "storage: redis");
                Ok(Backend::Redis(link))
            }
        }
    }

    /// `embedded` or `redis`, for logs and `/readyz`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Embedded { .. } => embedded::BACKEND,
            Backend::Redis(_) => redis::BACKEND,
        }
    }
}
