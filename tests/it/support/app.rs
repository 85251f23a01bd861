//! The real application in process on port 0, against the real embedded
//! backends in a temp directory, with typed helpers for the API.

use chrono::Utc;
use firmcast::app::Application;
use firmcast::config::Settings;
use firmcast_signing::release::{ArtifactRef, ReleaseManifest};
use firmcast_signing::{Envelope, Keyset, PrivateKey, Role};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const PUBLISHER_TOKEN: &str = "test-publisher-token";
pub const VIEWER_TOKEN: &str = "test-viewer-token";

pub struct TestApp {
    /// The handlers' services, for tests that look inside.
    pub api: Arc<firmcast::api::Api>,
    pub addr: SocketAddr,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub release_key: Arc<PrivateKey>,
    pub root_key: Arc<PrivateKey>,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn sha(s: &str) -> String {
    firmcast_signing::digest::sha256_hex(s.as_bytes())
}

/// Writes keys like `firmcast keys init` and returns (root, release).
fn make_keys(dir: &std::path::Path) -> (PrivateKey, PrivateKey) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let root = PrivateKey::generate();
    let release = PrivateKey::generate();
    let ts = PrivateKey::generate();
    root.public()
        .write_pem_file(&keys.join("root.pub.pem"))
        .unwrap();
    ts.write_pem_file(&keys.join("timestamp.pem")).unwrap();
    let keyset = Keyset {
        version: 1,
        expires: Utc::now() + chrono::Duration::days(30),
        root: None,
        release: Role::single(release.public().clone()),
        timestamp: Role::single(ts.public().clone()),
    };
    std::fs::write(
        keys.join("keyset.json"),
        keyset.sign(&[&root]).unwrap().to_pretty_json(),
    )
    .unwrap();
    (root, release)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

pub async fn spawn_app_with(extra_config: &str) -> TestApp {
    spawn_app_with_server("", extra_config).await
}

/// Like [`spawn_app_with`], with `server` lines added to `[server]`.
pub async fn spawn_app_with_server(server: &str, extra_config: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let (root_key, release_key) = make_keys(dir.path());
    write_config(dir.path(), server, extra_config);
    start(dir, Arc::new(root_key), Arc::new(release_key)).await
}

/// Another server with `first`'s keys (its own data and config, with
/// `extra_config`): instances of one deployment, to share a Redis.
pub async fn spawn_app_sharing_keys(first: &TestApp, extra_config: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for f in ["root.pub.pem", "timestamp.pem", "keyset.json"] {
        std::fs::copy(first.path(&format!("keys/{f}")), keys.join(f)).unwrap();
    }
    write_config(dir.path(), "", extra_config);
    start(dir, first.root_key.clone(), first.release_key.clone()).await
}

fn write_config(dir: &std::path::Path, server: &str, extra_config: &str) {
    let d = dir.display();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{d}/data"
max_artifact_bytes = 10485760
{server}
[signing]
keyset = "{d}/keys/keyset.json"
root_public_key = "{d}/keys/root.pub.pem"
timestamp_key = "{d}/keys/timestamp.pem"
[[admin.tokens]]
name = "ops"
role = "admin"
sha256 = "{admin}"
[[admin.tokens]]
name = "release-bot"
role = "publisher"
sha256 = "{publisher}"
[[admin.tokens]]
name = "watcher"
role = "viewer"
sha256 = "{viewer}"
{extra_config}
{limits}
"#,
        // Tests fire bursts from one address; those about limits set their own.
        limits = if extra_config.contains("[limits]") {
            ""
        } else {
            "[limits]\nper_ip_rps = 0\nmax_in_flight_per_client = 0"
        },
        admin = sha(ADMIN_TOKEN),
        publisher = sha(PUBLISHER_TOKEN),
        viewer = sha(VIEWER_TOKEN),
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
}

async fn start(
    dir: tempfile::TempDir,
    root_key: Arc<PrivateKey>,
    release_key: Arc<PrivateKey>,
) -> TestApp {
    let path = dir.path().join("config.toml");
    let settings = Settings::load(Some(&path)).unwrap();
    let app = Application::build(settings).await.unwrap();
    let addr = app.local_addr();
    let api = app.api();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        api,
        addr,
        url: format!("http://{addr}"),
        dir,
        release_key,
        root_key,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// Firmware bytes that differ per (size, salt).
pub fn firmware(size: usize, salt: u8) -> Vec<u8> {
    (0..size)
        .map(|i| ((i * 131 + salt as usize * 7) % 251) as u8)
        .collect()
}

pub struct Rel<'a> {
    pub product: &'a str,
    pub version: &'a str,
    pub seq: u64,
    pub channel: &'a str,
    pub from: Option<&'a str>,
    pub bytes: &'a [u8],
}

impl<'a> Rel<'a> {
    pub fn new(product: &'a str, version: &'a str, seq: u64, bytes: &'a [u8]) -> Self {
        Rel {
            product,
            version,
            seq,
            channel: "stable",
            from: None,
            bytes,
        }
    }
}

impl TestApp {
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A client whose connections come from `127.0.0.x`.
    pub fn client_from(&self, ip: IpAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(ip)
            .build()
            .unwrap()
    }

