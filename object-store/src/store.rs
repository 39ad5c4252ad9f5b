//! The store: an [`Arena`] and its [`ObjectTable`], shared by every thread of the owner process.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::arena::{Arena, ArenaOptions};
use crate::error::{Result, StoreError};
use crate::header::{self, BlockState};
use crate::table::{ClientId, CreateOptions, Location, ObjectInfo, ObjectTable, StoreStats};
use crate::typed::{encode_into, encoded_len, fingerprint, Object, ObjectView};
use crate::view::{ObjectBytes, PinGuard};
use crate::ObjectId;

/// A node's object store, owned by one process (the raylet, or a driver embedding it).
///
/// Cheap to clone (all clones are the same store). In-process users call the RAII methods
/// ([`put`](Self::put), [`create`](Self::create), [`get`](Self::get), [`get_view`](Self::get_view));
/// the raylet serves other processes with the `*_for` methods, which name the
/// [`ClientId`] holding each pin so [`disconnect`](Self::disconnect) can release a dead
/// client's pins.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    arena: Arc<Arena>,
    table: Mutex<ObjectTable>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("arena", &self.shared.arena.path())
            .field("capacity", &self.shared.arena.size())
            .finish()
    }
}

impl Store {
    /// Creates a store over a new arena.
    pub fn new(opts: &ArenaOptions) -> Result<Store> {
        let arena = Arena::create(opts)?;
        let table = ObjectTable::new(arena.size());
        Ok(Store {
            shared: Arc::new(Shared {
                arena: Arc::new(arena),
                table: Mutex::new(table),
            }),
        })
    }

    /// The arena, e.g. for its [`path`](Arena::path) to hand to clients.
    pub fn arena(&self) -> &Arc<Arena> {
        &self.shared.arena
    }

    /// Path of the arena file, which other processes map with [`Arena::open`].
    pub fn arena_path(&self) -> &Path {
        self.shared.arena.path()
    }

    fn table(&self) -> MutexGuard<'_, ObjectTable> {
        // A panic while holding the lock cannot leave the table half-updated in a way that
        // matters more than stopping the store would, so a poisoned lock is used as is.
        self.shared
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the headers of freed blocks, so a stale offset is detected by readers.
    fn clear_freed(&self, table: &mut ObjectTable) {
        if table.has_freed_blocks() {
            for block in table.take_freed_blocks() {
                header::set_state(&self.shared.arena, block, BlockState::Free);
            }
        }
    }

    // ---- the raw API, for the raylet serving other processes ----

    /// Reserves an object of `len` bytes for `client` to write; returns where. The caller writes
    /// the payload at `Location::data` and then calls [`seal`](Self::seal).
    pub fn create_for(
        &self,
        client: ClientId,
        id: ObjectId,
        len: u64,
        opts: CreateOptions,
    ) -> Result<Location> {
        let mut table = self.table();
        let loc = table.create(id, len, opts, client)?;
        // Freed blocks first: one of them may be the block just handed out.
        self.clear_freed(&mut table);
        if let Err(e) = self.shared.arena.reserve_upto(loc.data + len) {
            let _ = table.abort(id);
            self.clear_freed(&mut table);
            return Err(e);
        }
        header::write(&self.shared.arena, loc.block, id, len, opts.fingerprint);
        Ok(loc)
    }

    /// Seals an object: it becomes immutable and readable by everyone.
    pub fn seal(&self, id: ObjectId) -> Result<Location> {
        let mut table = self.table();
        let loc = table.seal(id)?;
        header::set_state(&self.shared.arena, loc.block, BlockState::Sealed);
        Ok(loc)
    }

    /// Drops an object that was created but not sealed.
    pub fn abort(&self, id: ObjectId) -> Result<()> {
        let mut table = self.table();
        table.abort(id)?;
        self.clear_freed(&mut table);
        Ok(())
    }

    /// Pins a sealed object for `client` and returns where it is.
    pub fn pin_for(&self, client: ClientId, id: ObjectId) -> Result<Location> {
        self.table().pin(id, client)
    }

