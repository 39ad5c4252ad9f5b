//! Wire messages.
//!
//! Two conversations, both over Unix sockets in framed rkyv ([`crate::frame`]):
//! - a core-worker (driver or worker) with its node's raylet: [`ToRaylet`] / [`FromRaylet`];
//!   requests carry a `req` number that the reply repeats, and the raylet also pushes lease
//!   grants and worker output when they happen;
//! - a submitter with a worker it leased: [`ToWorker`] / [`FromWorker`], the per-task hot path,
//!   which never passes through the raylet.

// rkyv derives an undocumented `Archived*` twin of every type here.
#![allow(missing_docs)]

use oxray_object_store::ObjectId;
use rkyv::{Archive, Deserialize, Serialize};

use crate::resources::Resources;
use crate::{ActorId, JobId, NodeId, WorkerId};

/// What kind of process a client is.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A driver: the user's main program.
    Driver,
    /// A worker the raylet started.
    Worker,
    /// A tool such as `oxray status`: no job, no workers.
    Tool,
    /// A job of another node, attached by that node's raylet (`PeerRequest::Attach`): like a
    /// driver, but its work was spilled here.
    Remote,
}

/// From a core-worker to its raylet.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum ToRaylet {
    /// A placement-group request (see [`crate::placement`]); the answer is
    /// `PlacementGroups` or `Error`. A member node passes it on to the head.
    Placement {
        /// Request number.
        req: u64,
        /// What is asked.
        request: crate::placement::PlacementRequest,
    },
    /// First message on a connection.
    Register {
        /// The client's id.
        worker: WorkerId,
        /// Its pid.
        pid: u32,
        /// Driver or worker.
        kind: ClientKind,
        /// Drivers: the executable workers must run (their own). Workers: empty.
        exe: String,
        /// Workers: the socket they accept task pushes on.
        listen: String,
        /// Drivers: the namespace for named actors.
        namespace: String,
        /// A job attached from another node (`Remote`): the job's credential there, which its
        /// workers here prove to each other's direct connections. Others: empty.
        job_key: Vec<u8>,
    },
    /// First message of a *tunnel* connection, instead of `Register`: the raylet connects this
    /// socket to `target` (`peer://HOST:PORT/unix:@NAME`, a socket on another node) through its
    /// QUIC connection to that node, answers `TunnelOpen` (or `Error`), and from then on carries
    /// bytes both ways unchanged.
    Tunnel {
        /// Where to connect.
        target: String,
    },
    /// First message of a connection that controls submitted jobs (`oxray job ...`): from then
    /// on it carries `job_control` frames, served off the node's event loop.
    Jobs,
    /// Asks for the address of a core worker (the owner of objects), wherever it runs;
    /// answered with `Address`.
    WorkerAddress {
        /// Request number.
        req: u64,
        /// The worker.
        worker: WorkerId,
    },
    /// Asks for a worker with `resources` reserved for it.
    RequestLease {
        /// Request number.
        req: u64,
        /// What the work needs.
        resources: Resources,
        /// Index of another node that holds the work's large arguments: preferred over this
        /// one when it has room (0: none).
        near: u16,
        /// Where the work may run.
        strategy: Strategy,
    },
    /// Gives a leased worker back.
    ReturnLease {
        /// The lease.
        lease: u64,
    },
    /// Reserves an object in the store for this client to write.
    Create {
        /// Request number.
        req: u64,
        /// The object.
        id: ObjectId,
        /// Payload bytes.
        len: u64,
        /// Type fingerprint.
        fingerprint: u64,
    },
    /// Seals an object this client wrote.
    Seal {
        /// Request number.
        req: u64,
        /// The object.
        id: ObjectId,
    },
    /// Pins a sealed object for reading; when it is not on this node, the raylet first pulls
    /// it from node `node` (where its primary copy is).
    Pin {
        /// Request number.
        req: u64,
        /// The object.
        id: ObjectId,
        /// Index of the node holding it (0 or this node's index: here).
        node: u16,
    },
    /// Releases one pin.
    Release {
        /// The object.
        id: ObjectId,
    },
    /// The owner frees objects (their last ref dropped): every copy in the cluster goes.
    Delete {
        /// The objects.
        ids: Vec<ObjectId>,
        /// Index of the node holding their primary copies (0 or this node's index: here).
        node: u16,
    },
    /// The worker is blocked waiting for objects: its CPU can be lent out.
    Blocked,
    /// The worker runs again.
    Unblocked,
    /// Asks for the node's status.
    Status {
        /// Request number.
        req: u64,
    },
    /// Asks for the objects in the node's store and spilled from it (`oxray memory`).
    Memory {
        /// Request number.
        req: u64,
    },
    /// Tasks and actor calls this worker ran since it last sent them (the timeline).
    TaskEvents {
        /// The events, oldest first.
        events: Vec<TaskEvent>,
    },
    /// Asks for the node's recorded task events (`oxray timeline`).
    Timeline {
        /// Request number.
        req: u64,
    },
    /// Asks a standalone raylet to stop.
    Stop {
        /// Request number.
        req: u64,
    },
    /// Registers an actor and has the raylet start it (answered with `ActorCreated`).
    CreateActor {
        /// Request number.
        req: u64,
        /// What to start.
        spec: ActorSpec,
    },
    /// Looks an actor up by id, or by name when `id` is `None`; with `wait_alive`, the answer
    /// waits while the actor is starting or restarting.
    GetActor {
        /// Request number.
        req: u64,
        /// The actor, or `None` to look up `name` in `namespace`.
        id: Option<ActorId>,
        /// Name to look up.
        name: String,
        /// Namespace of the name.
        namespace: String,
        /// Wait until the actor is alive or dead.
        wait_alive: bool,
    },
    /// Kills an actor's process; with `restart`, it restarts as after a crash. Answered with
    /// `Actor` (its state after the kill).
    KillActor {
        /// Request number.
        req: u64,
        /// The actor.
        id: ActorId,
        /// Restart it (within `max_restarts`).
        restart: bool,
    },
    /// Every handle to this (non-detached) actor in its creator is gone and none was passed
    /// on: it ends (no reply), as Ray's actors do when their last reference goes.
    ReleaseActor {
        /// The actor.
        id: ActorId,
    },
    /// From an actor's worker: the constructor returned.
    ActorReady {
        /// The actor.
        id: ActorId,
    },
    /// From an actor's worker: the constructor failed (the actor will not be restarted).
    ActorFailed {
        /// The actor.
        id: ActorId,
        /// Why.
        message: String,
    },
    /// From an actor's worker: `exit_actor()` was called; the process ends next.
    ActorExiting {
        /// The actor.
        id: ActorId,
    },
}

