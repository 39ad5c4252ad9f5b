//! The node: its state machine ([`NodeState`]) and the I/O layer around it ([`Node`]).
//!
//! # Events in, effects out
//!
//! [`NodeState`] holds everything the raylet knows (clients, workers, leases, the scheduler's
//! queues, actors, the cluster view) and changes only through method calls that are events:
//! a client registered or sent a message or went away, a worker process started or exited, a
//! new cluster view arrived, a forwarded request came back. It answers with [`Effect`]s
//! (messages to send, workers to spawn or kill, connections to close, requests for other
//! nodes) and never does I/O, forks, sleeps or takes another lock itself, so it is driven in
//! memory by the tests in `tests.rs`, several nodes at once (quinn-proto's `Connection` is
//! the model).
//!
//! [`Node`] is the I/O side. Every entry point runs one event under the state lock, takes the
//! effects, releases the lock and only then carries them out: messages go to each
//! connection's [`Outbox`] (which never blocks: a client that stops reading stalls only its
//! own writer thread), spawns to the spawner thread, kills to the process table, cluster
//! requests to the [`Link`] (which only queues work on the QUIC runtime).
//!
//! # Lock order
//!
//! The state lock is a leaf: nothing else is locked while it is held, and no effect is
//! carried out under it. The other locks here (`view`, `outboxes`, an outbox's own, the
//! process table, the store's) are leaves too, each held only for a table update. So the
//! health-check path (`load`, `set_cluster_view`) waits at most for one short event, never for
//! a socket, a fork or a child.

mod actors;
mod bundles;
mod dispatch;
mod effects;
mod placement;
mod pool;
mod report;
mod scheduler;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use oxray_common::event_loop::EventLoop;
use oxray_common::frame;
use oxray_common::ids::{owner_of, worker_socket};
use oxray_common::peer::{ClusterView, NodeInfo, NodeLoad};
use oxray_common::protocol::{
    ActorInfo, ActorSpec, ClientKind, ErrorKind, FromRaylet, NodeStatus, StoredObject, Strategy,
    ToRaylet,
};
use oxray_common::resources::Resources;
use oxray_common::{ActorId, JobId, NodeId, ObjectId, WorkerId};
use oxray_object_store::{ClientId, CreateOptions, Store, StoreError};

use crate::cluster::Link;
use crate::config::RayletConfig;
use crate::outbox::Outbox;
use crate::spill::{SpillBase, Spiller};
use crate::workers::{Processes, SpawnRequest};

pub(crate) use dispatch::Registration;
pub(crate) use effects::{Effect, LinkOp};
pub(crate) use state::{NodeState, Setup};

/// Exited owners remembered for `OwnerDied` answers.
const GONE_OWNERS_KEPT: usize = 4096;

/// The last [`GONE_OWNERS_KEPT`] processes whose objects were freed because they exited.
#[derive(Default)]
struct GoneOwners {
    order: std::collections::VecDeque<WorkerId>,
    set: std::collections::HashSet<WorkerId>,
}

