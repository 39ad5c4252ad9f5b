//! The node's state: the tables every handler reads and writes, and the few helpers they share.

use std::collections::{HashMap, VecDeque};

use oxray_common::peer::ClusterView;
use oxray_common::placement::PlacementGroupId;
use oxray_common::protocol::{ActorInfo, ActorSpec, ActorState, ClientKind, FromRaylet};
use oxray_common::resources::Resources;
use oxray_common::{ActorId, JobId, NodeId, WorkerId};

use super::effects::{Effect, LinkOp};

/// What the state needs to know of the node it runs in (fixed at start).
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// This node.
    pub id: NodeId,
    /// The session's name (prefix of worker socket names).
    pub session: String,
    /// The path clients map the object store with.
    pub arena: String,
    /// All the node's resources.
    pub total: Resources,
    /// Workers to start when a driver registers.
    pub prestart_workers: usize,
    /// Whether the node is part of a cluster (spillback, remote actors and names apply).
    pub clustered: bool,
    /// Whether this node manages placement groups (the head, or a node outside any cluster).
    pub places_groups: bool,
    /// Dead actors kept in the table; older ones are forgotten.
    pub max_dead_actors: usize,
    /// How long clients wait for room before a create is `ObjectStoreFull`, in milliseconds.
    pub store_full_wait_ms: u64,
}

pub(crate) struct Client {
    pub kind: ClientKind,
    pub worker: WorkerId,
    pub job: JobId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerState {
    Starting,
    Idle,
    Leased(u64),
    /// Hosts an actor for its whole life.
    Actor,
}

pub(crate) struct Worker {
    /// 0 until the process is started.
    pub pid: u32,
    pub job: JobId,
    pub state: WorkerState,
    pub address: String,
    pub conn: Option<u64>,
    /// The actor this worker was started for.
    pub actor: Option<ActorId>,
}

pub(crate) struct Lease {
    pub worker: WorkerId,
    pub holder: u64,
    pub resources: Resources,
    pub blocked: bool,
}

pub(crate) struct LeaseRequest {
    pub req: u64,
    pub conn: u64,
    pub job: JobId,
    pub resources: Resources,
    /// May go to another node (false for work spilled here).
    pub spill: bool,
    /// Another node holding the work's large arguments, preferred when it has room (0: none).
    pub near: u16,
    /// The requester was told no alive node has these resources.
    pub warned: bool,
}

pub(crate) struct Job {
    pub exe: String,
    /// The driver's program, for status.
    pub program: String,
    pub namespace: String,
    pub driver: Option<u64>,
    /// Attached by another node (its driver runs there).
    pub remote: bool,
    /// The job's credential (see `FromRaylet::Registered`): made here for a local driver,
    /// given by the driver's node for a remote job.
    pub key: Option<JobKey>,
    /// Workers that died before registering, in a row: a broken executable must not make us
    /// spawn forever.
    pub failed_starts: u32,
}

/// A job's credential: 32 random bytes.
pub(crate) type JobKey = [u8; 32];

/// An actor this node placed on another node: enough to start it again elsewhere if that node
/// dies.
pub(crate) struct PlacedActor {
    pub node: u16,
    pub job: JobId,
    pub owner_conn: u64,
    pub spec: ActorSpec,
    /// Restarts so far, as last heard from the hosting node.
    pub restarts: u32,
}

pub(crate) struct ActorEntry {
    pub spec: ActorSpec,
    pub state: ActorState,
    pub worker: Option<WorkerId>,
    pub lease: Option<u64>,
    pub address: String,
    pub pid: u32,
    pub restarts: u32,
    pub death: String,
    pub owner_conn: u64,
    pub owner_job: JobId,
    pub exiting: bool,
    /// The owner was told no alive node has its resources.
    pub warned: bool,
}

impl ActorEntry {
    /// A new entry waiting for resources: `Restarting` when its spec says it ran before.
    pub fn new(spec: ActorSpec, owner_conn: u64, owner_job: JobId) -> ActorEntry {
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
            warned: false,
        }
    }