/// Everything needed to start (and restart) an actor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct ActorSpec {
    /// The actor.
    pub id: ActorId,
    /// Registered class name (`module_path::Type`).
    pub class: String,
    /// Constructor arguments, resolved.
    pub args: Vec<TaskArg>,
    /// Resources held while the actor lives.
    pub resources: Resources,
    /// Name (empty: unnamed).
    pub name: String,
    /// Namespace of the name.
    pub namespace: String,
    /// Restarts after crashes (-1: unlimited).
    pub max_restarts: i64,
    /// Outlives its owner.
    pub detached: bool,
    /// Methods running at once.
    pub max_concurrency: u32,
    /// Restarts so far: 0 when the owner creates it; more when its node died and the node
    /// that placed it starts it again elsewhere.
    pub restarts: u32,
    /// Where the actor may run.
    pub strategy: Strategy,
}

/// Where a task or actor may run (Ray's scheduling strategies).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Near the work's large arguments when that node has room, else this node, else the
    /// node with the most room.
    #[default]
    Default,
    /// Round-robin over the alive nodes that have the resources (those with room now first).
    Spread,
    /// On one node. Hard (`soft: false`): the work fails with `Unschedulable` if that node is
    /// dead or never has the resources. Soft: it then runs as `Default`.
    NodeAffinity {
        /// The node (from `oxray::nodes()` or `oxray::context()`).
        node_id: NodeId,
        /// Fall back to `Default` when the node is dead or never fits.
        soft: bool,
    },
}

/// States of an actor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorState {
    /// Waiting for resources or starting.
    Pending,
    /// Running.
    Alive,
    /// Its process died; a new one is starting.
    Restarting,
    /// Gone for good.
    Dead,
}

