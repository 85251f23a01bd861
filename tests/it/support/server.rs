//! The real `firmcast serve` binary in a temp directory, on port 0, with
//! fresh keys (from `firmcast keys init`) and an admin token.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestServer {
    pub url: String,
    /// An admin-role token.
    pub token: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl TestServer {
    /// SIGKILL, as a crash; the directory stays for a restart.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `firmcast admin token` output into (token, config entry).
pub fn make_token(dir: &std::path::Path, name: &str, role: &str) -> (String, String) {
    let out = super::cli::firmcast(dir, &["admin", "token", "--name", name, "--role", role]).ok();
    let token = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("admin token prints the token")
        .to_owned();
    let entry = out
        .stdout
        .split_once("[[admin.tokens]]")
        .expect("and the config entry")
        .1
        .to_owned();
    (token, format!("[[admin.tokens]]{entry}"))
}

pub fn spawn_server() -> TestServer {
    spawn_server_with("")
}

/// `extra` is appended to the config file.
pub fn spawn_server_with(extra: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    super::cli::firmcast(dir.path(), &["keys", "init", "--dir", "keys"]).ok();
    let (token, entry) = make_token(dir.path(), "test-admin", "admin");
    // Tests fire bursts from one address; those about limits set their own.
    let limits = if extra.contains("[limits]") {
        ""
    } else {
        "[limits]\nper_ip_rps = 0\n"
    };
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n{entry}\n{extra}\n{limits}"
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_firmcast"))
        .current_dir(dir.path())
        .args(["serve", "--config", "config.toml"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("firmcast serve starts");
    let mut server = TestServer {
        url: String::new(),
        token,
        dir,
        child,
    };
    let stdout = server.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("firmcast listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    server.url = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("firmcast serve prints its address within 30 s");
    server
}

/// A `firmcast serve` process started in `dir` with `config` (a file name in
/// `dir`) and extra environment; killed when dropped.
pub struct ServeProcess {
    pub url: String,
    child: Child,
}

impl ServeProcess {
    pub fn start(dir: &std::path::Path, config: &str, envs: &[(&str, &str)]) -> ServeProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_firmcast"));
        cmd.current_dir(dir)
            .args(["serve", "--config", config])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("firmcast serve starts");
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
        ServeProcess { url, child }
    }

    /// SIGKILL: no graceful anything, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Like [`spawn_server_with`], with `envs` set (e.g. `RUST_LOG`) and
/// everything the process writes, stdout and stderr, captured in the file
/// [`TestServer::log_path`].
pub fn spawn_server_logged(extra: &str, envs: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    super::cli::firmcast(dir.path(), &["keys", "init", "--dir", "keys"]).ok();
    let (token, entry) = make_token(dir.path(), "test-admin", "admin");
    let limits = if extra.contains("[limits]") {
        ""
    } else {
        "[limits]\nper_ip_rps = 0\n"
    };
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n{entry}\n{extra}\n{limits}"
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join(LOG_FILE)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_firmcast"));
    cmd.current_dir(dir.path())
        .args(["serve", "--config", "config.toml"])
        .env_remove("RUST_LOG")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("firmcast serve starts");
    let mut server = TestServer {
        url: String::new(),
        token,
        dir,
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    server.url = loop {
        let log = server.log();
        if let Some(url) = log
            .lines()
            .find_map(|l| l.strip_prefix("firmcast listening on "))
        {
            break url.to_owned();
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("firmcast serve exited with {status}:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "firmcast serve prints its address within 30 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    server
}

const LOG_FILE: &str = "serve.log";

impl TestServer {
    /// Where [`spawn_server_logged`] captures the output (empty otherwise).
    pub fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// What the process has written so far (see [`spawn_server_logged`]).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// SIGTERM, then waits up to 15 s for a graceful exit (SIGKILL after).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}
