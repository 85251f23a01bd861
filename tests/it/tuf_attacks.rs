//! The TUF threat list, end to end: a real server publishes genuinely signed
//! releases, then an attacker (a compromised blob store, a mirror replaying
//! or splicing what the server once said) tampers, and `firmcast check`
//! refuses each attack with a reason. Endless data, freeze and a seq above
//! the freshness statement are in `cli_release.rs` (they need a server that
//! lies at the HTTP level).

use crate::support;

use firmcast_signing::{Keyset, PrivateKey, Role};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use support::cli::firmcast;
use support::release::{
    check, check_at, firmware, publish, published, record, replay, sign, sign_product, Recorded, P,
};
use support::server::{spawn_server, ServeProcess, TestServer};

/// A mirror serving `keys` and `updates`, plus the real server's artifacts
/// under their own paths when `artifacts` is given.
fn mirror(keys: &[u8], updates: &Value, artifacts: &[(&str, Vec<u8>)]) -> String {
    let mut routes = HashMap::from([
        ("/v1/keys".to_owned(), keys.to_vec()),
        (
            "/v1/updates".to_owned(),
            serde_json::to_vec(updates).unwrap(),
        ),
    ]);
    for (path, body) in artifacts {
        routes.insert((*path).to_owned(), body.clone());
    }
    replay(routes)
}

fn offer(r: &Recorded) -> &Value {
    &r.updates["results"][0]["update"]
}

fn restart(s: &mut TestServer) -> ServeProcess {
    s.kill();
    ServeProcess::start(s.dir.path(), "config.toml", &[])
}

