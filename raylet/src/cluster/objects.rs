//! Objects across nodes: pulling a copy in chunks, serving chunks, freeing every copy.
//!
//! A pin of an object that is not here names the node holding its primary copy; the raylet
//! pulls it: `ObjectInfo` to that node for its size and type, then `Chunk` requests of
//! [`CHUNK`] bytes on up to [`STREAMS`] QUIC streams at once (so at most `CHUNK × STREAMS`
//! bytes are in flight), each read straight into the new object's block in this node's store.
//! Concurrent pins of one object wait for one transfer. The copy is sealed as a secondary
//! (evictable) copy, and the primary's node remembers this node, so when the owner frees
//! the object every copy goes.
//!
//! **Copies serve too** (Ray's pull manager takes chunks from any node that has the object):
//! `ObjectInfo`'s answer lists the nodes that asked for the object before, oldest first, and
//! the puller spreads its chunks over the primary and those nodes (chunk `i` from source
//! `i mod (1 + copies)`). A node asked for a chunk of an object it is still pulling serves it
//! once its own copy is whole (within [`COPY_WAIT`]); a node without a copy (evicted, failed,
//! dead) answers an error, and that chunk comes from the primary. When every node reads a
//! fresh object at once, the k-th puller takes 1/k of its bytes from the primary, so the
//! primary sends about ln(n) + 0.6 copies for n pullers instead of n, and the broadcast is not
//! bound by the primary's uplink. Waits only go to earlier pullers, so they cannot form a cycle
//! (except after a failed pull is retried, which [`COPY_WAIT`] bounds).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use oxray_common::peer::{PeerReply, PeerRequest};
use oxray_common::{ObjectId, WorkerId};
use oxray_object_store::{CreateOptions, FileWriter, ObjectWriter, StoreError};

use super::{lock, peers, wire, Shared};
use crate::error::{RayletError, Result};
use crate::spill::Restored;

/// Bytes per chunk request.
pub(crate) const CHUNK: usize = 8 << 20;
/// Chunk requests in flight per transfer.
pub(crate) const STREAMS: usize = 4;
/// How long a node asked for a chunk of an object it is still pulling waits for its copy.
pub(crate) const COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Pulls `id` from node `index` (once, however many wait), then answers every waiting pin.
pub(crate) fn pull(shared: &Arc<Shared>, id: ObjectId, index: u16, conn: u64, req: u64) {
    let first = {
        let mut pulls = lock(&shared.pulls);
        let waiters = pulls.entry(id).or_default();
        waiters.push((conn, req));
        waiters.len() == 1
    };
    if first {
        let shared = shared.clone();
        let (whole, pulling) = tokio::sync::watch::channel(());
        lock(&shared.pulling).insert(id, pulling);
        shared.runtime.clone().spawn(async move {
            let result = fetch(&shared, id, index).await;
            // Peers waiting for this copy look again (it is whole, or it failed).
            lock(&shared.pulling).remove(&id);
            drop(whole);
            let waiters = lock(&shared.pulls).remove(&id).unwrap_or_default();
            if let Some(node) = shared.node.upgrade() {
                let error = result.err().map(|e| e.to_string());
                for (conn, req) in waiters {
                    node.pin_pulled(conn, req, id, error.as_deref());
                }
            }
        });
    }
}

