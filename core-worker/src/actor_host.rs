//! The actor side of a worker: constructing the actor it hosts, running method calls, and
//! `exit_actor` / `was_restarted`.
//!
//! `#[oxray::actor]` registers a constructor per class in [`ACTOR_CLASSES`] and one entry per
//! method in [`ACTOR_METHODS`]. The raylet starts a dedicated worker per actor and sends it
//! `StartActor`; the worker builds the instance and keeps it for its whole life. Methods get it
//! through an `RwLock`: `&self` methods share it (several at once when `max_concurrency > 1`),
//! `&mut self` methods take it alone. With `max_concurrency == 1` (the default) calls run one at a
//! time, each caller's calls in the order it made them.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use oxray_common::protocol::{ActorSpec, ToRaylet};
use oxray_common::ActorId;

use crate::args::TaskArgs;
use crate::core::CoreWorker;
use crate::registry::TaskError;
use crate::value::ReturnValue;

/// Builds an actor from its constructor arguments.
pub type Construct = fn(&TaskArgs<'_>) -> Result<Box<dyn Any + Send + Sync>, TaskError>;
/// Runs one method on the instance.
pub type CallMethod = fn(&ActorInstance, &TaskArgs<'_>) -> Result<Box<dyn ReturnValue>, TaskError>;
/// A running `async fn(&self)` call: polled on the actor's event loop, beside other calls.
pub type LocalCall =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Box<dyn ReturnValue>, TaskError>>>>;
/// Starts an `async fn(&self)` method: decodes the arguments now, returns the call's future.
pub type CallAsync = fn(&'static ActorInstance, &TaskArgs<'_>) -> Result<LocalCall, TaskError>;

/// An actor class registered by `#[oxray::actor]`.
pub struct ActorClass {
    /// `module_path::Type`.
    pub name: &'static str,
    /// The constructor (`Type::new`).
    pub construct: Construct,
    /// The class has `async fn(&self)` methods: they run interleaved on an event loop (up to
    /// `max_concurrency`, default 1000), and its other methods one at a time.
    pub is_async: bool,
}

/// An actor method registered by `#[oxray::actor]`.
pub struct ActorMethod {
    /// `module_path::Type::method`.
    pub name: &'static str,
    /// The entry point.
    pub call: CallMethod,
    /// For `async fn(&self)` methods: the entry point on the actor's event loop.
    pub call_async: Option<CallAsync>,
}

/// Every actor class linked into this executable.
#[linkme::distributed_slice]
pub static ACTOR_CLASSES: [ActorClass];

/// Every actor method linked into this executable.
#[linkme::distributed_slice]
pub static ACTOR_METHODS: [ActorMethod];

/// The instance an actor worker hosts.
pub struct ActorInstance {
    state: RwLock<Box<dyn Any + Send + Sync>>,
}

impl ActorInstance {
    /// Runs `f` on the instance shared (for `&self` methods).
    pub fn with_ref<T: 'static, R>(&self, f: impl FnOnce(&T) -> R) -> Result<R, TaskError> {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        let this = guard.downcast_ref::<T>().ok_or_else(|| {
            TaskError::BadArgument("the actor hosted here is of another class".into())
        })?;
        Ok(f(this))
    }

    /// The instance shared, for an `async fn(&self)` call on the event loop: waits (without
    /// blocking the loop) while a `&mut self` method has it alone.
    #[doc(hidden)]
    pub async fn shared(
        &'static self,
    ) -> std::sync::RwLockReadGuard<'static, Box<dyn Any + Send + Sync>> {
        loop {
            match self.state.try_read() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                // A `&mut self` method (on another thread) holds it or waits for it: let the
                // other calls on this loop finish theirs meanwhile.
                Err(std::sync::TryLockError::WouldBlock) => tokio::task::yield_now().await,
            }
        }
    }

    /// Runs `f` on the instance alone (for `&mut self` methods).
    pub fn with_mut<T: 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, TaskError> {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        let this = guard.downcast_mut::<T>().ok_or_else(|| {
            TaskError::BadArgument("the actor hosted here is of another class".into())
        })?;
        Ok(f(this))
    }
}