/// What the raylet knows of an actor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct ActorInfo {
    /// The actor.
    pub id: ActorId,
    /// Its class.
    pub class: String,
    /// Its state.
    pub state: ActorState,
    /// Where to send calls (when alive).
    pub address: String,
    /// Its process (when alive).
    pub pid: u32,
    /// Restarts so far.
    pub restarts: u32,
    /// Its name (empty: unnamed).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Why it died (when dead).
    pub death: String,
    /// Methods running at once.
    pub max_concurrency: u32,
}

/// From the raylet to a core-worker.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum FromRaylet {
    /// Answer to `Placement`: the groups concerned (one for `Create`, `Wait`, `Remove` and
    /// `Get`; all for `Table`).
    PlacementGroups {
        /// Request number.
        req: u64,
        /// The groups.
        groups: Vec<crate::placement::PlacementGroupInfo>,
    },
    /// Reply to `Register`.
    Registered {
        /// This node.
        node: NodeId,
        /// This node's index in the cluster (0: not in a cluster).
        node_index: u16,
        /// The client's id, with this node's index in its top bits (see
        /// [`crate::ids::NODE_INDEX_SHIFT`]).
        worker: WorkerId,
        /// The client's job.
        job: JobId,
        /// Path that maps the node's object store.
        arena: String,
        /// The session's name (prefix of socket names).
        session: String,
        /// The node's total resources.
        resources: Resources,
        /// The job's namespace for named actors.
        namespace: String,
        /// How long a create waits for room in a full store before it is refused, in
        /// milliseconds (with spilling on, a create that cannot fit is made in a file instead).
        store_full_wait_ms: u64,
        /// The job's credential (32 random bytes, the same on every node the job runs on): the
        /// key core workers of the job prove to each other on direct connections between nodes.
        /// Never the cluster secret; it dies with the job.
        job_key: Vec<u8>,
    },
    /// A worker is leased to the client.
    LeaseGranted {
        /// Request number of the `RequestLease`.
        req: u64,
        /// The lease, to return later.
        lease: u64,
        /// The worker.
        worker: WorkerId,
        /// Its socket.
        address: String,
        /// Its pid.
        pid: u32,
    },
    /// Reply to `Create`: where to write.
    Created {
        /// Request number.
        req: u64,
        /// Block offset in the arena (the payload follows the 64-byte header).
        block: u64,
        /// The object already existed sealed (a retried task made it before): nothing to write.
        existed: bool,
    },
    /// Reply to `Create` when the object cannot be in the store (larger than all of it, or no
    /// room even after spilling): it is made as a file of exactly `len` bytes at `path`, which
    /// the client maps, fills and then seals as usual.
    CreatedInFile {
        /// Request number.
        req: u64,
        /// The object's file (in the node's spill directory).
        path: String,
    },
    /// Reply to `Tunnel`: the far end is connected; raw bytes follow.
    TunnelOpen,
    /// Reply to `WorkerAddress`.
    Address {
        /// Request number.
        req: u64,
        /// Where the worker listens (`unix:@…` here, `peer://…` on another node).
        address: String,
    },
    /// Reply to `Seal`.
    Sealed {
        /// Request number.
        req: u64,
    },
    /// Reply to `Pin`.
    Pinned {
        /// Request number.
        req: u64,
        /// Block offset in the arena.
        block: u64,
    },
    /// Reply to `Pin` for an object kept in a file (spilled, or made there) that the store
    /// has no room to read back: the client maps the file read-only. Nothing is pinned in the
    /// store, so no `Release` follows.
    PinnedInFile {
        /// Request number.
        req: u64,
        /// The object's file.
        path: String,
        /// Payload bytes.
        len: u64,
        /// Type fingerprint.
        fingerprint: u64,
    },
    /// A request failed.
    Error {
        /// Request number.
        req: u64,
        /// What kind of failure.
        kind: ErrorKind,
        /// A message for the user.
        message: String,
    },
    /// Reply to `Status`.
    Status {
        /// Request number.
        req: u64,
        /// The node's state.
        status: Box<NodeStatus>,
    },
    /// Reply to `Memory`.
    Memory {
        /// Request number.
        req: u64,
        /// Every object in the node's store or spilled from it.
        objects: Vec<StoredObject>,
    },
    /// Reply to `Timeline`.
    Timeline {
        /// Request number.
        req: u64,
        /// The node.
        node: NodeId,
        /// Its recorded task events, oldest first.
        events: Vec<TaskEvent>,
    },
    /// Reply to `CreateActor`: registered (it starts in the background).
    ActorCreated {
        /// Request number.
        req: u64,
    },
    /// Reply to `GetActor`.
    Actor {
        /// Request number.
        req: u64,
        /// The actor.
        info: ActorInfo,
    },
    /// To a worker: become this actor (run its constructor).
    StartActor {
        /// The actor.
        spec: ActorSpec,
        /// Restarts so far (more than 0: `was_restarted()` is true).
        restarts: u32,
    },
    /// Something the user should know that is not an answer: e.g. work that no alive node can
    /// run waits (as in Ray) until a node with its resources joins.
    Warning {
        /// The request it concerns (a `RequestLease`; 0: none).
        req: u64,
        /// The warning, for people.
        message: String,
    },
    /// A line a worker of this client's job printed.
    WorkerOutput {
        /// The worker's pid.
        pid: u32,
        /// The session name of the worker's node when it is in a cluster (else empty).
        node: String,
        /// 1 for stdout, 2 for stderr.
        stream: u8,
        /// The line, without its newline.
        line: String,
    },
}

