//! The object table: which objects exist, where they are, who pins them, and what to evict.
//!
//! Pure bookkeeping over offsets (it never touches the arena's memory), so every rule here is
//! unit-tested without shared memory. The [`Store`](crate::Store) holds one behind a mutex.
//!
//! Rules, following Ray's plasma store:
//! - create → seal → (pin → release)* → delete. Only sealed objects can be pinned.
//! - A pinned object is never freed: `delete` of a pinned object frees it at the last release.
//! - Sealed, unpinned objects that are *evictable* (secondary copies) sit in an LRU list ordered
//!   by their last release; `create` evicts from its cold end when space runs out. Objects that
//!   are not evictable (primary copies) are never evicted; the raylet spills them instead.
//! - Every pin and every unsealed object belongs to a [`ClientId`], so a client that disconnects
//!   or dies leaks nothing: [`ObjectTable::disconnect`] releases its pins and aborts its writes.

use std::collections::{BTreeMap, HashMap};

use crate::allocator::Allocator;
use crate::error::{Result, StoreError};
use crate::header::HEADER_SIZE;
use crate::ObjectId;

/// Payloads of at least this many bytes start on a page boundary.
pub const PAGE_ALIGNED_FROM: u64 = 16 << 10;
const PAGE: u64 = 4096;

/// Who holds a pin or is writing an object: one per connected process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl ClientId {
    /// The process that owns the store (the raylet, or a driver embedding it).
    pub const OWNER: ClientId = ClientId(0);
}

/// Options for a new object.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// Type fingerprint recorded in the header (0: untyped bytes).
    pub fingerprint: u64,
    /// Whether the object may be evicted when unpinned (a secondary copy). Primary copies are not.
    pub evictable: bool,
}

/// Where an object's block and payload are in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Offset of the block (its header).
    pub block: u64,
    /// Offset of the payload (`block + HEADER_SIZE`), 64-byte aligned.
    pub data: u64,
    /// Payload length in bytes.
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created { creator: ClientId },
    Sealed,
}

#[derive(Debug)]
struct Entry {
    loc: Location,
    block_size: u64,
    fingerprint: u64,
    state: State,
    pins: u32,
    evictable: bool,
    delete_pending: bool,
    /// Key in the LRU map while the object is a candidate for eviction.
    lru_tick: Option<u64>,
}

/// Facts about one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Where it is.
    pub location: Location,
    /// Type fingerprint from creation.
    pub fingerprint: u64,
    /// Sealed yet?
    pub sealed: bool,
    /// Pins held by all clients.
    pub pins: u32,
    /// Evictable when unpinned?
    pub evictable: bool,
}

/// Counters of the store's use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Arena bytes the allocator manages.
    pub capacity: u64,
    /// Bytes in live blocks (headers and padding included).
    pub used: u64,
    /// Objects in the table.
    pub objects: u64,
    /// Bytes of sealed objects with at least one pin.
    pub pinned: u64,
    /// Bytes of objects still being written.
    pub unsealed: u64,
    /// Bytes of sealed, unpinned, non-evictable objects.
    pub primary: u64,
    /// Bytes of sealed, unpinned, evictable objects (what eviction can free).
    pub evictable: u64,
    /// Objects evicted since the start.
    pub evictions: u64,
    /// Largest block that could be allocated without evicting.
    pub largest_free: u64,
}

/// The table of objects in one arena.
#[derive(Debug)]
pub struct ObjectTable {
    alloc: Allocator,
    entries: HashMap<ObjectId, Entry>,
    /// Eviction candidates, coldest first.
    lru: BTreeMap<u64, ObjectId>,
    tick: u64,
    pins_by_client: HashMap<ClientId, HashMap<ObjectId, u32>>,
    /// Objects evicted and not yet reported (the raylet drains this to update its directory).
    evicted: Vec<ObjectId>,
    evictions: u64,
    /// Blocks freed since the last drain (the store marks their headers free).
    freed_blocks: Vec<u64>,
}

