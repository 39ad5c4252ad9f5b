//! `init`, `shutdown` and the object calls, over the process's core worker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxray_core_worker::await_refs::{GetAll, GetView, Wait};
use oxray_core_worker::{
    current, ClientKind, CoreWorker, Error, NodeStatus, ObjectRef, Result, WorkerId,
};
use oxray_object_store::{Object, ObjectView};
use oxray_raylet::{Raylet, RayletConfig};

use crate::config::Config;

/// The runtime this process started with [`init`]: how many [`Cluster`] guards are out, and the
/// raylet it embeds, if any. Its lock also makes concurrent `init`s (parallel `#[test]`s) wait
/// for each other, so they share one runtime instead of racing to start two.
static RUNTIME: Mutex<Runtime> = Mutex::new(Runtime {
    guards: 0,
    generation: 0,
    address: String::new(),
    embedded: None,
});

struct Runtime {
    /// Live [`Cluster`] guards of the current runtime; the last one to drop shuts it down.
    guards: usize,
    /// Bumped by every start, so a guard of an earlier runtime does not count against a later one.
    generation: u64,
    address: String,
    embedded: Option<Raylet>,
}

fn runtime() -> std::sync::MutexGuard<'static, Runtime> {
    RUNTIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`init`] returns: a guard on the running runtime. Every `init` in the process returns
/// one on the same runtime (threads of one program, parallel `#[test]`s), and the runtime shuts
/// down when the last guard is dropped (or at [`shutdown`]).
#[must_use = "oxray shuts down when the Cluster guard is dropped: bind it for as long as you use \
              oxray, as in `let _cluster = oxray::init()?;` (`let _ = ...` drops it at once)"]
#[derive(Debug)]
pub struct Cluster {
    address: String,
    embedded: bool,
    generation: u64,
}

impl Cluster {
    /// The node's address (`unix:@...`): other drivers can attach with `OXRAY_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the node runs inside this process.
    pub fn is_embedded(&self) -> bool {
        self.embedded
    }

    /// The address of the dashboard of the node this driver attached to, token included
    /// (`None`: it serves none; an embedded node serves one when asked with
    /// [`Config::dashboard`](crate::Config::dashboard)).
    pub fn dashboard(&self) -> Option<String> {
        oxray_raylet::tool::status(&self.address)
            .ok()
            .map(|s| s.dashboard)
            .filter(|d| !d.is_empty())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut rt = runtime();
        if rt.generation != self.generation || rt.guards == 0 {
            // That runtime was shut down already.
            return;
        }
        rt.guards -= 1;
        if rt.guards == 0 {
            stop(&mut rt);
        }
    }
}

/// Starts oxray: attaches to `OXRAY_ADDRESS` if set, else embeds a single-node cluster.
pub fn init() -> Result<Cluster> {
    init_with(Config::new())
}

