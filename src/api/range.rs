//! HTTP `Range: bytes=...` for artifact downloads: one range, or the whole.

use std::ops::Range;

#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: send everything with 200.
    Full,
    /// One satisfiable range: send it with 206.
    Partial(Range<u64>),
    /// Syntactically fine but outside the file: 416.
    Unsatisfiable,
}

/// Parses a Range header against a file of `size` bytes (RFC 9110 14.1.2).
/// Malformed headers and multiple ranges fall back to the full body, as the
/// RFC allows.
pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (start.trim(), end.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => RangeRequest::Partial(size.saturating_sub(n)..size),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (s, "") => match num(s) {
            Some(s) if s < size => RangeRequest::Partial(s..size),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (s, e) => match (num(s), num(e)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial(s..e.saturating_add(1).min(size))
                }
            }
            _ => RangeRequest::Full,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(parse(None, 100), Full);
        assert_eq!(parse(Some("bytes=0-9"), 100), Partial(0..10));
        assert_eq!(parse(Some("bytes=90-"), 100), Partial(90..100));
        assert_eq!(parse(Some("bytes=-10"), 100), Partial(90..100));
        assert_eq!(parse(Some("bytes=-1000"), 100), Partial(0..100));
        assert_eq!(parse(Some("bytes=50-1000"), 100), Partial(50..100));
        assert_eq!(parse(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse(Some("bytes=100-200"), 100), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse(Some("bytes=5-1"), 100), Full);
        assert_eq!(parse(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse(Some("items=0-1"), 100), Full);
        assert_eq!(parse(Some("bytes=x-1"), 100), Full);
        assert_eq!(parse(Some("bytes=99999999999999999999999-"), 100), Full);
    }

    proptest! {
        #[test]
        fn partial_ranges_are_inside_the_file(h in "\\PC{0,40}", size in 0u64..1_000_000) {
            if let Partial(r) = parse(Some(&h), size) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }
    }
}
