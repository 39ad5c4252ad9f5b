//! The caller side of actors: creating them, handles, and method calls pushed straight to the
//! actor's worker.
//!
//! Each process keeps, per actor it calls, one connection to the actor's worker, a queue of calls
//! not yet sent and the calls in flight. Calls leave in the order they were made (a call whose
//! ref arguments are not ready holds back the ones after it), so one caller's calls run in order.
//! When the connection breaks, the calls in flight are re-sent after the actor restarts if their
//! `max_task_retries` allows, else fail with `ActorDied`; calls made meanwhile wait for the
//! restart. The raylet says where the actor is (`GetActor`, waiting while it starts or restarts).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::marker::PhantomData;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use oxray_common::frame;
use oxray_common::ids::ArchivedActorId;
use oxray_common::protocol::{
    ActorCall, ActorInfo, ActorSpec, ActorState, ErrorKind, FromRaylet, FromWorker, Strategy,
    TaskArg, TaskOutcome, ToRaylet, ToWorker,
};
use oxray_common::resources::{Resources, CPU};
use oxray_common::ActorId;
use oxray_object_store::ObjectId;
use rkyv::rancor::{Fallible, Source};
use rkyv::{Archive, Deserialize, Place, Serialize};

use crate::args::ArgSpec;
use crate::core::{current, CoreWorker};
use crate::error::{Error, Result};
use crate::object_ref::ObjectRef;
use crate::refs::ObjState;
use crate::replies::Replies;
use crate::value::aligned_copy;

/// A type made into an actor by `#[oxray::actor]`.
pub trait Actor: Send + Sync + Sized + 'static {
    /// Registered class name (`module_path::Type`).
    const CLASS: &'static str;
    /// The generated handle type whose methods submit calls (`ActorHandle<T>` derefs to it).
    type Handle: From<RawActorHandle> + AsRef<RawActorHandle> + Send + Sync;
}

/// An untyped actor handle: the actor's id and this process's core worker.
#[derive(Clone)]
pub struct RawActorHandle {
    id: ActorId,
    core: Arc<CoreWorker>,
    /// In the creator of a non-detached, unnamed actor: shared by all its handles there, so
    /// the actor ends when the last one goes (see [`HandleLife`]).
    life: Option<Arc<HandleLife>>,
}

/// The life of a non-detached actor as its creator's handles see it: when the last of them is
/// dropped, and none was ever passed on (to a task, an actor, a stored value), the actor ends
/// once its pending calls have returned, as Ray's actors do when their last reference goes.
/// A handle passed on keeps the actor until its creator exits (the handles elsewhere are not
/// counted: Ray counts them; we keep such actors rather than end one still in use).
struct HandleLife {
    id: ActorId,
    core: Weak<CoreWorker>,
    escaped: std::sync::atomic::AtomicBool,
}

impl Drop for HandleLife {
    fn drop(&mut self) {
        if self.escaped.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Some(core) = self.core.upgrade() {
            if !core.is_shutting_down() {
                core.actors.release(&core, self.id);
            }
        }
    }
}

impl RawActorHandle {
    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.id
    }

    /// Submits a call of `method` (called by the generated handle methods).
    pub fn call<R>(
        &self,
        method: &'static str,
        args: Vec<Result<ArgSpec>>,
    ) -> Result<ObjectRef<R>> {
        let specs = crate::task::collect_args(&self.core, args)?;
        let id = self.core.new_object_id();
        self.core.refs.insert(id, ObjState::Pending);
        let r = ObjectRef::adopt(id, self.core.clone());
        self.core.actors.submit(
            &self.core,
            self.id,
            Call {
                id,
                method,
                args: specs,
                retries_left: 0,
            },
        );
        Ok(r)
    }
}

/// A handle to an actor of type `T`: call its methods directly on the handle
/// (`counter.incr(5)?` gives an `ObjectRef` of the result). Handles are values: clone them, pass
/// them to tasks and actors, return them.
pub struct ActorHandle<T: Actor> {
    handle: T::Handle,
    _type: PhantomData<fn() -> T>,
}