type Job = Box<dyn FnOnce() + Send>;
/// Work for the event loop: called with `true` there, or `false` where it arrived when the
/// loop could not start.
pub(crate) type LoopJob = Box<dyn FnOnce(bool) + Send>;

/// The actor this process hosts.
pub(crate) struct Hosted {
    pub id: ActorId,
    pub instance: ActorInstance,
    pub restarted: bool,
    pub max_concurrency: u32,
    /// Threads for `max_concurrency > 1` (classes without async methods).
    pool: Option<Mutex<Sender<Job>>>,
    /// The event loop of an async class's `async fn(&self)` calls (started on first use).
    event_loop: OnceLock<Option<tokio::sync::mpsc::UnboundedSender<LoopJob>>>,
    /// Whether the class has `async fn(&self)` methods.
    pub is_async: bool,
}

impl Hosted {
    /// Runs `job(true)` on the actor's event loop thread (where it may `spawn_local` calls);
    /// returns it when the loop could not start (the caller then runs `job(false)`).
    pub fn on_event_loop(&'static self, job: LoopJob) -> Option<LoopJob> {
        let tx = self
            .event_loop
            .get_or_init(|| start_event_loop(self.max_concurrency));
        match tx {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        }
    }

    /// Runs `job` on the pool, or returns it to run inline when there is none.
    pub fn spawn(&self, job: Job) -> Option<Job> {
        match &self.pool {
            Some(tx) => {
                let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
                tx.send(job).err().map(|e| e.0)
            }
            None => Some(job),
        }
    }
}

/// Starts the thread that runs an async actor's calls: a single-threaded tokio runtime whose
/// `LocalSet` polls every running call (futures that need not be `Send`). `None` when it could
/// not start (calls then run one at a time where they arrive).
fn start_event_loop(max_concurrency: u32) -> Option<tokio::sync::mpsc::UnboundedSender<LoopJob>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<LoopJob>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("oxray: the actor's event loop could not start: {e}"))
        .ok()?;
    std::thread::Builder::new()
        .name("oxray-actor-loop".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            SEMAPHORE.with(|s| {
                let _ = s.set(std::sync::Arc::new(tokio::sync::Semaphore::new(
                    max_concurrency.max(1) as usize,
                )));
            });
            local.block_on(&runtime, async move {
                while let Some(job) = rx.recv().await {
                    job(true);
                }
            });
        })
        .map_err(|e| eprintln!("oxray: the actor's event loop could not start: {e}"))
        .ok()?;
    Some(tx)
}

thread_local! {
    /// On the event loop thread: `max_concurrency` permits, one per running call.
    static SEMAPHORE: std::cell::OnceCell<std::sync::Arc<tokio::sync::Semaphore>> =
        const { std::cell::OnceCell::new() };
}

/// On the actor's event loop thread: waits (in order) for a place among the
/// `max_concurrency` calls that may run at once; held until the call ends.
pub(crate) async fn call_place() -> Option<tokio::sync::OwnedSemaphorePermit> {
    let sem = SEMAPHORE.with(|s| s.get().cloned())?;
    sem.acquire_owned().await.ok()
}

static HOSTED: OnceLock<Hosted> = OnceLock::new();

/// The actor this process hosts, if any.
pub(crate) fn hosted() -> Option<&'static Hosted> {
    HOSTED.get()
}

fn lookup_class(name: &str) -> Option<&'static ActorClass> {
    ACTOR_CLASSES.iter().find(|c| c.name == name)
}

/// Looks up the event-loop entry point of an `async fn(&self)` method.
pub(crate) fn lookup_async(name: &str) -> Option<CallAsync> {
    static TABLE: OnceLock<std::collections::HashMap<&'static str, CallAsync>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            ACTOR_METHODS
                .iter()
                .filter_map(|m| Some((m.name, m.call_async?)))
                .collect()
        })
        .get(name)
        .copied()
}

