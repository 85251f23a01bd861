//! `firmcast serve` as users start it: the missing-keys guidance, the loud
//! development keyset, and a working server from the binary.

mod support;

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
