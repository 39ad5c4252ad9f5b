//! Messages between raylets (and tools) over QUIC.
//!
//! Every exchange is one bidirectional QUIC stream carrying one framed [`PeerRequest`] and one
//! framed [`PeerReply`] ([`crate::frame`] encoding). The first stream of a connection must carry
//! [`PeerRequest::Auth`]; nothing else is read from a peer until it has proven it knows the
//! cluster secret.

// rkyv derives an undocumented `Archived*` twin of every type here.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

use crate::resources::Resources;
use crate::NodeId;

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
}

/// A node as the cluster knows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
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
}

/// The cluster as the head sees it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// The cluster's name.
    pub cluster: String,
    /// Every node that ever registered, dead ones included.
    pub nodes: Vec<NodeInfo>,
}