impl<T: Actor> ActorHandle<T> {
    fn from_raw(raw: RawActorHandle) -> Self {
        ActorHandle {
            handle: T::Handle::from(raw),
            _type: PhantomData,
        }
    }

    /// The untyped handle.
    pub fn raw(&self) -> &RawActorHandle {
        self.handle.as_ref()
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.raw().id
    }
}

impl<T: Actor> std::ops::Deref for ActorHandle<T> {
    type Target = T::Handle;

    fn deref(&self) -> &T::Handle {
        &self.handle
    }
}

impl<T: Actor> Clone for ActorHandle<T> {
    fn clone(&self) -> Self {
        Self::from_raw(self.raw().clone())
    }
}

impl<T: Actor> std::fmt::Debug for ActorHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorHandle<{}>({})", T::CLASS, self.id())
    }
}

impl<T: Actor> Archive for ActorHandle<T> {
    type Archived = ArchivedActorId;
    type Resolver = <ActorId as Archive>::Resolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        self.id().resolve(resolver, out)
    }
}

impl<T: Actor, S: Fallible + ?Sized> Serialize<S> for ActorHandle<T>
where
    ActorId: Serialize<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        // Passed on: another process may hold it now, so dropping ours no longer ends it.
        if let Some(life) = &self.raw().life {
            life.escaped
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.id().serialize(serializer)
    }
}

impl<T: Actor, D> Deserialize<ActorHandle<T>, D> for ArchivedActorId
where
    D: Fallible + ?Sized,
    D::Error: Source,
{
    fn deserialize(&self, _: &mut D) -> Result<ActorHandle<T>, D::Error> {
        let core = current().map_err(D::Error::new)?;
        let id = ActorId(self.0.to_native());
        Ok(ActorHandle::from_raw(RawActorHandle {
            id,
            core,
            life: None,
        }))
    }
}

/// Whether an actor outlives its creator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// Dies with the process that created it (the default).
    #[default]
    NonDetached,
    /// Lives until killed, on a standalone node, after its creator exits; find it by name.
    Detached,
}

/// Options for creating an actor (`T::options().name("c").max_restarts(2).remote(..)`).
#[derive(Debug, Clone)]
pub struct ActorOptions {
    class: &'static str,
    resources: Resources,
    name: String,
    namespace: Option<String>,
    max_restarts: i64,
    max_task_retries: i64,
    max_concurrency: u32,
    lifetime: Lifetime,
    get_if_exists: bool,
    strategy: Strategy,
    group: Option<(crate::placement::PlacementGroup, Option<usize>)>,
}

impl ActorOptions {
    /// Defaults for `class`: no CPU held while alive (as Ray), unnamed, no restarts, no call
    /// retries, one call at a time, dies with its creator.
    pub fn new(class: &'static str) -> Self {
        ActorOptions {
            class,
            resources: Resources::new(),
            name: String::new(),
            namespace: None,
            max_restarts: 0,
            max_task_retries: 0,
            max_concurrency: 1,
            lifetime: Lifetime::NonDetached,
            get_if_exists: false,
            strategy: Strategy::Default,
            group: None,
        }
    }

    /// Where the actor may run: `SchedulingStrategy::Spread` round-robins over the nodes,
    /// `NodeAffinity { node_id, soft }` pins it to one (a hard one fails creation with
    /// `Error::Unschedulable` if that node is dead or never fits, and the actor dies with its
    /// node).
    pub fn scheduling_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Runs the actor in placement group `pg`: in bundle `bundle`, or (`None`) in any of its
    /// bundles; what it holds is taken from the bundle (creation fails if it can never fit).
    pub fn placement_group(
        mut self,
        pg: &crate::placement::PlacementGroup,
        bundle: Option<usize>,
    ) -> Self {
        self.group = Some((pg.clone(), bundle));
        self
    }

