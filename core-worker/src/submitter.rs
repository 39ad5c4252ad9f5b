//! Task submission: dependency resolution, leases, and pushing tasks straight to leased workers.
//!
//! Tasks are grouped by their resource shape and the node holding most of their stored
//! arguments (the *scheduling key*; that node is the raylet's locality hint). For each key the
//! submitter keeps a queue of ready tasks and the workers it leased for that key. A task goes to an idle
//! leased worker at once (from the submitting thread, no hop through the raylet); when there is
//! none it asks the raylet for more leases, up to one per queued task. A worker that finishes a
//! task gets the next one from the thread that read the result. Leases idle for
//! [`LEASE_LINGER`] go back to the raylet, so a loop of `submit; get` reuses one lease, as does a
//! burst of tasks, while an idle driver does not hold CPUs.
//!
//! A worker whose connection breaks mid-task is a system failure: the task is retried on another
//! lease, up to its `max_retries`.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use oxray_common::frame;
use oxray_common::ids::node_of;
use oxray_common::protocol::{
    ErrorKind, FailureKind, FromRaylet, FromWorker, Strategy, TaskArg, TaskOutcome, TaskSpec,
    ToRaylet, ToWorker,
};
use oxray_common::resources::Resources;
use oxray_common::WorkerId;
use oxray_object_store::ObjectId;

use crate::args::ArgSpec;
use crate::core::CoreWorker;
use crate::error::Error;
use crate::lineage::Lineage;
use crate::refs::ObjState;
use crate::replies::Replies;
use crate::value::aligned_copy;

/// How long an idle lease is kept for more work of the same shape.
pub const LEASE_LINGER: Duration = Duration::from_millis(50);
/// At most this many lease requests in flight per scheduling key.
const MAX_LEASE_REQUESTS: usize = 64;

/// Queue capacity (tasks) above which an emptied queue gives its memory back.
const SHRINK_ABOVE: usize = 4096;

/// Tasks that may share a leased worker: one resource shape, and the same node holding most
/// of their stored arguments, which the raylet prefers when it has room (0: no preference).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SchedulingKey {
    pub resources: Resources,
    pub near: u16,
    /// Where the tasks may run.
    pub strategy: Strategy,
}

/// A submitted task and what the submitter needs to finish it.
pub(crate) struct Task {
    pub id: ObjectId,
    pub function: String,
    pub args: Vec<ArgSpec>,
    pub resources: Resources,
    pub retries_left: u32,
    pub retry_exceptions: bool,
    pub attempt: u32,
    pub strategy: Strategy,
}

impl Task {
    fn ref_args(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.args.iter().filter_map(|a| match a {
            ArgSpec::Ref(id) => Some(*id),
            ArgSpec::Value { .. } => None,
        })
    }
}

/// A worker leased for one scheduling key; `C` is the connection to it (a socket in the
/// runtime, a stand-in in tests).
struct Leased<C> {
    lease: u64,
    worker: WorkerId,
    conn: C,
    running: Option<Task>,
    idle_since: Instant,
}

struct KeyState<C> {
    ready: VecDeque<Task>,
    leases: Vec<Leased<C>>,
    requests_in_flight: usize,
}

impl<C> Default for KeyState<C> {
    fn default() -> Self {
        KeyState {
            ready: VecDeque::new(),
            leases: Vec::new(),
            requests_in_flight: 0,
        }
    }
}

/// The submitter's bookkeeping, without I/O: per scheduling key, the queue of ready tasks, the
/// leased workers (and what each runs) and the lease requests in flight. Its methods say what to
/// send; [`Submitter`] sends it.
pub(crate) struct Queues<C> {
    keys: HashMap<SchedulingKey, KeyState<C>>,
}

impl<C> Default for Queues<C> {
    fn default() -> Self {
        Queues {
            keys: HashMap::new(),
        }
    }
}

impl<C> Queues<C> {
    /// Queues a ready task behind the others of its key.
    fn push_ready(&mut self, key: &SchedulingKey, task: Task) {
        self.keys
            .entry(key.clone())
            .or_default()
            .ready
            .push_back(task);
    }

    /// Queues a task to run again, ahead of the others of its key.
    fn push_retry(&mut self, key: &SchedulingKey, task: Task) {
        if let Some(ks) = self.keys.get_mut(key) {
            ks.ready.push_front(task);
        }
    }

    /// Hands the ready tasks of `key` to its idle leased workers, in order, with `send` (false:
    /// that worker is gone; its lease is dropped and the task goes to another), then asks for
    /// leases for the tasks left with `request_lease` (true: asked), one per task not covered
    /// by a request in flight, at most [`MAX_LEASE_REQUESTS`] in flight.
    fn dispatch(
        &mut self,
        key: &SchedulingKey,
        mut send: impl FnMut(&C, &Task) -> bool,
        mut request_lease: impl FnMut() -> bool,
    ) {
        let Some(ks) = self.keys.get_mut(key) else {
            return;
        };
        while !ks.ready.is_empty() {
            let Some(leased) = ks.leases.iter_mut().find(|l| l.running.is_none()) else {
                break;
            };
            let Some(task) = ks.ready.pop_front() else {
                break;
            };
            if !send(&leased.conn, &task) {
                // The worker is gone; the reply loop reports it. Try another.
                ks.ready.push_front(task);
                let dead = leased.worker;
                ks.leases.retain(|l| l.worker != dead);
                continue;
            }
            leased.running = Some(task);
        }
        // A drained burst gives its queue's memory back.
        if ks.ready.is_empty() && ks.ready.capacity() > SHRINK_ABOVE {
            ks.ready.shrink_to_fit();
        }
        let wanted = ks
            .ready
            .len()
            .saturating_sub(ks.requests_in_flight)
            .min(MAX_LEASE_REQUESTS.saturating_sub(ks.requests_in_flight));
        for _ in 0..wanted {
            if request_lease() {
                ks.requests_in_flight += 1;
            }
        }
    }

