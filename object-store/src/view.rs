//! Pinned, read-only byte views of sealed objects.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::arena::Arena;
use crate::error::{Result, StoreError};
use crate::header::{self, BlockState, HEADER_SIZE};
use crate::ObjectId;

/// Heap storage for small objects: 16-byte aligned, as rkyv needs.
pub type HeapBytes = rkyv::util::AlignedVec<16>;

/// What releases a view's pin when it drops: the store itself for views in the owner process,
/// or a client's guard (e.g. one that tells the raylet over IPC) elsewhere.
pub(crate) enum PinGuard {
    /// Pinned in a [`Store`](crate::Store) of this process.
    Local(crate::store::Store),
    /// Pinned by someone else, or heap bytes kept alive; dropping the box releases it.
    External(#[allow(dead_code)] Box<dyn Send + Sync>),
}

/// The bytes of a sealed object, read in place from the shared arena. The object is pinned (never
/// freed or evicted) until this value drops.
pub struct ObjectBytes {
    ptr: NonNull<u8>,
    len: usize,
    id: ObjectId,
    fingerprint: u64,
    /// The mapping the bytes live in (`None` for bytes on the heap).
    arena: Option<Arc<Arena>>,
    guard: PinGuard,
}

// SAFETY: the bytes are immutable (sealed) shared memory kept mapped by `arena` and kept from
// being freed by `guard`; reading them from any thread is sound.
unsafe impl Send for ObjectBytes {}
// SAFETY: as above; there is no interior mutability.
unsafe impl Sync for ObjectBytes {}

impl ObjectBytes {
    /// Reads the sealed object `id` whose block starts at `block` in `arena` (an arena mapped by
    /// this process with [`Arena::open`]). `pin` must keep the object pinned in its store until it
    /// drops; it is dropped with the view. Fails with [`StoreError::BadLocation`] when the header
    /// there does not describe that sealed object.
    pub fn from_arena(
        arena: Arc<Arena>,
        block: u64,
        id: ObjectId,
        pin: Box<dyn Send + Sync>,
    ) -> Result<ObjectBytes> {
        Self::new(arena, block, id, PinGuard::External(pin))
    }

    pub(crate) fn new(
        arena: Arc<Arena>,
        block: u64,
        id: ObjectId,
        guard: PinGuard,
    ) -> Result<ObjectBytes> {
        let bad = |reason| StoreError::BadLocation {
            id,
            offset: block,
            reason,
        };
        let info = header::read(&arena, block).ok_or_else(|| bad("no object header"))?;
        if info.id != id {
            return Err(bad("another object is there"));
        }
        if info.state != BlockState::Sealed {
            return Err(bad("the object is not sealed"));
        }
        let data = block + HEADER_SIZE;
        let ptr = arena
            .ptr(data, info.data_len)
            .and_then(NonNull::new)
            .ok_or_else(|| bad("the object's length runs past the arena"))?;
        let len = usize::try_from(info.data_len).map_err(|_| bad("length overflows usize"))?;
        Ok(ObjectBytes {
            ptr,
            len,
            id,
            fingerprint: info.fingerprint,
            arena: Some(arena),
            guard,
        })
    }

    /// Bytes of a small object kept on the heap (inline values never enter the arena), so the
    /// same typed views work for them. `bytes` must be 16-byte aligned for rkyv.
    pub fn from_heap(id: ObjectId, fingerprint: u64, bytes: Arc<HeapBytes>) -> ObjectBytes {
        let ptr = NonNull::new(bytes.as_ptr().cast_mut()).unwrap_or(NonNull::dangling());
        ObjectBytes {
            ptr,
            len: bytes.len(),
            id,
            fingerprint,
            arena: None,
            guard: PinGuard::External(Box::new(bytes)),
        }
    }

    /// Bytes at `ptr..ptr + len` that `guard` keeps mapped, immutable and alive.
    pub(crate) fn with_guard(
        ptr: NonNull<u8>,
        len: usize,
        id: ObjectId,
        fingerprint: u64,
        guard: PinGuard,
    ) -> ObjectBytes {
        ObjectBytes {
            ptr,
            len,
            id,
            fingerprint,
            arena: None,
            guard,
        }
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The type fingerprint recorded when the object was created (0 for untyped bytes).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The payload, in place in shared memory (64-byte aligned).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` lies in the mapping (checked in `new`), which `self.arena`
        // keeps alive, or in the heap buffer or file mapping `guard` owns; the object is sealed (or the buffer
        // is shared read-only), so nobody writes it, and `guard` keeps it from being freed and
        // reused while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The arena the bytes live in, or `None` for heap bytes and objects kept in files.
    pub fn arena(&self) -> Option<&Arc<Arena>> {
        self.arena.as_ref()
    }
}

impl std::ops::Deref for ObjectBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for ObjectBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for ObjectBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBytes")
            .field("id", &self.id)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for ObjectBytes {
    fn drop(&mut self) {
        if let PinGuard::Local(store) = &self.guard {
            store.release_local(self.id);
        }
    }
}