    /// Releases one pin of `client` on `id`.
    pub fn release_for(&self, client: ClientId, id: ObjectId) -> Result<()> {
        let mut table = self.table();
        table.release(id, client)?;
        self.clear_freed(&mut table);
        Ok(())
    }

    /// Releases every pin of `client` and aborts its unsealed objects (it disconnected or died).
    /// Returns `(pins released, writes aborted)`.
    pub fn disconnect(&self, client: ClientId) -> (u64, u64) {
        let mut table = self.table();
        let r = table.disconnect(client);
        self.clear_freed(&mut table);
        r
    }

    /// Deletes an object (when its last pin is released, if it is pinned). Returns whether the
    /// space was freed now.
    pub fn delete(&self, id: ObjectId) -> Result<bool> {
        let mut table = self.table();
        let now = table.delete(id)?;
        self.clear_freed(&mut table);
        Ok(now)
    }

    /// Primary copies spilling could free now, largest first, adding up to `at_least` bytes:
    /// `(id, location, fingerprint)`.
    pub fn spill_candidates(&self, at_least: u64) -> Vec<(ObjectId, Location, u64)> {
        self.table().spill_candidates(at_least)
    }

    /// Frees a sealed object whose bytes were spilled, unless somebody pins it meanwhile.
    /// Returns whether it was freed.
    pub fn free_if_unpinned(&self, id: ObjectId) -> Result<bool> {
        let mut table = self.table();
        let freed = table.free_if_unpinned(id)?;
        self.clear_freed(&mut table);
        Ok(freed)
    }

    /// Marks an object evictable (secondary copy) or not (primary copy).
    pub fn set_evictable(&self, id: ObjectId, evictable: bool) -> Result<()> {
        self.table().set_evictable(id, evictable)
    }

    /// Facts about one object, or `None` when it is not here.
    pub fn info(&self, id: ObjectId) -> Option<ObjectInfo> {
        self.table().info(id)
    }

    /// Ids of every object in the store.
    pub fn object_ids(&self) -> Vec<ObjectId> {
        self.table().ids()
    }

    /// Whether the object is here (sealed or not).
    pub fn contains(&self, id: ObjectId) -> bool {
        self.table().contains(id)
    }

    /// Use counters.
    pub fn stats(&self) -> StoreStats {
        self.table().stats()
    }

    /// Objects evicted since the last call (for the raylet's object directory).
    pub fn take_evicted(&self) -> Vec<ObjectId> {
        self.table().take_evicted()
    }

    // ---- the in-process API ----

    /// Reserves an untyped object of `len` bytes to fill in place; seal it with
    /// [`ObjectWriter::seal`]. Dropping the writer unsealed aborts the object.
    pub fn create(&self, id: ObjectId, len: u64, opts: CreateOptions) -> Result<ObjectWriter> {
        let loc = self.create_for(ClientId::OWNER, id, len, opts)?;
        self.shared.arena.prefault(loc.data, loc.len);
        let ptr = self
            .shared
            .arena
            .ptr(loc.data, loc.len)
            .ok_or(StoreError::BadLocation {
                id,
                offset: loc.block,
                reason: "allocation outside the arena",
            })?;
        Ok(ObjectWriter {
            store: self.clone(),
            id,
            ptr,
            len: loc.len as usize,
            sealed: false,
        })
    }

    /// Encodes `value` straight into a new object and seals it (one copy of the bytes).
    pub fn put<T: Object>(&self, id: ObjectId, value: &T, evictable: bool) -> Result<Location> {
        let len = encoded_len(value)?;
        let opts = CreateOptions {
            fingerprint: fingerprint::<T>(),
            evictable,
        };
        let mut writer = self.create(id, len as u64, opts)?;
        encode_into(value, writer.as_mut_slice())?;
        writer.seal()
    }

