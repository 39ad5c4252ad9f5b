//! Work spilled to other nodes.
//!
//! When a lease request (or an actor) cannot be served here but another node has room, this
//! raylet *attaches* the job to that node: one QUIC stream per (job, node) that the far raylet
//! serves exactly like a local driver's connection (a `ClientKind::Remote` client), so leasing,
//! worker start-up and actor management are the same code on every node. Requests from the
//! job's processes here are forwarded on that stream under the proxy's own request numbers,
//! and the answers go back to the process that asked, with worker addresses rewritten to
//! `peer://…` so the core worker reaches them through a tunnel.
//!
//! The far raylet needs the job's executable: the `Attach` request names its SHA-256, and the
//! far raylet fetches it from here once (`FetchExe`), caches it in its session directory
//! (private to the user, see [`crate::files`]; the copy's SHA-256 is checked again at every
//! attach, and a copy that does not match is removed and fetched again), and refuses a
//! different OS or architecture with a clear message.
//!
//! Closing the stream (the job ended here, or this node died) ends the job there: its workers
//! stop and the leases it held are freed, as for a local driver that exits.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use oxray_common::frame;
use oxray_common::peer::{ExeInfo, PeerReply, PeerRequest};
use oxray_common::protocol::{ActorSpec, ClientKind, ErrorKind, FromRaylet, Strategy, ToRaylet};
use oxray_common::resources::Resources;
use oxray_common::{JobId, NodeId, WorkerId};
use tokio::sync::{mpsc, Notify};

use super::{lock, peers, tunnel, wire, Shared};
use crate::error::{RayletError, Result};
use crate::files;

/// Lease ids this node hands out for leases of another node: the top bit set, the node's index
/// in the next 16 bits, the far lease id below.
pub(crate) const REMOTE_LEASE: u64 = 1 << 63;
const REMOTE_INDEX_SHIFT: u32 = 47;

/// The local id of lease `lease` of node `index`.
pub(crate) fn remote_lease(index: u16, lease: u64) -> u64 {
    REMOTE_LEASE
        | (u64::from(index) << REMOTE_INDEX_SHIFT)
        | (lease & ((1 << REMOTE_INDEX_SHIFT) - 1))
}

/// The node index and far lease id of a local id made by [`remote_lease`].
pub(crate) fn split_remote_lease(lease: u64) -> (u16, u64) {
    (
        ((lease & !REMOTE_LEASE) >> REMOTE_INDEX_SHIFT) as u16,
        lease & ((1 << REMOTE_INDEX_SHIFT) - 1),
    )
}

/// A request of a local process to be served by another node.
#[derive(Debug)]
pub(crate) enum Forward {
    /// A lease request the local node cannot serve.
    Lease {
        conn: u64,
        req: u64,
        resources: Resources,
        /// The strategy it was sent there by (kept for a requeue; the far node keeps it).
        strategy: Strategy,
    },
    /// Give back a lease of that node (its far id).
    ReturnLease { lease: u64 },
    /// Place an actor there.
    CreateActor {
        conn: u64,
        req: u64,
        spec: ActorSpec,
    },
}

/// A request forwarded and not yet answered.
struct Pending {
    conn: u64,
    req: u64,
    /// For a lease request: what it asked for (it goes back to the local queue if the far
    /// node goes away before answering).
    lease: Option<(Resources, Strategy)>,
}

/// A local job's attachment to one peer.
pub(crate) struct Proxy {
    tx: mpsc::UnboundedSender<ToRaylet>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_req: AtomicU64,
    closed: Notify,
}

impl Proxy {
    fn track(&self, conn: u64, req: u64, lease: Option<(Resources, Strategy)>) -> u64 {
        let id = self.next_req.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(id, Pending { conn, req, lease });
        id
    }
}

/// Where an attached job comes from.
pub(crate) struct Origin {
    pub node: NodeId,
    pub address: String,
    pub job: JobId,
    pub namespace: String,
    pub exe: ExeInfo,
    pub job_key: Vec<u8>,
}

