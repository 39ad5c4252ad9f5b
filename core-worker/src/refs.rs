//! The table of objects a process holds refs to: reference counts, values of small objects, and
//! waiting.
//!
//! Every object a process creates (by `put` or by submitting a task) is owned by it, as in Ray.
//! An owned entry counts local refs (`ObjectRef` handles), task refs (tasks in flight that take
//! the object as an argument), borrowers (other processes that deserialized refs to it) and
//! reservations (objects whose values contain refs to it). When all reach zero the entry goes, and
//! a stored object is deleted from the node's store. Small values live here, in the entry; large
//! ones in the store.
//!
//! A *borrowed* entry stands for an object another process owns: it counts this process's local
//! handles, and its value is fetched from the owner on first use.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use oxray_common::WorkerId;
use oxray_object_store::{HeapBytes, ObjectId};

use crate::error::Error;

/// Where an object's value is.
#[derive(Clone, Debug)]
pub(crate) enum ObjState {
    /// Its task has not finished.
    Pending,
    /// A small value, here.
    Inline {
        fingerprint: u64,
        bytes: Arc<HeapBytes>,
    },
    /// A large value, in the node's store.
    Stored {
        /// Index of the node holding the primary copy (0: this node, outside a cluster).
        node: u16,
    },
    /// Its task failed; every get returns this error.
    Failed(Error),
}

struct Entry {
    local: u32,
    task_refs: u32,
    borrowers: u32,
    reservations: u32,
    state: ObjState,
    /// Submitted tasks that wait for this object.
    dependents: Vec<ObjectId>,
    /// Objects whose refs this object's value contains (reserved while this one lives).
    contained: Vec<ObjectId>,
    /// `Some(owner)` for a borrowed entry.
    owner: Option<WorkerId>,
    /// A fetch from the owner is under way (borrowed entries).
    fetching: bool,
}

impl Entry {
    fn new(state: ObjState, owner: Option<WorkerId>) -> Entry {
        Entry {
            local: 1,
            task_refs: 0,
            borrowers: 0,
            reservations: 0,
            state,
            dependents: Vec::new(),
            contained: Vec::new(),
            owner,
            fetching: false,
        }
    }
}

/// What the caller must do after an entry went away.
#[derive(Default)]
pub(crate) struct Freed {
    /// Delete the object from the node's store (it was ours and stored there).
    pub delete_stored: Option<(ObjectId, u16)>,
    /// Release the reservations this object's value held.
    pub contained: Vec<ObjectId>,
    /// Tell this owner we no longer borrow the object.
    pub borrowed_from: Option<(WorkerId, ObjectId)>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<ObjectId, Entry>,
    /// Futures waiting for pending objects (`ObjectRef::await`), woken when each settles.
    wakers: HashMap<ObjectId, Vec<Waker>>,
    /// The most entries since the table last gave memory back (see [`Inner::after_remove`]).
    high_water: usize,
}

/// Entries the table must have held before shrinking pays.
const SHRINK_FROM: usize = 65_536;

impl Inner {
    /// After a removal: once a burst of at least [`SHRINK_FROM`] entries is down to an eighth,
    /// the table shrinks and the process's allocator returns its free memory to the system
    /// (a million finished tasks would otherwise keep ~700 MB). Amortized: each shrink follows
    /// seven eighths of the entries going.
    fn after_remove(&mut self) {
        let len = self.entries.len();
        if self.high_water >= SHRINK_FROM && len * 8 < self.high_water {
            self.entries.shrink_to_fit();
            self.high_water = len;
            release_free_memory();
        }
    }
}

/// Returns the allocator's free memory to the system (glibc keeps it otherwise).
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it is safe to
    // call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The table. One per process.
#[derive(Default)]
pub(crate) struct RefTable {
    inner: Mutex<Inner>,
    ready: Condvar,
}

