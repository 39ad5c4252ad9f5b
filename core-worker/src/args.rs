//! Task arguments: how callers pass them ([`IntoArg`]) and how a worker decodes them
//! ([`TaskArgs`]).

use std::sync::Arc;

use oxray_common::protocol::TaskArg;
use oxray_object_store::{fingerprint, HeapBytes, Object, ObjectBytes, ObjectId, ObjectView};

use crate::borrow::{collect_contained, register_borrows};
use crate::core::{current, CoreWorker};
use crate::error::Result;
use crate::object_ref::ObjectRef;
use crate::registry::TaskError;
use crate::value::{aligned_copy, ReturnValue, INLINE_MAX};

/// An argument as the submitter holds it until the task can be sent.
#[derive(Clone)]
pub enum ArgSpec {
    /// A small value, encoded.
    Value {
        /// Its type fingerprint.
        fingerprint: u64,
        /// Its encoding.
        bytes: HeapBytes,
        /// Refs the value contains, reserved until the task ends.
        contained: Vec<ObjectId>,
    },
    /// An object (a ref the caller passed, or a large value put on its behalf).
    Ref(ObjectId),
}

/// What can be passed where a task expects a `T`: the value itself, or a ref to an object
/// holding a `T` (`&ObjectRef<T>` or `ObjectRef<T>`), which is resolved before the task runs.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be passed where the task expects a `{T}`",
    label = "expected a `{T}`, or a ref to one (`&ObjectRef<{T}>`)",
    note = "the argument types of a remote function must be storable: put `#[oxray::object]` on your own types"
)]
pub trait IntoArg<T> {
    /// Turns the argument into its submitted form.
    fn into_arg(self) -> Result<ArgSpec>;
}

impl<T: Object + Send> IntoArg<T> for T {
    fn into_arg(self) -> Result<ArgSpec> {
        let len = ReturnValue::encoded_len(&self)?;
        if len <= INLINE_MAX {
            let (bytes, contained) = collect_contained(|| crate::value::encode_heap(&self, len));
            let bytes = bytes?;
            if !contained.is_empty() {
                crate::borrow::reserve(&current()?, &contained)?;
            }
            return Ok(ArgSpec::Value {
                fingerprint: fingerprint::<T>(),
                bytes,
                contained,
            });
        }
        // Large values go to the store once, as Ray does; the task holds the ref.
        let core = current()?;
        let r = core.put(&self)?;
        core.refs.add_task_ref(r.id());
        Ok(ArgSpec::Ref(r.id()))
    }
}

impl<T> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> Result<ArgSpec> {
        self.core.refs.add_task_ref(self.id());
        Ok(ArgSpec::Ref(self.id()))
    }
}

impl<T> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> Result<ArgSpec> {
        (&self).into_arg()
    }
}

/// A task's arguments inside the worker, decoded on demand by the generated code.
pub struct TaskArgs<'a> {
    pub(crate) args: &'a [TaskArg],
    pub(crate) core: &'a Arc<CoreWorker>,
}

impl TaskArgs<'_> {
    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    fn bytes(&self, i: usize) -> Result<ObjectBytes, TaskError> {
        match self.args.get(i) {
            None => Err(TaskError::BadArgument(format!(
                "argument {i} is missing ({} were sent)",
                self.args.len()
            ))),
            Some(TaskArg::Inline { fingerprint, bytes }) => Ok(ObjectBytes::from_heap(
                ObjectId::default(),
                *fingerprint,
                Arc::new(aligned_copy(bytes)),
            )),
            Some(TaskArg::Stored { id, node }) => self
                .core
                .pin(*id, *node)
                .map_err(|e| TaskError::BadArgument(format!("argument {i}: {e}"))),
        }
    }

    /// Argument `i` as an owned `T`.
    pub fn value<T: Object>(&self, i: usize) -> Result<T, TaskError> {
        let view = self.view::<T>(i)?;
        register_borrows(self.core, || view.deserialize())
            .map_err(|e| TaskError::BadArgument(format!("argument {i}: {e}")))
    }

    /// Argument `i` as a zero-copy view (in the node's store for large objects).
    pub fn view<T: Object>(&self, i: usize) -> Result<ObjectView<T>, TaskError> {
        ObjectView::new(self.bytes(i)?)
            .map_err(|e| TaskError::BadArgument(format!("argument {i}: {e}")))
    }
}