    /// CPUs held while the actor lives.
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.resources.set(CPU, n);
        self
    }

    /// A custom resource held while the actor lives.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.set(name, amount);
        self
    }

    /// Custom resources held while the actor lives.
    pub fn resources<'a>(mut self, rs: impl IntoIterator<Item = (&'a str, f64)>) -> Self {
        for (n, a) in rs {
            self.resources.set(n, a);
        }
        self
    }

    /// A name, unique among live actors of the namespace (`get_actor` finds it).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The namespace of the name (default: the driver's).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Restarts after its process dies (-1: unlimited; default 0).
    pub fn max_restarts(mut self, n: i64) -> Self {
        self.max_restarts = n;
        self
    }

    /// Re-sends of a call whose actor process died while running it (-1: unlimited; default 0).
    pub fn max_task_retries(mut self, n: i64) -> Self {
        self.max_task_retries = n;
        self
    }

    /// Methods that may run at once, on a thread pool (default 1: one at a time, in order).
    pub fn max_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = n.max(1);
        self
    }

    /// With a name: if a live actor of the namespace has it already, return a handle to that
    /// one instead of failing (Ray's `get_if_exists`); its class must be this one. Several
    /// drivers racing to create it get the same actor.
    pub fn get_if_exists(mut self, yes: bool) -> Self {
        self.get_if_exists = yes;
        self
    }

    /// `Lifetime::Detached` to outlive the creator.
    pub fn lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Creates the actor (called by the generated `T::remote` / `Options::remote`). Returns at
    /// once; calls wait until the actor has started.
    pub fn create<T: Actor>(self, args: Vec<Result<ArgSpec>>) -> Result<ActorHandle<T>> {
        let core = current()?;
        if !self.get_if_exists || self.name.is_empty() {
            return self.create_new(&core, args);
        }
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| core.namespace().to_owned());
        // Found, or made here; a name freed between the refusal and the lookup (its actor
        // died) is tried again, a few times.
        let mut args = Some(args);
        for _ in 0..3 {
            if let Ok(found) = get_actor_in::<T>(&self.name, &namespace) {
                return Ok(found);
            }
            let Some(a) = args.take() else { break };
            match self.clone().create_new(&core, a) {
                Err(Error::NameTaken { .. }) => continue,
                made => return made,
            }
        }
        get_actor_in::<T>(&self.name, &namespace)
    }

    fn create_new<T: Actor>(
        self,
        core: &Arc<CoreWorker>,
        args: Vec<Result<ArgSpec>>,
    ) -> Result<ActorHandle<T>> {
        let core = core.clone();
        let specs = crate::task::collect_args(&core, args)?;
        let resources = match &self.group {
            Some((pg, bundle)) => pg.resources_for(*bundle, &self.resources),
            None => Ok(self.resources.clone()),
        };
        let resources = match resources {
            Ok(r) => r,
            Err(e) => {
                crate::task::release_args(&core, &specs);
                return Err(e);
            }
        };
        // Constructor arguments must be values for restarts: resolve refs now.
        let ref_ids: Vec<ObjectId> = specs
            .iter()
            .filter_map(|a| match a {
                ArgSpec::Ref(id) => Some(*id),
                ArgSpec::Value { .. } => None,
            })
            .collect();
        core.wait_ids(&ref_ids, ref_ids.len(), None);
        let mut wire = Vec::with_capacity(specs.len());
        for a in &specs {
            wire.push(match a {
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
                    Some(ObjState::Failed(e)) => return Err(e),
                    Some(ObjState::Stored { node }) => TaskArg::Stored { id: *id, node },
                    _ => TaskArg::Stored {
                        id: *id,
                        node: oxray_common::ids::node_of(*id),
                    },
                },
            });
        }
        let id = ActorId::random().with_node(core.node_index);
        let detached = self.lifetime == Lifetime::Detached;
        let named = self.name.clone();
        let spec = ActorSpec {
            id,
            class: self.class.to_string(),
            args: wire,
            resources,
            name: self.name,
            namespace: self
                .namespace
                .unwrap_or_else(|| core.namespace().to_owned()),
            max_restarts: self.max_restarts,
            detached: self.lifetime == Lifetime::Detached,
            max_concurrency: self.max_concurrency,
            restarts: 0,
            strategy: self.strategy,
        };
        match core
            .raylet
            .request(|req| ToRaylet::CreateActor { req, spec })?
        {
            FromRaylet::ActorCreated { .. } => {}
            FromRaylet::Error {
                kind: ErrorKind::NameTaken,
                message,
                ..
            } => return Err(Error::NameTaken { message }),
            FromRaylet::Error {
                kind: ErrorKind::Unschedulable,
                message,
                ..
            } => return Err(Error::Unschedulable { message }),
            FromRaylet::Error { message, .. } => return Err(Error::Config { message }),
            other => {
                return Err(Error::RayletDied {
                    message: format!("unexpected reply {other:?}"),
                })
            }
        }
        // Stored constructor arguments stay referenced while the actor may restart.
        core.actors.created(id, self.max_task_retries, specs);
        let life = (!detached && named.is_empty()).then(|| {
            Arc::new(HandleLife {
                id,
                core: Arc::downgrade(&core),
                escaped: std::sync::atomic::AtomicBool::new(false),
            })
        });
        Ok(ActorHandle::from_raw(RawActorHandle { id, core, life }))
    }
}

