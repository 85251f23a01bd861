//! The signing CLI end to end, as a release engineer runs it: keys init,
//! release sign (and co-sign), verify; tampering refused; keys readable by
//! openssl; envelopes verified by an independent implementation.

use crate::support;

use std::path::Path;
use std::process::Command;
use support::cli::{firmcast, Run};

const RELEASE_TYPE: &str = "application/vnd.firmcast.release+json";
const KEYSET_TYPE: &str = "application/vnd.firmcast.keyset+json";

fn firmware(dir: &Path, size: usize) -> std::path::PathBuf {
    let path = dir.join("fw.bin");
    let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn init_keys(dir: &Path, n: &str, k: &str) {
    firmcast(
        dir,
        &[
            "keys",
            "init",
            "--dir",
            "keys",
            "--release-keys",
            n,
            "--threshold",
            k,
        ],
    )
    .ok();
}

fn sign(dir: &Path, key: &str, out: &str) -> Run {
    firmcast(
        dir,
        &[
            "release",
            "sign",
            "--key",
            key,
            "--product",
            "WH-1000XM5",
            "--version",
            "2.2.0",
            "--seq",
            "17",
            "--file",
            "fw.bin",
            "--from",
            ">=2.0.0, <2.2.0",
            "--notes",
            "en=Improves call quality.",
            "--notes",
            "ja=通話品質を改善",
            "--out",
            out,
        ],
    )
}

fn verify(dir: &Path, release: &str) -> Run {
    firmcast(
        dir,
        &[
            "verify",
            "--root",
            "keys/root.pub.pem",
            "--keyset",
            "keys/keyset.json",
            "--release",
            release,
            "--file",
            "fw.bin",
        ],
    )
}

#[test]
fn init_sign_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_keys(d, "1", "1");
    firmware(d, 3 << 20);
    sign(d, "keys/release-1.pem", "release.json").ok();
    let out = verify(d, "release.json").ok();
    assert!(
        out.stdout.starts_with("OK WH-1000XM5 2.2.0 (seq 17"),
        "{}",
        out.stdout
    );

    // The manifest says what the design says, and the notes survive UTF-8.
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("release.json")).unwrap()).unwrap();
    assert_eq!(env["payloadType"], RELEASE_TYPE);
    let payload = base64_decode(env["payload"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(m["artifact"]["size"], 3 << 20);
    assert_eq!(m["notes"]["ja"], "通話品質を改善");
    assert_eq!(m["from"], ">=2.0.0, <2.2.0");

    // Signed releases are never overwritten.
    let again = sign(d, "keys/release-1.pem", "release.json").fails();
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}

#[test]
fn key_files_are_private_and_openssl_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_keys(d, "2", "1");
    for name in [
        "root.pem",
        "release-1.pem",
        "release-2.pem",
        "timestamp.pem",
    ] {
        let path = d.join("keys").join(name);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        let out = Command::new("openssl")
            .args(["pkey", "-in"])
            .arg(&path)
            .arg("-pubout")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl cannot read {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name == "root.pem" {
            let public = std::fs::read_to_string(d.join("keys/root.pub.pem")).unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), public);
        }
    }
    let out = Command::new("openssl")
        .args(["pkey", "-pubin", "-noout", "-in"])
        .arg(d.join("keys/root.pub.pem"))
        .output()
        .unwrap();
    assert!(out.status.success());
    // A second init never replaces keys.
    let again = firmcast(d, &["keys", "init", "--dir", "keys"]).fails();
    assert!(again.stderr.contains("keys rotate"), "{}", again.stderr);
}