async fn fetch(shared: &Arc<Shared>, id: ObjectId, index: u16) -> Result<()> {
    let node = shared.node.upgrade().ok_or(RayletError::Stopping)?;
    if node.store.info(id).is_some_and(|i| i.sealed) {
        return Ok(());
    }
    let peer = peers::peer_address(shared, index)?;
    let conn = peers::connection(shared, &peer).await?;
    let peer_error = |reason: String| RayletError::Peer {
        peer: peer.clone(),
        reason,
    };
    let (len, fingerprint, sources) =
        match wire::request(&conn, &PeerRequest::ObjectInfo { id }, &peer).await? {
            PeerReply::Object {
                len,
                fingerprint,
                sources,
            } => (len, fingerprint, sources),
            PeerReply::Error { message } => return Err(peer_error(message)),
            other => return Err(peer_error(format!("unexpected answer {other:?}"))),
        };
    let copies = live_copies(shared, &node, sources).await;
    let opts = CreateOptions {
        fingerprint,
        evictable: false,
    };
    // Creating the block maps all its pages, which the kernel zeroes the first time (0.5 to
    // 3.3 s for 1 GiB on the busy 2-core VM): not on one of the runtime's two threads, which
    // carry every other transfer and request meanwhile.
    let created = tokio::task::block_in_place(|| match node.store.create(id, len, opts) {
        Ok(writer) => Ok(Copy::Store(writer)),
        // No room here: the copy goes to a file of the spill directory, readers map it.
        Err(StoreError::ObjectStoreFull { .. } | StoreError::ObjectTooLarge { .. })
            if node.spill.enabled() =>
        {
            node.spill
                .file_for_pull(id, len, fingerprint)
                .map(Copy::File)
                .map_err(|why| RayletError::Peer {
                    peer: peer.clone(),
                    reason: format!("object {id} does not fit in this node's store: {why}"),
                })
        }
        Err(e) => Err(e.into()),
    });
    let mut copy = created?;
    let failed: Mutex<Option<RayletError>> = Mutex::new(None);
    let sources = 1 + copies.len();
    stream::iter(copy.as_mut_slice().chunks_mut(CHUNK).enumerate())
        .for_each_concurrent(STREAMS * sources.min(4), |(i, chunk)| {
            let (conn, peer, failed, copies) = (&conn, &peer, &failed, &copies);
            async move {
                if lock(failed).is_some() {
                    return;
                }
                let offset = (i * CHUNK) as u64;
                let copy = match i % sources {
                    0 => None,
                    k => copies.get(k - 1),
                };
                if let Some((c, p)) = copy {
                    if fetch_chunk(c, p, id, offset, chunk).await.is_ok() {
                        return;
                    }
                    // Evicted, failed or gone there: the primary has it.
                }
                if let Err(e) = fetch_chunk(conn, peer, id, offset, chunk).await {
                    lock(failed).get_or_insert(e);
                }
            }
        })
        .await;
    if let Some(e) = lock(&failed).take() {
        // Dropping the writer unsealed frees the block.
        if let Copy::File(_) = copy {
            node.spill.discard(id);
        }
        return Err(e);
    }
    match copy {
        Copy::Store(writer) => {
            writer.seal()?;
            node.store.set_evictable(id, true)?;
        }
        Copy::File(writer) => {
            drop(writer);
            node.spill.seal_file(id, 0);
        }
    }
    Ok(())
}

/// Connections to the nodes among `sources` that are alive (other than this one).
async fn live_copies(
    shared: &Arc<Shared>,
    node: &crate::node::Node,
    sources: Vec<String>,
) -> Vec<(quinn::Connection, String)> {
    let view = node.cluster_view();
    let alive = |addr: &String| {
        *addr != shared.peer_address
            && view
                .nodes
                .iter()
                .any(|n| n.alive && n.peer_address == *addr)
    };
    let mut copies = Vec::new();
    for addr in sources.into_iter().filter(alive) {
        if let Ok(conn) = peers::connection(shared, &addr).await {
            copies.push((conn, addr));
        }
    }
    copies
}

/// Where a pulled copy is written.
enum Copy {
    Store(ObjectWriter),
    File(FileWriter),
}

impl Copy {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Copy::Store(w) => w.as_mut_slice(),
            Copy::File(w) => w.as_mut_slice(),
        }
    }
}

async fn fetch_chunk(
    conn: &quinn::Connection,
    peer: &str,
    id: ObjectId,
    offset: u64,
    chunk: &mut [u8],
) -> Result<()> {
    let req = PeerRequest::Chunk {
        id,
        offset,
        len: chunk.len() as u64,
    };
    let peer_error = |reason: String| RayletError::Peer {
        peer: peer.to_owned(),
        reason,
    };
    match wire::open(conn, &req, peer).await? {
        (PeerReply::Ok, _send, mut recv) => recv
            .read_exact(chunk)
            .await
            .map_err(|e| peer_error(format!("object {id} at {offset}: {e}"))),
        (PeerReply::Error { message }, ..) => Err(peer_error(message)),
        (other, ..) => Err(peer_error(format!("unexpected answer {other:?}"))),
    }
}

/// Answers `ObjectInfo`, remembering that `from` is taking a copy.
pub(crate) fn info(shared: &Shared, id: ObjectId, from: SocketAddr) -> PeerReply {
    let Some(node) = shared.node.upgrade() else {
        return PeerReply::Error {
            message: "the node is stopping".into(),
        };
    };
    let mut here = node
        .store
        .info(id)
        .map(|info| (info.sealed, info.location.len, info.fingerprint));
    if here.is_none() {
        // Spilled: read back to be served from the store, or served from its file.
        here = match tokio::task::block_in_place(|| node.spill.restore_and_wait(id)) {
            Restored::InStore => node
                .store
                .info(id)
                .map(|info| (info.sealed, info.location.len, info.fingerprint)),
            Restored::InFile(s) => Some((true, s.len, s.fingerprint)),
            Restored::No(_) => None,
        };
    }
    match here {
        Some((true, len, fingerprint)) => {
            let mut pulled_by = lock(&shared.pulled_by);
            let earlier = pulled_by.entry(id).or_default();
            let sources = earlier
                .iter()
                .filter(|a| **a != from)
                .map(ToString::to_string)
                .collect();
            if !earlier.contains(&from) {
                earlier.push(from);
            }
            PeerReply::Object {
                len,
                fingerprint,
                sources,
            }
        }
        _ => PeerReply::Error {
            message: format!(
                "object {id} is not on node {} (it was freed or lost)",
                node.id()
            ),
        },
    }
}

