//! Talking to the owners of borrowed objects: fetching values, registering as a borrower,
//! reserving objects whose refs sit inside other objects, and batching the releases.
//!
//! Every core worker (driver or worker) listens on `unix:@<session>-w<worker id>`, so the owner
//! of any object is reached from the id alone (`owner_of`). One connection per owner, with a
//! reader thread that matches replies to requests.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use oxray_common::frame;
use oxray_common::ids::worker_socket;
use oxray_common::protocol::{FromRaylet, FromWorker, ObjectValue, ToRaylet, ToWorker};
use oxray_common::WorkerId;
use oxray_object_store::{HeapBytes, ObjectId};

use crate::core::CoreWorker;
use crate::error::{Error, Result};
use crate::refs::ObjState;
use crate::value::aligned_copy;

enum Waiter {
    Reply(SyncSender<FromWorker>),
    Fetch(ObjectId),
}

struct OwnerConn {
    writer: Mutex<UnixStream>,
    waiters: Mutex<HashMap<u64, Waiter>>,
}

/// Connections to owners, and releases waiting to be sent.
#[derive(Default)]
pub(crate) struct Owners {
    conns: Mutex<HashMap<WorkerId, Arc<OwnerConn>>>,
    next_req: AtomicU64,
    /// Borrowed refs dropped and reservations released, per owner, sent in batches by the
    /// flusher thread (which shares the queue but not the core worker).
    pending: Arc<ReleaseQueue>,
    /// Started with the first queued release (most actor processes never queue one).
    flusher: std::sync::OnceLock<()>,
}

impl Drop for Owners {
    fn drop(&mut self) {
        self.pending.close();
    }
}

/// How long the first release queued waits for others to join its batch.
const RELEASE_BATCH_WINDOW: Duration = Duration::from_millis(2);

/// Releases queued for one owner.
#[derive(Default, Debug, PartialEq)]
struct Releases {
    borrows: Vec<ObjectId>,
    reservations: Vec<ObjectId>,
}

/// Releases waiting to be sent, and the flusher's sleep: it sleeps while nothing is queued and
/// wakes only when a first release arrives (or the queue closes).
#[derive(Default)]
struct ReleaseQueue {
    state: Mutex<QueuedReleases>,
    /// Signalled when a release is queued while the flusher sleeps, and on close.
    wake: Condvar,
}

#[derive(Default)]
struct QueuedReleases {
    by_owner: HashMap<WorkerId, Releases>,
    /// The flusher waits for a first release: the next one queued must wake it. Only then is
    /// the condvar signalled, so queueing into a batch being gathered costs no system call.
    flusher_asleep: bool,
    /// No more flushing (shutdown, or the core worker is gone).
    closed: bool,
}

impl ReleaseQueue {
    fn push(&self, owner: WorkerId, id: ObjectId, reservation: bool) {
        let mut q = lock(&self.state);
        let entry = q.by_owner.entry(owner).or_default();
        if reservation {
            entry.reservations.push(id);
        } else {
            entry.borrows.push(id);
        }
        if q.flusher_asleep {
            q.flusher_asleep = false;
            drop(q);
            self.wake.notify_one();
        }
    }

