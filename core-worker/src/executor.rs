//! Worker mode: accept task pushes from submitters and run them.
//!
//! A worker listens on its own socket; a submitter that leased it connects and pushes tasks. One
//! task runs at a time (a lease is one CPU slot); a task that blocks in `get` tells the raylet,
//! which lends its CPU out so nested tasks cannot deadlock. A panic or `Err` in the function fails
//! only that task; the worker keeps serving.

use std::io::{BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use oxray_common::frame::{self, FrameError};
use oxray_common::protocol::{
    ActorCall, ClientKind, FailureKind, FromWorker, ObjectValue, TaskFailure, TaskOutcome,
    TaskSpec, ToWorker,
};
use oxray_object_store::{HeapBytes, ObjectId};

use crate::args::TaskArgs;
use crate::borrow::collect_contained;
use crate::core::CoreWorker;
use crate::refs::ObjState;
use crate::registry::{self, TaskError};
use crate::task_events::{now_us, Ran};
use crate::value::{encode_heap, ReturnValue, INLINE_MAX};

/// Serializes task execution in this worker.
static EXEC: Mutex<()> = Mutex::new(());

/// Binds the worker's task socket (abstract namespace).
pub(crate) fn bind(name: &str) -> std::io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    UnixListener::bind_addr(&addr)
}

/// Serves submitters until the process exits (when the raylet connection closes). A worker of
/// a cluster node also takes direct connections from other nodes on `direct` (see
/// `crate::direct`, whose runtime starts with the first of them).
pub(crate) fn serve(
    core: Arc<CoreWorker>,
    listener: UnixListener,
    direct: Option<std::net::TcpListener>,
) -> ! {
    let weak = Arc::downgrade(&core);
    // The worker's own reference must not keep the core alive past the raylet connection.
    drop(core);
    match direct {
        None => accept_loop(weak, listener),
        Some(tcp) => {
            if let Err(e) = accept_both(&weak, &listener, &tcp) {
                eprintln!("oxray: this worker stopped accepting connections: {e}");
            }
        }
    }
    std::process::exit(0)
}

/// [`accept_loop`] for the Unix listener and the direct one, on one thread.
fn accept_both(
    core: &Weak<CoreWorker>,
    unix: &UnixListener,
    tcp: &std::net::TcpListener,
) -> std::io::Result<()> {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::os::fd::AsRawFd;
    const UNIX: Token = Token(0);
    const TCP: Token = Token(1);
    unix.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    let mut poll = Poll::new()?;
    let (unix_fd, tcp_fd) = (unix.as_raw_fd(), tcp.as_raw_fd());
    poll.registry()
        .register(&mut SourceFd(&unix_fd), UNIX, Interest::READABLE)?;
    poll.registry()
        .register(&mut SourceFd(&tcp_fd), TCP, Interest::READABLE)?;
    let mut events = Events::with_capacity(8);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            // Edge-triggered: take every connection waiting.
            if event.token() == UNIX {
                while let Ok((stream, _)) = unix.accept() {
                    if !accept_unix(core, stream) {
                        return Ok(());
                    }
                }
            } else {
                while let Ok((stream, _)) = tcp.accept() {
                    let Some(c) = core.upgrade() else {
                        return Ok(());
                    };
                    let served = core.clone();
                    c.accept_direct(stream, move |s| {
                        serve_stream(&served, s);
                    });
                }
            }
        }
    }
}

/// Serves a connection accepted on the worker's Unix socket, if its peer is this user's; false
/// once the core worker is shutting down.
fn accept_unix(core: &Weak<CoreWorker>, stream: UnixStream) -> bool {
    // Accepted sockets do not inherit the listener's non-blocking mode on Linux.
    if !oxray_raylet::server::same_user(&stream) {
        eprintln!("oxray: refused a connection to this worker from another user");
        return true;
    }
    serve_stream(core, stream)
}

/// Accepts connections from submitters and borrowers: processes of this user only (the socket
/// is abstract, so any local user could otherwise push tasks or read objects).
pub(crate) fn accept_loop(core: Weak<CoreWorker>, listener: UnixListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if !accept_unix(&core, stream) {
            return;
        }
    }
}

/// Whether a connection is being served on a thread of its own (see `crate::incoming`).
static DEDICATED: AtomicBool = AtomicBool::new(false);

