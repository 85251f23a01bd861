//! `firmcast release ramp|health|stats` against the real server: a ramp
//! shows in `release list`, an install report from `check --report` and a
//! failure from another address trip the gate, and `release stats` tells
//! the story. A viewer token reads but cannot steer.

use crate::support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::cli::{firmcast, Run};
use support::release::{admin, check, firmware, publish, sign, P};
use support::server::{make_token, spawn_server_with, TestServer};

fn server() -> (TestServer, String) {
    let keys = tempfile::tempdir().unwrap();
    let (viewer, entry) = make_token(keys.path(), "watcher", "viewer");
    let s = spawn_server_with(&format!(
        "{entry}\n[rollout]\nflush_interval_secs = 1\nevaluate_interval_secs = 1\n"
    ));
    firmware(s.dir.path(), "fw.bin", 5000, 0);
    sign(s.dir.path(), "2.2.0", "1", "fw.bin", "release.json");
    publish(&s, "release.json", "fw.bin", &["--rollout", "0"]).ok();
    (s, viewer)
}

/// Runs `admin` until `stdout` satisfies `done`, for at most 20 s.
#[track_caller]
fn until(s: &TestServer, args: &[&str], done: impl Fn(&str) -> bool) -> Run {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run = admin(s, args).ok();
        if done(&run.stdout) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "release {args:?} never got there:\n{}",
            run.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ramp_shows_in_the_list_and_refusals_name_the_rule() {
    let (s, _) = server();
    let run = admin(
        &s,
        &["ramp", P, "2.2.0", "--steps", "1,50,100", "--every", "1h"],
    )
    .ok();
    assert!(run.stdout.contains("rollout 1%, live"), "{}", run.stdout);
    assert!(
        run.stdout.contains("ramp step 1/3, next 50% at 20"),
        "{}",
        run.stdout
    );
    let list = admin(&s, &["list"]).ok();
    assert!(
        list.stdout.lines().next().unwrap().contains("RAMP"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("step 1/3, next 50% at"),
        "{}",
        list.stdout
    );

    let run = admin(&s, &["ramp", P, "2.2.0", "--steps", "5,1"]).fails();
    assert!(run.stderr.contains("bad_ramp"), "{}", run.stderr);
    let run = admin(&s, &["ramp", P, "2.2.0", "--steps", "five"]).fails();
    assert!(run.stderr.contains("--steps \"five\""), "{}", run.stderr);

    let run = admin(&s, &["ramp", P, "2.2.0", "--off"]).ok();
    assert!(run.stdout.contains("rollout 1%, live"), "{}", run.stdout);
    assert!(!run.stdout.contains("ramp"), "{}", run.stdout);

    let run = admin(&s, &["ramp", P, "2.2.0", "--steps", "phased"]).ok();
    assert!(run.stdout.contains("ramp step 1/7"), "{}", run.stdout);
}

#[test]
fn a_gate_set_from_the_cli_pauses_the_release_and_stats_say_why() {
    let (s, viewer) = server();
    admin(&s, &["rollout", P, "2.2.0", "100"]).ok();
    let run = admin(
        &s,
        &[
            "health",
            P,
            "2.2.0",
            "--min-reports",
            "2",
            "--max-failure-rate",
            "0.4",
        ],
    )
    .ok();
    assert!(run.stdout.contains("live"), "{}", run.stdout);
    admin(&s, &["health", P, "2.2.0", "--min-reports", "2"]).fails();

    // One install reported by the reference client from 127.0.0.1 ...
    check(&s, "2.0.0", &["--download", "dl", "--report"]).ok();
    // ... and one failure from another address: 50% failed, above 40%.
    let failed = reqwest::blocking::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(format!("{}/v1/reports", s.url))
        .json(&json!({"product": P, "from": "2.0.0", "to": "2.2.0",
            "outcome": "failed", "stage": "install", "code": "E_FLASH"}))
        .send()
        .unwrap();
    assert_eq!(failed.status(), 202);

    let list = until(&s, &["list"], |out| out.contains("paused by health"));
    assert!(list.stdout.contains("2.2.0"), "{}", list.stdout);
    let stats = admin(&s, &["stats", P, "--days", "7"]).ok().stdout;
    let row = stats
        .lines()
        .find(|l| l.starts_with("2.2.0") && l.contains("paused by health"))
        .unwrap_or_else(|| panic!("no release row:\n{stats}"));
    for want in ["100%", "50.0% / 40.0% of 2+", "E_FLASH 1", "install 1"] {
        assert!(row.contains(want), "{want} missing:\n{stats}");
    }
    let adoption = stats.lines().find(|l| l.starts_with("2.0.0"));
    assert!(
        adoption.is_some_and(|l| l.contains("100.0%")),
        "the check was not counted:\n{stats}"
    );

    // A viewer reads the same stats but cannot steer.
    let as_viewer = |args: &[&str]| {
        let mut all = vec!["release"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &s.url, "--token", &viewer]);
        firmcast(s.dir.path(), &all)
    };
    assert!(as_viewer(&["stats", P]).ok().stdout.contains("E_FLASH 1"));
    let run = as_viewer(&["resume", P, "2.2.0"]).fails();
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    let run = as_viewer(&["health", P, "2.2.0", "--default"]).fails();
    assert!(run.stderr.contains("403"), "{}", run.stderr);
}