/// Starts oxray with options. If this process's runtime is running already (another thread
/// called `init`), the caller gets a guard on it: `config`'s node options (CPUs, memory,
/// resources) are those of the first `init`, and an `address` naming another node is an error.
pub fn init_with(config: Config) -> Result<Cluster> {
    if oxray_core_worker::is_worker() {
        return Err(Error::Config {
            message: "init() was called inside a task; workers are already connected".into(),
        });
    }
    let mut rt = runtime();
    let address = config.address.clone().or_else(|| {
        std::env::var("OXRAY_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
    });
    if rt.guards > 0 && is_initialized() {
        if let Some(a) = address.filter(|a| *a != rt.address) {
            return Err(Error::Config {
                message: format!(
                    "oxray is already running in this process, attached to {}; it cannot attach \
                     to {a} as well (drop every Cluster guard, or call oxray::shutdown(), first)",
                    rt.address
                ),
            });
        }
        rt.guards += 1;
        return Ok(Cluster {
            address: rt.address.clone(),
            embedded: rt.embedded.is_some(),
            generation: rt.generation,
        });
    }
    if is_initialized() {
        return Err(Error::Config {
            message: "oxray is already initialized in this process; call oxray::shutdown() (or \
                      drop the Cluster) before init() again"
                .into(),
        });
    }
    let (address, embedded) = match address {
        Some(a) => (a, None),
        None => {
            let mut rc = RayletConfig {
                embedded: true,
                ..RayletConfig::default()
            };
            if let Some(n) = config.num_cpus {
                if n.is_nan() || n < 0.0 {
                    return Err(Error::Config {
                        message: format!("num_cpus must be zero or more, not {n}"),
                    });
                }
                rc.num_cpus = n;
                rc.prestart_workers = n.ceil() as usize;
            }
            if let Some(m) = config.object_store_memory {
                rc.object_store_memory = m;
            }
            rc.resources = config.resources.clone();
            if let Some(on) = config.spilling {
                rc.spilling = on;
            }
            rc.spill_dir = config.spill_dir.clone();
            if let Some(wait) = config.store_full_wait {
                rc.store_full_wait = wait;
            }
            rc.dashboard_port = config.dashboard_port;
            let raylet = Raylet::start(rc).map_err(|e| Error::Config {
                message: format!("starting the embedded node: {e}"),
            })?;
            (raylet.address().to_owned(), Some(raylet))
        }
    };
    let driver = WorkerId::random();
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| format!("anonymous-{driver}"));
    // On failure the embedded raylet (if any) is dropped here, which stops it.
    CoreWorker::connect(
        &address,
        ClientKind::Driver,
        driver,
        String::new(),
        namespace,
    )?;
    rt.generation += 1;
    rt.guards = 1;
    rt.address = address.clone();
    let is_embedded = embedded.is_some();
    rt.embedded = embedded;
    Ok(Cluster {
        address,
        embedded: is_embedded,
        generation: rt.generation,
    })
}

/// Shuts the runtime down (the lock held): the driver's leases go back, it disconnects, and
/// the embedded node stops (its workers are killed).
fn stop(rt: &mut Runtime) {
    rt.guards = 0;
    if let Ok(core) = current() {
        if core.kind() == ClientKind::Driver {
            core.shutdown();
        }
    }
    let raylet = rt.embedded.take();
    drop(raylet);
}

/// Stops oxray in this process now, whatever [`Cluster`] guards are still out: returns leases,
/// disconnects, and stops the embedded node (its workers are killed). Refs still held become
/// unusable. `init` may be called again.
pub fn shutdown() {
    stop(&mut runtime());
}

/// Whether `init` has run (and `shutdown` has not).
pub fn is_initialized() -> bool {
    oxray_core_worker::is_initialized()
}

/// Stores a value and returns a ref to it.
pub fn put<T: Object + Send>(value: &T) -> Result<ObjectRef<T>> {
    current()?.put(value)
}

/// Puts a vector of `n` plain numbers (`f64`, `u8`, `i64`, ...) that `fill` writes straight
/// into the object store: no heap `Vec` and no copy, so a large array needs its memory once
/// (a `put` of a `Vec` needs it twice for a moment). Read it back like any `Vec<T>`.
///
/// ```no_run
/// # fn main() -> oxray::Result<()> {
/// # let _cluster = oxray::init()?;
/// let xs = oxray::put_with_len::<f64>(1 << 27, |s| {
///     for (i, x) in s.iter_mut().enumerate() {
///         *x = (i as f64).sqrt();
///     }
/// })?; // 1 GiB, written in place
/// assert_eq!(oxray::get_view(&xs)?.as_slice()[4], 2.0);
/// # Ok(())
/// # }
/// ```
#[cfg(target_endian = "little")]
pub fn put_with_len<T>(n: usize, fill: impl FnOnce(&mut [T]) + Send) -> Result<ObjectRef<Vec<T>>>
where
    T: oxray_object_store::Native,
    Vec<T>: Object + Send,
{
    current()?.put_with_len(n, fill)
}