/// Looks a method up by name.
pub(crate) fn lookup_method(name: &str) -> Option<CallMethod> {
    static TABLE: OnceLock<std::collections::HashMap<&'static str, CallMethod>> = OnceLock::new();
    TABLE
        .get_or_init(|| ACTOR_METHODS.iter().map(|m| (m.name, m.call)).collect())
        .get(name)
        .copied()
}

/// Builds the actor (on its own thread, so the raylet connection keeps being read).
pub(crate) fn start(core: Arc<CoreWorker>, spec: ActorSpec, restarts: u32) {
    let _ = std::thread::Builder::new()
        .name("oxray-actor-start".into())
        .spawn(move || {
            let reply = match construct(&core, &spec, restarts) {
                Ok(()) => ToRaylet::ActorReady { id: spec.id },
                Err(message) => ToRaylet::ActorFailed {
                    id: spec.id,
                    message,
                },
            };
            let _ = core.raylet.send(&reply);
        });
}

fn construct(core: &Arc<CoreWorker>, spec: &ActorSpec, restarts: u32) -> Result<(), String> {
    if HOSTED.get().is_some() {
        return Err("this worker already hosts an actor".into());
    }
    let class = lookup_class(&spec.class).ok_or_else(|| {
        format!(
            "actor class {} is not registered in this executable (was it built without it?)",
            spec.class
        )
    })?;
    let args = TaskArgs {
        args: &spec.args,
        core,
    };
    CONSTRUCTING_RESTART.store(restarts > 0, Ordering::SeqCst);
    let _ = ACTOR_ID.set(spec.id);
    let state = match catch_unwind(AssertUnwindSafe(|| (class.construct)(&args))) {
        Ok(Ok(s)) => s,
        Ok(Err(TaskError::App(m) | TaskError::BadArgument(m))) => return Err(m),
        Err(panic) => return Err(crate::executor::panic_message(&*panic)),
    };
    // An async class runs its `async fn(&self)` calls on an event loop, its others one at a
    // time: no thread pool.
    let pool = (spec.max_concurrency > 1 && !class.is_async).then(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..spec.max_concurrency {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("oxray-actor-{i}"))
                .spawn(move || loop {
                    let job = {
                        let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                        rx.recv()
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => break,
                    }
                });
        }
        Mutex::new(tx)
    });
    let hosted = Hosted {
        id: spec.id,
        instance: ActorInstance {
            state: RwLock::new(state),
        },
        restarted: restarts > 0,
        max_concurrency: spec.max_concurrency.max(1),
        pool,
        event_loop: OnceLock::new(),
        is_async: class.is_async,
    };
    HOSTED
        .set(hosted)
        .map_err(|_| "this worker already hosts an actor".to_string())
}

/// The actor this process hosts or is constructing, if any.
static ACTOR_ID: OnceLock<ActorId> = OnceLock::new();

/// The actor this process hosts (or is constructing), for the runtime context.
pub(crate) fn hosted_id() -> Option<ActorId> {
    ACTOR_ID.get().copied()
}

/// Whether the actor being constructed in this process is a restart (read by
/// [`was_restarted`] before the actor is hosted).
static CONSTRUCTING_RESTART: AtomicBool = AtomicBool::new(false);

/// Inside an actor's constructor or methods: whether this actor process is a restart (after a
/// crash or `kill_with_restart`), so the constructor can restore saved state. False outside
/// actors.
pub fn was_restarted() -> bool {
    match hosted() {
        Some(h) => h.restarted,
        None => CONSTRUCTING_RESTART.load(Ordering::SeqCst),
    }
}

/// Inside an actor method: ends the actor for good (no restart). The call that invokes it fails
/// with `ActorDied` at its caller; later calls fail the same way.
pub fn exit_actor() -> ! {
    if let (Some(h), Ok(core)) = (hosted(), crate::core::current()) {
        let _ = core.raylet.send(&ToRaylet::ActorExiting { id: h.id });
    }
    std::process::exit(0)
}
