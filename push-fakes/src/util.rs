//! Cheap bookkeeping for the fakes' hot paths: an append-only byte arena for
//! what every request records, an interner for what many requests share,
//! JSON walking without building `serde_json::Value` trees, fast randomness.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Where a string sits in an [`Arena`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    start: usize,
    len: usize,
}

/// Append-only storage for the strings every request leaves behind (device
/// tokens): one growing buffer instead of an allocation per request.
#[derive(Default)]
pub(crate) struct Arena(Vec<u8>);

impl Arena {
    pub fn push(&mut self, s: &str) -> Span {
        let start = self.0.len();
        self.0.extend_from_slice(s.as_bytes());
        Span {
            start,
            len: s.len(),
        }
    }

    /// Whether `span` holds exactly `s` (cheaper than `get(span) == s`).
    pub fn is(&self, span: Span, s: &str) -> bool {
        span.len == s.len() && self.0[span.start..span.start + span.len] == *s.as_bytes()
    }

    pub fn get(&self, span: Span) -> &str {
        // Only whole `&str`s are pushed, so every span is valid UTF-8.
        std::str::from_utf8(&self.0[span.start..span.start + span.len]).expect("pushed as str")
    }
}

/// Distinct byte strings, each stored once and named by its index: the
/// payloads and collapse ids of a fan-out job repeat for every token. The
/// last one interned is checked first (a job sends the same bytes in a row).
#[derive(Default)]
pub(crate) struct Interner {
    items: Vec<Box<[u8]>>,
    index: HashMap<Box<[u8]>, u32>,
    last: u32,
}

impl Interner {
    pub fn intern(&mut self, bytes: &[u8]) -> u32 {
        if self
            .items
            .get(self.last as usize)
            .is_some_and(|b| **b == *bytes)
        {
            return self.last;
        }
        let id = match self.index.get(bytes) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.items.len()).expect("fewer than 2^32 distinct");
                self.items.push(bytes.into());
                self.index.insert(bytes.into(), id);
                id
            }
        };
        self.last = id;
        id
    }

    pub fn get(&self, id: u32) -> &[u8] {
        &self.items[id as usize]
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}

/// Any JSON value, walked and dropped: accepts exactly what
/// `serde_json::Value` accepts (numbers in range, valid UTF-8 strings, the
/// same nesting limit, as both go through `deserialize_any`), but builds
/// nothing. (`serde::de::IgnoredAny` is laxer: serde_json skips it without
/// range or UTF-8 checks and without the nesting limit.)
pub(crate) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

/// A JSON string as it was written, borrowed from the input, or `None` when
/// it had escapes (then it exists only unescaped, in a scratch buffer).
pub(crate) struct Str<'de>(pub Option<&'de str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Some(s)))
            }
            fn visit_str<E>(self, _: &str) -> Result<Str<'de>, E> {
                Ok(Str(None))
            }
        }
        d.deserialize_str(V)
    }
}

/// Run `f` on a JSON string (an object key or a value), escaped or not,
/// without allocating; anything but a string is an error.
pub(crate) fn with_str<'de, D, T>(d: D, f: impl FnOnce(&str) -> T) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<F>(F);
    impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E>(self, s: &str) -> Result<T, E> {
            Ok((self.0)(s))
        }
    }
    d.deserialize_str(V(f))
}

/// An object key (or string) looked up in a list while it is read: its
/// index, or `None` when it is none of them.
pub(crate) struct Key(pub &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        with_str(d, |s| self.0.iter().position(|k| *k == s))
    }
}

/// Any string, checked and dropped.
pub(crate) struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        with_str(d, |_| AnyStr)
    }
}

/// A serde error that only means "not the fast path's business".
pub(crate) fn bail<E: de::Error>() -> E {
    E::custom("not on the fast path")
}

/// A fast non-cryptographic random number (splitmix64 per thread, seeded
/// from the OS): for ids that must look random and differ, not be secret.
pub(crate) fn fast_u64() -> u64 {
    thread_local!(static STATE: Cell<u64> = Cell::new(rand::random()));
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Write `bytes` as hex digits into `out` (twice as long).
pub(crate) fn hex_into(bytes: &[u8], upper: bool, out: &mut [u8]) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = digits[usize::from(b >> 4)];
        out[2 * i + 1] = digits[usize::from(b & 15)];
    }
}

/// A string checked by a predicate while it is read (escaped or not).
pub(crate) struct StrCheck(pub fn(&str) -> bool);

impl<'de> DeserializeSeed<'de> for StrCheck {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        with_str(d, self.0)
    }
}
