//! One framed message each way on a QUIC bidirectional stream.

use oxray_common::frame::{self, MAX_FRAME};
use oxray_common::peer::{PeerReply, PeerRequest};
use oxray_object_store::HeapBytes;

use crate::error::{RayletError, Result};

/// Frame header length (see `oxray_common::frame`).
const HEADER: usize = 16;

fn peer_error(peer: &str, reason: impl std::fmt::Display) -> RayletError {
    RayletError::Peer {
        peer: peer.to_owned(),
        reason: reason.to_string(),
    }
}

/// Reads the whole stream (one frame) and decodes it; never panics on what the peer sent.
pub async fn read<M: frame::Message>(recv: &mut quinn::RecvStream, peer: &str) -> Result<M>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<M, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let bytes = recv
        .read_to_end(MAX_FRAME + HEADER)
        .await
        .map_err(|e| peer_error(peer, format!("reading a message: {e}")))?;
    if bytes.len() < HEADER {
        return Err(peer_error(peer, "truncated message"));
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if len != bytes.len() - HEADER {
        return Err(peer_error(
            peer,
            format!(
                "message header says {len} bytes, {} arrived",
                bytes.len() - HEADER
            ),
        ));
    }
    // rkyv reads in place and needs its alignment: copy into an aligned buffer.
    let mut aligned = HeapBytes::new();
    aligned.extend_from_slice(&bytes[HEADER..]);
    frame::decode(&aligned).map_err(|e| peer_error(peer, e))
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
    let buf = frame::encode(msg).map_err(|e| peer_error(peer, e))?;
    send.write_all(&buf)
        .await
        .map_err(|e| peer_error(peer, format!("writing a message: {e}")))?;
    send.finish()
        .map_err(|e| peer_error(peer, format!("finishing a message: {e}")))?;
    Ok(())
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
