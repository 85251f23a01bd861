//! The release engineer's client commands and the reference client against
//! the real server: sign, publish, list, rollout/pause/resume/yank, check and
//! download. A small hand-written HTTP server stands in for a hostile one
//! (endless data, stale or inconsistent answers) where the real one never
//! misbehaves.

use crate::support;

use firmcast_signing::release::ArtifactRef;
use firmcast_signing::{Freshness, Keyset, PrivateKey, ReleaseManifest, Role};
use std::io::Write;
use std::path::Path;
use support::cli::{firmcast, Run};
use support::release::{
    admin, check, check_at, firmware, publish, published, read_request, sign, P,
};

#[test]
fn publish_list_check_and_download() {
    let (s, fw) = published(200_000, &["--rollout", "100"]);
    let dir = s.dir.path();

    let list = admin(&s, &["list", "--product", P]).ok();
    assert!(list.stdout.starts_with("PRODUCT"), "{}", list.stdout);
    let row = list.stdout.lines().nth(1).unwrap();
    for want in [P, "2.2.0", "stable", "100%", "live", "200000"] {
        assert!(row.contains(want), "{want} missing: {}", list.stdout);
    }

    let sha = firmcast_signing::digest::sha256_hex(&fw);
    let run = check(&s, "2.0.0", &["--state", "state.json"]).ok();
    assert_eq!(
        run.stdout.trim(),
        format!("update available: {P} 2.2.0 (seq 1, sha256 {sha}, 200000 bytes)")
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["seq"][P], 1);
    assert!(state["keyset"]["payloadType"].is_string(), "{state}");

    // The same keyset again, now from the state file rather than the pin.
    let run = check(&s, "2.0.0", &["--state", "state.json", "--download", "dl"]).ok();
    let path = format!("dl/{P}-2.2.0.bin");
    assert_eq!(
        run.stdout.trim(),
        format!("downloaded and verified: {path}")
    );
    assert_eq!(std::fs::read(dir.join(&path)).unwrap(), fw);
    assert!(!dir.join(format!("dl/{P}-2.2.0.part")).exists());

    let run = check(&s, "2.2.0", &["--state", "state.json"]).ok();
    assert!(run.stdout.starts_with("up to date"), "{}", run.stdout);
}

