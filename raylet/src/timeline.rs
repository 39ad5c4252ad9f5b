//! The node's record of the tasks and actor calls its workers ran, for `oxray timeline` and the
//! dashboard, and [`chrome_trace`], which turns records into Chrome trace JSON.
//!
//! Workers keep their events in memory and send them in batches (`ToRaylet::TaskEvents`) when
//! they go idle or have many; the node keeps the last [`KEPT`] in a ring, so the record costs a
//! bounded amount of memory however long the node runs, and outlives the workers (a job's
//! workers exit when it ends; its timeline stays readable). Beside the ring it counts the runs
//! of each function since the node started (for `oxray status` and the dashboard), for at most
//! [`FUNCTIONS_KEPT`] function names.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use oxray_common::protocol::{FunctionRuns, TaskEvent};
use oxray_common::{NodeId, WorkerId};
use oxray_object_store::ObjectId;
use serde_json::{json, Value};

/// Events kept per node (~56 bytes each, function names stored once): older ones are dropped.
pub const KEPT: usize = 100_000;

/// Distinct function names kept per node; runs of further names are recorded under
/// [`OTHER_FUNCTIONS`] (names come from workers, so their number is bounded here).
pub const FUNCTIONS_KEPT: usize = 1024;

/// The name runs of functions past [`FUNCTIONS_KEPT`] are recorded under.
pub const OTHER_FUNCTIONS: &str = "(other functions)";

/// The ring of recorded events, and the runs per function.
#[derive(Default)]
pub(crate) struct TaskLog {
    log: Mutex<Log>,
}

/// One recorded run, its function an index into [`Log::functions`] (a node's ring holds up to
/// 100,000 of these; a `TaskEvent` with its own `String` costs about three times as much).
struct Run {
    id: ObjectId,
    worker: WorkerId,
    start_us: u64,
    end_us: u64,
    pid: u32,
    function: u32,
    ok: bool,
}

#[derive(Default)]
struct Log {
    events: VecDeque<Run>,
    /// Each function's runs since the node started; its index names it in [`Run::function`].
    functions: Vec<FunctionRuns>,
    /// Function name to index, for tasks (`[0]`) and actor methods (`[1]`).
    index: [HashMap<String, u32>; 2],
}

impl Log {
    /// The index of `function` (an actor method if `actor_call`), added if new and there is
    /// room, else that of [`OTHER_FUNCTIONS`].
    fn function(&mut self, function: &str, actor_call: bool) -> u32 {
        let index = &mut self.index[usize::from(actor_call)];
        if let Some(&i) = index.get(function) {
            return i;
        }
        let name = if self.functions.len() < FUNCTIONS_KEPT {
            function
        } else {
            OTHER_FUNCTIONS
        };
        let next = self.functions.len() as u32;
        let i = *index.entry(name.to_owned()).or_insert(next);
        if i == next {
            self.functions.push(FunctionRuns {
                function: name.to_owned(),
                actor_call,
                ..FunctionRuns::default()
            });
        }
        i
    }
}

impl TaskLog {
    /// Adds a worker's batch, dropping the oldest past [`KEPT`].
    pub(crate) fn add(&self, batch: Vec<TaskEvent>) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let skip = batch.len().saturating_sub(KEPT);
        for (n, e) in batch.into_iter().enumerate() {
            let function = log.function(&e.function, e.actor_call);
            let runs = &mut log.functions[function as usize];
            if e.ok {
                runs.ok += 1;
            } else {
                runs.failed += 1;
            }
            runs.total_us = runs
                .total_us
                .saturating_add(e.end_us.saturating_sub(e.start_us));
            if n >= skip {
                log.events.push_back(Run {
                    id: e.id,
                    worker: e.worker,
                    start_us: e.start_us,
                    end_us: e.end_us,
                    pid: e.pid,
                    function,
                    ok: e.ok,
                });
            }
        }
        let over = log.events.len().saturating_sub(KEPT);
        log.events.drain(..over);
    }

    /// Every kept event, oldest first.
    pub(crate) fn all(&self) -> Vec<TaskEvent> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.events
            .iter()
            .map(|r| {
                let f = &log.functions[r.function as usize];
                TaskEvent {
                    id: r.id,
                    function: f.function.clone(),
                    actor_call: f.actor_call,
                    start_us: r.start_us,
                    end_us: r.end_us,
                    pid: r.pid,
                    worker: r.worker,
                    ok: r.ok,
                }
            })
            .collect()
    }

    /// Runs per function since the node started, most runs first.
    pub(crate) fn runs(&self) -> Vec<FunctionRuns> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = log.functions.clone();
        all.sort_by(|a, b| {
            (b.ok + b.failed)
                .cmp(&(a.ok + a.failed))
                .then_with(|| a.function.cmp(&b.function))
        });
        all
    }
}