/// Finds a live actor by name in `namespace`.
pub fn get_actor_in<T: Actor>(name: &str, namespace: &str) -> Result<ActorHandle<T>> {
    let core = current()?;
    let info = lookup(&core, None, name, namespace, false)?;
    if info.class != T::CLASS {
        return Err(Error::TypeMismatch {
            message: format!(
                "the actor named {name:?} is a {}, not a {}",
                info.class,
                T::CLASS
            ),
        });
    }
    Ok(ActorHandle::from_raw(RawActorHandle {
        id: info.id,
        core,
        life: None,
    }))
}

/// Finds a live actor by name in this driver's namespace.
pub fn get_actor<T: Actor>(name: &str) -> Result<ActorHandle<T>> {
    let ns = current()?.namespace().to_owned();
    get_actor_in(name, &ns)
}

/// Kills an actor's process; it is not restarted, and calls made after `kill` returns fail with
/// `ActorDied`.
pub fn kill<T: Actor>(h: &ActorHandle<T>) -> Result<()> {
    kill_actor(h.raw(), false)
}

/// Kills an actor's process as if it crashed: it restarts if `max_restarts` allows.
pub fn kill_with_restart<T: Actor>(h: &ActorHandle<T>) -> Result<()> {
    kill_actor(h.raw(), true)
}

fn kill_actor(raw: &RawActorHandle, restart: bool) -> Result<()> {
    let core = &raw.core;
    let reply = core.raylet.request(|req| ToRaylet::KillActor {
        req,
        id: raw.id,
        restart,
    })?;
    match reply {
        FromRaylet::Actor { info, .. } => {
            if info.state == ActorState::Dead {
                // Later calls from here fail at once instead of racing the kill.
                core.actors.mark_dead(raw.id, info.death);
            } else if restart {
                // Later calls wait for the new process instead of going to the dying one.
                core.actors.drop_conn(core, raw.id);
            }
            Ok(())
        }
        FromRaylet::Error { message, .. } => Err(Error::ActorDied { message }),
        other => Err(Error::RayletDied {
            message: format!("unexpected reply {other:?}"),
        }),
    }
}

/// What the raylet knows of an actor now.
pub fn actor_info<T: Actor>(h: &ActorHandle<T>) -> Result<ActorInfo> {
    lookup(&h.raw().core, Some(h.id()), "", "", false)
}

fn lookup(
    core: &Arc<CoreWorker>,
    id: Option<ActorId>,
    name: &str,
    namespace: &str,
    wait_alive: bool,
) -> Result<ActorInfo> {
    let reply = core.raylet.request(|req| ToRaylet::GetActor {
        req,
        id,
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        wait_alive,
    })?;
    match reply {
        FromRaylet::Actor { info, .. } => Ok(info),
        FromRaylet::Error { message, .. } => Err(Error::ActorDied { message }),
        other => Err(Error::RayletDied {
            message: format!("unexpected reply {other:?}"),
        }),
    }
}

