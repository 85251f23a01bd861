//! The core over its own transport, and `firmcast check`, against the real
//! `firmcast serve` binary on port 0 with keys from `firmcast keys init`
//! and releases signed and published with the CLI: the same end-to-end
//! checks the Python bindings pass (client/python/tests).
//!
//! The binary is `FIRMCAST_BIN`, or `firmcast` in this test's target dir
//! (`cargo nextest run --workspace` builds it).

use firmcast_client::transport::{Event, Transport};
use firmcast_client::{CheckItem, Client, ErrorKind, Outcome, Report, State};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const APP: &str = "FirmcastApp";
const HP: &str = "WH-1000XM5";
const BUDS: &str = "WF-1000XM4";

fn binary() -> PathBuf {
    let path = std::env::var_os("FIRMCAST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("firmcast")
        });
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p firmcast` or set FIRMCAST_BIN",
        path.display()
    );
    path
}

/// Runs the CLI in `dir`; panics with its output when it fails and `ok`.
fn cli(dir: &Path, args: &[&str], ok: bool) -> (String, String) {
    let out = Command::new(binary())
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.success(),
        ok,
        "firmcast {args:?}:\n{stdout}{stderr}"
    );
    (stdout, stderr)
}

struct Live {
    dir: tempfile::TempDir,
    url: String,
    token: String,
    child: Child,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Live {
    fn start() -> Live {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        cli(d, &["keys", "init", "--dir", "keys"], true);
        let (out, _) = cli(
            d,
            &["admin", "token", "--name", "t", "--role", "admin"],
            true,
        );
        let token = out
            .lines()
            .find_map(|l| l.strip_prefix("token: "))
            .unwrap()
            .to_owned();
        let entry = out.split_once("[[admin.tokens]]").unwrap().1;
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[[admin.tokens]]{entry}\n[limits]\nper_ip_rps = 0\n"
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let mut child = Command::new(binary())
            .current_dir(d)
            .args(["serve", "--config", "config.toml"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("firmcast listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("firmcast serve prints its address within 30 s");
        Live {
            dir,
            url,
            token,
            child,
        }
    }

    fn publish(&self, product: &str, version: &str, seq: u64, size: usize, salt: u8) -> Vec<u8> {
        let d = self.dir.path();
        let fw: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8 ^ salt).collect();
        let name = format!("{product}-{version}");
        std::fs::write(d.join(format!("{name}.bin")), &fw).unwrap();
        let (bin, json, seq) = (
            format!("{name}.bin"),
            format!("{name}.json"),
            seq.to_string(),
        );
        cli(
            d,
            &[
                "release",
                "sign",
                "--key",
                "keys/release-1.pem",
                "--product",
                product,
                "--version",
                version,
                "--seq",
                &seq,
                "--file",
                &bin,
                "--from",
                ">=1.0.0",
                "--out",
                &json,
            ],
            true,
        );
        cli(
            d,
            &[
                "release",
                "publish",
                "--server",
                &self.url,
                "--token",
                &self.token,
                "--release",
                &json,
                "--file",
                &bin,
            ],
            true,
        );
        fw
    }

    /// `firmcast check` of HP 2.0.0 against this server, plus `extra`.
    fn check_cli(&self, extra: &[&str]) -> (String, String) {
        let mut args = vec![
            "check",
            "--server",
            &self.url,
            "--root",
            "keys/root.pub.pem",
        ];
        args.extend_from_slice(&["--product", HP, "--version", "2.0.0"]);
        args.extend_from_slice(extra);
        cli(self.dir.path(), &args, true)
    }

    fn transport(&self) -> Transport {
        let root = std::fs::read_to_string(self.dir.path().join("keys/root.pub.pem")).unwrap();
        Transport::new(Client::new(&self.url, &root).unwrap())
    }

    /// Three products: the app and two devices.
    fn publish_three(&self) -> Vec<u8> {
        self.publish(APP, "1.1.0", 1, 30_000, 1);
        let fw = self.publish(HP, "2.2.0", 1, 200_000, 2);
        self.publish(BUDS, "3.1.0", 1, 1000, 3);
        fw
    }
}

fn items() -> Vec<CheckItem> {
    vec![
        CheckItem::new(APP, "1.0.0"),
        CheckItem::new(HP, "2.0.0"),
        CheckItem::new(BUDS, "3.1.0"),
    ]
}

#[test]
fn the_app_and_two_devices_check_download_resume_and_persist() {
    let live = Live::start();
    let fw = live.publish_three();
    let t = live.transport();
    let o = t.check(&State::default(), items()).unwrap();
    let app = o.results[0].outcome.clone().unwrap().unwrap();
    assert_eq!(app.version, "1.1.0");
    let hp = o.results[1].outcome.clone().unwrap().unwrap();
    assert_eq!(
        (hp.product.as_str(), hp.version.as_str(), hp.size),
        (HP, "2.2.0", 200_000)
    );
    assert_eq!(o.results[2].outcome, Ok(None));
    let state = State::from_json(&o.state.to_json()).unwrap();
    assert_eq!(state.seq.get(HP), Some(&1));

    // A download cut off earlier: the .part is resumed, then verified.
    let dl = live.dir.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    std::fs::write(dl.join(format!("{HP}-2.2.0.part")), &fw[..70_000]).unwrap();
    let mut events = Vec::new();
    let path = t.download_to(&hp, &dl, &mut |e| events.push(e)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), fw);
    assert_eq!(
        events[0],
        Event::Resuming {
            at: 70_000,
            size: 200_000
        }
    );
    assert!(!dl.join(format!("{HP}-2.2.0.part")).exists());

    // After installing, the persisted state finds nothing newer.
    let o = t.check(&state, vec![CheckItem::new(HP, "2.2.0")]).unwrap();
    assert_eq!(o.results[0].outcome, Ok(None));
    assert_eq!(o.state.keyset_version(), Some(1));

    // `firmcast check` agrees, from the same kind of state file.
    let (out, _) = live.check_cli(&["--state", "cli-state.json"]);
    assert!(
        out.starts_with(&format!("update available: {HP} 2.2.0 (seq 1")),
        "{out}"
    );
}

#[test]
fn a_tampered_blob_is_refused_and_deleted() {
    let live = Live::start();
    let fw = live.publish(HP, "2.2.0", 1, 50_000, 2);
    let blobs = live.dir.path().join("data/blobs/sha256");
    let shard = std::fs::read_dir(&blobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let blob = std::fs::read_dir(shard)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&blob, fw.iter().map(|b| b ^ 0x5A).collect::<Vec<_>>()).unwrap();
    let t = live.transport();
    let o = t
        .check(&State::default(), vec![CheckItem::new(HP, "2.0.0")])
        .unwrap();
    let update = o.results[0].outcome.clone().unwrap().unwrap();
    let dl = live.dir.path().join("dl");
    let e = t.download_to(&update, &dl, &mut |_| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch, "{e}");
    assert_eq!(
        std::fs::read_dir(&dl).unwrap().count(),
        0,
        "nothing unverified is left"
    );
}

/// Needs the server's `day` in check answers and `last_day` per batch item.
#[test]
fn the_server_day_is_kept_and_echoed() {
    let live = Live::start();
    live.publish_three();
    let t = live.transport();
    let o = t.check(&State::default(), items()).unwrap();
    let day = o
        .day
        .expect("the server sends its day in every check answer");
    let today = chrono::Utc::now().timestamp().div_euclid(86_400) as u64;
    assert!(day == today || day + 1 == today, "day {day}, today {today}");
    assert_eq!(o.state.last_day.get(HP), Some(&day));
    // The echo is accepted (the server refuses unknown fields).
    t.check(&o.state, items()).unwrap();
    live.check_cli(&["--state", "s.json"]);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(live.dir.path().join("s.json")).unwrap()).unwrap();
    assert_eq!(saved["last_day"][HP], day);
}

/// Needs the server's `POST /v1/reports`.
#[test]
fn outcome_reports_are_accepted() {
    let live = Live::start();
    live.publish_three();
    let t = live.transport();
    let o = t
        .check(&State::default(), vec![CheckItem::new(HP, "2.0.0")])
        .unwrap();
    let update = o.results[0].outcome.clone().unwrap().unwrap();
    t.report(&Report::new(&update, Outcome::Installed)).unwrap();
    let failed = Outcome::Failed {
        stage: firmcast_client::Stage::Boot,
        code: "E42".into(),
    };
    t.report(&Report::new(&update, failed)).unwrap();
    let (_, err) = live.check_cli(&["--download", "dl", "--report"]);
    assert!(!err.contains("not accepted"), "{err}");
}
