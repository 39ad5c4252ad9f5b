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
//! Retries (as Ray's generators): a streaming task whose worker dies is run again (up to its
//! `max_retries`), and the new attempt makes the items its caller already has without storing
//! or reporting them (`TaskSpec::stream_skip`), so each item reaches the stream once. Items
//! must therefore not depend on the attempt.
//!
//! The stream is an `Iterator` (each `next` blocks); `next_async` awaits an item instead,
//! woken by its arrival, and `into_async` makes it a `futures_core::Stream`.
//!
//! Several returns (`#[oxray::remote(num_returns = n)]`, [`submit_returns`]) ride on the same
//! path: the task's value is split into `n` items, whose refs the caller holds from the start.

use std::marker::PhantomData;
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};

use oxray_common::ids::item_id;
use oxray_object_store::ObjectId;

use crate::args::ArgSpec;
use crate::await_refs::Waiting;
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
    /// The connection to the task's worker that carries how many items were taken, and the
    /// worker's address (a retry runs elsewhere).
    worker: Option<(String, std::os::unix::net::UnixStream)>,
    /// Waiting for item `next`: whether this stream made its pending entry (released if the
    /// task ends without it).
    waiting: Option<bool>,
    /// An async wait for item `next` (or the task's end).
    waiter: Option<Waiting>,
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

impl<T> ObjectRefStream<T> {
    /// Starts waiting for item `next`: its ref entry is made (pending) unless it came already.
    fn begin(&mut self) -> ObjectId {
        let id = item_id(self.task.id(), self.next);
        if self.waiting.is_none() {
            self.waiting = Some(self.core().refs.insert_pending_if_absent(id));
        }
        id
    }