/// One method call.
pub(crate) struct Call {
    id: ObjectId,
    method: &'static str,
    args: Vec<ArgSpec>,
    retries_left: i64,
}

struct Conn {
    writer: Mutex<UnixStream>,
}

#[derive(Default)]
struct PerActor {
    conn: Option<Arc<Conn>>,
    generation: u64,
    queue: VecDeque<Call>,
    inflight: Vec<Call>,
    /// Calls lost with the actor's process, failed once we know whether it restarted or died.
    lost: Vec<Call>,
    resolving: bool,
    dead: Option<String>,
    /// Its creator dropped every handle: it ends once nothing is pending.
    release_when_idle: bool,
    max_task_retries: i64,
    /// Constructor arguments (kept for restarts).
    ctor_args: Vec<ArgSpec>,
}

impl PerActor {
    /// No call queued, in flight or lost.
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty() && self.lost.is_empty()
    }
}

/// Per-actor call state of this process.
#[derive(Default)]
pub(crate) struct ActorCalls {
    actors: Mutex<HashMap<ActorId, PerActor>>,
    /// Calls waiting for arguments, to their actor.
    waiting: Mutex<HashMap<ObjectId, ActorId>>,
    /// Actors known dead, oldest first: their entries stay (calls fail at once) up to
    /// [`DEAD_ACTORS_KEPT`]; an older one's next call asks the raylet again.
    dead: Mutex<VecDeque<ActorId>>,
    /// Actors to pump off the reply loop (see [`ActorCalls::pump`]); the thread that does it
    /// starts on first need and ends with the core worker.
    deferred: Mutex<Option<mpsc::Sender<ActorId>>>,
}

