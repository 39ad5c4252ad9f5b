//! Logs: the raylet writes `tracing` events (levels, times, targets); the process hosting a
//! raylet writes them to stderr unless it set up a subscriber of its own first.
//!
//! A node started by `oxray start` has its stderr in its log file (`oxray logs` prints it); one
//! started with `--block` writes to the terminal; a driver's embedded node writes warnings and
//! errors only. `OXRAY_LOG` filters as `RUST_LOG` does (`OXRAY_LOG=debug`,
//! `OXRAY_LOG=info,oxray_raylet::cluster=debug`). quinn's and rustls's `log` records go through
//! the same filter.
//!
//! A background node's log file is rotated by size, as Ray's are: past `OXRAY_LOG_MAX_BYTES`
//! (default 64 MiB) `SESSION.log` becomes `SESSION.log.1` (and `.1` becomes `.2`, up to
//! `OXRAY_LOG_BACKUPS`, default 5; the oldest goes) and a new `SESSION.log` takes its place, as
//! the process's stderr too, so nothing the node writes is lost to the rotation.

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;

/// The environment variable with the log filter.
pub const ENV_LOG: &str = "OXRAY_LOG";
/// The environment variable with the size past which a node's log file is rotated.
pub const ENV_LOG_MAX_BYTES: &str = "OXRAY_LOG_MAX_BYTES";
/// The environment variable with how many rotated log files are kept.
pub const ENV_LOG_BACKUPS: &str = "OXRAY_LOG_BACKUPS";
/// Default [`ENV_LOG_MAX_BYTES`].
pub const DEFAULT_LOG_MAX_BYTES: u64 = 64 << 20;
/// Default [`ENV_LOG_BACKUPS`].
pub const DEFAULT_LOG_BACKUPS: u32 = 5;

/// Installs the default subscriber (stderr, `OXRAY_LOG` or `default` as the filter) unless the
/// process has one; a malformed `OXRAY_LOG` is reported and `default` used.
pub fn init(default: &str) {
    // Fails when the process set up its own subscriber first: then that one gets the events.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Installs the subscriber of a background node whose stderr is its log file at `path`: as
/// [`init`], and the file is rotated by size (see the module's docs).
pub fn init_rotating(default: &str, path: &Path) {
    let number = |name: &str, default: u64| -> u64 {
        match std::env::var(name) {
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                eprintln!("oxray: {name}={v:?} is not a number; using {default}");
                default
            }),
            Err(_) => default,
        }
    };
    let written = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let rotating = RotatingStderr(Arc::new(Mutex::new(Rotation {
        path: path.to_owned(),
        max: number(ENV_LOG_MAX_BYTES, DEFAULT_LOG_MAX_BYTES).max(1),
        backups: number(ENV_LOG_BACKUPS, DEFAULT_LOG_BACKUPS.into()).clamp(1, 100) as u32,
        written,
    })));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_writer(move || rotating.clone())
        .with_ansi(false)
        .try_init();
}

/// The rotated files of the log at `path`, oldest first (`path.N` … `path.1`).
pub fn rotated(path: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = (1..=100)
        .map(|i| (i, backup(path, i)))
        .take_while(|(_, p)| p.exists())
        .collect();
    found.reverse();
    found.into_iter().map(|(_, p)| p).collect()
}

fn backup(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

struct Rotation {
    path: PathBuf,
    max: u64,
    backups: u32,
    /// Bytes in the current file.
    written: u64,
}

impl Rotation {
    /// Moves the current file to `.1` (older ones one up, the oldest dropped) and makes a new
    /// one this process's stderr.
    fn rotate(&mut self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(backup(&self.path, self.backups));
        for i in (1..self.backups).rev() {
            let _ = std::fs::rename(backup(&self.path, i), backup(&self.path, i + 1));
        }
        std::fs::rename(&self.path, backup(&self.path, 1))?;
        let fresh = crate::files::open_private(&self.path, 0o600, true)?;
        // SAFETY: dup2 on two open descriptors; stderr now refers to the new file, and the
        // old descriptor of it is closed when `fresh` drops.
        if unsafe { libc::dup2(fresh.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.written = 0;
        Ok(())
    }
}

/// Writes log events to stderr, rotating the file behind it by size.
#[derive(Clone)]
struct RotatingStderr(Arc<Mutex<Rotation>>);

impl Write for RotatingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One event is one write: rotation happens between events.
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::io::stderr().write_all(buf)?;
        r.written += buf.len() as u64;
        if r.written >= r.max {
            if let Err(e) = r.rotate() {
                // Keep writing to the file as it is: a full disk must not stop the node.
                r.written = 0;
                let _ = writeln!(std::io::stderr(), "oxray: rotating the log failed: {e}");
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `OXRAY_LOG`, or `default` if unset or malformed (reported).
fn filter(default: &str) -> EnvFilter {
    match std::env::var(ENV_LOG) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("oxray: {ENV_LOG}={spec:?} is not a log filter ({e}); using {default:?}");
                EnvFilter::new(default)
            }
        },
        _ => EnvFilter::new(default),
    }
}