impl GoneOwners {
    fn add(&mut self, owner: WorkerId) {
        if self.set.insert(owner) {
            self.order.push_back(owner);
            if self.order.len() > GONE_OWNERS_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// How long a stopping raylet waits for its killed workers to be reaped.
const REAP_ON_STOP: Duration = Duration::from_secs(5);

/// Everything shared by the raylet's threads: the state behind its lock, and the I/O around it.
pub(crate) struct Node {
    pub config: RayletConfig,
    /// This node's id; a new one when the node joins its cluster again ([`Node::rejoined`]).
    id: Mutex<NodeId>,
    pub store: Store,
    pub address: String,
    pub stopping: AtomicBool,
    state: Mutex<NodeState>,
    /// The cluster view as last published to the state, for the cluster layer's readers.
    view: Mutex<ClusterView>,
    /// This node's index in the cluster (0: not in one), as the state knows it.
    index: AtomicU16,
    /// The way to other nodes (set once when the node joins a cluster).
    link: OnceLock<Link>,
    /// Every registered connection's outbox.
    outboxes: Mutex<HashMap<u64, Arc<Outbox>>>,
    next_conn: AtomicU64,
    procs: OnceLock<Arc<Processes>>,
    /// The thread serving every client connection, worker output pipe and worker exit.
    events: EventLoop,
    /// Spilling to disk and restoring.
    pub(crate) spill: Arc<Spiller>,
    /// Processes whose objects were freed because they exited (the last few thousand), so a
    /// late reader of one of them hears `OwnerDied`, not "not found".
    gone_owners: Mutex<GoneOwners>,
    /// Tasks and actor calls the node's workers ran (the timeline).
    tasks: crate::timeline::TaskLog,
    /// Placement-group requests of other nodes waiting for the manager's answer, by token.
    peer_answers: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<FromRaylet>>>,
    /// The dashboard's address with its token, once it serves.
    pub(crate) dashboard: OnceLock<String>,
    /// Where each worker's output is kept (`SESSION_DIR/workers`), for nodes that are not
    /// embedded in a driver (`oxray logs --worker PID`).
    pub(crate) worker_logs: OnceLock<std::path::PathBuf>,
    /// Jobs handed to this node with `oxray job submit`.
    pub(crate) submitted_jobs: Arc<crate::submitted_jobs::SubmittedJobs>,
    me: Weak<Node>,
}

impl Node {
    pub(crate) fn new(config: RayletConfig, store: Store) -> std::io::Result<Arc<Node>> {
        let id = NodeId::random();
        let events = EventLoop::start("oxray-raylet-io")?;
        let spill_base = match (&config.spill_dir, config.spilling) {
            (_, false) => None,
            (Some(dir), true) => Some(SpillBase::Dir(dir.clone())),
            (None, true) => Some(SpillBase::Session),
        };
        let spill = Arc::new(Spiller::new(spill_base, &config.session));
        let submitted_jobs =
            crate::submitted_jobs::SubmittedJobs::new(&config.address(), &config.session);
        let setup = Setup {
            id,
            session: config.session.clone(),
            arena: store.arena_path().display().to_string(),
            total: config.total_resources(),
            prestart_workers: config.prestart_workers,
            clustered: config.cluster.is_some(),
            places_groups: config.cluster.as_ref().is_none_or(|c| c.head.is_none()),
            max_dead_actors: config.max_dead_actors,
            store_full_wait_ms: config
                .store_full_wait
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
        };
        let node = Arc::new_cyclic(|me| Node {
            address: config.address(),
            config,
            id: Mutex::new(id),
            store,
            stopping: AtomicBool::new(false),
            state: Mutex::new(NodeState::new(setup)),
            view: Mutex::new(ClusterView::default()),
            index: AtomicU16::new(0),
            link: OnceLock::new(),
            outboxes: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            procs: OnceLock::new(),
            events,
            spill,
            gone_owners: Mutex::new(GoneOwners::default()),
            tasks: crate::timeline::TaskLog::default(),
            dashboard: OnceLock::new(),
            peer_answers: Mutex::new(HashMap::new()),
            worker_logs: OnceLock::new(),
            submitted_jobs,
            me: me.clone(),
        });
        node.spill.start(Arc::downgrade(&node))?;
        let procs = Processes::start(Arc::downgrade(&node))?;
        let _ = node.procs.set(procs);
        Ok(node)
    }

    /// This node's id.
    pub(crate) fn id(&self) -> NodeId {
        *self.id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The head declared this node dead while it was still running, and it joins again as the
    /// new node `id` (its index follows with the head's view).
    pub(crate) fn rejoined(&self, id: NodeId) {
        *self.id.lock().unwrap_or_else(|p| p.into_inner()) = id;
        self.run(|st| st.rejoined(id));
    }

    /// The event loop serving this node's connections, pipes and process exits.
    pub(crate) fn events(&self) -> &EventLoop {
        &self.events
    }

    pub(crate) fn weak(&self) -> Weak<Node> {
        self.me.clone()
    }

    /// Runs one event on the state, then carries out its effects with the lock released.
    fn run<R>(&self, event: impl FnOnce(&mut NodeState) -> R) -> R {
        let (result, effects) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let result = event(&mut st);
            self.index.store(st.index, Ordering::Relaxed);
            (result, st.take_effects())
        };
        self.apply(effects);
        result
    }

    fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { conn, msg } => {
                    self.send_to_client(conn, &msg);
                }
                Effect::Close { conn } => {
                    if let Some(o) = self.outbox(conn) {
                        o.close();
                    }
                }
                Effect::Spawn {
                    worker,
                    exe,
                    driver,
                } => {
                    let driver = driver.and_then(|c| self.outbox(c));
                    let req = SpawnRequest {
                        worker,
                        exe,
                        driver,
                    };
                    if !self.procs.get().is_some_and(|p| p.request(req)) {
                        self.worker_start_failed(worker, "the raylet is stopping");
                    }
                }
                Effect::Kill { worker } => {
                    if let Some(p) = self.procs.get() {
                        p.kill(worker);
                    }
                }
                Effect::DeleteOwnedBy(owner) => self.delete_owned_by(owner),
                Effect::Log(line) => tracing::warn!("{line}"),
                Effect::PeerAnswer { token, msg } => {
                    let waiting = self
                        .peer_answers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&token);
                    if let Some(tx) = waiting {
                        let _ = tx.send(msg);
                    }
                }
                Effect::Link(op) => {
                    if let Some(link) = self.link.get() {
                        link.carry_out(op);
                    }
                }
            }
        }
    }

    /// Holds the state lock, as a long event would (tests of what must not wait for it).
    #[cfg(test)]
    pub(crate) fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn outboxes(&self) -> MutexGuard<'_, HashMap<u64, Arc<Outbox>>> {
        self.outboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn outbox(&self, conn: u64) -> Option<Arc<Outbox>> {
        self.outboxes().get(&conn).cloned()
    }

    /// This node's index in the cluster (0: not in one).
    pub(crate) fn index(&self) -> u16 {
        self.index.load(Ordering::Relaxed)
    }

    /// The way to other nodes, if this node is in a cluster.
    pub(crate) fn link(&self) -> Option<&Link> {
        self.link.get()
    }

    /// Connects the node to its cluster.
    pub(crate) fn set_link(&self, link: Link) {
        let _ = self.link.set(link);
    }

    fn view(&self) -> MutexGuard<'_, ClusterView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node of the cluster by index.
    pub(crate) fn peer_by_index(&self, index: u16) -> Option<NodeInfo> {
        self.view().nodes.iter().find(|n| n.index == index).cloned()
    }

    /// The cluster as last heard from the head.
    pub(crate) fn cluster_view(&self) -> ClusterView {
        self.view().clone()
    }

    /// Records the cluster view; work waiting here may now fit elsewhere (or nowhere).
    pub(crate) fn set_cluster_view(&self, view: ClusterView) {
        let id = self.id();
        if let Some(me) = view.nodes.iter().find(|n| n.id == id) {
            self.index.store(me.index, Ordering::Relaxed);
        }
        *self.view() = view.clone();
        self.run(|st| st.set_view(view));
    }

    /// A new connection's number.
    pub(crate) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends to a client by connection number; false when it is gone.
    pub(crate) fn send_to_client(&self, conn: u64, msg: &FromRaylet) -> bool {
        let Some(outbox) = self.outbox(conn) else {
            return false;
        };
        match frame::encode(msg) {
            Ok(buf) => outbox.push(buf),
            Err(e) => {
                tracing::warn!("connection {conn}: cannot encode a reply: {e}");
                true
            }
        }
    }

    /// Forwards a line of output of a job's worker on another node to the job's driver. It is
    /// dropped (and counted) while the driver has much unread: this runs on the QUIC runtime,
    /// which must not wait for a driver that stopped reading.
    pub(crate) fn output_to_job_driver(&self, job: JobId, msg: &FromRaylet) {
        let driver = self.run(|st| st.jobs.get(&job).and_then(|j| j.driver));
        let Some(outbox) = driver.and_then(|c| self.outbox(c)) else {
            return;
        };
        if let Ok(buf) = frame::encode(msg) {
            outbox.push_unless_backlogged(buf);
        }
    }

    /// A job's executable and namespace.
    pub(crate) fn job_exe(&self, job: JobId) -> Option<(String, String, Vec<u8>)> {
        self.run(|st| {
            st.jobs.get(&job).map(|j| {
                let key = j.key.map(|k| k.to_vec()).unwrap_or_default();
                (j.exe.clone(), j.namespace.clone(), key)
            })
        })
    }

    /// Handles the first message of a connection, which must be `Register`; `outbox` writes
    /// to it. Returns false (drop the connection) otherwise.
    pub(crate) fn register(&self, conn: u64, outbox: Arc<Outbox>, msg: ToRaylet) -> bool {
        let ToRaylet::Register {
            worker,
            pid,
            kind,
            exe,
            listen,
            namespace,
            job_key,
        } = msg
        else {
            tracing::warn!("connection {conn}: first message was not Register; dropped");
            return false;
        };
        // `/proc/<pid>/exe` names nothing once the driver exits: keep the real name.
        let program = std::fs::read_link(&exe)
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        self.outboxes().insert(conn, outbox);
        let r = Registration {
            worker,
            pid,
            kind,
            exe,
            program,
            listen,
            namespace,
            job_key: job_key_of(kind, &job_key),
        };
        let ok = self.run(|st| st.register(conn, r));
        if !ok {
            if let Some(o) = self.outboxes().remove(&conn) {
                o.retire();
            }
        }
        ok
    }

    /// Handles one message from a registered client.
    pub(crate) fn handle(&self, conn: u64, msg: ToRaylet) {
        // Object store and status messages never take the state lock (puts and gets do not
        // wait for scheduling); the rest are events on the state.
        let msg = match msg {
            ToRaylet::Register { .. }
            | ToRaylet::Tunnel { .. }
            | ToRaylet::Jobs
            | ToRaylet::WorkerAddress { .. }
            | ToRaylet::Create { .. }
            | ToRaylet::Seal { .. }
            | ToRaylet::Pin { .. }
            | ToRaylet::Release { .. }
            | ToRaylet::Delete { .. }
            | ToRaylet::Status { .. }
            | ToRaylet::Memory { .. }
            | ToRaylet::TaskEvents { .. }
            | ToRaylet::Timeline { .. }
            | ToRaylet::Stop { .. } => msg,
            _ => {
                if let Some(other) = self.run(|st| st.message(conn, msg)) {
                    self.log_unhandled(conn, &other);
                }
                return;
            }
        };
        let client = ClientId(conn);
        let reply = match msg {
            ToRaylet::Register { .. } => bad_request(0, "already registered"),
            ToRaylet::Tunnel { .. } => {
                bad_request(0, "Tunnel must be the first message of a connection")
            }
            ToRaylet::Jobs => bad_request(0, "Jobs must be the first message of a connection"),
            ToRaylet::WorkerAddress { req, worker } => match self.worker_address(worker) {
                Ok(address) => FromRaylet::Address { req, address },
                Err(message) => FromRaylet::Error {
                    req,
                    kind: ErrorKind::ObjectNotFound,
                    message,
                },
            },
            ToRaylet::Create {
                req,
                id,
                len,
                fingerprint,
            } => {
                let opts = CreateOptions {
                    fingerprint,
                    evictable: false,
                };
                // Spilled (or kept in a file) already: a retried task made it before.
                if self.spill.enabled() && self.spill.holds(id) {
                    let reply = FromRaylet::Created {
                        req,
                        block: 0,
                        existed: true,
                    };
                    self.send_to_client(conn, &reply);
                    return;
                }
                match self.store.create_for(client, id, len, opts) {
                    Ok(loc) => FromRaylet::Created {
                        req,
                        block: loc.block,
                        existed: false,
                    },
                    // Full: the spill thread frees room (if anything can go) and answers; when
                    // nothing can go, or it never fits, it makes the object in a file.
                    Err(StoreError::ObjectStoreFull { .. } | StoreError::ObjectTooLarge { .. })
                        if self.spill.enabled() =>
                    {
                        self.spill.queue_create(conn, req, id, len, fingerprint);
                        return;
                    }
                    Err(e @ StoreError::ObjectStoreFull { .. }) => FromRaylet::Error {
                        req,
                        kind: ErrorKind::ObjectStoreFull,
                        message: format!("{e}; spilling to disk is off for this node"),
                    },
                    Err(StoreError::ObjectExists(_)) => match self.store.info(id) {
                        Some(info) if info.sealed => FromRaylet::Created {
                            req,
                            block: info.location.block,
                            existed: true,
                        },
                        _ => store_error(req, StoreError::ObjectExists(id)),
                    },
                    Err(e) => store_error(req, e),
                }
            }
            ToRaylet::Seal { req, id } => match self.store.seal(id) {
                Ok(_) => FromRaylet::Sealed { req },
                Err(StoreError::ObjectNotFound(_)) if self.spill.seal_file(id, conn) => {
                    FromRaylet::Sealed { req }
                }
                Err(e) => store_error(req, e),
            },
            ToRaylet::Pin { req, id, node } => match self.store.pin_for(client, id) {
                Ok(loc) => FromRaylet::Pinned {
                    req,
                    block: loc.block,
                },
                // Spilled here: answered once it is read back.
                Err(StoreError::ObjectNotFound(_)) if self.spill.restore_for(id, conn, req) => {
                    return;
                }
                // Freed with its owner.
                Err(StoreError::ObjectNotFound(_)) if self.owner_gone(owner_of(id)) => {
                    FromRaylet::Error {
                        req,
                        kind: ErrorKind::OwnerDied,
                        message: format!(
                            "the process that owned object {id} ({}) exited, and its objects \
                             were freed with it",
                            owner_of(id)
                        ),
                    }
                }
                // Not here, or being pulled here right now: (join the) pull.
                Err(StoreError::ObjectNotFound(_) | StoreError::NotSealed(_))
                    if node != 0 && node != self.index() =>
                {
                    match self.link.get() {
                        Some(link) => {
                            link.pull(id, node, conn, req);
                            return;
                        }
                        None => store_error(req, StoreError::ObjectNotFound(id)),
                    }
                }
                Err(e) => store_error(req, e),
            },
            ToRaylet::Release { id } => {
                let _ = self.store.release_for(client, id);
                return;
            }
            ToRaylet::Delete { ids, node } => {
                match self.link.get() {
                    Some(link) => link.delete(ids, node),
                    None => {
                        for id in ids {
                            self.delete_local(id);
                        }
                    }
                }
                return;
            }
            ToRaylet::Status { req } => FromRaylet::Status {
                req,
                status: Box::new(self.status()),
            },
            ToRaylet::Memory { req } => FromRaylet::Memory {
                req,
                objects: self.objects(),
            },
            ToRaylet::TaskEvents { events } => {
                self.tasks.add(events);
                return;
            }
            ToRaylet::Timeline { req } => FromRaylet::Timeline {
                req,
                node: self.id(),
                events: self.tasks.all(),
            },
            ToRaylet::Stop { req } => {
                self.send_to_client(conn, &FromRaylet::Sealed { req });
                self.stop();
                return;
            }
            other => {
                self.log_unhandled(conn, &other);
                return;
            }
        };
        self.send_to_client(conn, &reply);
    }

    /// A message neither the store side nor the state handled (a bug, never a client's fault).
    fn log_unhandled(&self, conn: u64, msg: &ToRaylet) {
        tracing::warn!("connection {conn}: no handler for {msg:?}; ignored");
    }

    /// A client's connection closed: release everything it held.
    pub(crate) fn disconnect(&self, conn: u64) {
        let outbox = self.outboxes().remove(&conn);
        let (pins, aborted) = self.store.disconnect(ClientId(conn));
        self.spill.disconnect(conn);
        if pins + aborted > 0 {
            tracing::warn!(
                "connection {conn} left holding {pins} pins and {aborted} unsealed \
                 objects; freed"
            );
        }
        self.run(|st| st.disconnect(conn));
        if let Some(o) = outbox {
            o.retire();
        }
    }

    /// A lease request forwarded to a node that went away comes back to the local queue.
    pub(crate) fn requeue_lease(
        &self,
        conn: u64,
        req: u64,
        resources: Resources,
        from: u16,
        strategy: Strategy,
    ) {
        self.run(|st| st.requeue_lease(conn, req, resources, from, strategy));
    }

    /// A local client now holds a lease of another node. False when it is gone.
    pub(crate) fn note_remote_lease(&self, conn: u64, lease: u64) -> bool {
        self.run(|st| st.note_remote_lease(conn, lease))
    }

    /// A job's attachment to node `index` closed.
    pub(crate) fn peer_lost(&self, job: JobId, index: u16) {
        self.run(|st| st.peer_lost(job, index));
    }

    /// A hosting node answered about an actor this node placed there.
    pub(crate) fn placed_actor_seen(&self, info: &ActorInfo) {
        self.run(|st| st.placed_actor_seen(info));
    }

    /// Where to ask about actor `id`: `Some(node)` when another node knows.
    pub(crate) fn actor_location(&self, id: ActorId) -> Option<u16> {
        self.run(|st| st.actor_location(id))
    }

    /// Creates an actor for client `conn` (its name already claimed with `claimed`).
    /// Another node's client asks the manager (this is the head); the answer comes later.
    pub(crate) fn placement_from_peer(
        &self,
        request: oxray_common::placement::PlacementRequest,
    ) -> tokio::sync::oneshot::Receiver<FromRaylet> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let token = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.peer_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, tx);
        self.run(|st| st.placement(placement::Waiter::Peer(token), request));
        rx
    }

    /// The manager's bundle request for this node.
    pub(crate) fn bundle_op(&self, op: oxray_common::placement::BundleOp) -> Result<(), String> {
        self.run(|st| st.bundle_op(op))
    }

    /// A node answered the manager's bundle request.
    pub(crate) fn bundles_answered(
        &self,
        group: oxray_common::placement::PlacementGroupId,
        attempt: u64,
        index: u16,
        result: Result<(), String>,
    ) {
        self.run(|st| st.bundles_answered(group, attempt, index, result));
    }

    pub(crate) fn create_actor(&self, conn: u64, req: u64, spec: ActorSpec, claimed: bool) {
        self.run(|st| st.create_actor(conn, req, spec, claimed));
    }

    /// Answers a client's `GetActor`.
    pub(crate) fn get_actor(
        &self,
        conn: u64,
        req: u64,
        id: Option<ActorId>,
        name: &str,
        namespace: &str,
        wait_alive: bool,
    ) {
        self.run(|st| st.get_actor(conn, req, id, name, namespace, wait_alive));
    }

    /// Answers a peer's question about an actor (see [`NodeState::actor_for_peer`]).
    pub(crate) fn actor_for_peer(
        &self,
        id: ActorId,
        kill: Option<bool>,
    ) -> Result<Option<ActorInfo>, u16> {
        self.run(|st| st.actor_for_peer(id, kill))
    }

    /// The process of `worker` runs with `pid`. False when the node no longer wants it (it
    /// was killed while its start was under way): the caller kills it.
    pub(crate) fn worker_started(&self, worker: WorkerId, pid: u32) -> bool {
        self.run(|st| st.worker_started(worker, pid))
    }

    /// The process of `worker` could not be started.
    pub(crate) fn worker_start_failed(&self, worker: WorkerId, why: &str) {
        self.run(|st| st.worker_start_failed(worker, why));
    }

    /// The process of `worker` exited and was reaped.
    pub(crate) fn worker_exited(&self, worker: WorkerId, status: &str) {
        self.run(|st| st.worker_exited(worker, status));
    }

    /// A pull for a client's pin ended: pin the copy, or report why there is none.
    pub(crate) fn pin_pulled(&self, conn: u64, req: u64, id: ObjectId, error: Option<&str>) {
        let reply = match error {
            None => match self.store.pin_for(ClientId(conn), id) {
                Ok(loc) => FromRaylet::Pinned {
                    req,
                    block: loc.block,
                },
                // Pulled into a file (no room in the store): answered from the spiller.
                Err(_) if self.spill.restore_for(id, conn, req) => return,
                Err(e) => FromRaylet::Error {
                    req,
                    kind: ErrorKind::ObjectNotFound,
                    message: e.to_string(),
                },
            },
            Some(why) => FromRaylet::Error {
                req,
                kind: ErrorKind::ObjectNotFound,
                message: format!("object {id} could not be fetched: {why}"),
            },
        };
        if !self.send_to_client(conn, &reply) {
            if let FromRaylet::Pinned { .. } = reply {
                let _ = self.store.release_for(ClientId(conn), id);
            }
        }
    }

    /// Where a core worker listens, reached from this node.
    fn worker_address(&self, worker: WorkerId) -> Result<String, String> {
        let index = worker.node_index();
        if index == 0 || index == self.index() {
            return Ok(format!(
                "unix:@{}",
                worker_socket(&self.config.session, worker)
            ));
        }
        match self.peer_by_index(index) {
            Some(n) if n.alive => Ok(format!(
                "peer://{}/unix:@{}",
                n.peer_address,
                worker_socket(&n.session, worker)
            )),
            Some(n) => Err(format!(
                "process {worker} ran on node {} ({}), which is dead",
                n.id, n.peer_address
            )),
            None => Err(format!(
                "process {worker} ran on node index {index}, unknown to this cluster"
            )),
        }
    }

    /// Frees object `id` here: its arena copy and its spill file, whichever it has.
    pub(crate) fn delete_local(&self, id: ObjectId) {
        let _ = self.store.delete(id);
        self.spill.forget(id);
    }

    /// Whether the objects of process `owner` were freed because it exited.
    fn owner_gone(&self, owner: WorkerId) -> bool {
        self.gone_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .contains(&owner)
    }

    /// Whether connection `conn` is still registered.
    pub(crate) fn has_client(&self, conn: u64) -> bool {
        self.outboxes().contains_key(&conn)
    }

    /// Writes a line to the raylet's log (never under the state lock).
    pub(crate) fn log(&self, line: String) {
        tracing::warn!("{line}");
    }

    /// Frees the objects `owner` owned in this store (spilled ones too), and the copies other
    /// nodes pulled.
    pub(crate) fn delete_owned_by(&self, owner: WorkerId) {
        self.gone_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(owner);
        let mut owned: Vec<ObjectId> = self
            .store
            .object_ids()
            .into_iter()
            .filter(|id| owner_of(*id) == owner)
            .collect();
        owned.extend(self.spill.owned_by(owner));
        if owned.is_empty() {
            return;
        }
        match self.link.get() {
            // Copies other nodes pulled go too.
            Some(link) => link.delete(owned, 0),
            None => {
                for id in owned {
                    self.delete_local(id);
                }
            }
        }
    }

    /// Makes the raylet stop serving (its `wait` returns).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.run(|st| st.stopping = true);
        crate::server::wake_acceptor(&self.address);
    }

    /// Every object in the store or spilled from it, largest first.
    pub(crate) fn objects(&self) -> Vec<StoredObject> {
        let mut all: Vec<StoredObject> = self
            .store
            .object_ids()
            .into_iter()
            .filter_map(|id| {
                let info = self.store.info(id)?;
                Some(StoredObject {
                    id,
                    size: info.location.len,
                    place: if info.sealed {
                        "memory"
                    } else {
                        "being written"
                    }
                    .into(),
                    pins: info.pins,
                    primary: !info.evictable,
                })
            })
            .collect();
        all.extend(
            self.spill
                .listed()
                .into_iter()
                .map(|(id, size, made_in_file)| StoredObject {
                    id,
                    size,
                    place: if made_in_file { "in a file" } else { "spilled" }.into(),
                    pins: 0,
                    primary: true,
                }),
        );
        all.sort_by_key(|o| std::cmp::Reverse(o.size));
        all
    }

    /// What this node reports to the head every health-check period.
    pub(crate) fn load(&self) -> NodeLoad {
        let stats = self.store.stats();
        self.run(|st| st.load(&stats))
    }

    /// The node's state.
    pub(crate) fn status(&self) -> NodeStatus {
        let stats = self.store.stats();
        let mut status = self.run(|st| st.status(std::process::id(), &self.address, &stats));
        let (objects, bytes, total, restored, dir) = self.spill.stats();
        status.spilled_objects = objects;
        status.spilled_bytes = bytes;
        status.spilled_total = total;
        status.restored_total = restored;
        status.spill_dir = dir;
        status.runs = self.tasks.runs();
        status.dashboard = self.dashboard.get().cloned().unwrap_or_default();
        status.tunnels = self.link().map_or(0, |l| l.tunnels());
        status.bytes_served = self.link().map_or(0, |l| l.bytes_served());
        status.own_process = !self.config.embedded;
        status
    }

    /// Kills every worker and closes every connection (shutdown).
    pub(crate) fn kill_all_workers(&self) {
        self.run(|st| {
            st.stopping = true;
            st.kill_all_workers();
        });
        if let Some(p) = self.procs.get() {
            p.kill_all(REAP_ON_STOP);
        }
        let outboxes: Vec<Arc<Outbox>> = self.outboxes().values().cloned().collect();
        for o in outboxes {
            o.close();
        }
    }
}