    pub fn sign(&self, r: &Rel<'_>) -> Envelope {
        sign_with(&self.release_key, r)
    }

    pub async fn upload(&self, product: &str, version: &str, bytes: &[u8]) -> reqwest::Response {
        self.client
            .put(format!(
                "{}/v1/admin/artifacts/{product}/{version}",
                self.url
            ))
            .bearer_auth(PUBLISHER_TOKEN)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub async fn post_release(&self, env: &Envelope, rollout: f64) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/admin/releases", self.url))
            .bearer_auth(PUBLISHER_TOKEN)
            .json(&serde_json::json!({"release": env.to_value(), "rollout": rollout}))
            .send()
            .await
            .unwrap()
    }

    /// Upload, sign and publish; panics unless both succeed.
    pub async fn publish(&self, r: &Rel<'_>, rollout: f64) -> Envelope {
        let up = self.upload(r.product, r.version, r.bytes).await;
        assert_eq!(up.status(), 201, "{}", up.text().await.unwrap());
        let env = self.sign(r);
        let resp = self.post_release(&env, rollout).await;
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        env
    }

    pub async fn patch(
        &self,
        product: &str,
        version: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .patch(format!(
                "{}/v1/admin/releases/{product}/{version}",
                self.url
            ))
            .bearer_auth(PUBLISHER_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` as the publisher, the answer's JSON.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let r = self.client.get(format!("{}{path}", self.url));
        let r = r.bearer_auth(PUBLISHER_TOKEN).send().await.unwrap();
        r.json().await.unwrap()
    }

    pub async fn check(&self, product: &str, version: &str) -> serde_json::Value {
        check_with(&self.client, &self.url, product, version, "stable").await
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Stops and starts a new server on the same data, keys and config.
    pub async fn restart(mut self) -> TestApp {
        self.halt().await;
        let TestApp {
            dir,
            root_key,
            release_key,
            api,
            ..
        } = self;
        drop(api); // it holds the stores, which the new server opens
        start(dir, root_key, release_key).await
    }
}

pub async fn check_with(
    client: &reqwest::Client,
    url: &str,
    product: &str,
    version: &str,
    channel: &str,
) -> serde_json::Value {
    let resp = client
        .get(format!(
            "{url}/v1/updates/{product}/{version}?channel={channel}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "check {product} {version}");
    resp.json().await.unwrap()
}

pub fn sign_with(key: &PrivateKey, r: &Rel<'_>) -> Envelope {
    let m = ReleaseManifest {
        product: r.product.into(),
        version: r.version.parse().unwrap(),
        channel: r.channel.into(),
        seq: r.seq,
        artifact: ArtifactRef {
            sha256: firmcast_signing::digest::sha256_hex(r.bytes),
            size: r.bytes.len() as u64,
        },
        from: r.from.map(|f| f.parse().unwrap()),
        critical: false,
        notes: [("en".to_owned(), format!("{} {}", r.product, r.version))].into(),
        released_at: Utc::now(),
    };
    m.sign(key).unwrap()
}
