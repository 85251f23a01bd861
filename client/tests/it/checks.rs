//! The batch check: what an app gets for itself and its devices, `last_day`,
//! and each refusal of a release or freshness statement (freeze, rollback,
//! mix-and-match, wrong keys, k of n, seq above the statement).

use crate::support::*;
use chrono::Duration;
use firmcast_client::{Error, ErrorKind, State};
use serde_json::{json, Value};

fn kind<T: std::fmt::Debug>(r: &Result<T, Error>) -> ErrorKind {
    r.as_ref().expect_err("must be refused").kind()
}

#[test]
fn an_app_and_two_devices_in_one_call_then_state_and_last_day() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    let fw = firmware(5000, 1);
    server.publish(&keys, P, "2.2.0", 3, fw.clone());
    server.publish(&keys, D, "1.1.0", 1, firmware(10, 2));
    let client = client(&keys);

    let items = [(P, "2.0.0"), (D, "1.1.0"), ("Nope", "1.0.0")];
    let o = check(&client, &server, &State::default(), &items).unwrap();
    assert_eq!(
        paths(&server),
        ["/v1/keys", "/v1/updates"],
        "two requests in all"
    );
    let first = update_bodies(&server).remove(0);
    assert!(
        first["items"][0].get("last_day").is_none(),
        "nothing to echo yet: {first}"
    );

    let u = o.results[0]
        .outcome
        .clone()
        .unwrap()
        .expect("an update for the app");
    assert_eq!(
        (u.product.as_str(), u.version.as_str(), u.seq),
        (P, "2.2.0", 3)
    );
    assert_eq!(u.size, 5000);
    assert_eq!(u.sha256, firmcast_signing::digest::sha256_hex(&fw));
    assert_eq!(u.url, format!("{BASE}/v1/artifacts/{P}/2.2.0"));
    assert_eq!(u.installed, "2.0.0");
    assert_eq!(u.notes["en"], "Better calls.");
    assert_eq!(o.results[1].outcome, Ok(None), "the device is up to date");
    assert_eq!(o.results[1].latest_seq, Some(1));
    let e = o.results[2].outcome.clone().unwrap_err();
    assert!(
        matches!(&e, Error::Refused { code, .. } if code == "unknown_product"),
        "{e}"
    );

    // The state persists as JSON and carries seq, keyset and the day.
    let state = State::from_json(&o.state.to_json()).unwrap();
    assert_eq!(state.seq.get(P), Some(&3));
    assert_eq!(state.keyset_version(), Some(1));
    assert_eq!(state.last_day.get(P), Some(&20_424));
    assert_eq!(state.last_day.get(D), Some(&20_424));
    assert_eq!(
        state.last_day.get("Nope"),
        None,
        "the server refused that item"
    );
    assert_eq!(o.day, Some(20_424));

    // The next check echoes the day per item, from the held keyset.
    server.log.borrow_mut().clear();
    check(&client, &server, &state, &items[..2]).unwrap();
    let next = update_bodies(&server).remove(0);
    assert_eq!(next["items"][0]["last_day"], 20_424, "{next}");
    assert_eq!(next["items"][1]["last_day"], 20_424, "{next}");
}

#[test]
fn an_answer_without_day_stores_nothing() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    server.day = None;
    let o = check(&client(&keys), &server, &State::default(), &[(P, "2.0.0")]).unwrap();
    assert!(o.state.last_day.is_empty());
    assert_eq!(o.day, None);
    assert_eq!(o.results[0].outcome, Ok(None));
}

#[test]
fn a_frozen_answer_is_stale_not_up_to_date() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    server.freshness_ttl = Duration::minutes(-1);
    let r = single(&client(&keys), &server, &State::default(), "2.0.0");
    assert_eq!(kind(&r), ErrorKind::Stale);
    assert!(r.unwrap_err().to_string().contains("stale answer"));
}

#[test]
fn a_rollback_to_an_older_validly_signed_release_is_refused() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    server.publish(&keys, P, "2.2.0", 2, firmware(100, 0));
    let client = client(&keys);
    let o = check(&client, &server, &State::default(), &[(P, "2.0.0")]).unwrap();
    // A mirror replays an older, genuinely signed release (seq 1).
    server.publish(&keys, P, "2.1.0", 1, firmware(100, 1));
    let r = single(&client, &server, &o.state, "2.0.0");
    assert_eq!(kind(&r), ErrorKind::Rollback);
    let text = r.unwrap_err().to_string();
    assert!(text.contains("seq 1") && text.contains("seq 2"), "{text}");
    // Without the state the same replay is accepted: apps must keep it.
    assert!(single(&client, &server, &State::default(), "2.0.0")
        .unwrap()
        .is_some());
}

#[test]
fn a_refused_item_does_not_raise_the_seq() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    server.publish(&keys, P, "2.1.0", 1, firmware(100, 1));
    let mut state = State::default();
    state.seq.insert(P.into(), 5);
    let o = check(&client(&keys), &server, &state, &[(P, "2.0.0")]).unwrap();
    assert_eq!(
        o.results[0].outcome.as_ref().unwrap_err().kind(),
        ErrorKind::Rollback
    );
    assert_eq!(o.state.seq[P], 5);
}

/// The server's answer for `items`, to splice.
fn answer(server: &Server, items: &[(&str, &str)]) -> Value {
    let results: Vec<Value> = items
        .iter()
        .map(|(p, v)| server.item(p, v, "stable"))
        .collect();
    json!({ "results": results, "day": 1 })
}

