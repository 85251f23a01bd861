//! The jobs page: recent push jobs with their progress and reasons; and
//! the progress partial that htmx polls until a job is final.

use super::super::format;
use super::super::{errors, render, Ctx, Response};
use crate::console::navbar::Nav;
use crate::error::ApiError;
use crate::fanout::Job;
use askama::Template;
use hyper::StatusCode;

/// Jobs the page lists.
const RECENT: usize = 50;

/// A job as the pages show it.
pub struct JobRow {
    pub id: String,
    pub short: String,
    pub product: String,
    pub version: String,
    pub href: String,
    pub dry_run: bool,
    pub state: &'static str,
    pub reason: Option<String>,
    /// Failed sends by provider and code, and each provider's last error.
    pub failures: Option<String>,
    pub is_final: bool,
    pub total: String,
    pub sent: String,
    pub failed: String,
    pub removed: String,
    pub retried: String,
    /// For `<progress>`: recipients dealt with, of all.
    pub done: u64,
    pub max: u64,
    pub created: String,
    pub created_by: String,
}

impl JobRow {
    pub fn of(job: &Job) -> Self {
        let c = &job.counters;
        let finished = job.state.is_final();
        let (done, max) = if job.dry_run {
            (1, 1)
        } else if c.total == 0 {
            (u64::from(finished), 1)
        } else {
            ((c.sent + c.failed + c.removed).min(c.total), c.total)
        };
        JobRow {
            id: job.id.clone(),
            short: job.id.chars().take(8).collect(),
            product: job.product.clone(),
            version: job.version.clone(),
            href: super::products::release_href(&job.product, &job.version),
            dry_run: job.dry_run,
            state: job.state.as_str(),
            reason: job.state.reason().map(str::to_owned),
            failures: (!job.failures.is_empty()).then(|| job.failures.summary()),
            is_final: finished,
            total: format::count(c.total),
            sent: format::count(c.sent),
            failed: format::count(c.failed),
            removed: format::count(c.removed),
            retried: format::count(c.retried),
            done,
            max,
            created: format::time(job.created_at),
            created_by: job.created_by.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct Jobs {
    nav: Nav,
    jobs: Vec<JobRow>,
}

#[derive(Template)]
#[template(path = "job_progress.html")]
struct Progress {
    job: JobRow,
}

/// `GET /console/jobs`.
pub async fn index(ctx: &Ctx<'_>) -> Response {
    match ctx.api.push.list_jobs(RECENT).await {
        Ok(jobs) => render(
            StatusCode::OK,
            &Jobs {
                nav: ctx.nav("jobs"),
                jobs: jobs.iter().map(JobRow::of).collect(),
            },
        ),
        Err(e) => errors::page(Some(ctx.nav("jobs")), &e.into()),
    }
}

/// A job by the id a link or form carried.
pub async fn find(ctx: &Ctx<'_>, id: &str) -> Result<Job, ApiError> {
    if !(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(ApiError::bad_request(
            "bad_job_id",
            "a job id is 24 hex digits; pick the job from the Jobs page",
        ));
    }
    ctx.api
        .push
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_job", format!("no job {id}")))
}

/// `GET /console/jobs/{id}/progress`: the partial htmx swaps in, polling
/// itself again while the job runs.
pub async fn progress(ctx: &Ctx<'_>, id: &str) -> Response {
    match find(ctx, id).await {
        Ok(job) => render(
            StatusCode::OK,
            &Progress {
                job: JobRow::of(&job),
            },
        ),
        Err(e) => errors::page(Some(ctx.nav("jobs")), &e),
    }
}
