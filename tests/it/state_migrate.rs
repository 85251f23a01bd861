//! `firmcast state export` / `state import`: moving a deployment's state
//! from the embedded file to Redis without losing a field.

use crate::support;

use std::path::Path;
use std::time::Duration;

use firmcast::state::embedded::EmbeddedStateStore;
use firmcast::state::redis::RedisStateStore;
use firmcast::state::{AuditEntry, ReleasePatch, StateStore, StoredRelease};
use support::cli::firmcast;
use support::state_suite::{instant, redis_url, release, unique_prefix, RedisKeys};

fn write_config(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

fn redis_config(prefix: &str) -> String {
    format!(
        "[state]\nbackend = \"redis\"\nredis_url = \"{}\"\nredis_prefix = \"{prefix}\"\nredis_timeout_ms = 5000\n",
        redis_url()
    )
}

/// Releases of two products with every field varied, one patched after
/// publishing, and an audit log; returns what the store then holds.
async fn populate(store: &dyn StateStore) -> (Vec<StoredRelease>, Vec<AuditEntry>) {
    let mut a = release("WH-1000XM5", "2.2.0", 17);
    a.seed = u64::MAX;
    a.published_by = "bob \"the builder\" ünïcode".into();
    let mut b = release("WH-1000XM5", "2.3.0-rc.1+build.5", 18);
    b.channel = "stable".into();
    b.rollout_bp = 0;
    b.paused = false;
    let c = release("WF-1000XM4", "1.0.0", 1 << 60);
    // Inserted out of (product, seq) order on purpose.
    for r in [&c, &a, &b] {
        store.insert_release(r).await.unwrap();
    }
    store
        .update_release(
            "WH-1000XM5",
            "2.2.0",
            &ReleasePatch {
                rollout_bp: Some(10_000),
                paused: Some(false),
                yanked: Some(true),
                ..Default::default()
            },
            instant(3_600),
        )
        .await
        .unwrap();
    for n in 0..3 {
        let entry = AuditEntry {
            id: 0,
            at: instant(n),
            actor: format!("ops-{n}"),
            action: "release.publish".into(),
            target: format!("WH-1000XM5 2.{n}.0"),
            detail: serde_json::json!({ "n": n, "nested": { "list": [1, 2.5, null] } }),
        };
        store.append_audit(&entry).await.unwrap();
    }
    let releases = store.list_releases(None).await.unwrap();
    let audit = store.list_audit(None, 100).await.unwrap();
    (releases, audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_export_imports_into_redis_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_config(dir, "embedded.toml", "[server]\ndata_dir = \"data\"\n");
    let (releases, audit) = {
        let store = EmbeddedStateStore::open(&dir.join("data/state.redb")).unwrap();
        populate(&store).await
        // Dropped: the export opens the file itself.
    };
    assert_eq!(releases.len(), 3);

    let run = firmcast(
        dir,
        &[
            "state",
            "export",
            "--config",
            "embedded.toml",
            "--out",
            "state.jsonl",
        ],
    )
    .ok();
    assert!(
        run.stderr
            .contains("exported 3 releases and 3 audit entries"),
        "{}",
        run.stderr
    );
    let export = std::fs::read_to_string(dir.join("state.jsonl")).unwrap();
    let kinds: Vec<String> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "\"release\"",
            "\"release\"",
            "\"release\"",
            "\"audit\"",
            "\"audit\"",
            "\"audit\""
        ]
    );
    // Standard output by default, byte for byte the same.
    let run = firmcast(dir, &["state", "export", "--config", "embedded.toml"]).ok();
    assert_eq!(run.stdout, export);

    let prefix = unique_prefix();
    let keys = RedisKeys::new(&prefix);
    write_config(dir, "redis.toml", &redis_config(&prefix));
    let run = firmcast(
        dir,
        &[
            "state",
            "import",
            "--config",
            "redis.toml",
            "--in",
            "state.jsonl",
        ],
    )
    .ok();
    assert!(
        run.stderr
            .contains("imported 3 releases and 3 audit entries into the redis state store"),
        "{}",
        run.stderr
    );

    let redis = RedisStateStore::connect(&redis_url(), &prefix, Duration::from_secs(5))
        .await
        .unwrap();
    let imported = redis.list_releases(None).await.unwrap();
    assert_eq!(imported.len(), releases.len());
    for (got, want) in imported.iter().zip(&releases) {
        let what = format!("{} {}", want.product, want.version);
        assert_eq!(got.product, want.product, "{what}: product");
        assert_eq!(got.version, want.version, "{what}: version");
        assert_eq!(got.channel, want.channel, "{what}: channel");
        assert_eq!(got.seq, want.seq, "{what}: seq");
        assert_eq!(got.envelope, want.envelope, "{what}: envelope");
        assert_eq!(got.rollout_bp, want.rollout_bp, "{what}: rollout_bp");
        assert_eq!(got.paused, want.paused, "{what}: paused");
        assert_eq!(got.yanked, want.yanked, "{what}: yanked");
        assert_eq!(got.seed, want.seed, "{what}: seed");
        assert_eq!(got.published_at, want.published_at, "{what}: published_at");
        assert_eq!(got.published_by, want.published_by, "{what}: published_by");
        assert_eq!(got.updated_at, want.updated_at, "{what}: updated_at");
    }
    assert_eq!(imported, releases);
    // The log starts empty in Redis, so even the ids carry over.
    assert_eq!(redis.list_audit(None, 100).await.unwrap(), audit);
    // Each import counted as a catalog change, so running instances reload.
    assert_eq!(redis.catalog_version().await.unwrap(), 3);

    // A second import into the now non-empty store is refused outright...
    let run = firmcast(
        dir,
        &[
            "state",
            "import",
            "--config",
            "redis.toml",
            "--in",
            "state.jsonl",
        ],
    )
    .fails();
    assert!(run.stderr.contains("--merge"), "{}", run.stderr);
    // ...and with --merge every release is refused, each with its line.
    let run = firmcast(
        dir,
        &[
            "state",
            "import",
            "--config",
            "redis.toml",
            "--in",
            "state.jsonl",
            "--merge",
        ],
    )
    .fails();
    for (n, r) in releases.iter().enumerate() {
        let line = format!(
            "line {}: release {} {} refused",
            n + 1,
            r.product,
            r.version
        );
        assert!(run.stderr.contains(&line), "{line} in:\n{}", run.stderr);
    }
    assert!(run.stderr.contains("already published"), "{}", run.stderr);
    assert_eq!(redis.list_releases(None).await.unwrap(), releases);
    drop(keys);
}

