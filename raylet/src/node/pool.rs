//! The worker pool's bookkeeping: which workers exist, in which state, and what happens when
//! one starts, fails to start, exits or must be killed. Processes themselves are the I/O
//! layer's (`crate::workers`): the state asks with `Effect::Spawn`/`Effect::Kill` and hears
//! back through `worker_started`, `worker_start_failed` and `worker_exited`.

use std::collections::VecDeque;

use oxray_common::protocol::{ErrorKind, FromRaylet};
use oxray_common::{ActorId, JobId, WorkerId};

use super::effects::Effect;
use super::state::{NodeState, Worker, WorkerState};

/// Workers of one job that may die before registering, in a row, before its waiting lease
/// requests fail instead of starting more.
pub(crate) const MAX_FAILED_STARTS: u32 = 5;

impl NodeState {
    /// Starts a worker for `job` (for `actor`, when given). `None` when the job is gone or its
    /// workers keep failing to start.
    pub(crate) fn spawn_worker(&mut self, job: JobId, actor: Option<ActorId>) -> Option<WorkerId> {
        let j = self.jobs.get(&job)?;
        if j.failed_starts >= MAX_FAILED_STARTS {
            return None;
        }
        let exe = j.exe.clone();
        let driver = j.driver.filter(|c| self.clients.contains_key(c));
        let worker = WorkerId::on_node(self.index);
        self.workers.insert(
            worker,
            Worker {
                pid: 0,
                job,
                state: WorkerState::Starting,
                address: String::new(),
                conn: None,
                actor,
            },
        );
        self.push(Effect::Spawn {
            worker,
            exe,
            driver,
        });
        Some(worker)
    }

    /// The process of `worker` runs with `pid`. False when the worker is no longer wanted (it
    /// was killed, or its job ended, while it was being started): its process must go.
    pub fn worker_started(&mut self, worker: WorkerId, pid: u32) -> bool {
        match self.workers.get_mut(&worker) {
            Some(w) => {
                w.pid = pid;
                true
            }
            None => false,
        }
    }

    /// The process of `worker` could not be started (no process exists). An actor it was for
    /// dies with the reason: starting it again would fail the same way.
    pub fn worker_start_failed(&mut self, worker: WorkerId, why: &str) {
        if let Some(actor) = self.workers.get(&worker).and_then(|w| w.actor) {
            let cause = format!("its worker process could not be started: {why}");
            self.actor_process_lost(actor, Some(cause), false);
        }
        self.starting_worker_lost(worker, why);
        self.schedule();
    }

    /// The process of `worker` exited (it was reaped). A worker that never registered failed
    /// to start; one that did is cleaned up when its connection closes.
    pub fn worker_exited(&mut self, worker: WorkerId, status: &str) {
        let starting = self
            .workers
            .get(&worker)
            .is_some_and(|w| w.state == WorkerState::Starting);
        if starting {
            self.starting_worker_lost(worker, &format!("it exited with {status}"));
        }
        self.schedule();
    }

    /// A worker died before registering: its actor (if any) restarts or dies, and the failure
    /// counts against its job.
    fn starting_worker_lost(&mut self, worker: WorkerId, why: &str) {
        let Some(w) = self.workers.remove(&worker) else {
            return;
        };
        if let Some(actor) = w.actor {
            if self
                .actors
                .get(&actor)
                .is_some_and(|a| a.worker == Some(worker))
            {
                // The worker is already out of the table: nothing to kill.
                self.actor_process_lost(actor, None, false);
            }
        }
        self.count_failed_start(w.job, why);
    }

    /// A worker of `job` could not start: count it, and after too many in a row fail the job's
    /// waiting lease requests with the reason instead of retrying forever.
    fn count_failed_start(&mut self, job: JobId, why: &str) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        j.failed_starts += 1;
        let failed_starts = j.failed_starts;
        self.log(format!("worker for job {job} failed to start: {why}"));
        if failed_starts < MAX_FAILED_STARTS {
            return;
        }
        let message = format!(
            "workers for this job keep failing to start ({failed_starts} times in a row); last: \
             {why}"
        );
        let mut failed = Vec::new();
        let mut keep = VecDeque::new();
        for r in self.pending.drain(..) {
            if r.job == job {
                failed.push(r);
            } else {
                keep.push_back(r);
            }
        }
        self.pending = keep;
        for r in failed {
            self.send(
                r.conn,
                FromRaylet::Error {
                    req: r.req,
                    kind: ErrorKind::BadRequest,
                    message: message.clone(),
                },
            );
        }
    }

    /// Removes a worker and has its process killed and its connection closed.
    pub(crate) fn kill_worker(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.remove(&id) {
            self.push(Effect::Kill { worker: id });
            if let Some(conn) = w.conn {
                self.push(Effect::Close { conn });
            }
        }
    }

    /// Kills every worker (shutdown).
    pub fn kill_all_workers(&mut self) {
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            self.kill_worker(id);
        }
        let conns: Vec<u64> = self.clients.keys().copied().collect();
        for conn in conns {
            self.push(Effect::Close { conn });
        }
    }
}
