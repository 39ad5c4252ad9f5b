//! Worker processes: starting them, forwarding their output, noticing their exit, killing them.
//!
//! A worker is the driver's own executable started with `OXRAY_WORKER_*` variables set; the
//! core-worker's start-up hook sees them and runs the worker loop instead of `main`. Its stdout
//! and stderr are piped here and forwarded line by line, prefixed with its pid, to the driver of
//! its job (or to the raylet's own stderr when that driver is gone).
//!
//! Processes are started on one spawner thread (forking never happens under a lock or on a
//! connection's thread), and each has a reaper thread blocked in `waitid` until it exits, which
//! then tells the node state. Kills go by pid only while the child is known not to be reaped,
//! so a recycled pid is never signalled.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use oxray_common::protocol::FromRaylet;
use oxray_common::{frame, WorkerId};

use crate::node::Node;
use crate::outbox::Outbox;

/// Environment variable naming the worker's id; its presence puts a process in worker mode.
pub const ENV_WORKER_ID: &str = "OXRAY_WORKER_ID";
/// Environment variable with the raylet's address.
pub const ENV_RAYLET: &str = "OXRAY_RAYLET_ADDRESS";
/// Environment variable the CLI reads the cluster secret from; never passed to a worker.
pub const ENV_CLUSTER_SECRET: &str = "OXRAY_CLUSTER_SECRET";

/// A worker to start.
pub(crate) struct SpawnRequest {
    pub worker: WorkerId,
    pub exe: String,
    /// Where its output goes (its job's driver), if anywhere.
    pub driver: Option<Arc<Outbox>>,
}

/// The node's worker processes.
pub(crate) struct Processes {
    live: Mutex<Live>,
    /// Signalled when a child is reaped.
    reaped: Condvar,
    spawner: Mutex<Option<mpsc::Sender<SpawnRequest>>>,
}

#[derive(Default)]
struct Live {
    /// Children not reaped yet, by worker: their pids may be signalled.
    pids: HashMap<WorkerId, u32>,
    /// The node is stopping: nothing more starts, and a child started meanwhile is killed.
    stopped: bool,
}

impl Processes {
    /// Starts the spawner thread; outcomes go to `node`.
    pub(crate) fn start(node: Weak<Node>) -> std::io::Result<Arc<Processes>> {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let procs = Arc::new(Processes {
            live: Mutex::new(Live::default()),
            reaped: Condvar::new(),
            spawner: Mutex::new(Some(tx)),
        });
        let me = Arc::downgrade(&procs);
        std::thread::Builder::new()
            .name("oxray-raylet-spawn".into())
            .spawn(move || {
                for req in rx {
                    let (Some(node), Some(procs)) = (node.upgrade(), me.upgrade()) else {
                        return;
                    };
                    procs.spawn(&node, req);
                }
            })?;
        Ok(procs)
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the spawner thread to start a worker.
    pub(crate) fn request(&self, req: SpawnRequest) -> bool {
        let spawner = self.spawner.lock().unwrap_or_else(|p| p.into_inner());
        spawner.as_ref().is_some_and(|tx| tx.send(req).is_ok())
    }

    fn spawn(self: &Arc<Self>, node: &Node, req: SpawnRequest) {
        let worker = req.worker;
        if self.live().stopped {
            node.worker_start_failed(worker, "the raylet is stopping");
            return;
        }
        let child = match start_process(node, &req) {
            Ok(child) => child,
            Err(e) => {
                node.worker_start_failed(worker, &format!("starting {}: {e}", req.exe));
                return;
            }
        };
        let pid = child.id();
        let stopped = {
            let mut live = self.live();
            live.pids.insert(worker, pid);
            live.stopped
        };
        let me = Arc::downgrade(self);
        let weak = node.weak();
        let spawned = std::thread::Builder::new()
            .name(format!("oxray-reap-{pid}"))
            .spawn(move || reap(me, weak, worker, child));
        if let Err(e) = spawned {
            // Nothing would notice its exit: end it now rather than leave it unwatched.
            eprintln!("[raylet] cannot watch worker {pid}: {e}; killing it");
            self.live().pids.remove(&worker);
            kill_pid(pid);
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: waitpid on our own child (killed just now); a null status is allowed.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            }
            node.worker_start_failed(worker, &format!("cannot watch its process: {e}"));
            return;
        }
        // Killed or stopped while it was being started: it must not run on.
        if !node.worker_started(worker, pid) || stopped {
            self.kill(worker);
        }
    }

