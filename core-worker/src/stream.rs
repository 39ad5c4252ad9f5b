//! Streaming tasks (Ray's generators): a task returning `impl Iterator<Item = T>` gives the
//! caller an [`ObjectRefStream<T>`], which yields each item's ref as soon as the worker has
//! stored it, while the task goes on making the next ones.
//!
//! The worker stores item `i` under `ids::item_id(task, i)` and reports it (`FromWorker::Item`)
//! before the task's `Done`, whose value is the number of items. The caller keeps reported items
//! in its ref table for the stream until they are taken; a stream dropped early frees those, and
//! items reported after it was dropped are freed as they come.
//!
//! Backpressure (Ray's `_generator_backpressure_num_objects`, off by default there too):
//! `options().stream_window(n)` makes the task wait once it has made `n` items its caller has
//! not taken; the stream tells the worker how many it took, every half window, on a connection
//! of its own (the task's connection is not read while the task runs). A stream dropped early
//! tells the worker to stop making items.
//!
//! Not built yet: retries. A streaming task is not retried when its worker dies (the stream
//! then ends with the error after the items it had).

use std::marker::PhantomData;
use std::sync::Arc;

use oxray_common::ids::item_id;
use oxray_object_store::ObjectId;

use crate::args::ArgSpec;
use crate::core::CoreWorker;
use crate::error::{Error, Result};
use crate::object_ref::ObjectRef;
use crate::refs::ObjState;
use crate::task::TaskOptions;

/// The items of a streaming task, as refs, in the order the task yielded them. An
/// `Iterator` of `Result<ObjectRef<T>>`: each `next` waits for the next item, and after the
/// last one it gives `None` (or the task's error, once, if it failed mid-way).
pub struct ObjectRefStream<T> {
    /// The task's own result: the number of items.
    task: ObjectRef<u64>,
    next: u64,
    ended: bool,
    /// The most items the task makes ahead of the ones taken (0: no bound).
    window: u64,
    /// The connection to the task's worker that carries how many items were taken.
    worker: Option<std::os::unix::net::UnixStream>,
    _type: PhantomData<fn() -> T>,
}

impl<T> ObjectRefStream<T> {
    /// The streaming task's id.
    pub fn task_id(&self) -> ObjectId {
        self.task.id()
    }

    /// A ref to the number of items the task made, ready once it has ended.
    pub fn total(&self) -> ObjectRef<u64> {
        self.task.clone()
    }

    /// Items taken so far.
    pub fn taken(&self) -> u64 {
        self.next
    }

    fn core(&self) -> &Arc<CoreWorker> {
        &self.task.core
    }
}

impl<T> Iterator for ObjectRefStream<T> {
    type Item = Result<ObjectRef<T>>;

    fn next(&mut self) -> Option<Result<ObjectRef<T>>> {
        if self.ended {
            return None;
        }
        let core = self.core().clone();
        let id = item_id(self.task.id(), self.next);
        // Waited on here; the item's arrival settles it (or it is here already).
        let waiting = core.refs.insert_pending_if_absent(id);
        core.wait_ids(&[id, self.task.id()], 1, None);
        if !matches!(core.refs.state(id), Some(ObjState::Pending)) {
            self.next += 1;
            // Half a window taken: the task may make that many more.
            if self.window > 0 && self.next.is_multiple_of((self.window / 2).max(1)) {
                tell_taken(&core, self.task.id(), self.next, &mut self.worker);
            }
            return Some(Ok(ObjectRef::adopt(id, core)));
        }
        // The task ended first: items come before its end, so there is no such item.
        if waiting {
            core.release_local(id);
        }
        self.ended = true;
        match core.get(&self.task, None) {
            Ok(count) if self.next >= count => None,
            Ok(count) => Some(Err(Error::ObjectLost {
                id: id.to_string(),
                message: format!(
                    "item {} of {count} of stream {} never arrived",
                    self.next,
                    self.task.id()
                ),
            })),
            Err(e) => Some(Err(e)),
        }
    }
}

impl<T> Drop for ObjectRefStream<T> {
    fn drop(&mut self) {
        let core = self.core().clone();
        // Under the registry's lock, the items kept so far are listed and the stream is
        // unregistered: a later item is freed as it comes. They are released after (releasing
        // may write to the raylet, which is not done under a lock).
        let kept: Vec<ObjectId> = {
            let mut streams = core
                .submitter
                .streams
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            streams.remove(&self.task.id());
            (self.next..oxray_common::ids::MAX_STREAM_ITEMS)
                .map(|i| item_id(self.task.id(), i))
                .take_while(|id| core.refs.state(*id).is_some())
                .collect()
        };
        for id in kept {
            core.release_local(id);
        }
        if !self.ended {
            // Nobody reads on: a task waiting for its window stops making items.
            tell_taken(&core, self.task.id(), u64::MAX, &mut self.worker);
        }
    }
}

impl<T> std::fmt::Debug for ObjectRefStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ObjectRefStream({}, {} taken)",
            self.task.id(),
            self.next
        )
    }
}

/// Submits a streaming task (called by the code `#[oxray::remote]` generates for a function
/// returning `impl Iterator<Item = T>`). It is not retried (see the module docs).
pub fn submit_stream<T>(
    opts: TaskOptions,
    args: Vec<Result<ArgSpec>>,
) -> Result<ObjectRefStream<T>> {
    let window = opts.window();
    let opts = opts.max_retries(0).retry_exceptions(false);
    let task: ObjectRef<u64> = crate::task::submit_task_with(opts, args, |core, id| {
        core.submitter.add_stream(id, window);
    })?;
    Ok(ObjectRefStream {
        task,
        next: 0,
        ended: false,
        window,
        worker: None,
        _type: PhantomData,
    })
}

/// Tells the worker of `task` how many items were taken, on a connection of its own (made on
/// first use and kept; the task's connection is not read while it runs).
fn tell_taken(
    core: &Arc<CoreWorker>,
    task: ObjectId,
    taken: u64,
    worker: &mut Option<std::os::unix::net::UnixStream>,
) {
    use std::io::Write;
    if worker.is_none() {
        *worker = core
            .submitter
            .running_worker_address(task)
            .and_then(|address| core.connect_to(&address).ok());
    }
    let Some(stream) = worker else { return };
    let sent =
        oxray_common::frame::encode(&oxray_common::protocol::ToWorker::StreamTaken { task, taken })
            .and_then(|msg| stream.write_all(&msg));
    if sent.is_err() {
        // The task ended (or its worker did): nothing waits for this any more.
        *worker = None;
    }
}