/// Sends bytes of an object.
pub(crate) async fn serve_chunk(
    shared: &Arc<Shared>,
    id: ObjectId,
    offset: u64,
    len: u64,
    mut send: quinn::SendStream,
    peer: &str,
) {
    let Some(node) = shared.node.upgrade() else {
        return;
    };
    // Spilled since `ObjectInfo` read it back, or kept in a file: served from the file (its
    // pages are in the page cache; reading it back into the store would only evict others).
    let read = |node: &crate::node::Node| {
        node.store
            .get(id)
            .or_else(|e| node.spill.file_bytes(id).ok_or(e))
    };
    let mut got = read(&node);
    let pulling = lock(&shared.pulling).get(&id).cloned();
    if let (Err(_), Some(mut pulling)) = (&got, pulling) {
        // A copy this node is still pulling: serve it once whole.
        drop(node);
        let _ = tokio::time::timeout(COPY_WAIT, pulling.changed()).await;
        let Some(node) = shared.node.upgrade() else {
            return;
        };
        got = read(&node);
    } else {
        drop(node);
    }
    let bytes = match got {
        Ok(b) => b,
        Err(e) => {
            let reply = PeerReply::Error {
                message: e.to_string(),
            };
            let _ = wire::write(&mut send, &reply, peer).await;
            return;
        }
    };
    let end = offset.checked_add(len).filter(|e| *e <= bytes.len() as u64);
    let Some(end) = end else {
        let reply = PeerReply::Error {
            message: format!(
                "bytes {offset}+{len} are outside object {id} ({} bytes)",
                bytes.len()
            ),
        };
        let _ = wire::write(&mut send, &reply, peer).await;
        return;
    };
    if wire::write_open(&mut send, &PeerReply::Ok, peer)
        .await
        .is_err()
    {
        return;
    }
    // Handed to QUIC without a copy: the pinned arena bytes are the stream's send buffer
    // (the pin drops once the peer acknowledged them).
    let chunk = bytes::Bytes::from_owner(bytes).slice(offset as usize..end as usize);
    if send.write_chunk(chunk).await.is_ok() {
        shared
            .served
            .fetch_add(end - offset, std::sync::atomic::Ordering::Relaxed);
        let _ = send.finish();
    }
}

/// Frees `ids` here and in every node that pulled a copy from here.
pub(crate) fn delete_here(shared: &Arc<Shared>, ids: Vec<ObjectId>) {
    delete_everywhere(shared, ids, 0);
}

/// Frees `ids` here, on node `index` (their primary copies, when not here), and on every node
/// that pulled a copy from here.
pub(crate) fn delete_everywhere(shared: &Arc<Shared>, ids: Vec<ObjectId>, index: u16) {
    let Some(node) = shared.node.upgrade() else {
        return;
    };
    let mut targets: HashMap<String, Vec<ObjectId>> = HashMap::new();
    {
        let mut pulled_by = lock(&shared.pulled_by);
        for id in &ids {
            node.delete_local(*id);
            for peer in pulled_by.remove(id).unwrap_or_default() {
                targets.entry(peer.to_string()).or_default().push(*id);
            }
        }
    }
    if index != 0 && index != node.index() {
        if let Ok(peer) = peers::peer_address(shared, index) {
            targets.entry(peer).or_default().extend(ids);
        }
    }
    for (peer, ids) in targets {
        let shared = shared.clone();
        shared.runtime.clone().spawn(async move {
            if let Ok(conn) = peers::connection(&shared, &peer).await {
                let _ = wire::request(&conn, &PeerRequest::Delete { ids }, &peer).await;
            }
        });
    }
}

/// Tells every other live node that `owner`, a process of this node, ended: each frees the
/// objects it owned there (results of its tasks that ran there), which nothing else would.
pub(crate) fn owner_gone(shared: &Arc<Shared>, owner: WorkerId) {
    let Some(node) = shared.node.upgrade() else {
        return;
    };
    let me = node.index();
    let peers: Vec<String> = node
        .cluster_view()
        .nodes
        .into_iter()
        .filter(|n| n.alive && n.index != me && n.index != 0)
        .map(|n| n.peer_address)
        .collect();
    drop(node);
    for peer in peers {
        let shared = shared.clone();
        shared.runtime.clone().spawn(async move {
            if let Ok(conn) = peers::connection(&shared, &peer).await {
                let _ = wire::request(&conn, &PeerRequest::OwnerGone { owner }, &peer).await;
            }
        });
    }
}

/// A peer's process `owner` ended: free what it owned here (and the copies pulled from here).
pub(crate) fn delete_owned_here(shared: &Shared, owner: WorkerId) {
    if let Some(node) = shared.node.upgrade() {
        node.delete_owned_by(owner);
    }
}
