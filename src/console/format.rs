//! Numbers, sizes, times and release states as the pages print them.

use crate::state::StoredRelease;
use chrono::{DateTime, Utc};

/// Basis points as a percentage: `10000` is "100%", `250` is "2.5%".
pub fn pct(bp: u16) -> String {
    let whole = bp / 100;
    match bp % 100 {
        0 => format!("{whole}%"),
        r if r % 10 == 0 => format!("{whole}.{}%", r / 10),
        r => format!("{whole}.{r:02}%"),
    }
}

/// A fraction (0.05) as a percentage ("5%", "12.5%").
pub fn rate(fraction: f64) -> String {
    let p = fraction * 100.0;
    if (p - p.round()).abs() < 0.005 {
        format!("{}%", p.round())
    } else {
        format!("{p:.2}%")
    }
}

/// Thousands grouped: `9182736` is "9,182,736".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size people read: "8.8 MiB (9,182,736 bytes)".
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit} ({} bytes)", count(bytes))
}

/// "2026-12-02 10:00 UTC".
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// "in 3 h 20 min", "2 min ago": how far `t` is from now.
pub fn relative(t: DateTime<Utc>) -> String {
    let secs = (t - Utc::now()).num_seconds();
    let span = human(secs.unsigned_abs());
    if secs >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

fn human(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => match (secs % 3600) / 60 {
            0 => format!("{} h", secs / 3600),
            m => format!("{} h {m} min", secs / 3600),
        },
        _ => format!("{} d {} h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// Where a release stands, as one word and the class the page colours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// "live", "paused", "paused by its gate", "yanked".
    pub label: String,
    /// Who paused it and why, in words.
    pub detail: Option<String>,
    /// `live`, `paused`, `gate`, `yanked`: the badge's CSS class.
    pub class: &'static str,
}

pub fn state(s: &StoredRelease) -> State {
    if s.yanked {
        return State {
            label: "yanked".into(),
            detail: Some("offered to nobody; publish a newer version instead".into()),
            class: "yanked",
        };
    }
    if s.paused {
        let by = s.steering.paused_by.as_deref();
        if by == Some("health") {
            return State {
                label: "paused by its gate".into(),
                detail: s.steering.pause_reason.clone(),
                class: "gate",
            };
        }
        return State {
            label: "paused".into(),
            detail: Some(match (by, &s.steering.pause_reason) {
                (Some(by), Some(why)) => format!("paused by {by}: {why}"),
                (Some(by), None) => format!("paused by {by}"),
                (None, _) => "paused".into(),
            }),
            class: "paused",
        };
    }
    State {
        label: "live".into(),
        detail: None,
        class: "live",
    }
}

/// Text for an HTML or SVG text node or attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(pct(10_000), "100%");
        assert_eq!(pct(250), "2.5%");
        assert_eq!(pct(1), "0.01%");
        assert_eq!(pct(0), "0%");
        assert_eq!(rate(0.05), "5%");
        assert_eq!(rate(0.125), "12.50%");
        assert_eq!(count(9_182_736), "9,182,736");
        assert_eq!(count(999), "999");
        assert_eq!(size(9_182_736), "8.8 MiB (9,182,736 bytes)");
        assert_eq!(size(10), "10 bytes");
        assert_eq!(human(3 * 3600 + 20 * 60), "3 h 20 min");
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