#[test]
fn arbitrary_software_swapped_into_the_blob_store_is_refused() {
    let (s, fw) = published(200_000, &[]);
    let blobs = s.dir.path().join("data/blobs/sha256");
    let shard = std::fs::read_dir(&blobs).unwrap().next().unwrap().unwrap();
    let blob = std::fs::read_dir(shard.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    // Same size, other bytes: the server cannot tell, the signature can.
    let evil: Vec<u8> = fw.iter().map(|b| b ^ 0x5A).collect();
    std::fs::write(blob.path(), &evil).unwrap();

    std::fs::create_dir(s.dir.path().join("dl")).unwrap();
    let run = check(&s, "2.0.0", &["--download", "dl"]).fails();
    assert!(
        run.stderr.contains("does not match the signed release"),
        "{}",
        run.stderr
    );
    let left = std::fs::read_dir(s.dir.path().join("dl")).unwrap().count();
    assert_eq!(left, 0, "nothing unverified is left for an installer");
}

#[test]
fn rollback_to_an_older_validly_signed_answer_is_refused() {
    let s = spawn_server();
    let dir = s.dir.path();
    firmware(dir, "a.bin", 1000, 1);
    firmware(dir, "b.bin", 1000, 2);
    sign(dir, "2.1.0", "1", "a.bin", "a.json");
    publish(&s, "a.json", "a.bin", &[]).ok();
    let old = record(&s.url, P, "2.0.0");
    sign(dir, "2.2.0", "2", "b.bin", "b.json");
    publish(&s, "b.json", "b.bin", &[]).ok();

    let run = check(&s, "2.0.0", &["--state", "state.json"]).ok();
    assert!(run.stdout.contains("2.2.0 (seq 2"), "{}", run.stdout);
    // A mirror replays yesterday's answer: 2.1.0, seq 1, every signature valid.
    let url = mirror(&old.keys, &old.updates, &[]);
    let run = check_at(dir, &url, "2.0.0", &["--state", "state.json"]).fails();
    assert!(
        run.stderr.contains("rollback") && run.stderr.contains("seq 1"),
        "{}",
        run.stderr
    );
    // Without the state a client has no memory to compare with: the same
    // replay is accepted, which is why apps must keep it.
    check_at(dir, &url, "2.0.0", &[]).ok();
}

#[test]
fn mix_and_match_of_two_products_is_refused() {
    const B: &str = "WF-1000XM4";
    let s = spawn_server();
    let dir = s.dir.path();
    firmware(dir, "a.bin", 3000, 1);
    let b_fw = firmware(dir, "b.bin", 4000, 2);
    sign(dir, "2.2.0", "1", "a.bin", "a.json");
    sign_product(dir, B, "2.2.0", "1", "b.bin", "b.json");
    publish(&s, "a.json", "a.bin", &[]).ok();
    publish(&s, "b.json", "b.bin", &[]).ok();
    let a = record(&s.url, P, "2.0.0");
    let b = record(&s.url, B, "2.0.0");

    // B's whole offer (signed release, digest, size) under A's question.
    let mut spliced = a.updates.clone();
    spliced["results"][0]["update"] = offer(&b).clone();
    let run = check_at(dir, &mirror(&a.keys, &spliced, &[]), "2.0.0", &[]).fails();
    assert!(
        run.stderr
            .contains(&format!("signed for {B} on stable, not {P}")),
        "{}",
        run.stderr
    );

    // A's signed release, but its URL leads to B's artifact.
    let mut redirected = a.updates.clone();
    redirected["results"][0]["update"]["url"] = "/evil/b.bin".into();
    let url = mirror(&a.keys, &redirected, &[("/evil/b.bin", b_fw)]);
    std::fs::create_dir(dir.join("dl")).unwrap();
    let run = check_at(dir, &url, "2.0.0", &["--download", "dl"]).fails();
    assert!(
        run.stderr.contains("does not match the signed release")
            || run.stderr.contains("more than the signed"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_dir(dir.join("dl")).unwrap().count(), 0);
}

#[test]
fn k_of_n_not_met_is_refused_by_the_server_and_the_client() {
    let mut s = spawn_server();
    let dir = s.dir.path().to_owned();
    std::fs::remove_dir_all(dir.join("keys")).unwrap();
    let args = ["keys", "init", "--dir", "keys", "--release-keys", "3"];
    firmcast(&dir, &[&args[..], &["--threshold", "2"]].concat()).ok();
    let srv = restart(&mut s);
    s.url = srv.url.clone();

    firmware(&dir, "fw.bin", 2000, 0);
    sign(&dir, "2.2.0", "1", "fw.bin", "release.json");
    let run = publish(&s, "release.json", "fw.bin", &[]).fails();
    assert!(run.stderr.contains("2 required"), "{}", run.stderr);

    let add = |key: &str| {
        let k = format!("keys/{key}.pem");
        let args = ["release", "sign", "--key", &k, "--file", "fw.bin"];
        firmcast(&dir, &[&args[..], &["--add-to", "release.json"]].concat())
    };
    // The same key twice is still one signer.
    add("release-1").fails();
    add("release-2").ok();
    publish(&s, "release.json", "fw.bin", &[]).ok();
    let good = record(&s.url, P, "2.0.0");
    check_at(&dir, &mirror(&good.keys, &good.updates, &[]), "2.0.0", &[]).ok();

    // A mirror strips one signature, or repeats the remaining one.
    let sigs = offer(&good)["release"]["signatures"].clone();
    for forged in [
        Value::Array(vec![sigs[0].clone()]),
        Value::Array(vec![sigs[0].clone(), sigs[0].clone()]),
    ] {
        let mut bad = good.updates.clone();
        bad["results"][0]["update"]["release"]["signatures"] = forged;
        let run = check_at(&dir, &mirror(&good.keys, &bad, &[]), "2.0.0", &[]).fails();
        assert!(
            run.stderr.contains("the offered release does not verify")
                && run.stderr.contains("2 required"),
            "{}",
            run.stderr
        );
    }
}

/// Rotates `keys` in the server's directory (root first, then a renewal)
/// and restarts it: version 3, whose root is not the one apps pinned.
fn rotate_twice(s: &mut TestServer) -> ServeProcess {
    let dir = s.dir.path().to_owned();
    firmcast(&dir, &["keys", "rotate", "--dir", "keys", "--new-root"]).ok();
    firmcast(&dir, &["keys", "rotate", "--dir", "keys"]).ok();
    restart(s)
}

#[test]
fn key_rotation_is_followed_link_by_link_and_a_broken_chain_is_refused() {
    let (mut s, _) = published(1000, &[]);
    let dir = s.dir.path().to_owned();
    std::fs::copy(dir.join("keys/root.pub.pem"), dir.join("old-root.pub.pem")).unwrap();
    check(&s, "2.0.0", &["--state", "v1.json"]).ok();
    std::fs::copy(dir.join("v1.json"), dir.join("v1-again.json")).unwrap();
    let srv = rotate_twice(&mut s);

    // A client that held version 1 walks 2 (old and new root) and 3 (new root).
    let run = check_at(&dir, &srv.url, "2.0.0", &["--state", "v1.json"]).ok();
    assert!(run.stdout.contains("update available"), "{}", run.stdout);
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("v1.json")).unwrap()).unwrap();
    let payload = firmcast_signing::Envelope::from_value(state["keyset"].clone())
        .unwrap()
        .payload;
    assert_eq!(Keyset::parse(&payload).unwrap().version, 3);
    // A new install still pinning the old root finds its way too.
    let old_root = ["--root", "old-root.pub.pem"];
    check_at(&dir, &srv.url, "2.0.0", &old_root).ok();

    // Without the link that rotated the root, nobody may skip it.
    std::fs::remove_file(dir.join("keys/keysets/2.json")).unwrap();
    drop(srv);
    let srv = ServeProcess::start(&dir, "config.toml", &[]);
    let run = check_at(&dir, &srv.url, "2.0.0", &["--state", "v1-again.json"]).fails();
    assert!(
        run.stderr
            .contains("does not keep version 2 to follow the rotation"),
        "{}",
        run.stderr
    );
    let run = check_at(&dir, &srv.url, "2.0.0", &old_root).fails();
    assert!(
        run.stderr.contains("signed by the pinned root"),
        "{}",
        run.stderr
    );
    let resp = reqwest::blocking::get(format!("{}/v1/keys/2", srv.url)).unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"], "unknown_keyset_version", "{body}");
}

