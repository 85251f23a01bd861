//! `firmcast release stats|ramp|health`: rollout intelligence from the
//! terminal. Stats print today's active installs per version with their
//! share and a sparkline of the last days, then each release's reports
//! against its gate; ramp and health set a release's ramp and gate.

use super::client::{AdminArgs, Api};
use anyhow::{bail, Result};
use clap::Args;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Product, e.g. WH-1000XM5.
    product: String,
    /// Days of adoption to show, 1 to 400.
    #[arg(long, default_value = "30")]
    days: u32,
    /// Only this channel's checks.
    #[arg(long)]
    channel: Option<String>,
    /// Print the server's JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct RampArgs {
    /// Product, e.g. WH-1000XM5.
    product: String,
    /// Release version, e.g. 2.2.0.
    version: String,
    /// Percents, strictly increasing, ending at 100 (`1,5,20,100`), or
    /// `phased` (1, 2, 5, 10, 20, 50, 100, a day apart).
    #[arg(long, required_unless_present = "off")]
    steps: Option<String>,
    /// Time between steps, e.g. 24h, 30m (optional with `phased`).
    #[arg(long)]
    every: Option<String>,
    /// Remove the ramp; the rollout stays where it is.
    #[arg(long, conflicts_with_all = ["steps", "every"])]
    off: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Product, e.g. WH-1000XM5.
    product: String,
    /// Release version, e.g. 2.2.0.
    version: String,
    /// Reports needed before the gate may pause the release.
    #[arg(long, required_unless_present = "default")]
    min_reports: Option<u64>,
    /// Largest failed / (failed + installed) allowed, 0 to 1 (0.05 = 5%).
    #[arg(long, required_unless_present = "default")]
    max_failure_rate: Option<f64>,
    /// Back to the deployment's default gate (`[rollout.health]`).
    #[arg(long, conflicts_with_all = ["min_reports", "max_failure_rate"])]
    default: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Deserialize)]
struct Stats {
    product: String,
    today: String,
    days: Vec<Day>,
    releases: Vec<ReleaseStats>,
}

#[derive(Deserialize)]
struct Day {
    day: String,
    versions: BTreeMap<String, Adoption>,
}

#[derive(Deserialize, Clone, Copy, Default)]
struct Adoption {
    active: u64,
}

#[derive(Deserialize)]
struct ReleaseStats {
    version: String,
    rollout: f64,
    paused: bool,
    paused_by: Option<String>,
    yanked: bool,
    health: Gate,
    reports: Reports,
}

#[derive(Deserialize)]
struct Gate {
    min_reports: u64,
    max_failure_rate: f64,
    red: bool,
}

#[derive(Deserialize)]
struct Reports {
    installed: u64,
    failed: u64,
    failure_rate: f64,
    by_stage: BTreeMap<String, u64>,
    top_codes: Vec<Code>,
}

#[derive(Deserialize)]
struct Code {
    code: String,
    count: u64,
}

pub fn stats(args: StatsArgs) -> Result<ExitCode> {
    let api = Api::admin(&args.admin)?;
    let mut url = api.url(&["v1", "admin", "stats", &args.product]);
    url.query_pairs_mut()
        .append_pair("days", &args.days.to_string());
    if let Some(c) = &args.channel {
        url.query_pairs_mut().append_pair("channel", c);
    }
    let req = api.request(Method::GET, url);
    if args.json {
        let v: serde_json::Value = api.send_json(req, "stats")?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s: Stats = api.send_json(req, "stats")?;
    print!("{}", render(&s, args.days));
    Ok(ExitCode::SUCCESS)
}

/// The two tables `release stats` prints.
fn render(s: &Stats, days: u32) -> String {
    let mut out = format!("{} on {} (last {days} days)\n\n", s.product, s.today);
    let today = s.days.iter().find(|d| d.day == s.today);
    let mut versions: Vec<&String> = s.days.iter().flat_map(|d| d.versions.keys()).collect();
    versions.sort();
    versions.dedup();
    // The server lists only days with counts; gaps show as empty days.
    let calendar: Vec<String> = match chrono::NaiveDate::parse_from_str(&s.today, "%Y-%m-%d") {
        Ok(today) => (0..days)
            .rev()
            .filter_map(|back| today.checked_sub_days(chrono::Days::new(back.into())))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect(),
        Err(_) => s.days.iter().map(|d| d.day.clone()).collect(),
    };
    let total: u64 = today.map_or(0, |d| d.versions.values().map(|a| a.active).sum());
    let mut rows = vec![[
        "VERSION".to_owned(),
        "ACTIVE TODAY".into(),
        "SHARE".into(),
        "BY DAY".into(),
    ]];
    for v in &versions {
        let active = today
            .and_then(|d| d.versions.get(*v))
            .map_or(0, |a| a.active);
        let share = if total == 0 {
            0.0
        } else {
            active as f64 * 100.0 / total as f64
        };
        let series: Vec<u64> = calendar
            .iter()
            .map(|day| {
                s.days
                    .iter()
                    .find(|d| &d.day == day)
                    .and_then(|d| d.versions.get(*v))
                    .map_or(0, |a| a.active)
            })
            .collect();
        rows.push([
            (*v).clone(),
            active.to_string(),
            format!("{share:.1}%"),
            sparkline(&series),
        ]);
    }
    if versions.is_empty() {
        out.push_str("no checks counted yet\n");
    } else {
        out.push_str(&super::columns(&rows));
    }
    out.push('\n');
    let mut rows = vec![[
        "RELEASE".to_owned(),
        "ROLLOUT".into(),
        "STATE".into(),
        "INSTALLED".into(),
        "FAILED".into(),
        "RATE / GATE".into(),
        "TOP CODES".into(),
        "STAGES".into(),
    ]];
    for r in &s.releases {
        let state = match (r.yanked, r.paused, r.paused_by.as_deref()) {
            (true, _, _) => "yanked".to_owned(),
            (false, true, Some(by)) => format!("paused by {by}"),
            (false, true, None) => "paused".into(),
            (false, false, _) if r.health.red => "live, gate red".into(),
            _ => "live".into(),
        };
        let codes: Vec<String> = r
            .reports
            .top_codes
            .iter()
            .take(3)
            .map(|c| format!("{} {}", c.code, c.count))
            .collect();
        let stages: Vec<String> = r
            .reports
            .by_stage
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        rows.push([
            r.version.clone(),
            format!("{}%", r.rollout),
            state,
            r.reports.installed.to_string(),
            r.reports.failed.to_string(),
            format!(
                "{:.1}% / {:.1}% of {}+",
                r.reports.failure_rate * 100.0,
                r.health.max_failure_rate * 100.0,
                r.health.min_reports
            ),
            codes.join(", "),
            stages.join(", "),
        ]);
    }
    out.push_str(&super::columns(&rows));
    out
}

/// One block character a value, scaled to the largest.
fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| match max {
            0 => BARS[0],
            _ => BARS[((v * 7 + max / 2) / max) as usize],
        })
        .collect()
}