/// Serves one connection from a submitter or borrower (a Unix one, or a direct one bridged to
/// a Unix stream): the first one at a time on a thread of its own, others on the event loop
/// and its pool (`crate::incoming`). False once the core worker is shutting down.
pub(crate) fn serve_stream(core: &Weak<CoreWorker>, stream: UnixStream) -> bool {
    let Some(core) = core.upgrade() else {
        return false;
    };
    if core.is_shutting_down() {
        return false;
    }
    let owns_flag = DEDICATED
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    let stream = if owns_flag {
        stream
    } else {
        match crate::incoming::watch(&core, stream) {
            Ok(()) => return true,
            // No event loop: a thread of its own after all.
            Err(stream) => stream,
        }
    };
    let spawned = std::thread::Builder::new()
        .name("oxray-task-conn".into())
        .spawn(move || {
            serve_conn(core, stream);
            if owns_flag {
                DEDICATED.store(false, Ordering::Release);
            }
        });
    if spawned.is_err() && owns_flag {
        DEDICATED.store(false, Ordering::Release);
    }
    true
}

/// Where a connection's replies are written.
pub(crate) type Writer = Arc<Mutex<UnixStream>>;

fn reply(writer: &Writer, msg: &FromWorker) -> bool {
    let Ok(bytes) = frame::encode(msg) else {
        return false;
    };
    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
    w.write_all(&bytes).is_ok()
}

/// Serves one connection on this thread until it closes: messages are handled in order, tasks
/// and calls run here.
fn serve_conn(core: Arc<CoreWorker>, stream: UnixStream) {
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let writer: Writer = Arc::new(Mutex::new(writer));
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut buf = HeapBytes::new();
    loop {
        let msg = match frame::read::<ToWorker, _>(&mut reader, &mut buf) {
            Ok(m) => m,
            Err(FrameError::Closed) => break,
            Err(e) => {
                eprintln!("oxray: dropped a connection with a bad message: {e}");
                break;
            }
        };
        let more = !reader.buffer().is_empty();
        if !handle(&core, &writer, msg, more) {
            break;
        }
    }
}

/// Handles one message of a connection whose replies go to `writer`; `more` says whether
/// more of its messages are waiting already. False: the connection is broken.
pub(crate) fn handle(core: &Arc<CoreWorker>, writer: &Writer, msg: ToWorker, more: bool) -> bool {
    // Owned handles, as the jobs below take them along.
    let core = core.clone();
    let writer = writer.clone();
    match msg {
        ToWorker::Task(spec) => {
            let start_us = now_us();
            let (outcome, contained) = if core.kind() == ClientKind::Worker {
                execute(&core, &spec, &mut |item| {
                    reply(&writer, &item);
                })
            } else {
                let f = failure(
                    FailureKind::Error,
                    "tasks go to workers, not to a driver".into(),
                    &spec,
                );
                (f, Vec::new())
            };
            let ran = Ran {
                id: spec.id,
                function: &spec.function,
                actor_call: false,
                start_us,
                ok: !matches!(outcome, TaskOutcome::Failed(_)),
            };
            // Sent before the reply when going idle: once the submitter has its last
            // result it may end its job, and the raylet then kills this worker.
            let full = core.task_events.record(ran, core.worker_id);
            if full || !more {
                core.flush_task_events();
            }
            reply(
                &writer,
                &FromWorker::Done {
                    id: spec.id,
                    outcome,
                    contained,
                },
            )
        }
        ToWorker::CancelChildren { parent } => {
            core.submitter.cancel_children(&core, parent);
            true
        }
        ToWorker::StreamTaken { task, taken } => {
            stream_window::taken(task, taken);
            true
        }
        ToWorker::CancelTask { id } => {
            if crate::context::running_task() == Some(id) {
                eprintln!("oxray: task {id} was force-cancelled; its worker exits");
                std::process::exit(1);
            }
            // Finished (or never here): nothing to stop.
            true
        }
        ToWorker::ActorCall(call) if is_async_call(&call) => {
            let (core2, writer2) = (core.clone(), writer.clone());
            let job: crate::actor_host::LoopJob = Box::new(move |on_loop| {
                if !on_loop {
                    // No event loop: the call runs here, to its end.
                    let (outcome, contained) = execute_call(&core2, &call);
                    reply_call(&core2, &writer2, &call, now_us(), outcome, contained);
                    return;
                }
                tokio::task::spawn_local(async move {
                    // In arrival order, at most `max_concurrency` at once.
                    let _place = crate::actor_host::call_place().await;
                    let start_us = now_us();
                    let (outcome, contained) = execute_async_call(&core2, &call).await;
                    reply_call(&core2, &writer2, &call, start_us, outcome, contained);
                });
            });
            if let Some(h) = crate::actor_host::hosted() {
                if let Some(job) = h.on_event_loop(job) {
                    job(false);
                }
            }
            true
        }
        ToWorker::ActorCall(call) => {
            let (core2, writer2) = (core.clone(), writer.clone());
            // Calls on the actor's pool end after the connection went idle: their events
            // are sent at once; calls run here, when nothing more is buffered.
            let concurrent = crate::actor_host::hosted().is_some_and(|h| h.max_concurrency > 1);
            let idle = concurrent || !more;
            let job: Box<dyn FnOnce() + Send> = Box::new(move || {
                let start_us = now_us();
                let (outcome, contained) = execute_call(&core2, &call);
                let ran = Ran {
                    id: call.id,
                    function: &call.method,
                    actor_call: true,
                    start_us,
                    ok: !matches!(outcome, TaskOutcome::Failed(_)),
                };
                if core2.task_events.record(ran, core2.worker_id) || idle {
                    core2.flush_task_events();
                }
                reply(
                    &writer2,
                    &FromWorker::Done {
                        id: call.id,
                        outcome,
                        contained,
                    },
                );
            });
            match crate::actor_host::hosted() {
                // max_concurrency > 1: on the actor's pool; else here, in order.
                Some(h) => {
                    if let Some(job) = h.spawn(job) {
                        job();
                    }
                }
                None => job(),
            }
            true
        }
        ToWorker::GetObject { req, id } => {
            serve_get(&core, &writer, req, id);
            true
        }
        ToWorker::Rebuild { req, id, node } => {
            serve_rebuild(&core, &writer, req, id, node);
            true
        }
        ToWorker::AddBorrowers { req, ids } => {
            core.refs.add_borrowers(&ids);
            reply(&writer, &FromWorker::Ack { req })
        }
        ToWorker::RemoveBorrowers { ids } => {
            for id in ids {
                let freed = core.refs.remove_borrower(id);
                core.release_freed(freed);
            }
            true
        }
        ToWorker::Reserve { req, ids } => {
            core.refs.reserve(&ids);
            reply(&writer, &FromWorker::Ack { req })
        }
        ToWorker::Unreserve { ids } => {
            for id in ids {
                core.release_reservation(id);
            }
            true
        }
    }
}