/// Sends a local request to node `index` on job `job`'s attachment (made on first use).
pub(crate) fn forward(shared: &Arc<Shared>, job: JobId, index: u16, msg: Forward) {
    let proxy = {
        let mut proxies = lock(&shared.proxies);
        proxies
            .entry((job, index))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let proxy = Arc::new(Proxy {
                    tx,
                    pending: Mutex::new(HashMap::new()),
                    next_req: AtomicU64::new(1),
                    closed: Notify::new(),
                });
                shared
                    .runtime
                    .spawn(run(shared.clone(), job, index, proxy.clone(), rx));
                proxy
            })
            .clone()
    };
    let msg = match msg {
        Forward::Lease {
            conn,
            req,
            resources,
            strategy,
        } => ToRaylet::RequestLease {
            req: proxy.track(conn, req, Some((resources.clone(), strategy))),
            resources,
            near: 0,
            strategy: Strategy::Default,
        },
        Forward::ReturnLease { lease } => ToRaylet::ReturnLease { lease },
        Forward::CreateActor { conn, req, spec } => ToRaylet::CreateActor {
            req: proxy.track(conn, req, None),
            spec,
        },
    };
    // A closed channel means the attachment just failed; `run` answers what it tracked.
    let _ = proxy.tx.send(msg);
}

/// A local job ended: close its attachments.
pub(crate) fn job_ended(shared: &Shared, job: JobId) {
    let gone: Vec<Arc<Proxy>> = {
        let mut proxies = lock(&shared.proxies);
        let keys: Vec<_> = proxies.keys().filter(|k| k.0 == job).copied().collect();
        keys.iter().filter_map(|k| proxies.remove(k)).collect()
    };
    for p in gone {
        p.closed.notify_one();
    }
}

/// Attaches the job, then pumps requests out and answers back until either side closes.
async fn run(
    shared: Arc<Shared>,
    job: JobId,
    index: u16,
    proxy: Arc<Proxy>,
    mut rx: mpsc::UnboundedReceiver<ToRaylet>,
) {
    let attached = attach_to(&shared, job, index).await;
    let (mut send, mut recv, peer) = match attached {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("cannot run job {job} on node {index}: {e}");
            close(&shared, job, index, &proxy, &e.to_string(), false);
            return;
        }
    };
    let writer = async {
        while let Some(msg) = rx.recv().await {
            let Ok(buf) = frame::encode(&msg) else {
                continue;
            };
            if send.write_all(&buf).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        while let Ok(msg) = wire::read::<FromRaylet>(&mut recv, &peer).await {
            deliver(&shared, job, index, &peer, &proxy, msg);
        }
    };
    let ended_here = tokio::select! {
        () = writer => false,
        () = reader => false,
        () = proxy.closed.notified() => true,
    };
    let _ = send.finish();
    if !ended_here {
        close(
            &shared,
            job,
            index,
            &proxy,
            &format!("the connection to node {index} ({peer}) closed"),
            true,
        );
    }
}

/// The attachment is gone: lease requests go back to the local queue (`requeue`) or fail, and
/// other requests fail with `why`.
fn close(shared: &Shared, job: JobId, index: u16, proxy: &Arc<Proxy>, why: &str, requeue: bool) {
    {
        let mut proxies = lock(&shared.proxies);
        if proxies
            .get(&(job, index))
            .is_some_and(|p| Arc::ptr_eq(p, proxy))
        {
            proxies.remove(&(job, index));
        }
    }
    let pending: Vec<Pending> = lock(&proxy.pending).drain().map(|(_, p)| p).collect();
    let Some(node) = shared.node.upgrade() else {
        return;
    };
    for p in pending {
        match p.lease {
            Some((resources, strategy)) if requeue => {
                node.requeue_lease(p.conn, p.req, resources, index, strategy)
            }
            _ => {
                node.send_to_client(
                    p.conn,
                    &FromRaylet::Error {
                        req: p.req,
                        kind: ErrorKind::BadRequest,
                        message: why.to_owned(),
                    },
                );
            }
        }
    }
    node.peer_lost(job, index);
}

async fn attach_to(
    shared: &Arc<Shared>,
    job: JobId,
    index: u16,
) -> Result<(quinn::SendStream, quinn::RecvStream, String)> {
    let node = shared.node.upgrade().ok_or(RayletError::Stopping)?;
    let (exe, namespace, job_key) = node
        .job_exe(job)
        .ok_or_else(|| RayletError::Config(format!("job {job} has ended")))?;
    let info = exe_info(shared, &exe).await?;
    let peer = peers::peer_address(shared, index)?;
    let conn = peers::connection(shared, &peer).await?;
    let req = PeerRequest::Attach {
        origin: node.id(),
        origin_address: shared.peer_address.clone(),
        job,
        namespace,
        exe: info,
        job_key,
    };
    drop(node);
    match wire::open(&conn, &req, &peer).await? {
        (PeerReply::Ok, send, recv) => Ok((send, recv, peer)),
        (PeerReply::Error { message } | PeerReply::Refused { reason: message }, ..) => {
            Err(RayletError::Peer {
                peer,
                reason: message,
            })
        }
        (other, ..) => Err(RayletError::Peer {
            peer,
            reason: format!("unexpected answer to Attach: {other:?}"),
        }),
    }
}

