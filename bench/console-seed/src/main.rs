//! `console-seed --config FILE [--days 400]`: for a server that is not
//! running (the embedded store admits one process), writes adoption counts
//! for every product over `--days` days and install reports for every
//! release, through the stats store's own `add` (what the server's flushes
//! call), so the console's pages read what a year of real traffic leaves.
//!
//! The shape: a product's releases come out evenly over the window, oldest
//! first; on each day the newest released versions hold most installs and
//! older ones fade, about 10 versions a day with counts.

use firmcast::config::Settings;
use firmcast::stats::{AdoptionCount, Flush, Outcome, ReportCount, Stage};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut days) = (None, 400u32);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--days" => days = args.next().and_then(|d| d.parse().ok()).unwrap_or(400),
            other => anyhow::bail!(
                "unknown argument {other}; usage: console-seed --config FILE [--days N]"
            ),
        }
    }
    let settings = Settings::load(config.as_deref())?;
    let backend = firmcast::storage::Backend::open(&settings).await?;
    let state = firmcast::state::open(&backend).await?;
    let stats = firmcast::stats::open(&backend).await?;
    let releases = state.list_releases(None).await?;
    let mut by_product: BTreeMap<String, Vec<(u64, String, String)>> = BTreeMap::new();
    for r in &releases {
        by_product.entry(r.product.clone()).or_default().push((
            r.seq,
            r.version.clone(),
            r.channel.clone(),
        ));
    }
    let today = firmcast::rollout::day::day_of(chrono::Utc::now());
    let first = today + 1 - days;
    let mut adoption = Vec::new();
    let mut reports = Vec::new();
    for (product, mut rels) in by_product {
        rels.sort();
        let n = rels.len() as u32;
        for d in first..=today {
            // Releases out by this day: evenly spread over the window.
            let out = (((d - first + 1) * n).div_ceil(days)).clamp(1, n) as usize;
            for (age, (_, version, channel)) in rels[..out].iter().rev().take(10).enumerate() {
                let active = 20_000u64 >> age.min(12);
                adoption.push(AdoptionCount {
                    day: d,
                    product: product.clone(),
                    channel: channel.clone(),
                    version: version.clone(),
                    active,
                    new: active / 20,
                });
            }
        }
        for (i, (_, version, _)) in rels.iter().enumerate() {
            let report = |outcome, stage, code: Option<&str>, count| ReportCount {
                day: today,
                product: product.clone(),
                to: version.clone(),
                from: rels[i.saturating_sub(1)].1.clone(),
                outcome,
                stage,
                code: code.map(str::to_owned),
                window: 0,
                count,
            };
            reports.push(report(Outcome::Installed, None, None, 900 + i as u64));
            reports.push(report(
                Outcome::Failed,
                Some(Stage::Transfer),
                Some("BT_TIMEOUT"),
                9,
            ));
            reports.push(report(
                Outcome::Failed,
                Some(Stage::Install),
                Some("E_FLASH"),
                4,
            ));
        }
    }
    let (a, r) = (adoption.len(), reports.len());
    // In chunks: one flush is one transaction in the store.
    for (i, chunk) in adoption.chunks(5_000).enumerate() {
        stats
            .add(&Flush {
                id: format!("console-seed-a{i}-{today}"),
                adoption: chunk.to_vec(),
                reports: Vec::new(),
            })
            .await?;
    }
    stats
        .add(&Flush {
            id: format!("console-seed-r-{today}"),
            adoption: Vec::new(),
            reports,
        })
        .await?;
    println!(
        "seeded {a} adoption counts over {days} days and {r} report counts for {} releases",
        releases.len()
    );
    Ok(())
}
