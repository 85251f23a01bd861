//! No byte changed anywhere in a signed document (the keyset, the
//! release envelope, the freshness statement, as the server sends them) or
//! in the artifact is ever accepted.

use crate::support::*;
use firmcast_client::State;
use proptest::prelude::*;
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Doc {
    Keyset,
    Release,
    Freshness,
    Artifact,
}

/// A server with 2.2.0 published, and its genuine update answer.
fn setup() -> (Keys, Server, Value) {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    server.publish(&keys, P, "2.2.0", 1, firmware(2000, 3));
    let answer = serde_json::json!({"results": [server.item(P, "2.0.0", "stable")], "day": 1});
    (keys, server, answer)
}

fn flip(bytes: &mut [u8], pos: prop::sample::Index, mask: u8) {
    let i = pos.index(bytes.len());
    bytes[i] ^= mask;
}

/// Replaces the JSON at `pointer` with its text flipped; `false` when the
/// flipped text is no longer JSON (then the whole answer is unreadable).
fn flip_embedded(answer: &mut Value, pointer: &str, pos: prop::sample::Index, mask: u8) -> bool {
    let mut text = serde_json::to_vec(answer.pointer(pointer).unwrap()).unwrap();
    flip(&mut text, pos, mask);
    match serde_json::from_slice(&text) {
        Ok(v) => {
            *answer.pointer_mut(pointer).unwrap() = v;
            true
        }
        Err(_) => false,
    }
}

fn accepted(doc: Doc, pos: prop::sample::Index, mask: u8) -> bool {
    let (keys, mut server, mut answer) = setup();
    let client = client(&keys);
    match doc {
        Doc::Keyset => flip(&mut server.keys, pos, mask),
        Doc::Release | Doc::Freshness => {
            let pointer = match doc {
                Doc::Release => "/results/0/update/release",
                _ => "/results/0/freshness",
            };
            if !flip_embedded(&mut answer, pointer, pos, mask) {
                return false;
            }
            server.updates_override = Some(answer);
        }
        Doc::Artifact => {
            let update = single(&client, &server, &State::default(), "2.0.0")
                .unwrap()
                .unwrap();
            flip(&mut server.releases.get_mut(P).unwrap().fw, pos, mask);
            return download(&server, &update, &mut Vec::new(), 512).is_ok();
        }
    }
    matches!(
        single(&client, &server, &State::default(), "2.0.0"),
        Ok(Some(_))
    )
}

#[test]
fn the_genuine_documents_are_accepted() {
    // Without this, the property below could pass by refusing everything.
    let (keys, server, _) = setup();
    let client = client(&keys);
    let update = single(&client, &server, &State::default(), "2.0.0")
        .unwrap()
        .unwrap();
    download(&server, &update, &mut Vec::new(), 512).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_changed_byte_is_accepted(
        doc in prop_oneof![Just(Doc::Keyset), Just(Doc::Release), Just(Doc::Freshness), Just(Doc::Artifact)],
        pos in any::<prop::sample::Index>(),
        // Any change of one byte: single bit flips and every other pattern.
        mask in 1u8..=255,
    ) {
        prop_assert!(!accepted(doc, pos, mask), "{doc:?} with a byte xor {mask:#04x} at {pos:?} was accepted");
    }
}
