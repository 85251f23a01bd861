//! Releases: the one owner of release changes. It writes the release store,
//! the audit log and this instance's catalog snapshot, in that order, and
//! keeps the snapshot in step with changes made through other instances.
//! Handlers ask it; nothing else locks or replaces the catalog.

use crate::blob::BlobStore;
use crate::catalog::Catalog;
use crate::config::Role;
use crate::error::ApiError;
use crate::state::{
    AuditEntry, Condition, HealthGate, Ramp, ReleasePatch, StateError, StateStore, Steering,
    StoredRelease,
};
use chrono::{DateTime, Utc};
use firmcast_signing::{Envelope, ReleaseManifest};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Who is acting: an admin token's configured name and role, or the
/// service itself (`health`, `ramp`).
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

pub struct Releases {
    store: Arc<dyn StateStore>,
    catalog: Arc<Catalog>,
    blobs: Arc<dyn BlobStore>,
    /// Held from reading the store to installing what was read, so a slower
    /// refresh never installs a list read before a faster one's write.
    refreshing: tokio::sync::Mutex<()>,
}

/// A release to publish: a signed envelope and its initial rollout state.
pub struct Publish {
    pub envelope: Envelope,
    /// Basis points, 0..=10000 (a ramp's first step when it has one).
    pub rollout_bp: u16,
    pub paused: bool,
    pub health: Option<HealthGate>,
    pub ramp: Option<Ramp>,
}

/// The admin view of a release.
#[derive(Serialize)]
pub struct ReleaseView {
    pub product: String,
    pub version: String,
    pub channel: String,
    pub seq: u64,
    pub sha256: String,
    pub size: u64,
    pub rollout: f64,
    pub paused: bool,
    pub yanked: bool,
    pub critical: bool,
    pub published_at: DateTime<Utc>,
    pub published_by: String,
    pub updated_at: DateTime<Utc>,
    /// Who paused it (a token's name, or `health`) and why.
    pub paused_by: Option<String>,
    pub pause_reason: Option<String>,
    /// Its own gate; `null` means the deployment's default.
    pub health: Option<HealthGate>,
    pub ramp: Option<RampView>,
}

/// A ramp as people read it: percents, a humantime interval, where it is.
#[derive(Serialize)]
pub struct RampView {
    pub steps: Vec<f64>,
    pub every: String,
    /// Index of the step the rollout is at.
    pub step: usize,
    pub next_at: Option<DateTime<Utc>>,
    pub done: bool,
}

impl RampView {
    pub fn of(r: &Ramp) -> Self {
        RampView {
            steps: r.steps_bp.iter().map(|bp| f64::from(*bp) / 100.0).collect(),
            every: humantime::format_duration(Duration::from_secs(r.every_secs)).to_string(),
            step: r.step,
            next_at: r.next_at,
            done: r.done(),
        }
    }
}

impl ReleaseView {
    pub fn of(s: &StoredRelease) -> Result<Self, ApiError> {
        let manifest = Envelope::parse(s.envelope.as_bytes())
            .and_then(|e| ReleaseManifest::parse(&e.payload))
            .map_err(|e| {
                ApiError::internal(format!(
                    "stored release {} {} is unreadable: {e}",
                    s.product, s.version
                ))
            })?;
        Ok(ReleaseView {
            product: s.product.clone(),
            version: s.version.clone(),
            channel: s.channel.clone(),
            seq: s.seq,
            sha256: manifest.artifact.sha256,
            size: manifest.artifact.size,
            rollout: f64::from(s.rollout_bp) / 100.0,
            paused: s.paused,
            yanked: s.yanked,
            critical: manifest.critical,
            published_at: s.published_at,
            published_by: s.published_by.clone(),
            updated_at: s.updated_at,
            paused_by: s.steering.paused_by.clone(),
            pause_reason: s.steering.pause_reason.clone(),
            health: s.steering.health,
            ramp: s.steering.ramp.as_ref().map(RampView::of),
        })
    }
}

