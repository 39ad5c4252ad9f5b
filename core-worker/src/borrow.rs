//! Refs inside values: how an `ObjectRef` is encoded, and the bookkeeping around it.
//!
//! An `ObjectRef<T>` inside a value (a `Vec<ObjectRef<i64>>` a task returns, say) is encoded as
//! its object id. Two thread-local collectors make the reference counting work:
//!
//! - while a value is encoded, the ids of the refs it contains are collected; the process that
//!   made the value then *reserves* them at their owners (they stay alive while the containing
//!   object does) and records them on the containing object, which releases them when freed;
//! - while a value is decoded, refs to objects owned elsewhere become *borrowed* handles, and the
//!   new ones are registered with their owners in one batch before the decode returns (the
//!   containing object, held by the caller, keeps them alive until then).
//!
//! This is Ray's ownership model with containment, simplified: borrowers register directly with
//! the owner instead of through the containing object's owner.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use oxray_common::ids::owner_of;
use oxray_common::WorkerId;
use oxray_object_store::{ArchivedObjectId, ObjectId};
use rkyv::rancor::{Fallible, Source};
use rkyv::{Archive, Deserialize, Place, Serialize};

use crate::core::{current, CoreWorker};
use crate::error::Result;
use crate::object_ref::ObjectRef;

thread_local! {
    static CONTAINED: RefCell<Option<Vec<ObjectId>>> = const { RefCell::new(None) };
    static NEW_BORROWS: RefCell<Option<Vec<ObjectId>>> = const { RefCell::new(None) };
}

/// Runs `encode` and returns the ids of the refs it encoded (deduplicated).
pub(crate) fn collect_contained<R>(encode: impl FnOnce() -> R) -> (R, Vec<ObjectId>) {
    let outer = CONTAINED.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = encode();
    let mut ids = CONTAINED
        .with(|c| std::mem::replace(&mut *c.borrow_mut(), outer))
        .unwrap_or_default();
    ids.sort_unstable();
    ids.dedup();
    (r, ids)
}

/// Runs `decode`, then registers the borrowed refs it created with their owners.
pub(crate) fn register_borrows<R>(core: &Arc<CoreWorker>, decode: impl FnOnce() -> R) -> R {
    let outer = NEW_BORROWS.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = decode();
    let new = NEW_BORROWS
        .with(|c| std::mem::replace(&mut *c.borrow_mut(), outer))
        .unwrap_or_default();
    register_now(core, new);
    r
}

fn register_now(core: &Arc<CoreWorker>, ids: Vec<ObjectId>) {
    let mut by_owner: HashMap<WorkerId, Vec<ObjectId>> = HashMap::new();
    for id in ids {
        by_owner.entry(owner_of(id)).or_default().push(id);
    }
    for (owner, ids) in by_owner {
        if let Err(e) = core.owners.add_borrowers(core, owner, ids.clone()) {
            for id in ids {
                core.settle(id, crate::refs::ObjState::Failed(e.clone()));
            }
        }
    }
}

/// A handle for `id` found while decoding a value.
fn borrow_ref<T>(core: Arc<CoreWorker>, id: ObjectId) -> ObjectRef<T> {
    let owner = owner_of(id);
    if owner == core.worker_id() {
        core.refs.add_local(id);
    } else if core.refs.insert_borrowed(id, owner) {
        let queued = NEW_BORROWS.with(|c| match c.borrow_mut().as_mut() {
            Some(v) => {
                v.push(id);
                true
            }
            None => false,
        });
        if !queued {
            register_now(&core, vec![id]);
        }
    }
    ObjectRef::adopt(id, core)
}

impl<T> Archive for ObjectRef<T> {
    type Archived = ArchivedObjectId;
    type Resolver = <ObjectId as Archive>::Resolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        self.id().resolve(resolver, out)
    }
}

impl<T, S: Fallible + ?Sized> Serialize<S> for ObjectRef<T>
where
    ObjectId: Serialize<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        CONTAINED.with(|c| {
            if let Some(v) = c.borrow_mut().as_mut() {
                v.push(self.id());
            }
        });
        self.id().serialize(serializer)
    }
}

impl<T, D> Deserialize<ObjectRef<T>, D> for ArchivedObjectId
where
    D: Fallible + ?Sized,
    D::Error: Source,
{
    fn deserialize(&self, _: &mut D) -> Result<ObjectRef<T>, D::Error> {
        let core = current().map_err(D::Error::new)?;
        Ok(borrow_ref(core, ObjectId(self.0)))
    }
}

/// Keeps `ids` alive at their owners: an object containing refs to them was just made.
pub(crate) fn reserve(core: &Arc<CoreWorker>, ids: &[ObjectId]) -> Result<()> {
    let mut remote: HashMap<WorkerId, Vec<ObjectId>> = HashMap::new();
    let mut local = Vec::new();
    for &id in ids {
        let owner = owner_of(id);
        if owner == core.worker_id() {
            local.push(id);
        } else {
            remote.entry(owner).or_default().push(id);
        }
    }
    core.refs.reserve(&local);
    for (owner, ids) in remote {
        core.owners.reserve(core, owner, ids)?;
    }
    Ok(())
}
