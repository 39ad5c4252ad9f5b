//! The owner's table of objects: reference counts, values of small objects, and waiting.
//!
//! Every object a process creates (by `put` or by submitting a task) is owned by it, as in Ray.
//! An entry counts local refs (`ObjectRef` handles) and task refs (tasks in flight that take the
//! object as an argument). When both reach zero the entry goes, and a stored object is deleted
//! from the node's store. Small values live here, in the entry; large ones in the store.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    Stored,
    /// Its task failed; every get returns this error.
    Failed(Error),
}

struct Entry {
    local: u32,
    task_refs: u32,
    state: ObjState,
    /// Submitted tasks that wait for this object.
    dependents: Vec<ObjectId>,
}

/// What the caller must do after a count dropped to zero.
pub(crate) enum Freed {
    /// Nothing (still referenced, or nothing outside this table to free).
    Nothing,
    /// Delete the object from the node's store.
    Stored,
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

    /// A new object with one local ref.
    pub fn insert(&self, id: ObjectId, state: ObjState) {
        self.lock().entries.insert(
            id,
            Entry {
                local: 1,
                task_refs: 0,
                state,
                dependents: Vec::new(),
            },
        );
    }

    pub fn add_local(&self, id: ObjectId) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.local += 1;
        }
    }

    pub fn remove_local(&self, id: ObjectId) -> Freed {
        let mut inner = self.lock();
        let Some(e) = inner.entries.get_mut(&id) else {
            return Freed::Nothing;
        };
        e.local = e.local.saturating_sub(1);
        Self::maybe_free(&mut inner, id)
    }

    pub fn add_task_ref(&self, id: ObjectId) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.task_refs += 1;
        }
    }

    pub fn remove_task_ref(&self, id: ObjectId) -> Freed {
        let mut inner = self.lock();
        let Some(e) = inner.entries.get_mut(&id) else {
            return Freed::Nothing;
        };
        e.task_refs = e.task_refs.saturating_sub(1);
        Self::maybe_free(&mut inner, id)
    }

    fn maybe_free(inner: &mut Inner, id: ObjectId) -> Freed {
        let Some(e) = inner.entries.get(&id) else {
            return Freed::Nothing;
        };
        if e.local > 0 || e.task_refs > 0 {
            return Freed::Nothing;
        }
        match inner.entries.remove(&id).map(|e| e.state) {
            Some(ObjState::Stored) => Freed::Stored,
            _ => Freed::Nothing,
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
                    d - now
                }
                None => Duration::from_secs(3600),
            };
            if !blocked {
                blocked = true;
                drop(inner);
                on_block(true);
                inner = self.lock();
                continue;
            }
            inner = self
                .ready
                .wait_timeout(inner, wait_for)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
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