impl RefTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(local refs, task arguments, borrowers, containing objects)` of `id`, if present.
    pub fn holders(&self, id: ObjectId) -> Option<(u32, u32, u32, u32)> {
        self.lock()
            .entries
            .get(&id)
            .map(|e| (e.local, e.task_refs, e.borrowers, e.reservations))
    }

    /// A new owned object with one local ref.
    pub fn insert(&self, id: ObjectId, state: ObjState) {
        let mut inner = self.lock();
        inner.entries.insert(id, Entry::new(state, None));
        inner.high_water = inner.high_water.max(inner.entries.len());
    }

    /// A streaming task's item arrived: settles the entry a reader waits on, or makes it (one
    /// local handle, the stream's until it yields the item).
    pub fn settle_or_insert(&self, id: ObjectId, state: ObjState) {
        let mut inner = self.lock();
        let wakers = match inner.entries.get_mut(&id) {
            Some(e) if matches!(e.state, ObjState::Pending) => {
                e.state = state;
                inner.wakers.remove(&id)
            }
            Some(_) => None,
            None => {
                inner.entries.insert(id, Entry::new(state, None));
                inner.high_water = inner.high_water.max(inner.entries.len());
                None
            }
        };
        drop(inner);
        self.ready.notify_all();
        wakers.into_iter().flatten().for_each(Waker::wake);
    }

    /// Makes a pending entry for `id` (one local handle) unless it exists; whether it did.
    pub fn insert_pending_if_absent(&self, id: ObjectId) -> bool {
        let mut inner = self.lock();
        if inner.entries.contains_key(&id) {
            return false;
        }
        inner
            .entries
            .insert(id, Entry::new(ObjState::Pending, None));
        inner.high_water = inner.high_water.max(inner.entries.len());
        true
    }

    /// A deserialized ref to an object `owner` owns: one more local handle. Returns true when
    /// the entry is new (the caller must register as a borrower with the owner).
    pub fn insert_borrowed(&self, id: ObjectId, owner: WorkerId) -> bool {
        let mut inner = self.lock();
        match inner.entries.get_mut(&id) {
            Some(e) => {
                e.local += 1;
                false
            }
            None => {
                inner
                    .entries
                    .insert(id, Entry::new(ObjState::Pending, Some(owner)));
                true
            }
        }
    }

    /// Marks a fetch of a borrowed entry as started; `None` if not needed (owned, already
    /// fetched or fetching), else its owner.
    pub fn start_fetch(&self, id: ObjectId) -> Option<WorkerId> {
        let mut inner = self.lock();
        let e = inner.entries.get_mut(&id)?;
        let owner = e.owner?;
        if e.fetching || !matches!(e.state, ObjState::Pending) {
            return None;
        }
        e.fetching = true;
        Some(owner)
    }

    /// Records the refs an object's value contains; if the object is already gone they are
    /// returned for release at once.
    pub fn set_contained(&self, id: ObjectId, contained: Vec<ObjectId>) -> Freed {
        let mut inner = self.lock();
        match inner.entries.get_mut(&id) {
            Some(e) => {
                e.contained = contained;
                Freed::default()
            }
            None => Freed {
                contained,
                ..Freed::default()
            },
        }
    }

    pub fn add_local(&self, id: ObjectId) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.local += 1;
        }
    }

    pub fn remove_local(&self, id: ObjectId) -> Freed {
        self.update(id, |e| e.local = e.local.saturating_sub(1))
    }

    pub fn add_task_ref(&self, id: ObjectId) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.task_refs += 1;
        }
    }

    pub fn remove_task_ref(&self, id: ObjectId) -> Freed {
        self.update(id, |e| e.task_refs = e.task_refs.saturating_sub(1))
    }

    /// Other processes borrow these objects (owner side). Unknown ids are skipped.
    pub fn add_borrowers(&self, ids: &[ObjectId]) {
        let mut inner = self.lock();
        for id in ids {
            if let Some(e) = inner.entries.get_mut(id) {
                e.borrowers += 1;
            }
        }
    }

    pub fn remove_borrower(&self, id: ObjectId) -> Freed {
        self.update(id, |e| e.borrowers = e.borrowers.saturating_sub(1))
    }

    /// Objects containing refs to these were made (owner side).
    pub fn reserve(&self, ids: &[ObjectId]) {
        let mut inner = self.lock();
        for id in ids {
            if let Some(e) = inner.entries.get_mut(id) {
                e.reservations += 1;
            }
        }
    }

    pub fn unreserve(&self, id: ObjectId) -> Freed {
        self.update(id, |e| e.reservations = e.reservations.saturating_sub(1))
    }

    fn update(&self, id: ObjectId, f: impl FnOnce(&mut Entry)) -> Freed {
        let mut inner = self.lock();
        let Some(e) = inner.entries.get_mut(&id) else {
            return Freed::default();
        };
        f(e);
        if e.local > 0 || e.task_refs > 0 || e.borrowers > 0 || e.reservations > 0 {
            return Freed::default();
        }
        let Some(e) = inner.entries.remove(&id) else {
            return Freed::default();
        };
        inner.after_remove();
        match e.owner {
            Some(owner) => Freed {
                contained: e.contained,
                borrowed_from: Some((owner, id)),
                ..Freed::default()
            },
            None => Freed {
                delete_stored: match e.state {
                    ObjState::Stored { node } => Some((id, node)),
                    _ => None,
                },
                contained: e.contained,
                borrowed_from: None,
            },
        }
    }

    /// Sets the value of a pending object and wakes its waiters. Returns the tasks that waited
    /// for it, or `None` when nobody holds the object any more (the caller then frees what the
    /// task made).
    pub fn complete(&self, id: ObjectId, state: ObjState) -> Option<Vec<ObjectId>> {
        let mut inner = self.lock();
        let e = inner.entries.get_mut(&id)?;
        if !matches!(e.state, ObjState::Pending) {
            // Already settled (cancelled): this late result is dropped.
            return None;
        }
        e.state = state;
        let deps = std::mem::take(&mut e.dependents);
        let wakers = inner.wakers.remove(&id);
        drop(inner);
        self.ready.notify_all();
        wakers.into_iter().flatten().for_each(Waker::wake);
        Some(deps)
    }

    /// A stored object was lost and its task runs again: waiters wait for the new result.
    /// False when it is not stored (another thread already started the rebuild).
    pub fn reset_pending(&self, id: ObjectId) -> bool {
        let mut inner = self.lock();
        match inner.entries.get_mut(&id) {
            Some(e) if matches!(e.state, ObjState::Stored { .. }) => {
                e.state = ObjState::Pending;
                true
            }
            _ => false,
        }
    }

    /// A borrowed object's copy on `node` was lost and its owner answered with `state`: kept
    /// unless another thread updated it meanwhile.
    pub fn replace_lost(&self, id: ObjectId, node: u16, state: ObjState) {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get_mut(&id) {
            if matches!(e.state, ObjState::Stored { node: n } if n == node) {
                e.state = state;
            }
        }
    }

    /// The current state, or `None` for an unknown id.
    pub fn state(&self, id: ObjectId) -> Option<ObjState> {
        self.lock().entries.get(&id).map(|e| e.state.clone())
    }

    /// Whether `id` is done (ready, failed or unknown); if not, `waker` is woken when it is.
    pub fn poll_done(&self, id: ObjectId, waker: &Waker) -> bool {
        let mut inner = self.lock();
        let pending = inner
            .entries
            .get(&id)
            .is_some_and(|e| matches!(e.state, ObjState::Pending));
        if pending {
            let list = inner.wakers.entry(id).or_default();
            if !list.iter().any(|w| w.will_wake(waker)) {
                list.push(waker.clone());
            }
        }
        !pending
    }

    /// Forgets `waker`, registered for `id` by a future dropped before `id` was done.
    pub fn forget_waker(&self, id: ObjectId, waker: &Waker) {
        let mut inner = self.lock();
        if let Some(list) = inner.wakers.get_mut(&id) {
            list.retain(|w| !w.will_wake(waker));
            if list.is_empty() {
                inner.wakers.remove(&id);
            }
        }
    }

    /// Registers `task` as waiting for `id`; returns false when `id` is already done.
    pub fn add_dependent(&self, id: ObjectId, task: ObjectId) -> bool {
        let mut inner = self.lock();
        match inner.entries.get_mut(&id) {
            Some(e) if matches!(e.state, ObjState::Pending) => {
                e.dependents.push(task);
                true
            }
            _ => false,
        }
    }

    /// Waits until at least `num` of `ids` are done (ready or failed) or `timeout` passes.
    /// Returns the done flags, in order. `on_block` runs once before the first real wait.
    pub fn wait(
        &self,
        ids: &[ObjectId],
        num: usize,
        timeout: Option<Duration>,
        on_block: &mut dyn FnMut(bool),
    ) -> Vec<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inner = self.lock();
        let mut blocked = false;
        let done = loop {
            let done: Vec<bool> = ids
                .iter()
                .map(|id| {
                    inner
                        .entries
                        .get(id)
                        .is_none_or(|e| !matches!(e.state, ObjState::Pending))
                })
                .collect();
            if done.iter().filter(|d| **d).count() >= num {
                break done;
            }
            let wait_for = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break done;
                    }
                    Some(d - now)
                }
                None => None,
            };
            if !blocked {
                blocked = true;
                drop(inner);
                on_block(true);
                inner = self.lock();
                continue;
            }
            inner = match wait_for {
                Some(t) => self
                    .ready
                    .wait_timeout(inner, t)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0),
                None => self.ready.wait(inner).unwrap_or_else(|p| p.into_inner()),
            };
        };
        drop(inner);
        if blocked {
            on_block(false);
        }
        done
    }

    /// Fails every pending object (the raylet is gone).
    pub fn fail_all_pending(&self, error: Error) {
        let mut inner = self.lock();
        for e in inner.entries.values_mut() {
            if matches!(e.state, ObjState::Pending) {
                e.state = ObjState::Failed(error.clone());
            }
        }
        let wakers: Vec<Waker> = inner.wakers.drain().flat_map(|(_, w)| w).collect();
        drop(inner);
        self.ready.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use oxray_common::ids::object_id;

    use super::*;

    const ME: WorkerId = WorkerId(1);
    const OTHER: WorkerId = WorkerId(2);

    fn id(seq: u64) -> ObjectId {
        object_id(ME, seq)
    }

    fn inline(byte: u8) -> ObjState {
        let mut bytes = HeapBytes::new();
        bytes.push(byte);
        ObjState::Inline {
            fingerprint: 7,
            bytes: Arc::new(bytes),
        }
    }

    fn is_pending(t: &RefTable, id: ObjectId) -> bool {
        matches!(t.state(id), Some(ObjState::Pending))
    }

    fn nothing_to_release(f: &Freed) -> bool {
        f.delete_stored.is_none() && f.contained.is_empty() && f.borrowed_from.is_none()
    }

    /// Counts its wake-ups.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn futures_are_woken_once_when_their_object_settles_and_forgotten_when_dropped() {
        let t = RefTable::default();
        let (a, b) = (id(1), id(2));
        t.insert(a, ObjState::Pending);
        t.insert(b, ObjState::Pending);
        let counter = Arc::new(Counter(Default::default()));
        let waker = Waker::from(counter.clone());
        assert!(!t.poll_done(a, &waker));
        // Registered once however often it is polled.
        assert!(!t.poll_done(a, &waker));
        assert!(!t.poll_done(b, &waker));
        t.complete(a, inline(1));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(t.poll_done(a, &waker));
        // A future dropped before `b` settled takes its waker back: nothing is woken, and
        // nothing is left behind.
        t.forget_waker(b, &waker);
        assert!(t.lock().wakers.is_empty());
        t.complete(b, inline(2));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        // A lost raylet wakes every waiter.
        let c = id(3);
        t.insert(c, ObjState::Pending);
        assert!(!t.poll_done(c, &waker));
        t.fail_all_pending(Error::RayletDied {
            message: "gone".into(),
        });
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert!(t.poll_done(c, &waker));
    }

    #[test]
    fn local_refs_are_counted_and_the_entry_goes_at_zero() {
        let t = RefTable::default();
        let a = id(1);
        t.insert(a, ObjState::Stored { node: 3 });
        t.add_local(a);
        t.add_local(a);
        assert!(nothing_to_release(&t.remove_local(a)));
        assert!(nothing_to_release(&t.remove_local(a)));
        assert_eq!(t.len(), 1);
        let freed = t.remove_local(a);
        assert_eq!(
            freed.delete_stored,
            Some((a, 3)),
            "a stored object is deleted"
        );
        assert_eq!(t.len(), 0);
        assert!(t.state(a).is_none());
        // Extra releases of a gone entry do nothing.
        assert!(nothing_to_release(&t.remove_local(a)));
    }

    #[test]
    fn an_inline_object_frees_nothing_in_the_store() {
        let t = RefTable::default();
        t.insert(id(1), inline(5));
        let freed = t.remove_local(id(1));
        assert!(freed.delete_stored.is_none());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn task_refs_keep_an_object_after_its_handles_drop() {
        let t = RefTable::default();
        let a = id(1);
        t.insert(a, ObjState::Stored { node: 0 });
        t.add_task_ref(a);
        t.add_task_ref(a);
        assert!(nothing_to_release(&t.remove_local(a)));
        assert!(nothing_to_release(&t.remove_task_ref(a)));
        assert!(t.state(a).is_some());
        assert_eq!(t.remove_task_ref(a).delete_stored, Some((a, 0)));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn borrowers_and_reservations_keep_an_owned_object() {
        let t = RefTable::default();
        let a = id(1);
        t.insert(a, inline(1));
        t.add_borrowers(&[a, id(99)]); // unknown ids are skipped
        t.reserve(&[a]);
        assert!(nothing_to_release(&t.remove_local(a)));
        assert!(nothing_to_release(&t.remove_borrower(a)));
        assert_eq!(t.len(), 1, "the reservation still holds it");
        t.unreserve(a);
        assert_eq!(t.len(), 0);
        assert!(t.state(id(99)).is_none());
    }

    #[test]
    fn a_freed_object_releases_the_refs_its_value_contains() {
        let t = RefTable::default();
        let (a, b, c) = (id(1), id(2), object_id(OTHER, 3));
        t.insert(a, inline(1));
        assert!(nothing_to_release(&t.set_contained(a, vec![b, c])));
        assert_eq!(t.remove_local(a).contained, vec![b, c]);
        // The containing object is already gone: release at once.
        assert_eq!(t.set_contained(a, vec![b]).contained, vec![b]);
    }

    #[test]
    fn borrowed_entries_count_handles_fetch_once_and_release_at_the_owner() {
        let t = RefTable::default();
        let x = object_id(OTHER, 1);
        assert!(t.insert_borrowed(x, OTHER), "new: register as a borrower");
        assert!(!t.insert_borrowed(x, OTHER), "known: one more handle");
        assert!(is_pending(&t, x));
        assert_eq!(t.start_fetch(x), Some(OTHER));
        assert_eq!(t.start_fetch(x), None, "already fetching");
        assert!(t.complete(x, ObjState::Stored { node: 2 }).is_some());
        assert!(nothing_to_release(&t.remove_local(x)));
        let freed = t.remove_local(x);
        assert_eq!(freed.borrowed_from, Some((OTHER, x)));
        assert!(
            freed.delete_stored.is_none(),
            "the owner deletes it, not us"
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn owned_or_settled_entries_are_not_fetched() {
        let t = RefTable::default();
        t.insert(id(1), ObjState::Pending);
        assert_eq!(t.start_fetch(id(1)), None, "owned");
        let x = object_id(OTHER, 1);
        t.insert_borrowed(x, OTHER);
        t.complete(x, inline(3));
        assert_eq!(t.start_fetch(x), None, "value known");
        assert_eq!(t.start_fetch(id(42)), None, "unknown");
    }

    #[test]
    fn completing_returns_the_tasks_that_waited_and_drops_late_results() {
        let t = RefTable::default();
        let a = id(1);
        t.insert(a, ObjState::Pending);
        assert!(t.add_dependent(a, id(10)));
        assert!(t.add_dependent(a, id(11)));
        assert_eq!(t.complete(a, inline(4)), Some(vec![id(10), id(11)]));
        assert!(!t.add_dependent(a, id(12)), "already done");
        assert!(
            t.complete(a, ObjState::Failed(Error::Cancelled)).is_none(),
            "a late result is dropped"
        );
        assert!(matches!(t.state(a), Some(ObjState::Inline { .. })));
        assert!(t.complete(id(2), inline(1)).is_none(), "nobody holds it");
    }

    #[test]
    fn a_failure_is_what_every_reader_sees() {
        let t = RefTable::default();
        let a = id(1);
        t.insert(a, ObjState::Pending);
        t.complete(
            a,
            ObjState::Failed(Error::TaskFailed {
                message: "boom".into(),
                function: "f".into(),
                pid: 9,
            }),
        );
        assert_eq!(t.wait(&[a], 1, None, &mut |_| {}), vec![true]);
        match t.state(a) {
            Some(ObjState::Failed(Error::TaskFailed { message, pid, .. })) => {
                assert_eq!((message.as_str(), pid), ("boom", 9));
            }
            other => panic!("expected the task's failure, got {other:?}"),
        }
    }

    #[test]
    fn losing_the_raylet_fails_only_pending_objects() {
        let t = RefTable::default();
        t.insert(id(1), ObjState::Pending);
        t.insert(id(2), inline(2));
        t.fail_all_pending(Error::RayletDied {
            message: "gone".into(),
        });
        assert!(matches!(
            t.state(id(1)),
            Some(ObjState::Failed(Error::RayletDied { .. }))
        ));
        assert!(matches!(t.state(id(2)), Some(ObjState::Inline { .. })));
    }

    #[test]
    fn a_lost_stored_object_can_be_made_pending_again_once() {
        let t = RefTable::default();
        t.insert(id(1), ObjState::Stored { node: 4 });
        t.insert(id(2), inline(1));
        assert!(t.reset_pending(id(1)));
        assert!(is_pending(&t, id(1)));
        assert!(!t.reset_pending(id(1)), "another thread already started it");
        assert!(!t.reset_pending(id(2)), "inline values are never lost");
    }

    #[test]
    fn wait_times_out_on_pending_objects_and_counts_what_is_done() {
        let t = RefTable::default();
        t.insert(id(1), ObjState::Pending);
        t.insert(id(2), inline(1));
        let mut blocks = Vec::new();
        let done = t.wait(
            &[id(1), id(2), id(3)],
            3,
            Some(Duration::from_millis(5)),
            &mut |b| blocks.push(b),
        );
        // Unknown ids count as done (nothing to wait for).
        assert_eq!(done, vec![false, true, true]);
        assert_eq!(blocks, vec![true, false], "blocked once, unblocked once");
        let mut blocks = Vec::new();
        let done = t.wait(&[id(1), id(2)], 1, None, &mut |b| blocks.push(b));
        assert_eq!(done, vec![false, true]);
        assert!(blocks.is_empty(), "no wait, no block");
    }

    #[test]
    fn a_waiter_wakes_when_the_value_arrives() {
        let t = Arc::new(RefTable::default());
        let a = id(1);
        t.insert(a, ObjState::Pending);
        let blocked = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (t, blocked) = (t.clone(), blocked.clone());
            std::thread::spawn(move || {
                t.wait(&[a], 1, None, &mut |b| {
                    if b {
                        blocked.store(true, Ordering::SeqCst);
                    }
                })
            })
        };
        while !blocked.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        t.complete(a, inline(8));
        assert_eq!(waiter.join().ok(), Some(vec![true]));
    }
}
