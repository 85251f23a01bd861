//! Delivery recording: what an accepted message leaves behind, kept compact
//! so a fan-out benchmark's millions of sends stay cheap, and rebuilt into
//! [`FcmDelivery`] only when a test asks.

use std::collections::HashMap;
use std::sync::MutexGuard;

use hyper::StatusCode;
use serde_json::Value;

use crate::server::{json_bytes, Resp};
use crate::util::{self, Span};

use super::message::Accepted;
use super::{FcmDelivery, Shared, State};

/// What the fake keeps of an accepted message; [`FcmDelivery`] is rebuilt
/// from it on demand: the registration token in the arena, the request body
/// as a [`Template`] (the body without the token, which a fan-out job's
/// messages share), the message name's two numbers.
pub(super) struct Delivered {
    pub(super) token: Span,
    pub(super) template: u32,
    seq: u64,
    suffix: u64,
}

/// A request body with the registration token cut out at `token_at` (or
/// whole, when the token's place is not known), and the message's
/// `android.collapse_key`, which lies outside the token.
pub(super) struct Template {
    bytes: Box<[u8]>,
    token_at: Option<usize>,
    pub(super) collapse_key: Option<String>,
}

/// Distinct templates, the last one used checked first.
#[derive(Default)]
pub(super) struct Templates {
    pub(super) items: Vec<Template>,
    index: HashMap<(Option<usize>, Box<[u8]>), u32>,
    last: u32,
}

impl Templates {
    /// The template of `body`, whose token is `body[at..at + len]` when
    /// `token` is `Some((at, len))`.
    fn intern(
        &mut self,
        body: &[u8],
        token: Option<(usize, usize)>,
        collapse_key: Option<&str>,
    ) -> u32 {
        let (head, tail) = match token {
            Some((at, len)) => (&body[..at], &body[at + len..]),
            None => (body, &[][..]),
        };
        let token_at = token.map(|(at, _)| at);
        if let Some(t) = self.items.get(self.last as usize) {
            if t.token_at == token_at
                && t.bytes.len() == head.len() + tail.len()
                && t.bytes[..head.len()] == *head
                && t.bytes[head.len()..] == *tail
            {
                return self.last;
            }
        }
        let key = (token_at, [head, tail].concat().into_boxed_slice());
        let id = match self.index.get(&key) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.items.len()).expect("fewer than 2^32 templates");
                self.items.push(Template {
                    bytes: key.1.clone(),
                    token_at,
                    collapse_key: collapse_key.map(str::to_owned),
                });
                self.index.insert(key, id);
                id
            }
        };
        self.last = id;
        id
    }
}

impl State {
    pub(super) fn delivery(&self, d: &Delivered, project: &str) -> FcmDelivery {
        let t = &self.templates.items[d.template as usize];
        let token = self.tokens.get(d.token);
        let body = match t.token_at {
            Some(at) => [&t.bytes[..at], token.as_bytes(), &t.bytes[at..]].concat(),
            None => t.bytes.to_vec(),
        };
        let mut body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        FcmDelivery {
            token: token.to_owned(),
            name: message_name(project, d.seq, d.suffix),
            collapse_key: t.collapse_key.clone(),
            message: body["message"].take(),
        }
    }
}

fn message_name(project: &str, seq: u64, suffix: u64) -> String {
    format!("projects/{project}/messages/0:{seq}%{suffix:016x}")
}

/// Record an accepted message and answer with its name.
pub(super) fn deliver(
    shared: &Shared,
    mut state: MutexGuard<'_, State>,
    body: &[u8],
    accepted: &Accepted<'_>,
    token: Span,
) -> Resp {
    state.next += 1;
    let seq = state.next;
    let suffix = util::fast_u64();
    let template = state.templates.intern(
        body,
        accepted.token_at.map(|at| (at, accepted.token.len())),
        accepted.collapse_key.as_deref(),
    );
    state.deliveries.push(Delivered {
        token,
        template,
        seq,
        suffix,
    });
    drop(state);
    #[derive(serde::Serialize)]
    struct Name<'a> {
        name: &'a str,
    }
    let name = message_name(&shared.options.project_id, seq, suffix);
    let body = serde_json::to_vec(&Name { name: &name }).expect("a string serializes");
    json_bytes(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::message::{accept, firmcast_body};
    use super::*;

    #[test]
    fn fake_fcm_deliveries_are_rebuilt_from_templates() {
        let mut state = State::default();
        let mut expected = Vec::new();
        for (i, body) in [
            firmcast_body("tok-1"),
            firmcast_body("tok-2"),
            json!({"message": {"token": "tok\u{e9}-3", "data": {"a": "b"}}}),
            firmcast_body("tok-4"),
        ]
        .iter()
        .enumerate()
        {
            let mut bytes = serde_json::to_vec(body).unwrap();
            if i == 2 {
                // An escaped token: its place in the body is not known.
                bytes = String::from_utf8(bytes)
                    .unwrap()
                    .replace('\u{e9}', "\\u00e9")
                    .into_bytes();
            }
            let accepted = accept(&bytes).unwrap().unwrap();
            assert_eq!(accepted.token_at.is_some(), i != 2);
            let span = state.tokens.push(&accepted.token);
            let template = state.templates.intern(
                &bytes,
                accepted.token_at.map(|at| (at, accepted.token.len())),
                accepted.collapse_key.as_deref(),
            );
            state.deliveries.push(Delivered {
                token: span,
                template,
                seq: i as u64 + 1,
                suffix: 0xab,
            });
            expected.push(body["message"].clone());
        }
        // tok-1, tok-2 and tok-4 share one template.
        assert_eq!(state.templates.items.len(), 2);
        for (d, message) in state.deliveries.iter().zip(&expected) {
            let got = state.delivery(d, "p");
            assert_eq!(&got.message, message);
            assert_eq!(got.token, message["token"].as_str().unwrap());
            assert_eq!(
                got.collapse_key.as_deref(),
                message["android"]["collapse_key"].as_str()
            );
            assert!(got.name.starts_with("projects/p/messages/0:"));
            assert!(got.name.ends_with("%00000000000000ab"));
        }
    }
}
