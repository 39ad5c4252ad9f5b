//! `oxray::timeline(path)` and `oxray timeline`: which worker ran which task or actor call, and
//! when, as Chrome trace JSON (open it in Perfetto, <https://ui.perfetto.dev>, or
//! `chrome://tracing`), as `ray timeline` does.
//!
//! Every node keeps the last 100,000 runs its workers reported (see the raylet's `timeline`
//! module); a trace has one process per node and one thread per worker process, each run a
//! complete (`"ph": "X"`) event named after its function.

use oxray_common::protocol::TaskEvent;
use oxray_common::NodeId;
use serde_json::{json, Value};

use oxray_core_worker::{current, Error, Result};

/// Chrome trace JSON of what each node's workers ran.
pub fn chrome_trace(nodes: &[(NodeId, Vec<TaskEvent>)]) -> Value {
    let mut events = Vec::new();
    for (i, (node, runs)) in nodes.iter().enumerate() {
        let pid = i + 1;
        events.push(json!({
            "name": "process_name", "ph": "M", "pid": pid,
            "args": { "name": format!("node {node}") },
        }));
        let mut workers: Vec<u32> = runs.iter().map(|r| r.pid).collect();
        workers.sort_unstable();
        workers.dedup();
        for w in workers {
            events.push(json!({
                "name": "thread_name", "ph": "M", "pid": pid, "tid": w,
                "args": { "name": format!("worker pid {w}") },
            }));
        }
        for r in runs {
            events.push(json!({
                "name": r.function,
                "cat": if r.actor_call { "actor_call" } else { "task" },
                "ph": "X",
                "ts": r.start_us,
                "dur": r.end_us.saturating_sub(r.start_us),
                "pid": pid,
                "tid": r.pid,
                "args": { "id": r.id.to_string(), "ok": r.ok, "worker": r.worker.to_string() },
            }));
        }
    }
    json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}

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
