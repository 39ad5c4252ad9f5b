//! What the node tells others about itself: its load (sent to the head every health-check
//! period) and its full status (`oxray status`).

use oxray_common::peer::{JobSummary, NodeLoad};
use oxray_common::protocol::{ActorState, ClientKind, NodeStatus, PendingLease, WorkerStatus};
use oxray_object_store::StoreStats;

use super::state::{ActorEntry, NodeState, WorkerState};

impl NodeState {
    /// This node's load, with the store's figures `stats`.
    pub fn load(&self, stats: &StoreStats) -> NodeLoad {
        NodeLoad {
            available: self.available(),
            total: self.total().clone(),
            store_capacity: stats.capacity,
            store_used: stats.used,
            store_objects: stats.objects,
            workers: self.workers.len() as u32,
            actors: self
                .actors
                .values()
                .filter(|a| a.state != ActorState::Dead)
                .count() as u32,
            pending: (self.pending.len() + self.pending_actors.len()) as u32,
            jobs: self.job_summaries(),
        }
    }

    /// The jobs whose driver attached here (not those attached from other nodes).
    fn job_summaries(&self) -> Vec<JobSummary> {
        self.jobs
            .iter()
            .filter(|(_, j)| !j.remote)
            .map(|(id, j)| JobSummary {
                job: *id,
                driver: j.driver.is_some(),
                namespace: j.namespace.clone(),
                program: j.program.clone(),
                workers: self.workers.values().filter(|w| w.job == *id).count() as u32,
            })
            .collect()
    }

    /// The node's state for `oxray status` (the raylet's pid, address and the store's figures
    /// come from the I/O layer).
    pub fn status(&self, pid: u32, address: &str, stats: &StoreStats) -> NodeStatus {
        let workers = self
            .workers
            .iter()
            .map(|(id, w)| WorkerStatus {
                worker: *id,
                pid: w.pid,
                state: match w.state {
                    WorkerState::Starting => "starting".into(),
                    WorkerState::Idle => "idle".into(),
                    WorkerState::Actor => "actor".into(),
                    WorkerState::Leased(l) => match self.leases.get(&l) {
                        Some(lease) if lease.blocked => "blocked".into(),
                        _ => "leased".into(),
                    },
                },
                job: w.job,
            })
            .collect();
        let leases = self.pending.iter().map(|r| PendingLease {
            resources: r.resources.clone(),
            infeasible: !self.feasible(&r.resources, r.spill),
            reason: self.waiting_reason(&r.resources, r.spill),
        });
        let actors = self.pending_actors.iter().filter_map(|id| {
            let a = self.actors.get(id)?;
            let local = !self.jobs.get(&a.owner_job).is_some_and(|j| j.remote);
            Some(PendingLease {
                resources: a.spec.resources.clone(),
                infeasible: !self.feasible(&a.spec.resources, local),
                reason: format!(
                    "actor {}: {}",
                    a.spec.class,
                    self.waiting_reason(&a.spec.resources, local)
                ),
            })
        });
        NodeStatus {
            node: self.setup.id,
            pid,
            address: address.to_owned(),
            total: self.total().clone(),
            available: self.available(),
            store_capacity: stats.capacity,
            store_used: stats.used,
            store_objects: stats.objects,
            // Filled in by the node from its spiller.
            spilled_objects: 0,
            spilled_bytes: 0,
            spilled_total: 0,
            restored_total: 0,
            spill_dir: String::new(),
            workers,
            pending: leases.chain(actors).collect(),
            drivers: self
                .clients
                .values()
                .filter(|c| c.kind == ClientKind::Driver)
                .count() as u32,
            actors: self.actors.values().map(ActorEntry::info).collect(),
            cluster: self.view.clone(),
            jobs: self.job_summaries(),
            // Filled in by the node from its task log and dashboard.
            runs: Vec::new(),
            dashboard: String::new(),
            tunnels: 0,
            bytes_served: 0,
            own_process: false,
        }
    }
}
