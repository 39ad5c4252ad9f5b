//! Spilling: primary copies go to disk when the store is full, and come back when read.
//!
//! Ray's model. A create that does not fit is not refused while there are sealed, unpinned
//! primary copies (objects their owner still refers to, read by nobody right now): the request
//! waits, those objects are written to files in the node's spill directory and freed from the
//! arena, and the create is tried again. A pin of a spilled object (a `get`, a view, a task's
//! argument, a pull from another node) waits while the object is read back into the store. A
//! spilled object whose owner frees it loses its file at once.
//!
//! The disk work runs on one thread of its own (`oxray-spill`), never on the node's event loop:
//! waiting requests are queued here and answered from that thread through the clients'
//! outboxes. Each object is one file written sequentially in one pass (large objects dominate,
//! so the batch is the object; small objects stay inline in their owners and never reach the
//! store).
//!
//! Consistency with readers: a spilled object is entered in the spilled table *before* it is
//! freed from the arena, and freed only if nobody pinned it meanwhile, so a pin that misses the
//! arena finds it here; a delete that arrives during a restore is remembered and applied once
//! the restore ends.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, Weak};

use oxray_common::ids::owner_of;
use oxray_common::protocol::{ErrorKind, FromRaylet};
use oxray_common::{ObjectId, WorkerId};
use oxray_object_store::{ClientId, CreateOptions, StoreError, HEADER_SIZE};

use crate::node::Node;

/// Bytes spilled at least per round when a create does not fit (fewer, larger rounds).
const MIN_SPILL: u64 = 64 << 20;
/// Rounds of spill-then-retry one create may take before it is refused (the arena may be too
/// fragmented, or readers keep pinning what would be spilled).
const MAX_ROUNDS: usize = 16;

/// A spilled object.
#[derive(Debug, Clone)]
struct Spilled {
    path: PathBuf,
    len: u64,
    fingerprint: u64,
}

/// Who waits for a restore.
enum Waiter {
    /// A client's `Pin` request.
    Client { conn: u64, req: u64 },
    /// A thread of the raylet (a pull from another node being served).
    Thread(mpsc::Sender<bool>),
}

enum Job {
    Create {
        conn: u64,
        req: u64,
        id: ObjectId,
        len: u64,
        fingerprint: u64,
    },
    Restore(ObjectId),
}

#[derive(Default)]
struct State {
    spilled: HashMap<ObjectId, Spilled>,
    restoring: HashMap<ObjectId, Vec<Waiter>>,
    /// Deleted while being restored: deleted again once the restore ends.
    deleted_while_restoring: HashSet<ObjectId>,
    jobs: VecDeque<Job>,
    stopped: bool,
    /// The node's own directory inside the spill directory, once made.
    dir: Option<PathBuf>,
    spilled_bytes: u64,
    spilled_total: u64,
    restored_total: u64,
}

/// Where a node's spill directory is made.
#[derive(Debug, Clone)]
pub(crate) enum SpillBase {
    /// In the node's session directory (the default).
    Session,
    /// In this directory (`spill_dir`).
    Dir(PathBuf),
}

/// The node's spiller (see the module docs).
pub(crate) struct Spiller {
    /// Where the node's spill directory is made; `None`: spilling is off.
    base: Option<SpillBase>,
    session: String,
    state: Mutex<State>,
    work: Condvar,
}

impl Spiller {
    /// A spiller writing under `base` (`None`: off), for the node of `session`.
    pub(crate) fn new(base: Option<SpillBase>, session: &str) -> Spiller {
        Spiller {
            base,
            session: session.to_owned(),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
        }
    }