    /// A lease request of `key` was answered with a lease, idle from `now`.
    fn lease_granted(
        &mut self,
        key: &SchedulingKey,
        lease: u64,
        worker: WorkerId,
        conn: C,
        now: Instant,
    ) {
        let ks = self.keys.entry(key.clone()).or_default();
        ks.requests_in_flight = ks.requests_in_flight.saturating_sub(1);
        ks.leases.push(Leased {
            lease,
            worker,
            conn,
            running: None,
            idle_since: now,
        });
    }

    /// A lease request of `key` ended without a usable lease.
    fn lease_request_ended(&mut self, key: &SchedulingKey) {
        if let Some(ks) = self.keys.get_mut(key) {
            ks.requests_in_flight = ks.requests_in_flight.saturating_sub(1);
        }
    }

    /// The raylet refused a lease request of `key`: when no other request is in flight and no
    /// worker is leased, nothing will run the key's queued tasks; they are returned to fail.
    fn lease_refused(&mut self, key: &SchedulingKey) -> Vec<Task> {
        let Some(ks) = self.keys.get_mut(key) else {
            return Vec::new();
        };
        ks.requests_in_flight = ks.requests_in_flight.saturating_sub(1);
        if ks.requests_in_flight > 0 || !ks.leases.is_empty() {
            return Vec::new();
        }
        ks.ready.drain(..).collect()
    }

    /// `worker` finished task `id`: its lease is idle from `now`. Returns the task and its key,
    /// or `None` when that worker does not run that task (it was cancelled or retried).
    fn task_done(
        &mut self,
        worker: WorkerId,
        id: ObjectId,
        now: Instant,
    ) -> Option<(SchedulingKey, Task)> {
        for (key, ks) in self.keys.iter_mut() {
            if let Some(l) = ks
                .leases
                .iter_mut()
                .find(|l| l.worker == worker && l.running.as_ref().is_some_and(|t| t.id == id))
            {
                let task = l.running.take();
                l.idle_since = now;
                return task.map(|t| (key.clone(), t));
            }
        }
        None
    }

    /// `worker`'s connection broke: forgets its lease. Returns its key and the task it ran.
    fn worker_lost(&mut self, worker: WorkerId) -> Option<(SchedulingKey, Option<Task>)> {
        for (key, ks) in self.keys.iter_mut() {
            if let Some(pos) = ks.leases.iter().position(|l| l.worker == worker) {
                let l = ks.leases.remove(pos);
                return Some((key.clone(), l.running));
            }
        }
        None
    }

    /// The connection of the leased worker running task `id`, if one does.
    fn running_conn(&self, id: ObjectId) -> Option<&C> {
        self.keys
            .values()
            .flat_map(|ks| ks.leases.iter())
            .find(|l| l.running.as_ref().is_some_and(|t| t.id == id))
            .map(|l| &l.conn)
    }

    /// Task `id` runs on a leased worker and is being cancelled by force: it must not be
    /// retried when its worker dies. Returns that worker's connection.
    fn disarm_running(&mut self, id: ObjectId) -> Option<C>
    where
        C: Clone,
    {
        for ks in self.keys.values_mut() {
            for l in &mut ks.leases {
                if let Some(t) = l.running.as_mut().filter(|t| t.id == id) {
                    t.retries_left = 0;
                    t.retry_exceptions = false;
                    return Some(l.conn.clone());
                }
            }
        }
        None
    }

    /// Takes task `id` out of the ready queues (cancelled before it was sent).
    fn remove_ready(&mut self, id: ObjectId) -> Option<Task> {
        for ks in self.keys.values_mut() {
            if let Some(pos) = ks.ready.iter().position(|t| t.id == id) {
                return ks.ready.remove(pos);
            }
        }
        None
    }

    /// Whether `key` has an idle lease and no queued task (the lease goes back after `linger`).
    fn has_idle_lease(&self, key: &SchedulingKey) -> bool {
        self.keys
            .get(key)
            .is_some_and(|ks| ks.ready.is_empty() && ks.leases.iter().any(|l| l.running.is_none()))
    }

    /// When the first idle lease is due back: `linger` after it went idle. Keys with queued
    /// tasks keep their leases.
    fn next_idle_deadline(&self, linger: Duration) -> Option<Instant> {
        self.keys
            .values()
            .filter(|ks| ks.ready.is_empty())
            .flat_map(|ks| ks.leases.iter())
            .filter(|l| l.running.is_none())
            .map(|l| l.idle_since + linger)
            .min()
    }

    /// Takes out the leases idle for at least `linger` at `now` in keys with no queued task, or
    /// every lease when `all`; returns their lease numbers.
    fn take_idle_leases(&mut self, now: Instant, linger: Duration, all: bool) -> Vec<u64> {
        let mut taken = Vec::new();
        for ks in self.keys.values_mut() {
            if !ks.ready.is_empty() && !all {
                continue;
            }
            ks.leases.retain(|l| {
                let idle = l.running.is_none() && now.duration_since(l.idle_since) >= linger;
                if all || idle {
                    taken.push(l.lease);
                    false
                } else {
                    true
                }
            });
        }
        taken
    }
}

struct State<C = Arc<WorkerConn>> {
    queues: Queues<C>,
    /// Tasks waiting for ref arguments, by task id.
    waiting: HashMap<ObjectId, Task>,
    /// The lease reaper waits without a deadline (no lease was idle): the next lease to go
    /// idle must wake it. Only then is the condvar signalled, so the task path pays no system
    /// call for it.
    reaper_asleep: bool,
    /// The reaper stops (shutdown, or the submitter is gone).
    closed: bool,
}

/// The submitter's state, shared with the lease reaper (which must not keep the core worker
/// alive).
struct Shared<C = Arc<WorkerConn>> {
    state: Mutex<State<C>>,
    /// Wakes the reaper: a lease went idle while it slept, or the submitter closed.
    lease_idle: Condvar,
}