#[test]
fn server_refusals_are_one_line() {
    let (s, _) = published(1000, &[]);
    let dir = s.dir.path();
    let run = publish(&s, "release.json", "fw.bin", &[]).fails();
    assert!(
        run.stderr
            .contains("server refused (409 duplicate_version)"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);

    firmware(dir, "fw2.bin", 1000, 7);
    sign(dir, "2.3.0", "1", "fw2.bin", "stale.json");
    let run = publish(&s, "stale.json", "fw2.bin", &[]).fails();
    assert!(
        run.stderr.contains("server refused (409 stale_seq)"),
        "{}",
        run.stderr
    );

    let run = firmcast(
        dir,
        &[
            "release",
            "list",
            "--server",
            &s.url,
            "--token",
            "fct_wrong",
        ],
    )
    .fails();
    assert!(run.stderr.contains("server refused (401"), "{}", run.stderr);
    let run = firmcast(
        dir,
        &[
            "release", "pause", P, "9.9.9", "--server", &s.url, "--token", &s.token,
        ],
    )
    .fails();
    assert!(run.stderr.contains("server refused (404"), "{}", run.stderr);
}

#[test]
fn publish_refuses_a_mismatched_file_before_any_network() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    firmcast(dir, &["keys", "init", "--dir", "keys"]).ok();
    firmware(dir, "fw.bin", 5000, 0);
    firmware(dir, "other.bin", 5000, 1);
    sign(dir, "2.2.0", "1", "fw.bin", "release.json");
    // Port 9 (discard) has no firmcast: any request would fail differently.
    let run = firmcast(
        dir,
        &[
            "release",
            "publish",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "t",
            "--release",
            "release.json",
            "--file",
            "other.bin",
        ],
    )
    .fails();
    assert!(
        run.stderr.contains("other.bin does not match release.json")
            && run.stderr.contains("nothing was uploaded"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("cannot reach"), "{}", run.stderr);
    let run = firmcast(
        dir,
        &[
            "release",
            "publish",
            "--server",
            "http://127.0.0.1:9",
            "--release",
            "release.json",
            "--file",
            "fw.bin",
        ],
    )
    .fails();
    assert!(run.stderr.contains("FIRMCAST_TOKEN"), "{}", run.stderr);
}

#[test]
fn rollout_pause_resume_yank_change_what_check_sees() {
    let (s, _) = published(1000, &["--rollout", "0"]);
    let sees_update = |want: bool| {
        let out = check(&s, "2.0.0", &[]).ok().stdout;
        assert_eq!(out.starts_with("update available"), want, "{out}");
        assert_eq!(out.starts_with("up to date"), !want, "{out}");
    };
    sees_update(false);
    let run = admin(&s, &["rollout", P, "2.2.0", "100"]).ok();
    assert!(run.stdout.contains("rollout 100%, live"), "{}", run.stdout);
    sees_update(true);
    let run = admin(&s, &["pause", P, "2.2.0"]).ok();
    assert!(run.stdout.contains("paused"), "{}", run.stdout);
    sees_update(false);
    admin(&s, &["resume", P, "2.2.0"]).ok();
    sees_update(true);
    let run = admin(&s, &["rollout", P, "2.2.0", "0.5"]).ok();
    assert!(run.stdout.contains("rollout 0.5%"), "{}", run.stdout);
    admin(&s, &["rollout", P, "2.2.0", "100"]).ok();
    let run = admin(&s, &["yank", P, "2.2.0"]).ok();
    assert!(run.stdout.contains("yanked"), "{}", run.stdout);
    sees_update(false);
    let list = admin(&s, &["list"]).ok();
    assert!(list.stdout.contains("yanked"), "{}", list.stdout);
    admin(&s, &["rollout", P, "2.2.0", "101"]).fails();
}

#[test]
fn beta_clients_also_get_stable_releases_but_not_the_reverse() {
    let (s, _) = published(1000, &[]);
    let dir = s.dir.path();
    firmware(dir, "beta.bin", 1000, 3);
    firmcast(
        dir,
        &[
            "release",
            "sign",
            "--key",
            "keys/release-1.pem",
            "--product",
            P,
            "--version",
            "2.3.0-beta.1",
            "--seq",
            "2",
            "--channel",
            "beta",
            "--file",
            "beta.bin",
            "--out",
            "beta.json",
        ],
    )
    .ok();
    publish(&s, "beta.json", "beta.bin", &[]).ok();
    let run = check(&s, "2.0.0", &[]).ok();
    assert!(
        run.stdout.contains(&format!("{P} 2.2.0 (seq 1")),
        "{}",
        run.stdout
    );
    let run = check(&s, "2.2.0", &["--channel", "beta"]).ok();
    assert!(run.stdout.contains("2.3.0-beta.1 (seq 2"), "{}", run.stdout);
    let run = check(&s, "2.0.0", &["--channel", "beta"]).ok();
    assert!(run.stdout.starts_with("update available"), "{}", run.stdout);
}

#[test]
fn check_refuses_a_lower_seq_than_its_state_holds() {
    let (s, _) = published(1000, &[]);
    let state = s.dir.path().join("state.json");
    check(&s, "2.0.0", &["--state", "state.json"]).ok();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    v["seq"][P] = 5.into();
    std::fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();
    let run = check(&s, "2.0.0", &["--state", "state.json"]).fails();
    assert!(
        run.stderr.contains("rollback") && run.stderr.contains("seq 5"),
        "{}",
        run.stderr
    );
    let after: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(after["seq"][P], 5, "a refused answer changes nothing");
}

#[test]
fn check_refuses_an_older_keyset_than_its_state_holds() {
    let (s, _) = published(1000, &[]);
    let dir = s.dir.path();
    check(&s, "2.0.0", &["--state", "state.json"]).ok();
    // A rotated keyset (version 2) under the same root, never served.
    std::fs::create_dir(dir.join("keys2")).unwrap();
    for f in ["root.pem", "keyset.json"] {
        std::fs::copy(dir.join("keys").join(f), dir.join("keys2").join(f)).unwrap();
    }
    firmcast(dir, &["keys", "rotate", "--dir", "keys2"]).ok();
    let v2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("keys2/keyset.json")).unwrap()).unwrap();
    let path = dir.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state["keyset"] = v2;
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let run = check(&s, "2.0.0", &["--state", "state.json"]).fails();
    assert!(
        run.stderr
            .contains("keyset version 1 is older than version 2"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_resumes_a_partial_download() {
    let (s, fw) = published(300_000, &[]);
    let dir = s.dir.path();
    std::fs::create_dir(dir.join("dl")).unwrap();
    let part = dir.join(format!("dl/{P}-2.2.0.part"));
    let done = dir.join(format!("dl/{P}-2.2.0.bin"));

    std::fs::write(&part, &fw[..100_000]).unwrap();
    let run = check(&s, "2.0.0", &["--download", "dl"]).ok();
    assert!(
        run.stderr.contains("at byte 100000 of 300000"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&done).unwrap(), fw);

    // A bad prefix proves the bytes were appended, not fetched again; the
    // part file is deleted, so the next run starts clean and succeeds.
    std::fs::remove_file(&done).unwrap();
    std::fs::write(&part, vec![0u8; 100_000]).unwrap();
    let run = check(&s, "2.0.0", &["--download", "dl"]).fails();
    assert!(
        run.stderr.contains("does not match the signed release"),
        "{}",
        run.stderr
    );
    assert!(!part.exists() && !done.exists());
    check(&s, "2.0.0", &["--download", "dl"]).ok();
    assert_eq!(std::fs::read(&done).unwrap(), fw);
}

/// What the hostile server gets wrong.
#[derive(Clone, Copy)]
enum Lie {
    EndlessBody,
    ExpiredFreshness,
    SeqAboveFreshness,
}

/// Serves /v1/keys, /v1/updates and one artifact, signed with its own keys
/// (root.pub.pem written to `dir/keys`), misbehaving as `lie` says.
fn hostile_server(dir: &Path, lie: Lie) -> (String, Vec<u8>) {
    let (root, release, ts) = (
        PrivateKey::generate(),
        PrivateKey::generate(),
        PrivateKey::generate(),
    );
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    root.public()
        .write_pem_file(&dir.join("keys/root.pub.pem"))
        .unwrap();
    let now = chrono::Utc::now();
    let keyset = Keyset {
        version: 1,
        expires: now + chrono::Duration::days(30),
        root: None,
        release: Role::single(release.public().clone()),
        timestamp: Role::single(ts.public().clone()),
    }
    .sign(&[&root])
    .unwrap();
    let fw: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let manifest = ReleaseManifest {
        product: P.into(),
        version: semver::Version::new(2, 2, 0),
        channel: "stable".into(),
        seq: 3,
        artifact: ArtifactRef {
            sha256: firmcast_signing::digest::sha256_hex(&fw),
            size: fw.len() as u64,
        },
        from: None,
        critical: false,
        notes: Default::default(),
        released_at: now,
    };
    let freshness = Freshness {
        product: P.into(),
        channel: "stable".into(),
        latest_seq: if matches!(lie, Lie::SeqAboveFreshness) {
            2
        } else {
            3
        },
        keyset_version: 1,
        expires: match lie {
            Lie::ExpiredFreshness => now - chrono::Duration::minutes(1),
            _ => now + chrono::Duration::hours(24),
        },
    };
    let updates = serde_json::json!({"results": [{
        "product": P, "version": "2.0.0", "channel": "stable",
        "update": {"version": "2.2.0", "url": format!("/v1/artifacts/{P}/2.2.0"),
                   "size": fw.len(), "sha256": manifest.artifact.sha256, "critical": false,
                   "notes": {}, "release": manifest.sign(&release).unwrap().to_value()},
        "freshness": freshness.sign(&ts).to_value()}]});
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (keyset, updates, body) = (
        keyset.to_json_bytes(),
        serde_json::to_vec(&updates).unwrap(),
        fw.clone(),
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let path = read_request(&mut conn);
            let json = |b: &[u8]| {
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len())
            };
            let _ = match path.as_str() {
                "/v1/keys" => conn
                    .write_all(json(&keyset).as_bytes())
                    .and(conn.write_all(&keyset)),
                "/v1/updates" => conn
                    .write_all(json(&updates).as_bytes())
                    .and(conn.write_all(&updates)),
                // No length: the body ends when the server closes, which it never does.
                _ => conn
                    .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    .and_then(|()| {
                        conn.write_all(&body)?;
                        for _ in 0..4096 {
                            conn.write_all(&[0xAA; 16384])?;
                        }
                        Ok(())
                    }),
            };
        }
    });
    (url, fw)
}

fn hostile_check(lie: Lie, extra: &[&str]) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = hostile_server(dir.path(), lie);
    (check_at(dir.path(), &url, "2.0.0", extra), dir)
}

#[test]
fn check_cuts_off_a_server_sending_more_than_the_signed_size() {
    let (run, dir) = hostile_check(Lie::EndlessBody, &["--download", "dl"]);
    let run = run.fails();
    assert!(
        run.stderr.contains("sent more than the signed 50000 bytes"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_dir(dir.path().join("dl")).unwrap().count(), 0);
}

#[test]
fn check_reports_an_expired_freshness_statement_as_stale() {
    let (run, _dir) = hostile_check(Lie::ExpiredFreshness, &[]);
    let run = run.fails();
    assert!(run.stderr.contains("stale answer"), "{}", run.stderr);
    assert!(!run.stdout.contains("up to date"), "{}", run.stdout);
}

#[test]
fn check_refuses_a_seq_above_the_freshness_statement() {
    let (run, _dir) = hostile_check(Lie::SeqAboveFreshness, &[]);
    let run = run.fails();
    assert!(
        run.stderr.contains("above the latest seq 2"),
        "{}",
        run.stderr
    );
}