/// Waits for an object and returns an owned copy of its value.
pub fn get<T: Object>(r: &ObjectRef<T>) -> Result<T> {
    r_core(r)?.get(r, None)
}

/// Like [`get`], failing with [`Error::Timeout`] after `timeout`.
pub fn get_timeout<T: Object>(r: &ObjectRef<T>, timeout: Duration) -> Result<T> {
    r_core(r)?.get(r, Some(timeout))
}

/// Gets several objects, in order.
pub fn get_all<T: Object>(refs: &[ObjectRef<T>]) -> Result<Vec<T>> {
    refs.iter().map(get).collect()
}

/// A zero-copy view of an object: large objects are read in place in the node's store (the view
/// pins them), small ones from this process's memory.
pub fn get_view<T: Object>(r: &ObjectRef<T>) -> Result<ObjectView<T>> {
    r_core(r)?.get_view(r, None)
}

/// The async form of [`get_view`]: a future of the view, woken when the object is ready.
/// (For a value, await the ref itself: `r.await` or `(&r).await`.)
pub fn get_view_async<T: Object>(r: &ObjectRef<T>) -> GetView<T> {
    GetView::new(r)
}

/// The async form of [`get_all`]: a future of every value, in order.
pub fn get_all_async<T: Object>(refs: &[ObjectRef<T>]) -> GetAll<T> {
    GetAll::new(refs)
}

/// The async form of [`wait`]: a future of `(ready, not_ready)` once `num_returns` (at most
/// all) of `refs` are ready or failed. It has no timeout of its own: race it with your
/// executor's timer (`tokio::time::timeout(d, oxray::wait_async(&refs, 1))`); dropping it
/// mid-wait is fine.
pub fn wait_async<T>(refs: &[ObjectRef<T>], num_returns: usize) -> Wait<T> {
    Wait::new(refs, num_returns)
}

fn r_core<T>(_r: &ObjectRef<T>) -> Result<Arc<CoreWorker>> {
    current()
}

/// What [`wait`] returns: `(ready, not_ready)`.
pub type WaitResult<T> = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

/// Waits until `num_returns` of `refs` are ready (or failed) or `timeout` passes; returns
/// `(ready, not_ready)`, each in the order given. `Some(Duration::ZERO)` returns at once.
pub fn wait<T>(
    refs: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<WaitResult<T>> {
    if num_returns > refs.len() {
        return Err(Error::Config {
            message: format!(
                "wait: num_returns ({num_returns}) is more than the {} refs given",
                refs.len()
            ),
        });
    }
    let done = current()?.wait(refs, num_returns, timeout);
    let mut ready = Vec::new();
    let mut pending = Vec::new();
    for (r, d) in refs.iter().zip(done) {
        if d && ready.len() < num_returns {
            ready.push(r.clone());
        } else {
            pending.push(r.clone());
        }
    }
    Ok((ready, pending))
}

/// Cancels a task that has not finished: its `get` fails with [`Error::Cancelled`], and so do
/// the tasks it submitted while running (recursively), as Ray's `cancel` does by default. A
/// task already running keeps its worker until it ends; its result is dropped. To stop a
/// running task, use [`cancel_with`] and `force`.
pub fn cancel<T>(r: &ObjectRef<T>) -> Result<()> {
    current()?.cancel(r.id(), false, true);
    Ok(())
}

/// How [`cancel_with`] cancels (the default: not by force, recursively, as [`cancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelOptions {
    /// Also stop the task if it runs: its worker process is killed (and the task not retried),
    /// which frees the CPU it held at once. Tasks only; an actor call is not force-cancelled
    /// (kill the actor instead).
    pub force: bool,
    /// Also cancel the tasks it submitted while running, and theirs.
    pub recursive: bool,
}

