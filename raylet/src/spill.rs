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
//! Objects that cannot be in the store at all (larger than all of it, or no room even after
//! spilling) are made in a file of the same directory instead (Ray's fallback allocation): the
//! creator maps the file and fills it, and on `Seal` the object is simply a spilled one. A pin
//! of a spilled object that cannot be read back (too large, or everything in the store in use)
//! is answered with the file, which the reader maps read-only. A restore or a delete only
//! unlinks a file, so readers that mapped it keep their pages.
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
use oxray_object_store::{
    allocate_file, ClientId, CreateOptions, FileWriter, ObjectBytes, StoreError, HEADER_SIZE,
};

use crate::node::Node;

/// Bytes spilled at least per round when a create does not fit (fewer, larger rounds).
const MIN_SPILL: u64 = 64 << 20;
/// Rounds of spill-then-retry one create may take before it is refused (the arena may be too
/// fragmented, or readers keep pinning what would be spilled).
const MAX_ROUNDS: usize = 16;

/// A spilled object, or one made in a file.
#[derive(Debug, Clone)]
pub(crate) struct Spilled {
    /// Its file (the payload only).
    pub(crate) path: PathBuf,
    /// Payload bytes.
    pub(crate) len: u64,
    /// Type fingerprint.
    pub(crate) fingerprint: u64,
    /// Made in the file (it never fitted in the store), not spilled there.
    pub(crate) made_in_file: bool,
}

/// An object being written in a file by its creator (not sealed yet).
struct Unsealed {
    /// The creating client's connection (0: this raylet, for a pull).
    conn: u64,
    file: Spilled,
}

/// How a restore ended.
#[derive(Debug, Clone)]
pub(crate) enum Restored {
    /// Back in the store.
    InStore,
    /// The store has no room for it: read it from its file.
    InFile(Spilled),
    /// Not spilled here, or gone.
    No(String),
}

/// Who waits for a restore.
enum Waiter {
    /// A client's `Pin` request.
    Client { conn: u64, req: u64 },
    /// A thread of the raylet (a pull from another node being served).
    Thread(mpsc::Sender<Restored>),
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
    /// Files of objects whose creators left before sealing them.
    Discard(Vec<PathBuf>),
}

#[derive(Default)]
struct State {
    spilled: HashMap<ObjectId, Spilled>,
    /// Objects being written in files by their creators.
    unsealed: HashMap<ObjectId, Unsealed>,
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

    /// If `id` is spilled here, restores it and waits for that (from a thread that may block).
    pub(crate) fn restore_and_wait(&self, id: ObjectId) -> Restored {
        let (tx, rx) = mpsc::channel();
        if !self.restore(id, Waiter::Thread(tx)) {
            return Restored::No(format!("object {id} is not spilled here"));
        }
        rx.recv()
            .unwrap_or_else(|_| Restored::No("the node is stopping".into()))
    }

    /// Whether `id` is spilled here (or kept in a file), sealed.
    pub(crate) fn holds(&self, id: ObjectId) -> bool {
        self.lock().spilled.contains_key(&id)
    }

    /// Maps the file of spilled object `id` read-only.
    pub(crate) fn file_bytes(&self, id: ObjectId) -> Option<ObjectBytes> {
        let s = self.lock().spilled.get(&id).cloned()?;
        ObjectBytes::from_file(&s.path, id, s.len, s.fingerprint, Box::new(())).ok()
    }

    /// Client `conn` sealed `id`, which it wrote in a file: it is a spilled object from now on.
    /// False when `conn` is not writing such an object.
    pub(crate) fn seal_file(&self, id: ObjectId, conn: u64) -> bool {
        let mut st = self.lock();
        if st.unsealed.get(&id).is_none_or(|u| u.conn != conn) {
            return false;
        }
        let Some(u) = st.unsealed.remove(&id) else {
            return false;
        };
        st.spilled_bytes += u.file.len;
        st.spilled.insert(id, u.file);
        true
    }

