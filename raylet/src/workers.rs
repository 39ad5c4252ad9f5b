//! Worker processes: starting them, forwarding their output, noticing their exit, killing them.
//!
//! A worker is the driver's own executable started with `OXRAY_WORKER_*` variables set; the
//! core-worker's start-up hook sees them and runs the worker loop instead of `main`. Its stdout
//! and stderr are piped here and forwarded line by line, prefixed with its pid, to the driver of
//! its job (or to the raylet's own stderr when that driver is gone).
//!
//! Processes are started on one spawner thread (forking never happens under a lock or on the
//! event loop). Their output pipes and their exits (a pidfd each) are sources on the node's
//! event loop, so a worker costs the raylet no thread of its own; an exit is reaped there and
//! told to the node state. Kills go by pid only while the child is known not to be reaped,
//! so a recycled pid is never signalled.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use oxray_common::event_loop::{Next, Source};
use oxray_common::protocol::FromRaylet;
use oxray_common::{frame, WorkerId};

use crate::node::Node;
use crate::outbox::{Outbox, STALL_LIMIT};

/// Environment variable naming the worker's id; its presence puts a process in worker mode.
pub const ENV_WORKER_ID: &str = "OXRAY_WORKER_ID";
/// Environment variable with the raylet's address.
pub const ENV_RAYLET: &str = "OXRAY_RAYLET_ADDRESS";
/// Environment variable with the address a worker of a cluster node takes direct connections
/// from other nodes on (the node's advertised IP); unset on a single node.
pub const ENV_DIRECT_HOST: &str = "OXRAY_DIRECT_HOST";
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
        if let Err(e) = watch_exit(self, node, worker, child) {
            // Nothing would notice its exit: end it now rather than leave it unwatched.
            tracing::warn!("cannot watch worker {pid}: {e}; killing it");
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

/// Has the node's event loop notice `child`'s exit through a pidfd (a thread blocked in
/// `waitid` per child where pidfds are missing, before Linux 5.3).
fn watch_exit(
    procs: &Arc<Processes>,
    node: &Node,
    worker: WorkerId,
    child: Child,
) -> std::io::Result<()> {
    let (me, weak) = (Arc::downgrade(procs), node.weak());
    let pid = child.id();
    match pidfd_open(pid) {
        Ok(pidfd) => {
            let exit = Exit {
                pidfd,
                procs: me,
                node: weak,
                worker,
                child: Some(child),
            };
            node.events().add(Box::new(exit)).map_err(|exit| {
                // Stopping: the child was killed or is about to be; reap it here.
                exit.removed();
                std::io::Error::other("the raylet is stopping")
            })
        }
        Err(_) => std::thread::Builder::new()
            .name(format!("oxray-reap-{pid}"))
            .spawn(move || {
                wait_exit(pid);
                reaped(&me, &weak, worker, child);
            })
            .map(|_| ()),
    }
}

/// A child's exit as an event-loop source: its pidfd becomes readable when it exits.
struct Exit {
    pidfd: OwnedFd,
    procs: Weak<Processes>,
    node: Weak<Node>,
    worker: WorkerId,
    child: Option<Child>,
}

impl Source for Exit {
    fn fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }

    fn ready(&mut self, _ended: bool) -> Next {
        let Some(child) = &self.child else {
            return Next::Remove;
        };
        // SAFETY: `info` is a valid, zeroed siginfo_t for waitid to fill; WNOWAIT leaves the
        // child waitable (its pid stays ours until `Child::wait`), WNOHANG makes this a check.
        let exited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(
                libc::P_PID,
                child.id(),
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            );
            rc != 0 || info.si_pid() != 0
        };
        if !exited {
            return Next::Keep;
        }
        if let Some(child) = self.child.take() {
            reaped(&self.procs, &self.node, self.worker, child);
        }
        Next::Remove
    }

    fn removed(mut self: Box<Self>) {
        // Removed before its exit was seen (the loop stopped): reap it anyway, once killed.
        if let Some(mut child) = self.child.take() {
            if self.procs.upgrade().is_some_and(|p| p.live().stopped) {
                let _ = child.kill();
            }
            std::thread::spawn(move || {
                wait_exit(child.id());
                reaped(&self.procs, &self.node, self.worker, child);
            });
        }
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when process `pid` exits.
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether process `pid` (any process of ours, not only a child) exits within `limit`; one
/// already gone counts as exited.
pub(crate) fn exits_within(pid: u32, limit: std::time::Duration) -> bool {
    let Ok(fd) = pidfd_open(pid) else {
        return true;
    };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(limit.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: one valid pollfd on a descriptor we own for the whole call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return n == 1;
        }
    }
}

