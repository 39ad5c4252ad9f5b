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
}

impl WorkerId {
    /// A fresh random id (from the OS's randomness, mixed with the pid and time).
    pub fn random() -> WorkerId {
        WorkerId(random_u64())
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

/// The worker that owns (created) an object.
pub fn owner_of(id: ObjectId) -> WorkerId {
    WorkerId((id.as_u128() >> 64) as u64)
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
    }
}
