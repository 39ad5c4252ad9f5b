//! Messages between raylets (and tools) over QUIC.
//!
//! Every exchange is one bidirectional QUIC stream carrying one framed [`PeerRequest`] and one
//! framed [`PeerReply`] ([`crate::frame`] encoding). The first stream of a connection must carry
//! [`PeerRequest::Auth`]; nothing else is read from a peer until it has proven it knows the
//! cluster secret. A few requests keep their stream open after the reply: `Tunnel` and `Attach`
//! become byte pipes, `FetchExe` and `Chunk` replies are followed by raw bytes.

// rkyv derives an undocumented `Archived*` twin of every type here.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

use crate::resources::Resources;
use crate::{JobId, NodeId};

/// A request from one raylet (or tool) to another.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum PeerRequest {
    /// The first request of a connection: HMAC of the cluster secret over the TLS session's
    /// exported keying material, so the proof is worthless on any other connection.
    Auth {
        /// The cluster the dialer believes it joins.
        cluster: String,
        /// HMAC-SHA256 proof.
        proof: Vec<u8>,
    },
    /// To the head: a node joins the cluster.
    Register {
        /// The joining node.
        node: NodeInfo,
    },
    /// To the head: a node's periodic report, which doubles as its health check.
    Heartbeat {
        /// The reporting node.
        node: NodeId,
        /// Its current load.
        load: NodeLoad,
    },
    /// To the head: the current cluster view.
    GetView,
    /// To the head: this node is stopping (it is marked dead at once, not after the timeout).
    Leave {
        /// The stopping node.
        node: NodeId,
    },
    /// Connect this stream to a local socket of the receiving node (`unix:@NAME`, a worker's);
    /// after `Ok` the stream carries raw bytes both ways.
    Tunnel {
        /// The socket.
        target: String,
    },
    /// Serve a job of the sending node here: after `Ok` the stream is that job's connection to
    /// this raylet (framed `ToRaylet` one way, `FromRaylet` the other), as if its driver were
    /// local; workers run the job's executable, fetched from the sender first if not cached.
    Attach {
        /// The sending node.
        origin: NodeId,
        /// Its peer address.
        origin_address: String,
        /// The job there.
        job: JobId,
        /// The job's namespace.
        namespace: String,
        /// The job's executable.
        exe: ExeInfo,
        /// The job's credential, handed to its workers on the far node.
        job_key: Vec<u8>,
    },
    /// The executable of a job of this node; answered with `Exe`, then its bytes.
    FetchExe {
        /// The job.
        job: JobId,
    },
    /// Size and type of an object in this node's store; answered with `Object`.
    ObjectInfo {
        /// The object.
        id: crate::ObjectId,
    },
    /// Bytes `offset..offset+len` of an object's payload; answered with `Ok`, then the bytes.
    Chunk {
        /// The object.
        id: crate::ObjectId,
        /// First byte.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// Where an actor registered or placed by this node is (waiting while it starts or
    /// restarts, with `wait_alive`), after killing it when `kill` is set (`Some(restart)`);
    /// answered with `Actor`, its address reachable from the asker.
    Actor {
        /// The actor.
        id: crate::ActorId,
        /// Wait while it starts or restarts.
        wait_alive: bool,
        /// Kill it first; `Some(true)` lets it restart.
        kill: Option<bool>,
    },
    /// Free these objects (their owner dropped the last ref); copies pulled from here go too.
    Delete {
        /// The objects.
        ids: Vec<crate::ObjectId>,
    },
    /// A process of the sending node that owned objects ended: free every object it owned here
    /// (their owner can no longer say when they are done), and the copies pulled from here.
    OwnerGone {
        /// The process.
        owner: crate::WorkerId,
    },
    /// To the head: give `name` in `namespace` to actor `id` unless another actor has it (names
    /// are unique in the cluster); answered with `Named`, the actor that has the name now.
    ClaimName {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
        /// The actor asking for it.
        id: crate::ActorId,
    },
    /// To the head: which actor has `name` in `namespace`; answered with `Named`.
    LookupName {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// To the head: a client's placement-group request; answered with `Answer`.
    Placement(crate::placement::PlacementRequest),
    /// From the placement-group manager (the head) to a node: reserve, commit or release
    /// bundles; answered with `Ok` or `Error`.
    Bundles(crate::placement::BundleOp),
    /// To the head: actor `id` is dead for good; its name is free again (if it still has it).
    ReleaseName {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
        /// The dead actor.
        id: crate::ActorId,
    },
}

/// An executable, as a node that has it describes it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ExeInfo {
    /// SHA-256 of its bytes, in hex.
    pub hash: String,
    /// Its size in bytes.
    pub len: u64,
    /// `std::env::consts::OS` of the node it runs on.
    pub os: String,
    /// `std::env::consts::ARCH` of that node.
    pub arch: String,
}