/// Answers a borrower's `GetObject`: at once when the value is known, else from a thread that
/// waits for it (so other requests on the connection are not held up).
fn serve_get(core: &Arc<CoreWorker>, writer: &Writer, req: u64, id: ObjectId) {
    if let Some(value) = value_of(core.refs.state(id)) {
        reply(writer, &FromWorker::Object { req, value });
        return;
    }
    let (core, writer) = (core.clone(), writer.clone());
    let _ = std::thread::Builder::new()
        .name("oxray-owner-get".into())
        .spawn(move || {
            core.refs.wait(&[id], 1, None, &mut |_| {});
            let value = value_of(core.refs.state(id)).unwrap_or(ObjectValue::Unknown);
            reply(&writer, &FromWorker::Object { req, value });
        });
}

/// Answers a borrower that found the copy of `id` on `node` lost: the object is made again
/// (as when this process finds it lost itself) and its new value sent once ready, from a
/// thread of its own (the rebuild waits for the cluster view and the task).
fn serve_rebuild(core: &Arc<CoreWorker>, writer: &Writer, req: u64, id: ObjectId, node: u16) {
    let (core, writer) = (core.clone(), writer.clone());
    let _ = std::thread::Builder::new()
        .name("oxray-owner-rebuild".into())
        .spawn(move || {
            let value = match core.rebuild_for_borrower(id, node) {
                Ok(()) => {
                    core.refs.wait(&[id], 1, None, &mut |_| {});
                    value_of(core.refs.state(id)).unwrap_or(ObjectValue::Unknown)
                }
                Err(e) => ObjectValue::Failed {
                    message: e.to_string(),
                },
            };
            reply(&writer, &FromWorker::Object { req, value });
        });
}

/// What a borrower is told of an object in state `state` (`None`: not ready yet).
fn value_of(state: Option<ObjState>) -> Option<ObjectValue> {
    match state {
        None => Some(ObjectValue::Unknown),
        Some(ObjState::Pending) => None,
        Some(ObjState::Inline { fingerprint, bytes }) => Some(ObjectValue::Inline {
            fingerprint,
            bytes: bytes.to_vec(),
        }),
        Some(ObjState::Stored { node }) => Some(ObjectValue::Stored { node }),
        Some(ObjState::Failed(e)) => Some(ObjectValue::Failed {
            message: e.to_string(),
        }),
    }
}