/// Hands an answer of the far raylet to the local process that asked.
fn deliver(shared: &Shared, job: JobId, index: u16, peer: &str, proxy: &Proxy, msg: FromRaylet) {
    let Some(node) = shared.node.upgrade() else {
        return;
    };
    let take = |req: u64| lock(&proxy.pending).remove(&req);
    match msg {
        FromRaylet::LeaseGranted {
            req,
            lease,
            worker,
            address,
            pid,
        } => {
            let local = remote_lease(index, lease);
            let granted = take(req).is_some_and(|p| {
                let msg = FromRaylet::LeaseGranted {
                    req: p.req,
                    lease: local,
                    worker,
                    address: format!("peer://{peer}/{address}"),
                    pid,
                };
                node.send_to_client(p.conn, &msg) && node.note_remote_lease(p.conn, local)
            });
            if !granted {
                let _ = proxy.tx.send(ToRaylet::ReturnLease { lease });
            }
        }
        FromRaylet::Error { req, kind, message } => {
            if let Some(p) = take(req) {
                let message = format!("node {index} ({peer}): {message}");
                node.send_to_client(
                    p.conn,
                    &FromRaylet::Error {
                        req: p.req,
                        kind,
                        message,
                    },
                );
            }
        }
        FromRaylet::ActorCreated { req } => {
            if let Some(p) = take(req) {
                node.send_to_client(p.conn, &FromRaylet::ActorCreated { req: p.req });
            }
        }
        FromRaylet::Actor { req, mut info } => {
            if let Some(p) = take(req) {
                if !info.address.is_empty() {
                    info.address = format!("peer://{peer}/{}", info.address);
                }
                node.send_to_client(p.conn, &FromRaylet::Actor { req: p.req, info });
            }
        }
        FromRaylet::WorkerOutput { .. } => node.output_to_job_driver(job, &msg),
        _ => {}
    }
}

/// A peer attaches one of its jobs here.
pub(crate) async fn attach(
    shared: &Arc<Shared>,
    origin: Origin,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let peer = origin.address.clone();
    let ready = async {
        let exe = ensure_exe(shared, &origin).await?;
        let node = shared.node.upgrade().ok_or(RayletError::Stopping)?;
        let (mut ours, theirs) =
            StdUnixStream::pair().map_err(|e| RayletError::io("making a socket pair", e))?;
        let register = ToRaylet::Register {
            worker: WorkerId::random(),
            pid: 0,
            kind: ClientKind::Remote,
            exe,
            listen: String::new(),
            namespace: origin.namespace.clone(),
            job_key: origin.job_key.clone(),
        };
        frame::write(&mut ours, &register)
            .map_err(|e| RayletError::io("attaching a remote job", e))?;
        crate::server::serve_detached(node, theirs)?;
        Ok::<_, RayletError>(ours)
    };
    let ours = match ready.await {
        Ok(ours) => ours,
        Err(e) => {
            tracing::warn!(
                "refused job {} of node {} ({peer}): {e}",
                origin.job,
                origin.node
            );
            let reply = PeerReply::Error {
                message: e.to_string(),
            };
            let _ = wire::write(&mut send, &reply, &peer).await;
            return;
        }
    };
    if wire::write_open(&mut send, &PeerReply::Ok, &peer)
        .await
        .is_err()
    {
        return;
    }
    let Ok(local) = tunnel::to_tokio(ours) else {
        return;
    };
    tunnel::pipe(local, send, recv).await;
}