/// Kinds of raylet errors the client maps to its own error types.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The store is full.
    ObjectStoreFull,
    /// The object can never fit.
    ObjectTooLarge,
    /// No such object.
    ObjectNotFound,
    /// The request made no sense (e.g. unknown lease).
    BadRequest,
    /// The object's owner exited, and its objects were freed with it.
    OwnerDied,
    /// A live actor of the namespace has the name asked for.
    NameTaken,
    /// The work's scheduling strategy names a node that is dead or never has its resources.
    Unschedulable,
}

/// A node's state, for `oxray status` and `oxray::available_resources`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// The raylet's pid.
    pub pid: u32,
    /// The address clients attach with.
    pub address: String,
    /// All resources.
    pub total: Resources,
    /// Resources not leased.
    pub available: Resources,
    /// Store size.
    pub store_capacity: u64,
    /// Store bytes in use.
    pub store_used: u64,
    /// Objects in the store.
    pub store_objects: u64,
    /// Objects spilled to disk now, and their bytes.
    pub spilled_objects: u64,
    /// Bytes of the objects spilled to disk now.
    pub spilled_bytes: u64,
    /// Bytes spilled since the node started.
    pub spilled_total: u64,
    /// Bytes restored from disk since the node started.
    pub restored_total: u64,
    /// Where spilled objects go (empty: spilling is off).
    pub spill_dir: String,
    /// Worker processes.
    pub workers: Vec<WorkerStatus>,
    /// Lease requests waiting for resources.
    pub pending: Vec<PendingLease>,
    /// Connected drivers.
    pub drivers: u32,
    /// Actors, dead ones included.
    pub actors: Vec<ActorInfo>,
    /// Every node of the cluster this node belongs to (empty for a single node).
    pub cluster: crate::peer::ClusterView,
    /// Jobs whose driver attached to this node.
    pub jobs: Vec<crate::peer::JobSummary>,
    /// Runs of each function this node's workers reported since it started.
    pub runs: Vec<FunctionRuns>,
    /// The dashboard's address with its access token (empty: this node serves none).
    pub dashboard: String,
    /// Connections between a process of this node and one of another node that this raylet
    /// relayed (tunnels) since it started, both the ones a local process asked for and the ones
    /// another node's raylet opened to a local process. Calls to workers and actors of the same
    /// job go straight between the processes and are not counted.
    pub tunnels: u64,
    /// Object bytes this node sent to other nodes since it started (pulls it served, of
    /// objects it holds the primary copy of or a copy it pulled itself).
    pub bytes_served: u64,
    /// The node runs in a process of its own (`oxray start`), not embedded in a driver.
    pub own_process: bool,
}

