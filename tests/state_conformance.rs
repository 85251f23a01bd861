//! The state store conformance suite against the embedded (redb) backend,
//! plus what only a file-backed store can promise: data survives a reopen.

mod support;

use std::sync::Arc;

use firmcast::state::embedded::EmbeddedStateStore;
use firmcast::state::{ReleasePatch, StateStore};
use support::state_suite::{instant, release};
use tempfile::TempDir;

/// A fresh store in its own temp dir; the dir is returned as the guard so it
/// outlives the store and is removed when the test ends.
async fn fresh_store() -> (Arc<dyn StateStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStateStore::open(&dir.path().join("state.redb")).unwrap();
    (Arc::new(store), dir)
}

state_conformance!(fresh_store());

#[tokio::test]
async fn backend_is_embedded() {
    assert_eq!(fresh_store().await.0.backend(), "embedded");
}

#[tokio::test]
async fn data_survives_reopen() {
    // Parent directories are created on open.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/state.redb");
    let a = release("P", "1.0.0", 1);
    let b = release("P", "1.1.0", 2);
    let (patched, audit_id) = {
        let store = EmbeddedStateStore::open(&path).unwrap();
        store.insert_release(&a).await.unwrap();
        store.insert_release(&b).await.unwrap();
        let patched = store
            .update_release(
                "P",
                "1.1.0",
                &ReleasePatch {
                    yanked: Some(true),
                    ..Default::default()
                },
                instant(60),
            )
            .await
            .unwrap();
        let entry = firmcast::state::AuditEntry {
            id: 0,
            at: instant(61),
            actor: "ops".into(),
            action: "release.patch".into(),
            target: "P 1.1.0".into(),
            detail: serde_json::json!({ "yanked": true }),
        };
        let audit_id = store.append_audit(&entry).await.unwrap();
        (patched, audit_id)
        // The store is dropped here, releasing the file lock.
    };

    let store = EmbeddedStateStore::open(&path).unwrap();
    assert_eq!(
        store.list_releases(None).await.unwrap(),
        vec![a, patched.clone()]
    );
    assert_eq!(
        store.get_release("P", "1.1.0").await.unwrap(),
        Some(patched)
    );
    let audit = store.list_audit(None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].id, audit_id);
    assert_eq!(audit[0].actor, "ops");

    // The publish rules still hold against what was reloaded.
    assert!(matches!(
        store.insert_release(&release("P", "1.1.0", 3)).await,
        Err(firmcast::state::StateError::DuplicateVersion { .. })
    ));
    assert!(matches!(
        store.insert_release(&release("P", "1.2.0", 2)).await,
        Err(firmcast::state::StateError::StaleSeq { max: 2, .. })
    ));
    assert!(store.append_audit(&audit[0]).await.unwrap() > audit_id);
}