    /// Kills a worker's process, if it was not reaped yet.
    pub(crate) fn kill(&self, worker: WorkerId) {
        let live = self.live();
        if let Some(&pid) = live.pids.get(&worker) {
            // Still in the table: not reaped, so `pid` is still this child's (the reaper takes
            // this lock to remove it before reaping).
            kill_pid(pid);
        }
    }

    /// Kills every worker and waits (up to `timeout`) until all are reaped; no more start.
    pub(crate) fn kill_all(&self, timeout: Duration) {
        self.spawner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let deadline = Instant::now() + timeout;
        let mut live = self.live();
        live.stopped = true;
        for &pid in live.pids.values() {
            kill_pid(pid);
        }
        while !live.pids.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            live = self
                .reaped
                .wait_timeout(live, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// SIGKILLs `pid`: only for a child of ours known not to be reaped yet.
fn kill_pid(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; callers pass an unreaped child's pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Waits for `child` to exit, takes it out of the live table, reaps it and tells the node.
fn reap(procs: Weak<Processes>, node: Weak<Node>, worker: WorkerId, mut child: Child) {
    let pid = child.id();
    wait_exit(pid);
    if let Some(procs) = procs.upgrade() {
        procs.live().pids.remove(&worker);
        procs.reaped.notify_all();
    }
    let status = match child.wait() {
        Ok(s) => s.to_string(),
        Err(e) => format!("an unknown status ({e})"),
    };
    if let Some(node) = node.upgrade() {
        node.worker_exited(worker, &status);
    }
}

/// Blocks until process `pid` (our child) has exited, without reaping it.
fn wait_exit(pid: u32) {
    let id: libc::id_t = pid;
    loop {
        // SAFETY: `info` is a valid, zeroed siginfo_t for waitid to fill; WNOWAIT leaves the
        // child waitable, so its pid stays ours until `Child::wait` reaps it.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

fn start_process(node: &Node, req: &SpawnRequest) -> std::io::Result<Child> {
    let mut child = Command::new(&req.exe)
        .env(ENV_WORKER_ID, req.worker.0.to_string())
        .env(ENV_RAYLET, &node.address)
        .env_remove("OXRAY_ADDRESS")
        // The cluster secret stays in the raylet: tasks run user code.
        .env_remove(ENV_CLUSTER_SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    if let Some(out) = child.stdout.take() {
        forward(out, pid, 1, req.driver.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward(err, pid, 2, req.driver.clone());
    }
    Ok(child)
}

fn forward(stream: impl Read + Send + 'static, pid: u32, which: u8, driver: Option<Arc<Outbox>>) {
    let spawned = std::thread::Builder::new()
        .name(format!("oxray-out-{pid}"))
        .spawn(move || {
            let reader = BufReader::new(stream);
            let mut driver = driver;
            for line in reader.lines() {
                let Ok(line) = line else { break };
                let msg = FromRaylet::WorkerOutput {
                    pid,
                    stream: which,
                    line,
                };
                let delivered = driver
                    .as_ref()
                    .is_some_and(|d| frame::encode(&msg).is_ok_and(|buf| d.push_wait(buf)));
                if !delivered {
                    // The driver is gone: its workers' output goes to the raylet's stderr.
                    driver = None;
                    if let FromRaylet::WorkerOutput { line, .. } = msg {
                        eprintln!("(pid={pid}) {line}");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("[raylet] cannot forward output of worker {pid}: {e}");
    }
}
