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

/// An actor class registered by `#[oxray::actor]`.
pub struct ActorClass {
    /// `module_path::Type`.
    pub name: &'static str,
    /// The constructor (`Type::new`).
    pub construct: Construct,
}

/// An actor method registered by `#[oxray::actor]`.
pub struct ActorMethod {
    /// `module_path::Type::method`.
    pub name: &'static str,
    /// The entry point.
    pub call: CallMethod,
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

/// The actor this process hosts.
pub(crate) struct Hosted {
    pub id: ActorId,
    pub instance: ActorInstance,
    pub restarted: bool,
    pub max_concurrency: u32,
    /// Threads for `max_concurrency > 1`.
    pool: Option<Mutex<Sender<Job>>>,
}

impl Hosted {
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

static HOSTED: OnceLock<Hosted> = OnceLock::new();

/// The actor this process hosts, if any.
pub(crate) fn hosted() -> Option<&'static Hosted> {
    HOSTED.get()
}

fn lookup_class(name: &str) -> Option<Construct> {
    ACTOR_CLASSES
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.construct)
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
    let construct = lookup_class(&spec.class).ok_or_else(|| {
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
    let state = match catch_unwind(AssertUnwindSafe(|| construct(&args))) {
        Ok(Ok(s)) => s,
        Ok(Err(TaskError::App(m) | TaskError::BadArgument(m))) => return Err(m),
        Err(panic) => return Err(crate::executor::panic_message(&*panic)),
    };
    let pool = (spec.max_concurrency > 1).then(|| {
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
