//! What the command's integration tests share: a scratch `TMPDIR`, running `oxray`, the
//! examples `cargo test` built, a free port, waiting for a process to exit.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const OXRAY: &str = env!("CARGO_BIN_EXE_oxray");

/// A temp dir of the test's own (`TMPDIR` for the command and the drivers), removed on drop.
pub struct Scratch(pub PathBuf);

/// What a run of `oxray` gave.
pub struct Ran {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("oxray-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    /// Runs `oxray ARGS` with `TMPDIR` here and no address or secret in the environment.
    pub fn oxray(&self, args: &[&str]) -> Ran {
        self.oxray_with(args, &[])
    }

    /// As [`Scratch::oxray`], with `env` set too.
    pub fn oxray_with(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let out = Command::new(OXRAY)
            .args(args)
            .envs(env.iter().copied())
            .env("TMPDIR", &self.0)
            .env_remove("OXRAY_ADDRESS")
            .env_remove("OXRAY_CLUSTER_SECRET")
            .output()
            .expect("run oxray");
        Ran {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Scratch {
    /// The command's state directory under this `TMPDIR`.
    pub fn state(&self) -> PathBuf {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        self.0.join(format!("oxray-{uid}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An example program `cargo test` built beside the tests (built here if it is missing).
pub fn example(name: &str) -> PathBuf {
    let dir = Path::new(OXRAY).parent().expect("target dir");
    let exe = dir.join("examples").join(name);
    if !exe.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-p", "oxray-examples", "--example", name])
            .status()
            .expect("run cargo");
        assert!(built.success(), "building the {name} example failed");
    }
    exe
}

/// A port free on 127.0.0.1 right now (UDP, as QUIC uses).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Blocks until process `pid` (not necessarily our child) has exited, or `limit` passed;
/// whether it exited.
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return true; // already gone
    }
    let mut p = libc::pollfd {
        fd: fd as i32,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd; the descriptor is ours and closed right after.
    let ready = unsafe {
        let n = libc::poll(&mut p, 1, limit.as_millis() as i32);
        libc::close(fd as i32);
        n
    };
    ready == 1
}
