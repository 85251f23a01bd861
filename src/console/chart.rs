//! The adoption chart, drawn on the server as SVG: active installs per day
//! by installed version, stacked, oldest version at the bottom.
//!
//! Why SVG from the server rather than a JS chart library: the page needs
//! no script to show it (and none inline, so the CSP stays strict), nothing
//! but the drawn shape leaves the server, it costs microseconds to draw,
//! and a `viewBox` scales it to a phone's width. Colours come from the
//! stylesheet (`.s0` .. `.s8`), so the chart needs no inline style either.

use super::format::{count, escape};
use crate::api::stats::DayView;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Versions drawn on their own; the rest are stacked as "other".
const SERIES: usize = 8;
const W: f64 = 720.0;
const H: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// One legend entry: the colour's class, the version, its latest count.
pub struct Legend {
    pub class: String,
    pub version: String,
    pub latest: String,
}

pub struct Chart {
    /// The `<svg>` element, every text in it escaped.
    pub svg: String,
    /// Newest version first.
    pub legend: Vec<Legend>,
    /// True when nothing was counted in the window.
    pub empty: bool,
    /// Active installs on the last day, all versions.
    pub latest_total: String,
}

/// The chart of `days` (only days with counts, oldest first) over the
/// `dates` of the window, oldest first.
pub fn draw(title: &str, dates: &[String], days: &[DayView]) -> Chart {
    let n = dates.len().max(1);
    let at: BTreeMap<&str, usize> = dates
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let mut per_version: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for d in days {
        let Some(&i) = at.get(d.day.as_str()) else {
            continue;
        };
        for (version, a) in &d.versions {
            per_version
                .entry(version.as_str())
                .or_insert_with(|| vec![0; n])[i] += a.active;
        }
    }
    // The biggest versions get their own colour; the rest are "other".
    let mut by_total: Vec<(&str, u64)> = per_version
        .iter()
        .map(|(v, counts)| (*v, counts.iter().sum()))
        .collect();
    by_total.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut series: Vec<(String, Vec<u64>)> = Vec::new();
    let mut other = vec![0u64; n];
    for (i, (version, _)) in by_total.iter().enumerate() {
        if i < SERIES && *version != "other" {
            series.push(((*version).to_owned(), per_version[version].clone()));
        } else {
            for (o, c) in other.iter_mut().zip(&per_version[version]) {
                *o += c;
            }
        }
    }
    // Oldest at the bottom: semver order, unparsable names first.
    series.sort_by(|a, b| {
        match (
            semver::Version::parse(&a.0).ok(),
            semver::Version::parse(&b.0).ok(),
        ) {
            (Some(x), Some(y)) => x.cmp(&y),
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (None, None) => a.0.cmp(&b.0),
        }
    });
    if other.iter().any(|c| *c > 0) {
        series.insert(0, ("other".to_owned(), other));
    }
    let totals: Vec<u64> = (0..n)
        .map(|i| series.iter().map(|(_, c)| c[i]).sum())
        .collect();
    let latest_total = count(totals.last().copied().unwrap_or(0));
    let max = nice_ceiling(totals.iter().copied().max().unwrap_or(0));
    let empty = totals.iter().all(|t| *t == 0);

    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |i: usize| {
        if n == 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: u64| TOP + plot_h * (1.0 - v as f64 / max as f64);

    let mut svg = String::with_capacity(4096);
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    );
    let _ = write!(svg, "<title>{}</title>", escape(title));
    for frac in [0u64, 1, 2] {
        let half = max as f64 * frac as f64 / 2.0;
        let gy = TOP + plot_h * (1.0 - half / max as f64);
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{gy:.1}\" y2=\"{gy:.1}\"/><text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            gy + 4.0,
            if half.fract() == 0.0 { short(half as u64) } else { format!("{half}") }
        );
    }
    let mut lower = vec![0u64; n];
    let classes = class_names(&series);
    for ((version, counts), class) in series.iter().zip(&classes) {
        let upper: Vec<u64> = lower.iter().zip(counts).map(|(l, c)| l + c).collect();
        let mut d = String::with_capacity(n * 24);
        for (i, u) in upper.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { "L" },
                x(i),
                y(*u)
            );
        }
        for (i, l) in lower.iter().enumerate().rev() {
            let _ = write!(d, "L{:.1},{:.1}", x(i), y(*l));
        }
        let _ = write!(
            svg,
            "<path class=\"{class}\" d=\"{d}Z\"><title>{}</title></path>",
            escape(version)
        );
        lower = upper;
    }
    let label_at = [0, n / 2, n - 1];
    for (k, i) in label_at.into_iter().enumerate() {
        let anchor = ["start", "middle", "end"][k];
        let text = dates.get(i).map(|d| d.get(5..).unwrap_or(d)).unwrap_or("");
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            x(i),
            H - 8.0,
            escape(text)
        );
    }
    svg.push_str("</svg>");

    let legend = series
        .iter()
        .zip(&classes)
        .rev()
        .map(|((version, counts), class)| Legend {
            class: class.clone(),
            version: version.clone(),
            latest: count(counts.last().copied().unwrap_or(0)),
        })
        .collect();
    Chart {
        svg,
        legend,
        empty,
        latest_total,
    }
}