    /// Client `conn` went away: the objects it was writing in files go.
    pub(crate) fn disconnect(&self, conn: u64) {
        let mut st = self.lock();
        let ids: Vec<ObjectId> = st
            .unsealed
            .iter()
            .filter(|(_, u)| u.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        let paths = ids
            .iter()
            .filter_map(|id| st.unsealed.remove(id))
            .map(|u| u.file.path)
            .collect();
        st.jobs.push_back(Job::Discard(paths));
        self.work.notify_one();
    }

    /// Makes a file for `id` for this raylet to fill (a pulled copy the store has no room
    /// for); sealed with `seal_file(id, 0)`, or dropped with `discard(id)`.
    pub(crate) fn file_for_pull(
        &self,
        id: ObjectId,
        len: u64,
        fingerprint: u64,
    ) -> Result<FileWriter, String> {
        let file = self.make_file(0, id, len, fingerprint)?;
        FileWriter::open(&file, len).map_err(|e| {
            self.discard(id);
            e.to_string()
        })
    }

    /// Drops the unsealed file object `id` this raylet was filling.
    pub(crate) fn discard(&self, id: ObjectId) {
        let gone = self.lock().unsealed.remove(&id);
        if let Some(u) = gone {
            let _ = std::fs::remove_file(u.file.path);
        }
    }

    /// Makes the file of a new object `id` written by `conn` and returns its path.
    fn make_file(
        &self,
        conn: u64,
        id: ObjectId,
        len: u64,
        fingerprint: u64,
    ) -> Result<PathBuf, String> {
        let Some(dir) = self.dir() else {
            return Err("the node's spill directory could not be made".into());
        };
        {
            let st = self.lock();
            if st.spilled.contains_key(&id) || st.unsealed.contains_key(&id) {
                return Err(format!(
                    "object {id} already exists (object ids must be unique)"
                ));
            }
        }
        let path = dir.join(id.to_string());
        allocate_file(&path, len).map_err(|e| e.to_string())?;
        let file = Spilled {
            path: path.clone(),
            len,
            fingerprint,
            made_in_file: true,
        };
        self.lock().unsealed.insert(id, Unsealed { conn, file });
        Ok(path)
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
        if let Some(u) = st.unsealed.remove(&id) {
            drop(st);
            let _ = std::fs::remove_file(&u.file.path);
            return;
        }
        if let Some(s) = st.spilled.remove(&id) {
            st.spilled_bytes -= s.len;
            drop(st);
            let _ = std::fs::remove_file(&s.path);
        }
    }

    /// Every spilled object with its size and whether it was made in its file.
    pub(crate) fn listed(&self) -> Vec<(ObjectId, u64, bool)> {
        self.lock()
            .spilled
            .iter()
            .map(|(id, s)| (*id, s.len, s.made_in_file))
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
            st.unsealed.clear();
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
                Job::Discard(paths) => {
                    for p in paths {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
        }
    }

    /// Tries a queued create again, spilling until it fits; when nothing more can go (or it
    /// can never fit), makes the object in a file.
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
                    let freed = self.spill(node, len + HEADER_SIZE);
                    last = Some(e);
                    if freed == 0 {
                        break;
                    }
                }
                Err(e @ StoreError::ObjectTooLarge { .. }) => {
                    last = Some(e);
                    break;
                }
                Err(e) => {
                    node.send_to_client(conn, &crate::node::store_error(req, e));
                    return;
                }
            }
        }
        let reply = match self.make_file(conn, id, len, fingerprint) {
            Ok(path) => FromRaylet::CreatedInFile {
                req,
                path: path.display().to_string(),
            },
            Err(why) => {
                let store = last.map(|e| e.to_string()).unwrap_or_default();
                FromRaylet::Error {
                    req,
                    kind: ErrorKind::ObjectStoreFull,
                    message: format!("{store}; and it could not be made in a file: {why}"),
                }
            }
        };
        if !node.send_to_client(conn, &reply) {
            self.forget(id);
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
                made_in_file: false,
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
            let why = format!("object {id} is not spilled here");
            self.finish_restore(node, id, Restored::No(why));
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
                // Never fits: read from its file.
                Err(StoreError::ObjectTooLarge { .. }) => break,
                Err(e) => {
                    self.finish_restore(node, id, Restored::No(e.to_string()));
                    return;
                }
            }
        }
        let Some(mut writer) = writer else {
            // No room (everything in the store is in use) or never any: readers map the file.
            self.finish_restore(node, id, Restored::InFile(s));
            return;
        };
        let read =
            std::fs::File::open(&s.path).and_then(|mut f| f.read_exact(writer.as_mut_slice()));
        if let Err(e) = read {
            drop(writer); // aborts
            let message = format!("reading spilled object {id} from {}: {e}", s.path.display());
            self.finish_restore(node, id, Restored::No(message));
            return;
        }
        if let Err(e) = writer.seal() {
            self.finish_restore(node, id, Restored::No(e.to_string()));
            return;
        }
        {
            let mut st = self.lock();
            st.spilled.remove(&id);
            st.spilled_bytes -= s.len;
            st.restored_total += s.len;
        }
        let _ = std::fs::remove_file(&s.path);
        self.finish_restore(node, id, Restored::InStore);
    }

    fn finish_restore(&self, node: &Node, id: ObjectId, outcome: Restored) {
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
                        (Restored::InStore, false) => {
                            match node.store.pin_for(ClientId(conn), id) {
                                Ok(loc) => FromRaylet::Pinned {
                                    req,
                                    block: loc.block,
                                },
                                Err(e) => crate::node::store_error(req, e),
                            }
                        }
                        (Restored::InFile(s), false) => FromRaylet::PinnedInFile {
                            req,
                            path: s.path.display().to_string(),
                            len: s.len,
                            fingerprint: s.fingerprint,
                        },
                        (Restored::InStore | Restored::InFile(_), true) => {
                            crate::node::store_error(req, StoreError::ObjectNotFound(id))
                        }
                        (Restored::No(message), _) => FromRaylet::Error {
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
                    let outcome = match deleted {
                        true => Restored::No(format!("object {id} was freed")),
                        false => outcome.clone(),
                    };
                    let _ = tx.send(outcome);
                }
            }
        }
    }
}