/// Dead actors whose entries a process keeps (as the raylet keeps their records).
const DEAD_ACTORS_KEPT: usize = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ActorCalls {
    /// The creator dropped its last handle to `id`: the actor ends now, or once the calls
    /// still pending have returned.
    fn release(&self, core: &Arc<CoreWorker>, id: ActorId) {
        let waiting_for_args = lock(&self.waiting).values().any(|a| *a == id);
        let now = {
            let mut actors = lock(&self.actors);
            match actors.get_mut(&id) {
                Some(a) if a.dead.is_some() => false,
                Some(a) if waiting_for_args || !a.is_idle() => {
                    a.release_when_idle = true;
                    false
                }
                _ => true,
            }
        };
        if now {
            let _ = core.raylet.send(&ToRaylet::ReleaseActor { id });
        }
    }

    /// After a call returned: ends an actor released meanwhile whose calls are all done.
    fn release_if_idle(&self, core: &Arc<CoreWorker>, id: ActorId) {
        let waiting_for_args = lock(&self.waiting).values().any(|a| *a == id);
        let now = {
            let mut actors = lock(&self.actors);
            match actors.get_mut(&id) {
                Some(a) if a.release_when_idle && !waiting_for_args && a.is_idle() => {
                    a.release_when_idle = false;
                    true
                }
                _ => false,
            }
        };
        if now {
            let _ = core.raylet.send(&ToRaylet::ReleaseActor { id });
        }
    }

    /// Records actor `id` dead with `cause`: its connection and constructor arguments go, and
    /// the oldest dead entries beyond [`DEAD_ACTORS_KEPT`] with nothing pending are forgotten.
    fn mark_dead(&self, id: ActorId, cause: String) {
        let mut actors = lock(&self.actors);
        let a = actors.entry(id).or_default();
        let first = a.dead.is_none();
        a.dead = Some(cause);
        a.conn = None;
        a.ctor_args = Vec::new();
        if first {
            self.forget_old_dead(&mut actors, id);
        }
    }

    /// Queues `id` among the dead; forgets the oldest beyond the limit (`actors` is locked).
    fn forget_old_dead(&self, actors: &mut HashMap<ActorId, PerActor>, id: ActorId) {
        let mut dead = lock(&self.dead);
        dead.push_back(id);
        while dead.len() > DEAD_ACTORS_KEPT {
            let Some(old) = dead.pop_front() else { break };
            let idle = actors.get(&old).is_some_and(|a| {
                a.dead.is_some() && a.queue.is_empty() && a.inflight.is_empty() && a.lost.is_empty()
            });
            if idle {
                actors.remove(&old);
            }
        }
    }

    fn created(&self, id: ActorId, max_task_retries: i64, ctor_args: Vec<ArgSpec>) {
        let mut actors = lock(&self.actors);
        let a = actors.entry(id).or_default();
        a.max_task_retries = max_task_retries;
        a.ctor_args = ctor_args;
    }

    fn submit(&self, core: &Arc<CoreWorker>, actor: ActorId, mut call: Call) {
        let mut waits = false;
        for a in &call.args {
            if let ArgSpec::Ref(dep) = a {
                core.ensure_fetch(*dep);
                if core.refs.add_dependent(*dep, call.id) {
                    waits = true;
                }
            }
        }
        if waits {
            lock(&self.waiting).insert(call.id, actor);
        }
        {
            let mut actors = lock(&self.actors);
            let a = actors.entry(actor).or_default();
            call.retries_left = a.max_task_retries;
            a.queue.push_back(call);
        }
        self.pump(core, actor);
    }

    /// Has the pump thread send `actor`'s calls; false if that thread cannot start.
    fn defer(&self, core: &Arc<CoreWorker>, actor: ActorId) -> bool {
        let mut deferred = lock(&self.deferred);
        if deferred.is_none() {
            let (tx, rx) = mpsc::channel::<ActorId>();
            let weak = Arc::downgrade(core);
            let started = std::thread::Builder::new()
                .name("oxray-actor-send".into())
                .spawn(move || {
                    while let Ok(actor) = rx.recv() {
                        let Some(core) = weak.upgrade() else { return };
                        core.actors.pump(&core, actor);
                    }
                });
            if started.is_err() {
                return false;
            }
            *deferred = Some(tx);
        }
        deferred.as_ref().is_some_and(|tx| tx.send(actor).is_ok())
    }

    /// Arguments some waiting calls needed are ready.
    pub fn dependency_done(&self, core: &Arc<CoreWorker>, ids: &[ObjectId]) {
        let actors: Vec<ActorId> = {
            let waiting = lock(&self.waiting);
            ids.iter()
                .filter_map(|id| waiting.get(id).copied())
                .collect()
        };
        for a in actors {
            self.pump(core, a);
        }
    }

    /// Sends what can be sent, in order; starts resolving the actor's address if needed; fails
    /// everything if it is dead. Never writes while holding the state lock: a full socket must
    /// not stop the reply loop from recording replies (the actor would stall writing them).
    fn pump(&self, core: &Arc<CoreWorker>, actor: ActorId) {
        let mut failed = Vec::new();
        let mut release_ctor = Vec::new();
        let conn = {
            let mut actors = lock(&self.actors);
            let a = actors.entry(actor).or_default();
            if let Some(cause) = &a.dead {
                failed.extend(a.queue.drain(..).map(|c| (c, cause.clone())));
                failed.extend(a.lost.drain(..).map(|c| (c, cause.clone())));
                release_ctor = std::mem::take(&mut a.ctor_args);
                None
            } else if a.conn.is_none() {
                let waiting = !a.queue.is_empty() || !a.lost.is_empty();
                if waiting && !a.resolving {
                    a.resolving = true;
                    let weak = Arc::downgrade(core);
                    let _ = std::thread::Builder::new()
                        .name("oxray-actor-resolve".into())
                        .spawn(move || resolve(weak, actor));
                }
                None
            } else {
                a.conn.clone()
            }
        };
        for (call, cause) in failed {
            self.fail(core, call, cause);
        }
        for arg in release_ctor {
            if let ArgSpec::Ref(id) = arg {
                core.release_task_ref(id);
            }
        }
        let Some(conn) = conn else { return };
        // A batch may fill the socket while the actor is busy; the reply loop must never wait
        // for that (it would stop reading every actor's replies, this one's included).
        if core.on_event_loop() && self.defer(core, actor) {
            return;
        }
        // The writer lock orders concurrent pumps, so calls leave in queue order.
        let mut writer = lock(&conn.writer);
        loop {
            let mut batch = Vec::new();
            {
                let mut actors = lock(&self.actors);
                let Some(a) = actors.get_mut(&actor) else {
                    return;
                };
                if !a.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                    return;
                }
                while let Some(front) = a.queue.front() {
                    let pending = front.args.iter().any(|arg| {
                        matches!(arg, ArgSpec::Ref(id)
                            if matches!(core.refs.state(*id), Some(ObjState::Pending)))
                    });
                    if pending || batch.len() >= 256 {
                        break;
                    }
                    let Some(call) = a.queue.pop_front() else {
                        break;
                    };
                    if let Ok(bytes) = frame::encode(&ToWorker::ActorCall(wire_call(core, &call))) {
                        batch.extend_from_slice(&bytes);
                    }
                    lock(&self.waiting).remove(&call.id);
                    a.inflight.push(call);
                }
            }
            if batch.is_empty() {
                return;
            }
            // On failure the reply loop sees the connection close and retries or fails the
            // calls now in flight.
            if writer.write_all(&batch).is_err() {
                return;
            }
        }
    }

    fn fail(&self, core: &Arc<CoreWorker>, call: Call, cause: String) {
        lock(&self.waiting).remove(&call.id);
        finish_call(
            core,
            call,
            ObjState::Failed(Error::ActorDied {
                message: format!("the actor is dead: {cause}"),
            }),
        );
    }

    /// Records the actor's new connection (or death); returns the connection's generation.
    fn connected(
        &self,
        core: &Arc<CoreWorker>,
        actor: ActorId,
        conn: Option<Arc<Conn>>,
        dead: Option<String>,
    ) -> u64 {
        let (generation, lost) = {
            let mut actors = lock(&self.actors);
            let a = actors.entry(actor).or_default();
            a.resolving = false;
            a.generation += 1;
            a.conn = conn;
            let newly_dead = dead.is_some() && a.dead.is_none();
            if dead.is_some() {
                a.dead = dead;
                a.conn = None;
            }
            let result = (a.generation, (std::mem::take(&mut a.lost), a.dead.clone()));
            if newly_dead {
                self.forget_old_dead(&mut actors, actor);
            }
            result
        };
        let (lost, dead) = lost;
        for call in lost {
            let message = match &dead {
                Some(cause) => format!("the actor is dead: {cause}"),
                None => "the actor's process died while running this call and restarted (set \
                         max_task_retries to re-send calls after a restart)"
                    .into(),
            };
            finish_call(core, call, ObjState::Failed(Error::ActorDied { message }));
        }
        generation
    }

    fn on_done(
        &self,
        core: &Arc<CoreWorker>,
        actor: ActorId,
        id: ObjectId,
        outcome: TaskOutcome,
        contained: Vec<ObjectId>,
    ) {
        let call = {
            let mut actors = lock(&self.actors);
            let Some(a) = actors.get_mut(&actor) else {
                return;
            };
            let Some(pos) = a.inflight.iter().position(|c| c.id == id) else {
                return;
            };
            a.inflight.remove(pos)
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
            TaskOutcome::Failed(f) => ObjState::Failed(match f.kind {
                oxray_common::protocol::FailureKind::FunctionNotFound => {
                    Error::FunctionNotFound { name: f.function }
                }
                oxray_common::protocol::FailureKind::StoreFull => Error::ObjectStoreFull {
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
            }),
        };
        finish_call(core, call, state);
        self.release_if_idle(core, actor);
    }

    /// Forgets the current connection as if it had closed (its calls in flight are lost or
    /// retried); the next call resolves the actor's address again.
    fn drop_conn(&self, core: &Arc<CoreWorker>, actor: ActorId) {
        let generation = lock(&self.actors).get(&actor).map(|a| a.generation);
        if let Some(generation) = generation {
            self.on_lost(core, actor, generation);
        }
    }

    fn on_lost(&self, core: &Arc<CoreWorker>, actor: ActorId, generation: u64) {
        {
            let mut actors = lock(&self.actors);
            let Some(a) = actors.get_mut(&actor) else {
                return;
            };
            if a.generation != generation {
                return;
            }
            a.conn = None;
            let inflight = std::mem::take(&mut a.inflight);
            let mut retry = Vec::new();
            for mut call in inflight {
                if call.retries_left != 0 {
                    call.retries_left -= 1;
                    retry.push(call);
                } else {
                    a.lost.push(call);
                }
            }
            for call in retry.into_iter().rev() {
                a.queue.push_front(call);
            }
        }
        self.pump(core, actor);
    }
}

