//! Ids of nodes, jobs and workers, and how object ids are made from them.

use oxray_object_store::ObjectId;
use rkyv::{Archive, Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $inner:ty) => {
        $(#[$doc])*
        #[derive(
            Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            Debug, Default,
        )]
        #[rkyv(derive(Debug, PartialEq, Eq, Hash))]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:x}", self.0)
            }
        }

        /// Parses the form `Display` prints (hex), e.g. a node id from `oxray::nodes()`.
        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$inner>::from_str_radix(s.trim(), 16).map($name)
            }
        }
    };
}

id_type!(
    /// A node (one raylet).
    NodeId,
    u64
);
id_type!(
    /// A job: one driver and everything it started.
    JobId,
    u32
);
id_type!(
    /// A worker or driver process (random, so unique across the cluster).
    WorkerId,
    u64
);
id_type!(
    /// An actor (random, so unique across the cluster).
    ActorId,
    u64
);

impl ActorId {
    /// A fresh random id.
    pub fn random() -> ActorId {
        ActorId(random_u64())
    }

    /// This id with its top 16 bits set to `node`: the index of the node whose raylet
    /// registered the actor and always knows where it runs.
    pub fn with_node(self, node: u16) -> ActorId {
        ActorId(WorkerId(self.0).with_node(node).0)
    }

    /// The index of the node that registered the actor (0: not in a cluster).
    pub fn node_index(self) -> u16 {
        (self.0 >> NODE_INDEX_SHIFT) as u16
    }
}

/// A worker id's top 16 bits are the index of its node in the cluster (0 for a node outside any
/// cluster), so the node of any process, and of any object it owns, is read off the id.
pub const NODE_INDEX_SHIFT: u32 = 48;
const LOW_BITS: u64 = (1 << NODE_INDEX_SHIFT) - 1;

impl WorkerId {
    /// A fresh random id (from the OS's randomness, mixed with the pid and time).
    pub fn random() -> WorkerId {
        WorkerId(random_u64())
    }

    /// A fresh random id of a process on the node with index `node`.
    pub fn on_node(node: u16) -> WorkerId {
        WorkerId::random().with_node(node)
    }

    /// This id with its node bits set to `node` (the random part is kept, never all zero).
    pub fn with_node(self, node: u16) -> WorkerId {
        let low = (self.0 & LOW_BITS).max(1);
        WorkerId((u64::from(node) << NODE_INDEX_SHIFT) | low)
    }

    /// The index of the node this process runs on (0: a node outside any cluster).
    pub fn node_index(self) -> u16 {
        (self.0 >> NODE_INDEX_SHIFT) as u16
    }
}

impl NodeId {
    /// A fresh random id.
    pub fn random() -> NodeId {
        NodeId(random_u64())
    }
}

/// Object ids made by a process: the owner's worker id in the high half, a counter in the low
/// half, so the owner of any object can be read off its id.
pub fn object_id(owner: WorkerId, seq: u64) -> ObjectId {
    ObjectId::from_u128((u128::from(owner.0) << 64) | u128::from(seq))
}

/// The id of item `index` of streaming task `task`: the task's id with `index + 1` in bits
/// 40..64 of its sequence number (a process makes fewer than 2^40 objects, a stream at most
/// 2^24 - 1 items), so it has the task's owner.
pub fn item_id(task: ObjectId, index: u64) -> ObjectId {
    ObjectId::from_u128(task.as_u128() + (u128::from(index + 1) << 40))
}

/// Items a stream may yield (see [`item_id`]).
pub const MAX_STREAM_ITEMS: u64 = (1 << 24) - 1;

/// The worker that owns (created) an object.
pub fn owner_of(id: ObjectId) -> WorkerId {
    WorkerId((id.as_u128() >> 64) as u64)
}

/// The name of the socket a core worker listens on (for task pushes and owner requests), in
/// the abstract namespace: `unix:@` followed by this.
pub fn worker_socket(session: &str, worker: WorkerId) -> String {
    format!("{session}-w{}", worker.0)
}

/// The index of the node whose process owns an object.
pub fn node_of(id: ObjectId) -> u16 {
    owner_of(id).node_index()
}

fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is valid for 8 bytes of writes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    let mut v = u64::from_le_bytes(buf);
    if n != 8 {
        // No getrandom: fall back to time and pid, which is unique enough on one host.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        v = t ^ (u64::from(std::process::id()) << 40);
    }
    v.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_read_off_the_id() {
        let w = WorkerId::random();
        assert_eq!(owner_of(object_id(w, 77)), w);
        assert_ne!(object_id(w, 1), object_id(w, 2));
        assert_ne!(WorkerId::random(), WorkerId::random());
        let w = WorkerId::on_node(7);
        assert_eq!(w.node_index(), 7);
        assert_eq!(node_of(object_id(w, 3)), 7);
        assert_eq!(WorkerId(0).with_node(2).node_index(), 2);
        assert_ne!(WorkerId(0).with_node(2).0 & LOW_BITS, 0);
    }
}
