//! The application: builds the backends and services from settings, binds,
//! serves until told to stop. Tests build it with `listen = 127.0.0.1:0`
//! and run it in process against the real backends.

use crate::api::{Api, ApiLimits, Auth};
use crate::blob::{local::LocalBlobStore, BlobStore};
use crate::catalog::{signer::load_signer, Catalog};
use crate::config::{BlobBackend, Settings};
use crate::edge::admission::Admission;
use crate::edge::{Edge, EdgeSettings};
use crate::fanout::worker::Fanout;
use crate::releases::Releases;
use crate::rollout::Rollout;
use crate::storage::Backend;
use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often an idle HTTP/2 connection is PINGed (and how long, halved, a
/// PONG may take).
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

pub struct Application {
    listener: TcpListener,
    edge: Arc<Edge>,
    releases: Arc<Releases>,
    fanout: Arc<Fanout>,
    rollout: Arc<Rollout>,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self> {
        let started = Instant::now();
        let signer = load_signer(&settings)?;
        tracing::info!(keyset_version = signer.keyset.version(), "keys loaded");

        let backend = Backend::open(&settings).await?;
        let state = crate::state::open(&backend)
            .await
            .context("cannot open the release store")?;
        let push = crate::fanout::open(&backend)
            .await
            .context("cannot open the push store")?;
        let stats = crate::stats::open(&backend)
            .await
            .context("cannot open the stats store")?;
        let blobs = open_blobs(&settings)?;
        let fanout = Arc::new(Fanout::from_settings(
            &settings,
            push.clone(),
            Some(&backend),
        )?);

        let catalog = Arc::new(Catalog::new(signer, settings.server.public_url.clone()));
        let releases = Arc::new(Releases::new(state, catalog.clone(), blobs.clone()));
        let read = Instant::now();
        releases.load().await.map_err(|e| {
            anyhow::anyhow!("cannot read releases from the state store: {}", e.message)
        })?;
        tracing::info!(
            releases = catalog.load().release_count(),
            load_ms = read.elapsed().as_millis() as u64,
            "catalog loaded"
        );
        crate::memory::release_startup_memory().await;
        let rollout = Arc::new(Rollout::new(
            &settings,
            stats,
            releases.clone(),
            push.clone(),
        ));

        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (in use? set server.listen)",
                    settings.server.listen
                )
            })?;
        let admission = Arc::new(Admission::new(&settings.limits));
        let requests = Arc::new(crate::edge::log::RequestLog::default());
        let api = Arc::new(Api {
            catalog,
            releases: releases.clone(),
            blobs,
            push,
            fanout: fanout.clone(),
            auth: Auth::from_settings(&settings),
            metrics: Default::default(),
            admission: admission.clone(),
            requests: requests.clone(),
            rollout: rollout.clone(),
            limits: ApiLimits::from_settings(&settings),
            console: crate::console::Console::from_backend(&backend, &settings.console),
        });
        let edge = Arc::new(Edge {
            api,
            admission,
            log: requests,
            settings: EdgeSettings::from_settings(&settings),
        });
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
        Ok(Application {
            listener,
            edge,
            releases,
            fanout,
            rollout,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The handlers' services, for tests that look inside.
    pub fn api(&self) -> Arc<Api> {
        self.edge.api.clone()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// for up to `server.shutdown_grace_secs`. Accept, spawn, serve: each
    /// connection is [`crate::edge::conn::serve`]'s.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let s = &self.settings;
        let background = [
            tokio::spawn(
                self.releases
                    .clone()
                    .resign_every(Duration::from_secs(s.signing.resign_interval_secs)),
            ),
            tokio::spawn(self.releases.clone().follow_others()),
            tokio::spawn(
                self.fanout
                    .clone()
                    .run(self.edge.api.catalog.clone(), s.push.workers),
            ),
            tokio::spawn(sweep_idle_tokens(self.edge.api.clone(), s.clone())),
            tokio::spawn(self.rollout.clone().run()),
            tokio::spawn(crate::blob::gc::sweep_orphans(
                self.releases.clone(),
                self.edge.api.blobs.clone(),
                s.blob.orphan_ttl_hours,
            )),
        ];

        let builder = Arc::new(crate::edge::conn::builder(H2_KEEP_ALIVE));
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            connections.spawn(crate::edge::conn::serve(
                self.edge.clone(),
                builder.clone(),
                stream,
                peer,
                stop.clone(),
            ));
        }
        drop(self.listener);
        for task in &background {
            task.abort();
        }
        // Awaited, so the stores they hold are closed when this returns (a
        // restart in the same process opens the same files).
        for task in background {
            let _ = task.await;
        }
        stop.cancel();
        connections.close();
        let grace = Duration::from_secs(s.server.shutdown_grace_secs);
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period; closing them");
        }
        // What was counted since the last flush, so a stop loses nothing.
        self.rollout.flush().await;
        tracing::info!("stopped");
        Ok(())
    }
}

fn open_blobs(settings: &Settings) -> Result<Arc<dyn BlobStore>> {
    Ok(match settings.blob.backend {
        BlobBackend::Local => {
            let dir = settings.blob_dir();
            tracing::info!(dir = %dir.display(), "blobs: local directory");
            Arc::new(
                LocalBlobStore::open(&dir)
                    .with_context(|| format!("cannot open the blob directory {}", dir.display()))?,
            )
        }
        BlobBackend::S3 => {
            let s3 = &settings.blob.s3;
            tracing::info!(bucket = %s3.bucket, endpoint = %s3.endpoint, prefix = %s3.prefix, "blobs: s3");
            Arc::new(
                crate::blob::s3::S3BlobStore::from_settings(s3)
                    .context("cannot set up the S3 blob store ([blob.s3])")?,
            )
        }
    })
}

/// Deletes push tokens idle longer than `push.retention_days`, at start and
/// then every `push.sweep_interval_secs` (hourly by default).
async fn sweep_idle_tokens(api: Arc<Api>, settings: Settings) {
    let every = Duration::from_secs(settings.push.sweep_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let cutoff =
            chrono::Utc::now() - chrono::Duration::days(settings.push.retention_days as i64);
        match api.push.sweep_idle(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "idle push tokens deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "idle token sweep failed; trying again at the next interval")
            }
        }
    }
}
