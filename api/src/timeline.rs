//! `oxray::timeline(path)` and `oxray timeline`: which worker ran which task or actor call, and
//! when, as Chrome trace JSON (open it in Perfetto, <https://ui.perfetto.dev>, or
//! `chrome://tracing`), as `ray timeline` does.
//!
//! Every node keeps the last 100,000 runs its workers reported (see the raylet's `timeline`
//! module); a trace has one process per node and one thread per worker process, each run a
//! complete (`"ph": "X"`) event named after its function.

use oxray_core_worker::{current, Error, Result};

/// Chrome trace JSON of what each node's workers ran (see
/// [`oxray_raylet::timeline::chrome_trace`]).
pub use oxray_raylet::timeline::chrome_trace;

/// Writes the timeline of this driver's node (the tasks and actor calls its workers ran, the
/// last 100,000) to `path` as Chrome trace JSON; returns how many runs it holds. For every
/// node of a cluster, use `oxray timeline` on a machine that runs them.
///
/// ```
/// # fn main() -> oxray::Result<()> {
/// # let _cluster = oxray::init()?;
/// let path = std::env::temp_dir().join(format!("trace-{}.json", std::process::id()));
/// let runs = oxray::timeline(&path)?;
/// # let _ = std::fs::remove_file(&path);
/// # let _ = runs;
/// # Ok(())
/// # }
/// ```
pub fn timeline(path: impl AsRef<std::path::Path>) -> Result<usize> {
    let (node, events) = current()?.node_timeline()?;
    let runs = events.len();
    let trace = chrome_trace(&[(node, events)]);
    let path = path.as_ref();
    std::fs::write(path, trace.to_string()).map_err(|e| Error::Io {
        context: format!("writing the timeline to {}", path.display()),
        source: std::sync::Arc::new(e),
    })?;
    Ok(runs)
}
