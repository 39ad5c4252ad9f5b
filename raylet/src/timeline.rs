//! The node's record of the tasks and actor calls its workers ran, for `oxray timeline` and the
//! dashboard.
//!
//! Workers keep their events in memory and send them in batches (`ToRaylet::TaskEvents`) when
//! they go idle or have many; the node keeps the last [`KEPT`] in a ring, so the record costs a
//! bounded amount of memory however long the node runs, and outlives the workers (a job's
//! workers exit when it ends; its timeline stays readable).

use std::collections::VecDeque;
use std::sync::Mutex;

use oxray_common::protocol::TaskEvent;

/// Events kept per node (~100 bytes each): older ones are dropped.
pub(crate) const KEPT: usize = 100_000;

/// The ring of recorded events.
#[derive(Default)]
pub(crate) struct TaskLog {
    events: Mutex<VecDeque<TaskEvent>>,
}

impl TaskLog {
    /// Adds a worker's batch, dropping the oldest past [`KEPT`].
    pub(crate) fn add(&self, batch: Vec<TaskEvent>) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let skip = batch.len().saturating_sub(KEPT);
        events.extend(batch.into_iter().skip(skip));
        let over = events.len().saturating_sub(KEPT);
        events.drain(..over);
    }

    /// Every kept event, oldest first.
    pub(crate) fn all(&self) -> Vec<TaskEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxray_common::WorkerId;
    use oxray_object_store::ObjectId;

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
}
