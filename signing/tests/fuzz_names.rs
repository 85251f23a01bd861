//! Fuzz-style properties (proptest; cargo-fuzz needs nightly) for the name
//! checks of the signing crate: product names and channels match their
//! documented patterns, locales never panic, and versions are exactly SemVer
//! 2.0.0, each against a by-hand reference matcher (in `fuzz_support`, which
//! the payload properties also use).
//!
//! Each property runs a fixed number of cases (CHEAP in `fuzz_support`) so the
//! file takes about 2 s in a debug build and CI stays bounded. For a longer
//! local run set `PROPTEST_CASES`, which replaces every per-property count,
//! e.g. `PROPTEST_CASES=50000 cargo nextest run -p firmcast-signing --test fuzz_names`.
//! A failure prints the minimal input; nothing is written to the source tree.

mod fuzz_support;

use firmcast_signing::names::{parse_version, validate_channel, validate_locale, validate_product};
use fuzz_support::{
    arb_product, arb_version, config, invalid_field, reference_channel, reference_product,
    reference_semver, CHEAP,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(config(CHEAP))]

    #[test]
    fn product_names_match_the_design_pattern(s in arb_product()) {
        let got = validate_product(&s);
        prop_assert_eq!(got.is_ok(), reference_product(&s), "{:?}: {:?}", s, got);
        if let Err(e) = got {
            prop_assert_eq!(invalid_field(&e), Some("product"));
            prop_assert!(e.to_string().len() < 400, "error floods: {}", e);
        }
    }

    #[test]
    fn channels_match_their_pattern(s in prop_oneof![
        any::<String>(),
        "[a-z][a-z0-9-]{0,34}",
        prop::collection::vec(prop::sample::select("az09-_A ".chars().collect::<Vec<_>>()), 0..36)
            .prop_map(|c| c.into_iter().collect::<String>()),
    ]) {
        let got = validate_channel(&s);
        prop_assert_eq!(got.is_ok(), reference_channel(&s), "{:?}", s);
    }

    #[test]
    fn locales_never_panic(s in prop_oneof![any::<String>(), "[a-zA-Z0-9_-]{0,40}"]) {
        if let Err(e) = validate_locale(&s) {
            prop_assert_eq!(invalid_field(&e), Some("locale"));
        }
    }

    /// Accepts exactly SemVer 2.0, names the field when it refuses, and
    /// prints an accepted version back exactly as written.
    #[test]
    fn versions_are_exactly_semver(s in arb_version()) {
        let got = parse_version(&s);
        prop_assert_eq!(got.is_ok(), reference_semver(&s), "{:?}: {:?}", s, got);
        match got {
            Ok(v) => prop_assert_eq!(v.to_string(), s),
            Err(e) => {
                prop_assert_eq!(invalid_field(&e), Some("version"));
                prop_assert!(e.to_string().len() < 400, "error floods: {}", e);
            }
        }
    }
}
