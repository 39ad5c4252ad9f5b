//! Clients coming and going: registration, the messages that change node state, and the
//! cleanup when a connection closes. (Object store messages never reach the state: the I/O
//! layer answers them from the store directly.)

use oxray_common::protocol::{ActorState, ClientKind, FromRaylet, ToRaylet};
use oxray_common::{ActorId, JobId, WorkerId};

use super::effects::{Effect, LinkOp};
use super::state::{Client, Job, JobKey, NodeState, WorkerState};
use crate::cluster::Forward;

/// A client's first message, `Register`, with what the I/O layer learned about it.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub worker: WorkerId,
    pub pid: u32,
    pub kind: ClientKind,
    pub exe: String,
    /// The driver's program name (read from its executable's path), for status.
    pub program: String,
    pub listen: String,
    pub namespace: String,
    /// Drivers: a fresh credential for their job; remote jobs: the one their node gave.
    pub job_key: Option<JobKey>,
}

impl NodeState {
    /// A new client on connection `conn`. Returns false (drop the connection) for a worker
    /// this node did not start.
    pub fn register(&mut self, conn: u64, r: Registration) -> bool {
        let Registration {
            mut worker,
            pid,
            kind,
            exe,
            program,
            listen,
            namespace,
            job_key,
        } = r;
        if kind != ClientKind::Worker {
            // Its objects' ids then name this node.
            worker = worker.with_node(self.index);
        }
        let job = match kind {
            ClientKind::Driver | ClientKind::Remote => {
                let job = JobId(self.next_job);
                self.next_job += 1;
                self.jobs.insert(
                    job,
                    Job {
                        exe,
                        program,
                        namespace,
                        driver: Some(conn),
                        remote: kind == ClientKind::Remote,
                        key: job_key,
                        failed_starts: 0,
                    },
                );
                job
            }
            ClientKind::Tool => JobId(0),
            ClientKind::Worker => {
                let Some(w) = self.workers.get_mut(&worker) else {
                    self.log(format!(
                        "unknown worker {worker} (pid {pid}) registered; dropped"
                    ));
                    return false;
                };
                w.state = if w.actor.is_some() {
                    WorkerState::Actor
                } else {
                    WorkerState::Idle
                };
                w.address = listen;
                w.conn = Some(conn);
                if w.pid == 0 {
                    w.pid = pid;
                }
                let job = w.job;
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.failed_starts = 0;
                }
                job
            }
        };
        self.clients.insert(conn, Client { kind, worker, job });
        let (namespace, job_key) = self
            .jobs
            .get(&job)
            .map(|j| {
                (
                    j.namespace.clone(),
                    j.key.map(|k| k.to_vec()).unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        let registered = FromRaylet::Registered {
            node: self.setup.id,
            node_index: self.index,
            worker,
            job,
            arena: self.setup.arena.clone(),
            session: self.setup.session.clone(),
            resources: self.total().clone(),
            namespace,
            store_full_wait_ms: self.setup.store_full_wait_ms,
            job_key,
        };
        self.send(conn, registered);
        if kind == ClientKind::Driver {
            for _ in 0..self.setup.prestart_workers {
                if self.spawn_worker(job, None).is_none() {
                    break;
                }
            }
        }
        if kind == ClientKind::Worker {
            let actor = self.workers.get(&worker).and_then(|w| w.actor);
            if let Some(a) = actor.and_then(|a| self.actors.get(&a)) {
                let msg = FromRaylet::StartActor {
                    spec: a.spec.clone(),
                    restarts: a.restarts,
                };
                self.send(conn, msg);
            }
        }
        self.schedule();
        true
    }

    /// A message from a registered client that concerns the node's state. Returns the message
    /// back when it is not one (the I/O layer answers it: store operations, status, ...).
    pub fn message(&mut self, conn: u64, msg: ToRaylet) -> Option<ToRaylet> {
        match msg {
            ToRaylet::Placement { req, request } => {
                let waiter = super::placement::Waiter::Client { conn, req };
                self.placement(waiter, request);
            }
            ToRaylet::RequestLease {
                req,
                resources,
                near,
                strategy,
            } => self.request_lease(conn, req, resources, near, strategy),
            ToRaylet::ReturnLease { lease } if lease & crate::cluster::REMOTE_LEASE != 0 => {
                self.return_remote_lease(conn, lease);
            }
            ToRaylet::ReturnLease { lease } => self.return_lease(lease),
            ToRaylet::Blocked => self.set_blocked(conn, true),
            ToRaylet::Unblocked => self.set_blocked(conn, false),
            ToRaylet::CreateActor { req, spec } => self.create_actor(conn, req, spec, false),
            ToRaylet::GetActor {
                req,
                id,
                name,
                namespace,
                wait_alive,
            } => self.get_actor(conn, req, id, &name, &namespace, wait_alive),
            ToRaylet::KillActor { req, id, restart } => self.kill_actor(conn, req, id, restart),
            ToRaylet::ReleaseActor { id } => self.release_actor(conn, id),
            ToRaylet::ActorReady { id } => self.actor_ready(conn, id),
            ToRaylet::ActorFailed { id, message } => self.actor_failed(id, &message),
            ToRaylet::ActorExiting { id } => self.actor_exiting(id),
            other => return Some(other),
        }
        None
    }

    /// A client's connection closed: release everything it held.
    pub fn disconnect(&mut self, conn: u64) {
        let Some(client) = self.clients.remove(&conn) else {
            return;
        };
        // Objects the client owned can never be read again, here or on other nodes (results of
        // its tasks that ran there).
        self.push(Effect::DeleteOwnedBy(client.worker));
        if matches!(client.kind, ClientKind::Driver | ClientKind::Worker) {
            self.link(LinkOp::OwnerGone(client.worker));
        }
        // Its lease requests go away; workers leased to it are killed, as in Ray: they may be
        // running its tasks, whose results nobody will collect.
        self.pending.retain(|r| r.conn != conn);
        let remote: Vec<u64> = self
            .remote_leases
            .iter()
            .filter(|(_, holder)| **holder == conn)
            .map(|(lease, _)| *lease)
            .collect();
        for lease in remote {
            self.remote_leases.remove(&lease);
            let (index, lease) = crate::cluster::split_remote_lease(lease);
            let msg = Forward::ReturnLease { lease };
            self.link(LinkOp::Forward {
                job: client.job,
                index,
                msg,
            });
        }
        let held: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.holder == conn)
            .map(|(id, _)| *id)
            .collect();
        for lease in held {
            if let Some(l) = self.leases.remove(&lease) {
                self.kill_worker(l.worker);
            }
        }
        // Non-detached actors die with their owner.
        let owned: Vec<ActorId> = self
            .actors
            .values()
            .filter(|a| a.owner_conn == conn && !a.spec.detached && a.state != ActorState::Dead)
            .map(|a| a.spec.id)
            .collect();
        for id in owned {
            self.actor_process_lost(id, Some("its owner exited".into()), true);
        }
        self.actor_waiters
            .values_mut()
            .for_each(|w| w.retain(|(c, _)| *c != conn));
        match client.kind {
            ClientKind::Worker => {
                let hosted = self.workers.get(&client.worker).and_then(|w| w.actor);
                if let Some(actor) = hosted {
                    if self
                        .actors
                        .get(&actor)
                        .is_some_and(|a| a.worker == Some(client.worker))
                    {
                        self.actor_process_lost(actor, None, true);
                    }
                }
                // Its own lease (if it was leased) ends; the holder sees the socket close.
                self.leases.retain(|_, l| l.worker != client.worker);
                self.kill_worker(client.worker);
            }
            ClientKind::Tool => {}
            ClientKind::Driver | ClientKind::Remote => self.end_job(conn, client.kind, client.job),
        }
        self.schedule();
    }

    /// The driver (or the attachment of another node) of `job` left: its workers go, here and
    /// on the nodes it spilled work to.
    fn end_job(&mut self, conn: u64, kind: ClientKind, job: JobId) {
        if kind == ClientKind::Driver {
            self.link(LinkOp::JobEnded(job));
            // Detached actors it placed on other nodes outlive it there (their attachments
            // close; those nodes keep them), so their records stay: lookups still find them.
            self.remote_actors
                .retain(|_, p| p.job != job || p.spec.detached);
            self.job_ended_groups(job);
        }
        let ids: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.job == job && w.actor.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.kill_worker(id);
        }
        self.leases.retain(|_, l| l.holder != conn);
        // Keep the job's executable known while detached actors of it live (restarts).
        let detached_alive = self
            .actors
            .values()
            .any(|a| a.owner_job == job && a.state != ActorState::Dead)
            || self.remote_actors.values().any(|p| p.job == job);
        if detached_alive {
            if let Some(j) = self.jobs.get_mut(&job) {
                j.driver = None;
            }
        } else {
            self.jobs.remove(&job);
        }
    }
}