fn bad_request(req: u64, message: &str) -> FromRaylet {
    FromRaylet::Error {
        req,
        kind: ErrorKind::BadRequest,
        message: message.into(),
    }
}

pub(crate) fn store_error(req: u64, e: StoreError) -> FromRaylet {
    let kind = match e {
        StoreError::ObjectStoreFull { .. } => ErrorKind::ObjectStoreFull,
        StoreError::ObjectTooLarge { .. } => ErrorKind::ObjectTooLarge,
        StoreError::ObjectNotFound(_) => ErrorKind::ObjectNotFound,
        _ => ErrorKind::BadRequest,
    };
    FromRaylet::Error {
        req,
        kind,
        message: e.to_string(),
    }
}

/// The credential a new client's job gets: a fresh one for a driver, the one its node made for a
/// job attached from there. Without one (no randomness, a malformed key) the job's processes
/// make no direct connections and accept none; they talk through the raylets.
fn job_key_of(kind: ClientKind, given: &[u8]) -> Option<state::JobKey> {
    use oxray_common::protocol::ClientKind::{Driver, Remote, Tool, Worker};
    use ring::rand::SecureRandom;
    match kind {
        Driver => {
            let mut key = [0u8; 32];
            ring::rand::SystemRandom::new().fill(&mut key).ok()?;
            Some(key)
        }
        Remote => given.try_into().ok(),
        Worker | Tool => None,
    }
}
