//! The connection from a core-worker to its node's raylet.
//!
//! Requests carry a number; a reader thread matches replies to waiting callers, hands lease
//! replies to the submitter, and prints worker output lines forwarded by the raylet.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, Weak};

use oxray_common::frame::{self, FrameError};
use oxray_common::protocol::{ClientKind, FromRaylet, ToRaylet};
use oxray_object_store::HeapBytes;

use crate::core::CoreWorker;
use crate::error::{Error, Result};
use crate::submitter::SchedulingKey;

enum Waiter {
    Reply(SyncSender<FromRaylet>),
    Lease(SchedulingKey),
}

/// The raylet connection.
pub(crate) struct RayletClient {
    writer: Mutex<UnixStream>,
    next_req: AtomicU64,
    waiters: Mutex<HashMap<u64, Waiter>>,
    closed: AtomicBool,
}

impl RayletClient {
    pub fn new(stream: UnixStream) -> RayletClient {
        RayletClient {
            writer: Mutex::new(stream),
            next_req: AtomicU64::new(1),
            waiters: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Sends without waiting for a reply.
    pub fn send(&self, msg: &ToRaylet) -> Result<()> {
        let buf = frame::encode(msg).map_err(|e| Error::io("encoding a raylet message", e))?;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&buf).map_err(|e| Error::RayletDied {
            message: e.to_string(),
        })
    }

    fn next(&self) -> u64 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a request; its reply comes on the returned channel (with its request number).
    fn send_request(
        &self,
        make: impl FnOnce(u64) -> ToRaylet,
    ) -> Result<(u64, std::sync::mpsc::Receiver<FromRaylet>)> {
        let req = self.next();
        let (tx, rx) = sync_channel(1);
        self.lock_waiters().insert(req, Waiter::Reply(tx));
        if self.closed.load(Ordering::SeqCst) {
            self.lock_waiters().remove(&req);
            return Err(self.died());
        }
        if let Err(e) = self.send(&make(req)) {
            self.lock_waiters().remove(&req);
            return Err(e);
        }
        Ok((req, rx))
    }

    /// Sends a request and waits for its reply.
    pub fn request(&self, make: impl FnOnce(u64) -> ToRaylet) -> Result<FromRaylet> {
        let (_, rx) = self.send_request(make)?;
        rx.recv().map_err(|_| self.died())
    }

    /// Sends a request and waits up to `timeout` for its reply (`None`: none came in time; a
    /// late one is dropped).
    pub fn request_timeout(
        &self,
        make: impl FnOnce(u64) -> ToRaylet,
        timeout: std::time::Duration,
    ) -> Result<Option<FromRaylet>> {
        let (req, rx) = self.send_request(make)?;
        match rx.recv_timeout(timeout) {
            Ok(reply) => Ok(Some(reply)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.lock_waiters().remove(&req);
                Ok(None)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(self.died()),
        }
    }

    /// Asks for a lease; the grant goes to the submitter.
    pub fn request_lease(&self, key: SchedulingKey) -> Result<()> {
        let req = self.next();
        let msg = ToRaylet::RequestLease {
            req,
            resources: key.resources.clone(),
            near: key.near,
            strategy: key.strategy,
        };
        self.lock_waiters().insert(req, Waiter::Lease(key));
        let r = self.send(&msg);
        if r.is_err() {
            self.lock_waiters().remove(&req);
        }
        r
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn died(&self) -> Error {
        Error::RayletDied {
            message: "the node's raylet closed the connection (it stopped or crashed)".into(),
        }
    }

    /// Closes the connection (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.shutdown(std::net::Shutdown::Both);
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Reads the raylet's messages until the connection closes.
pub(crate) fn reader_loop(stream: UnixStream, core: Weak<CoreWorker>, kind: ClientKind) {
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut buf = HeapBytes::new();
    loop {
        let msg = match frame::read::<FromRaylet, _>(&mut reader, &mut buf) {
            Ok(m) => m,
            Err(FrameError::Closed) => break,
            Err(e) => {
                eprintln!("oxray: bad message from the raylet: {e}");
                break;
            }
        };
        let Some(core) = core.upgrade() else { break };
        dispatch(&core, msg);
    }
    if kind == ClientKind::Worker {
        // A worker lives only as long as its raylet.
        std::process::exit(0);
    }
    if let Some(core) = core.upgrade() {
        core.raylet.closed.store(true, Ordering::SeqCst);
        // Dropping the senders wakes every waiting request with an error.
        core.raylet.lock_waiters().clear();
        if !core.is_shutting_down() {
            core.on_raylet_lost();
        }
    }
}

/// Prints a warning of the raylet for the user, naming the task a lease request was for.
fn warn(core: &CoreWorker, req: u64, message: &str) {
    let key = match core.raylet.lock_waiters().get(&req) {
        Some(Waiter::Lease(key)) if req != 0 => Some(key.clone()),
        _ => None,
    };
    let task = key.and_then(|k| core.submitter.queued_function(&k));
    match task {
        Some(f) => eprintln!("oxray: warning: task {f} {message}"),
        None if req != 0 => eprintln!("oxray: warning: a task {message}"),
        None => eprintln!("oxray: warning: {message}"),
    }
}

fn dispatch(core: &Arc<CoreWorker>, msg: FromRaylet) {
    let req = match &msg {
        FromRaylet::LeaseGranted { req, .. }
        | FromRaylet::ActorCreated { req }
        | FromRaylet::Actor { req, .. }
        | FromRaylet::Created { req, .. }
        | FromRaylet::CreatedInFile { req, .. }
        | FromRaylet::PinnedInFile { req, .. }
        | FromRaylet::Sealed { req }
        | FromRaylet::Pinned { req, .. }
        | FromRaylet::Error { req, .. }
        | FromRaylet::Status { req, .. }
        | FromRaylet::Memory { req, .. }
        | FromRaylet::Timeline { req, .. }
        | FromRaylet::Address { req, .. }
        | FromRaylet::PlacementGroups { req, .. } => *req,
        FromRaylet::TunnelOpen => return,
        FromRaylet::WorkerOutput {
            pid,
            node,
            stream,
            line,
        } => {
            let from = if node.is_empty() {
                format!("pid={pid}")
            } else {
                format!("pid={pid}, node={node}")
            };
            if *stream == 2 {
                eprintln!("({from}) {line}");
            } else {
                println!("({from}) {line}");
            }
            return;
        }
        FromRaylet::Registered { .. } => return,
        FromRaylet::Warning { req, message } => {
            warn(core, *req, message);
            return;
        }
        FromRaylet::StartActor { spec, restarts } => {
            crate::actor_host::start(core.clone(), spec.clone(), *restarts);
            return;
        }
    };
    let waiter = core.raylet.lock_waiters().remove(&req);
    match waiter {
        Some(Waiter::Reply(tx)) => {
            let _ = tx.send(msg);
        }
        Some(Waiter::Lease(key)) => core.submitter.on_lease_reply(core, key, msg),
        None => {}
    }
}
