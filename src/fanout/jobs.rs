//! Starting a notification job: count and cut a product's subscriber index
//! into batches, record the job, queue the batches.

use super::store::{Batch, Job, JobCounters, JobState, PushError, PushStore};
use chrono::Utc;
use std::sync::Arc;

/// Tokens per batch: small enough that a crashed worker's batch is quickly
/// redone (a duplicate at most this big, hidden by the collapse id), large
/// enough that queue overhead is noise.
pub const BATCH_SIZE: usize = 500;

pub fn new_job_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

/// Creates the job and queues its batches. The batch boundaries are read
/// first and the job is recorded with its final `batches_total` before any
/// batch is queued, so workers' counter updates never race the planner.
/// A dry run records the count and finishes at once.
pub async fn start(
    store: &Arc<dyn PushStore>,
    product: &str,
    version: &str,
    dry_run: bool,
    actor: &str,
) -> Result<Job, PushError> {
    let (ranges, total) = store.batch_ranges(product, BATCH_SIZE).await?;
    let finished = dry_run || ranges.is_empty();
    let job = Job {
        id: new_job_id(),
        product: product.to_owned(),
        version: version.to_owned(),
        dry_run,
        state: if finished {
            JobState::Done
        } else {
            JobState::Running
        },
        created_at: Utc::now(),
        created_by: actor.to_owned(),
        counters: JobCounters {
            total,
            ..JobCounters::default()
        },
        batches_total: if dry_run { 0 } else { ranges.len() as u64 },
        batches_done: 0,
        finished_at: finished.then(Utc::now),
        failures: Default::default(),
        checked: vec![],
    };
    store.put_job(&job).await?;
    if !dry_run {
        let batches: Vec<Batch> = ranges
            .into_iter()
            .map(|(first, last)| Batch {
                job_id: job.id.clone(),
                product: product.to_owned(),
                first,
                last,
            })
            .collect();
        store.enqueue_all(&batches).await?;
    }
    Ok(job)
}
