//! Runs the real `firmcast` binary in a directory and checks its exit status.

use std::path::Path;
use std::process::Command;

pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
    args: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            self.success,
            "firmcast {} failed:\n{}{}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self) -> Self {
        assert!(
            !self.success,
            "firmcast {} should have failed:\n{}{}",
            self.args, self.stdout, self.stderr
        );
        self
    }
}

pub fn firmcast(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_firmcast"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the firmcast binary runs");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        success: out.status.success(),
        args: args.join(" "),
    }
}
