//! The node's state and what each message does to it: clients, workers, leases, the scheduler.
//!
//! One mutex guards the whole state. Every handler is short (table updates, a store call, a
//! socket write to a local client), so contention stays low; spawning a worker happens under
//! the lock too, which costs about a millisecond and only when the pool grows.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use oxray_common::frame;
use oxray_common::ids::{owner_of, worker_socket};
use oxray_common::peer::{ClusterView, JobSummary, NodeInfo, NodeLoad};
use oxray_common::protocol::{
    ActorInfo, ActorSpec, ActorState, ClientKind, ErrorKind, FromRaylet, NodeStatus, PendingLease,
    ToRaylet, WorkerStatus,
};
use oxray_common::resources::Resources;
use oxray_common::{ActorId, JobId, NodeId, ObjectId, WorkerId};
use oxray_object_store::{ClientId, CreateOptions, Store, StoreError};

use crate::cluster::{Forward, Link, REMOTE_LEASE};
use crate::config::RayletConfig;
use crate::workers;

/// A client connection's write half.
pub(crate) type Conn = Arc<Mutex<UnixStream>>;

/// Sends a message to a client; a failed write means the client is going away, which its reader
/// thread notices, so the error is dropped here.
pub(crate) fn send(conn: &Conn, msg: &FromRaylet) {
    if let Ok(buf) = frame::encode(msg) {
        let mut stream = conn.lock().unwrap_or_else(|p| p.into_inner());
        let _ = stream.write_all(&buf);
    }
}

/// Everything shared by the raylet's threads.
pub(crate) struct Node {
    pub config: RayletConfig,
    /// This node's id; a new one when the node joins its cluster again ([`Node::rejoined`]).
    id: Mutex<NodeId>,
    pub store: Store,
    pub address: String,
    pub state: Mutex<State>,
    pub stopping: AtomicBool,
    /// The cluster as last heard from the head (empty for a single node).
    cluster_view: Mutex<ClusterView>,
    /// This node's index in the cluster (0: not in one); the top bits of its workers' ids.
    index: AtomicU16,
    /// The way to other nodes (set once when the node joins a cluster).
    link: OnceLock<Link>,
}

struct Client {
    conn: Conn,
    kind: ClientKind,
    worker: WorkerId,
    job: JobId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    Starting,
    Idle,
    Leased(u64),
    /// Hosts an actor for its whole life.
    Actor,
}

pub(crate) struct Worker {
    pid: u32,
    job: JobId,
    state: WorkerState,
    address: String,
    conn: Option<u64>,
    child: Option<Child>,
    /// The actor this worker was started for.
    actor: Option<ActorId>,
}

struct Lease {
    worker: WorkerId,
    holder: u64,
    resources: Resources,
    blocked: bool,
}

struct LeaseRequest {
    req: u64,
    conn: u64,
    job: JobId,
    resources: Resources,
    /// May go to another node (false for work spilled here, and for requests that came back
    /// from a node that went away).
    spill: bool,
    /// Another node holding the work's large arguments, preferred when it has room (0: none).
    near: u16,
}

struct Job {
    exe: String,
    /// The driver's program, for status.
    program: String,
    namespace: String,
    driver: Option<u64>,
    /// Attached by another node (its driver runs there).
    remote: bool,
    /// Workers that died before registering, in a row: a broken executable must not make us
    /// spawn forever.
    failed_starts: u32,
}

/// The mutable state of a node.
#[derive(Default)]
pub(crate) struct State {
    next_conn: u64,
    next_lease: u64,
    next_job: u32,
    clients: HashMap<u64, Client>,
    workers: HashMap<WorkerId, Worker>,
    leases: HashMap<u64, Lease>,
    pending: VecDeque<LeaseRequest>,
    jobs: HashMap<JobId, Job>,
    total: Resources,
    actors: HashMap<ActorId, ActorEntry>,
    actor_names: HashMap<(String, String), ActorId>,
    /// Actors waiting for resources (new or restarting), in order.
    pending_actors: VecDeque<ActorId>,
    /// `GetActor { wait_alive }` requests parked until the actor is alive or dead.
    actor_waiters: HashMap<ActorId, Vec<(u64, u64)>>,
    /// Leases of other nodes held by local clients: local lease id → holder connection.
    remote_leases: HashMap<u64, u64>,
    /// Actors this node placed on other nodes.
    remote_actors: HashMap<ActorId, PlacedActor>,
    /// Names of actors placed on other nodes.
    remote_names: HashMap<(String, String), ActorId>,
    /// Resources spilled to each node since the cluster view last changed (so one view does
    /// not send more work to a node than it showed room for).
    spilled: HashMap<u16, Resources>,
}

/// An actor this node placed on another node: enough to start it again elsewhere if that node
/// dies.
struct PlacedActor {
    node: u16,
    job: JobId,
    owner_conn: u64,
    spec: ActorSpec,
    /// Restarts so far, as last heard from the hosting node.
    restarts: u32,
}

struct ActorEntry {
    spec: ActorSpec,
    state: ActorState,
    worker: Option<WorkerId>,
    lease: Option<u64>,
    address: String,
    pid: u32,
    restarts: u32,
    death: String,
    owner_conn: u64,
    owner_job: JobId,
    exiting: bool,
}

impl ActorEntry {
    /// A new entry waiting for resources: `Restarting` when its spec says it ran before.
    fn new(spec: ActorSpec, owner_conn: u64, owner_job: JobId) -> ActorEntry {
        let restarts = spec.restarts;
        ActorEntry {
            spec,
            state: if restarts > 0 {
                ActorState::Restarting
            } else {
                ActorState::Pending
            },
            worker: None,
            lease: None,
            address: String::new(),
            pid: 0,
            restarts,
            death: String::new(),
            owner_conn,
            owner_job,
            exiting: false,
        }
    }

    fn info(&self) -> ActorInfo {
        ActorInfo {
            id: self.spec.id,
            class: self.spec.class.clone(),
            state: self.state,
            address: self.address.clone(),
            pid: self.pid,
            restarts: self.restarts,
            name: self.spec.name.clone(),
            namespace: self.spec.namespace.clone(),
            death: self.death.clone(),
            max_concurrency: self.spec.max_concurrency,
        }
    }
}

const MAX_FAILED_STARTS: u32 = 5;