/// The answer to a [`PeerRequest`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum PeerReply {
    /// The dialer's proof was right; this is the listener's own proof.
    AuthOk {
        /// HMAC-SHA256 proof of the listener.
        proof: Vec<u8>,
    },
    /// The request was refused; the connection closes after this.
    Refused {
        /// Why.
        reason: String,
    },
    /// The cluster as the head sees it (reply to `Register`, `Heartbeat`, `GetView`).
    View(ClusterView),
    /// The request could not be served.
    Error {
        /// Why.
        message: String,
    },
    /// Done (for `Tunnel`, `Attach` and `Chunk`: the stream now carries their data).
    Ok,
    /// Reply to `FetchExe`; the executable's bytes follow.
    Exe(ExeInfo),
    /// Reply to `Actor`.
    Actor(crate::protocol::ActorInfo),
    /// Reply to `ClaimName` and `LookupName`: the actor that has the name (`None`: nobody).
    Named(Option<crate::ActorId>),
    /// Reply to `Placement`: the answer the client gets (its request number is the asker's).
    Answer(crate::protocol::FromRaylet),
    /// Reply to `ObjectInfo`.
    Object {
        /// Payload bytes.
        len: u64,
        /// Type fingerprint.
        fingerprint: u64,
        /// Peer addresses of nodes that pulled a copy from here before (oldest first), which
        /// the asker may take chunks from instead (a node still pulling serves once it has
        /// the whole copy).
        sources: Vec<String>,
    },
}

/// A node as the cluster knows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Its index, assigned by the head (the head is 1); the top bits of its workers' ids.
    pub index: u16,
    /// Its session name (unique in the cluster).
    pub session: String,
    /// Where its raylet listens for peers (`host:port`).
    pub peer_address: String,
    /// Where local clients attach (`unix:@session`).
    pub local_address: String,
    /// The machine's host name.
    pub hostname: String,
    /// The raylet's pid.
    pub pid: u32,
    /// True for the head.
    pub is_head: bool,
    /// False once the head has stopped hearing from it.
    pub alive: bool,
    /// All its resources.
    pub total: Resources,
    /// Its latest reported load.
    pub load: NodeLoad,
}

/// What a node reports about itself every health-check period.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct NodeLoad {
    /// Resources not leased.
    pub available: Resources,
    /// All its resources now: its own, less the placement-group bundles it holds, plus those
    /// bundles' resources (empty: as it registered).
    pub total: Resources,
    /// Store size in bytes.
    pub store_capacity: u64,
    /// Store bytes in use.
    pub store_used: u64,
    /// Objects in the store.
    pub store_objects: u64,
    /// Worker processes.
    pub workers: u32,
    /// Live actors.
    pub actors: u32,
    /// Lease requests waiting for resources.
    pub pending: u32,
    /// Jobs whose driver attached to this node (the head's view of every node's jobs is the
    /// cluster's job table).
    pub jobs: Vec<JobSummary>,
}

/// A job, as the node its driver attached to reports it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct JobSummary {
    /// The job's id on that node (with the node, unique in the cluster).
    pub job: JobId,
    /// False once the driver exited (the job lives on while detached actors of it do).
    pub driver: bool,
    /// The job's namespace.
    pub namespace: String,
    /// The driver's program (file name of its executable).
    pub program: String,
    /// Worker processes of the job on that node.
    pub workers: u32,
}

/// The cluster as the head sees it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// The cluster's name.
    pub cluster: String,
    /// Every node that ever registered, dead ones included.
    pub nodes: Vec<NodeInfo>,
}