    /// Blocks until a release is queued, lets more join it for `window`, and takes them all.
    /// `None` once the queue is closed.
    fn next_batch(&self, window: Duration) -> Option<Vec<(WorkerId, Releases)>> {
        let mut q = lock(&self.state);
        while q.by_owner.is_empty() && !q.closed {
            q.flusher_asleep = true;
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.flusher_asleep = false;
        let deadline = Instant::now() + window;
        loop {
            if q.closed {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            q = self
                .wake
                .wait_timeout(q, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        Some(q.by_owner.drain().collect())
    }

    /// Stops the flusher (it sends nothing more).
    fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }
}

/// Where `owner` listens: computed here for processes of this node, asked of the raylet
/// (which knows the cluster) for others.
fn owner_address(core: &Arc<CoreWorker>, owner: WorkerId) -> Result<String> {
    let index = owner.node_index();
    if index == 0 || index == core.node_index {
        return Ok(format!("unix:@{}", worker_socket(core.session(), owner)));
    }
    match core
        .raylet
        .request(|req| ToRaylet::WorkerAddress { req, worker: owner })?
    {
        FromRaylet::Address { address, .. } => Ok(address),
        FromRaylet::Error { message, .. } => Err(Error::OwnerDied { id: message }),
        _ => Err(owner_died(owner)),
    }
}

fn owner_died(owner: WorkerId) -> Error {
    Error::OwnerDied {
        id: format!("owned by process {owner}"),
    }
}

impl Owners {
    fn conn(&self, core: &Arc<CoreWorker>, owner: WorkerId) -> Result<Arc<OwnerConn>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = conns.get(&owner) {
            return Ok(c.clone());
        }
        let address = owner_address(core, owner)?;
        let stream = core.connect_to(&address).map_err(|_| owner_died(owner))?;
        let reader = stream
            .try_clone()
            .map_err(|e| Error::io("cloning an owner socket", e))?;
        let conn = Arc::new(OwnerConn {
            writer: Mutex::new(stream),
            waiters: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(core);
        let for_reader = conn.clone();
        std::thread::Builder::new()
            .name("oxray-owner-conn".into())
            .spawn(move || reader_loop(reader, for_reader, weak, owner))
            .map_err(|e| Error::io("starting an owner reader", e))?;
        conns.insert(owner, conn.clone());
        Ok(conn)
    }

    fn send(&self, core: &Arc<CoreWorker>, owner: WorkerId, msg: &ToWorker) -> Result<()> {
        let conn = self.conn(core, owner)?;
        let buf = frame::encode(msg).map_err(|e| Error::io("encoding an owner request", e))?;
        let mut w = conn.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&buf).map_err(|_| owner_died(owner))
    }

    fn request(
        &self,
        core: &Arc<CoreWorker>,
        owner: WorkerId,
        make: impl FnOnce(u64) -> ToWorker,
    ) -> Result<FromWorker> {
        let conn = self.conn(core, owner)?;
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
        lock(&conn.waiters).insert(req, Waiter::Reply(tx));
        let sent = self.send(core, owner, &make(req));
        if sent.is_err() {
            lock(&conn.waiters).remove(&req);
            self.forget(owner);
        }
        sent?;
        rx.recv().map_err(|_| owner_died(owner))
    }

    fn forget(&self, owner: WorkerId) {
        lock(&self.conns).remove(&owner);
    }

    /// Asks `owner` for the value of `id`; the reply completes the local entry.
    pub fn fetch(&self, core: &Arc<CoreWorker>, owner: WorkerId, id: ObjectId) {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let sent = self.conn(core, owner).and_then(|conn| {
            lock(&conn.waiters).insert(req, Waiter::Fetch(id));
            self.send(core, owner, &ToWorker::GetObject { req, id })
        });
        if sent.is_err() {
            self.forget(owner);
            core.settle(id, ObjState::Failed(owner_died(owner)));
        }
    }

    /// Asks `owner` to make `id` again (its copy on node `node` was lost) and waits for the
    /// new value, or why not; `Err` when the owner is gone.
    pub fn rebuild(
        &self,
        core: &Arc<CoreWorker>,
        owner: WorkerId,
        id: ObjectId,
        node: u16,
    ) -> Result<ObjectValue> {
        match self.request(core, owner, |req| ToWorker::Rebuild { req, id, node })? {
            FromWorker::Object { value, .. } => Ok(value),
            _ => Err(owner_died(owner)),
        }
    }

    /// Registers this process as a borrower of `ids` with their owner (and waits for the ack).
    pub fn add_borrowers(
        &self,
        core: &Arc<CoreWorker>,
        owner: WorkerId,
        ids: Vec<ObjectId>,
    ) -> Result<()> {
        self.request(core, owner, |req| ToWorker::AddBorrowers { req, ids })
            .map(|_| ())
    }

    /// Reserves `ids` at their owner (an object containing refs to them was made).
    pub fn reserve(
        &self,
        core: &Arc<CoreWorker>,
        owner: WorkerId,
        ids: Vec<ObjectId>,
    ) -> Result<()> {
        self.request(core, owner, |req| ToWorker::Reserve { req, ids })
            .map(|_| ())
    }

    /// Queues a release (dropped borrow or reservation); the flusher sends it within
    /// [`RELEASE_BATCH_WINDOW`], batched with the others queued meanwhile.
    pub fn queue_release(
        &self,
        core: &Arc<CoreWorker>,
        owner: WorkerId,
        id: ObjectId,
        reservation: bool,
    ) {
        self.flusher
            .get_or_init(|| self.start_flusher(Arc::downgrade(core)));
        self.pending.push(owner, id, reservation);
    }

    /// Sends a batch of releases.
    fn send_releases(&self, core: &Arc<CoreWorker>, batches: Vec<(WorkerId, Releases)>) {
        for (owner, r) in batches {
            if !r.borrows.is_empty() {
                let _ = self.send(core, owner, &ToWorker::RemoveBorrowers { ids: r.borrows });
            }
            if !r.reservations.is_empty() {
                let _ = self.send(
                    core,
                    owner,
                    &ToWorker::Unreserve {
                        ids: r.reservations,
                    },
                );
            }
        }
    }

    /// Starts the thread that sends queued releases (with the first one). It sleeps until a
    /// release is queued and never wakes while there is none.
    fn start_flusher(&self, core: Weak<CoreWorker>) {
        let queue = self.pending.clone();
        let _ = std::thread::Builder::new()
            .name("oxray-release-flusher".into())
            .spawn(move || {
                while let Some(batches) = queue.next_batch(RELEASE_BATCH_WINDOW) {
                    let Some(core) = core.upgrade() else { break };
                    if core.is_shutting_down() {
                        break;
                    }
                    core.owners.send_releases(&core, batches);
                }
            });
    }

    /// Stops the flusher (shutdown).
    pub fn stop_flusher(&self) {
        self.pending.close();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn reader_loop(stream: UnixStream, conn: Arc<OwnerConn>, core: Weak<CoreWorker>, owner: WorkerId) {
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut buf = HeapBytes::new();
    while let Ok(msg) = frame::read::<FromWorker, _>(&mut reader, &mut buf) {
        let req = match &msg {
            FromWorker::Object { req, .. } | FromWorker::Ack { req } => *req,
            FromWorker::Done { .. } | FromWorker::Item { .. } => continue,
        };
        let waiter = lock(&conn.waiters).remove(&req);
        match (waiter, msg) {
            (Some(Waiter::Reply(tx)), msg) => {
                let _ = tx.send(msg);
            }
            (Some(Waiter::Fetch(id)), FromWorker::Object { value, .. }) => {
                let Some(core) = core.upgrade() else { return };
                let state = match value {
                    ObjectValue::Inline { fingerprint, bytes } => ObjState::Inline {
                        fingerprint,
                        bytes: Arc::new(aligned_copy(&bytes)),
                    },
                    ObjectValue::Stored { node } => ObjState::Stored { node },
                    ObjectValue::Failed { message } => ObjState::Failed(Error::TaskFailed {
                        message,
                        function: String::new(),
                        pid: 0,
                    }),
                    ObjectValue::Unknown => ObjState::Failed(Error::ObjectLost {
                        id: id.to_string(),
                        message: "its owner no longer holds it".into(),
                    }),
                };
                core.settle(id, state);
            }
            _ => {}
        }
    }
    // The owner is gone: fail whatever waited on it.
    let waiters: Vec<Waiter> = lock(&conn.waiters).drain().map(|(_, w)| w).collect();
    if let Some(core) = core.upgrade() {
        core.owners.forget(owner);
        for w in waiters {
            if let Waiter::Fetch(id) = w {
                core.settle(id, ObjState::Failed(owner_died(owner)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use oxray_common::ids::object_id;

    use super::*;

    const A: WorkerId = WorkerId(7);
    const B: WorkerId = WorkerId(8);

    fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn sorted(mut batch: Vec<(WorkerId, Releases)>) -> Vec<(WorkerId, Releases)> {
        batch.sort_by_key(|(w, _)| w.0);
        batch
    }

    #[test]
    fn releases_queued_together_leave_in_one_batch_per_owner() {
        let q = ReleaseQueue::default();
        let (x, y, z) = (object_id(A, 1), object_id(A, 2), object_id(B, 1));
        q.push(A, x, false);
        q.push(B, z, true);
        q.push(A, y, true);
        let batch = q.next_batch(Duration::ZERO).map(sorted);
        let expected = vec![
            (
                A,
                Releases {
                    borrows: vec![x],
                    reservations: vec![y],
                },
            ),
            (
                B,
                Releases {
                    borrows: vec![],
                    reservations: vec![z],
                },
            ),
        ];
        assert_eq!(batch, Some(expected));
        assert!(lock(&q.state).by_owner.is_empty());
    }

    #[test]
    fn the_flusher_sleeps_until_a_release_and_lets_others_join_it() {
        let q = Arc::new(ReleaseQueue::default());
        let window = Duration::from_millis(100);
        let flusher = {
            let q = q.clone();
            std::thread::spawn(move || {
                let batch = q.next_batch(window);
                (batch, Instant::now())
            })
        };
        until("the flusher sleeps", || lock(&q.state).flusher_asleep);
        let first = Instant::now();
        q.push(A, object_id(A, 1), false);
        assert!(!lock(&q.state).flusher_asleep, "the first release wakes it");
        q.push(A, object_id(A, 2), false);
        until("the batch leaves", || flusher.is_finished());
        let (batch, sent) = flusher.join().expect("flusher");
        let batch = batch.expect("a batch");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].1.borrows, vec![object_id(A, 1), object_id(A, 2)]);
        assert!(sent - first >= window, "sent after the batching window");
    }

    #[test]
    fn closing_stops_the_flusher() {
        let q = Arc::new(ReleaseQueue::default());
        let flusher = {
            let q = q.clone();
            std::thread::spawn(move || q.next_batch(RELEASE_BATCH_WINDOW))
        };
        until("the flusher sleeps", || lock(&q.state).flusher_asleep);
        q.close();
        until("the flusher stops", || flusher.is_finished());
        assert_eq!(flusher.join().ok(), Some(None));
        // A closed queue sends nothing more, even with releases queued.
        q.push(B, object_id(B, 1), false);
        assert_eq!(q.next_batch(Duration::ZERO), None);
    }
}
