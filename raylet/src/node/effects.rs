//! What the node state asks the I/O layer to do. The state never does these itself: it queues
//! them while its lock is held, and [`super::Node`] carries them out after releasing it.

use oxray_common::protocol::{ActorSpec, FromRaylet};
use oxray_common::{ActorId, JobId, WorkerId};

use crate::cluster::Forward;

/// One thing to do outside the state lock.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Queue a message on a client connection's outbox.
    Send { conn: u64, msg: FromRaylet },
    /// Close a client connection (its reader then reports the disconnect).
    Close { conn: u64 },
    /// Start a worker process for `worker`; the outcome comes back as
    /// `NodeState::worker_started` or `NodeState::worker_start_failed`. Its output goes to the
    /// client `driver`, when there is one.
    Spawn {
        worker: WorkerId,
        exe: String,
        driver: Option<u64>,
    },
    /// Kill a worker process (by the pid the I/O layer started; a no-op once it was reaped).
    Kill { worker: WorkerId },
    /// Free the objects a process that ended owned in this store (and copies other nodes
    /// pulled from them).
    DeleteOwnedBy(WorkerId),
    /// Something for other nodes.
    Link(LinkOp),
    /// A line for the raylet's log (stderr can block: never written under the lock).
    Log(String),
    /// The answer to a request another node passed on (`Node::placement_from_peer`).
    PeerAnswer { token: u64, msg: FromRaylet },
}

/// Requests for the cluster layer (`crate::cluster::Link`); each returns at once there.
#[derive(Debug)]
pub(crate) enum LinkOp {
    /// A local client's request to be served by node `index`.
    Forward {
        job: JobId,
        index: u16,
        msg: Forward,
    },
    /// Ask node `index` about an actor for a local client.
    QueryActor {
        conn: u64,
        req: u64,
        index: u16,
        id: ActorId,
        wait_alive: bool,
        kill: Option<bool>,
    },
    /// Claim a new actor's name at the head, then create it.
    ClaimThenCreate {
        conn: u64,
        req: u64,
        spec: ActorSpec,
    },
    /// Free a dead actor's name at the head.
    ReleaseName {
        namespace: String,
        name: String,
        id: ActorId,
    },
    /// Find a named actor anywhere in the cluster for a local client.
    LookupName {
        conn: u64,
        req: u64,
        namespace: String,
        name: String,
        wait_alive: bool,
    },
    /// A local job ended: close its attachments to other nodes.
    JobEnded(JobId),
    /// A local process that owned objects ended: other nodes free what it owned there.
    OwnerGone(WorkerId),
    /// A node was declared dead: drop the connection to it now.
    NodeDied(String),
    /// A local client's placement-group request, for the head's manager.
    PlacementToHead {
        conn: u64,
        req: u64,
        request: oxray_common::placement::PlacementRequest,
    },
    /// A bundle request of the placement-group manager for node `index`; the answer comes
    /// back as `NodeState::bundles_answered(group, attempt, index, ..)`.
    Bundles {
        index: u16,
        group: oxray_common::placement::PlacementGroupId,
        attempt: u64,
        op: oxray_common::placement::BundleOp,
    },
}