/// How often one function (or actor method) ran on a node, for `oxray status` and the
/// dashboard.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct FunctionRuns {
    /// The function or `Class::method`.
    pub function: String,
    /// An actor method (else a task).
    pub actor_call: bool,
    /// Runs that returned a value.
    pub ok: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Time spent in all runs, in microseconds.
    pub total_us: u64,
}

/// One task or actor call a worker ran, for the timeline (`oxray timeline`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskEvent {
    /// The task (or call) id, which is also its result's id.
    pub id: ObjectId,
    /// The function or `Class::method`.
    pub function: String,
    /// An actor method call (else a task).
    pub actor_call: bool,
    /// When it started running, in microseconds since the Unix epoch.
    pub start_us: u64,
    /// When it ended, likewise.
    pub end_us: u64,
    /// The process that ran it.
    pub pid: u32,
    /// Its worker id.
    pub worker: WorkerId,
    /// Whether it returned a value (else it failed).
    pub ok: bool,
}

/// One object of a node's store (`oxray memory`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StoredObject {
    /// Its id.
    pub id: ObjectId,
    /// Payload bytes.
    pub size: u64,
    /// `memory`, `spilled` or `being written`.
    pub place: String,
    /// Readers pinning it now (views, gets and task arguments in progress).
    pub pins: u32,
    /// A primary copy (its owner's) or a secondary one (pulled from another node, evictable).
    pub primary: bool,
}

/// One worker process.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct WorkerStatus {
    /// Its id.
    pub worker: WorkerId,
    /// Its pid.
    pub pid: u32,
    /// `starting`, `idle`, `leased` or `blocked`.
    pub state: String,
    /// The job it runs code of.
    pub job: JobId,
}

/// A lease request that waits.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct PendingLease {
    /// What it asks for.
    pub resources: Resources,
    /// True when no alive node could satisfy it (it waits anyway, as in Ray).
    pub infeasible: bool,
    /// Why it waits, for people: `waiting for free resources`, or `infeasible: no alive node
    /// has {..}`; prefixed with `actor CLASS: ` for an actor waiting to be placed.
    pub reason: String,
}

/// A method call on an actor.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct ActorCall {
    /// The call's id, which is also the id of its return object.
    pub id: ObjectId,
    /// Registered method name (`class::method`).
    pub method: String,
    /// Arguments, resolved.
    pub args: Vec<TaskArg>,
}

/// To a worker (tasks from the submitter that leased it) or to any core worker as the owner of
/// objects (requests from processes that borrow refs it owns). Drivers answer only the latter.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum ToWorker {
    /// Run a task.
    Task(TaskSpec),
    /// The caller of streaming task `task` has taken `taken` of its items (`u64::MAX`: it
    /// dropped the stream, so the task stops making items). Sent on a connection of its own.
    StreamTaken {
        /// The task.
        task: ObjectId,
        /// Items taken so far.
        taken: u64,
    },
    /// Cancel the tasks this worker submitted while running task `parent` (and, recursively,
    /// theirs): `parent` was cancelled. Sent on a connection of its own.
    CancelChildren {
        /// The cancelled task.
        parent: ObjectId,
    },
    /// Force-cancel task `id` if this worker runs it now: the worker process exits (its
    /// caller sees the task cancelled, not retried). Sent on a connection of its own, since the
    /// task's connection is not read while the task runs.
    CancelTask {
        /// The task.
        id: ObjectId,
    },
    /// Call a method of the actor this worker hosts.
    ActorCall(ActorCall),
    /// Send the value of an object you own, once it is ready.
    GetObject {
        /// Request number.
        req: u64,
        /// The object.
        id: ObjectId,
    },
    /// The sender (a borrower) found the copy of object `id` on node `node` lost: make it
    /// again from its lineage if you can, and answer with its value (`Object`) once it is
    /// ready, or with why not.
    Rebuild {
        /// Request number.
        req: u64,
        /// The object.
        id: ObjectId,
        /// Index of the node whose copy was lost.
        node: u16,
    },
    /// Keep these objects alive for the sender, which deserialized refs to them. Acked.
    AddBorrowers {
        /// Request number.
        req: u64,
        /// The objects.
        ids: Vec<ObjectId>,
    },
    /// The sender no longer holds refs to these objects.
    RemoveBorrowers {
        /// The objects.
        ids: Vec<ObjectId>,
    },
    /// Keep these objects alive while an object containing refs to them lives. Acked.
    Reserve {
        /// Request number.
        req: u64,
        /// The objects.
        ids: Vec<ObjectId>,
    },
    /// An object containing refs to these objects was freed.
    Unreserve {
        /// The objects.
        ids: Vec<ObjectId>,
    },
}