impl ObjectTable {
    /// A table over an arena of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        ObjectTable {
            alloc: Allocator::new(capacity),
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            pins_by_client: HashMap::new(),
            evicted: Vec::new(),
            evictions: 0,
            freed_blocks: Vec::new(),
        }
    }

    /// Reserves space for an object of `len` payload bytes, evicting cold evictable objects if
    /// needed. The object is `Created` and belongs to `creator` until sealed.
    pub fn create(
        &mut self,
        id: ObjectId,
        len: u64,
        opts: CreateOptions,
        creator: ClientId,
    ) -> Result<Location> {
        if self.entries.contains_key(&id) {
            return Err(StoreError::ObjectExists(id));
        }
        let need = len.saturating_add(HEADER_SIZE);
        let Some(block_size) = self.alloc.block_size(need) else {
            return Err(StoreError::ObjectTooLarge {
                size: need,
                capacity: self.alloc.capacity(),
            });
        };
        let block = loop {
            let block = if len >= PAGE_ALIGNED_FROM {
                // Payload on a page boundary: glibc's memcpy is ~4x slower into a destination
                // whose page offset differs from the source's (4K aliasing), and pages suit
                // huge pages and direct I/O when spilling.
                self.alloc
                    .allocate_aligned(block_size, PAGE, PAGE - HEADER_SIZE)
            } else {
                self.alloc.allocate(block_size)
            };
            if let Some(block) = block {
                break block;
            }
            if !self.evict_one() {
                return Err(self.full_error(need));
            }
        };
        let loc = Location {
            block,
            data: block + HEADER_SIZE,
            len,
        };
        self.entries.insert(
            id,
            Entry {
                loc,
                block_size,
                fingerprint: opts.fingerprint,
                state: State::Created { creator },
                pins: 0,
                evictable: opts.evictable,
                delete_pending: false,
                lru_tick: None,
            },
        );
        Ok(loc)
    }

    /// Makes a created object immutable and readable.
    pub fn seal(&mut self, id: ObjectId) -> Result<Location> {
        let e = self
            .entries
            .get_mut(&id)
            .ok_or(StoreError::ObjectNotFound(id))?;
        if e.state == State::Sealed {
            return Err(StoreError::AlreadySealed(id));
        }
        e.state = State::Sealed;
        let loc = e.loc;
        self.update_lru(id);
        Ok(loc)
    }

    /// Drops an object that was created but not sealed (its writer gave up or died).
    pub fn abort(&mut self, id: ObjectId) -> Result<()> {
        match self.entries.get(&id) {
            None => Err(StoreError::ObjectNotFound(id)),
            Some(e) if e.state == State::Sealed => Err(StoreError::AlreadySealed(id)),
            Some(_) => {
                self.free(id);
                Ok(())
            }
        }
    }

    /// Pins a sealed object for `client`: it will not be freed or evicted until released.
    pub fn pin(&mut self, id: ObjectId, client: ClientId) -> Result<Location> {
        let e = self
            .entries
            .get_mut(&id)
            .ok_or(StoreError::ObjectNotFound(id))?;
        if e.state != State::Sealed {
            return Err(StoreError::NotSealed(id));
        }
        if e.delete_pending {
            // Deleted while others still read it: new readers must not find it.
            return Err(StoreError::ObjectNotFound(id));
        }
        e.pins += 1;
        let loc = e.loc;
        *self
            .pins_by_client
            .entry(client)
            .or_default()
            .entry(id)
            .or_insert(0) += 1;
        self.update_lru(id);
        Ok(loc)
    }

    /// Releases one pin `client` holds on `id`.
    pub fn release(&mut self, id: ObjectId, client: ClientId) -> Result<()> {
        let not_pinned = || StoreError::NotPinned {
            id,
            client: client.0,
        };
        let pins = self
            .pins_by_client
            .get_mut(&client)
            .ok_or_else(not_pinned)?;
        let n = pins.get_mut(&id).ok_or_else(not_pinned)?;
        *n -= 1;
        if *n == 0 {
            pins.remove(&id);
            if pins.is_empty() {
                self.pins_by_client.remove(&client);
            }
        }
        self.unpin(id, 1);
        Ok(())
    }

    /// Deletes an object: at once when unpinned, else when its last pin is released. An unsealed
    /// object is aborted. Returns whether the space was freed now.
    pub fn delete(&mut self, id: ObjectId) -> Result<bool> {
        let e = self
            .entries
            .get_mut(&id)
            .ok_or(StoreError::ObjectNotFound(id))?;
        if e.pins > 0 {
            e.delete_pending = true;
            return Ok(false);
        }
        self.free(id);
        Ok(true)
    }

    /// Primary copies that spilling could free now (sealed, unpinned, not evictable, not being
    /// deleted), largest first, until they add up to `at_least` bytes: `(id, location,
    /// fingerprint)`.
    pub fn spill_candidates(&self, at_least: u64) -> Vec<(ObjectId, Location, u64)> {
        let mut all: Vec<(ObjectId, Location, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.state == State::Sealed && e.pins == 0 && !e.evictable && !e.delete_pending
            })
            .map(|(id, e)| (*id, e.loc, e.fingerprint))
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.1.len));
        let mut sum = 0u64;
        let mut out = Vec::new();
        for c in all {
            if sum >= at_least {
                break;
            }
            sum = sum.saturating_add(c.1.len);
            out.push(c);
        }
        out
    }

    /// Frees a sealed object unless somebody pins it (its bytes were spilled to disk). Returns
    /// whether it was freed.
    pub fn free_if_unpinned(&mut self, id: ObjectId) -> Result<bool> {
        let e = self
            .entries
            .get(&id)
            .ok_or(StoreError::ObjectNotFound(id))?;
        if e.state != State::Sealed || e.pins > 0 || e.delete_pending {
            return Ok(false);
        }
        self.free(id);
        Ok(true)
    }

    /// Marks an object evictable (a secondary copy) or not (a primary copy).
    pub fn set_evictable(&mut self, id: ObjectId, evictable: bool) -> Result<()> {
        let e = self
            .entries
            .get_mut(&id)
            .ok_or(StoreError::ObjectNotFound(id))?;
        e.evictable = evictable;
        self.update_lru(id);
        Ok(())
    }

    /// Releases every pin of `client` and aborts the objects it was writing. Returns
    /// `(pins released, writes aborted)`.
    pub fn disconnect(&mut self, client: ClientId) -> (u64, u64) {
        let mut released = 0;
        if let Some(pins) = self.pins_by_client.remove(&client) {
            for (id, n) in pins {
                released += u64::from(n);
                self.unpin(id, n);
            }
        }
        let unsealed: Vec<ObjectId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Created { creator: client })
            .map(|(id, _)| *id)
            .collect();
        for id in &unsealed {
            self.free(*id);
        }
        (released, unsealed.len() as u64)
    }

    /// Facts about one object.
    pub fn info(&self, id: ObjectId) -> Option<ObjectInfo> {
        self.entries.get(&id).map(|e| ObjectInfo {
            location: e.loc,
            fingerprint: e.fingerprint,
            sealed: e.state == State::Sealed,
            pins: e.pins,
            evictable: e.evictable,
        })
    }

    /// Ids of every object in the table.
    pub fn ids(&self) -> Vec<ObjectId> {
        self.entries.keys().copied().collect()
    }

    /// Whether `id` is in the table (sealed or not, even if a delete is pending).
    pub fn contains(&self, id: ObjectId) -> bool {
        self.entries.contains_key(&id)
    }

    /// Counters of use. O(objects): for status reports, not hot paths.
    pub fn stats(&self) -> StoreStats {
        let mut s = StoreStats {
            capacity: self.alloc.capacity(),
            used: self.alloc.used(),
            objects: self.entries.len() as u64,
            evictions: self.evictions,
            largest_free: self.alloc.largest_free(),
            ..StoreStats::default()
        };
        for e in self.entries.values() {
            let bucket = match (e.state, e.pins, e.evictable) {
                (State::Created { .. }, _, _) => &mut s.unsealed,
                (State::Sealed, 1.., _) => &mut s.pinned,
                (State::Sealed, 0, false) => &mut s.primary,
                (State::Sealed, 0, true) => &mut s.evictable,
            };
            *bucket += e.block_size;
        }
        s
    }

    /// Objects evicted since the last call.
    pub fn take_evicted(&mut self) -> Vec<ObjectId> {
        std::mem::take(&mut self.evicted)
    }

    /// Blocks freed since the last call.
    pub(crate) fn take_freed_blocks(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.freed_blocks)
    }

    pub(crate) fn has_freed_blocks(&self) -> bool {
        !self.freed_blocks.is_empty()
    }

    fn unpin(&mut self, id: ObjectId, n: u32) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.pins = e.pins.saturating_sub(n);
        if e.pins == 0 && e.delete_pending {
            self.free(id);
        } else {
            self.update_lru(id);
        }
    }

    /// Puts `id` in or out of the LRU list according to its state; a re-entry counts as the
    /// most recent use.
    fn update_lru(&mut self, id: ObjectId) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        let candidate = e.state == State::Sealed && e.pins == 0 && e.evictable && !e.delete_pending;
        match (candidate, e.lru_tick) {
            (true, None) => {
                self.tick += 1;
                e.lru_tick = Some(self.tick);
                self.lru.insert(self.tick, id);
            }
            (false, Some(t)) => {
                e.lru_tick = None;
                self.lru.remove(&t);
            }
            _ => {}
        }
    }

    fn evict_one(&mut self) -> bool {
        let Some((_, id)) = self.lru.pop_first() else {
            return false;
        };
        if let Some(e) = self.entries.get_mut(&id) {
            e.lru_tick = None;
        }
        self.free(id);
        self.evicted.push(id);
        self.evictions += 1;
        true
    }

    fn free(&mut self, id: ObjectId) {
        if let Some(e) = self.entries.remove(&id) {
            if let Some(t) = e.lru_tick {
                self.lru.remove(&t);
            }
            self.alloc.free(e.loc.block);
            self.freed_blocks.push(e.loc.block);
        }
    }

    fn full_error(&self, requested: u64) -> StoreError {
        let s = self.stats();
        StoreError::ObjectStoreFull {
            requested,
            largest_free: s.largest_free,
            capacity: s.capacity,
            used: s.used,
            pinned: s.pinned,
            unsealed: s.unsealed,
            primary: s.primary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: ClientId = ClientId(1);
    const C2: ClientId = ClientId(2);

    fn id(n: u128) -> ObjectId {
        ObjectId::from_u128(n)
    }

    fn evictable() -> CreateOptions {
        CreateOptions {
            fingerprint: 0,
            evictable: true,
        }
    }

    /// Table with room for exactly four 1 KiB objects.
    fn table4() -> ObjectTable {
        ObjectTable::new(4 * (1024 + HEADER_SIZE))
    }

    fn put(t: &mut ObjectTable, n: u128, opts: CreateOptions) -> Result<Location> {
        t.create(id(n), 1024, opts, ClientId::OWNER)?;
        t.seal(id(n))
    }

    #[test]
    fn lifecycle() {
        let mut t = table4();
        let loc = t.create(id(1), 10, CreateOptions::default(), C1).unwrap();
        assert_eq!(loc.data, loc.block + HEADER_SIZE);
        assert!(matches!(t.pin(id(1), C2), Err(StoreError::NotSealed(_))));
        t.seal(id(1)).unwrap();
        assert!(matches!(t.seal(id(1)), Err(StoreError::AlreadySealed(_))));
        assert_eq!(t.pin(id(1), C2).unwrap(), loc);
        assert!(matches!(
            t.release(id(1), C1),
            Err(StoreError::NotPinned { .. })
        ));
        t.release(id(1), C2).unwrap();
        assert!(t.delete(id(1)).unwrap());
        assert!(!t.contains(id(1)));
        assert_eq!(t.stats().used, 0);
    }

    #[test]
    fn duplicate_and_too_large() {
        let mut t = table4();
        put(&mut t, 1, CreateOptions::default()).unwrap();
        assert!(matches!(
            put(&mut t, 1, CreateOptions::default()),
            Err(StoreError::ObjectExists(_))
        ));
        let err = t
            .create(id(2), 1 << 20, CreateOptions::default(), C1)
            .unwrap_err();
        assert!(matches!(err, StoreError::ObjectTooLarge { .. }), "{err}");
    }

    #[test]
    fn full_store_names_what_holds_memory() {
        let mut t = table4();
        put(&mut t, 1, CreateOptions::default()).unwrap();
        put(&mut t, 2, evictable()).unwrap();
        t.pin(id(2), C1).unwrap();
        t.create(id(3), 1024, CreateOptions::default(), C1).unwrap();
        put(&mut t, 4, CreateOptions::default()).unwrap();
        let err = put(&mut t, 5, evictable()).unwrap_err();
        let StoreError::ObjectStoreFull {
            pinned,
            unsealed,
            primary,
            ..
        } = err
        else {
            panic!("{err}")
        };
        let block = 1024 + HEADER_SIZE;
        assert_eq!((pinned, unsealed, primary), (block, block, 2 * block));
        assert!(err.to_string().contains("object_store_memory"));
        // Nothing was evicted to make that attempt.
        assert!(t.take_evicted().is_empty());
        assert_eq!(t.stats().objects, 4);
    }

    #[test]
    fn spill_candidates_are_unpinned_sealed_primaries_largest_first() {
        let mut t = ObjectTable::new(1 << 20);
        let primary = CreateOptions::default();
        for (n, len) in [(1u128, 1000u64), (2, 5000), (3, 3000)] {
            let id = id(n);
            t.create(id, len, primary, ClientId(1)).unwrap();
            t.seal(id).unwrap();
        }
        t.create(id(4), 9000, evictable(), ClientId(1)).unwrap();
        t.seal(id(4)).unwrap();
        t.create(id(5), 8000, primary, ClientId(1)).unwrap(); // unsealed
        t.pin(id(3), ClientId(2)).unwrap();
        let c: Vec<u64> = t.spill_candidates(5500).iter().map(|c| c.1.len).collect();
        assert_eq!(c, vec![5000, 1000]);
        assert!(!t.free_if_unpinned(id(3)).unwrap(), "a pinned object stays");
        assert!(t.free_if_unpinned(id(2)).unwrap());
        assert!(t.info(id(2)).is_none());
    }

    #[test]
    fn evicts_least_recently_released_first_and_never_pinned_or_primary() {
        let mut t = table4();
        put(&mut t, 1, evictable()).unwrap();
        put(&mut t, 2, evictable()).unwrap();
        put(&mut t, 3, evictable()).unwrap();
        put(&mut t, 4, CreateOptions::default()).unwrap(); // primary
                                                           // Touch 1: it becomes the most recent.
        t.pin(id(1), C1).unwrap();
        t.release(id(1), C1).unwrap();
        // Pin 2: it cannot be evicted.
        t.pin(id(2), C2).unwrap();
        put(&mut t, 5, evictable()).unwrap();
        assert_eq!(t.take_evicted(), vec![id(3)]);
        put(&mut t, 6, evictable()).unwrap();
        assert_eq!(t.take_evicted(), vec![id(1)]);
        // Left: 2 (pinned), 4 (primary), 5, 6. The next evicts 5, then 6, then fails.
        put(&mut t, 7, evictable()).unwrap();
        put(&mut t, 8, evictable()).unwrap();
        assert_eq!(t.take_evicted(), vec![id(5), id(6)]);
        t.pin(id(7), C1).unwrap();
        t.pin(id(8), C1).unwrap();
        assert!(matches!(
            put(&mut t, 9, evictable()),
            Err(StoreError::ObjectStoreFull { .. })
        ));
        assert!(t.contains(id(2)) && t.contains(id(4)));
    }

    #[test]
    fn delete_of_pinned_waits_for_last_release() {
        let mut t = table4();
        put(&mut t, 1, CreateOptions::default()).unwrap();
        t.pin(id(1), C1).unwrap();
        t.pin(id(1), C2).unwrap();
        assert!(!t.delete(id(1)).unwrap());
        assert!(
            matches!(t.pin(id(1), C1), Err(StoreError::ObjectNotFound(_))),
            "a deleted object is not handed to new readers"
        );
        t.release(id(1), C1).unwrap();
        assert!(t.contains(id(1)));
        t.release(id(1), C2).unwrap();
        assert!(!t.contains(id(1)));
        assert_eq!(t.stats().used, 0);
    }

    #[test]
    fn disconnect_releases_pins_and_aborts_writes() {
        let mut t = table4();
        put(&mut t, 1, evictable()).unwrap();
        t.pin(id(1), C1).unwrap();
        t.pin(id(1), C1).unwrap();
        t.create(id(2), 100, CreateOptions::default(), C1).unwrap();
        t.create(id(3), 100, CreateOptions::default(), C2).unwrap();
        assert_eq!(t.disconnect(C1), (2, 1));
        assert_eq!(t.info(id(1)).unwrap().pins, 0);
        assert!(!t.contains(id(2)));
        assert!(t.contains(id(3)), "other clients' writes survive");
        assert_eq!(t.stats().evictable, 1024 + HEADER_SIZE);
    }
}