#[test]
fn an_independent_verifier_accepts_our_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_keys(d, "1", "1");
    firmware(d, 1000);
    sign(d, "keys/release-1.pem", "release.json").ok();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/dsse_verify.py");
    let pubkey = d.join("release-1.pub.pem");
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(d.join("keys/release-1.pem"))
        .arg("-out")
        .arg(&pubkey)
        .output()
        .unwrap();
    assert!(out.status.success());

    let python = |env: &str, key: &Path, ty: &str| {
        Command::new("python3")
            .arg(&script)
            .arg(d.join(env))
            .arg(key)
            .arg(ty)
            .output()
            .expect("python3 runs")
    };
    let out = python("release.json", &pubkey, RELEASE_TYPE);
    assert!(
        out.status.success(),
        "independent DSSE verification failed (needs python3 with `cryptography`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"seq\": 17"));
    let out = python(
        "keys/keyset.json",
        &d.join("keys/root.pub.pem"),
        KEYSET_TYPE,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // And it refuses a tampered payload, so the check above can fail.
    tamper_payload(&d.join("release.json"), &d.join("tampered.json"));
    assert!(!python("tampered.json", &pubkey, RELEASE_TYPE)
        .status
        .success());
}

#[test]
fn keys_made_by_openssl_sign_releases() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_keys(d, "1", "1");
    firmware(d, 10);
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(d.join("ossl.pem"))
        .output()
        .unwrap();
    assert!(out.status.success());
    sign(d, "ossl.pem", "release.json").ok();
    // Not in the keyset, so verification names the unknown key.
    let err = verify(d, "release.json").fails();
    assert!(err.stderr.contains("1 from unknown keys"), "{}", err.stderr);
}

#[test]
fn k_of_n_needs_distinct_co_signers_who_checked_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_keys(d, "3", "2");
    firmware(d, 4096);
    sign(d, "keys/release-1.pem", "release.json").ok();
    let err = verify(d, "release.json").fails();
    assert!(
        err.stderr.contains("1 valid signature(s)") && err.stderr.contains("2 required"),
        "{}",
        err.stderr
    );

    let cosign = |key: &str| {
        firmcast(
            d,
            &[
                "release",
                "sign",
                "--key",
                key,
                "--file",
                "fw.bin",
                "--add-to",
                "release.json",
            ],
        )
    };
    let dup = cosign("keys/release-1.pem").fails();
    assert!(
        dup.stderr.contains("already carries a signature"),
        "{}",
        dup.stderr
    );

    // A co-signer holding different bytes refuses to sign.
    std::fs::write(d.join("other.bin"), b"other").unwrap();
    let wrong = firmcast(
        d,
        &[
            "release",
            "sign",
            "--key",
            "keys/release-2.pem",
            "--file",
            "other.bin",
            "--add-to",
            "release.json",
        ],
    )
    .fails();
    assert!(
        wrong.stderr.contains("refusing to sign"),
        "{}",
        wrong.stderr
    );

    cosign("keys/release-2.pem").ok();
    verify(d, "release.json").ok();
}

