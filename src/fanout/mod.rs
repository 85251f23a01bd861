//! Release fan-out: push subscriptions, notification jobs split into batches
//! on a durable queue, and the workers that drain it through the providers.

pub mod embedded;
pub mod jobs;
pub mod store;
pub mod worker;

pub use store::{
    Batch, Claimed, Job, JobCounters, JobState, ProviderKind, PushStore, Subscription,
};