fn wire_call(core: &CoreWorker, call: &Call) -> ActorCall {
    let args = call
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
                    node: oxray_common::ids::node_of(*id),
                },
            },
        })
        .collect();
    ActorCall {
        id: call.id,
        method: call.method.to_string(),
        args,
    }
}

fn finish_call(core: &Arc<CoreWorker>, call: Call, state: ObjState) {
    core.settle(call.id, state);
    for arg in call.args {
        match arg {
            ArgSpec::Ref(id) => core.release_task_ref(id),
            ArgSpec::Value { contained, .. } => {
                for c in contained {
                    core.release_reservation(c);
                }
            }
        }
    }
}

/// Attempts at finding and reaching an actor before its calls fail.
const RESOLVE_ATTEMPTS: u32 = 200;
/// The longest pause between two attempts.
const RESOLVE_BACKOFF_MAX: Duration = Duration::from_millis(25);

/// Finds where the actor runs and connects to it.
///
/// Event driven: the raylet holds the `GetActor { wait_alive }` question until the actor is
/// alive or dead, so this thread sleeps in that request while the actor starts or restarts.
/// A pause happens only on a retry: after a connection to an address the raylet still gave as
/// alive failed (the process died and the raylet has not seen it yet; nothing signals that to
/// this process, so it asks again after 1, 2, 4… ms, at most [`RESOLVE_BACKOFF_MAX`]), or after
/// the raylet's own wait ran out with the actor still starting.
fn resolve(core: Weak<CoreWorker>, actor: ActorId) {
    let mut backoff = Duration::from_millis(1);
    for _ in 0..RESOLVE_ATTEMPTS {
        let Some(c) = core.upgrade() else { return };
        match lookup(&c, Some(actor), "", "", true) {
            Ok(info) if info.state == ActorState::Alive => {
                if connect(&c, actor, &info.address).is_ok() {
                    return;
                }
                // It died just now: ask again (the raylet waits while it restarts).
            }
            Ok(info) if info.state == ActorState::Dead => {
                c.actors.connected(&c, actor, None, Some(info.death));
                c.actors.pump(&c, actor);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                c.actors.connected(&c, actor, None, Some(e.to_string()));
                c.actors.pump(&c, actor);
                return;
            }
        }
        drop(c);
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(RESOLVE_BACKOFF_MAX);
    }
    if let Some(c) = core.upgrade() {
        c.actors.connected(
            &c,
            actor,
            None,
            Some("could not reach the actor's process".into()),
        );
        c.actors.pump(&c, actor);
    }
}

fn connect(core: &Arc<CoreWorker>, actor: ActorId, address: &str) -> std::io::Result<()> {
    let stream = core.connect_to(address)?;
    let reader = stream.try_clone()?;
    let conn = Arc::new(Conn {
        writer: Mutex::new(stream),
    });
    let generation = core.actors.connected(core, actor, Some(conn), None);
    let (weak, gone) = (Arc::downgrade(core), Arc::downgrade(core));
    let on_reply = Box::new(move |msg| {
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
        core.actors.on_done(&core, actor, id, outcome, contained);
        true
    });
    let on_end = Box::new(move |_why| {
        if let Some(core) = gone.upgrade() {
            core.actors.on_lost(&core, actor, generation);
        }
    });
    Replies::watch(core.events()?, reader, on_reply, on_end);
    // Send only once replies are read.
    core.actors.pump(core, actor);
    Ok(())
}
