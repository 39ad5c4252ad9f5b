//! Logs: the raylet writes `tracing` events (levels, times, targets); the process hosting a
//! raylet writes them to stderr unless it set up a subscriber of its own first.
//!
//! A node started by `oxray start` has its stderr in its log file (`oxray logs` prints it); one
//! started with `--block` writes to the terminal; a driver's embedded node writes warnings and
//! errors only. `OXRAY_LOG` filters as `RUST_LOG` does (`OXRAY_LOG=debug`,
//! `OXRAY_LOG=info,oxray_raylet::cluster=debug`). quinn's and rustls's `log` records go through
//! the same filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable with the log filter.
pub const ENV_LOG: &str = "OXRAY_LOG";

/// Installs the default subscriber (stderr, `OXRAY_LOG` or `default` as the filter) unless the
/// process has one; a malformed `OXRAY_LOG` is reported and `default` used.
pub fn init(default: &str) {
    let filter = match std::env::var(ENV_LOG) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("oxray: {ENV_LOG}={spec:?} is not a log filter ({e}); using {default:?}");
                EnvFilter::new(default)
            }
        },
        _ => EnvFilter::new(default),
    };
    // Fails when the process set up its own subscriber first: then that one gets the events.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