#[test]
fn mix_and_match_is_refused() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    server.publish(&keys, P, "2.2.0", 1, firmware(300, 1));
    server.publish(&keys, D, "2.2.0", 1, firmware(400, 2));
    let client = client(&keys);
    let a = answer(&server, &[(P, "2.0.0")]);
    let b = answer(&server, &[(D, "2.0.0")]);
    let mut refuse = |spliced: Value, want: ErrorKind, words: &str| {
        server.updates_override = Some(spliced);
        let r = single(&client, &server, &State::default(), "2.0.0");
        assert_eq!(kind(&r), want, "{r:?}");
        let text = r.unwrap_err().to_string();
        assert!(text.contains(words), "{text}");
    };
    // D's whole offer under P's question.
    let mut s = a.clone();
    s["results"][0]["update"] = b["results"][0]["update"].clone();
    refuse(
        s,
        ErrorKind::Mismatch,
        &format!("signed for {D} on stable, not {P}"),
    );
    // D's freshness statement for P.
    let mut s = a.clone();
    s["results"][0]["freshness"] = b["results"][0]["freshness"].clone();
    refuse(s, ErrorKind::Mismatch, &format!("is for {D} on stable"));
    // P's signed release with another size or digest in the plain fields.
    let mut s = a.clone();
    s["results"][0]["update"]["size"] = 400.into();
    refuse(s, ErrorKind::Mismatch, "does not match its signed release");
    let mut s = a.clone();
    s["results"][0]["update"]["sha256"] = b["results"][0]["update"]["sha256"].clone();
    refuse(s, ErrorKind::Mismatch, "does not match its signed release");
    // An answer for another installed version.
    let mut s = a.clone();
    s["results"][0]["version"] = "1.0.0".into();
    refuse(s, ErrorKind::Mismatch, "another product or version");
}

#[test]
fn wrong_keys_are_refused() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    let intruder = Keys::new(1);
    // A release signed by a key the keyset does not list.
    server.publish(&intruder, P, "2.2.0", 1, firmware(100, 0));
    let client = client(&keys);
    let r = single(&client, &server, &State::default(), "2.0.0");
    assert_eq!(kind(&r), ErrorKind::BadSignature);
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("the offered release does not verify"));
    // A freshness statement signed by a release key.
    server.publish(&keys, P, "2.2.0", 1, firmware(100, 0));
    server.ts = PrivateKey::generate();
    let r = single(&client, &server, &State::default(), "2.0.0");
    assert_eq!(kind(&r), ErrorKind::BadSignature);
    assert!(r.unwrap_err().to_string().contains("timestamp"));
}

use firmcast_signing::PrivateKey;

#[test]
fn k_of_n_counts_distinct_trusted_signers() {
    let keys = Keys::new(3);
    let mut server = Server::new(&keys);
    let env = keys.keyset(1, 2).sign(&[&keys.root]).unwrap();
    server.keys = env.to_json_bytes();
    let fw = firmware(100, 0);
    let m = manifest(P, "2.2.0", 1, &fw);
    let mut one = m.sign(&keys.release[0]).unwrap();
    server.publish(&keys, P, "2.2.0", 1, fw);
    let client = client(&keys);
    let with = |server: &mut Server, env: &firmcast_signing::Envelope| {
        server.releases.get_mut(P).unwrap().envelope = env.to_value();
        single(&client, server, &State::default(), "2.0.0")
    };
    let r = with(&mut server, &one);
    assert_eq!(kind(&r), ErrorKind::BadSignature);
    assert!(r.unwrap_err().to_string().contains("2 required"));
    // The same signature twice is still one signer.
    let mut twice = one.clone();
    twice.signatures.push(one.signatures[0].clone());
    assert_eq!(kind(&with(&mut server, &twice)), ErrorKind::BadSignature);
    one.add_signature(&keys.release[2]).unwrap();
    assert!(with(&mut server, &one).unwrap().is_some());
}

#[test]
fn a_seq_above_the_freshness_statement_is_refused() {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    server.publish(&keys, P, "2.2.0", 3, firmware(100, 0));
    let mut a = answer(&server, &[(P, "2.0.0")]);
    server.releases.get_mut(P).unwrap().manifest.seq = 2;
    a["results"][0]["freshness"] = server.freshness(P, "stable").to_value();
    server.updates_override = Some(a);
    let r = single(&client(&keys), &server, &State::default(), "2.0.0");
    assert_eq!(kind(&r), ErrorKind::Mismatch);
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("above the latest seq 2"));
}

#[test]
fn server_failures_are_typed_for_retry() {
    let keys = Keys::new(1);
    let server = Server::new(&keys);
    let client = client(&keys);
    let mut c = client
        .check(
            &State::default(),
            vec![firmcast_client::CheckItem::new(P, "2.0.0")],
        )
        .unwrap();
    let busy = firmcast_client::http::Response::new(
        503,
        vec![("Retry-After".into(), "30".into())],
        br#"{"error":"unavailable","message":"try again"}"#.to_vec(),
    );
    let e = c.receive(busy).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Server {
                status: 503,
                retry_after: Some(30),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.retry_later());
    assert!(
        c.next_request().is_none(),
        "a failed check asks nothing more"
    );
    assert_eq!(c.outcome().unwrap_err(), e);
    drop(server);

    // Bad input is refused before any request.
    let e = client
        .check(
            &State::default(),
            vec![firmcast_client::CheckItem::new("../etc", "2.0.0")],
        )
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = client
        .check(
            &State::default(),
            vec![firmcast_client::CheckItem::new(P, "two")],
        )
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