    /// Item `next` came, or the task ended: what the stream gives.
    fn settle(&mut self) -> Option<Result<ObjectRef<T>>> {
        let core = self.core().clone();
        let id = item_id(self.task.id(), self.next);
        let made_entry = self.waiting.take().unwrap_or(false);
        if !matches!(core.refs.state(id), Some(ObjState::Pending)) {
            self.next += 1;
            // Half a window taken: the task may make that many more.
            if self.window > 0 && self.next.is_multiple_of((self.window / 2).max(1)) {
                tell_taken(&core, self.task.id(), self.next, &mut self.worker);
            }
            return Some(Ok(ObjectRef::adopt(id, core)));
        }
        // The task ended first: items come before its end, so there is no such item.
        if made_entry {
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

impl<T> Iterator for ObjectRefStream<T> {
    type Item = Result<ObjectRef<T>>;

    fn next(&mut self) -> Option<Result<ObjectRef<T>>> {
        if self.ended {
            return None;
        }
        let id = self.begin();
        // The item's arrival settles it (or it is here already), or the task's end does.
        self.core().clone().wait_ids(&[id, self.task.id()], 1, None);
        self.settle()
    }
}

impl<T> ObjectRefStream<T> {
    /// The next item, awaited: woken by its arrival (or the task's end), never polled for.
    /// `None` after the last one (or after the task's error, given once).
    pub fn next_async(
        &mut self,
    ) -> impl std::future::Future<Output = Option<Result<ObjectRef<T>>>> + '_ {
        std::future::poll_fn(move |cx| self.poll_item(cx))
    }

    /// The stream as a `futures_core::Stream`, for `futures::StreamExt` and friends (the
    /// stream is also an `Iterator`, so the two `next`s would clash on one type).
    pub fn into_async(self) -> AsyncObjectRefStream<T> {
        AsyncObjectRefStream(self)
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ObjectRef<T>>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let id = self.begin();
        let task = self.task.id();
        let core = self.core().clone();
        let waiter = self
            .waiter
            .get_or_insert_with(|| Waiting::new(core, vec![id, task]));
        if waiter.poll_count(cx) == 0 {
            return Poll::Pending;
        }
        self.waiter = None;
        Poll::Ready(self.settle())
    }
}

/// An [`ObjectRefStream`] as an async `Stream` (from [`ObjectRefStream::into_async`]): each
/// item awaited, woken by its arrival. Use it with `futures::StreamExt`
/// (`while let Some(r) = s.next().await`).
pub struct AsyncObjectRefStream<T>(ObjectRefStream<T>);

impl<T> AsyncObjectRefStream<T> {
    /// The stream it wraps (items taken so far stay taken).
    pub fn into_inner(self) -> ObjectRefStream<T> {
        self.0
    }

    /// The stream it wraps.
    pub fn get_ref(&self) -> &ObjectRefStream<T> {
        &self.0
    }
}

impl<T> futures_core::Stream for AsyncObjectRefStream<T> {
    type Item = Result<ObjectRef<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // No field is pinned: the stream moves freely.
        self.get_mut().0.poll_item(cx)
    }
}

impl<T> futures_core::FusedStream for AsyncObjectRefStream<T> {
    fn is_terminated(&self) -> bool {
        self.0.ended
    }
}

impl<T> std::fmt::Debug for AsyncObjectRefStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> Drop for ObjectRefStream<T> {
    fn drop(&mut self) {
        // Its waker goes first (the entries it waits on are released below).
        self.waiter = None;
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
/// returning `impl Iterator<Item = T>`). A retry (its worker died) skips the items the stream
/// has (see the module docs).
pub fn submit_stream<T>(
    opts: TaskOptions,
    args: Vec<Result<ArgSpec>>,
) -> Result<ObjectRefStream<T>> {
    let window = opts.window();
    let task: ObjectRef<u64> = crate::task::submit_task_with(opts, args, |core, id| {
        core.submitter.add_stream(id, window, None);
    })?;
    Ok(ObjectRefStream {
        task,
        next: 0,
        ended: false,
        window,
        worker: None,
        waiting: None,
        waiter: None,
        _type: PhantomData,
    })
}

/// The refs of a task with several returns, taken one by one in their types (the code
/// `#[oxray::remote(num_returns = n)]` generates does it).
pub struct Returns {
    task: ObjectId,
    core: Arc<CoreWorker>,
    n: u64,
    taken: u64,
}

impl Returns {
    /// The ref of return `i` (taken in order, each once), as a `T`.
    pub fn take<T>(&mut self) -> ObjectRef<T> {
        let id = item_id(self.task, self.taken);
        self.taken += 1;
        ObjectRef::adopt(id, self.core.clone())
    }
}

impl Drop for Returns {
    fn drop(&mut self) {
        // Returns not taken are the caller's no more.
        for i in self.taken..self.n {
            self.core.release_local(item_id(self.task, i));
        }
    }
}

/// Submits a task whose value is `n` returns (items `0..n`), each with a ref of its own held
/// from the start; they fail with the task if it fails.
pub fn submit_returns(opts: TaskOptions, args: Vec<Result<ArgSpec>>, n: u64) -> Result<Returns> {
    let task: ObjectRef<u64> = crate::task::submit_task_with(opts, args, |core, id| {
        for i in 0..n {
            core.refs.insert_pending_if_absent(item_id(id, i));
        }
        core.submitter.add_stream(id, 0, Some(n));
    })?;
    Ok(Returns {
        task: task.id(),
        core: task.core.clone(),
        n,
        taken: 0,
    })
}

/// Tells the worker of `task` how many items were taken, on a connection of its own (made on
/// first use and kept while the task runs on that worker; the task's connection is not read
/// while it runs). The count is noted first, so a retry that starts later starts there.
fn tell_taken(
    core: &Arc<CoreWorker>,
    task: ObjectId,
    taken: u64,
    worker: &mut Option<(String, std::os::unix::net::UnixStream)>,
) {
    use std::io::Write;
    core.submitter.note_taken(task, taken);
    let Some(address) = core.submitter.running_worker_address(task) else {
        // Not running (ended, or a retry not started yet: it starts from the noted count).
        *worker = None;
        return;
    };
    if worker.as_ref().is_none_or(|(a, _)| *a != address) {
        *worker = core
            .connect_to(&address)
            .ok()
            .map(|conn| (address.clone(), conn));
    }
    let Some((_, stream)) = worker else { return };
    let sent =
        oxray_common::frame::encode(&oxray_common::protocol::ToWorker::StreamTaken { task, taken })
            .and_then(|msg| stream.write_all(&msg));
    if sent.is_err() {
        // The task ended (or its worker did): nothing waits for this any more.
        *worker = None;
    }
}
