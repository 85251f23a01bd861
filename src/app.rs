//! The application: builds the backends from settings, binds, serves until
//! told to stop. Tests build it with `listen = 127.0.0.1:0` and run it in
//! process against the real backends.

use crate::api::{self, AppState, ClientAddr, Shared};
use crate::blob::{local::LocalBlobStore, BlobStore};
use crate::catalog::{signer::load_signer, Catalog};
use crate::config::{BlobBackend, Settings};
use crate::metrics::Metrics;
use crate::state::StateStore;
use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const X_FORWARDED_FOR: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-forwarded-for");

pub struct Application {
    listener: TcpListener,
    state: Shared,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self> {
        let started = Instant::now();
        let signer = load_signer(&settings)?;
        tracing::info!(keyset_version = signer.keyset.version(), "keys loaded");

        let state: Arc<dyn StateStore> = crate::state::open_state(&settings).await?;
        let blobs: Arc<dyn BlobStore> = match settings.blob.backend {
            BlobBackend::Local => {
                let dir = settings.blob_dir();
                tracing::info!(dir = %dir.display(), "blobs: local directory");
                Arc::new(
                    LocalBlobStore::open(&dir).with_context(|| {
                        format!("cannot open the blob directory {}", dir.display())
                    })?,
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
        };

        let push = crate::fanout::open_push(&settings).await?;

        let fanout = Arc::new(build_fanout(&settings, push.clone())?);

        let catalog = Catalog::new(signer, settings.server.public_url.clone());
        let read = Instant::now();
        let releases = state
            .list_releases(None)
            .await
            .context("cannot read releases from the state store")?;
        let build = Instant::now();
        catalog.replace(releases);
        tracing::info!(
            releases = catalog.load().release_count(),
            read_ms = (build - read).as_millis() as u64,
            build_ms = build.elapsed().as_millis() as u64,
            "catalog loaded"
        );
        crate::memory::release_startup_memory().await;

        let tokens = settings
            .admin
            .tokens
            .iter()
            .map(|t| {
                let mut h = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut h).expect("validated as 64 hex digits");
                (t.name.clone(), t.role, h)
            })
            .collect::<Vec<_>>();
        if tokens.is_empty() {
            tracing::warn!("no [[admin.tokens]] configured: the admin API refuses everyone (make one with `firmcast admin token`)");
        }

        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (in use? set server.listen)",
                    settings.server.listen
                )
            })?;
        let state = Arc::new(AppState {
            limits: crate::limits::Limits::new(&settings.limits),
            settings,
            catalog: Arc::new(catalog),
            state,
            blobs,
            push,
            fanout,
            metrics: Metrics::default(),
            tokens,
        });
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> Shared {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// for up to `server.shutdown_grace_secs`.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let state = self.state;
        let background = [
            tokio::spawn(resign_timer(state.clone())),
            tokio::spawn(
                state
                    .fanout
                    .clone()
                    .run(state.catalog.clone(), state.settings.push.workers),
            ),
            tokio::spawn(sweep_idle_tokens(state.clone())),
            tokio::spawn(catalog_sync(state.clone())),
        ];
        let service = warp::service(api::routes(state.clone()));

        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // Without a timer hyper silently disables the header timeout.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(
                state.settings.server.header_read_timeout_secs,
            ))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256);

        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            let limits_state = state.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    use futures_util::future::Either;
                    // Answers made without waiting are timed only for the debug log.
                    let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
                    // Overload protection before any handler (crate::limits).
                    let trusted = &limits_state.settings.server.trusted_proxies;
                    // Only a trusted proxy's header counts, and by default
                    // none is trusted: then the lookup is not worth its cost.
                    let forwarded = if trusted.is_empty() {
                        None
                    } else {
                        req.headers()
                            .get(X_FORWARDED_FOR)
                            .and_then(|v| v.to_str().ok())
                    };
                    let client = api::resolve_client(peer.ip().to_canonical(), forwarded, trusted);
                    let admitted = limits_state.limits.admit(req.uri().path(), client);
                    // The update check answers without warp, and refusals
                    // need no handler: both are done before this returns,
                    // so nothing holds the request (whose URI shares hyper's
                    // read buffer, which hyper then reuses instead of
                    // allocating a new one).
                    let fast = match &admitted {
                        Ok(_) => api::updates::fast_check(&req, client, &limits_state),
                        Err(_) => None,
                    };
                    let answered = |resp: warp::reply::Response| {
                        log_request(req.method(), req.uri().path(), resp.status(), peer, started);
                        Either::Left(std::future::ready(Ok(resp)))
                    };
                    let slot = match (admitted, fast) {
                        (Ok(_slot), Some(resp)) => return answered(resp),
                        (Err(refused), _) => return answered(refused.into_response()),
                        (Ok(slot), None) => slot,
                    };
                    let started = started.unwrap_or_else(Instant::now);
                    let method = req.method().clone();
                    let uri = req.uri().clone(); // shares the bytes
                    let timeout = limits_state.limits.body_read_timeout();
                    let mut req = req.map(|b| crate::limits::TimeoutBody::new(b, timeout));
                    // So is the batch check, read in the handler below.
                    let batch = api::batch::plain_batch(&req);
                    if batch.is_none() {
                        req.extensions_mut().insert(ClientAddr(client));
                    }
                    let mut service = service.clone();
                    let state = limits_state.clone();
                    Either::Right(async move {
                        use tower_service::Service;
                        let _slot = slot;
                        let resp = match batch {
                            Some(head) => {
                                let body = req.into_body();
                                api::batch::fast_batch(body, head, client, state).await
                            }
                            None => service.call(req).await?,
                        };
                        log_request(&method, uri.path(), resp.status(), peer, Some(started));
                        Ok::<_, std::convert::Infallible>(resp)
                    })
                });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        for task in background {
            task.abort();
        }
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_secs);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period; closing them");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn log_request(
    method: &hyper::Method,
    path: &str,
    status: hyper::StatusCode,
    peer: SocketAddr,
    started: Option<Instant>,
) {
    if !status.is_server_error() && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let client = crate::privacy::IpPrefix(peer.ip());
    let micros = started.map(|t| t.elapsed().as_micros() as u64);
    let path = if path.len() > 200 {
        &path[..path.floor_char_boundary(200)]
    } else {
        path
    };
    if status.is_server_error() {
        tracing::warn!(%method, path, status = status.as_u16(), %client, micros, "request");
    } else {
        tracing::debug!(%method, path, status = status.as_u16(), %client, micros, "request");
    }
}

