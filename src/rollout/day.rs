//! Day numbers: days since 1970-01-01 UTC, the number every check answer
//! echoes (`"day"`) and apps send back (`last_day`). Read on the hot path as
//! one atomic load; a task moves it on at midnight.

use chrono::{DateTime, NaiveDate, Utc};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

/// The day number of `at`.
pub fn day_of(at: DateTime<Utc>) -> u32 {
    at.timestamp().div_euclid(86_400).clamp(0, u32::MAX as i64) as u32
}

/// `2026-12-02` for a day number.
pub fn date(day: u32) -> String {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_days(chrono::Days::new(u64::from(day))))
        .map_or_else(|| day.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

/// Today's day number, shared.
#[derive(Debug)]
pub struct Today(AtomicU32);

impl Default for Today {
    fn default() -> Self {
        Today(AtomicU32::new(day_of(Utc::now())))
    }
}

impl Today {
    pub fn get(&self) -> u32 {
        self.0.load(Relaxed)
    }

    /// Re-reads the clock; true when the day moved on.
    pub fn refresh(&self) -> bool {
        let now = day_of(Utc::now());
        self.0.swap(now, Relaxed) != now
    }

    /// How long until the next UTC midnight (and a few milliseconds).
    pub fn until_tomorrow() -> Duration {
        let now = Utc::now();
        let next = i64::from(day_of(now) + 1) * 86_400;
        let left = next * 1000 - now.timestamp_millis();
        Duration::from_millis(left.max(0) as u64 + 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_and_dates() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T23:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = day_of(at);
        assert_eq!(date(day), "2026-12-02");
        let next = DateTime::parse_from_rfc3339("2026-12-03T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(day_of(next), day + 1);
        assert_eq!(date(0), "1970-01-01");
        assert!(Today::until_tomorrow() <= Duration::from_secs(86_401));
    }
}