#[test]
fn tampering_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_keys(d, "1", "1");
    let fw = firmware(d, 100_000);
    sign(d, "keys/release-1.pem", "release.json").ok();

    // A flipped firmware byte.
    let mut bytes = std::fs::read(&fw).unwrap();
    bytes[50_000] ^= 1;
    std::fs::write(&fw, &bytes).unwrap();
    let err = verify(d, "release.json").fails();
    assert!(
        err.stderr.contains("sha256") && err.stderr.contains("do not install"),
        "{}",
        err.stderr
    );
    assert_eq!(
        err.stderr.trim().lines().count(),
        1,
        "one-line reason: {}",
        err.stderr
    );
    bytes[50_000] ^= 1;
    bytes.push(0);
    std::fs::write(&fw, &bytes).unwrap();
    let err = verify(d, "release.json").fails();
    assert!(err.stderr.contains("100001 bytes"), "{}", err.stderr);
    bytes.pop();
    std::fs::write(&fw, &bytes).unwrap();
    verify(d, "release.json").ok();

    // An edited manifest.
    tamper_payload(&d.join("release.json"), &d.join("edited.json"));
    let err = verify(d, "edited.json").fails();
    assert!(err.stderr.contains("1 invalid"), "{}", err.stderr);

    // An edited keyset (an attacker adds their own release key).
    std::fs::copy(d.join("keys/keyset.json"), d.join("keyset.orig")).unwrap();
    tamper_payload(&d.join("keyset.orig"), &d.join("keys/keyset.json"));
    let err = verify(d, "release.json").fails();
    assert!(
        err.stderr.contains("keyset") && err.stderr.contains("root"),
        "{}",
        err.stderr
    );
    std::fs::copy(d.join("keyset.orig"), d.join("keys/keyset.json")).unwrap();

    // A keyset signed by another root.
    let other = tempfile::tempdir().unwrap();
    init_keys(other.path(), "1", "1");
    let err = firmcast(
        d,
        &[
            "verify",
            "--root",
            other.path().join("keys/root.pub.pem").to_str().unwrap(),
            "--keyset",
            "keys/keyset.json",
            "--release",
            "release.json",
            "--file",
            "fw.bin",
        ],
    )
    .fails();
    assert!(
        err.stderr.contains("not signed by root keys"),
        "{}",
        err.stderr
    );

    // Garbage instead of an envelope.
    std::fs::write(d.join("junk.json"), b"{\"payloadType\": 1}").unwrap();
    let err = verify(d, "junk.json").fails();
    assert!(
        err.stderr.contains("malformed DSSE envelope"),
        "{}",
        err.stderr
    );
}

#[test]
fn rotation_renews_and_replaces_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_keys(d, "1", "1");
    firmware(d, 10);
    sign(d, "keys/release-1.pem", "old.json").ok();

    firmcast(
        d,
        &[
            "keys",
            "rotate",
            "--dir",
            "keys",
            "--new-release-keys",
            "2",
            "--threshold",
            "1",
        ],
    )
    .ok();
    assert!(d.join("keys/retired-v1/keyset.json").exists());
    assert!(d.join("keys/retired-v1/release-1.pem").exists());
    let shown = firmcast(
        d,
        &[
            "keys",
            "show",
            "keys/keyset.json",
            "--root",
            "keys/root.pub.pem",
        ],
    )
    .ok();
    assert!(
        shown.stdout.contains("keyset version 2") && shown.stdout.contains("release        1 of 2"),
        "{}",
        shown.stdout
    );
    // The retired release key no longer counts.
    let err = verify(d, "old.json").fails();
    assert!(err.stderr.contains("unknown keys"), "{}", err.stderr);
    sign(d, "keys/release-2.pem", "new.json").ok();
    verify(d, "new.json").ok();

    // A new root: the keyset is signed by both, and the old pin still verifies it.
    std::fs::copy(d.join("keys/root.pub.pem"), d.join("root-v1.pub.pem")).unwrap();
    firmcast(d, &["keys", "rotate", "--dir", "keys", "--new-root"]).ok();
    let shown = firmcast(
        d,
        &[
            "keys",
            "show",
            "keys/keyset.json",
            "--root",
            "root-v1.pub.pem",
        ],
    )
    .ok();
    assert!(
        shown.stdout.contains("keyset version 3"),
        "{}",
        shown.stdout
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Rewrites one byte of the payload, keeping the signatures.
fn tamper_payload(from: &Path, to: &Path) {
    use base64::Engine;
    let mut env: serde_json::Value = serde_json::from_slice(&std::fs::read(from).unwrap()).unwrap();
    let mut payload = base64_decode(env["payload"].as_str().unwrap());
    let text = String::from_utf8(payload.clone()).unwrap();
    payload = text
        .replacen("\"version\": ", "\"version\":  ", 1)
        .into_bytes();
    env["payload"] = base64::engine::general_purpose::STANDARD
        .encode(payload)
        .into();
    std::fs::write(to, serde_json::to_vec(&env).unwrap()).unwrap();
}
