//! A real S3 protocol server for tests: `s3s-fs` on a free loopback port,
//! its data in a temp dir, killed when dropped.
//!
//! Install it with `cargo install s3s-fs --version 0.14.1 --features binary --locked`
//! (`.ci/run` does). Buckets are directories under the data root; objects are
//! files inside them; open multipart uploads are `.upload*` files at the root.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firmcast::config::S3Settings;
use tempfile::TempDir;

pub const ACCESS_KEY: &str = "firmcast-test";
pub const SECRET_KEY: &str = "firmcast-test-secret";
pub const REGION: &str = "us-east-1";

pub struct S3sServer {
    child: Option<Child>,
    addr: SocketAddr,
    /// Holds `data/` (the server's root) and `s3s-fs.log`.
    dir: TempDir,
}

/// `s3s-fs` from PATH, else from `~/.cargo/bin`.
pub fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("s3s-fs"));
    let in_cargo = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|d| d.join("bin/s3s-fs"));
    on_path
        .chain(in_cargo)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs not found on PATH or in ~/.cargo/bin; install it with \
             `cargo install s3s-fs --version 0.14.1 --features binary --locked`"
            )
        })
}

impl S3sServer {
    /// Starts a server with the given (empty) buckets and waits until it answers.
    pub fn start(buckets: &[&str]) -> S3sServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        for b in buckets {
            std::fs::create_dir_all(data.join(b)).expect("bucket dir");
        }
        std::fs::create_dir_all(&data).expect("data dir");
        let bin = binary();
        // The port is free when we look; another process may grab it before
        // s3s-fs binds, so a server that exits at once is retried elsewhere.
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("s3s-fs.log")).expect("log file");
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(&data)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = child.try_wait().expect("s3s-fs status") {
                    eprintln!("s3s-fs exited at once ({status}); retrying on another port");
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return S3sServer {
                        child: Some(child),
                        addr,
                        dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("s3s-fs did not answer on {addr} within 15 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "s3s-fs would not start; see {}",
            dir.path().join("s3s-fs.log").display()
        )
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's data root: one directory per bucket.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Settings for a store in `bucket` under `prefix`, path-style, with `timeout_ms`.
    pub fn settings(&self, bucket: &str, prefix: &str, timeout_ms: u64) -> S3Settings {
        S3Settings {
            bucket: bucket.to_owned(),
            endpoint: self.endpoint(),
            region: REGION.to_owned(),
            force_path_style: true,
            prefix: prefix.to_owned(),
            presign_expiry_secs: 300,
            timeout_ms,
        }
    }

    /// SIGSTOP: connections are still accepted (by the kernel) and never
    /// answered, the slowest an S3 can be. [`S3sServer::resume`] undoes it.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("s3s-fs is running").id();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Kills the server now (the port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain SDK client for looking at the bucket behind the store's back.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "test",
            ))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Every object key in `bucket`.
    pub async fn list_keys(&self, bucket: &str) -> Vec<String> {
        let client = self.client();
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.expect("ListObjectsV2");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        keys
    }

    /// Open (neither completed nor aborted) multipart uploads, as s3s-fs
    /// keeps them on disk (it has no ListMultipartUploads).
    pub fn open_uploads(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(self.data_dir())
            .expect("data dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| n.starts_with(".upload"))
            .collect();
        found.sort();
        found
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3s-fs.log")).unwrap_or_default()
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
