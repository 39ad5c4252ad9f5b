//! One framed message each way on a QUIC bidirectional stream.

use oxray_common::frame::{self, HEADER, MAX_FRAME, READ_CHUNK};
use oxray_common::peer::{PeerReply, PeerRequest};
use oxray_object_store::HeapBytes;

use crate::error::{RayletError, Result};

/// The largest first message a peer may send before it has proved the cluster secret (an
/// `Auth` is well under 1 KiB).
pub const MAX_AUTH_FRAME: usize = 4 << 10;

fn peer_error(peer: &str, reason: impl std::fmt::Display) -> RayletError {
    RayletError::Peer {
        peer: peer.to_owned(),
        reason: reason.to_string(),
    }
}

/// Reads exactly one frame from the stream and decodes it; never panics on what the peer sent.
/// The stream stays open (requests such as `Tunnel` carry bytes after their frame).
pub async fn read<M: frame::Message>(recv: &mut quinn::RecvStream, peer: &str) -> Result<M>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<M, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    read_limited(recv, peer, MAX_FRAME).await
}

/// [`read`] of a frame of at most `max` bytes: a longer announced length is refused before any
/// of it is read, and the buffer grows only with bytes that arrived (a peer announcing 64 MiB and
/// sending nothing costs [`READ_CHUNK`], not 64 MiB).
pub async fn read_limited<M: frame::Message>(
    recv: &mut quinn::RecvStream,
    peer: &str,
    max: usize,
) -> Result<M>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<M, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut header = [0u8; HEADER];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| peer_error(peer, format!("reading a message: {e}")))?;
    let len = frame::payload_len(&header);
    let max = max.min(MAX_FRAME);
    if len > max {
        return Err(peer_error(
            peer,
            format!("message of {len} bytes is over the {max}-byte limit"),
        ));
    }
    // rkyv reads in place and needs its alignment: read into an aligned buffer.
    let mut aligned = HeapBytes::new();
    while aligned.len() < len {
        let start = aligned.len();
        let end = len.min(start + READ_CHUNK);
        aligned.resize(end, 0);
        recv.read_exact(&mut aligned[start..end])
            .await
            .map_err(|e| peer_error(peer, format!("message truncated: {e}")))?;
    }
    frame::decode(&aligned).map_err(|e| peer_error(peer, e))
}

/// Writes one frame and keeps the stream open.
pub async fn write_open<M: frame::Message>(
    send: &mut quinn::SendStream,
    msg: &M,
    peer: &str,
) -> Result<()>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<M, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let buf = frame::encode(msg).map_err(|e| peer_error(peer, e))?;
    send.write_all(&buf)
        .await
        .map_err(|e| peer_error(peer, format!("writing a message: {e}")))
}

/// Writes one frame and finishes the stream.
pub async fn write<M: frame::Message>(
    send: &mut quinn::SendStream,
    msg: &M,
    peer: &str,
) -> Result<()>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<M, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    write_open(send, msg, peer).await?;
    send.finish()
        .map_err(|e| peer_error(peer, format!("finishing a message: {e}")))?;
    Ok(())
}

/// Sends `req` on a new stream (kept open) and waits for the first reply frame; returns the
/// stream for what follows (raw bytes of `Chunk` and `FetchExe`, pipes of `Tunnel` and `Attach`).
pub async fn open(
    conn: &quinn::Connection,
    req: &PeerRequest,
    peer: &str,
) -> Result<(PeerReply, quinn::SendStream, quinn::RecvStream)> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| peer_error(peer, format!("opening a stream: {e}")))?;
    write_open(&mut send, req, peer).await?;
    let reply = read(&mut recv, peer).await?;
    Ok((reply, send, recv))
}

/// Sends `req` on a new stream and waits for the reply.
pub async fn request(conn: &quinn::Connection, req: &PeerRequest, peer: &str) -> Result<PeerReply> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| peer_error(peer, format!("opening a stream: {e}")))?;
    write(&mut send, req, peer).await?;
    read(&mut recv, peer).await
}