fn failure(kind: FailureKind, message: String, spec: &TaskSpec) -> TaskOutcome {
    TaskOutcome::Failed(TaskFailure {
        kind,
        message,
        function: spec.function.clone(),
        pid: std::process::id(),
    })
}

/// Runs one task; says how it ended and which refs its result contains (reserved already). A
/// streaming task's items are stored and reported through `send` as they come.
pub(crate) fn execute(
    core: &Arc<CoreWorker>,
    spec: &TaskSpec,
    send: &mut dyn FnMut(FromWorker),
) -> (TaskOutcome, Vec<ObjectId>) {
    let _running = EXEC.lock().unwrap_or_else(|p| p.into_inner());
    let _task = crate::context::Running::start(spec.id);
    let _cancellable = crate::context::TaskRunning::start(spec.id);
    let ran = run(core, spec);
    // Its children are no longer its to cancel.
    core.submitter.forget_children(spec.id);
    let mut value = match ran {
        Ok(v) => v,
        Err(failed) => return (failed, Vec::new()),
    };
    if let Some(items) = value.take_items() {
        return stream(core, spec, items, send);
    }
    finish(core, spec.id, &spec.function, value)
}

/// Runs a streaming task's iterator: each item is stored under its own id and reported at
/// once; the task's own value is the number of items. A panic or an item that cannot be
/// stored ends the stream with that error, after the items before it.
fn stream(
    core: &Arc<CoreWorker>,
    spec: &TaskSpec,
    mut items: crate::value::ItemIter,
    send: &mut dyn FnMut(FromWorker),
) -> (TaskOutcome, Vec<ObjectId>) {
    let mut index = 0u64;
    let _window = stream_window::Open::new(spec.id, spec.stream_taken);
    loop {
        // With a window, wait until the caller has taken enough (or dropped the stream).
        if index >= spec.stream_skip
            && spec.stream_window > 0
            && !stream_window::wait(spec.id, index, spec.stream_window)
        {
            break;
        }
        let item = match catch_unwind(AssertUnwindSafe(|| items.next())) {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(panic) => {
                let message = format!("panicked after {index} items: {}", panic_message(&*panic));
                return (failure(FailureKind::Panic, message, spec), Vec::new());
            }
        };
        if index >= oxray_common::ids::MAX_STREAM_ITEMS {
            let message = format!(
                "yielded more than {} items",
                oxray_common::ids::MAX_STREAM_ITEMS
            );
            return (failure(FailureKind::Error, message, spec), Vec::new());
        }
        if index < spec.stream_skip {
            // A retry: the caller has this item from an earlier attempt.
            drop(item);
            index += 1;
            continue;
        }
        let id = oxray_common::ids::item_id(spec.id, index);
        let (outcome, contained) = finish(core, id, &spec.function, item);
        let stored = !matches!(outcome, TaskOutcome::Failed(_));
        send(FromWorker::Item {
            task: spec.id,
            index,
            outcome,
            contained,
        });
        if !stored {
            let message = format!("item {index} could not be stored");
            return (failure(FailureKind::Error, message, spec), Vec::new());
        }
        index += 1;
    }
    finish(core, spec.id, &spec.function, Box::new(index))
}

/// How an actor call that failed ends.
fn call_failed(
    call: &ActorCall,
    kind: FailureKind,
    message: String,
) -> (TaskOutcome, Vec<ObjectId>) {
    (
        TaskOutcome::Failed(TaskFailure {
            kind,
            message,
            function: call.method.clone(),
            pid: std::process::id(),
        }),
        Vec::new(),
    )
}