#[tokio::test]
async fn malformed_export_names_the_line_and_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let good = serde_json::json!({
        "kind": "release",
        "product": "P",
        "version": "1.0.0",
        "channel": "stable",
        "seq": 1,
        "envelope": "{}",
        "rollout_bp": 0,
        "paused": false,
        "yanked": false,
        "seed": 1,
        "published_at": "2026-01-01T00:00:00Z",
        "published_by": "ops",
        "updated_at": "2026-01-01T00:00:00Z"
    });
    let mut not_semver = good.clone();
    not_semver["version"] = "v2".into();
    let body = format!("{good}\n{{\"kind\":\"release\",\"product\":\"P\"}}\n{not_semver}\n");
    std::fs::write(dir.join("bad.jsonl"), body).unwrap();

    let prefix = unique_prefix();
    let keys = RedisKeys::new(&prefix);
    write_config(dir, "redis.toml", &redis_config(&prefix));
    let run = firmcast(
        dir,
        &[
            "state",
            "import",
            "--config",
            "redis.toml",
            "--in",
            "bad.jsonl",
        ],
    )
    .fails();
    assert!(run.stderr.contains("line 2:"), "{}", run.stderr);
    assert!(run.stderr.contains("line 3:"), "{}", run.stderr);
    assert!(!run.stderr.contains("line 1:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    assert!(keys.keys().is_empty(), "{:?}", keys.keys());
}