/// The runs each node recorded, by node.
pub type NodeRuns = Vec<(NodeId, Vec<TaskEvent>)>;

/// The runs recorded by the node at `address` and by every other node of its cluster that
/// answers from this machine, and a line for each node that did not.
pub fn gather(address: &str) -> crate::Result<(NodeRuns, Vec<String>)> {
    let status = crate::tool::status(address)?;
    let mut per_node = Vec::new();
    let mut unreachable = Vec::new();
    let nodes = crate::dashboard::report::cluster_nodes(address, &status);
    for (i, (node, at)) in nodes.into_iter().enumerate() {
        match crate::tool::timeline(&at) {
            Ok(recorded) => per_node.push(recorded),
            Err(e) if i > 0 => unreachable.push(format!(
                "node {node} at {at}: not reachable from here ({e})"
            )),
            Err(e) => return Err(e),
        }
    }
    Ok((per_node, unreachable))
}

/// Chrome trace JSON of what each node's workers ran (open it in <https://ui.perfetto.dev> or
/// `chrome://tracing`): one process per node, one thread per worker process, each run a
/// complete (`"ph": "X"`) event named after its function.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> TaskEvent {
        TaskEvent {
            id: ObjectId::from_u128(i as u128),
            function: "f".into(),
            actor_call: false,
            start_us: i,
            end_us: i + 1,
            pid: 1,
            worker: WorkerId::random(),
            ok: true,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_events_in_order() {
        let log = TaskLog::default();
        log.add((0..10).map(event).collect());
        assert_eq!(log.all().len(), 10);
        log.add((10..(KEPT as u64 + 5)).map(event).collect());
        let all = log.all();
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].start_us, 5);
        assert_eq!(all[KEPT - 1].start_us, KEPT as u64 + 4);
        // One batch larger than the ring keeps its newest events.
        log.add((0..(KEPT as u64 + 7)).map(event).collect());
        assert_eq!(log.all()[0].start_us, 7);
    }

    /// The ring's bound in bytes that the burst test (`tests/runtime/node_core.rs`) allows for.
    #[test]
    fn a_kept_run_takes_56_bytes() {
        assert!(std::mem::size_of::<Run>() <= 56);
    }

    #[test]
    fn runs_are_counted_per_function_with_a_bound_on_names() {
        let log = TaskLog::default();
        let mut batch: Vec<TaskEvent> = (0..5).map(event).collect();
        batch[1].ok = false;
        log.add(batch);
        let runs = log.runs();
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].ok, runs[0].failed, runs[0].total_us), (4, 1, 5));
        // A flood of distinct names is counted, but under one entry past the bound.
        log.add(
            (0..FUNCTIONS_KEPT as u64 + 10)
                .map(|i| TaskEvent {
                    function: format!("g{i}"),
                    ..event(i)
                })
                .collect(),
        );
        let runs = log.runs();
        assert_eq!(runs.len(), FUNCTIONS_KEPT + 1);
        let other = runs
            .iter()
            .find(|r| r.function == OTHER_FUNCTIONS)
            .expect("the overflow entry");
        assert_eq!(other.ok, 11);
        let total: u64 = runs.iter().map(|r| r.ok + r.failed).sum();
        assert_eq!(total, 5 + FUNCTIONS_KEPT as u64 + 10);
    }
}