impl<C> Shared<C> {
    fn new() -> Self {
        Shared {
            state: Mutex::new(State {
                queues: Queues::default(),
                waiting: HashMap::new(),
                reaper_asleep: false,
                closed: false,
            }),
            lease_idle: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the lease reaper if it sleeps without a deadline and a lease of `key` went idle.
    fn wake_reaper(&self, st: &mut State<C>, key: &SchedulingKey) {
        if st.reaper_asleep && st.queues.has_idle_lease(key) {
            st.reaper_asleep = false;
            self.lease_idle.notify_one();
        }
    }

    /// Stops the lease reaper.
    fn close_reaper(&self) {
        self.lock().closed = true;
        self.lease_idle.notify_all();
    }
}

/// What the submitter knows of a streaming task (or one with several returns).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamEntry {
    /// The most items made ahead of those taken (0: no bound).
    pub window: u64,
    /// Items reported so far (they come in order): a retry makes them again without storing
    /// or reporting them, so the caller sees each once.
    pub received: u64,
    /// Items the caller took, as last told to the worker (a retry starts its window there).
    pub taken: u64,
    /// A task with a fixed number of returns: its items' refs are the caller's from the
    /// start (pending until they come), and they fail with the task.
    pub returns: Option<u64>,
}

/// The submitter. One per core worker.
pub(crate) struct Submitter {
    shared: Arc<Shared>,
    /// The lease reaper starts with the first lease granted.
    reaper: std::sync::OnceLock<()>,
    /// Recipes of stored results, to make them again if their node dies.
    pub lineage: crate::lineage::Lineage,
    /// The names given to tasks (`options().name(..)`), until they finish: an error names
    /// the task by them. Kept aside, so unnamed tasks cost nothing.
    names: Mutex<HashMap<ObjectId, String>>,
    /// Streaming tasks whose stream (`ObjectRefStream`) lives, and tasks with several returns
    /// until they end: their items are kept; items of others are freed as they come.
    pub(crate) streams: Mutex<HashMap<ObjectId, StreamEntry>>,
    /// Tasks submitted by each task this worker runs, while it runs (a recursive cancel of it
    /// cancels them).
    children: Mutex<HashMap<ObjectId, Vec<ObjectId>>>,
    /// Whether any streaming task was submitted (else a task spec takes no look at `streams`).
    any_stream: std::sync::atomic::AtomicBool,
    /// Whether any task was named (else finishing a task takes no look at `names`).
    any_named: std::sync::atomic::AtomicBool,
}

impl Default for Submitter {
    fn default() -> Self {
        Submitter {
            names: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            children: Mutex::new(HashMap::new()),
            any_named: std::sync::atomic::AtomicBool::new(false),
            any_stream: std::sync::atomic::AtomicBool::new(false),
            shared: Arc::new(Shared::new()),
            reaper: std::sync::OnceLock::new(),
            lineage: Default::default(),
        }
    }
}

impl Drop for Submitter {
    fn drop(&mut self) {
        self.shared.close_reaper();
    }
}

/// A connection to a leased worker.
pub(crate) struct WorkerConn {
    writer: Mutex<UnixStream>,
    /// The worker's address (a force-cancel reaches it on a connection of its own).
    address: String,
}

/// The connection's lifetime is the lease's: letting the lease go closes the socket (both
/// ways), so its entry in the reply loop here and the worker's serving thread (and, across nodes, the
/// tunnel between them) end too.
impl Drop for WorkerConn {
    fn drop(&mut self) {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.shutdown(std::net::Shutdown::Both);
    }
}

impl WorkerConn {
    fn send(&self, msg: &ToWorker) -> std::io::Result<()> {
        let buf = frame::encode(msg)?;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&buf)
    }
}

impl Submitter {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Submits a task whose return object (`task.id`) is already in the ref table.
    pub fn submit(&self, core: &Arc<CoreWorker>, task: Task) {
        let mut unresolved = false;
        for dep in task.ref_args() {
            // Borrowed refs: fetch their values from their owners.
            core.ensure_fetch(dep);
            if core.refs.add_dependent(dep, task.id) {
                unresolved = true;
            }
        }
        if !unresolved {
            self.enqueue_resolved(core, task);
            return;
        }
        let id = task.id;
        self.lock().waiting.insert(id, task);
        // A dependency may have finished since `add_dependent`: check again.
        self.on_dependency_done(core, vec![id]);
    }

    /// A dependency finished: tasks whose dependencies are all done become ready.
    pub fn on_dependency_done(&self, core: &Arc<CoreWorker>, dependents: Vec<ObjectId>) {
        core.actors.dependency_done(core, &dependents);
        for task_id in dependents {
            let task = {
                let mut st = self.lock();
                let Some(task) = st.waiting.get(&task_id) else {
                    continue;
                };
                let pending = task
                    .ref_args()
                    .any(|d| matches!(core.refs.state(d), Some(ObjState::Pending)));
                if pending {
                    continue;
                }
                st.waiting.remove(&task_id)
            };
            if let Some(task) = task {
                self.enqueue_resolved(core, task);
            }
        }
    }

    /// The function of the first task waiting for a lease of `key`, to name it in warnings.
    pub fn queued_function(&self, key: &SchedulingKey) -> Option<String> {
        let st = self.lock();
        let ready = &st.queues.keys.get(key)?.ready;
        ready.front().map(|t| t.function.clone())
    }

    /// All dependencies are done: fail the task if one failed, else queue it.
    fn enqueue_resolved(&self, core: &Arc<CoreWorker>, task: Task) {
        let failed_dep = task.ref_args().find_map(|dep| match core.refs.state(dep) {
            Some(ObjState::Failed(e)) => Some(e),
            _ => None,
        });
        if let Some(e) = failed_dep {
            self.finish(core, task, ObjState::Failed(e));
            return;
        }
        let key = SchedulingKey {
            resources: task.resources.clone(),
            // A strategy chooses the node itself.
            near: if task.strategy == Strategy::Default {
                Self::near(core, &task)
            } else {
                0
            },
            strategy: task.strategy,
        };
        let mut st = self.lock();
        st.queues.push_ready(&key, task);
        self.dispatch(core, &mut st, &key);
    }