/// Runs one actor method call.
fn execute_call(core: &Arc<CoreWorker>, call: &ActorCall) -> (TaskOutcome, Vec<ObjectId>) {
    let fail = |kind, message| call_failed(call, kind, message);
    let Some(hosted) = crate::actor_host::hosted() else {
        return fail(FailureKind::Error, "this worker hosts no actor".into());
    };
    let Some(method) = crate::actor_host::lookup_method(&call.method) else {
        return fail(
            FailureKind::FunctionNotFound,
            format!("no actor method {} in this executable", call.method),
        );
    };
    // One call at a time unless the actor allows more.
    let _serial =
        (hosted.max_concurrency <= 1).then(|| EXEC.lock().unwrap_or_else(|p| p.into_inner()));
    let args = TaskArgs {
        args: &call.args,
        core,
    };
    let _call = crate::context::Running::start(call.id);
    let ran = catch_unwind(AssertUnwindSafe(|| method(&hosted.instance, &args)));
    core.submitter.forget_children(call.id);
    let value = match ran {
        Ok(Ok(v)) => v,
        Ok(Err(TaskError::App(m))) => return fail(FailureKind::Error, m),
        Ok(Err(TaskError::BadArgument(m))) => return fail(FailureKind::BadArgument, m),
        Err(panic) => {
            return fail(
                FailureKind::Panic,
                format!("panicked: {}", panic_message(&*panic)),
            )
        }
    };
    finish(core, call.id, &call.method, value)
}

/// The windows of the streaming tasks this worker runs: how many items each caller took.
mod stream_window {
    use std::collections::{HashMap, VecDeque};
    use std::sync::{Condvar, Mutex};

    use oxray_object_store::ObjectId;

    /// How many items each caller took, by task: from when the task is dispatched here (a
    /// caller may tell before the task starts) to its end.
    #[derive(Default)]
    struct Windows {
        taken: HashMap<ObjectId, u64>,
        /// Tasks that ended lately: a late word about one is dropped, not kept forever.
        ended: VecDeque<ObjectId>,
    }

    /// How many ended tasks are remembered.
    const ENDED_KEPT: usize = 256;

    static WINDOWS: Mutex<Option<Windows>> = Mutex::new(None);
    static MOVED: Condvar = Condvar::new();

    /// The caller of `task` took `taken` items (`u64::MAX`: it dropped the stream).
    pub(super) fn taken(task: ObjectId, taken: u64) {
        let mut all = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
        let w = all.get_or_insert_with(Windows::default);
        if !w.ended.contains(&task) {
            let n = w.taken.entry(task).or_insert(0);
            *n = (*n).max(taken);
        }
        drop(all);
        MOVED.notify_all();
    }

    /// Waits until item `index` is within `window` of those taken; false when the caller
    /// dropped the stream (the task stops making items).
    pub(super) fn wait(task: ObjectId, index: u64, window: u64) -> bool {
        let mut all = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let taken = all
                .as_ref()
                .and_then(|w| w.taken.get(&task))
                .copied()
                .unwrap_or(0);
            if taken == u64::MAX {
                return false;
            }
            if index < taken.saturating_add(window) {
                return true;
            }
            all = MOVED.wait(all).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A streaming task's entry, for the time it runs.
    pub(super) struct Open(ObjectId);

    impl Open {
        /// Task `task` starts, its caller having taken `taken` items (more if it said so).
        pub(super) fn new(task: ObjectId, taken: u64) -> Open {
            let mut all = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
            let w = all.get_or_insert_with(Windows::default);
            w.ended.retain(|t| *t != task);
            let n = w.taken.entry(task).or_insert(0);
            *n = (*n).max(taken);
            Open(task)
        }
    }

    impl Drop for Open {
        fn drop(&mut self) {
            let mut all = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(w) = all.as_mut() {
                w.taken.remove(&self.0);
                if w.ended.len() >= ENDED_KEPT {
                    w.ended.pop_front();
                }
                w.ended.push_back(self.0);
            }
        }
    }
}

/// Whether `call` is an `async fn(&self)` call of an async actor (it runs on the event loop).
fn is_async_call(call: &ActorCall) -> bool {
    crate::actor_host::hosted().is_some_and(|h| h.is_async)
        && crate::actor_host::lookup_async(&call.method).is_some()
}

/// Records an actor call's run and answers its caller (calls on the event loop or a pool end
/// after their connection went idle: their events are sent at once).
fn reply_call(
    core: &Arc<CoreWorker>,
    writer: &Writer,
    call: &ActorCall,
    start_us: u64,
    outcome: TaskOutcome,
    contained: Vec<ObjectId>,
) {
    let ran = Ran {
        id: call.id,
        function: &call.method,
        actor_call: true,
        start_us,
        ok: !matches!(outcome, TaskOutcome::Failed(_)),
    };
    core.task_events.record(ran, core.worker_id);
    core.flush_task_events();
    reply(
        writer,
        &FromWorker::Done {
            id: call.id,
            outcome,
            contained,
        },
    );
}

/// Runs an `async fn(&self)` call on the event loop: its future is spawned on its own, so a
/// panic inside is this call's failure only.
async fn execute_async_call(
    core: &Arc<CoreWorker>,
    call: &ActorCall,
) -> (TaskOutcome, Vec<ObjectId>) {
    let fail = |kind, message| call_failed(call, kind, message);
    let (Some(hosted), Some(start)) = (
        crate::actor_host::hosted(),
        crate::actor_host::lookup_async(&call.method),
    ) else {
        return fail(
            FailureKind::Error,
            "this worker hosts no async actor".into(),
        );
    };
    let args = TaskArgs {
        args: &call.args,
        core,
    };
    let future = match start(&hosted.instance, &args) {
        Ok(f) => f,
        Err(TaskError::App(m)) => return fail(FailureKind::Error, m),
        Err(TaskError::BadArgument(m)) => return fail(FailureKind::BadArgument, m),
    };
    let future = crate::context::InCall::new(call.id, future);
    let value = match tokio::task::spawn_local(future).await {
        Ok(Ok(v)) => v,
        Ok(Err(TaskError::App(m))) => return fail(FailureKind::Error, m),
        Ok(Err(TaskError::BadArgument(m))) => return fail(FailureKind::BadArgument, m),
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            return fail(
                FailureKind::Panic,
                format!("panicked: {}", panic_message(&*panic)),
            );
        }
        Err(e) => return fail(FailureKind::Error, format!("the call was dropped: {e}")),
    };
    core.submitter.forget_children(call.id);
    finish(core, call.id, &call.method, value)
}

