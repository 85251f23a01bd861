//! `firmcast serve` as users start it: the missing-keys guidance, the loud
//! development keyset, and a working server from the binary.

use crate::support;

use std::process::Command;
use support::cli::firmcast;

#[test]
fn first_start_without_keys_says_how_to_make_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let run = firmcast(dir.path(), &["serve", "--config", "c.toml"]).fails();
    assert!(
        run.stderr.contains("firmcast keys init --dir keys"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--dev-keys"), "{}", run.stderr);
}

#[test]
fn dev_keys_are_created_loudly_and_serve_works() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_firmcast"))
        .current_dir(dir.path())
        .args(["serve", "--config", "c.toml", "--dev-keys"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("firmcast listening on ")
        .expect(&line)
        .to_owned();
    let keys: serde_json::Value = reqwest::blocking::get(format!("{url}/v1/keys"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(keys["payloadType"], "application/vnd.firmcast.keyset+json");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEVELOPMENT keyset"), "{stderr}");
    assert!(dir.path().join("keys/root.pem").exists());
}

#[test]
fn a_config_typo_is_refused_by_name_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[server]\nlisen = \"127.0.0.1:0\"\n", "`lisen` in [server]"),
        ("[limitz]\nper_ip_rps = 5\n", "`limitz` at the top level"),
        ("[limits]\nper_ip_rsp = 5\n", "`per_ip_rsp` in [limits]"),
    ] {
        std::fs::write(dir.path().join("typo.toml"), text).unwrap();
        let run = firmcast(
            dir.path(),
            &["serve", "--config", "typo.toml", "--dev-keys"],
        )
        .fails();
        assert!(
            run.stderr.contains(&format!("unknown key {key}")),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("typo.toml"),
            "names the file: {}",
            run.stderr
        );
        assert!(
            !dir.path().join("keys").exists(),
            "refused before making keys"
        );
    }
    // An environment variable with a typo is named the same way.
    std::fs::write(
        dir.path().join("ok.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_firmcast"))
        .current_dir(dir.path())
        .args(["serve", "--config", "ok.toml"])
        .env("FIRMCAST__LIMITS__PER_IP_RSP", "5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown key `per_ip_rsp` in [limits]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("FIRMCAST__LIMITS__PER_IP_RSP"),
        "names the variable: {stderr}"
    );
}

#[test]
fn env_overrides_config() {
    let server = support::server::spawn_server();
    let r = reqwest::blocking::get(format!("{}/readyz", server.url)).unwrap();
    assert_eq!(r.status(), 200);
    // FIRMCAST__SECTION__KEY beats the file: a bad listen address is reported.
    let out = Command::new(env!("CARGO_BIN_EXE_firmcast"))
        .current_dir(server.dir.path())
        .args(["serve", "--config", "config.toml"])
        .env("FIRMCAST__SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listen") || stderr.contains("invalid"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_upload_leaves_no_partial_artifact() {
    use futures_util::StreamExt;
    let mut server = support::server::spawn_server();
    let url = format!("{}/v1/admin/artifacts/P/1.0.0", server.url);
    // A body that sends 2 MiB, then stalls forever.
    let body = futures_util::stream::iter(
        (0..2).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 1 << 20]))),
    )
    .chain(futures_util::stream::pending());
    let client = reqwest::Client::new();
    let upload = tokio::spawn(
        client
            .put(url)
            .bearer_auth(&server.token)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    let tmp = server.dir.path().join("data/blobs/tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let written: u64 = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        if written > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never reached the disk"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.kill();
    upload.abort();
    let restarted = support::server::ServeProcess::start(server.dir.path(), "config.toml", &[]);
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "partial upload cleaned at start"
    );
    let blobs: Vec<_> = walk(&server.dir.path().join("data/blobs/sha256"));
    assert!(blobs.is_empty(), "no partial artifact stored: {blobs:?}");
    let r = reqwest::get(format!("{}/readyz", restarted.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