    /// The other node holding most of the task's stored arguments (0: none; ties go to the
    /// first). Objects are stored only above the inline limit, so each one is worth moving the
    /// task for rather than the bytes.
    fn near(core: &CoreWorker, task: &Task) -> u16 {
        let mut counts: Vec<(u16, usize)> = Vec::new();
        for dep in task.ref_args() {
            if let Some(ObjState::Stored { node }) = core.refs.state(dep) {
                match counts.iter_mut().find(|(n, _)| *n == node) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((node, 1)),
                }
            }
        }
        let best = counts
            .iter()
            .fold(None, |best: Option<(u16, usize)>, &(n, c)| match best {
                Some((_, bc)) if bc >= c => best,
                _ => Some((n, c)),
            });
        match best {
            Some((node, _)) if node != core.node_index => node,
            _ => 0,
        }
    }

    /// Builds the wire form of a task, resolving ref args to inline bytes or store ids.
    fn spec(core: &CoreWorker, task: &Task) -> TaskSpec {
        let args = task
            .args
            .iter()
            .map(|a| match a {
                ArgSpec::Value {
                    fingerprint, bytes, ..
                } => TaskArg::Inline {
                    fingerprint: *fingerprint,
                    bytes: bytes.to_vec(),
                },
                ArgSpec::Ref(id) => match core.refs.state(*id) {
                    Some(ObjState::Inline { fingerprint, bytes }) => TaskArg::Inline {
                        fingerprint,
                        bytes: bytes.to_vec(),
                    },
                    Some(ObjState::Stored { node }) => TaskArg::Stored { id: *id, node },
                    _ => TaskArg::Stored {
                        id: *id,
                        node: node_of(*id),
                    },
                },
            })
            .collect();
        let submitter = &core.submitter;
        let stream = if submitter
            .any_stream
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let streams = submitter.streams.lock().unwrap_or_else(|p| p.into_inner());
            streams.get(&task.id).copied().unwrap_or_default()
        } else {
            StreamEntry::default()
        };
        TaskSpec {
            id: task.id,
            function: task.function.clone(),
            args,
            attempt: task.attempt,
            stream_window: stream.window,
            stream_skip: stream.received,
            stream_taken: stream.taken,
        }
    }

    /// Task `child` was submitted while this thread ran task `parent`.
    pub(crate) fn add_child(&self, parent: ObjectId, child: ObjectId) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.entry(parent).or_default().push(child);
    }

    /// Task `parent` ended here: its children are no longer its to cancel.
    pub(crate) fn forget_children(&self, parent: ObjectId) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.remove(&parent);
    }

    /// Cancels the tasks `parent` submitted (recursively; not by force).
    pub(crate) fn cancel_children(&self, core: &Arc<CoreWorker>, parent: ObjectId) {
        let kids = {
            let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
            children.get(&parent).cloned().unwrap_or_default()
        };
        for child in kids {
            self.cancel(core, child, false, true);
        }
    }

    /// Registers streaming task `id` (its items are kept for its stream, or are the caller's
    /// `returns` refs) with its window.
    pub(crate) fn add_stream(&self, id: ObjectId, window: u64, returns: Option<u64>) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.insert(
            id,
            StreamEntry {
                window,
                returns,
                ..StreamEntry::default()
            },
        );
        self.any_stream
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The caller of streaming task `id` took `taken` items (a retry's window starts there).
    pub(crate) fn note_taken(&self, id: ObjectId, taken: u64) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = streams.get_mut(&id) {
            e.taken = e.taken.max(taken);
        }
    }

    /// The address of the worker running task `id`, if one does (the stream's window is
    /// moved there on a connection of its own).
    pub(crate) fn running_worker_address(&self, id: ObjectId) -> Option<String> {
        let st = self.lock();
        st.queues.running_conn(id).map(|c| c.address.clone())
    }

    /// Sends ready tasks of `key` to idle leased workers and asks for leases for the rest.
    fn dispatch(&self, core: &Arc<CoreWorker>, st: &mut State, key: &SchedulingKey) {
        st.queues.dispatch(
            key,
            |conn, task| conn.send(&ToWorker::Task(Self::spec(core, task))).is_ok(),
            || core.raylet.request_lease(key.clone()).is_ok(),
        );
        self.shared.wake_reaper(st, key);
    }

    /// The raylet answered a lease request for `key`.
    pub fn on_lease_reply(&self, core: &Arc<CoreWorker>, key: SchedulingKey, msg: FromRaylet) {
        match msg {
            FromRaylet::LeaseGranted {
                lease,
                worker,
                address,
                ..
            } => {
                let conn = match connect_worker(core, &address, worker) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("oxray: cannot reach leased worker {worker}: {e}");
                        let _ = core.raylet.send(&ToRaylet::ReturnLease { lease });
                        let mut st = self.lock();
                        st.queues.lease_request_ended(&key);
                        self.dispatch(core, &mut st, &key);
                        return;
                    }
                };
                self.reaper
                    .get_or_init(|| self.start_lease_reaper(Arc::downgrade(core)));
                let mut st = self.lock();
                st.queues
                    .lease_granted(&key, lease, worker, conn, Instant::now());
                self.dispatch(core, &mut st, &key);
            }
            FromRaylet::Error { kind, message, .. } => {
                let failed = self.lock().queues.lease_refused(&key);
                for task in failed {
                    let error = if kind == ErrorKind::Unschedulable {
                        Error::Unschedulable {
                            message: format!("task {}: {message}", task.function),
                        }
                    } else {
                        Error::WorkerDied {
                            function: task.function.clone(),
                            attempts: 0,
                            message: message.clone(),
                        }
                    };
                    self.finish(core, task, ObjState::Failed(error));
                }
            }
            _ => {}
        }
    }

    /// A leased worker reported a task's end.
    fn on_done(
        &self,
        core: &Arc<CoreWorker>,
        worker: WorkerId,
        id: ObjectId,
        outcome: TaskOutcome,
        contained: Vec<ObjectId>,
    ) {
        let mut st = self.lock();
        let Some((key, mut task)) = st.queues.task_done(worker, id, Instant::now()) else {
            // Not ours any more (cancelled and retried elsewhere): drop what it reserved.
            for c in contained {
                core.release_reservation(c);
            }
            return;
        };
        if !contained.is_empty() {
            let freed = core.refs.set_contained(id, contained);
            core.release_freed(freed);
        }
        let state = match outcome {
            TaskOutcome::Inline { fingerprint, bytes } => ObjState::Inline {
                fingerprint,
                bytes: Arc::new(aligned_copy(&bytes)),
            },
            TaskOutcome::Stored { node } => ObjState::Stored { node },
            TaskOutcome::Failed(f) => {
                let app_error = matches!(f.kind, FailureKind::Panic | FailureKind::Error);
                if app_error && task.retry_exceptions && task.retries_left > 0 {
                    task.retries_left -= 1;
                    task.attempt += 1;
                    st.queues.push_retry(&key, task);
                    self.dispatch(core, &mut st, &key);
                    return;
                }
                ObjState::Failed(match f.kind {
                    FailureKind::FunctionNotFound => Error::FunctionNotFound { name: f.function },
                    FailureKind::StoreFull => Error::ObjectStoreFull {
                        message: format!(
                            "the result of {} (pid {}) did not fit in the object store: {}",
                            f.function, f.pid, f.message
                        ),
                    },
                    _ => Error::TaskFailed {
                        message: f.message,
                        function: f.function,
                        pid: f.pid,
                    },
                })
            }
        };
        self.dispatch(core, &mut st, &key);
        drop(st);
        self.finish(core, task, state);
    }

    /// Item `index` of streaming task `task` was stored: kept for its stream, or freed when
    /// the stream is gone.
    fn on_item(
        &self,
        core: &Arc<CoreWorker>,
        task: ObjectId,
        index: u64,
        outcome: TaskOutcome,
        contained: Vec<ObjectId>,
    ) {
        let id = oxray_common::ids::item_id(task, index);
        let state = match outcome {
            TaskOutcome::Inline { fingerprint, bytes } => ObjState::Inline {
                fingerprint,
                bytes: Arc::new(aligned_copy(&bytes)),
            },
            TaskOutcome::Stored { node } => ObjState::Stored { node },
            TaskOutcome::Failed(f) => ObjState::Failed(Error::TaskFailed {
                message: f.message,
                function: f.function,
                pid: f.pid,
            }),
        };
        let stored = match state {
            ObjState::Stored { node } => Some(node),
            _ => None,
        };
        // An item nobody will read: its stored copy and the refs it holds go.
        let discard = |contained: Vec<ObjectId>| {
            if let Some(node) = stored {
                let _ = core.raylet.send(&ToRaylet::Delete {
                    ids: vec![id],
                    node,
                });
            }
            for c in contained {
                core.release_reservation(c);
            }
        };
        // Under the registry's lock, so a stream dropped meanwhile frees this item too.
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        match streams.get_mut(&task) {
            // Reported by an attempt before this one: the caller has it already (and it is
            // the same object in the store), so this report is dropped.
            Some(e) if index < e.received => {
                drop(streams);
                for c in contained {
                    core.release_reservation(c);
                }
            }
            Some(e) => {
                e.received = index + 1;
                let fixed = e.returns.is_some();
                drop(streams);
                if !fixed {
                    core.refs.settle_or_insert(id, state);
                } else {
                    // One of several returns: the caller's ref waits for it (tasks too).
                    match core.refs.complete(id, state) {
                        Some(deps) if !deps.is_empty() => self.on_dependency_done(core, deps),
                        Some(_) => {}
                        None => {
                            // Its ref was dropped already.
                            discard(contained);
                            return;
                        }
                    }
                }
                if !contained.is_empty() {
                    let freed = core.refs.set_contained(id, contained);
                    core.release_freed(freed);
                }
            }
            None => {
                drop(streams);
                discard(contained);
            }
        }
    }

    /// Task `id` ended with `state`: if it had several returns, those that never came fail
    /// with its error (all came before its end when it succeeded).
    fn end_returns(&self, core: &Arc<CoreWorker>, id: ObjectId, state: &ObjState) {
        let entry = {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            match streams.get(&id) {
                Some(e) if e.returns.is_some() => streams.remove(&id),
                _ => None,
            }
        };
        let Some(StreamEntry {
            returns: Some(n),
            received,
            ..
        }) = entry
        else {
            return;
        };
        let error = match state {
            ObjState::Failed(e) => e.clone(),
            _ => Error::ObjectLost {
                id: id.to_string(),
                message: format!("task {id} ended after {received} of its {n} returns"),
            },
        };
        for i in received..n {
            let item = oxray_common::ids::item_id(id, i);
            if let Some(deps) = core.refs.complete(item, ObjState::Failed(error.clone())) {
                if !deps.is_empty() {
                    self.on_dependency_done(core, deps);
                }
            }
        }
    }

    /// Names task `id` in its errors.
    pub fn name_task(&self, id: ObjectId, name: String) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.insert(id, name);
        self.any_named
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records a task's result and releases what it held.
    fn finish(&self, core: &Arc<CoreWorker>, task: Task, mut state: ObjState) {
        if self.any_named.load(std::sync::atomic::Ordering::Relaxed) {
            let name = {
                let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
                names.remove(&task.id)
            };
            if let (
                Some(name),
                ObjState::Failed(
                    Error::TaskFailed { function, .. } | Error::WorkerDied { function, .. },
                ),
            ) = (name, &mut state)
            {
                *function = format!("{name:?} ({function})");
            }
        }
        if self.any_stream.load(std::sync::atomic::Ordering::Relaxed) {
            self.end_returns(core, task.id, &state);
        }
        let stored = match state {
            ObjState::Stored { node } => Some(node),
            _ => None,
        };
        let settled = core.refs.complete(task.id, state);
        let referenced = settled.is_some();
        match settled {
            Some(dependents) if !dependents.is_empty() => {
                self.on_dependency_done(core, dependents);
            }
            Some(_) => {}
            None => {
                if let Some(node) = stored {
                    // Nobody holds the result any more: free it.
                    let _ = core.raylet.send(&ToRaylet::Delete {
                        ids: vec![task.id],
                        node,
                    });
                }
            }
        }
        // Only results on another node can be lost while this process lives.
        let elsewhere = stored.is_some_and(|n| n != 0 && n != core.node_index);
        if referenced && elsewhere && Lineage::rebuildable(&task, core.worker_id) {
            // The recipe keeps the task's holds on its argument objects.
            self.lineage.record(task);
            return;
        }
        for dep in task.ref_args() {
            core.release_task_ref(dep);
        }
        for arg in task.args {
            if let ArgSpec::Value { contained, .. } = arg {
                for c in contained {
                    core.release_reservation(c);
                }
            }
        }
    }

    /// A leased worker's connection broke: retry its task elsewhere or fail it.
    fn on_conn_lost(&self, core: &Arc<CoreWorker>, worker: WorkerId, why: String) {
        let mut st = self.lock();
        let Some((key, running)) = st.queues.worker_lost(worker) else {
            return;
        };
        let Some(mut task) = running else {
            self.dispatch(core, &mut st, &key);
            return;
        };
        if task.retries_left > 0 {
            task.retries_left -= 1;
            task.attempt += 1;
            st.queues.push_retry(&key, task);
            self.dispatch(core, &mut st, &key);
            return;
        }
        self.dispatch(core, &mut st, &key);
        drop(st);
        let function = task.function.clone();
        let attempts = task.attempt + 1;
        self.finish(
            core,
            task,
            ObjState::Failed(Error::WorkerDied {
                function,
                attempts,
                message: why,
            }),
        );
    }

    /// Cancels a task that has not finished.
    pub fn cancel(&self, core: &Arc<CoreWorker>, id: ObjectId, force: bool, recursive: bool) {
        let mut running_on = None;
        let (queued, running) = {
            let mut st = self.lock();
            let running = st.queues.running_conn(id).cloned();
            let queued = match st.waiting.remove(&id) {
                Some(task) => Some(task),
                None if force && {
                    running_on = st.queues.disarm_running(id);
                    running_on.is_some()
                } =>
                {
                    None
                }
                None => {
                    let found = st.queues.remove_ready(id);
                    // A key left with no queued task returns its idle leases.
                    if st.reaper_asleep && st.queues.next_idle_deadline(LEASE_LINGER).is_some() {
                        st.reaper_asleep = false;
                        self.shared.lease_idle.notify_one();
                    }
                    found
                }
            };
            (queued, running)
        };
        match queued {
            Some(task) => self.finish(core, task, ObjState::Failed(Error::Cancelled)),
            // Running (or done): settle the object now; a late result is dropped.
            None => {
                if let Some(deps) = core.refs.complete(id, ObjState::Failed(Error::Cancelled)) {
                    self.on_dependency_done(core, deps);
                }
            }
        }
        // A running task's worker hears, on a connection of its own: cancel its children
        // (recursive), then exit (force; its death then ends the task here, not retried, and
        // frees its lease's resources at the raylet).
        let mut to_worker = Vec::new();
        if recursive {
            to_worker.push(ToWorker::CancelChildren { parent: id });
        }
        if running_on.is_some() {
            to_worker.push(ToWorker::CancelTask { id });
        }
        if let (Some(conn), false) = (running_on.or(running), to_worker.is_empty()) {
            let sent = core.connect_to(&conn.address).and_then(|mut stream| {
                for msg in &to_worker {
                    stream.write_all(&frame::encode(msg)?)?;
                }
                Ok(())
            });
            if let Err(e) = sent {
                eprintln!("oxray: could not reach the worker of cancelled task {id}: {e}");
            }
        }
    }

    /// Returns leases that were idle for longer than [`LEASE_LINGER`] (every lease when `all`).
    fn return_idle_leases(&self, core: &Arc<CoreWorker>, all: bool) {
        let mut st = self.lock();
        for lease in st
            .queues
            .take_idle_leases(Instant::now(), LEASE_LINGER, all)
        {
            let _ = core.raylet.send(&ToRaylet::ReturnLease { lease });
        }
    }

    /// Starts the thread that returns idle leases (with the first lease). It sleeps while no
    /// lease is idle and otherwise until the first idle lease is due back, so an idle process
    /// never wakes it.
    fn start_lease_reaper(&self, core: Weak<CoreWorker>) {
        let shared = self.shared.clone();
        let _ = std::thread::Builder::new()
            .name("oxray-lease-reaper".into())
            .spawn(move || lease_reaper(&shared, &core));
    }

    /// Returns every lease and stops the reaper (shutdown).
    pub fn shutdown(&self, core: &Arc<CoreWorker>) {
        self.return_idle_leases(core, true);
        self.shared.close_reaper();
    }
}

