//! A full disk under the local blob store: the upload that does not fit is
//! refused with 507 and a reason, leaves no partial file and no visible
//! release, and everything already published keeps being served. Needs a
//! small tmpfs, so it runs as root (as CI does); elsewhere it fails and says
//! how to leave it out, rather than passing without having run.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::release::{check, firmware, publish, sign};
use support::scan::files_under;
use support::server::{spawn_server, ServeProcess};

/// A tmpfs mounted over `path`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(path.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_blob_store_refuses_the_upload_and_keeps_serving() {
    let mut s = spawn_server();
    let dir = s.dir.path().to_owned();
    s.kill();
    let disk = Tmpfs::mount(&dir.join("data/blobs"), "1m").unwrap_or_else(|e| {
        panic!(
            "cannot mount a 1 MB tmpfs ({e}): this test needs root, as CI runs it; \
             elsewhere leave it out with -E 'not test(disk_full)'"
        )
    });
    let srv = ServeProcess::start(&dir, "config.toml", &[]);
    s.url = srv.url.clone();

    let small = firmware(&dir, "small.bin", 300_000, 1);
    sign(&dir, "2.1.0", "1", "small.bin", "small.json");
    publish(&s, "small.json", "small.bin", &[]).ok();

    firmware(&dir, "big.bin", 2_000_000, 2);
    sign(&dir, "2.2.0", "2", "big.bin", "big.json");
    let run = publish(&s, "big.json", "big.bin", &[]).fails();
    assert!(
        run.stderr.contains("507") && run.stderr.contains("full"),
        "{}",
        run.stderr
    );
    // Nothing half-written stays behind, and no release appeared.
    let left = files_under(&dir.join("data/blobs"));
    assert_eq!(left.len(), 1, "only the small blob: {left:?}");
    assert_eq!(left[0].1.len(), small.len());
    let run = check(&s, "2.0.0", &["--download", "dl"]).ok();
    assert!(run.stderr.contains("2.1.0 (seq 1"), "{}", run.stderr);
    assert_eq!(
        std::fs::read(dir.join("dl/WH-1000XM5-2.1.0.bin")).unwrap(),
        small
    );

    // The operator frees space; the same command now goes through.
    disk.resize("8m");
    publish(&s, "big.json", "big.bin", &[]).ok();
    let run = check(&s, "2.0.0", &[]).ok();
    assert!(run.stdout.contains("2.2.0 (seq 2"), "{}", run.stdout);
    drop(srv);
}