    /// Starts the spill thread, serving `node`.
    pub(crate) fn start(self: &Arc<Self>, node: Weak<Node>) -> std::io::Result<()> {
        if self.base.is_none() {
            return Ok(());
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("oxray-spill".into())
            .spawn(move || me.run(&node))
            .map(|_| ())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether spilling is on.
    pub(crate) fn enabled(&self) -> bool {
        self.base.is_some()
    }

    /// Queues a create that did not fit; it is answered from the spill thread.
    pub(crate) fn queue_create(
        &self,
        conn: u64,
        req: u64,
        id: ObjectId,
        len: u64,
        fingerprint: u64,
    ) {
        let mut st = self.lock();
        st.jobs.push_back(Job::Create {
            conn,
            req,
            id,
            len,
            fingerprint,
        });
        self.work.notify_one();
    }

    /// If `id` is spilled here, queues a restore answered to the client's pin request (or joins
    /// one under way) and returns true.
    pub(crate) fn restore_for(&self, id: ObjectId, conn: u64, req: u64) -> bool {
        self.restore(id, Waiter::Client { conn, req })
    }

    /// If `id` is spilled here, restores it and waits for that (from a thread that may block);
    /// true once it is back in the store.
    pub(crate) fn restore_and_wait(&self, id: ObjectId) -> bool {
        let (tx, rx) = mpsc::channel();
        if !self.restore(id, Waiter::Thread(tx)) {
            return false;
        }
        rx.recv().unwrap_or(false)
    }

    fn restore(&self, id: ObjectId, waiter: Waiter) -> bool {
        let mut st = self.lock();
        if !st.spilled.contains_key(&id) {
            return false;
        }
        let first = !st.restoring.contains_key(&id);
        st.restoring.entry(id).or_default().push(waiter);
        if first {
            st.jobs.push_back(Job::Restore(id));
            self.work.notify_one();
        }
        true
    }

    /// The owner freed `id`: its file goes (now, or when a restore under way ends).
    pub(crate) fn forget(&self, id: ObjectId) {
        let mut st = self.lock();
        if st.restoring.contains_key(&id) {
            st.deleted_while_restoring.insert(id);
            return;
        }
        if let Some(s) = st.spilled.remove(&id) {
            st.spilled_bytes -= s.len;
            drop(st);
            let _ = std::fs::remove_file(&s.path);
        }
    }

    /// Every spilled object with its size.
    pub(crate) fn listed(&self) -> Vec<(ObjectId, u64)> {
        self.lock()
            .spilled
            .iter()
            .map(|(id, s)| (*id, s.len))
            .collect()
    }

    /// The spilled objects `owner` owns.
    pub(crate) fn owned_by(&self, owner: WorkerId) -> Vec<ObjectId> {
        self.lock()
            .spilled
            .keys()
            .filter(|id| owner_of(**id) == owner)
            .copied()
            .collect()
    }

    /// `(objects spilled now, their bytes, bytes spilled ever, bytes restored ever, dir)`.
    pub(crate) fn stats(&self) -> (u64, u64, u64, u64, String) {
        let st = self.lock();
        let dir = match (&st.dir, &self.base) {
            (Some(d), _) => d.display().to_string(),
            (None, Some(SpillBase::Dir(b))) => b.display().to_string(),
            (None, Some(SpillBase::Session)) => "(the session directory, on first spill)".into(),
            (None, None) => String::new(),
        };
        (
            st.spilled.len() as u64,
            st.spilled_bytes,
            st.spilled_total,
            st.restored_total,
            dir,
        )
    }

    /// Stops the thread and removes every spill file (the node stops).
    pub(crate) fn stop(&self) {
        let dir = {
            let mut st = self.lock();
            st.stopped = true;
            st.spilled.clear();
            st.spilled_bytes = 0;
            self.work.notify_all();
            st.dir.take()
        };
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn run(&self, node: &Weak<Node>) {
        loop {
            let job = {
                let mut st = self.lock();
                loop {
                    if st.stopped {
                        return;
                    }
                    if let Some(job) = st.jobs.pop_front() {
                        break job;
                    }
                    st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            let Some(node) = node.upgrade() else { return };
            match job {
                Job::Create {
                    conn,
                    req,
                    id,
                    len,
                    fingerprint,
                } => self.create(&node, conn, req, id, len, fingerprint),
                Job::Restore(id) => self.restore_now(&node, id),
            }
        }
    }

    /// Tries a queued create again, spilling until it fits (or nothing more can go).
    fn create(&self, node: &Node, conn: u64, req: u64, id: ObjectId, len: u64, fingerprint: u64) {
        let opts = CreateOptions {
            fingerprint,
            evictable: false,
        };
        let mut last = None;
        for _ in 0..MAX_ROUNDS {
            if !node.has_client(conn) {
                return; // it went away while waiting: nothing to create for it
            }
            match node.store.create_for(ClientId(conn), id, len, opts) {
                Ok(loc) => {
                    let reply = FromRaylet::Created {
                        req,
                        block: loc.block,
                        existed: false,
                    };
                    if !node.send_to_client(conn, &reply) {
                        let _ = node.store.abort(id);
                    }
                    return;
                }
                Err(StoreError::ObjectExists(_)) => {
                    let reply = match node.store.info(id) {
                        Some(info) if info.sealed => FromRaylet::Created {
                            req,
                            block: info.location.block,
                            existed: true,
                        },
                        _ => crate::node::store_error(req, StoreError::ObjectExists(id)),
                    };
                    node.send_to_client(conn, &reply);
                    return;
                }
                Err(e @ StoreError::ObjectStoreFull { .. }) => {
                    if self.spill(node, len + HEADER_SIZE) == 0 {
                        last = Some(e);
                        break;
                    }
                    last = Some(e);
                }
                Err(e) => {
                    node.send_to_client(conn, &crate::node::store_error(req, e));
                    return;
                }
            }
        }
        if let Some(e) = last {
            node.send_to_client(conn, &crate::node::store_error(req, e));
        }
    }

    /// Spills primary copies adding up to at least `need` bytes (at least [`MIN_SPILL`]);
    /// returns the bytes freed.
    fn spill(&self, node: &Node, need: u64) -> u64 {
        let Some(dir) = self.dir() else { return 0 };
        let mut freed = 0;
        for (id, loc, fingerprint) in node.store.spill_candidates(need.max(MIN_SPILL)) {
            // Read through a pin: the owner may delete it meanwhile, a reader may pin it.
            let Ok(bytes) = node.store.get(id) else {
                continue;
            };
            // Map its pages into this process in one call (a page fault per 4 KiB page in
            // `write` costs ~4x: the writer mapped them, this process may never have).
            node.store.arena().prefault(loc.data, loc.len);
            let path = dir.join(id.to_string());
            let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(&bytes));
            drop(bytes);
            if let Err(e) = written {
                let _ = std::fs::remove_file(&path);
                node.log(format!("spilling object {id} to {}: {e}", path.display()));
                // A full or failing disk frees nothing more this round.
                break;
            }
            let entry = Spilled {
                path: path.clone(),
                len: loc.len,
                fingerprint,
            };
            self.lock().spilled.insert(id, entry);
            match node.store.free_if_unpinned(id) {
                Ok(true) => {
                    let mut st = self.lock();
                    st.spilled_bytes += loc.len;
                    st.spilled_total += loc.len;
                    freed += loc.len;
                }
                _ => {
                    // Pinned or deleted meanwhile: it stays in memory (or is gone).
                    self.lock().spilled.remove(&id);
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        freed
    }

    /// The node's spill directory, made on first use: `spill/` in its session directory
    /// (claimed for this process, so a killed node's files are swept with it), or a directory
    /// of its own under a configured spill directory.
    fn dir(&self) -> Option<PathBuf> {
        if let Some(d) = &self.lock().dir {
            return Some(d.clone());
        }
        let made = match self.base.as_ref()? {
            SpillBase::Session => crate::files::claim_session_dir(&self.session, true)
                .map(|d| d.join("spill"))
                .and_then(|d| crate::files::private_dir(&d).map(|()| d)),
            SpillBase::Dir(base) => {
                let d = base.join(format!(
                    "oxray-spill-{}-{}",
                    self.session,
                    std::process::id()
                ));
                crate::files::private_dir(&d).map(|()| d)
            }
        };
        match made {
            Ok(dir) => {
                self.lock().dir = Some(dir.clone());
                Some(dir)
            }
            Err(e) => {
                tracing::warn!("cannot spill objects to disk: {e}");
                None
            }
        }
    }

    /// Reads a spilled object back into the store and answers whoever waits for it.
    fn restore_now(&self, node: &Node, id: ObjectId) {
        let Some(s) = self.lock().spilled.get(&id).cloned() else {
            self.finish_restore(node, id, Err(format!("object {id} is not spilled here")));
            return;
        };
        let opts = CreateOptions {
            fingerprint: s.fingerprint,
            evictable: false,
        };
        let mut writer = None;
        for _ in 0..MAX_ROUNDS {
            match node.store.create(id, s.len, opts) {
                Ok(w) => {
                    writer = Some(w);
                    break;
                }
                Err(StoreError::ObjectStoreFull { .. }) => {
                    if self.spill(node, s.len + HEADER_SIZE) == 0 {
                        break;
                    }
                }
                Err(e) => {
                    self.finish_restore(node, id, Err(e.to_string()));
                    return;
                }
            }
        }
        let Some(mut writer) = writer else {
            let message = format!(
                "object {id} ({} bytes) is spilled and the store has no room to read it back \
                 (everything in it is in use)",
                s.len
            );
            self.finish_restore(node, id, Err(message));
            return;
        };
        let read =
            std::fs::File::open(&s.path).and_then(|mut f| f.read_exact(writer.as_mut_slice()));
        if let Err(e) = read {
            drop(writer); // aborts
            let message = format!("reading spilled object {id} from {}: {e}", s.path.display());
            self.finish_restore(node, id, Err(message));
            return;
        }
        if let Err(e) = writer.seal() {
            self.finish_restore(node, id, Err(e.to_string()));
            return;
        }
        {
            let mut st = self.lock();
            st.spilled.remove(&id);
            st.spilled_bytes -= s.len;
            st.restored_total += s.len;
        }
        let _ = std::fs::remove_file(&s.path);
        self.finish_restore(node, id, Ok(()));
    }

    fn finish_restore(&self, node: &Node, id: ObjectId, outcome: Result<(), String>) {
        let (waiters, deleted) = {
            let mut st = self.lock();
            let deleted = st.deleted_while_restoring.remove(&id);
            (st.restoring.remove(&id).unwrap_or_default(), deleted)
        };
        if deleted {
            let _ = node.store.delete(id);
            self.forget(id);
        }
        for w in waiters {
            match w {
                Waiter::Client { conn, req } => {
                    let reply = match (&outcome, deleted) {
                        (Ok(()), false) => match node.store.pin_for(ClientId(conn), id) {
                            Ok(loc) => FromRaylet::Pinned {
                                req,
                                block: loc.block,
                            },
                            Err(e) => crate::node::store_error(req, e),
                        },
                        (Ok(()), true) => {
                            crate::node::store_error(req, StoreError::ObjectNotFound(id))
                        }
                        (Err(message), _) => FromRaylet::Error {
                            req,
                            kind: ErrorKind::ObjectNotFound,
                            message: message.clone(),
                        },
                    };
                    if !node.send_to_client(conn, &reply) {
                        if let FromRaylet::Pinned { .. } = reply {
                            let _ = node.store.release_for(ClientId(conn), id);
                        }
                    }
                }
                Waiter::Thread(tx) => {
                    let _ = tx.send(outcome.is_ok() && !deleted);
                }
            }
        }
    }
}