/// The value of an object, as its owner reports it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum ObjectValue {
    /// A small value.
    Inline {
        /// Type fingerprint.
        fingerprint: u64,
        /// rkyv bytes.
        bytes: Vec<u8>,
    },
    /// In the store of node `node` under its id.
    Stored {
        /// Index of the node holding the primary copy.
        node: u16,
    },
    /// Its task failed.
    Failed {
        /// The error's text.
        message: String,
    },
    /// The owner holds no such object (it was freed).
    Unknown,
}

/// A task to run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct TaskSpec {
    /// The task's id, which is also the id of its return object.
    pub id: ObjectId,
    /// Registered name of the function.
    pub function: String,
    /// Arguments, in order.
    pub args: Vec<TaskArg>,
    /// 0 on the first try.
    pub attempt: u32,
    /// A streaming task's window: it makes at most this many items its caller has not taken
    /// yet, then waits (`ToWorker::StreamTaken`); 0: no bound.
    pub stream_window: u64,
    /// A retried streaming task: the items its caller has already. The task makes them again
    /// (items must not depend on the attempt) but neither stores nor reports them.
    pub stream_skip: u64,
    /// A retried streaming task: the items its caller had taken (where its window starts).
    pub stream_taken: u64,
}

/// One argument of a task.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum TaskArg {
    /// The encoded value itself (small values and small refs).
    Inline {
        /// Type fingerprint.
        fingerprint: u64,
        /// rkyv bytes.
        bytes: Vec<u8>,
    },
    /// An object in a store (large), kept alive by its owner until the task ends; pulled to
    /// the worker's node first when it lives elsewhere.
    Stored {
        /// The object.
        id: ObjectId,
        /// Index of the node holding its primary copy.
        node: u16,
    },
}

/// Replies of a worker (or of an owner).
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum FromWorker {
    /// A task ended.
    Done {
        /// The task.
        id: ObjectId,
        /// How.
        outcome: TaskOutcome,
        /// Objects whose refs the result contains; the worker reserved them, and the result's
        /// owner releases them when the result is freed.
        contained: Vec<ObjectId>,
    },
    /// Reply to `GetObject`.
    Object {
        /// Request number.
        req: u64,
        /// The value.
        value: ObjectValue,
    },
    /// A streaming task yielded item `index`, stored under `ids::item_id(task, index)` (sent
    /// before the task's `Done`, whose value is the number of items).
    Item {
        /// The task.
        task: ObjectId,
        /// The item's place in the stream, from 0.
        index: u64,
        /// How it was stored.
        outcome: TaskOutcome,
        /// Objects whose refs the item contains (reserved, as for `Done`).
        contained: Vec<ObjectId>,
    },
    /// Reply to `AddBorrowers` and `Reserve`.
    Ack {
        /// Request number.
        req: u64,
    },
}

/// How a task ended.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum TaskOutcome {
    /// Returned a small value.
    Inline {
        /// Type fingerprint.
        fingerprint: u64,
        /// rkyv bytes.
        bytes: Vec<u8>,
    },
    /// Returned a large value, sealed in the store of the worker's node under the task's id.
    Stored {
        /// Index of that node.
        node: u16,
    },
    /// Failed.
    Failed(TaskFailure),
}

/// Why a task failed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct TaskFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The panic message or the error's text.
    pub message: String,
    /// The function.
    pub function: String,
    /// Pid of the worker it ran in.
    pub pid: u32,
}

/// Kinds of task failure.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The function panicked.
    Panic,
    /// The function returned `Err`.
    Error,
    /// No function of that name in the worker's executable.
    FunctionNotFound,
    /// An argument could not be decoded as the parameter's type.
    BadArgument,
    /// The result could not be stored.
    Store,
    /// The result did not fit in the node's store, even after spilling.
    StoreFull,
}