/// `child` exited: it leaves the live table, is reaped, and the node is told.
fn reaped(procs: &Weak<Processes>, node: &Weak<Node>, worker: WorkerId, mut child: Child) {
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
    let mut command = Command::new(&req.exe);
    command
        .env(ENV_WORKER_ID, req.worker.0.to_string())
        .env(ENV_RAYLET, &node.address)
        .env_remove("OXRAY_ADDRESS")
        .env_remove(ENV_DIRECT_HOST)
        // The cluster secret stays in the raylet: tasks run user code.
        .env_remove(ENV_CLUSTER_SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(host) = node.link().map(|l| l.advertised_host()) {
        command.env(ENV_DIRECT_HOST, host);
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    // In a cluster, the driver shows which node a line came from (its session name).
    let node_name = if node.index() != 0 {
        node.config.session.clone()
    } else {
        String::new()
    };
    let log = node.worker_logs.get().and_then(|dir| {
        let path = dir.join(format!("worker-{pid}.log"));
        // A pid used again replaces the older worker's file.
        crate::files::open_private(&path, 0o600, false)
            .map_err(|e| tracing::warn!("cannot keep the output of worker {pid}: {e}"))
            .ok()
    });
    let outputs = [
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    ];
    for (which, fd) in (1..).zip(outputs) {
        let Some(fd) = fd else { continue };
        if let Err(e) = set_nonblocking(&fd) {
            tracing::warn!("cannot forward output of worker {pid}: {e}");
            continue;
        }
        let pipe = Output {
            pipe: std::fs::File::from(fd),
            pid,
            node: node_name.clone(),
            // Both pipes share one open file (and so its offset): their writes never overlap.
            log: log.as_ref().and_then(|f| f.try_clone().ok()),
            kept: 0,
            which,
            driver: req.driver.clone(),
            line: Vec::new(),
            stalled_since: None,
        };
        // Refused only while the node stops; the pipe closes and the worker's writes fail.
        let _ = node.events().add(Box::new(pipe));
    }
    Ok(child)
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no memory is passed.
    let rc = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes of each worker stream kept in its output file (all of it still reaches the driver).
const MAX_WORKER_LOG: u64 = 64 << 20;
/// The longest line forwarded whole; a longer one is cut into pieces of this size.
const MAX_LINE: usize = 1 << 20;
/// How soon a pipe is read again while its driver has much unread output.
const BACKLOG_RETRY: Duration = Duration::from_millis(20);

/// A worker's stdout or stderr as an event-loop source: each line goes to its job's driver,
/// prefixed by the driver with the worker's pid. While the driver has more than a few MiB
/// unread, the pipe is left unread (up to the outbox's stall limit), so the worker blocks on
/// its own writes instead of the raylet queueing without bound.
struct Output {
    pipe: std::fs::File,
    pid: u32,
    /// The node's session name when it is in a cluster.
    node: String,
    /// The worker's output file (`oxray logs --worker PID`), standalone nodes only.
    log: Option<std::fs::File>,
    /// Bytes this pipe wrote to `log`.
    kept: u64,
    which: u8,
    driver: Option<Arc<Outbox>>,
    line: Vec<u8>,
    stalled_since: Option<Instant>,
}

impl Output {
    fn emit(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = String::from_utf8_lossy(line).into_owned();
        let msg = FromRaylet::WorkerOutput {
            pid: self.pid,
            node: self.node.clone(),
            stream: self.which,
            line,
        };
        let delivered = self
            .driver
            .as_ref()
            .is_some_and(|d| frame::encode(&msg).is_ok_and(|buf| d.push(buf)));
        if !delivered {
            // The driver is gone: its workers' output goes to the raylet's stderr.
            self.driver = None;
            if let FromRaylet::WorkerOutput { line, .. } = msg {
                eprintln!("(pid={}) {line}", self.pid);
            }
        }
    }

    /// Forwards the complete lines in `self.line`, keeping the unfinished rest.
    fn emit_lines(&mut self) {
        let mut start = 0;
        while let Some(n) = self.line[start..].iter().position(|b| *b == b'\n') {
            let line = self.line[start..start + n].to_vec();
            self.emit(&line);
            start += n + 1;
        }
        self.line.drain(..start);
        while self.line.len() >= MAX_LINE {
            let piece: Vec<u8> = self.line.drain(..MAX_LINE).collect();
            self.emit(&piece);
        }
    }

    /// Appends what the worker wrote to its output file, up to [`MAX_WORKER_LOG`] per pipe.
    fn keep(&mut self, bytes: &[u8]) {
        let Some(file) = &mut self.log else { return };
        let room = MAX_WORKER_LOG.saturating_sub(self.kept) as usize;
        let kept = &bytes[..bytes.len().min(room)];
        let mut written = file.write_all(kept);
        self.kept += kept.len() as u64;
        if kept.len() < bytes.len() {
            written = written.and_then(|()| {
                writeln!(
                    file,
                    "\n[oxray: more output of this worker went to its driver only: \
                     {MAX_WORKER_LOG} bytes per stream are kept here]"
                )
            });
            self.log = None;
        }
        if written.is_err() {
            self.log = None;
        }
    }

    /// Whether to leave the pipe unread for now (the driver reads slowly).
    fn held_back(&mut self) -> bool {
        if !self.driver.as_ref().is_some_and(|d| d.backlogged()) {
            self.stalled_since = None;
            return false;
        }
        let since = *self.stalled_since.get_or_insert_with(Instant::now);
        since.elapsed() < STALL_LIMIT
    }
}

impl Source for Output {
    fn fd(&self) -> RawFd {
        self.pipe.as_raw_fd()
    }

    fn ready(&mut self, _ended: bool) -> Next {
        let mut buf = [0u8; 16 << 10];
        loop {
            if self.held_back() {
                return Next::WakeAt(Instant::now() + BACKLOG_RETRY);
            }
            match self.pipe.read(&mut buf) {
                Ok(0) => {
                    if !self.line.is_empty() {
                        let rest = std::mem::take(&mut self.line);
                        self.emit(&rest);
                    }
                    return Next::Remove;
                }
                Ok(n) => {
                    self.keep(&buf[..n]);
                    self.line.extend_from_slice(&buf[..n]);
                    self.emit_lines();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Remove,
            }
        }
    }
}