    /// Pins a sealed object and returns its bytes in place.
    pub fn get(&self, id: ObjectId) -> Result<ObjectBytes> {
        let loc = self.pin_for(ClientId::OWNER, id)?;
        ObjectBytes::new(
            self.shared.arena.clone(),
            loc.block,
            id,
            PinGuard::Local(self.clone()),
        )
    }

    /// A zero-copy typed view of a sealed object; fails with [`StoreError::TypeMismatch`] when
    /// it holds another type.
    pub fn get_view<T: Object>(&self, id: ObjectId) -> Result<ObjectView<T>> {
        ObjectView::new(self.get(id)?)
    }

    /// An owned copy of a stored value.
    pub fn get_value<T: Object>(&self, id: ObjectId) -> Result<T> {
        self.get_view::<T>(id)?.deserialize()
    }

    pub(crate) fn release_local(&self, id: ObjectId) {
        // Only views made by `get` call this, each once, so the pin exists.
        let _ = self.release_for(ClientId::OWNER, id);
    }
}

/// A writable, not yet sealed object in the store. Dropping it without sealing aborts the object.
pub struct ObjectWriter {
    store: Store,
    id: ObjectId,
    ptr: *mut u8,
    len: usize,
    sealed: bool,
}

// SAFETY: the writer has exclusive use of its block until it seals or aborts it; moving that
// exclusive access to another thread is fine.
unsafe impl Send for ObjectWriter {}

