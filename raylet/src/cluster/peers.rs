//! Connections to other raylets, one per peer pair: dialed on first use, or accepted (a peer's
//! endpoint dials from the address it listens on, so an accepted connection is found again by
//! that address), and the dispatch of every stream a peer opens on either kind.

use std::net::SocketAddr;
use std::sync::Arc;

use oxray_common::peer::{PeerReply, PeerRequest};

use super::{actors, dial, head, jobs, lock, objects, placement, resolve, tunnel, wire, Shared};
use crate::error::{RayletError, Result};

/// The connection to the raylet at `address` (`host:port`), dialed if there is none.
pub(crate) async fn connection(shared: &Arc<Shared>, address: &str) -> Result<quinn::Connection> {
    let addr = resolve(address).await?;
    if let Some(c) = live(shared, addr) {
        return Ok(c);
    }
    let _one_dial = shared.dialing.lock().await;
    if let Some(c) = live(shared, addr) {
        return Ok(c);
    }
    let config = &shared.config;
    let conn = dial(&shared.endpoint, address, &config.name, &config.secret).await?;
    lock(&shared.peers).insert(addr, conn.clone());
    tokio::spawn(serve_streams(
        conn.clone(),
        shared.clone(),
        address.to_owned(),
    ));
    Ok(conn)
}

/// The peer address of the live node with index `index`.
pub(crate) fn peer_address(shared: &Shared, index: u16) -> Result<String> {
    let node = shared.node.upgrade().ok_or(RayletError::Stopping)?;
    match node.peer_by_index(index) {
        Some(n) if n.alive => Ok(n.peer_address),
        Some(n) => Err(RayletError::Peer {
            peer: n.peer_address,
            reason: format!("node {} (index {index}) is dead", n.id),
        }),
        None => Err(RayletError::Peer {
            peer: format!("node index {index}"),
            reason: "no such node in the cluster".into(),
        }),
    }
}

fn live(shared: &Shared, addr: SocketAddr) -> Option<quinn::Connection> {
    let mut peers = lock(&shared.peers);
    match peers.get(&addr) {
        Some(c) if c.close_reason().is_none() => Some(c.clone()),
        Some(_) => {
            peers.remove(&addr);
            None
        }
        None => None,
    }
}

/// Remembers an accepted, authenticated connection, so this node's requests to that peer use
/// it too.
pub(crate) fn remember(shared: &Shared, conn: &quinn::Connection) {
    lock(&shared.peers)
        .entry(conn.remote_address())
        .or_insert_with(|| conn.clone());
}

/// Serves the streams a peer opens on an authenticated connection, each in its own task.
/// (Boxed: serving a stream may dial a peer, which starts this again.)
pub(crate) fn serve_streams(
    conn: quinn::Connection,
    shared: Arc<Shared>,
    remote: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(serve_streams_inner(conn, shared, remote))
}

async fn serve_streams_inner(conn: quinn::Connection, shared: Arc<Shared>, remote: String) {
    let from = conn.remote_address();
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let shared = shared.clone();
        let remote = remote.clone();
        tokio::spawn(async move {
            let req = match wire::read::<PeerRequest>(&mut recv, &remote).await {
                Ok(req) => req,
                Err(e) => {
                    // A malformed message: answer with the reason, keep the connection.
                    let reply = PeerReply::Error {
                        message: e.to_string(),
                    };
                    let _ = wire::write(&mut send, &reply, &remote).await;
                    return;
                }
            };
            dispatch(&shared, req, send, recv, &remote, from).await;
        });
    }
    lock(&shared.peers).retain(|_, c| c.stable_id() != conn.stable_id());
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: PeerRequest,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    remote: &str,
    from: SocketAddr,
) {
    let reply = match req {
        PeerRequest::Tunnel { target } => return tunnel::serve(shared, target, send, recv).await,
        PeerRequest::Attach {
            origin,
            origin_address,
            job,
            namespace,
            exe,
            job_key,
        } => {
            let origin = jobs::Origin {
                node: origin,
                address: origin_address,
                job,
                namespace,
                exe,
                job_key,
            };
            return jobs::attach(shared, origin, send, recv).await;
        }
        PeerRequest::FetchExe { job } => return jobs::serve_exe(shared, job, send, remote).await,
        PeerRequest::Chunk { id, offset, len } => {
            return objects::serve_chunk(shared, id, offset, len, send, remote).await
        }
        PeerRequest::ObjectInfo { id } => objects::info(shared, id, from),
        PeerRequest::Actor {
            id,
            wait_alive,
            kill,
        } => actors::serve(shared, id, wait_alive, kill).await,
        PeerRequest::Delete { ids } => {
            objects::delete_here(shared, ids);
            PeerReply::Ok
        }
        PeerRequest::OwnerGone { owner } => {
            objects::delete_owned_here(shared, owner);
            PeerReply::Ok
        }
        PeerRequest::Placement(request) => placement::serve(shared, request).await,
        PeerRequest::Bundles(op) => placement::serve_bundles(shared, op),
        other => head::handle(shared, other),
    };
    let _ = wire::write(&mut send, &reply, remote).await;
}
