//! The per-process core worker: connection to the raylet, the owner's ref table, the submitter,
//! and `put`/`get`/`wait` on top of them. One per process, reachable through [`current`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use oxray_common::event_loop::EventLoop;
use std::time::{Duration, Instant};

use oxray_common::frame;
use oxray_common::ids::{object_id, worker_socket};
use oxray_common::protocol::{
    ClientKind, ErrorKind, FromRaylet, NodeStatus, ObjectValue, ToRaylet,
};
use oxray_common::resources::Resources;
use oxray_common::{JobId, NodeId, WorkerId};
use oxray_object_store::{
    fingerprint, Arena, HeapBytes, Object, ObjectBytes, ObjectId, ObjectView, HEADER_SIZE,
};

use crate::borrow::{collect_contained, register_borrows};
use crate::error::{Error, Result};
use crate::object_ref::ObjectRef;
use crate::owners::Owners;
use crate::raylet_client::{reader_loop, RayletClient};
use crate::refs::{Freed, ObjState, RefTable};
use crate::submitter::Submitter;
use crate::value::{encode_heap, ReturnValue, INLINE_MAX};

static CURRENT: RwLock<Option<Arc<CoreWorker>>> = RwLock::new(None);

/// The core worker of this process, or [`Error::NotInitialized`].
pub fn current() -> Result<Arc<CoreWorker>> {
    CURRENT
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or(Error::NotInitialized)
}

/// Whether this process has a running core worker.
pub fn is_initialized() -> bool {
    CURRENT.read().unwrap_or_else(|p| p.into_inner()).is_some()
}

pub(crate) fn set_current(core: Option<Arc<CoreWorker>>) {
    *CURRENT.write().unwrap_or_else(|p| p.into_inner()) = core;
}

/// The longest pause between two attempts of a `put` into a full store.
const PUT_FULL_BACKOFF_MAX: Duration = Duration::from_millis(64);

/// One process's runtime state.
pub struct CoreWorker {
    pub(crate) worker_id: WorkerId,
    /// This node's index in its cluster (0: not in one).
    pub(crate) node_index: u16,
    /// The local raylet's address (it also carries tunnels to other nodes).
    pub(crate) raylet_address: String,
    pub(crate) kind: ClientKind,
    pub(crate) node: NodeId,
    pub(crate) job: JobId,
    pub(crate) raylet: RayletClient,
    pub(crate) refs: RefTable,
    pub(crate) submitter: Submitter,
    pub(crate) owners: Owners,
    pub(crate) arena: Arc<Arena>,
    pub(crate) session: String,
    pub(crate) namespace: String,
    pub(crate) actors: crate::actor_handle::ActorCalls,
    total: Resources,
    seq: AtomicU64,
    /// How long a create waits for room in a full store (the node's setting).
    store_full_wait: Duration,
    /// Tasks and actor calls run here and not yet sent to the raylet (the timeline).
    pub(crate) task_events: crate::task_events::TaskEvents,
    shutting_down: AtomicBool,
    /// Serves the connections to leased workers and actors (started on first use; `None`
    /// if it could not start).
    events: OnceLock<Option<EventLoop>>,
    /// The job's credential for direct connections (empty: none; see `crate::direct`).
    job_key: Vec<u8>,
    /// Direct connections to processes on other nodes (started on first use; `None` if it
    /// could not start or the job has no credential).
    direct: OnceLock<Option<crate::direct::Direct>>,
}

impl std::fmt::Debug for CoreWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreWorker")
            .field("worker", &self.worker_id)
            .field("kind", &self.kind)
            .field("node", &self.node)
            .finish()
    }
}