impl Default for CancelOptions {
    fn default() -> Self {
        CancelOptions {
            force: false,
            recursive: true,
        }
    }
}

/// Cancels a task as [`cancel`] does; with `force`, a running task's worker is killed too.
///
/// ```no_run
/// # use oxray::prelude::*;
/// # #[oxray::remote] fn forever() -> u8 { loop { std::thread::park() } }
/// # fn main() -> oxray::Result<()> {
/// # let _cluster = oxray::init()?;
/// let r = forever::remote()?;
/// oxray::cancel_with(&r, oxray::CancelOptions { force: true, ..Default::default() })?;
/// assert!(matches!(oxray::get(&r), Err(oxray::Error::Cancelled)));
/// # Ok(())
/// # }
/// ```
pub fn cancel_with<T>(r: &ObjectRef<T>, options: CancelOptions) -> Result<()> {
    current()?.cancel(r.id(), options.force, options.recursive);
    Ok(())
}

/// The state of the node this process is attached to: resources, store use, workers and the
/// lease requests that wait (what `oxray status` prints).
pub fn status() -> Result<NodeStatus> {
    current()?.node_status()
}

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's id (as [`node_id`] reports it).
    pub id: String,
    /// Where its local clients attach (`unix:@SESSION`).
    pub address: String,
    /// Where other nodes reach it (`host:port`; empty outside a cluster).
    pub peer_address: String,
    /// Whether it is alive.
    pub alive: bool,
    /// Whether it is the cluster's head.
    pub is_head: bool,
    /// Its total resources.
    pub resources: BTreeMap<String, f64>,
    /// Its resources not held by running work (as last reported, about every 100 ms).
    pub available: BTreeMap<String, f64>,
    /// Object store size.
    pub object_store_memory: u64,
}

fn to_map(r: &oxray_common::resources::Resources) -> BTreeMap<String, f64> {
    r.iter().map(|(n, a)| (n.to_owned(), a)).collect()
}

/// The cluster's nodes, dead ones included (a single node outside a cluster: just it).
pub fn nodes() -> Result<Vec<NodeInfo>> {
    let status = current()?.node_status()?;
    if status.cluster.nodes.is_empty() {
        return Ok(vec![NodeInfo {
            id: status.node.to_string(),
            address: status.address.clone(),
            peer_address: String::new(),
            alive: true,
            is_head: true,
            resources: to_map(&status.total),
            available: to_map(&status.available),
            object_store_memory: status.store_capacity,
        }]);
    }
    Ok(status
        .cluster
        .nodes
        .iter()
        .map(|n| NodeInfo {
            id: n.id.to_string(),
            address: n.local_address.clone(),
            peer_address: n.peer_address.clone(),
            alive: n.alive,
            is_head: n.is_head,
            resources: to_map(&n.total),
            available: to_map(&n.load.available),
            object_store_memory: n.load.store_capacity,
        })
        .collect())
}

/// The id of the node this process runs on (a task: the node it was scheduled to).
pub fn node_id() -> Result<String> {
    Ok(current()?.node_id().to_string())
}

fn sum_alive(pick: impl Fn(&NodeInfo) -> &BTreeMap<String, f64>) -> Result<BTreeMap<String, f64>> {
    let mut total = BTreeMap::new();
    for n in nodes()?.iter().filter(|n| n.alive) {
        for (name, amount) in pick(n) {
            *total.entry(name.clone()).or_insert(0.0) += amount;
        }
    }
    Ok(total)
}

/// Total resources of the cluster's live nodes.
pub fn cluster_resources() -> Result<BTreeMap<String, f64>> {
    sum_alive(|n| &n.resources)
}

/// Resources of the live nodes not held by running work (other nodes' figures are their last
/// reports, about every 100 ms).
pub fn available_resources() -> Result<BTreeMap<String, f64>> {
    sum_alive(|n| &n.available)
}
