//! The fast validator: [`check_message`]'s checks as serde visitors over the
//! raw body, so firmcast's usual messages are accepted without building a
//! `Value` tree per request.
//!
//! [`check_message`]: super::check_message

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::util::{bail, AnyStr, Key, Skip, Str, StrCheck};

use super::{
    reserved_data_key, ttl_ok, ANDROID_KEYS, APNS_KEYS, MAX_MESSAGE_SIZE, MESSAGE_KEYS,
    NOTIFICATION_KEYS,
};

/// What [`check_fast`] found in a message it accepts.
pub(super) struct Fast<'a> {
    pub(super) token: &'a str,
    pub(super) collapse_key: Option<&'a str>,
}

/// [`check_message`]'s checks on a message to a token, without building a
/// `Value` tree: `Some` only when the body certainly passes them all, with
/// the token and collapse key borrowed from the body. Anything unusual (a
/// topic or condition, a duplicate key, which `Value` resolves last-wins,
/// an escaped token or collapse key, a body near the size limit, any
/// error) is `None`, and goes to `check_message` for the exact answer.
///
/// [`check_message`]: super::check_message
pub(super) fn check_fast(body: &[u8]) -> Option<Fast<'_>> {
    // `check_message` limits the compact JSON of `data` + `notification`
    // (`null`, 4 bytes, when absent), which is never longer than as
    // written: a body this short always passes.
    if body.len() + 8 > MAX_MESSAGE_SIZE {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = Top::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(top.0)
}

/// `{"message": ..., "validate_only": ...}`.
struct Top<'a>(Fast<'a>);
/// A message to a token.
struct Message<'a>(Fast<'a>);
/// `message.data`: string values, no reserved keys.
struct Data;
/// `message.notification`: title, body, image, all strings.
struct Notification;
/// `message.android`, with its collapse key.
struct Android<'a>(Option<&'a str>);
/// `message.android.notification`: `tag`, if any, a string.
struct AndroidNotification;
/// `message.apns`: `headers`, if any, strings.
struct Apns;
/// An object of strings.
struct Strings;

/// Marks `i` seen in `seen`; an error when it was already.
fn once<E: de::Error>(seen: &mut u16, i: usize) -> Result<(), E> {
    if *seen & (1 << i) != 0 {
        return Err(bail());
    }
    *seen |= 1 << i;
    Ok(())
}

/// `impl Deserialize` for a type read as a JSON object by `visit_map`.
macro_rules! object_visitor {
    ($ty:ident $(<$lt:lifetime>)?, $what:literal, |$map:ident| $body:block) => {
        impl<'de> Deserialize<'de> for $ty $(<$lt>)? {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty $(<$lt>)?;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        mut $map: A,
                    ) -> Result<Self::Value, A::Error> {
                        $body
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

object_visitor!(Top<'de>, "an FCM send request", |map| {
    let (mut seen, mut message) = (0, None);
    while let Some(key) = map.next_key_seed(Key(&["message", "validate_only"]))? {
        let i = key.ok_or_else(bail)?;
        once(&mut seen, i)?;
        if i == 0 {
            message = Some(map.next_value::<Message>()?.0);
        } else {
            map.next_value::<Skip>()?;
        }
    }
    message.map(Top).ok_or_else(bail)
});

object_visitor!(Message<'de>, "an FCM message", |map| {
    let (mut seen, mut token, mut collapse_key) = (0, None, None);
    while let Some(key) = map.next_key_seed(Key(&MESSAGE_KEYS))? {
        let i = key.ok_or_else(bail)?;
        once(&mut seen, i)?;
        match MESSAGE_KEYS[i] {
            "data" => {
                map.next_value::<Option<Data>>()?;
            }
            "notification" => {
                map.next_value::<Option<Notification>>()?;
            }
            "android" => collapse_key = map.next_value::<Option<Android>>()?.and_then(|a| a.0),
            "apns" => {
                map.next_value::<Option<Apns>>()?;
            }
            "token" => match map.next_value::<Str>()?.0 {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Err(bail()),
            },
            "topic" | "condition" => return Err(bail()),
            _ => {
                map.next_value::<Skip>()?;
            }
        }
    }
    let token = token.ok_or_else(bail)?;
    Ok(Message(Fast {
        token,
        collapse_key,
    }))
});

object_visitor!(Data, "message.data", |map| {
    while let Some(reserved) = map.next_key_seed(StrCheck(reserved_data_key))? {
        if reserved {
            return Err(bail());
        }
        map.next_value::<AnyStr>()?;
    }
    Ok(Data)
});

object_visitor!(Notification, "message.notification", |map| {
    while let Some(key) = map.next_key_seed(Key(&NOTIFICATION_KEYS))? {
        key.ok_or_else(bail)?;
        map.next_value::<AnyStr>()?;
    }
    Ok(Notification)
});

object_visitor!(Android<'de>, "message.android", |map| {
    let (mut seen, mut collapse_key) = (0, None);
    while let Some(key) = map.next_key_seed(Key(&ANDROID_KEYS))? {
        let i = key.ok_or_else(bail)?;
        once(&mut seen, i)?;
        let ok = match ANDROID_KEYS[i] {
            "collapse_key" => {
                collapse_key = map.next_value::<Str>()?.0;
                collapse_key.is_some()
            }
            "priority" => map.next_value_seed(StrCheck(|p| matches!(p, "NORMAL" | "HIGH")))?,
            "ttl" => map.next_value_seed(StrCheck(ttl_ok))?,
            "notification" => {
                map.next_value::<Option<AndroidNotification>>()?;
                true
            }
            _ => {
                map.next_value::<Skip>()?;
                true
            }
        };
        if !ok {
            return Err(bail());
        }
    }
    Ok(Android(collapse_key))
});

object_visitor!(AndroidNotification, "message.android.notification", |map| {
    let mut seen = 0;
    while let Some(key) = map.next_key_seed(Key(&["tag"]))? {
        if key.is_some() {
            once(&mut seen, 0)?;
            map.next_value::<AnyStr>()?;
        } else {
            map.next_value::<Skip>()?;
        }
    }
    Ok(AndroidNotification)
});

object_visitor!(Apns, "message.apns", |map| {
    let mut seen = 0;
    while let Some(key) = map.next_key_seed(Key(&APNS_KEYS))? {
        let i = key.ok_or_else(bail)?;
        once(&mut seen, i)?;
        if i == 0 {
            map.next_value::<Option<Strings>>()?;
        } else {
            map.next_value::<Skip>()?;
        }
    }
    Ok(Apns)
});

object_visitor!(Strings, "an object of strings", |map| {
    while map.next_key::<AnyStr>()?.is_some() {
        map.next_value::<AnyStr>()?;
    }
    Ok(Strings)
});