impl CoreWorker {
    /// Connects to the raylet at `address`, registers, and makes this the process's core worker.
    pub fn connect(
        address: &str,
        kind: ClientKind,
        worker_id: WorkerId,
        listen: String,
        namespace: String,
    ) -> Result<Arc<CoreWorker>> {
        let stream = oxray_raylet::server::connect(address).map_err(|e| Error::Config {
            message: format!("cannot reach the oxray node at {address}: {e}"),
        })?;
        let exe = match kind {
            ClientKind::Driver => format!("/proc/{}/exe", std::process::id()),
            ClientKind::Worker | ClientKind::Tool | ClientKind::Remote => String::new(),
        };
        let mut reader = stream
            .try_clone()
            .map_err(|e| Error::io("cloning the raylet socket", e))?;
        let mut writer = stream;
        frame::write(
            &mut writer,
            &ToRaylet::Register {
                worker: worker_id,
                pid: std::process::id(),
                kind,
                exe,
                listen,
                namespace,
                job_key: Vec::new(),
            },
        )
        .map_err(|e| Error::io("registering with the raylet", e))?;
        let mut buf = HeapBytes::new();
        let reply =
            frame::read::<FromRaylet, _>(&mut reader, &mut buf).map_err(|e| Error::RayletDied {
                message: format!("no answer to registration: {e}"),
            })?;
        let FromRaylet::Registered {
            node,
            node_index,
            worker: worker_id,
            job,
            arena,
            session,
            resources,
            namespace,
            store_full_wait_ms,
            job_key,
        } = reply
        else {
            return Err(Error::RayletDied {
                message: format!("unexpected answer to registration: {reply:?}"),
            });
        };
        let arena = Arena::open(Path::new(&arena))?;
        let core = Arc::new(CoreWorker {
            worker_id,
            node_index,
            raylet_address: address.to_owned(),
            kind,
            node,
            job,
            raylet: RayletClient::new(writer),
            refs: RefTable::default(),
            submitter: Submitter::default(),
            owners: Owners::default(),
            arena: Arc::new(arena),
            session,
            namespace,
            actors: crate::actor_handle::ActorCalls::default(),
            total: resources,
            seq: AtomicU64::new(1),
            store_full_wait: Duration::from_millis(store_full_wait_ms),
            task_events: Default::default(),
            shutting_down: AtomicBool::new(false),
            events: OnceLock::new(),
            job_key,
            direct: OnceLock::new(),
        });
        // Current before the reader starts: the raylet may send `StartActor` right after
        // `Registered`, and decoding the constructor's arguments (actor handles, refs) needs it.
        set_current(Some(core.clone()));
        let started = (|| {
            let weak = Arc::downgrade(&core);
            std::thread::Builder::new()
                .name("oxray-raylet-reader".into())
                .spawn(move || reader_loop(reader, weak, kind))
                .map_err(|e| Error::io("starting the raylet reader", e))?;
            // The lease reaper and the release flusher start when first needed (an actor
            // process may never lease a worker or borrow an object).
            if kind == ClientKind::Driver {
                // Drivers answer owner requests (borrowers fetching values) on their own socket.
                let name = worker_socket(&core.session, worker_id);
                let listener = crate::executor::bind(&name)
                    .map_err(|e| Error::io(format!("listening on @{name}"), e))?;
                // Weak: the thread must not keep the core worker (and its arena mapping)
                // alive after shutdown, which wakes it to end.
                let served = Arc::downgrade(&core);
                std::thread::Builder::new()
                    .name("oxray-owner-accept".into())
                    .spawn(move || crate::executor::accept_loop(served, listener))
                    .map_err(|e| Error::io("starting the owner service", e))?;
            }
            Ok(())
        })();
        if let Err(e) = started {
            set_current(None);
            return Err(e);
        }
        Ok(core)
    }

