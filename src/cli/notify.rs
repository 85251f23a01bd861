//! `firmcast release notify` and `firmcast job show|cancel`: start a release
//! fan-out and follow it with a progress bar.

use super::client::{AdminArgs, Api};
use anyhow::Result;
use clap::Args;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
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
    #[serde(default)]
    per_second: f64,
    #[serde(default)]
    eta_seconds: Option<u64>,
    #[serde(default)]
    failures: BTreeMap<String, ProviderFailures>,
}

#[derive(Deserialize)]
struct ProviderFailures {
    by_reason: BTreeMap<String, u64>,
    last_error: Option<String>,
}

impl JobView {
    /// The job on one line, then one line per provider that failed sends.
    fn summary(&self) -> String {
        let mut out = format!(
            "job {}: {}{} — total {}, sent {}, failed {}, removed {}, retried {}; {}/s",
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
            self.retried,
            self.per_second,
        );
        if let Some(eta) = self.eta_seconds {
            out.push_str(&format!(
                ", about {} left",
                humantime::format_duration(Duration::from_secs(eta))
            ));
        }
        for (provider, f) in &self.failures {
            let mut reasons: Vec<_> = f.by_reason.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1));
            let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
            out.push_str(&format!("\n  {provider} failures: {}", reasons.join(", ")));
            if let Some(last) = &f.last_error {
                out.push_str(&format!("\n  {provider} last error: {last}"));
            }
        }
        out
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
        indicatif::ProgressStyle::with_template("notifying [{bar:30}] {pos}/{len} {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    loop {
        let job = fetch(&api, &started.job)?;
        bar.set_position(job.done());
        let eta = job.eta_seconds.map_or(String::new(), |s| {
            format!(
                ", eta {}",
                humantime::format_duration(Duration::from_secs(s))
            )
        });
        bar.set_message(format!(
            "{}/s{eta}, failed {} removed {}",
            job.per_second, job.failed, job.removed
        ));
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
