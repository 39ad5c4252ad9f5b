//! Byte pipes from a local core worker to a socket on another node.
//!
//! Core workers talk to each other over Unix sockets (task pushes, actor calls, owner
//! requests). When the other end is on another node its address is
//! `peer://HOST:PORT/unix:@NAME`; the core worker then connects to its own raylet and asks for
//! a tunnel, the raylet opens a QUIC stream to that node's raylet, which connects the stream to
//! the named socket, and from then on both raylets copy bytes. The core workers' protocol is
//! unchanged, and only the raylets need the cluster secret.

use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use oxray_common::frame;
use oxray_common::peer::{PeerReply, PeerRequest};
use oxray_common::protocol::{ErrorKind, FromRaylet};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::{peers, wire, Shared};
use crate::error::{RayletError, Result};

/// Buffer per direction of a pipe.
const PIPE_BUFFER: usize = 256 << 10;

/// Splits `peer://HOST:PORT/unix:@NAME` into the peer and the socket there.
pub(crate) fn parse(target: &str) -> Option<(&str, &str)> {
    let rest = target.strip_prefix("peer://")?;
    let slash = rest.find("/unix:@")?;
    Some((&rest[..slash], &rest[slash + 1..]))
}

/// A local client asked for a tunnel to `target`: connect it, answer `TunnelOpen` (or `Error`),
/// then copy bytes until either side closes.
pub(crate) async fn open(shared: Arc<Shared>, stream: StdUnixStream, target: String) {
    shared.tunnels.fetch_add(1, Ordering::Relaxed);
    let far = connect_far(&shared, &target).await;
    let Ok(mut local) = to_tokio(stream) else {
        return;
    };
    let reply = match &far {
        Ok(_) => FromRaylet::TunnelOpen,
        Err(e) => FromRaylet::Error {
            req: 0,
            kind: ErrorKind::BadRequest,
            message: e.to_string(),
        },
    };
    let Ok(buf) = frame::encode(&reply) else {
        return;
    };
    if local.write_all(&buf).await.is_err() {
        return;
    }
    if let Ok((send, recv)) = far {
        pipe(local, send, recv).await;
    }
}

async fn connect_far(
    shared: &Arc<Shared>,
    target: &str,
) -> Result<(quinn::SendStream, quinn::RecvStream)> {
    let (peer, socket) = parse(target).ok_or_else(|| {
        RayletError::Config(format!(
            "`{target}` is not a tunnel target (peer://HOST:PORT/unix:@NAME)"
        ))
    })?;
    let conn = peers::connection(shared, peer).await?;
    let req = PeerRequest::Tunnel {
        target: socket.to_owned(),
    };
    match wire::open(&conn, &req, peer).await? {
        (PeerReply::Ok, send, recv) => Ok((send, recv)),
        (PeerReply::Error { message } | PeerReply::Refused { reason: message }, ..) => {
            Err(RayletError::Peer {
                peer: peer.to_owned(),
                reason: message,
            })
        }
        (other, ..) => Err(RayletError::Peer {
            peer: peer.to_owned(),
            reason: format!("unexpected answer to Tunnel: {other:?}"),
        }),
    }
}

/// A peer asks for a pipe to a worker socket of this node.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    target: String,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    shared.tunnels.fetch_add(1, Ordering::Relaxed);
    let local = connect_local(shared, &target);
    let reply = match &local {
        Ok(_) => PeerReply::Ok,
        Err(message) => PeerReply::Error {
            message: message.clone(),
        },
    };
    if wire::write_open(&mut send, &reply, &target).await.is_err() {
        return;
    }
    match local {
        Ok(stream) => pipe(stream, send, recv).await,
        Err(_) => {
            let _ = send.finish();
        }
    }
}

/// Connects to a worker socket of this node's session; nothing else may be reached.
fn connect_local(shared: &Shared, target: &str) -> std::result::Result<UnixStream, String> {
    let node = shared.node.upgrade().ok_or("the node is stopping")?;
    let prefix = format!("unix:@{}-w", node.config.session);
    if !target.starts_with(&prefix) {
        return Err(format!(
            "{target} is not a worker socket of this node (session {})",
            node.config.session
        ));
    }
    let stream = crate::server::connect(target)
        .map_err(|e| format!("connecting {target}: {e} (the process has exited)"))?;
    to_tokio(stream).map_err(|e| format!("connecting {target}: {e}"))
}

/// A blocking Unix stream as a tokio one (call on the cluster runtime).
pub(crate) fn to_tokio(stream: StdUnixStream) -> std::io::Result<UnixStream> {
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

/// Copies bytes both ways until either side closes.
pub(crate) async fn pipe(mut local: UnixStream, send: quinn::SendStream, recv: quinn::RecvStream) {
    let mut far = tokio::io::join(recv, send);
    let _ =
        tokio::io::copy_bidirectional_with_sizes(&mut local, &mut far, PIPE_BUFFER, PIPE_BUFFER)
            .await;
}
