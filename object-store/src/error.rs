//! The store's error type.

use crate::ObjectId;

/// Everything the object store can refuse, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Nothing more can be freed to make room for an object.
    #[error(
        "object store full: cannot allocate {requested} bytes (largest free block {largest_free} \
         bytes); capacity {capacity} bytes, in use {used} bytes: {pinned} pinned by readers, \
         {unsealed} being written, {primary} held as primary copies that are never evicted. \
         Drop refs or views you no longer need, or raise object_store_memory"
    )]
    ObjectStoreFull {
        /// Bytes the failed request needed (header included).
        requested: u64,
        /// Largest contiguous free block at the time.
        largest_free: u64,
        /// Arena size.
        capacity: u64,
        /// Bytes in live blocks.
        used: u64,
        /// Bytes of sealed objects held by at least one pin.
        pinned: u64,
        /// Bytes of objects created but not sealed yet.
        unsealed: u64,
        /// Bytes of sealed, unpinned objects that are not evictable (primary copies).
        primary: u64,
    },
    /// The object can never fit, whatever is freed.
    #[error(
        "object of {size} bytes is larger than the whole object store ({capacity} bytes); \
         raise object_store_memory or split the object"
    )]
    ObjectTooLarge {
        /// Bytes the object needs (header included).
        size: u64,
        /// Arena size.
        capacity: u64,
    },
    /// An object with this id already exists.
    #[error("object {0} already exists in the store (object ids must be unique)")]
    ObjectExists(ObjectId),
    /// No object with this id is in the store.
    #[error("object {0} is not in the store (never created here, deleted or evicted)")]
    ObjectNotFound(ObjectId),
    /// The object is still being written.
    #[error("object {0} is not sealed yet: its creator has not finished writing it")]
    NotSealed(ObjectId),
    /// The object was already sealed.
    #[error("object {0} is already sealed; sealed objects are immutable")]
    AlreadySealed(ObjectId),
    /// A release without a matching pin.
    #[error("object {id} is not pinned by client {client}: release without a matching get")]
    NotPinned {
        /// The object.
        id: ObjectId,
        /// The client that released.
        client: u64,
    },
    /// A typed read asked for another type than the object holds.
    #[error(
        "type mismatch reading object {id}: it holds a value with type fingerprint {stored:#018x}, \
         but the read asked for `{expected}` ({expected_fingerprint:#018x}); get it with the type \
         it was put with"
    )]
    TypeMismatch {
        /// The object.
        id: ObjectId,
        /// Name of the type the read asked for.
        expected: &'static str,
        /// Fingerprint of that type.
        expected_fingerprint: u64,
        /// Fingerprint recorded in the object's header.
        stored: u64,
    },
    /// The bytes of an object are not a valid archive of the requested type.
    #[error("object {id} is corrupt or not a `{ty}`: {reason}")]
    Corrupt {
        /// The object.
        id: ObjectId,
        /// The type the read asked for.
        ty: &'static str,
        /// What the validator found.
        reason: String,
    },
    /// A value could not be serialized.
    #[error("serializing a `{ty}` failed: {reason}")]
    Serialize {
        /// The type.
        ty: &'static str,
        /// What rkyv reported.
        reason: String,
    },
    /// An offset handed to a reader does not point at the expected object.
    #[error("no sealed object {id} at offset {offset} of the arena: {reason}")]
    BadLocation {
        /// The object looked for.
        id: ObjectId,
        /// The offset given.
        offset: u64,
        /// What was found instead.
        reason: &'static str,
    },
    /// A memfd arena larger than the machine's memory (RAM and swap): its pages could never
    /// all exist.
    #[error(
        "the object store needs {requested} bytes but this machine has {memory} bytes of memory \
         (RAM and swap): set a smaller object_store_memory (the default is 30% of RAM)"
    )]
    StoreTooLarge {
        /// Bytes asked for.
        requested: u64,
        /// RAM and swap, in bytes.
        memory: u64,
    },
    /// `/dev/shm` (or the chosen directory) has less room than the arena needs.
    #[error(
        "{dir} has {available} bytes free but the object store needs {requested}: enlarge it \
         (e.g. `mount -o remount,size=<bytes> /dev/shm`, or `--shm-size` for docker) or set a \
         smaller object_store_memory"
    )]
    ShmTooSmall {
        /// The directory holding the arena file.
        dir: String,
        /// Bytes free there.
        available: u64,
        /// Bytes asked for.
        requested: u64,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