impl Node {
    pub(crate) fn new(config: RayletConfig, store: Store) -> Node {
        let state = State {
            total: config.total_resources(),
            next_conn: 1,
            next_lease: 1,
            next_job: 1,
            ..State::default()
        };
        Node {
            address: config.address(),
            config,
            id: Mutex::new(NodeId::random()),
            store,
            state: Mutex::new(state),
            stopping: AtomicBool::new(false),
            cluster_view: Mutex::new(ClusterView::default()),
            index: AtomicU16::new(0),
            link: OnceLock::new(),
        }
    }

    /// This node's id.
    pub(crate) fn id(&self) -> NodeId {
        *self.id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The head declared this node dead while it was still running; it joins again as the new
    /// node `id` (called once, before it registers; its new index comes with the head's view).
    /// The cluster gave up on what ran here under the old id, and this is where the node would
    /// drop it (not done yet; `cluster/health.rs`, "Rejoining").
    pub(crate) fn rejoined(&self, id: NodeId) {
        *self.id.lock().unwrap_or_else(|p| p.into_inner()) = id;
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

    /// A node of the cluster by index.
    pub(crate) fn peer_by_index(&self, index: u16) -> Option<NodeInfo> {
        self.cluster_view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .iter()
            .find(|n| n.index == index)
            .cloned()
    }

    /// Sends to a client by connection number; false when it is gone.
    pub(crate) fn send_to_client(&self, conn: u64, msg: &FromRaylet) -> bool {
        let c = self.lock().clients.get(&conn).map(|c| c.conn.clone());
        match c {
            Some(c) => {
                send(&c, msg);
                true
            }
            None => false,
        }
    }

    /// Sends to a job's driver (output of its workers on other nodes).
    pub(crate) fn send_to_job_driver(&self, job: JobId, msg: &FromRaylet) {
        let st = self.lock();
        let conn = st
            .jobs
            .get(&job)
            .and_then(|j| j.driver)
            .and_then(|d| st.clients.get(&d))
            .map(|c| c.conn.clone());
        drop(st);
        if let Some(c) = conn {
            send(&c, msg);
        }
    }

    /// A job's executable and namespace.
    pub(crate) fn job_exe(&self, job: JobId) -> Option<(String, String)> {
        self.lock()
            .jobs
            .get(&job)
            .map(|j| (j.exe.clone(), j.namespace.clone()))
    }

    /// A lease request forwarded to a node that went away comes back to the local queue.
    pub(crate) fn requeue_lease(&self, conn: u64, req: u64, resources: Resources) {
        let mut st = self.lock();
        let Some(job) = st.clients.get(&conn).map(|c| c.job) else {
            return;
        };
        st.pending.push_back(LeaseRequest {
            req,
            conn,
            job,
            resources,
            spill: false,
            near: 0,
        });
        self.schedule(&mut st);
    }

    /// A local client now holds a lease of another node. False when it is gone.
    pub(crate) fn note_remote_lease(&self, conn: u64, lease: u64) -> bool {
        let mut st = self.lock();
        if !st.clients.contains_key(&conn) {
            return false;
        }
        st.remote_leases.insert(lease, conn);
        true
    }

    /// A job's attachment to node `index` closed: the leases it had there are gone, and its
    /// actors there start again elsewhere if their `max_restarts` allows, else are dead.
    pub(crate) fn peer_lost(&self, job: JobId, index: u16) {
        let mut st = self.lock();
        let State {
            remote_leases,
            clients,
            ..
        } = &mut *st;
        // Only this job's leases there are gone; other jobs' attachments may still be up.
        remote_leases.retain(|lease, holder| {
            crate::cluster::split_remote_lease(*lease).0 != index
                || clients.get(holder).is_some_and(|c| c.job != job)
        });
        let lost: Vec<ActorId> = st
            .remote_actors
            .iter()
            .filter(|(_, p)| p.node == index && p.job == job)
            .map(|(a, _)| *a)
            .collect();
        for a in lost {
            if let Some(placed) = st.remote_actors.remove(&a) {
                self.replace_actor(&mut st, placed, index);
            }
        }
        self.schedule(&mut st);
    }

    /// Node `gone` that hosted `placed` went away: start the actor again (here or on another
    /// node) if its `max_restarts` allows; otherwise record it dead with the cause.
    fn replace_actor(&self, st: &mut State, placed: PlacedActor, gone: u16) {
        let max = placed.spec.max_restarts;
        if max >= 0 && i64::from(placed.restarts) >= max {
            let death = format!(
                "the node it ran on (node {gone}) went away and max_restarts ({max}) is exhausted"
            );
            eprintln!("[raylet] actor {} is dead: {death}", placed.spec.id);
            self.bury(st, placed, death);
            return;
        }
        let PlacedActor {
            job,
            owner_conn,
            mut spec,
            restarts,
            ..
        } = placed;
        spec.restarts = restarts + 1;
        eprintln!(
            "[raylet] actor {} ({}) lost with node {gone}; starting it again (restart {})",
            spec.id, spec.class, spec.restarts
        );
        Self::forget_remote_name(st, &spec);
        if !Self::available(st).contains(&spec.resources) {
            if let Some(target) = self.pick_peer(st, &spec.resources, Some(gone)) {
                if let Some(link) = self.link.get() {
                    Self::note_placed(st, target, job, owner_conn, &spec);
                    let forward = Forward::CreateActor {
                        conn: 0,
                        req: 0,
                        spec,
                    };
                    link.forward(job, target, forward);
                    return;
                }
            }
        }
        Self::add_actor(st, spec, owner_conn, job);
    }

    /// Drops the name of an actor this node placed elsewhere (if that actor still has it).
    fn forget_remote_name(st: &mut State, spec: &ActorSpec) {
        let key = (spec.namespace.clone(), spec.name.clone());
        if st.remote_names.get(&key) == Some(&spec.id) {
            st.remote_names.remove(&key);
        }
    }

    /// Records that this node placed actor `spec` on node `target`.
    fn note_placed(st: &mut State, target: u16, job: JobId, owner_conn: u64, spec: &ActorSpec) {
        if !spec.name.is_empty() {
            let key = (spec.namespace.clone(), spec.name.clone());
            st.remote_names.insert(key, spec.id);
        }
        st.remote_actors.insert(
            spec.id,
            PlacedActor {
                node: target,
                job,
                owner_conn,
                spec: spec.clone(),
                restarts: spec.restarts,
            },
        );
    }

    /// A hosting node answered about an actor this node placed there: keep its restart count
    /// (it counts the restarts it did itself); a dead one is recorded here, so that losing that
    /// node later does not bring it back.
    pub(crate) fn placed_actor_seen(&self, info: &ActorInfo) {
        let mut st = self.lock();
        if info.state == ActorState::Dead {
            if let Some(mut placed) = st.remote_actors.remove(&info.id) {
                placed.restarts = info.restarts;
                self.bury(&mut st, placed, info.death.clone());
            }
        } else if let Some(p) = st.remote_actors.get_mut(&info.id) {
            p.restarts = p.restarts.max(info.restarts);
        }
    }

    /// Records an actor this node placed elsewhere as dead in its own table, so that questions
    /// about it get the cause.
    fn bury(&self, st: &mut State, placed: PlacedActor, death: String) {
        let PlacedActor {
            job,
            owner_conn,
            mut spec,
            restarts,
            ..
        } = placed;
        let id = spec.id;
        Self::forget_remote_name(st, &spec);
        if !spec.name.is_empty() {
            if let Some(link) = self.link.get() {
                link.release_name(spec.namespace.clone(), spec.name.clone(), id);
            }
        }
        spec.name.clear();
        let mut entry = ActorEntry::new(spec, owner_conn, job);
        entry.state = ActorState::Dead;
        entry.restarts = restarts;
        entry.death = death;
        st.actors.insert(id, entry);
        Self::notify_actor(st, id);
    }

    /// Where to ask about actor `id`: `Some(node)` when another node knows, `None` when this
    /// node's own table answers.
    pub(crate) fn actor_location(&self, id: ActorId) -> Option<u16> {
        let st = self.lock();
        if st.actors.contains_key(&id) {
            return None;
        }
        self.actor_home(&st, id)
    }

    /// Creates an actor for client `conn_id`: here, or on a node with room (for a local owner).
    /// In a cluster a named actor's name is claimed at the head first (`claimed` once done).
    pub(crate) fn create_actor(&self, conn_id: u64, req: u64, spec: ActorSpec, claimed: bool) {
        let mut st = self.lock();
        let Some((job, kind)) = st.clients.get(&conn_id).map(|c| (c.job, c.kind)) else {
            return;
        };
        let reply = |st: &State, msg: FromRaylet| {
            if let Some(c) = st.clients.get(&conn_id) {
                send(&c.conn, &msg);
            }
        };
        if !spec.name.is_empty() {
            let key = (spec.namespace.clone(), spec.name.clone());
            let here = st
                .actor_names
                .get(&key)
                .and_then(|a| st.actors.get(a))
                .is_some_and(|other| other.state != ActorState::Dead);
            if here || (kind != ClientKind::Remote && st.remote_names.contains_key(&key)) {
                let message = format!(
                    "an actor named {:?} already exists in namespace {:?}; pick another name \
                     or get it with get_actor",
                    spec.name, spec.namespace
                );
                let kind = ErrorKind::BadRequest;
                reply(&st, FromRaylet::Error { req, kind, message });
                return;
            }
            if kind != ClientKind::Remote && !claimed {
                if let Some(link) = self.link.get() {
                    drop(st);
                    link.claim_then_create(conn_id, req, spec);
                    return;
                }
            }
        }
        if kind != ClientKind::Remote && !Self::available(&st).contains(&spec.resources) {
            if let Some(target) = self.pick_peer(&mut st, &spec.resources, None) {
                if let Some(link) = self.link.get() {
                    Self::note_placed(&mut st, target, job, conn_id, &spec);
                    let forward = Forward::CreateActor {
                        conn: conn_id,
                        req,
                        spec,
                    };
                    link.forward(job, target, forward);
                    return;
                }
            }
        }
        Self::add_actor(&mut st, spec, conn_id, job);
        reply(&st, FromRaylet::ActorCreated { req });
        self.schedule(&mut st);
    }

    /// Adds an actor to this node's table, waiting for resources (restarting when its spec says
    /// it ran before), and takes its name.
    fn add_actor(st: &mut State, spec: ActorSpec, owner_conn: u64, job: JobId) {
        let id = spec.id;
        if !spec.name.is_empty() {
            st.actor_names
                .insert((spec.namespace.clone(), spec.name.clone()), id);
        }
        st.actors.insert(id, ActorEntry::new(spec, owner_conn, job));
        st.pending_actors.push_back(id);
    }

    /// Answers a client's `GetActor`: from this node's table (parking the request while the
    /// actor starts, with `wait_alive`), or by asking the node that knows.
    pub(crate) fn get_actor(
        &self,
        conn_id: u64,
        req: u64,
        id: Option<ActorId>,
        name: &str,
        namespace: &str,
        wait_alive: bool,
    ) {
        let mut st = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let found = match id {
            Some(id) => Some(id),
            None => st.actor_names.get(&key).copied().filter(|a| {
                st.actors
                    .get(a)
                    .is_some_and(|e| e.state != ActorState::Dead)
            }),
        };
        let elsewhere = match found {
            Some(a) if !st.actors.contains_key(&a) => Some(a),
            None if id.is_none() => st.remote_names.get(&key).copied(),
            _ => None,
        };
        if let (Some(a), Some(link)) = (elsewhere, self.link.get()) {
            if let Some(index) = self.actor_home(&st, a) {
                link.query_actor(conn_id, req, index, a, wait_alive, None);
                return;
            }
        }
        if found.is_none() && elsewhere.is_none() && id.is_none() {
            if let Some(link) = self.link.get() {
                drop(st);
                link.lookup_name(
                    conn_id,
                    req,
                    namespace.to_owned(),
                    name.to_owned(),
                    wait_alive,
                );
                return;
            }
        }
        let reply = match found.and_then(|a| st.actors.get(&a)) {
            None => FromRaylet::Error {
                req,
                kind: ErrorKind::BadRequest,
                message: match id {
                    Some(id) => format!("no actor with id {id} on this node"),
                    None => format!("no live actor named {name:?} in namespace {namespace:?}"),
                },
            },
            Some(entry)
                if wait_alive
                    && matches!(entry.state, ActorState::Pending | ActorState::Restarting) =>
            {
                let aid = entry.spec.id;
                st.actor_waiters
                    .entry(aid)
                    .or_default()
                    .push((conn_id, req));
                return;
            }
            Some(entry) => FromRaylet::Actor {
                req,
                info: entry.info(),
            },
        };
        if let Some(c) = st.clients.get(&conn_id) {
            send(&c.conn, &reply);
        }
    }

    /// The node that knows where actor `id` (not in this node's table) runs: where this node
    /// placed it, or the node that registered it.
    fn actor_home(&self, st: &State, id: ActorId) -> Option<u16> {
        if let Some(p) = st.remote_actors.get(&id) {
            return Some(p.node);
        }
        let home = id.node_index();
        (home != 0 && home != self.index()).then_some(home)
    }

    /// Answers a peer's question about an actor: from this node's table (killing it first when
    /// asked), or `Err(index)` naming the node this node placed it on.
    pub(crate) fn actor_for_peer(
        &self,
        id: ActorId,
        kill: Option<bool>,
    ) -> Result<Option<ActorInfo>, u16> {
        let mut st = self.lock();
        if !st.actors.contains_key(&id) {
            return match st.remote_actors.get(&id) {
                Some(p) => Err(p.node),
                None => Ok(None),
            };
        }
        if let Some(restart) = kill {
            let cause = (!restart).then(|| "killed by oxray::kill".to_string());
            self.actor_process_lost(&mut st, id, cause, true);
            self.schedule(&mut st);
        }
        Ok(st.actors.get(&id).map(ActorEntry::info))
    }

    /// A pull for a client's pin ended: pin the copy, or report why there is none.
    pub(crate) fn pin_pulled(&self, conn: u64, req: u64, id: ObjectId, error: Option<&str>) {
        let reply = match error {
            None => match self.store.pin_for(ClientId(conn), id) {
                Ok(loc) => FromRaylet::Pinned {
                    req,
                    block: loc.block,
                },
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection: returns its number.
    pub(crate) fn next_conn(&self) -> u64 {
        let mut st = self.lock();
        st.next_conn += 1;
        st.next_conn
    }

    /// Handles the first message of a connection, which must be `Register`. Returns false (drop
    /// the connection) otherwise.
    pub(crate) fn register(&self, conn_id: u64, conn: &Conn, msg: ToRaylet) -> bool {
        let ToRaylet::Register {
            mut worker,
            pid,
            kind,
            exe,
            listen,
            namespace,
        } = msg
        else {
            eprintln!("[raylet] connection {conn_id}: first message was not Register; dropped");
            return false;
        };
        let mut st = self.lock();
        if kind != ClientKind::Worker {
            // Its objects' ids then name this node.
            worker = worker.with_node(self.index());
        }
        let job = match kind {
            ClientKind::Driver | ClientKind::Remote => {
                let job = JobId(st.next_job);
                st.next_job += 1;
                // `/proc/<pid>/exe` names nothing once the driver exits: keep the real name.
                let program = std::fs::read_link(&exe)
                    .ok()
                    .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .unwrap_or_default();
                st.jobs.insert(
                    job,
                    Job {
                        exe,
                        program,
                        namespace,
                        driver: Some(conn_id),
                        remote: kind == ClientKind::Remote,
                        failed_starts: 0,
                    },
                );
                job
            }
            ClientKind::Tool => JobId(0),
            ClientKind::Worker => {
                let Some(w) = st.workers.get_mut(&worker) else {
                    eprintln!("[raylet] unknown worker {worker} (pid {pid}) registered; dropped");
                    return false;
                };
                w.state = if w.actor.is_some() {
                    WorkerState::Actor
                } else {
                    WorkerState::Idle
                };
                w.address = listen;
                w.conn = Some(conn_id);
                let job = w.job;
                if let Some(j) = st.jobs.get_mut(&job) {
                    j.failed_starts = 0;
                }
                job
            }
        };
        st.clients.insert(
            conn_id,
            Client {
                conn: conn.clone(),
                kind,
                worker,
                job,
            },
        );
        send(
            conn,
            &FromRaylet::Registered {
                node: self.id(),
                node_index: self.index(),
                worker,
                job,
                arena: self.store.arena_path().display().to_string(),
                session: self.config.session.clone(),
                resources: st.total.clone(),
                namespace: st
                    .jobs
                    .get(&job)
                    .map(|j| j.namespace.clone())
                    .unwrap_or_default(),
            },
        );
        if kind == ClientKind::Driver {
            let n = self.config.prestart_workers;
            for _ in 0..n {
                self.spawn_worker(&mut st, job);
            }
        }
        if kind == ClientKind::Worker {
            let actor = st.workers.get(&worker).and_then(|w| w.actor);
            if let Some(a) = actor.and_then(|a| st.actors.get(&a)) {
                send(
                    conn,
                    &FromRaylet::StartActor {
                        spec: a.spec.clone(),
                        restarts: a.restarts,
                    },
                );
            }
        }
        self.schedule(&mut st);
        true
    }

    /// Handles one message from a registered client.
    pub(crate) fn handle(&self, conn_id: u64, conn: &Conn, msg: ToRaylet) {
        let client = ClientId(conn_id);
        let reply_err = |req: u64, e: StoreError| {
            let kind = match e {
                StoreError::ObjectStoreFull { .. } => ErrorKind::ObjectStoreFull,
                StoreError::ObjectTooLarge { .. } => ErrorKind::ObjectTooLarge,
                StoreError::ObjectNotFound(_) => ErrorKind::ObjectNotFound,
                _ => ErrorKind::BadRequest,
            };
            send(
                conn,
                &FromRaylet::Error {
                    req,
                    kind,
                    message: e.to_string(),
                },
            );
        };
        match msg {
            ToRaylet::Register { .. } => {
                send(
                    conn,
                    &FromRaylet::Error {
                        req: 0,
                        kind: ErrorKind::BadRequest,
                        message: "already registered".into(),
                    },
                );
            }
            ToRaylet::Tunnel { .. } => {
                send(
                    conn,
                    &FromRaylet::Error {
                        req: 0,
                        kind: ErrorKind::BadRequest,
                        message: "Tunnel must be the first message of a connection".into(),
                    },
                );
            }
            ToRaylet::WorkerAddress { req, worker } => {
                let reply = match self.worker_address(worker) {
                    Ok(address) => FromRaylet::Address { req, address },
                    Err(message) => FromRaylet::Error {
                        req,
                        kind: ErrorKind::ObjectNotFound,
                        message,
                    },
                };
                send(conn, &reply);
            }
            ToRaylet::RequestLease {
                req,
                resources,
                near,
            } => {
                let mut st = self.lock();
                let Some((job, kind)) = st.clients.get(&conn_id).map(|c| (c.job, c.kind)) else {
                    return;
                };
                if !st.total.contains(&resources) && self.link.get().is_none() {
                    eprintln!(
                        "[raylet] a task needs {resources} but this node has {}: it waits until \
                         a node with those resources joins (see `oxray status`)",
                        st.total
                    );
                }
                st.pending.push_back(LeaseRequest {
                    req,
                    conn: conn_id,
                    job,
                    resources,
                    spill: kind != ClientKind::Remote,
                    near,
                });
                self.schedule(&mut st);
            }
            ToRaylet::ReturnLease { lease } if lease & REMOTE_LEASE != 0 => {
                let mut st = self.lock();
                let job = st.clients.get(&conn_id).map(|c| c.job);
                st.remote_leases.remove(&lease);
                drop(st);
                if let (Some(link), Some(job)) = (self.link.get(), job) {
                    let (index, lease) = crate::cluster::split_remote_lease(lease);
                    link.forward(job, index, Forward::ReturnLease { lease });
                }
            }
            ToRaylet::ReturnLease { lease } => {
                let mut st = self.lock();
                if let Some(l) = st.leases.remove(&lease) {
                    if let Some(w) = st.workers.get_mut(&l.worker) {
                        if w.state == WorkerState::Leased(lease) {
                            w.state = WorkerState::Idle;
                        }
                    }
                }
                self.schedule(&mut st);
            }
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
                match self.store.create_for(client, id, len, opts) {
                    Ok(loc) => send(
                        conn,
                        &FromRaylet::Created {
                            req,
                            block: loc.block,
                            existed: false,
                        },
                    ),
                    Err(StoreError::ObjectExists(_)) => match self.store.info(id) {
                        Some(info) if info.sealed => send(
                            conn,
                            &FromRaylet::Created {
                                req,
                                block: info.location.block,
                                existed: true,
                            },
                        ),
                        _ => reply_err(req, StoreError::ObjectExists(id)),
                    },
                    Err(e) => reply_err(req, e),
                }
            }
            ToRaylet::Seal { req, id } => match self.store.seal(id) {
                Ok(_) => send(conn, &FromRaylet::Sealed { req }),
                Err(e) => reply_err(req, e),
            },
            ToRaylet::Pin { req, id, node } => match self.store.pin_for(client, id) {
                Ok(loc) => send(
                    conn,
                    &FromRaylet::Pinned {
                        req,
                        block: loc.block,
                    },
                ),
                // Not here, or being pulled here right now: (join the) pull.
                Err(StoreError::ObjectNotFound(_) | StoreError::NotSealed(_))
                    if node != 0 && node != self.index() =>
                {
                    match self.link.get() {
                        Some(link) => link.pull(id, node, conn_id, req),
                        None => reply_err(req, StoreError::ObjectNotFound(id)),
                    }
                }
                Err(e) => reply_err(req, e),
            },
            ToRaylet::Release { id } => {
                let _ = self.store.release_for(client, id);
            }
            ToRaylet::Delete { ids, node } => match self.link.get() {
                Some(link) => link.delete(ids, node),
                None => {
                    for id in ids {
                        let _ = self.store.delete(id);
                    }
                }
            },
            ToRaylet::Blocked | ToRaylet::Unblocked => {
                let blocked = matches!(msg, ToRaylet::Blocked);
                let mut st = self.lock();
                let Some(worker) = st.clients.get(&conn_id).map(|c| c.worker) else {
                    return;
                };
                if let Some(l) = st.leases.values_mut().find(|l| l.worker == worker) {
                    l.blocked = blocked;
                }
                if blocked {
                    self.schedule(&mut st);
                }
            }
            ToRaylet::Status { req } => {
                let status = self.status();
                send(conn, &FromRaylet::Status { req, status });
            }
            ToRaylet::CreateActor { req, spec } => self.create_actor(conn_id, req, spec, false),
            ToRaylet::GetActor {
                req,
                id,
                name,
                namespace,
                wait_alive,
            } => self.get_actor(conn_id, req, id, &name, &namespace, wait_alive),
            ToRaylet::KillActor { req, id, restart } => {
                let mut st = self.lock();
                if !st.actors.contains_key(&id) {
                    if let (Some(index), Some(link)) = (self.actor_home(&st, id), self.link.get()) {
                        link.query_actor(conn_id, req, index, id, false, Some(restart));
                        return;
                    }
                }
                let cause = if restart {
                    None
                } else {
                    Some("killed by oxray::kill".to_string())
                };
                self.actor_process_lost(&mut st, id, cause, true);
                self.schedule(&mut st);
                match st.actors.get(&id) {
                    Some(a) => send(
                        conn,
                        &FromRaylet::Actor {
                            req,
                            info: a.info(),
                        },
                    ),
                    None => send(
                        conn,
                        &FromRaylet::Error {
                            req,
                            kind: ErrorKind::BadRequest,
                            message: format!("no actor with id {id}"),
                        },
                    ),
                }
            }
            ToRaylet::ActorReady { id } => {
                let mut st = self.lock();
                let Some(worker) = st.clients.get(&conn_id).map(|c| c.worker) else {
                    return;
                };
                let (address, pid) = st
                    .workers
                    .get(&worker)
                    .map(|w| (w.address.clone(), w.pid))
                    .unwrap_or_default();
                if let Some(a) = st.actors.get_mut(&id) {
                    if a.worker == Some(worker) {
                        a.state = ActorState::Alive;
                        a.address = address;
                        a.pid = pid;
                    }
                }
                Self::notify_actor(&mut st, id);
            }
            ToRaylet::ActorFailed { id, message } => {
                let mut st = self.lock();
                self.actor_process_lost(
                    &mut st,
                    id,
                    Some(format!("its constructor failed: {message}")),
                    true,
                );
                self.schedule(&mut st);
            }
            ToRaylet::ActorExiting { id } => {
                let mut st = self.lock();
                if let Some(a) = st.actors.get_mut(&id) {
                    a.exiting = true;
                }
            }
            ToRaylet::Stop { req } => {
                send(conn, &FromRaylet::Sealed { req });
                self.stop();
            }
        }
    }

    /// A client's connection closed: release everything it held.
    pub(crate) fn disconnect(&self, conn_id: u64) {
        let (pins, aborted) = self.store.disconnect(ClientId(conn_id));
        let mut st = self.lock();
        let Some(client) = st.clients.remove(&conn_id) else {
            return;
        };
        if pins + aborted > 0 {
            eprintln!(
                "[raylet] client {} left holding {pins} pins and {aborted} unsealed objects; freed",
                client.worker
            );
        }
        // Objects the client owned can never be read again, here or on other nodes (results of
        // its tasks that ran there).
        self.delete_owned_by(client.worker);
        if matches!(client.kind, ClientKind::Driver | ClientKind::Worker) {
            if let Some(link) = self.link.get() {
                link.owner_gone(client.worker);
            }
        }
        // Its lease requests go away; workers leased to it are killed, as in Ray: they may be
        // running its tasks, whose results nobody will collect.
        st.pending.retain(|r| r.conn != conn_id);
        let remote: Vec<u64> = st
            .remote_leases
            .iter()
            .filter(|(_, holder)| **holder == conn_id)
            .map(|(lease, _)| *lease)
            .collect();
        for lease in remote {
            st.remote_leases.remove(&lease);
            if let Some(link) = self.link.get() {
                let (index, lease) = crate::cluster::split_remote_lease(lease);
                link.forward(client.job, index, Forward::ReturnLease { lease });
            }
        }
        let held: Vec<u64> = st
            .leases
            .iter()
            .filter(|(_, l)| l.holder == conn_id)
            .map(|(id, _)| *id)
            .collect();
        for lease in held {
            if let Some(l) = st.leases.remove(&lease) {
                Self::kill_worker(&mut st, l.worker);
            }
        }
        // Non-detached actors die with their owner.
        let owned: Vec<ActorId> = st
            .actors
            .values()
            .filter(|a| a.owner_conn == conn_id && !a.spec.detached && a.state != ActorState::Dead)
            .map(|a| a.spec.id)
            .collect();
        for id in owned {
            self.actor_process_lost(&mut st, id, Some("its owner exited".into()), true);
        }
        st.actor_waiters
            .values_mut()
            .for_each(|w| w.retain(|(c, _)| *c != conn_id));
        match client.kind {
            ClientKind::Worker => {
                let hosted = st.workers.get(&client.worker).and_then(|w| w.actor);
                if let Some(actor) = hosted {
                    if st
                        .actors
                        .get(&actor)
                        .is_some_and(|a| a.worker == Some(client.worker))
                    {
                        self.actor_process_lost(&mut st, actor, None, true);
                    }
                }
                // Its own lease (if it was leased) ends; the holder sees the socket close.
                st.leases.retain(|_, l| l.worker != client.worker);
                Self::kill_worker(&mut st, client.worker);
            }
            ClientKind::Tool => {}
            ClientKind::Driver | ClientKind::Remote => {
                // The job ends: its workers go, here and on the nodes it spilled work to.
                let job = client.job;
                if client.kind == ClientKind::Driver {
                    if let Some(link) = self.link.get() {
                        link.job_ended(job);
                    }
                    st.remote_actors.retain(|_, p| p.job != job);
                }
                let ids: Vec<WorkerId> = st
                    .workers
                    .iter()
                    .filter(|(_, w)| w.job == job && w.actor.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    Self::kill_worker(&mut st, id);
                }
                st.leases.retain(|_, l| l.holder != conn_id);
                // Keep the job's executable known while detached actors of it live (restarts).
                let detached_alive = st
                    .actors
                    .values()
                    .any(|a| a.owner_job == job && a.state != ActorState::Dead);
                if detached_alive {
                    if let Some(j) = st.jobs.get_mut(&job) {
                        j.driver = None;
                    }
                } else {
                    st.jobs.remove(&job);
                }
            }
        }
        self.schedule(&mut st);
    }

    /// An actor's process is gone or must go. With `death`, the actor is dead for good;
    /// without, it restarts if its `max_restarts` allows. With `kill`, its process is killed.
    fn actor_process_lost(&self, st: &mut State, id: ActorId, death: Option<String>, kill: bool) {
        let Some(a) = st.actors.get_mut(&id) else {
            return;
        };
        if a.state == ActorState::Dead {
            return;
        }
        let worker = a.worker.take();
        let lease = a.lease.take();
        a.address.clear();
        a.pid = 0;
        let death = death.or_else(|| {
            if a.exiting {
                Some("it called exit_actor()".into())
            } else if a.spec.max_restarts >= 0 && i64::from(a.restarts) >= a.spec.max_restarts {
                Some(format!(
                    "its process died and max_restarts ({}) is exhausted",
                    a.spec.max_restarts
                ))
            } else {
                None
            }
        });
        match death {
            Some(cause) => {
                a.state = ActorState::Dead;
                a.death = cause;
                let key = (a.spec.namespace.clone(), a.spec.name.clone());
                if st.actor_names.get(&key) == Some(&id) {
                    st.actor_names.remove(&key);
                }
                if !key.1.is_empty() {
                    if let Some(link) = self.link.get() {
                        link.release_name(key.0, key.1, id);
                    }
                }
            }
            None => {
                a.restarts += 1;
                a.state = ActorState::Restarting;
                st.pending_actors.push_back(id);
            }
        }
        if let Some(l) = lease {
            st.leases.remove(&l);
        }
        if let Some(w) = worker {
            if kill {
                Self::kill_worker(st, w);
            } else {
                st.workers.remove(&w);
            }
        }
        Self::notify_actor(st, id);
    }

    /// Answers `GetActor { wait_alive }` requests once the actor is alive or dead.
    fn notify_actor(st: &mut State, id: ActorId) {
        let Some(a) = st.actors.get(&id) else {
            return;
        };
        if matches!(a.state, ActorState::Pending | ActorState::Restarting) {
            return;
        }
        let info = a.info();
        for (conn, req) in st.actor_waiters.remove(&id).unwrap_or_default() {
            if let Some(c) = st.clients.get(&conn) {
                send(
                    &c.conn,
                    &FromRaylet::Actor {
                        req,
                        info: info.clone(),
                    },
                );
            }
        }
    }

    /// Frees the objects `owner` owned in this store, and the copies other nodes pulled.
    pub(crate) fn delete_owned_by(&self, owner: WorkerId) {
        let owned: Vec<ObjectId> = self
            .store
            .object_ids()
            .into_iter()
            .filter(|id| owner_of(*id) == owner)
            .collect();
        match self.link.get() {
            // Copies other nodes pulled go too.
            Some(link) => link.delete(owned, 0),
            None => {
                for id in owned {
                    let _ = self.store.delete(id);
                }
            }
        }
    }

    fn kill_worker(st: &mut State, id: WorkerId) {
        if let Some(mut w) = st.workers.remove(&id) {
            if let Some(child) = w.child.as_mut() {
                let _ = child.kill();
                workers::reap_later(w.child.take());
            }
            if let Some(conn) = w.conn {
                if let Some(c) = st.clients.get(&conn) {
                    let s = c.conn.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }

    /// Resources not held by an active (unblocked) lease.
    fn available(st: &State) -> Resources {
        let mut a = st.total.clone();
        for l in st.leases.values().filter(|l| !l.blocked) {
            a.subtract(&l.resources);
        }
        a
    }

    /// Grants what can be granted, and starts workers for requests that have resources but no
    /// idle worker.
    fn schedule(&self, st: &mut State) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        let mut available = Self::available(st);
        let mut wanted: HashMap<JobId, usize> = HashMap::new();
        let mut i = 0;
        while i < st.pending.len() {
            let r = &st.pending[i];
            let (spill, near, fits) = (r.spill, r.near, available.contains(&r.resources));
            let wants_near = spill && near != 0 && near != self.index();
            // Locality first (the node holding the work's arguments, if it has room), then this
            // node, then any node with room.
            let target = if wants_near || (spill && !fits) {
                let resources = r.resources.clone();
                if wants_near && self.peer_has_room(st, near, &resources) {
                    Some(near)
                } else if fits {
                    None
                } else {
                    self.pick_peer(st, &resources, None)
                }
            } else {
                None
            };
            if let Some(target) = target {
                if let (Some(r), Some(link)) = (st.pending.remove(i), self.link.get()) {
                    let forward = Forward::Lease {
                        conn: r.conn,
                        req: r.req,
                        resources: r.resources,
                    };
                    link.forward(r.job, target, forward);
                }
                continue;
            }
            if !fits {
                i += 1;
                continue;
            }
            let job = st.pending[i].job;
            let idle = st
                .workers
                .iter()
                .find(|(_, w)| w.job == job && w.state == WorkerState::Idle)
                .map(|(id, _)| *id);
            let Some(worker) = idle else {
                *wanted.entry(job).or_default() += 1;
                available.subtract(&st.pending[i].resources);
                i += 1;
                continue;
            };
            let Some(r) = st.pending.remove(i) else {
                break;
            };
            available.subtract(&r.resources);
            let lease = st.next_lease;
            st.next_lease += 1;
            let Some(w) = st.workers.get_mut(&worker) else {
                continue;
            };
            w.state = WorkerState::Leased(lease);
            let (address, pid) = (w.address.clone(), w.pid);
            st.leases.insert(
                lease,
                Lease {
                    worker,
                    holder: r.conn,
                    resources: r.resources,
                    blocked: false,
                },
            );
            if let Some(c) = st.clients.get(&r.conn) {
                send(
                    &c.conn,
                    &FromRaylet::LeaseGranted {
                        req: r.req,
                        lease,
                        worker,
                        address,
                        pid,
                    },
                );
            }
        }
        let mut i = 0;
        while i < st.pending_actors.len() {
            let id = st.pending_actors[i];
            let Some(a) = st.actors.get(&id) else {
                st.pending_actors.remove(i);
                continue;
            };
            if !available.contains(&a.spec.resources) {
                i += 1;
                continue;
            }
            let (job, resources) = (a.owner_job, a.spec.resources.clone());
            let Some(worker) = self.spawn_worker_for(st, job, Some(id)) else {
                st.pending_actors.remove(i);
                self.actor_process_lost(
                    st,
                    id,
                    Some("its worker process could not be started (see the raylet's log)".into()),
                    false,
                );
                continue;
            };
            st.pending_actors.remove(i);
            available.subtract(&resources);
            let lease = st.next_lease;
            st.next_lease += 1;
            st.leases.insert(
                lease,
                Lease {
                    worker,
                    holder: 0,
                    resources,
                    blocked: false,
                },
            );
            if let Some(a) = st.actors.get_mut(&id) {
                a.worker = Some(worker);
                a.lease = Some(lease);
            }
        }
        for (job, want) in wanted {
            let starting = st
                .workers
                .values()
                .filter(|w| w.job == job && w.state == WorkerState::Starting)
                .count();
            for _ in starting..want {
                self.spawn_worker(st, job);
            }
        }
    }

    /// What node `n` showed free in the last view, less what was sent there since.
    fn room(st: &State, n: &NodeInfo) -> Resources {
        let mut room = n.load.available.clone();
        if let Some(sent) = st.spilled.get(&n.index) {
            room.subtract(sent);
        }
        room
    }

    /// Whether node `index` showed `resources` free in the last view (less what was sent there
    /// since); if so they count as sent.
    fn peer_has_room(&self, st: &mut State, index: u16, resources: &Resources) -> bool {
        if self.link.get().is_none() {
            return false;
        }
        let view = self.cluster_view.lock().unwrap_or_else(|p| p.into_inner());
        let Some(n) = view.nodes.iter().find(|n| n.index == index && n.alive) else {
            return false;
        };
        let room = Self::room(st, n);
        drop(view);
        if !room.contains(resources) {
            return false;
        }
        st.spilled.entry(index).or_default().add(resources);
        true
    }

    /// Another node to send work needing `resources` to: the live node with the most free CPUs
    /// that has them free now (counting what was already sent since the last view), else one
    /// that has them at all when this node never will; never `avoid`. `None` keeps the work here.
    fn pick_peer(&self, st: &mut State, resources: &Resources, avoid: Option<u16>) -> Option<u16> {
        self.link.get()?;
        let me = self.index();
        let view = self.cluster_view.lock().unwrap_or_else(|p| p.into_inner());
        let peers = || {
            view.nodes
                .iter()
                .filter(move |n| n.alive && n.index != 0 && n.index != me && Some(n.index) != avoid)
        };
        let free = peers()
            .filter_map(|n| {
                let room = Self::room(st, n);
                room.contains(resources)
                    .then(|| (n.index, room.get(oxray_common::resources::CPU)))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(index, _)| index);
        let target = free.or_else(|| {
            if st.total.contains(resources) {
                return None;
            }
            peers()
                .find(|n| n.total.contains(resources))
                .map(|n| n.index)
        })?;
        drop(view);
        st.spilled.entry(target).or_default().add(resources);
        Some(target)
    }

    fn spawn_worker(&self, st: &mut State, job: JobId) {
        self.spawn_worker_for(st, job, None);
    }

    fn spawn_worker_for(
        &self,
        st: &mut State,
        job: JobId,
        actor: Option<ActorId>,
    ) -> Option<WorkerId> {
        let j = st.jobs.get(&job)?;
        if j.failed_starts >= MAX_FAILED_STARTS {
            return None;
        }
        let exe = j.exe.clone();
        let driver = j
            .driver
            .and_then(|c| st.clients.get(&c))
            .map(|c| c.conn.clone());
        let id = WorkerId::on_node(self.index());
        match workers::spawn(self, &exe, id, driver) {
            Ok(child) => {
                st.workers.insert(
                    id,
                    Worker {
                        pid: child.id(),
                        job,
                        state: WorkerState::Starting,
                        address: String::new(),
                        conn: None,
                        child: Some(child),
                        actor,
                    },
                );
                Some(id)
            }
            Err(e) => {
                self.worker_start_failed(st, job, &format!("starting {exe}: {e}"));
                None
            }
        }
    }

    /// A worker could not start: count it, and after too many in a row fail the job's waiting
    /// lease requests with the reason instead of retrying forever.
    fn worker_start_failed(&self, st: &mut State, job: JobId, why: &str) {
        let Some(j) = st.jobs.get_mut(&job) else {
            return;
        };
        j.failed_starts += 1;
        eprintln!("[raylet] worker for job {job} failed to start: {why}");
        if j.failed_starts < MAX_FAILED_STARTS {
            return;
        }
        let message = format!(
            "workers for this job keep failing to start ({} times in a row); last: {why}",
            j.failed_starts
        );
        let mut failed = Vec::new();
        let mut keep = VecDeque::new();
        for r in st.pending.drain(..) {
            if r.job == job {
                failed.push(r);
            } else {
                keep.push_back(r);
            }
        }
        st.pending = keep;
        for r in failed {
            if let Some(c) = st.clients.get(&r.conn) {
                send(
                    &c.conn,
                    &FromRaylet::Error {
                        req: r.req,
                        kind: ErrorKind::BadRequest,
                        message: message.clone(),
                    },
                );
            }
        }
    }

    /// Checks for workers that exited before registering. Called periodically.
    pub(crate) fn reap_starting(&self) {
        let mut st = self.lock();
        let mut dead = Vec::new();
        for (id, w) in st.workers.iter_mut() {
            if w.state != WorkerState::Starting {
                continue;
            }
            if let Some(child) = w.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    dead.push((*id, w.job, status));
                }
            }
        }
        for (id, job, status) in dead {
            let actor = st.workers.get(&id).and_then(|w| w.actor);
            if let Some(actor) = actor {
                self.actor_process_lost(&mut st, actor, None, false);
            }
            st.workers.remove(&id);
            self.worker_start_failed(&mut st, job, &format!("it exited with {status}"));
        }
        if !st.pending.is_empty() {
            self.schedule(&mut st);
        }
    }

    /// Makes the raylet stop serving (its `wait` returns).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        crate::server::wake_acceptor(&self.address);
    }

    /// What this node reports to the head every health-check period.
    pub(crate) fn load(&self) -> NodeLoad {
        let stats = self.store.stats();
        let st = self.lock();
        NodeLoad {
            available: Self::available(&st),
            store_capacity: stats.capacity,
            store_used: stats.used,
            store_objects: stats.objects,
            workers: st.workers.len() as u32,
            actors: st
                .actors
                .values()
                .filter(|a| a.state != ActorState::Dead)
                .count() as u32,
            pending: st.pending.len() as u32,
            jobs: st
                .jobs
                .iter()
                .filter(|(_, j)| !j.remote)
                .map(|(id, j)| JobSummary {
                    job: *id,
                    driver: j.driver.is_some(),
                    namespace: j.namespace.clone(),
                    program: j.program.clone(),
                    workers: st.workers.values().filter(|w| w.job == *id).count() as u32,
                })
                .collect(),
        }
    }

    /// The cluster as last heard from the head.
    pub(crate) fn cluster_view(&self) -> ClusterView {
        self.cluster_view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the cluster view; work waiting here may now fit elsewhere.
    pub(crate) fn set_cluster_view(&self, view: ClusterView) {
        let id = self.id();
        if let Some(me) = view.nodes.iter().find(|n| n.id == id) {
            self.index.store(me.index, Ordering::Relaxed);
        }
        let old = std::mem::replace(
            &mut *self.cluster_view.lock().unwrap_or_else(|p| p.into_inner()),
            view.clone(),
        );
        if let Some(link) = self.link.get() {
            // A node declared dead: drop its connection now, so work waiting on it (tunnels,
            // attached jobs, pulls) fails over at once instead of after QUIC's idle timeout.
            for n in view.nodes.iter().filter(|n| !n.alive && n.id != id) {
                if old.nodes.iter().any(|o| o.id == n.id && o.alive) {
                    link.node_died(&n.peer_address);
                }
            }
        }
        let mut st = self.lock();
        st.spilled.clear();
        if !st.pending.is_empty() {
            self.schedule(&mut st);
        }
    }

    /// The node's state.
    pub(crate) fn status(&self) -> NodeStatus {
        let stats = self.store.stats();
        let st = self.lock();
        let workers = st
            .workers
            .iter()
            .map(|(id, w)| WorkerStatus {
                worker: *id,
                pid: w.pid,
                state: match w.state {
                    WorkerState::Starting => "starting".into(),
                    WorkerState::Idle => "idle".into(),
                    WorkerState::Actor => "actor".into(),
                    WorkerState::Leased(l) => match st.leases.get(&l) {
                        Some(lease) if lease.blocked => "blocked".into(),
                        _ => "leased".into(),
                    },
                },
                job: w.job,
            })
            .collect();
        let pending = st
            .pending
            .iter()
            .map(|r| PendingLease {
                resources: r.resources.clone(),
                infeasible: !st.total.contains(&r.resources),
            })
            .collect();
        NodeStatus {
            node: self.id(),
            pid: std::process::id(),
            address: self.address.clone(),
            total: st.total.clone(),
            available: Self::available(&st),
            store_capacity: stats.capacity,
            store_used: stats.used,
            store_objects: stats.objects,
            workers,
            pending,
            drivers: st
                .clients
                .values()
                .filter(|c| c.kind == ClientKind::Driver)
                .count() as u32,
            actors: st.actors.values().map(ActorEntry::info).collect(),
            cluster: self.cluster_view(),
        }
    }

    /// Kills every worker (shutdown).
    pub(crate) fn kill_all_workers(&self) {
        let mut st = self.lock();
        let ids: Vec<WorkerId> = st.workers.keys().copied().collect();
        for id in ids {
            if let Some(mut w) = st.workers.remove(&id) {
                if let Some(mut child) = w.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        for c in st.clients.values() {
            let s = c.conn.lock().unwrap_or_else(|p| p.into_inner());
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
