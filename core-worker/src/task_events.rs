//! What this worker ran, for the timeline: recorded in memory per task or actor call and sent to
//! the node's raylet in batches (`ToRaylet::TaskEvents`), when the worker goes idle or the
//! batch is large, so recording costs no system call per task on a busy worker.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use oxray_common::protocol::TaskEvent;
use oxray_common::WorkerId;
use oxray_object_store::ObjectId;

/// A batch this large is sent even while busy.
pub(crate) const BATCH: usize = 256;
/// Events kept while they cannot be sent (the raylet is slow): older ones are dropped.
const KEPT: usize = 16 * BATCH;

/// Microseconds since the Unix epoch (Chrome trace timestamps).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Events recorded and not sent yet.
#[derive(Default)]
pub(crate) struct TaskEvents {
    pending: Mutex<Vec<TaskEvent>>,
}

/// One run, as the executor saw it.
pub(crate) struct Ran<'a> {
    pub id: ObjectId,
    pub function: &'a str,
    pub actor_call: bool,
    pub start_us: u64,
    pub ok: bool,
}

impl TaskEvents {
    /// Records a run that just ended; true when the batch is large enough to send now.
    pub(crate) fn record(&self, ran: Ran<'_>, worker: WorkerId) -> bool {
        let event = TaskEvent {
            id: ran.id,
            function: ran.function.to_owned(),
            actor_call: ran.actor_call,
            start_us: ran.start_us,
            end_us: now_us(),
            pid: std::process::id(),
            worker,
            ok: ran.ok,
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= KEPT {
            pending.remove(0);
        }
        pending.push(event);
        pending.len() >= BATCH
    }

    /// Takes everything recorded so far (empty when nothing is).
    pub(crate) fn take(&self) -> Vec<TaskEvent> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
