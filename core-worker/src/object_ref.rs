//! `ObjectRef<T>`: a counted reference to an object this process owns.

use std::marker::PhantomData;
use std::sync::Arc;

use oxray_object_store::ObjectId;

use crate::core::CoreWorker;

/// A reference to an object (a `put` value or a task's result) holding a `T`. Cloning and
/// dropping refs is what keeps the object alive: when the last ref (and the last task that
/// takes it as an argument) is gone, the object is freed everywhere.
pub struct ObjectRef<T> {
    id: ObjectId,
    pub(crate) core: Arc<CoreWorker>,
    _type: PhantomData<fn() -> T>,
}

impl<T> ObjectRef<T> {
    /// Wraps an id whose local count the caller already incremented.
    pub(crate) fn adopt(id: ObjectId, core: Arc<CoreWorker>) -> Self {
        ObjectRef {
            id,
            core,
            _type: PhantomData,
        }
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        self.core.refs.add_local(self.id);
        ObjectRef::adopt(self.id, self.core.clone())
    }
}

impl<T> Drop for ObjectRef<T> {
    fn drop(&mut self) {
        self.core.release_local(self.id);
    }
}

impl<T> std::fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", self.id)
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T> Eq for ObjectRef<T> {}

impl<T> std::hash::Hash for ObjectRef<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}