impl ObjectWriter {
    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The payload to fill (64-byte aligned).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr..ptr + len` is inside the arena (checked in `Store::create`) and is the
        // block the allocator gave this object alone; until seal nobody else reads or writes it,
        // and `&mut self` makes this the only live slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Seals the object: immutable and readable from now on.
    pub fn seal(mut self) -> Result<Location> {
        self.sealed = true;
        self.store.seal(self.id)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if !self.sealed {
            let _ = self.store.abort(self.id);
        }
    }
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("id", &self.id)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkyv::{Archive, Deserialize, Serialize};

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Sample {
        name: String,
        values: Vec<f64>,
        seed: u64,
    }

    fn store(bytes: u64) -> Store {
        Store::new(&ArenaOptions::new(bytes)).unwrap()
    }

    fn id(n: u128) -> ObjectId {
        ObjectId::from_u128(n)
    }

    #[test]
    fn typed_round_trip_in_place() {
        let s = store(1 << 20);
        let v = Sample {
            name: "normals".into(),
            values: (0..100).map(|i| i as f64 * 0.5).collect(),
            seed: 42,
        };
        s.put(id(1), &v, false).unwrap();
        let view = s.get_view::<Sample>(id(1)).unwrap();
        assert_eq!(view.name, "normals");
        assert_eq!(view.values[7].to_native(), 3.5);
        assert_eq!(view.seed.to_native(), 42);
        // The view points into the arena, not into a copy.
        let base = s.arena().ptr(0, 0).unwrap() as usize;
        let at = view.bytes().as_ptr() as usize;
        assert!(at > base && at < base + (1 << 20));
        assert_eq!(at % 64, 0);
        assert_eq!(view.deserialize().unwrap(), v);
        assert_eq!(s.get_value::<Sample>(id(1)).unwrap(), v);
    }

    #[test]
    fn wrong_type_is_an_error() {
        let s = store(1 << 20);
        s.put(id(1), &vec![1u32, 2, 3], false).unwrap();
        let err = s.get_view::<Vec<u64>>(id(1)).unwrap_err();
        assert!(matches!(err, StoreError::TypeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("Vec<u64>"), "{err}");
        // Untyped bytes are not silently read as a type either.
        let mut w = s.create(id(2), 16, CreateOptions::default()).unwrap();
        w.as_mut_slice().fill(7);
        w.seal().unwrap();
        assert!(matches!(
            s.get_view::<u64>(id(2)),
            Err(StoreError::TypeMismatch { .. })
        ));
        assert_eq!(&*s.get(id(2)).unwrap(), &[7u8; 16]);
    }

    #[test]
    fn writer_dropped_unsealed_aborts() {
        let s = store(1 << 20);
        let w = s.create(id(1), 1000, CreateOptions::default()).unwrap();
        assert!(matches!(s.get(id(1)), Err(StoreError::NotSealed(_))));
        drop(w);
        assert!(!s.contains(id(1)));
        assert_eq!(s.stats().used, 0);
    }

    #[test]
    fn a_view_keeps_a_deleted_object_alive() {
        let s = store(1 << 20);
        s.put(id(1), &vec![9u8; 5000], false).unwrap();
        let view = s.get_view::<Vec<u8>>(id(1)).unwrap();
        assert!(!s.delete(id(1)).unwrap());
        assert!(s.get(id(1)).is_err(), "deleted: no new readers");
        assert!(view.iter().all(|&b| b == 9));
        drop(view);
        assert!(!s.contains(id(1)));
        assert_eq!(s.stats().used, 0);
    }

    #[test]
    fn eviction_frees_cold_objects_and_marks_headers() {
        // Room for three 8 KiB objects (small enough not to be page aligned).
        let s = store(3 * (8 * 1024 + 128));
        let payload = vec![1u8; 8 * 1024 - 64];
        for n in 1..=3 {
            s.put(id(n), &payload, true).unwrap();
        }
        let first = s.info(id(1)).unwrap().location;
        let pinned = s.get(id(2)).unwrap();
        s.put(id(4), &payload, true).unwrap();
        assert_eq!(s.take_evicted(), vec![id(1)]);
        // A reader with the evicted object's stale offset is told so, not handed other bytes.
        let stale = ObjectBytes::from_arena(s.arena().clone(), first.block, id(1), Box::new(()));
        assert!(matches!(stale, Err(StoreError::BadLocation { .. })));
        s.put(id(5), &payload, true).unwrap();
        assert_eq!(s.take_evicted(), vec![id(3)]);
        assert!(s.contains(id(2)), "pinned objects are never evicted");
        drop(pinned);
    }

    #[test]
    fn full_and_too_large() {
        let s = store(1 << 20);
        s.put(id(1), &vec![0u8; 600 << 10], false).unwrap();
        let err = s.put(id(2), &vec![0u8; 600 << 10], false).unwrap_err();
        assert!(matches!(err, StoreError::ObjectStoreFull { .. }), "{err}");
        let err = s.put(id(3), &vec![0u8; 2 << 20], false).unwrap_err();
        assert!(matches!(err, StoreError::ObjectTooLarge { .. }), "{err}");
        assert!(!s.contains(id(2)) && !s.contains(id(3)));
        assert!(
            s.get_view::<Vec<u8>>(id(1)).is_ok(),
            "nothing else was lost"
        );
    }

    #[test]
    fn large_payloads_start_on_a_page() {
        let s = store(8 << 20);
        s.put(id(1), &7u8, false).unwrap();
        s.put(id(2), &vec![3u8; 1 << 20], false).unwrap();
        let bytes = s.get(id(2)).unwrap();
        assert_eq!(bytes.as_ptr() as usize % 4096, 0);
    }

    #[test]
    fn zero_length_and_unit_values() {
        let s = store(1 << 20);
        s.put(id(1), &(), false).unwrap();
        s.get_value::<()>(id(1)).unwrap();
        s.put(id(2), &Vec::<u8>::new(), false).unwrap();
        assert!(s.get_view::<Vec<u8>>(id(2)).unwrap().is_empty());
    }

    #[test]
    fn disconnect_frees_a_dead_clients_pins() {
        let s = store(1 << 20);
        s.put(id(1), &7u64, true).unwrap();
        let client = ClientId(9);
        s.pin_for(client, id(1)).unwrap();
        s.create_for(client, id(2), 100, CreateOptions::default())
            .unwrap();
        assert_eq!(s.disconnect(client), (1, 1));
        assert_eq!(s.info(id(1)).unwrap().pins, 0);
        assert!(!s.contains(id(2)));
    }
}
