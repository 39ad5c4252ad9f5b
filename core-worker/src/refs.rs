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

    /// A new owned object with one local ref.
    pub fn insert(&self, id: ObjectId, state: ObjState) {
        self.lock().entries.insert(id, Entry::new(state, None));
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
        drop(inner);
        self.ready.notify_all();
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

    /// The current state, or `None` for an unknown id.
    pub fn state(&self, id: ObjectId) -> Option<ObjState> {
        self.lock().entries.get(&id).map(|e| e.state.clone())
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
        drop(inner);
        self.ready.notify_all();
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}
