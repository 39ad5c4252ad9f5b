//! The runtime context (`oxray::context()`, Ray's `get_runtime_context()`): which job, node
//! and process the caller is, and inside a task or actor call which one.

use std::cell::Cell;
use std::sync::Mutex;

use oxray_common::{ActorId, JobId, NodeId, WorkerId};
use oxray_object_store::ObjectId;

use crate::core::current;
use crate::error::Result;

thread_local! {
    /// The task or actor call this thread runs now.
    static RUNNING: Cell<Option<ObjectId>> = const { Cell::new(None) };
}

/// The task or actor call this thread runs now, if any (its submissions are its children).
pub(crate) fn current_task() -> Option<ObjectId> {
    RUNNING.with(Cell::get)
}

/// The task (not actor call) this worker process runs now, for a force-cancel.
static RUNNING_TASK: Mutex<Option<ObjectId>> = Mutex::new(None);

/// The task this worker process runs now, if any.
pub(crate) fn running_task() -> Option<ObjectId> {
    *RUNNING_TASK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks this process as running task `id` (a worker runs one task at a time) until dropped.
pub(crate) struct TaskRunning;

impl TaskRunning {
    pub(crate) fn start(id: ObjectId) -> TaskRunning {
        *RUNNING_TASK.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
        TaskRunning
    }
}

impl Drop for TaskRunning {
    fn drop(&mut self) {
        *RUNNING_TASK.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Where and as what the caller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeContext {
    /// The job (a driver and everything it started).
    pub job_id: JobId,
    /// The node this process runs on.
    pub node_id: NodeId,
    /// This process (driver or worker).
    pub worker_id: WorkerId,
    /// Inside a task or actor call: its id (also the id of its result).
    pub task_id: Option<ObjectId>,
    /// Inside an actor (its constructor or methods): the actor.
    pub actor_id: Option<ActorId>,
    /// The namespace of named actors.
    pub namespace: String,
    /// Whether this process is the driver (else a worker).
    pub is_driver: bool,
}

/// The caller's runtime context.
pub fn context() -> Result<RuntimeContext> {
    let core = current()?;
    Ok(RuntimeContext {
        job_id: core.job,
        node_id: core.node_id(),
        worker_id: core.worker_id,
        task_id: RUNNING.with(Cell::get),
        actor_id: crate::actor_host::hosted_id(),
        namespace: core.namespace.clone(),
        is_driver: core.kind == oxray_common::protocol::ClientKind::Driver,
    })
}

/// Marks this thread as running task (or call) `id` until dropped.
pub(crate) struct Running(Option<ObjectId>);

impl Running {
    pub(crate) fn start(id: ObjectId) -> Running {
        Running(RUNNING.with(|r| r.replace(Some(id))))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(self.0));
    }
}

/// A call's future that marks its thread as running the call while it is polled: the calls of
/// an async actor interleave on one thread, so each poll says which one runs (for `context()`
/// and for the tasks it submits, which are its children).
pub(crate) struct InCall<F> {
    id: ObjectId,
    future: F,
}

impl<F> InCall<F> {
    pub(crate) fn new(id: ObjectId, future: F) -> InCall<F> {
        InCall { id, future }
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for InCall<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let _running = Running::start(self.id);
        std::pin::Pin::new(&mut self.future).poll(cx)
    }
}
