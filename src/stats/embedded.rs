//! The embedded stats store: tables in `state.redb`, one write transaction
//! per flush.

use super::{
    window_fields, window_from_fields, Adoption, DayAdoption, Flush, StatsError, StatsStore,
    WindowKey, WindowReports,
};
use crate::storage::embedded::{DbResult, EmbeddedDb};
use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// (product, day, channel, version) -> (active, new).
const ADOPTION: TableDefinition<(&str, u32, &str, &str), (u64, u64)> =
    TableDefinition::new("stats_adoption");
/// (product, day, to, from, outcome, stage, code).
type ReportKey<'a> = (&'a str, u32, &'a str, &'a str, &'a str, &'a str, &'a str);
/// [`ReportKey`] -> count.
const REPORTS: TableDefinition<ReportKey, u64> = TableDefinition::new("stats_reports");
/// (product, version, window, field) -> count; fields as in
/// [`super::window_fields`].
const WINDOWS: TableDefinition<(&str, &str, u32, &str), u64> =
    TableDefinition::new("stats_windows");
/// flush id -> the day it was added (pruned with the counts).
const FLUSHES: TableDefinition<&str, u32> = TableDefinition::new("stats_flushes");

pub struct EmbeddedStatsStore {
    db: EmbeddedDb,
}

impl EmbeddedStatsStore {
    /// The store on an opened file, its tables created when missing. Blocking.
    pub fn new(db: EmbeddedDb) -> Result<Self, StatsError> {
        let txn = db.database().begin_write().db()?;
        txn.open_table(ADOPTION).db()?;
        txn.open_table(REPORTS).db()?;
        txn.open_table(WINDOWS).db()?;
        txn.open_table(FLUSHES).db()?;
        txn.commit().db()?;
        Ok(EmbeddedStatsStore { db })
    }
}

#[async_trait]
impl StatsStore for EmbeddedStatsStore {
    async fn add(&self, flush: &Flush) -> Result<(), StatsError> {
        let flush = flush.clone();
        self.db
            .run(move |db| {
                let txn = db.begin_write().db()?;
                {
                    let mut flushes = txn.open_table(FLUSHES).db()?;
                    if flushes.get(flush.id.as_str()).db()?.is_some() {
                        return Ok(());
                    }
                    let day = flush
                        .adoption
                        .iter()
                        .map(|a| a.day)
                        .chain(flush.reports.iter().map(|r| r.day))
                        .max()
                        .unwrap_or(0);
                    flushes.insert(flush.id.as_str(), day).db()?;
                    let mut adoption = txn.open_table(ADOPTION).db()?;
                    for a in &flush.adoption {
                        let key = (
                            a.product.as_str(),
                            a.day,
                            a.channel.as_str(),
                            a.version.as_str(),
                        );
                        let (active, new) = adoption.get(key).db()?.map_or((0, 0), |v| v.value());
                        adoption
                            .insert(key, (active + a.active, new + a.new))
                            .db()?;
                    }
                    let mut reports = txn.open_table(REPORTS).db()?;
                    let mut windows = txn.open_table(WINDOWS).db()?;
                    for r in &flush.reports {
                        let key = (
                            r.product.as_str(),
                            r.day,
                            r.to.as_str(),
                            r.from.as_str(),
                            r.outcome.as_str(),
                            r.stage.map_or("", |s| s.as_str()),
                            r.code.as_deref().unwrap_or(""),
                        );
                        let n = reports.get(key).db()?.map_or(0, |v| v.value());
                        reports.insert(key, n + r.count).db()?;
                        for field in window_fields(r) {
                            let key = (r.product.as_str(), r.to.as_str(), r.window, field.as_str());
                            let n = windows.get(key).db()?.map_or(0, |v| v.value());
                            windows.insert(key, n + r.count).db()?;
                        }
                    }
                }
                txn.commit().db()?;
                Ok(())
            })
            .await
    }

    async fn adoption(
        &self,
        product: &str,
        channel: Option<&str>,
        days: RangeInclusive<u32>,
    ) -> Result<Vec<DayAdoption>, StatsError> {
        let (product, channel) = (product.to_owned(), channel.map(str::to_owned));
        self.db
            .run(move |db| {
                let txn = db.begin_read().db()?;
                let table = txn.open_table(ADOPTION).db()?;
                let (first, last) = (*days.start(), *days.end());
                let mut out: BTreeMap<u32, DayAdoption> = BTreeMap::new();
                let range = table
                    .range(
                        (product.as_str(), first, "", "")
                            ..=(product.as_str(), last, "\u{10ffff}", "\u{10ffff}"),
                    )
                    .db()?;
                for row in range {
                    let (key, value) = row.db()?;
                    let (_, day, ch, version) = key.value();
                    if channel.as_deref().is_some_and(|c| c != ch) {
                        continue;
                    }
                    let (active, new) = value.value();
                    let entry = out.entry(day).or_insert_with(|| DayAdoption {
                        day,
                        versions: BTreeMap::new(),
                    });
                    let a: &mut Adoption = entry.versions.entry(version.to_owned()).or_default();
                    a.active += active;
                    a.new += new;
                }
                Ok(out.into_values().collect())
            })
            .await
    }

    async fn windows(&self, keys: &[WindowKey]) -> Result<Vec<WindowReports>, StatsError> {
        let keys = keys.to_vec();
        self.db
            .run(move |db| {
                let txn = db.begin_read().db()?;
                let table = txn.open_table(WINDOWS).db()?;
                let mut out = Vec::with_capacity(keys.len());
                for (p, v, window) in &keys {
                    let (p, v, w) = (p.as_str(), v.as_str(), *window);
                    let mut fields = Vec::new();
                    for row in table.range((p, v, w, "")..=(p, v, w, "\u{10ffff}")).db()? {
                        let (key, value) = row.db()?;
                        fields.push((key.value().3.to_owned(), value.value()));
                    }
                    out.push(window_from_fields(
                        fields.iter().map(|(f, n)| (f.as_str(), *n)),
                    ));
                }
                Ok(out)
            })
            .await
    }

    async fn prune(&self, today: u32) -> Result<(), StatsError> {
        let before_day = today.saturating_sub(super::RETENTION_DAYS);
        // A flush is retried within seconds of its first try: its id need
        // not outlive a day or two.
        let flushes_before = today.saturating_sub(2);
        self.db
            .run(move |db| {
                let txn = db.begin_write().db()?;
                {
                    let mut adoption = txn.open_table(ADOPTION).db()?;
                    adoption
                        .retain(|(_, day, _, _), _| day >= before_day)
                        .db()?;
                    let mut reports = txn.open_table(REPORTS).db()?;
                    reports
                        .retain(|(_, day, _, _, _, _, _), _| day >= before_day)
                        .db()?;
                    let mut flushes = txn.open_table(FLUSHES).db()?;
                    flushes.retain(|_, day| day >= flushes_before).db()?;
                }
                txn.commit().db()?;
                Ok(())
            })
            .await
    }
}
