//! Release fan-out: push subscriptions, notification jobs split into batches
//! on a durable queue, and the workers that drain it through the providers.

mod breaker;
pub mod embedded;
pub mod jobs;
pub mod metrics;
mod pacing;
pub mod redis;
pub mod store;
pub mod worker;

pub use store::{
    Batch, Claimed, Failures, Job, JobCounters, JobDelta, JobState, ProviderKind, PushError,
    PushStore, Subscription,
};

use crate::storage::Backend;
use std::sync::Arc;

/// The push store of an opened backend: the embedded `push.redb`, or the
/// shared Redis link (keys under the same prefix as the release store's).
pub async fn open(backend: &Backend) -> Result<Arc<dyn PushStore>, PushError> {
    Ok(match backend {
        Backend::Embedded { push, .. } => {
            let db = push.clone();
            Arc::new(
                push.run(move |_| embedded::EmbeddedPushStore::new(db))
                    .await?,
            )
        }
        Backend::Redis(link) => Arc::new(redis::RedisPushStore::new(link.clone())),
    })
}