/// `s1`.. for versions bottom up, `s0` for "other".
fn class_names(series: &[(String, Vec<u64>)]) -> Vec<String> {
    let mut next = 1;
    series
        .iter()
        .map(|(v, _)| {
            if v == "other" {
                "s0".to_owned()
            } else {
                next += 1;
                format!("s{}", next - 1)
            }
        })
        .collect()
}

/// The axis top: 1, 2 or 5 times a power of ten, at least `v` (and 1).
fn nice_ceiling(v: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m) >= v.max(1) {
                return step.saturating_mul(m);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// "12k", "3.4M": axis labels that fit.
fn short(v: u64) -> String {
    match v {
        0..=9_999 => v.to_string(),
        10_000..=999_999 => format!("{}k", v / 1000),
        _ => format!("{:.1}M", v as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Adoption;

    fn day(date: &str, versions: &[(&str, u64)]) -> DayView {
        DayView {
            day: date.into(),
            versions: versions
                .iter()
                .map(|(v, a)| ((*v).to_owned(), Adoption { active: *a, new: 0 }))
                .collect(),
        }
    }

    #[test]
    fn versions_stack_oldest_first_and_the_legend_lists_newest_first() {
        let dates: Vec<String> = ["2026-12-01", "2026-12-02", "2026-12-03"]
            .map(String::from)
            .to_vec();
        let days = [
            day("2026-12-01", &[("1.10.0", 5), ("1.9.0", 90)]),
            day("2026-12-03", &[("1.10.0", 60), ("1.9.0", 40)]),
        ];
        let c = draw("P <&>", &dates, &days);
        assert!(!c.empty);
        assert_eq!(c.latest_total, "100");
        let legend: Vec<&str> = c.legend.iter().map(|l| l.version.as_str()).collect();
        assert_eq!(legend, ["1.10.0", "1.9.0"], "semver order, not text order");
        assert!(c.svg.contains("P &lt;&amp;&gt;"), "titles are escaped");
        assert!(c.svg.find("<title>1.9.0").unwrap() < c.svg.find("<title>1.10.0").unwrap());
        assert!(
            !c.svg.contains("style="),
            "no inline style: the CSP forbids it"
        );
    }

    #[test]
    fn many_versions_fold_into_other_and_nothing_counted_is_empty() {
        let dates = vec!["2026-12-01".to_owned()];
        let versions: Vec<(String, u64)> = (0..12)
            .map(|i| (format!("1.{i}.0"), 10 + i as u64))
            .collect();
        let refs: Vec<(&str, u64)> = versions.iter().map(|(v, n)| (v.as_str(), *n)).collect();
        let c = draw("P", &dates, &[day("2026-12-01", &refs)]);
        assert_eq!(c.legend.len(), SERIES + 1);
        assert_eq!(c.legend.last().unwrap().version, "other");
        assert!(draw("P", &dates, &[]).empty);
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(101), 200);
        assert_eq!(nice_ceiling(5000), 5000);
    }
}
