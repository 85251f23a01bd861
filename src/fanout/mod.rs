//! Release fan-out: push subscriptions, notification jobs split into batches
//! on a durable queue, and the workers that drain it through the providers.

pub mod embedded;
pub mod jobs;
pub mod redis;
pub mod store;
pub mod worker;

pub use store::{
    Batch, Claimed, Job, JobCounters, JobState, ProviderKind, PushStore, Subscription,
};

/// Opens the push store of the configured state backend: `push.redb` under
/// `server.data_dir` beside the embedded state store, or the state store's
/// Redis (`state.redis_url`, same prefix and timeout), failing fast with the
/// reason when it does not answer.
pub async fn open_push(
    settings: &crate::config::Settings,
) -> anyhow::Result<std::sync::Arc<dyn PushStore>> {
    use anyhow::Context;
    match settings.state.backend {
        crate::config::StateBackend::Embedded => {
            let path = settings.server.data_dir.join("push.redb");
            tracing::info!(path = %path.display(), "push: embedded store");
            let opened = tokio::task::spawn_blocking({
                let path = path.clone();
                move || embedded::EmbeddedPushStore::open(&path)
            })
            .await
            .context("the push store task did not finish")?;
            let store = opened
                .with_context(|| format!("cannot open the push store at {}", path.display()))?;
            Ok(std::sync::Arc::new(store))
        }
        crate::config::StateBackend::Redis => {
            let s = &settings.state;
            let timeout = std::time::Duration::from_millis(s.redis_timeout_ms);
            let store = redis::RedisPushStore::connect(&s.redis_url, &s.redis_prefix, timeout)
                .await
                .context("cannot open the redis push store; check [state] redis_url and that Redis is running")?;
            tracing::info!(url = %crate::state::redis::redact_url(&s.redis_url), prefix = %s.redis_prefix, "push: redis");
            Ok(std::sync::Arc::new(store))
        }
    }
}