impl Releases {
    pub fn new(
        store: Arc<dyn StateStore>,
        catalog: Arc<Catalog>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        Releases {
            store,
            catalog,
            blobs,
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The snapshot update checks read.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Loads every stored release into the snapshot (start-up).
    pub async fn load(&self) -> Result<(), ApiError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let releases = self.store.list_releases(None).await?;
        self.catalog.replace(releases);
        Ok(())
    }

    /// Verifies `req` against the keyset and the uploaded artifact, stores
    /// it (the store refuses a duplicate version or a stale seq), audits it
    /// and installs it in the snapshot.
    pub async fn publish(&self, actor: &Actor, req: Publish) -> Result<StoredRelease, ApiError> {
        let manifest = self.catalog.keyset().verify_release(&req.envelope)?;
        match self.blobs.stat(&manifest.artifact.sha256).await? {
            None => {
                return Err(ApiError::conflict(
                    "artifact_missing",
                    format!(
                        "no uploaded artifact has sha256 {}; upload the firmware first (PUT /v1/admin/artifacts/{}/{}, or `firmcast release publish`)",
                        manifest.artifact.sha256, manifest.product, manifest.version
                    ),
                ))
            }
            Some(size) if size != manifest.artifact.size => {
                return Err(ApiError::conflict(
                    "artifact_mismatch",
                    format!(
                        "the stored artifact has {size} bytes, the release signed {}; re-sign the release",
                        manifest.artifact.size
                    ),
                ))
            }
            Some(_) => {}
        }
        let now = Utc::now();
        let stored = StoredRelease {
            product: manifest.product.clone(),
            version: manifest.version.to_string(),
            channel: manifest.channel.clone(),
            seq: manifest.seq,
            envelope: String::from_utf8(req.envelope.to_json_bytes()).expect("JSON is UTF-8"),
            rollout_bp: req.rollout_bp,
            paused: req.paused,
            yanked: false,
            seed: rand::random(),
            published_at: now,
            published_by: actor.name.clone(),
            updated_at: now,
            steering: Steering {
                health: req.health,
                ramp: req.ramp.clone(),
                ..Steering::default()
            },
        };
        self.store.insert_release(&stored).await?;
        if let Some(ramp) = &req.ramp {
            self.audit_ramp_step(&stored, None, ramp).await?;
        }
        self.audit(
            actor,
            "release.publish",
            format!("{} {}", stored.product, stored.version),
            serde_json::json!({
                "seq": stored.seq, "channel": stored.channel, "sha256": manifest.artifact.sha256,
                "rollout": f64::from(req.rollout_bp) / 100.0, "paused": req.paused,
                "health": req.health, "ramp": req.ramp,
            }),
        )
        .await?;
        self.refresh_product(&stored.product).await?;
        Ok(stored)
    }

    /// Applies `patch` (a yanked release stays yanked), audits it and
    /// installs the result.
    pub async fn patch(
        &self,
        actor: &Actor,
        product: &str,
        version: &str,
        patch: ReleasePatch,
    ) -> Result<StoredRelease, ApiError> {
        let current = self
            .store
            .get_release(product, version)
            .await?
            .ok_or_else(|| {
                ApiError::not_found("unknown_release", format!("no release {product} {version}"))
            })?;
        if current.yanked && patch.yanked == Some(false) {
            return Err(ApiError::conflict(
                "yanked",
                "a yanked release stays yanked; publish a new version with a higher seq instead",
            ));
        }
        let updated = self
            .store
            .update_release(product, version, &patch, Utc::now())
            .await?;
        if let Some(Some(ramp)) = &patch.ramp {
            self.audit_ramp_step(&current, Some(current.rollout_bp), ramp)
                .await?;
        }
        let mut detail = serde_json::json!({
            "rollout": patch.rollout_bp.map(|bp| f64::from(bp) / 100.0),
            "paused": patch.paused, "yanked": patch.yanked,
        });
        if let Some(health) = &patch.health {
            detail["health"] = serde_json::json!(health);
        }
        if let Some(ramp) = &patch.ramp {
            detail["ramp"] = serde_json::json!(ramp);
        }
        self.audit(
            actor,
            "release.patch",
            format!("{product} {version}"),
            detail,
        )
        .await?;
        self.refresh_product(product).await?;
        Ok(updated)
    }

    /// Pauses a live release whose gate is red, as the service (`health`),
    /// with the numbers; false when it was no longer live (another
    /// instance, or a person, was first).
    pub async fn auto_pause(
        &self,
        s: &StoredRelease,
        reason: &str,
        reports: &crate::stats::WindowReports,
        gate: HealthGate,
    ) -> Result<bool, ApiError> {
        let patch = ReleasePatch {
            paused: Some(true),
            pause: Some(("health".to_owned(), Some(reason.to_owned()))),
            only_if: Some(Condition::Live),
            ..ReleasePatch::default()
        };
        match self
            .store
            .update_release(&s.product, &s.version, &patch, Utc::now())
            .await
        {
            Ok(_) => {}
            Err(StateError::Precondition { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let actor = Actor {
            name: "health".to_owned(),
            role: Role::Admin,
        };
        self.audit(
            &actor,
            "release.auto_pause",
            format!("{} {}", s.product, s.version),
            serde_json::json!({
                "reason": reason, "installed": reports.installed, "failed": reports.failed,
                "failure_rate": reports.failure_rate(), "gate": gate, "window": s.steering.window,
            }),
        )
        .await?;
        self.refresh_product(&s.product).await?;
        Ok(true)
    }

    /// Moves a live release's ramp on by one step, as the service (`ramp`);
    /// `None` when the step was taken already (by another instance) or the
    /// release stopped being live.
    pub async fn advance_ramp(&self, s: &StoredRelease) -> Result<Option<StoredRelease>, ApiError> {
        let Some(ramp) = s.steering.ramp.as_ref().filter(|r| !r.done()) else {
            return Ok(None);
        };
        let now = Utc::now();
        let mut next = ramp.clone();
        next.step += 1;
        next.schedule(now);
        let patch = ReleasePatch {
            rollout_bp: Some(next.current_bp()),
            ramp: Some(Some(next.clone())),
            only_if: Some(Condition::LiveAtRampStep(ramp.step)),
            ..ReleasePatch::default()
        };
        let updated = match self
            .store
            .update_release(&s.product, &s.version, &patch, now)
            .await
        {
            Ok(updated) => updated,
            Err(StateError::Precondition { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.audit_ramp_step(s, Some(s.rollout_bp), &next).await?;
        self.refresh_product(&s.product).await?;
        Ok(Some(updated))
    }

    /// The audit entry of a ramp step (the first one when a ramp starts).
    async fn audit_ramp_step(
        &self,
        s: &StoredRelease,
        from_bp: Option<u16>,
        ramp: &Ramp,
    ) -> Result<(), ApiError> {
        let actor = Actor {
            name: "ramp".to_owned(),
            role: Role::Admin,
        };
        self.audit(
            &actor,
            "release.ramp_step",
            format!("{} {}", s.product, s.version),
            serde_json::json!({
                "from": from_bp.map(|bp| f64::from(bp) / 100.0),
                "to": f64::from(ramp.current_bp()) / 100.0,
                "step": ramp.step + 1, "steps": ramp.steps_bp.len(), "next_at": ramp.next_at,
            }),
        )
        .await
    }

    pub async fn list(&self, product: Option<&str>) -> Result<Vec<ReleaseView>, ApiError> {
        self.store
            .list_releases(product)
            .await?
            .iter()
            .map(ReleaseView::of)
            .collect()
    }

    /// Appends to the audit log and logs the action.
    pub async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: String,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        let entry = AuditEntry {
            id: 0,
            at: Utc::now(),
            actor: actor.name.clone(),
            action: action.to_owned(),
            target,
            detail,
        };
        self.store.append_audit(&entry).await?;
        tracing::info!(actor = %actor.name, action, target = %entry.target, "admin action");
        Ok(())
    }

    /// Rebuilds one product's part of the snapshot from the store.
    async fn refresh_product(&self, product: &str) -> Result<(), ApiError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let releases = self.store.list_releases(Some(product)).await?;
        self.catalog.replace_product(product, releases);
        Ok(())
    }

    /// Keeps this instance's snapshot in step with changes made by others:
    /// pub/sub for speed, plus a poll of the version counter that catches a
    /// missed message (or a Redis restart) within half a second. Returns at
    /// once for a single-instance store.
    pub async fn follow_others(self: Arc<Self>) {
        let Some(mut changes) = self.store.watch_catalog().await else {
            return; // Single-instance backend: local changes refresh directly.
        };
        let mut known = self.store.catalog_version().await.unwrap_or(0);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let seen = tokio::select! {
                v = changes.recv() => match v {
                    Some(v) => Some(v),
                    None => return,
                },
                _ = tick.tick() => self.store.catalog_version().await.ok(),
            };
            let Some(seen) = seen else { continue };
            if seen == known {
                continue;
            }
            let _one_at_a_time = self.refreshing.lock().await;
            match self.store.list_releases(None).await {
                Ok(all) => {
                    self.catalog.replace(all);
                    known = seen;
                    tracing::debug!(version = seen, "catalog refreshed from the shared store");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot refresh the catalog; serving the last snapshot")
                }
            }
        }
    }

    /// Re-signs freshness statements on a timer, well before they expire.
    pub async fn resign_every(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            self.catalog.resign();
            tracing::debug!("freshness statements re-signed");
        }
    }
}
