//! The application: builds the backends from settings, binds, serves until
//! told to stop. Tests build it with `listen = 127.0.0.1:0` and run it in
//! process against the real backends.

use crate::api::{self, AppState, PeerAddr, Shared};
use crate::blob::{local::LocalBlobStore, BlobStore};
use crate::catalog::{Catalog, Signer};
use crate::config::{BlobBackend, Settings, StateBackend};
use crate::metrics::Metrics;
use crate::state::{embedded::EmbeddedStateStore, StateStore};
use anyhow::{bail, Context, Result};
use firmcast_signing::{Envelope, PrivateKey, PublicKey, Role, VerifiedKeyset};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub struct Application {
    listener: TcpListener,
    state: Shared,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self> {
        let started = Instant::now();
        let signer = load_signer(&settings)?;
        tracing::info!(keyset_version = signer.keyset.version(), "keys loaded");

        let state: Arc<dyn StateStore> = match settings.state.backend {
            StateBackend::Embedded => {
                let path = settings.state_path();
                tracing::warn!(path = %path.display(), "state: embedded store (single instance; use redis to run several)");
                Arc::new(EmbeddedStateStore::open(&path).with_context(|| {
                    format!("cannot open the state store at {}", path.display())
                })?)
            }
            StateBackend::Redis => bail!(
                "state.backend = \"redis\" is not available in this build yet; use \"embedded\""
            ),
        };
        let blobs: Arc<dyn BlobStore> =
            match settings.blob.backend {
                BlobBackend::Local => {
                    let dir = settings.blob_dir();
                    tracing::info!(dir = %dir.display(), "blobs: local directory");
                    Arc::new(LocalBlobStore::open(&dir).with_context(|| {
                        format!("cannot open the blob directory {}", dir.display())
                    })?)
                }
                BlobBackend::S3 => {
                    bail!("blob.backend = \"s3\" is not available in this build yet; use \"local\"")
                }
            };

        let catalog = Catalog::new(signer, settings.server.public_url.clone());
        let releases = state
            .list_releases(None)
            .await
            .context("cannot read releases from the state store")?;
        catalog.replace(releases);
        tracing::info!(releases = catalog.load().release_count(), "catalog loaded");

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
            settings,
            catalog,
            state,
            blobs,
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
        let resign = tokio::spawn(resign_timer(state.clone()));
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
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    let method = req.method().clone();
                    let path = req.uri().path().to_owned();
                    let started = Instant::now();
                    let mut service = service.clone();
                    async move {
                        use tower_service::Service;
                        let resp = service.call(req).await?;
                        log_request(&method, &path, resp.status(), peer, started);
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                },
            );
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
        resign.abort();
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
    started: Instant,
) {
    let client = crate::privacy::ip_prefix(peer.ip());
    let micros = started.elapsed().as_micros() as u64;
    let path = if path.len() > 200 {
        &path[..path.floor_char_boundary(200)]
    } else {
        path
    };
    if status.is_server_error() {
        tracing::warn!(%method, path, status = status.as_u16(), client, micros, "request");
    } else {
        tracing::debug!(%method, path, status = status.as_u16(), client, micros, "request");
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

/// Loads the keyset (verified against the pinned root, as clients will) and
/// the timestamp key, which must belong to the keyset's timestamp role.
pub fn load_signer(settings: &Settings) -> Result<Signer> {
    let s = &settings.signing;
    if !s.keyset.exists() {
        bail!(
            "no keyset at {}. Create keys once with `firmcast keys init --dir {}` (then keep root.pem and release-*.pem offline), \
             or for a throwaway development setup run `firmcast serve --dev-keys`",
            s.keyset.display(),
            crate::files::parent_dir(&s.keyset).display()
        );
    }
    let root = PublicKey::read_pem_file(&s.root_public_key).context("signing.root_public_key")?;
    let bytes = std::fs::read(&s.keyset)
        .with_context(|| crate::config::read_context(&s.keyset, "keyset"))?;
    let env = Envelope::parse(&bytes)
        .with_context(|| format!("signing.keyset {}", s.keyset.display()))?;
    let keyset = VerifiedKeyset::verify_pinned(env, &Role::single(root), chrono::Utc::now())
        .with_context(|| {
            format!(
                "signing.keyset {} does not verify against {}",
                s.keyset.display(),
                s.root_public_key.display()
            )
        })?;
    let timestamp_key =
        PrivateKey::read_pem_file(&s.timestamp_key).context("signing.timestamp_key")?;
    if !keyset
        .keyset
        .timestamp
        .keys
        .iter()
        .any(|k| k.keyid() == timestamp_key.keyid())
    {
        bail!(
            "signing.timestamp_key {} is not in the keyset's timestamp role; point it at the right key or rotate with `firmcast keys rotate --new-timestamp-key`",
            s.timestamp_key.display()
        );
    }
    Ok(Signer {
        keyset,
        timestamp_key,
        ttl: chrono::Duration::hours(s.freshness_ttl_hours as i64),
    })
}