    /// Stops using the runtime: returns leases, closes the connection.
    pub fn shutdown(self: &Arc<Self>) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.submitter.shutdown(self);
        self.owners.stop_flusher();
        self.raylet.close();
        {
            let mut cur = CURRENT.write().unwrap_or_else(|p| p.into_inner());
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, self)) {
                *cur = None;
            }
        }
        if self.kind == ClientKind::Driver {
            // Wakes the owner service's accept, which then sees the shutdown and ends.
            let name = worker_socket(&self.session, self.worker_id);
            let _ = oxray_raylet::server::connect(&format!("unix:@{name}"));
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub(crate) fn on_raylet_lost(&self) {
        let err = Error::RayletDied {
            message: "the node's raylet stopped".into(),
        };
        self.refs.fail_all_pending(err);
    }

    /// Connects to a core worker's socket, on this node or (through a tunnel) another.
    /// The event loop that reads replies from leased workers and actors.
    pub(crate) fn events(&self) -> std::io::Result<&EventLoop> {
        self.events
            .get_or_init(|| EventLoop::start("oxray-replies").ok())
            .as_ref()
            .ok_or_else(|| std::io::Error::other("cannot start the thread that reads replies"))
    }

    /// Whether the caller runs on the reply loop (where nothing may block on a socket).
    pub(crate) fn on_event_loop(&self) -> bool {
        self.events
            .get()
            .and_then(Option::as_ref)
            .is_some_and(EventLoop::is_current)
    }

    /// Connects to a core worker's socket: on this node over its Unix socket; on another
    /// node straight to the process when it takes direct connections (see `crate::direct`),
    /// else through a tunnel of the raylets.
    pub(crate) fn connect_to(
        &self,
        address: &str,
    ) -> std::io::Result<std::os::unix::net::UnixStream> {
        let (socket, direct) = oxray_common::address::split_direct(address);
        if let (true, Some(target), Some(service)) =
            (socket.starts_with("peer://"), direct, self.direct())
        {
            // Else gone, firewalled or another job's process: the raylets say which, and reach
            // it if it can be reached.
            if let Ok(stream) = service.connect(target) {
                return Ok(stream);
            }
        }
        oxray_raylet::server::connect_anywhere(&self.raylet_address, socket)
    }

    /// The direct-connection service, started on first use.
    fn direct(&self) -> Option<&crate::direct::Direct> {
        self.direct
            .get_or_init(|| {
                if self.job_key.len() != 32 {
                    return None;
                }
                crate::direct::Direct::start(&self.job_key)
                    .map_err(|e| eprintln!("oxray: direct connections to other nodes are off: {e}"))
                    .ok()
            })
            .as_ref()
    }

    /// Takes a direct connection a process on another node made to this worker (which
    /// registered its listener's address): once it proved the job's credential, `serve` gets
    /// the stream that carries it.
    pub(crate) fn accept_direct(
        &self,
        tcp: std::net::TcpStream,
        serve: impl FnOnce(std::os::unix::net::UnixStream) + Send + 'static,
    ) {
        match self.direct() {
            Some(service) => service.accept(tcp, serve),
            None => eprintln!("oxray: refused a direct connection: this job has no credential"),
        }
    }

    /// This process's worker id.
    pub fn worker_id(&self) -> WorkerId {
        self.worker_id
    }

    /// The node this process runs on.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// Driver or worker.
    pub fn kind(&self) -> ClientKind {
        self.kind
    }

    /// The session's name (the raylet's socket name).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The namespace for named actors.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The job.
    pub fn job(&self) -> JobId {
        self.job
    }

    /// The node's total resources.
    pub fn total_resources(&self) -> &Resources {
        &self.total
    }

    /// A new object id owned by this process.
    pub(crate) fn new_object_id(&self) -> ObjectId {
        object_id(self.worker_id, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Stores a value and returns a ref to it: inline in this process when small, in the node's
    /// store (one copy, written in place) when large.
    pub fn put<T: Object + Send>(self: &Arc<Self>, value: &T) -> Result<ObjectRef<T>> {
        let id = self.new_object_id();
        let (state, contained) = collect_contained(|| self.encode(id, value));
        let state = state?;
        crate::borrow::reserve(self, &contained)?;
        self.refs.insert(id, state);
        if !contained.is_empty() {
            let freed = self.refs.set_contained(id, contained);
            self.release_freed(freed);
        }
        Ok(ObjectRef::adopt(id, self.clone()))
    }

    /// Puts a `Vec<T>` of `n` plain numbers that `fill` writes in place, in the store when
    /// large (no heap vector, no copy: one pass over the memory), inline when small.
    #[cfg(target_endian = "little")]
    pub fn put_with_len<T, F>(self: &Arc<Self>, n: usize, fill: F) -> Result<ObjectRef<Vec<T>>>
    where
        T: oxray_object_store::Native,
        Vec<T>: Object + Send,
        F: FnOnce(&mut [T]) + Send,
    {
        let id = self.new_object_id();
        let value = crate::value::FilledVec {
            n,
            fill: std::sync::Mutex::new(Some(fill)),
            _numbers: std::marker::PhantomData,
        };
        let state = self.encode(id, &value)?;
        self.refs.insert(id, state);
        Ok(ObjectRef::adopt(id, self.clone()))
    }

    /// Encodes a value for object `id`: inline state when small, else written into the store.
    pub(crate) fn encode(&self, id: ObjectId, value: &dyn ReturnValue) -> Result<ObjState> {
        let len = value.encoded_len()?;
        if len <= INLINE_MAX {
            let bytes = encode_heap(value, len)?;
            return Ok(ObjState::Inline {
                fingerprint: value.fingerprint(),
                bytes: Arc::new(bytes),
            });
        }
        self.create_in_store(id, len, value)?;
        Ok(ObjState::Stored {
            node: self.node_index,
        })
    }

    /// Creates `id` in the node's store, encodes `value` into it and seals it. Waits a bounded
    /// time when the store is full.
    pub(crate) fn create_in_store(
        &self,
        id: ObjectId,
        len: usize,
        value: &dyn ReturnValue,
    ) -> Result<()> {
        let fingerprint = value.fingerprint();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(1);
        let block = loop {
            let reply = self.raylet.request(|req| ToRaylet::Create {
                req,
                id,
                len: len as u64,
                fingerprint,
            })?;
            match reply {
                FromRaylet::Created { existed: true, .. } => return Ok(()),
                FromRaylet::Created { block, .. } => break block,
                // No room in the store (or larger than all of it): the raylet made a file.
                FromRaylet::CreatedInFile { path, .. } => {
                    return self.fill_file(id, std::path::Path::new(&path), len, value);
                }
                FromRaylet::Error {
                    kind: ErrorKind::ObjectStoreFull,
                    message,
                    ..
                } => {
                    let waited = started.elapsed();
                    if waited >= self.store_full_wait {
                        return Err(Error::ObjectStoreFull { message });
                    }
                    // The raylet does not say when room frees up (objects released, deleted
                    // or evicted), so there is no event to wait on: ask again after a backoff
                    // (1, 2, 4 … 64 ms), never past the bounded wait.
                    std::thread::sleep(backoff.min(self.store_full_wait - waited));
                    backoff = (backoff * 2).min(PUT_FULL_BACKOFF_MAX);
                }
                FromRaylet::Error { message, .. } => {
                    return Err(Error::ObjectStoreFull { message })
                }
                other => return Err(unexpected(other)),
            }
        };
        let data = block + HEADER_SIZE;
        self.arena.prefault(data, len as u64);
        // SAFETY: the raylet created this object for this client just now and nobody else
        // writes or reads it until we seal it; this is the only slice of it.
        let Some(buf) = (unsafe { self.arena.payload_mut(data, len as u64) }) else {
            return Err(Error::ObjectStoreFull {
                message: "the raylet returned a location outside the object store".into(),
            });
        };
        value.encode_into(buf)?;
        match self.raylet.request(|req| ToRaylet::Seal { req, id })? {
            FromRaylet::Sealed { .. } => Ok(()),
            FromRaylet::Error { message, .. } => Err(Error::ObjectStoreFull { message }),
            other => Err(unexpected(other)),
        }
    }

    /// Fills object `id`'s file (made by the raylet when the store had no room) and seals it.
    fn fill_file(
        &self,
        id: ObjectId,
        path: &std::path::Path,
        len: usize,
        value: &dyn ReturnValue,
    ) -> Result<()> {
        let written = oxray_object_store::FileWriter::open(path, len as u64)
            .and_then(|mut file| value.encode_into(file.as_mut_slice()));
        if let Err(e) = written {
            // Sealing nothing: the raylet drops the file when told the object is gone.
            let _ = self.raylet.send(&ToRaylet::Delete {
                ids: vec![id],
                node: 0,
            });
            return Err(e.into());
        }
        match self.raylet.request(|req| ToRaylet::Seal { req, id })? {
            FromRaylet::Sealed { .. } => Ok(()),
            FromRaylet::Error { message, .. } => Err(Error::ObjectStoreFull { message }),
            other => Err(unexpected(other)),
        }
    }

    /// Pins a stored object and returns its bytes in place; the pin is released when they drop.
    /// When the object lives on another node (`node`), the raylet first pulls a copy here.
    pub(crate) fn pin(self: &Arc<Self>, id: ObjectId, node: u16) -> Result<ObjectBytes> {
        self.pin_try(id, node, 0)
    }

    fn pin_try(self: &Arc<Self>, id: ObjectId, node: u16, tries: u32) -> Result<ObjectBytes> {
        match self.raylet.request(|req| ToRaylet::Pin { req, id, node })? {
            FromRaylet::Pinned { block, .. } => {
                let guard = PinGuard {
                    core: Arc::downgrade(self),
                    id,
                };
                Ok(ObjectBytes::from_arena(
                    self.arena.clone(),
                    block,
                    id,
                    Box::new(guard),
                )?)
            }
            // Kept in a file the store has no room for: mapped read-only, nothing pinned. A
            // restore may unlink the file between the answer and the open: ask again then.
            FromRaylet::PinnedInFile {
                path,
                len,
                fingerprint,
                ..
            } => match ObjectBytes::from_file(
                std::path::Path::new(&path),
                id,
                len,
                fingerprint,
                Box::new(()),
            ) {
                Ok(bytes) => Ok(bytes),
                Err(_) if tries < 3 => self.pin_try(id, node, tries + 1),
                Err(e) => Err(Error::ObjectLost {
                    id: id.to_string(),
                    message: e.to_string(),
                }),
            },
            FromRaylet::Error {
                kind: ErrorKind::OwnerDied,
                ..
            } => Err(Error::OwnerDied { id: id.to_string() }),
            FromRaylet::Error {
                kind: ErrorKind::ObjectNotFound,
                message,
                ..
            } => Err(Error::ObjectLost {
                id: id.to_string(),
                message,
            }),
            FromRaylet::Error { message, .. } => Err(Error::ObjectLost {
                id: id.to_string(),
                message,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Waits for an object and returns its bytes (heap or pinned store bytes).
    fn object_bytes(
        self: &Arc<Self>,
        id: ObjectId,
        timeout: Option<Duration>,
    ) -> Result<ObjectBytes> {
        let done = self.wait_ids(&[id], 1, timeout);
        if !done[0] {
            return Err(Error::Timeout {
                waited: timeout.unwrap_or_default(),
            });
        }
        match self.refs.state(id) {
            None => Err(Error::ObjectLost {
                id: id.to_string(),
                message: "no ref to it is held in this process".into(),
            }),
            Some(ObjState::Pending) => Err(Error::Timeout {
                waited: timeout.unwrap_or_default(),
            }),
            Some(ObjState::Failed(e)) => Err(e),
            Some(ObjState::Inline { fingerprint, bytes }) => {
                Ok(ObjectBytes::from_heap(id, fingerprint, bytes))
            }
            Some(ObjState::Stored { node }) => match self.pin(id, node) {
                Err(lost @ Error::ObjectLost { .. }) => self.rebuild(id, node, lost, timeout),
                pinned => pinned,
            },
        }
    }

    /// A stored object could not be read: when its node is dead and its task can run again
    /// (see `lineage`), run it and wait for the new copy; otherwise `lost`. A borrower asks the
    /// object's owner to do that.
    fn rebuild(
        self: &Arc<Self>,
        id: ObjectId,
        node: u16,
        lost: Error,
        timeout: Option<Duration>,
    ) -> Result<ObjectBytes> {
        if node == 0 {
            return Err(lost);
        }
        let owner = oxray_common::ids::owner_of(id);
        if owner != self.worker_id {
            return self.rebuild_at_owner(id, node, lost);
        }
        self.make_again(id, node, lost)?;
        // Bounded: each rebuild spends one of the task's retries.
        self.object_bytes(id, timeout)
    }

    /// A borrowed object's copy on `node` was lost: its owner makes it again (or says why it
    /// cannot), and the new copy is read.
    fn rebuild_at_owner(
        self: &Arc<Self>,
        id: ObjectId,
        node: u16,
        lost: Error,
    ) -> Result<ObjectBytes> {
        let owner = oxray_common::ids::owner_of(id);
        let Ok(value) = self.owners.rebuild(self, owner, id, node) else {
            return Err(Error::OwnerDied { id: id.to_string() });
        };
        let lost_because = |why: String| match &lost {
            Error::ObjectLost { id, message } => Error::ObjectLost {
                id: id.clone(),
                message: format!("{message}; {why}"),
            },
            other => other.clone(),
        };
        match value {
            ObjectValue::Stored { node: now } if now != node => {
                self.refs
                    .replace_lost(id, node, ObjState::Stored { node: now });
                self.pin(id, now)
            }
            ObjectValue::Stored { .. } => Err(lost),
            ObjectValue::Inline { fingerprint, bytes } => {
                let bytes = Arc::new(crate::value::aligned_copy(&bytes));
                self.refs.replace_lost(
                    id,
                    node,
                    ObjState::Inline {
                        fingerprint,
                        bytes: bytes.clone(),
                    },
                );
                Ok(ObjectBytes::from_heap(id, fingerprint, bytes))
            }
            ObjectValue::Failed { message } => Err(lost_because(format!("its owner: {message}"))),
            ObjectValue::Unknown => Err(lost_because("its owner no longer holds it".into())),
        }
    }

    /// Asked by a borrower that found the copy of `id` (owned here) on `node` lost: makes it
    /// again, unless that already happened (the object is pending, or stored elsewhere now).
    pub(crate) fn rebuild_for_borrower(self: &Arc<Self>, id: ObjectId, node: u16) -> Result<()> {
        match self.refs.state(id) {
            Some(ObjState::Stored { node: n }) if n == node && node != 0 => {
                let lost = Error::ObjectLost {
                    id: id.to_string(),
                    message: format!("its copy on node index {node} was lost (a borrower read it)"),
                };
                self.make_again(id, node, lost)
            }
            _ => Ok(()),
        }
    }

    /// Starts making `id` (owned here, lost with node `node`) again; `lost` (with why) when
    /// that node is not dead or the task cannot run again.
    fn make_again(self: &Arc<Self>, id: ObjectId, node: u16, lost: Error) -> Result<()> {
        let Some(resources) = self.submitter.lineage.resources(id) else {
            return Err(lost);
        };
        let view = self.node_status()?.cluster;
        if !view.nodes.iter().any(|n| n.index == node && !n.alive) {
            return Err(lost);
        }
        if !view
            .nodes
            .iter()
            .any(|n| n.alive && n.total.contains(&resources))
        {
            let Error::ObjectLost { id, message } = lost else {
                return Err(lost);
            };
            return Err(Error::ObjectLost {
                id,
                message: format!(
                    "{message}; its task cannot run again: no live node has {resources}"
                ),
            });
        }
        let dead: std::collections::HashSet<u16> = view
            .nodes
            .iter()
            .filter(|n| !n.alive)
            .map(|n| n.index)
            .collect();
        if let Err(why) = self.run_again(id, &dead, &lost) {
            let Error::ObjectLost { id, message } = lost else {
                return Err(lost);
            };
            return Err(Error::ObjectLost {
                id,
                message: format!("{message}; it cannot be made again: {why}"),
            });
        }
        Ok(())
    }

    /// Runs the task that made `id` again, after running again those of its argument objects
    /// that were lost with the dead nodes too (recursively; the re-run waits for them as any
    /// task for its arguments). Already pending (another reader started it): nothing to do.
    fn run_again(
        self: &Arc<Self>,
        id: ObjectId,
        dead: &std::collections::HashSet<u16>,
        lost: &Error,
    ) -> std::result::Result<(), String> {
        let deps = self
            .submitter
            .lineage
            .ref_args(id)
            .ok_or_else(|| format!("no record of the task that made {id}"))?;
        for dep in deps {
            if let Some(ObjState::Stored { node }) = self.refs.state(dep) {
                if dead.contains(&node) {
                    self.run_again(dep, dead, lost)
                        .map_err(|why| format!("its argument {dep} was lost too, and {why}"))?;
                }
            }
        }
        if self.refs.reset_pending(id) {
            let Some(task) = self.submitter.lineage.rerun(id) else {
                // Its last retry went meanwhile: settle the waiters with the loss.
                self.refs.complete(id, ObjState::Failed(lost.clone()));
                return Err(format!("the task that made {id} has no retry left"));
            };
            eprintln!(
                "oxray: object {id} was lost with its node; running {} again to make it",
                task.function
            );
            self.submitter.submit(self, task);
        }
        Ok(())
    }

    /// Gets a zero-copy view of an object.
    pub fn get_view<T: Object>(
        self: &Arc<Self>,
        r: &ObjectRef<T>,
        timeout: Option<Duration>,
    ) -> Result<ObjectView<T>> {
        Ok(ObjectView::new(self.object_bytes(r.id(), timeout)?)?)
    }

    /// Gets an owned copy of an object's value.
    pub fn get<T: Object>(
        self: &Arc<Self>,
        r: &ObjectRef<T>,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let bytes = self.object_bytes(r.id(), timeout)?;
        if bytes.fingerprint() != fingerprint::<T>() {
            // Let the view produce the detailed type error.
            return Err(ObjectView::<T>::new(bytes)
                .err()
                .map(Error::from)
                .unwrap_or(Error::TypeMismatch {
                    message: "type mismatch".into(),
                }));
        }
        let archived = T::access(&bytes).map_err(|e| Error::TypeMismatch {
            message: format!(
                "object {} is not a valid {}: {e}",
                r.id(),
                std::any::type_name::<T>()
            ),
        })?;
        register_borrows(self, || T::decode(archived)).map_err(|e| Error::TypeMismatch {
            message: format!("decoding object {}: {e}", r.id()),
        })
    }

    /// Waits until `num` of `ids` are done; returns their done flags. A worker tells its
    /// raylet it is blocked meanwhile, so its CPU can run other work (nested tasks).
    pub(crate) fn wait_ids(
        self: &Arc<Self>,
        ids: &[ObjectId],
        num: usize,
        timeout: Option<Duration>,
    ) -> Vec<bool> {
        for id in ids {
            self.ensure_fetch(*id);
        }
        let is_worker = self.kind == ClientKind::Worker;
        self.refs.wait(ids, num, timeout, &mut |blocked| {
            if is_worker {
                let msg = if blocked {
                    ToRaylet::Blocked
                } else {
                    ToRaylet::Unblocked
                };
                let _ = self.raylet.send(&msg);
            }
        })
    }

    /// Waits for `num` of `refs` (see `oxray::wait`).
    pub fn wait<T>(
        self: &Arc<Self>,
        refs: &[ObjectRef<T>],
        num: usize,
        timeout: Option<Duration>,
    ) -> Vec<bool> {
        let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
        self.wait_ids(&ids, num.min(ids.len()), timeout)
    }

    /// Cancels the task that makes `id` (see `oxray::cancel`).
    pub fn cancel(self: &Arc<Self>, id: ObjectId, force: bool, recursive: bool) {
        self.submitter.cancel(self, id, force, recursive);
    }

    /// A local ref was dropped.
    pub(crate) fn release_local(self: &Arc<Self>, id: ObjectId) {
        let freed = self.refs.remove_local(id);
        self.release_freed(freed);
    }

    /// A task that took `id` as an argument ended.
    pub(crate) fn release_task_ref(self: &Arc<Self>, id: ObjectId) {
        let freed = self.refs.remove_task_ref(id);
        self.release_freed(freed);
    }

    /// Releases what a freed entry held: its store copy, the reservations of the refs its value
    /// contained, and its borrow at the owner.
    pub(crate) fn release_freed(self: &Arc<Self>, freed: Freed) {
        if let Some((id, node)) = freed.delete_stored {
            for dep in self.submitter.lineage.forget(id) {
                self.release_task_ref(dep);
            }
            let _ = self.raylet.send(&ToRaylet::Delete {
                ids: vec![id],
                node,
            });
        }
        for id in freed.contained {
            self.release_reservation(id);
        }
        if let Some((owner, id)) = freed.borrowed_from {
            self.owners.queue_release(self, owner, id, false);
        }
    }

    /// An object containing a ref to `id` was freed.
    pub(crate) fn release_reservation(self: &Arc<Self>, id: ObjectId) {
        let owner = oxray_common::ids::owner_of(id);
        if owner == self.worker_id {
            let freed = self.refs.unreserve(id);
            self.release_freed(freed);
        } else {
            self.owners.queue_release(self, owner, id, true);
        }
    }

    /// Starts fetching a borrowed object's value from its owner, if not done yet.
    pub(crate) fn ensure_fetch(self: &Arc<Self>, id: ObjectId) {
        if let Some(owner) = self.refs.start_fetch(id) {
            self.owners.fetch(self, owner, id);
        }
    }

    /// Sets an object's value and starts the tasks that waited for it.
    pub(crate) fn settle(self: &Arc<Self>, id: ObjectId, state: ObjState) {
        if let Some(deps) = self.refs.complete(id, state) {
            if !deps.is_empty() {
                self.submitter.on_dependency_done(self, deps);
            }
        }
    }

    /// Sends the task events recorded here to the raylet (nothing when there are none).
    pub(crate) fn flush_task_events(&self) {
        let events = self.task_events.take();
        if !events.is_empty() {
            let _ = self.raylet.send(&ToRaylet::TaskEvents { events });
        }
    }

    /// The tasks and actor calls this node's workers ran (the last 100,000), with the node's
    /// id.
    pub fn node_timeline(&self) -> Result<(NodeId, Vec<oxray_common::protocol::TaskEvent>)> {
        match self.raylet.request(|req| ToRaylet::Timeline { req })? {
            FromRaylet::Timeline { node, events, .. } => Ok((node, events)),
            other => Err(unexpected(other)),
        }
    }

    /// The node's status, from its raylet.
    pub fn node_status(&self) -> Result<NodeStatus> {
        match self.raylet.request(|req| ToRaylet::Status { req })? {
            FromRaylet::Status { status, .. } => Ok(*status),
            other => Err(unexpected(other)),
        }
    }

    /// The objects in this node's store (and spilled from it), largest first.
    pub fn node_objects(&self) -> Result<Vec<oxray_common::protocol::StoredObject>> {
        match self.raylet.request(|req| ToRaylet::Memory { req })? {
            FromRaylet::Memory { objects, .. } => Ok(objects),
            other => Err(unexpected(other)),
        }
    }

    /// What holds object `id` in this process, if it has an entry for it: `(local refs, task
    /// arguments, borrowers, containing objects)`.
    pub fn holders(&self, id: ObjectId) -> Option<(u32, u32, u32, u32)> {
        self.refs.holders(id)
    }

    /// Number of objects this process owns and still references.
    pub fn owned_objects(&self) -> usize {
        self.refs.len()
    }
}

fn unexpected(msg: FromRaylet) -> Error {
    Error::RayletDied {
        message: format!("unexpected reply from the raylet: {msg:?}"),
    }
}

/// Releases a store pin when a view of a stored object drops.
struct PinGuard {
    core: std::sync::Weak<CoreWorker>,
    id: ObjectId,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(core) = self.core.upgrade() {
            let _ = core.raylet.send(&ToRaylet::Release { id: self.id });
        }
    }
}