/// Re-signs freshness statements on a timer, well before they expire.
async fn resign_timer(state: Shared) {
    let every = Duration::from_secs(state.settings.signing.resign_interval_secs);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        state.catalog.resign();
        tracing::debug!("freshness statements re-signed");
    }
}

/// Keeps this instance's snapshot in step with changes made by others:
/// pub/sub for speed, plus a poll of the version counter that catches a
/// missed message (or a Redis restart) within half a second.
async fn catalog_sync(state: Shared) {
    let Some(mut changes) = state.state.watch_catalog().await else {
        return; // Single-instance backend: local changes refresh directly.
    };
    let mut known = state.state.catalog_version().await.unwrap_or(0);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let seen = tokio::select! {
            v = changes.recv() => match v {
                Some(v) => Some(v),
                None => return,
            },
            _ = tick.tick() => state.state.catalog_version().await.ok(),
        };
        let Some(seen) = seen else { continue };
        if seen == known {
            continue;
        }
        let _one_at_a_time = state.catalog.refreshing.lock().await;
        match state.state.list_releases(None).await {
            Ok(all) => {
                state.catalog.replace(all);
                known = seen;
                tracing::debug!(version = seen, "catalog refreshed from the shared store");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the catalog; serving the last snapshot")
            }
        }
    }
}

/// Deletes push tokens idle longer than `push.retention_days`, at start and
/// then every `push.sweep_interval_secs` (hourly by default).
async fn sweep_idle_tokens(state: Shared) {
    let every = Duration::from_secs(state.settings.push.sweep_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let cutoff =
            chrono::Utc::now() - chrono::Duration::days(state.settings.push.retention_days as i64);
        match state.push.sweep_idle(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "idle push tokens deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "idle token sweep failed; trying again at the next interval")
            }
        }
    }
}

fn build_fanout(
    settings: &Settings,
    store: Arc<dyn crate::fanout::PushStore>,
) -> Result<crate::fanout::worker::Fanout> {
    use crate::fanout::worker::{Fanout, ProviderSlot};
    use crate::fanout::ProviderKind;
    let p = &settings.push;
    let mut providers = std::collections::HashMap::new();
    let slot = |provider: Arc<dyn crate::push::Provider>| ProviderSlot {
        provider,
        in_flight: Arc::new(tokio::sync::Semaphore::new(p.in_flight.max(1))),
    };
    if p.apns.enabled {
        let apns =
            crate::push::apns::ApnsProvider::from_settings(&p.apns).context("[push.apns]")?;
        providers.insert(ProviderKind::Apns, slot(Arc::new(apns)));
        tracing::info!(base_url = %p.apns.base_url, "push: APNs enabled");
    }
    if p.fcm.enabled {
        let fcm = crate::push::fcm::FcmProvider::from_settings(&p.fcm).context("[push.fcm]")?;
        providers.insert(ProviderKind::Fcm, slot(Arc::new(fcm)));
        tracing::info!(base_url = %p.fcm.base_url, "push: FCM enabled");
    }
    Ok(Fanout {
        store,
        providers,
        policy: crate::push::RetryPolicy::default(),
        ttl: Duration::from_secs(p.ttl_secs),
        metrics: Default::default(),
        stale: Duration::from_secs(p.stale_batch_secs.max(1)),
        batch_concurrency: p.in_flight.max(1),
        consumer: format!(
            "{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ),
    })
}