    pub fn info(&self) -> ActorInfo {
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

/// The mutable state of a node: a plain state machine. Events come in as method calls
/// (`register`, `message`, `disconnect`, `worker_exited`, `set_view`, ...); what must happen
/// in the world queues up as [`Effect`]s, drained with [`NodeState::take_effects`]. It does
/// no I/O, never blocks and takes no lock, so it can be driven in memory by tests.
pub(crate) struct NodeState {
    pub setup: Setup,
    /// This node's index in the cluster (0: not in one); the top bits of its workers' ids.
    pub index: u16,
    /// The cluster as last heard from the head (empty for a single node).
    pub view: ClusterView,
    pub stopping: bool,
    pub next_lease: u64,
    pub next_job: u32,
    pub clients: HashMap<u64, Client>,
    pub workers: HashMap<WorkerId, Worker>,
    pub leases: HashMap<u64, Lease>,
    pub pending: VecDeque<LeaseRequest>,
    pub jobs: HashMap<JobId, Job>,
    pub actors: HashMap<ActorId, ActorEntry>,
    pub actor_names: HashMap<(String, String), ActorId>,
    /// Dead actors still in the table, oldest first (at most `Setup::max_dead_actors`).
    pub dead_actors: VecDeque<ActorId>,
    /// Actors waiting for resources (new or restarting), in order.
    pub pending_actors: VecDeque<ActorId>,
    /// `GetActor { wait_alive }` requests parked until the actor is alive or dead.
    pub actor_waiters: HashMap<ActorId, Vec<(u64, u64)>>,
    /// Leases of other nodes held by local clients: local lease id → holder connection.
    pub remote_leases: HashMap<u64, u64>,
    /// Actors this node placed on other nodes.
    pub remote_actors: HashMap<ActorId, PlacedActor>,
    /// Names of actors placed on other nodes.
    pub remote_names: HashMap<(String, String), ActorId>,
    /// Resources spilled to each node since the cluster view last changed (so one view does
    /// not send more work to a node than it showed room for).
    pub spilled: HashMap<u16, Resources>,
    /// Nodes whose attachment just closed, with the views left before work may go there again.
    pub shunned: HashMap<u16, u32>,
    /// The node SPREAD work went to last (round-robin goes on after it).
    pub spread_last: u16,
    /// All the node's resources now: its own less the bundles it holds, plus the committed
    /// bundles' group resources (see `bundles`).
    pub total: Resources,
    /// Placement-group bundles held here.
    pub bundles: HashMap<(PlacementGroupId, u32), super::bundles::LocalBundle>,
    /// The placement groups this node manages (see `places_groups`).
    pub pgs: super::placement::Groups,
    /// The manager changed this node's bundles in this pass.
    pub groups_changed_here: bool,
    /// Inside the manager's pass (no nested one).
    pub placing: bool,
    effects: Vec<Effect>,
}

impl NodeState {
    pub fn new(setup: Setup) -> NodeState {
        let total = setup.total.clone();
        NodeState {
            setup,
            index: 0,
            view: ClusterView::default(),
            stopping: false,
            next_lease: 1,
            next_job: 1,
            clients: HashMap::new(),
            workers: HashMap::new(),
            leases: HashMap::new(),
            pending: VecDeque::new(),
            jobs: HashMap::new(),
            actors: HashMap::new(),
            actor_names: HashMap::new(),
            dead_actors: VecDeque::new(),
            pending_actors: VecDeque::new(),
            actor_waiters: HashMap::new(),
            remote_leases: HashMap::new(),
            remote_actors: HashMap::new(),
            remote_names: HashMap::new(),
            spilled: HashMap::new(),
            shunned: HashMap::new(),
            spread_last: 0,
            total,
            bundles: HashMap::new(),
            pgs: Default::default(),
            groups_changed_here: false,
            placing: false,
            effects: Vec::new(),
        }
    }

    /// What the handlers since the last call asked for, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn push(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Queues a message to a client (dropped if it is gone).
    pub fn send(&mut self, conn: u64, msg: FromRaylet) {
        self.effects.push(Effect::Send { conn, msg });
    }

    /// Queues a line for the raylet's log (written with a `[raylet] ` prefix).
    pub fn log(&mut self, line: String) {
        self.effects.push(Effect::Log(line));
    }

    pub fn link(&mut self, op: LinkOp) {
        if self.setup.clustered {
            self.effects.push(Effect::Link(op));
        }
    }

    pub fn total(&self) -> &Resources {
        &self.total
    }

    /// Resources not held by an active (unblocked) lease.
    pub fn available(&self) -> Resources {
        let mut a = self.total.clone();
        for l in self.leases.values().filter(|l| !l.blocked) {
            a.subtract(&l.resources);
        }
        a
    }

    /// A lease id never used before on this node.
    pub fn new_lease_id(&mut self) -> u64 {
        let lease = self.next_lease;
        self.next_lease += 1;
        lease
    }
}