/// Stores a result and reserves the refs it contains before the value (and its handles) drop.
fn finish(
    core: &Arc<CoreWorker>,
    id: ObjectId,
    function: &str,
    value: Box<dyn ReturnValue>,
) -> (TaskOutcome, Vec<ObjectId>) {
    let (outcome, contained) =
        collect_contained(|| store_result(core, id, function, value.as_ref()));
    if contained.is_empty() || matches!(outcome, TaskOutcome::Failed(_)) {
        return (outcome, Vec::new());
    }
    let reserved = crate::borrow::reserve(core, &contained);
    drop(value);
    match reserved {
        Ok(()) => (outcome, contained),
        Err(e) => (store_failure(function, e.to_string()), Vec::new()),
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the task panicked".into())
}

fn store_failure(function: &str, message: String) -> TaskOutcome {
    TaskOutcome::Failed(TaskFailure {
        kind: FailureKind::Store,
        message,
        function: function.to_owned(),
        pid: std::process::id(),
    })
}

/// Calls the task's function.
fn run(core: &Arc<CoreWorker>, spec: &TaskSpec) -> Result<Box<dyn ReturnValue>, TaskOutcome> {
    let Some(invoke) = registry::lookup(&spec.function) else {
        return Err(failure(
            FailureKind::FunctionNotFound,
            format!("no function {} in this executable", spec.function),
            spec,
        ));
    };
    let args = TaskArgs {
        args: &spec.args,
        core,
    };
    match catch_unwind(AssertUnwindSafe(|| invoke(&args))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(TaskError::App(m))) => Err(failure(FailureKind::Error, m, spec)),
        Ok(Err(TaskError::BadArgument(m))) => Err(failure(FailureKind::BadArgument, m, spec)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the task panicked".into());
            Err(failure(
                FailureKind::Panic,
                format!("panicked: {msg}"),
                spec,
            ))
        }
    }
}

/// Encodes a result: inline when small, into the store under the task's (or call's) id when
/// large.
fn store_result(
    core: &Arc<CoreWorker>,
    id: ObjectId,
    function: &str,
    value: &dyn ReturnValue,
) -> TaskOutcome {
    let len = match value.encoded_len() {
        Ok(l) => l,
        Err(e) => return store_failure(function, e.to_string()),
    };
    if len <= INLINE_MAX {
        return match encode_heap(value, len) {
            Ok(bytes) => TaskOutcome::Inline {
                fingerprint: value.fingerprint(),
                bytes: bytes.to_vec(),
            },
            Err(e) => store_failure(function, e.to_string()),
        };
    }
    match core.create_in_store(id, len, value) {
        Ok(()) => TaskOutcome::Stored {
            node: core.node_index,
        },
        Err(crate::Error::ObjectStoreFull { message }) => TaskOutcome::Failed(TaskFailure {
            kind: FailureKind::StoreFull,
            message,
            function: function.to_owned(),
            pid: std::process::id(),
        }),
        Err(e) => store_failure(function, e.to_string()),
    }
}