pub fn ramp(a: RampArgs) -> Result<ExitCode> {
    let ramp = if a.off {
        serde_json::Value::Null
    } else {
        let steps = a.steps.as_deref().unwrap_or_default();
        let steps = if steps == "phased" {
            json!("phased")
        } else {
            let parsed: Result<Vec<f64>, _> = steps
                .split(',')
                .map(|s| s.trim().trim_end_matches('%').parse::<f64>())
                .collect();
            match parsed {
                Ok(p) => json!(p),
                Err(_) => bail!("--steps {steps:?}: give percents separated by commas, such as 1,5,20,100, or phased"),
            }
        };
        match &a.every {
            Some(every) => json!({"steps": steps, "every": every}),
            None => json!({"steps": steps}),
        }
    };
    super::admin_releases::patch_release(
        (&a.product, &a.version),
        &a.admin,
        json!({ "ramp": ramp }),
    )
}

pub fn health(a: HealthArgs) -> Result<ExitCode> {
    let health = match (a.min_reports, a.max_failure_rate) {
        (Some(min), Some(max)) => json!({"min_reports": min, "max_failure_rate": max}),
        _ => serde_json::Value::Null,
    };
    super::admin_releases::patch_release(
        (&a.product, &a.version),
        &a.admin,
        json!({ "health": health }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_largest_day() {
        assert_eq!(sparkline(&[0, 1, 2, 4, 8]), "▁▂▃▅█");
        assert_eq!(sparkline(&[0, 0]), "▁▁");
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn stats_print_shares_and_reports_against_the_gate() {
        let s: Stats = serde_json::from_value(json!({
            "product": "P", "today": "2026-12-02", "today_number": 20789,
            "days": [
                {"day": "2026-12-01", "versions": {"2.1.0": {"active": 10, "new": 1}}},
                {"day": "2026-12-02", "versions": {"2.1.0": {"active": 30, "new": 0}, "2.2.0": {"active": 10, "new": 10}}}
            ],
            "releases": [{"version": "2.2.0", "channel": "stable", "rollout": 50.0, "paused": true,
                "paused_by": "health", "pause_reason": "x", "yanked": false, "ramp": null,
                "health": {"min_reports": 100, "max_failure_rate": 0.05, "default": true, "red": true},
                "reports": {"installed": 181, "failed": 20, "failure_rate": 0.099,
                    "by_stage": {"install": 20}, "top_codes": [{"code": "E_FLASH", "count": 20}], "window": 0}}]
        }))
        .unwrap();
        let out = render(&s, 4);
        assert!(out.contains("2.1.0    30            75.0%  ▁▁▃█"), "{out}");
        assert!(out.contains("2.2.0    10            25.0%  ▁▁▁█"), "{out}");
        assert!(out.contains("paused by health"), "{out}");
        assert!(out.contains("9.9% / 5.0% of 100+"), "{out}");
        assert!(out.contains("E_FLASH 20"), "{out}");
    }
}