/// The path of the origin's executable here, fetched and checked first if not cached.
async fn ensure_exe(shared: &Arc<Shared>, origin: &Origin) -> Result<String> {
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    if origin.exe.os != os || origin.exe.arch != arch {
        return Err(RayletError::Config(format!(
            "the driver's executable is built for {}/{}, this node runs {os}/{arch}; build the \
             program for {os}/{arch} and run the driver on a node of that kind",
            origin.exe.os, origin.exe.arch
        )));
    }
    let hash = &origin.exe.hash;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RayletError::Config(format!(
            "malformed executable hash {hash:?}"
        )));
    }
    let node = shared.node.upgrade().ok_or(RayletError::Stopping)?;
    let dir = node.config.session_dir();
    drop(node);
    let path = dir.join(format!("exe-{hash}"));
    let _one_fetch = shared.fetching.lock().await;
    // A cached copy is used only if its bytes hash right, every time (not just its size).
    let cached = {
        let (path, hash, len) = (path.clone(), hash.clone(), origin.exe.len);
        tokio::task::spawn_blocking(move || files::cached_exe_ok(&path, &hash, len))
            .await
            .unwrap_or(false)
    };
    if cached {
        return Ok(path.display().to_string());
    }
    files::private_dir(&dir).map_err(RayletError::Files)?;
    let conn = peers::connection(shared, &origin.address).await?;
    let req = PeerRequest::FetchExe { job: origin.job };
    let peer_error = |reason: String| RayletError::Peer {
        peer: origin.address.clone(),
        reason,
    };
    let (_send, mut recv) = match wire::open(&conn, &req, &origin.address).await? {
        (PeerReply::Exe(info), send, recv) if info == origin.exe => (send, recv),
        (PeerReply::Exe(_), ..) => {
            return Err(peer_error(
                "the executable changed since the job was attached".into(),
            ))
        }
        (PeerReply::Error { message }, ..) => return Err(peer_error(message)),
        (other, ..) => return Err(peer_error(format!("unexpected answer {other:?}"))),
    };
    let partial = dir.join(format!("exe-{hash}.part"));
    let _ = std::fs::remove_file(&partial);
    let mut file = files::open_private(&partial, 0o700, true)
        .map_err(|e| RayletError::io(format!("creating {}", partial.display()), e))?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while let Some(n) = recv
        .read(&mut buf)
        .await
        .map_err(|e| peer_error(format!("fetching the executable: {e}")))?
    {
        got += n as u64;
        if got > origin.exe.len {
            break;
        }
        digest.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| RayletError::io(format!("writing {}", partial.display()), e))?;
    }
    let fetched = files::hex(digest.finish().as_ref());
    if got != origin.exe.len || fetched != *hash {
        let _ = std::fs::remove_file(&partial);
        return Err(peer_error(format!(
            "the executable arrived damaged ({got} of {} bytes, hash {fetched})",
            origin.exe.len
        )));
    }
    file.sync_all()
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|e| RayletError::io(format!("installing {}", path.display()), e))?;
    tracing::info!(
        "fetched the executable of job {} from {} ({got} bytes)",
        origin.job,
        origin.address
    );
    Ok(path.display().to_string())
}

/// Sends a local job's executable to a peer.
pub(crate) async fn serve_exe(
    shared: &Arc<Shared>,
    job: JobId,
    mut send: quinn::SendStream,
    peer: &str,
) {
    let found = match shared.node.upgrade().and_then(|n| n.job_exe(job)) {
        Some((exe, ..)) => exe_info(shared, &exe).await.map(|info| (exe, info)),
        None => Err(RayletError::Config(format!("no job {job} on this node"))),
    };
    let (exe, info) = match found {
        Ok(f) => f,
        Err(e) => {
            let reply = PeerReply::Error {
                message: e.to_string(),
            };
            let _ = wire::write(&mut send, &reply, peer).await;
            return;
        }
    };
    if wire::write_open(&mut send, &PeerReply::Exe(info), peer)
        .await
        .is_err()
    {
        return;
    }
    let Ok(mut file) = std::fs::File::open(&exe) else {
        let _ = send.reset(1u32.into());
        return;
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if send.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => {
                let _ = send.reset(1u32.into());
                return;
            }
        }
    }
    let _ = send.finish();
}

/// Hash, size and platform of an executable (hashed once per path).
async fn exe_info(shared: &Arc<Shared>, exe: &str) -> Result<ExeInfo> {
    if let Some(info) = lock(&shared.exes).get(exe) {
        return Ok(info.clone());
    }
    let path = exe.to_owned();
    let info = tokio::task::spawn_blocking(move || -> Result<ExeInfo> {
        let (hash, len) = std::fs::File::open(&path)
            .and_then(files::sha256)
            .map_err(|e| RayletError::io(format!("reading {path}"), e))?;
        Ok(ExeInfo {
            hash,
            len,
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
        })
    })
    .await
    .map_err(|e| RayletError::Config(format!("hashing {exe}: {e}")))??;
    lock(&shared.exes).insert(exe.to_owned(), info.clone());
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_lease_ids_round_trip() {
        let id = remote_lease(7, 12345);
        assert_ne!(id & REMOTE_LEASE, 0);
        assert_eq!(split_remote_lease(id), (7, 12345));
        assert_eq!(split_remote_lease(remote_lease(u16::MAX, 1)), (u16::MAX, 1));
    }
}