#[test]
fn a_keyset_signed_by_the_wrong_root_or_skipping_versions_is_refused() {
    let (s, _) = published(1000, &[]);
    let dir = s.dir.path();
    check(&s, "2.0.0", &["--state", "state.json"]).ok();
    let real = record(&s.url, P, "2.0.0");
    let current = Keyset::parse(&envelope_payload(&real.keys)).unwrap();

    let evil_root = PrivateKey::generate();
    let forged = |version: u64| {
        let mut ks = current.clone();
        ks.version = version;
        ks.root = Some(Role::single(evil_root.public().clone()));
        ks.sign(&[&evil_root]).unwrap().to_json_bytes()
    };
    for (version, reason) in [
        (2, "does not verify as the successor of version 1"),
        (1, "differs from the version 1 held"),
        (u64::MAX, "more than 1000 versions past version 1"),
    ] {
        let url = mirror(&forged(version), &real.updates, &[]);
        let run = check_at(dir, &url, "2.0.0", &["--state", "state.json"]).fails();
        assert!(run.stderr.contains(reason), "v{version}: {}", run.stderr);
    }
    // A first contact, too, trusts only what the pinned root signed, and
    // does not go looking through a billion versions for it.
    for (version, reason) in [
        (1, "pinned root"),
        (u64::MAX, "more than 1000 versions past version 1"),
    ] {
        let url = mirror(&forged(version), &real.updates, &[]);
        let run = check_at(dir, &url, "2.0.0", &[]).fails();
        assert!(run.stderr.contains(reason), "v{version}: {}", run.stderr);
    }
    assert_state_untouched(dir);
}

fn envelope_payload(keys: &[u8]) -> Vec<u8> {
    firmcast_signing::Envelope::parse(keys).unwrap().payload
}

/// The state still holds keyset version 1 after every refusal.
fn assert_state_untouched(dir: &Path) {
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    let payload = firmcast_signing::Envelope::from_value(state["keyset"].clone())
        .unwrap()
        .payload;
    assert_eq!(Keyset::parse(&payload).unwrap().version, 1);
}
