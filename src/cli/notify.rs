//! `firmcast release notify` and `firmcast job show|cancel`: start a release
//! fan-out and follow it with a progress bar.

use super::client::{AdminArgs, Api};
use anyhow::Result;
use clap::Args;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct NotifyArgs {
    /// Product, e.g. WH-1000XM5.
    product: String,
    /// Release version, e.g. 2.2.0.
    version: String,
    /// Count the recipients, send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Notify although the rollout is below 100% (those outside it are told
    /// of an update their check does not offer yet).
    #[arg(long)]
    force: bool,
    /// Follow the job with a progress bar until it ends.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct JobArgs {
    /// The job id `release notify` printed.
    id: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Deserialize)]
struct Started {
    job: String,
    total: u64,
}

#[derive(Deserialize)]
struct JobView {
    id: String,
    state: String,
    reason: Option<String>,
    total: u64,
    sent: u64,
    failed: u64,
    removed: u64,
    retried: u64,
}

impl JobView {
    fn summary(&self) -> String {
        format!(
            "job {}: {}{} — total {}, sent {}, failed {}, removed {}, retried {}",
            self.id,
            self.state,
            self.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            self.total,
            self.sent,
            self.failed,
            self.removed,
            self.retried
        )
    }

    fn done(&self) -> u64 {
        self.sent + self.failed + self.removed
    }
}

fn fetch(api: &Api, id: &str) -> Result<JobView> {
    let url = api.url(&["v1", "admin", "jobs", id]);
    api.send_json(api.request(Method::GET, url), "job")
}

pub fn notify(a: NotifyArgs) -> Result<ExitCode> {
    let api = Api::admin(&a.admin)?;
    let url = api.url(&["v1", "admin", "releases", &a.product, &a.version, "notify"]);
    let started: Started = api.send_json(
        api.request(Method::POST, url)
            .json(&json!({"dry_run": a.dry_run, "force": a.force})),
        "notify",
    )?;
    if a.dry_run {
        println!(
            "dry run: {} subscriber(s) of {} would be notified",
            started.total, a.product
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "job {} started for {} subscriber(s)",
        started.job, started.total
    );
    if !a.wait {
        println!("{}", started.job);
        return Ok(ExitCode::SUCCESS);
    }
    let bar = indicatif::ProgressBar::new(started.total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "notifying [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    loop {
        let job = fetch(&api, &started.job)?;
        bar.set_position(job.done());
        bar.set_message(format!("failed {} removed {}", job.failed, job.removed));
        if job.state != "running" && job.state != "planning" {
            bar.finish_and_clear();
            println!("{}", job.summary());
            return Ok(if job.state == "done" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn show(a: JobArgs) -> Result<ExitCode> {
    let api = Api::admin(&a.admin)?;
    println!("{}", fetch(&api, &a.id)?.summary());
    Ok(ExitCode::SUCCESS)
}

pub fn cancel(a: JobArgs) -> Result<ExitCode> {
    let api = Api::admin(&a.admin)?;
    let url = api.url(&["v1", "admin", "jobs", &a.id]);
    let job: JobView = api.send_json(api.request(Method::DELETE, url), "job")?;
    println!("{}", job.summary());
    Ok(ExitCode::SUCCESS)
}
