//! Name patterns shared by the signed documents, the server's paths and its
//! blob keys; nothing outside these patterns reaches a file name or a key.

use crate::{Error, Result};

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`: no slash, no leading dot, so a product
/// can never name a path outside its directory.
pub fn validate_product(s: &str) -> Result<()> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "product",
            format!(
                "{:?} must be 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
                truncate(s)
            ),
        ))
    }
}

/// Channels are short lowercase words: `stable`, `beta`, `internal-qa`.
pub fn validate_channel(s: &str) -> Result<()> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "channel",
            format!(
                "{:?} must be 1 to 32 of a-z 0-9 -, starting with a letter (e.g. stable, beta)",
                truncate(s)
            ),
        ))
    }
}

/// BCP 47-ish locale tags as apps send them: `en`, `ja`, `pt-BR`, `zh_Hant`.
pub fn validate_locale(s: &str) -> Result<()> {
    let mut parts = s.split(['-', '_']);
    let lang = parts.next().unwrap_or("");
    let ok = s.len() <= 35
        && (2..=3).contains(&lang.len())
        && lang.bytes().all(|c| c.is_ascii_alphabetic())
        && parts
            .all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "locale",
            format!(
                "{:?} is not a language tag such as en, ja or pt-BR",
                truncate(s)
            ),
        ))
    }
}

/// Semantic version 2.0 with a field-named error.
pub fn parse_version(s: &str) -> Result<semver::Version> {
    if let Some(plain) = plain_version(s) {
        return Ok(plain);
    }
    semver::Version::parse(s).map_err(|e| {
        Error::invalid(
            "version",
            format!(
                "{:?} is not a semantic version such as 2.1.0 ({e})",
                truncate(s)
            ),
        )
    })
}

/// `MAJOR.MINOR.PATCH` of decimal numbers without leading zeros, the form
/// nearly every app sends, read in one pass; anything else (pre-release,
/// build, a malformed string) is `None`, for semver's general parser.
fn plain_version(s: &str) -> Option<semver::Version> {
    let mut parts = [0u64; 3];
    let mut at = 0;
    let mut digits = 0;
    let mut leading_zero = false;
    for &b in s.as_bytes() {
        match b {
            b'0'..=b'9' => {
                if leading_zero {
                    return None;
                }
                leading_zero = digits == 0 && b == b'0';
                let part = parts[at]
                    .checked_mul(10)?
                    .checked_add(u64::from(b - b'0'))?;
                parts[at] = part;
                digits += 1;
            }
            b'.' if digits > 0 && at < 2 => {
                at += 1;
                digits = 0;
                leading_zero = false;
            }
            _ => return None,
        }
    }
    (at == 2 && digits > 0).then(|| semver::Version::new(parts[0], parts[1], parts[2]))
}

/// Keeps hostile inputs from flooding error messages and logs.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The one-pass reader takes exactly what semver takes in its
        /// shape, and reads it alike.
        #[test]
        fn plain_versions_read_as_semver_reads_them(s in "[0-9.]{0,24}|[0-9]{1,21}\\.[0-9]{1,3}\\.[0-9]{1,21}") {
            match (plain_version(&s), semver::Version::parse(&s)) {
                (Some(fast), Ok(slow)) => prop_assert_eq!(fast, slow),
                (Some(fast), Err(e)) => prop_assert!(false, "{s:?} read as {fast} but semver says {e}"),
                (None, Ok(slow)) => prop_assert!(
                    !slow.pre.is_empty() || !slow.build.is_empty(),
                    "{s:?} left to semver, which reads it plain"
                ),
                (None, Err(_)) => {}
            }
        }
    }

    #[test]
    fn plain_versions_and_their_near_misses() {
        for ok in ["0.0.0", "2.1.0", "10.20.30", "18446744073709551615.0.1"] {
            assert_eq!(
                plain_version(ok),
                Some(semver::Version::parse(ok).unwrap()),
                "{ok}"
            );
        }
        for other in [
            "01.2.3",
            "1.02.3",
            "1.2",
            "1.2.3.4",
            "1..3",
            ".1.2",
            "1.2.",
            "1.2.3-rc.1",
            "18446744073709551616.0.0",
            "",
        ] {
            assert_eq!(plain_version(other), None, "{other}");
        }
    }

    #[test]
    fn products() {
        for ok in ["WH-1000XM5", "a", "A.b_c-9", &"x".repeat(64)] {
            validate_product(ok).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "a\0",
            "-x",
            "é",
            &"x".repeat(65),
            "a b",
        ] {
            assert!(validate_product(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn channels_and_locales() {
        validate_channel("stable").unwrap();
        validate_channel("internal-qa").unwrap();
        assert!(validate_channel("Stable").is_err());
        assert!(validate_channel("").is_err());
        for ok in ["en", "ja", "pt-BR", "zh_Hant", "es-419"] {
            validate_locale(ok).unwrap();
        }
        for bad in ["", "e", "english-language-tag-x", "en--US", "../x"] {
            assert!(validate_locale(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_input_is_truncated_in_errors() {
        let msg = validate_product(&"y".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 300, "{msg}");
        assert!(msg.contains(&format!("{}...", "y".repeat(80))), "{msg}");
    }

    #[test]
    fn truncation_keeps_80_bytes_and_never_splits_a_character() {
        assert_eq!(truncate("short"), "short");
        assert_eq!(truncate(&"x".repeat(80)), "x".repeat(80));
        assert_eq!(truncate(&"x".repeat(81)), format!("{}...", "x".repeat(80)));
        // 'é' is two bytes at 79..81: the cut goes before it, not after.
        let s = format!("{}é{}", "a".repeat(79), "b".repeat(50));
        assert_eq!(truncate(&s), format!("{}...", "a".repeat(79)));
    }
}
