//! The keyset chain: first contact with the pinned root, rotation walked
//! link by link through `/v1/keys/{version}` (a root rotation included), and
//! every way to break it: wrong root, a missing link, an older or forked
//! keyset, a version far ahead, expiry.

use crate::support::*;
use chrono::{Duration, Utc};
use firmcast_client::{ErrorKind, State};
use firmcast_signing::{PrivateKey, Role};

/// Rotates `server` to keyset 2 (a new root, signed by old and new) and 3
/// (signed by the new root only); returns the new root.
fn rotate_twice(keys: &Keys, server: &mut Server) -> PrivateKey {
    let new_root = PrivateKey::generate();
    let mut k2 = keys.keyset(2, 1);
    k2.root = Some(Role::single(new_root.public().clone()));
    let mut k3 = keys.keyset(3, 1);
    k3.root = Some(Role::single(new_root.public().clone()));
    let v2 = k2.sign(&[&keys.root, &new_root]).unwrap().to_json_bytes();
    let v3 = k3.sign(&[&new_root]).unwrap().to_json_bytes();
    server.keys_at.insert(2, v2);
    server.keys_at.insert(3, v3.clone());
    server.keys = v3;
    server.keyset_version = 3;
    new_root
}

#[test]
fn a_rotated_keyset_is_walked_link_by_link() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    server.publish(&keys, P, "2.2.0", 1, firmware(100, 0));
    let client = client(&keys);
    let held = check(&client, &server, &State::default(), &[(P, "2.0.0")])
        .unwrap()
        .state;
    rotate_twice(&keys, &mut server);

    server.log.borrow_mut().clear();
    let o = check(&client, &server, &held, &[(P, "2.0.0")]).unwrap();
    assert_eq!(paths(&server), ["/v1/keys", "/v1/keys/2", "/v1/updates"]);
    assert!(o.results[0].outcome.as_ref().unwrap().is_some());
    assert_eq!(o.state.keyset_version(), Some(3));

    // A new install pinning the old root finds the oldest link it signed.
    server.log.borrow_mut().clear();
    let o = check(&client, &server, &State::default(), &[(P, "2.0.0")]).unwrap();
    assert_eq!(
        paths(&server),
        ["/v1/keys", "/v1/keys/1", "/v1/keys/2", "/v1/updates"]
    );
    assert_eq!(o.state.keyset_version(), Some(3));

    // Without the link that rotated the root, nobody may skip it.
    server.keys_at.remove(&2);
    let r = check(&client, &server, &held, &[(P, "2.0.0")]);
    assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::UntrustedKeyset);
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("does not keep version 2 to follow the rotation"));
    let r = check(&client, &server, &State::default(), &[(P, "2.0.0")]);
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("does not keep version 2"));
    // A server keeping no version the pinned root signed is not trusted at all.
    server.keys_at.remove(&1);
    let r = check(&client, &server, &State::default(), &[(P, "2.0.0")]);
    assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::UntrustedKeyset);
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("signed by the pinned root"));
}

#[test]
fn a_keyset_signed_by_a_wrong_root_is_refused_with_the_state_untouched() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    let client = client(&keys);
    let held = check(&client, &server, &State::default(), &[(P, "2.0.0")])
        .unwrap()
        .state;
    let evil = PrivateKey::generate();
    let forged = |version: u64| {
        let mut ks = keys.keyset(version, 1);
        ks.root = Some(Role::single(evil.public().clone()));
        ks.sign(&[&evil]).unwrap().to_json_bytes()
    };
    for (version, state, words) in [
        (2, &held, "does not verify as the successor of version 1"),
        (1, &held, "differs from the version 1 held"),
        (u64::MAX, &held, "more than 1000 versions past version 1"),
        (1, &State::default(), "pinned root"),
        (
            u64::MAX,
            &State::default(),
            "more than 1000 versions past version 1",
        ),
    ] {
        server.keys = forged(version);
        let r = check(&client, &server, state, &[(P, "2.0.0")]);
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UntrustedKeyset, "v{version}: {e}");
        assert!(e.to_string().contains(words), "v{version}: {e}");
    }
    // A refused check hands back no state at all: the app keeps the old one.
    assert_eq!(held.keyset_version(), Some(1));
}

#[test]
fn an_older_keyset_than_the_one_held_is_a_rollback() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    let client = client(&keys);
    let v1 = server.keys.clone();
    let k2 = keys
        .keyset(2, 1)
        .sign(&[&keys.root])
        .unwrap()
        .to_json_bytes();
    server.keys = k2.clone();
    server.keys_at.insert(2, k2);
    server.keyset_version = 2;
    let held = check(&client, &server, &State::default(), &[(P, "2.0.0")])
        .unwrap()
        .state;
    assert_eq!(held.keyset_version(), Some(2));
    server.keys = v1;
    server.keyset_version = 1;
    let e = check(&client, &server, &held, &[(P, "2.0.0")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UntrustedKeyset);
    assert!(
        e.to_string()
            .contains("keyset version 1 is older than version 2"),
        "{e}"
    );
}

#[test]
fn an_expired_keyset_is_refused_on_first_contact_and_when_held() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    let client = client(&keys);
    let held = check(&client, &server, &State::default(), &[(P, "2.0.0")])
        .unwrap()
        .state;
    let mut ks = keys.keyset(1, 1);
    ks.expires = Utc::now() - Duration::seconds(1);
    let expired = ks.sign(&[&keys.root]).unwrap().to_json_bytes();
    server.keys = expired.clone();
    let e = check(&client, &server, &State::default(), &[(P, "2.0.0")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeysetExpired, "{e}");

    // The held keyset passes its expiry: the same one served again is refused.
    let later = Utc::now() + Duration::days(400);
    server.keys = keys
        .keyset(1, 1)
        .sign(&[&keys.root])
        .unwrap()
        .to_json_bytes();
    let held_again = check(&client, &server, &State::default(), &[(P, "2.0.0")])
        .unwrap()
        .state;
    let mut c = client
        .check_at(
            &held_again,
            vec![firmcast_client::CheckItem::new(P, "2.0.0")],
            later,
        )
        .unwrap();
    let req = c.next_request().unwrap();
    let e = c.receive(server.answer(&req)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeysetExpired, "{e}");
    assert!(e.to_string().contains("no newer one"), "{e}");
    drop(held);
}

#[test]
fn a_damaged_saved_keyset_is_corrupt_state() {
    let keys = Keys::new(1);
    let server = Server::new(&keys);
    let client = client(&keys);
    let held = check(&client, &server, &State::default(), &[(P, "2.0.0")])
        .unwrap()
        .state;
    let mut v: serde_json::Value = serde_json::from_str(&held.to_json()).unwrap();
    v["keyset"]["signatures"][0]["sig"] = "AAAA".into();
    let damaged = State::from_json(&v.to_string()).unwrap();
    let e = client
        .check(&damaged, vec![firmcast_client::CheckItem::new(P, "2.0.0")])
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::CorruptState, "{e}");
}