/// The lease reaper's loop (see [`Submitter::start_lease_reaper`]).
fn lease_reaper<C>(shared: &Shared<C>, core: &Weak<CoreWorker>) {
    let mut st = shared.lock();
    loop {
        if st.closed {
            return;
        }
        let now = Instant::now();
        match st.queues.next_idle_deadline(LEASE_LINGER) {
            None => {
                st.reaper_asleep = true;
                st = shared
                    .lease_idle
                    .wait(st)
                    .unwrap_or_else(|p| p.into_inner());
                st.reaper_asleep = false;
            }
            Some(due) if due > now => {
                st = shared
                    .lease_idle
                    .wait_timeout(st, due - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            Some(_) => {
                // Not holding the lock: dropping the last handle to the core worker takes it.
                drop(st);
                {
                    let Some(core) = core.upgrade() else { return };
                    if core.is_shutting_down() || core.raylet.is_closed() {
                        return;
                    }
                    core.submitter.return_idle_leases(&core, false);
                }
                st = shared.lock();
            }
        }
    }
}

fn connect_worker(
    core: &Arc<CoreWorker>,
    address: &str,
    worker: WorkerId,
) -> std::io::Result<Arc<WorkerConn>> {
    let stream = core.connect_to(address)?;
    let reader = stream.try_clone()?;
    let conn = Arc::new(WorkerConn {
        writer: Mutex::new(stream),
        address: address.to_owned(),
    });
    let (weak, gone) = (Arc::downgrade(core), Arc::downgrade(core));
    let mine = Arc::downgrade(&conn);
    let on_reply = Box::new(move |msg| {
        if let FromWorker::Item {
            task,
            index,
            outcome,
            contained,
        } = msg
        {
            if let Some(core) = weak.upgrade() {
                core.submitter
                    .on_item(&core, task, index, outcome, contained);
            }
            return true;
        }
        let FromWorker::Done {
            id,
            outcome,
            contained,
        } = msg
        else {
            return true;
        };
        let Some(core) = weak.upgrade() else {
            return false;
        };
        core.submitter
            .on_done(&core, worker, id, outcome, contained);
        true
    });
    // The connection ended: because the lease was let go (`conn` is gone; nothing to report)
    // or because the worker died.
    let on_end = Box::new(move |why| {
        if mine.strong_count() == 0 {
            return;
        }
        if let Some(core) = gone.upgrade() {
            core.submitter.on_conn_lost(&core, worker, why);
        }
    });
    Replies::watch(core.events()?, reader, on_reply, on_end);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use oxray_common::ids::object_id;

    use super::*;

    /// A stand-in connection: the leased worker's number.
    type Conn = u32;

    fn key(cpus: f64, near: u16) -> SchedulingKey {
        SchedulingKey {
            resources: Resources::cpus(cpus),
            near,
            strategy: Strategy::Default,
        }
    }

    fn task(seq: u64) -> Task {
        Task {
            id: object_id(WorkerId(1), seq),
            function: "f".into(),
            args: Vec::new(),
            resources: Resources::cpus(1.0),
            retries_left: 0,
            retry_exceptions: false,
            strategy: Strategy::Default,
            attempt: 0,
        }
    }

    fn tid(seq: u64) -> ObjectId {
        object_id(WorkerId(1), seq)
    }

    fn worker(n: u32) -> WorkerId {
        WorkerId(100 + u64::from(n))
    }

    /// Dispatches `key`; returns (worker number, task id) sent and the lease requests made.
    fn dispatch(q: &mut Queues<Conn>, key: &SchedulingKey) -> (Vec<(Conn, ObjectId)>, usize) {
        let mut sent = Vec::new();
        let mut requests = 0;
        q.dispatch(
            key,
            |conn, t| {
                sent.push((*conn, t.id));
                true
            },
            || {
                requests += 1;
                true
            },
        );
        (sent, requests)
    }

    fn grant(q: &mut Queues<Conn>, key: &SchedulingKey, n: u32, now: Instant) {
        q.lease_granted(key, u64::from(n), worker(n), n, now);
    }

    #[test]
    fn tasks_are_grouped_by_scheduling_key() {
        let mut q = Queues::default();
        let (one_cpu, two_cpus, near_3) = (key(1.0, 0), key(2.0, 0), key(1.0, 3));
        q.push_ready(&one_cpu, task(1));
        q.push_ready(&two_cpus, task(2));
        q.push_ready(&near_3, task(3));
        let now = Instant::now();
        grant(&mut q, &two_cpus, 7, now);
        // The two-CPU worker takes the two-CPU task, not the older one-CPU task.
        assert_eq!(dispatch(&mut q, &two_cpus), (vec![(7, tid(2))], 0));
        assert_eq!(dispatch(&mut q, &one_cpu), (vec![], 1));
        assert_eq!(dispatch(&mut q, &near_3), (vec![], 1));
        assert!(q.remove_ready(tid(1)).is_some());
        assert!(q.remove_ready(tid(3)).is_some());
        assert!(q.remove_ready(tid(2)).is_none(), "running, not queued");
    }

    #[test]
    fn one_lease_request_per_queued_task_at_most_64_in_flight() {
        let mut q = Queues::default();
        let k = key(1.0, 0);
        for i in 0..3 {
            q.push_ready(&k, task(i));
        }
        assert_eq!(dispatch(&mut q, &k).1, 3);
        assert_eq!(dispatch(&mut q, &k).1, 0, "covered by requests in flight");
        for i in 3..100 {
            q.push_ready(&k, task(i));
        }
        assert_eq!(dispatch(&mut q, &k).1, MAX_LEASE_REQUESTS - 3);
        assert_eq!(dispatch(&mut q, &k).1, 0, "capped");
        // A grant takes a task and frees one request slot.
        grant(&mut q, &k, 1, Instant::now());
        let (sent, requests) = dispatch(&mut q, &k);
        assert_eq!(sent, vec![(1, tid(0))]);
        assert_eq!(requests, 1);
        // Requests that could not be sent are not counted as in flight.
        q.lease_request_ended(&k);
        let mut asked = 0;
        q.dispatch(
            &k,
            |_, _| true,
            || {
                asked += 1;
                false
            },
        );
        assert_eq!(asked, 1);
        assert_eq!(dispatch(&mut q, &k).1, 1);
    }

    #[test]
    fn a_worker_that_finishes_gets_the_next_queued_task() {
        let mut q = Queues::default();
        let k = key(1.0, 0);
        for i in 1..=3 {
            q.push_ready(&k, task(i));
        }
        let t0 = Instant::now();
        grant(&mut q, &k, 1, t0);
        assert_eq!(dispatch(&mut q, &k).0, vec![(1, tid(1))]);
        // One in flight per worker.
        assert_eq!(dispatch(&mut q, &k).0, vec![]);
        assert!(q.task_done(worker(2), tid(1), t0).is_none(), "other worker");
        assert!(q.task_done(worker(1), tid(9), t0).is_none(), "other task");
        let (done_key, done) = q.task_done(worker(1), tid(1), t0).expect("was running");
        assert_eq!((done_key, done.id), (k.clone(), tid(1)));
        assert_eq!(dispatch(&mut q, &k).0, vec![(1, tid(2))], "in order");
        // A task to run again goes ahead of the queue.
        q.task_done(worker(1), tid(2), t0);
        q.push_retry(&k, task(2));
        assert_eq!(dispatch(&mut q, &k).0, vec![(1, tid(2))]);
    }

    #[test]
    fn a_gone_worker_loses_its_lease_and_the_task_goes_to_another() {
        let mut q = Queues::default();
        let k = key(1.0, 0);
        let now = Instant::now();
        grant(&mut q, &k, 1, now);
        grant(&mut q, &k, 2, now);
        q.push_ready(&k, task(1));
        let mut tried = Vec::new();
        q.dispatch(
            &k,
            |conn, t| {
                tried.push((*conn, t.id));
                *conn == 2
            },
            || true,
        );
        assert_eq!(tried, vec![(1, tid(1)), (2, tid(1))]);
        assert!(q.worker_lost(worker(1)).is_none(), "already dropped");
        let (lost_key, running) = q.worker_lost(worker(2)).expect("leased");
        assert_eq!(lost_key, k);
        assert_eq!(running.map(|t| t.id), Some(tid(1)));
    }

    #[test]
    fn idle_leases_go_back_after_the_linger() {
        let mut q = Queues::default();
        let (k, busy_key) = (key(1.0, 0), key(2.0, 0));
        let t0 = Instant::now();
        grant(&mut q, &k, 1, t0);
        grant(&mut q, &k, 2, t0 + Duration::from_millis(10));
        grant(&mut q, &busy_key, 3, t0);
        q.push_ready(&busy_key, task(1));
        dispatch(&mut q, &busy_key);
        assert_eq!(q.next_idle_deadline(LEASE_LINGER), Some(t0 + LEASE_LINGER));
        assert!(q.has_idle_lease(&k));
        assert!(!q.has_idle_lease(&busy_key));
        let almost = t0 + LEASE_LINGER - Duration::from_millis(1);
        assert_eq!(
            q.take_idle_leases(almost, LEASE_LINGER, false),
            Vec::<u64>::new()
        );
        assert_eq!(
            q.take_idle_leases(t0 + LEASE_LINGER, LEASE_LINGER, false),
            vec![1]
        );
        assert_eq!(
            q.next_idle_deadline(LEASE_LINGER),
            Some(t0 + Duration::from_millis(10) + LEASE_LINGER)
        );
        assert_eq!(
            q.take_idle_leases(t0 + 2 * LEASE_LINGER, LEASE_LINGER, false),
            vec![2]
        );
        assert_eq!(
            q.next_idle_deadline(LEASE_LINGER),
            None,
            "only a busy lease left"
        );
        // The busy lease lingers from when its task ends.
        let t1 = t0 + Duration::from_secs(1);
        q.task_done(worker(3), tid(1), t1);
        assert_eq!(q.next_idle_deadline(LEASE_LINGER), Some(t1 + LEASE_LINGER));
        assert_eq!(
            q.take_idle_leases(t1, LEASE_LINGER, false),
            Vec::<u64>::new()
        );
        assert_eq!(
            q.take_idle_leases(t1 + LEASE_LINGER, LEASE_LINGER, false),
            vec![3]
        );
    }

    #[test]
    fn a_key_with_queued_tasks_keeps_its_leases_until_shutdown() {
        let mut q = Queues::default();
        let k = key(1.0, 0);
        let t0 = Instant::now();
        grant(&mut q, &k, 1, t0);
        grant(&mut q, &k, 2, t0);
        q.push_ready(&k, task(1));
        q.push_ready(&k, task(2));
        q.push_ready(&k, task(3));
        dispatch(&mut q, &k);
        let late = t0 + 10 * LEASE_LINGER;
        assert_eq!(q.next_idle_deadline(LEASE_LINGER), None);
        assert_eq!(
            q.take_idle_leases(late, LEASE_LINGER, false),
            Vec::<u64>::new()
        );
        let mut all = q.take_idle_leases(t0, LEASE_LINGER, true);
        all.sort_unstable();
        assert_eq!(all, vec![1, 2], "shutdown returns busy leases too");
    }

    #[test]
    fn a_refused_lease_fails_the_queue_only_when_nothing_else_can_run_it() {
        let mut q = Queues::default();
        let k = key(1.0, 0);
        q.push_ready(&k, task(1));
        q.push_ready(&k, task(2));
        assert_eq!(dispatch(&mut q, &k).1, 2);
        assert!(
            q.lease_refused(&k).is_empty(),
            "another request may be granted"
        );
        let failed: Vec<ObjectId> = q.lease_refused(&k).iter().map(|t| t.id).collect();
        assert_eq!(failed, vec![tid(1), tid(2)]);
        assert!(q.lease_refused(&key(9.0, 0)).is_empty(), "unknown key");
    }
}

#[cfg(test)]
mod reaper_tests {
    use std::thread::JoinHandle;

    use super::*;

    fn key() -> SchedulingKey {
        SchedulingKey {
            resources: Resources::cpus(1.0),
            near: 0,
            strategy: Strategy::Default,
        }
    }

    /// Runs the reaper on `shared`, with no core worker behind it: when a lease is due it
    /// finds the core gone and returns, which is how these tests see it act.
    fn start(shared: &Arc<Shared<()>>) -> JoinHandle<()> {
        let shared = shared.clone();
        std::thread::spawn(move || lease_reaper(&shared, &Weak::new()))
    }

    fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_reaper_sleeps_while_no_lease_is_idle_and_wakes_for_the_first() {
        let sub = Arc::new(Shared::<()>::new());
        let reaper = start(&sub);
        until("the reaper sleeps", || sub.lock().reaper_asleep);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!reaper.is_finished(), "nothing to do: it keeps sleeping");
        {
            let mut st = sub.lock();
            let long_ago = Instant::now() - 2 * LEASE_LINGER;
            st.queues
                .lease_granted(&key(), 1, WorkerId(5), (), long_ago);
            sub.wake_reaper(&mut st, &key());
            assert!(!st.reaper_asleep);
        }
        until("the reaper handles the due lease", || reaper.is_finished());
    }

    #[test]
    fn the_reaper_waits_for_the_idle_lease_deadline() {
        let sub = Arc::new(Shared::<()>::new());
        let granted = Instant::now();
        sub.lock()
            .queues
            .lease_granted(&key(), 1, WorkerId(5), (), granted);
        let reaper = start(&sub);
        until("the lease is due", || reaper.is_finished());
        assert!(granted.elapsed() >= LEASE_LINGER, "not before the linger");
        assert!(!sub.lock().reaper_asleep);
    }

    #[test]
    fn closing_stops_a_sleeping_reaper() {
        let sub = Arc::new(Shared::<()>::new());
        let reaper = start(&sub);
        until("the reaper sleeps", || sub.lock().reaper_asleep);
        sub.close_reaper();
        until("the reaper stops", || reaper.is_finished());
    }
}
