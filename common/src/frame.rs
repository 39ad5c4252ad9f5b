//! Length-prefixed rkyv frames over a byte stream.
//!
//! A frame is a 16-byte header (payload length as a little-endian `u32`, then zeros) followed by
//! the rkyv encoding of one message. The header is 16 bytes so the payload keeps rkyv's 16-byte
//! alignment in the sender's buffer, and the whole frame leaves in one `write`.

use std::io::{self, Read, Write};

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Largest frame accepted (inline values are ≤ 100 KiB; task specs carry a few of them).
pub const MAX_FRAME: usize = 64 << 20;
/// Bytes of a frame's header (the payload length, little-endian u32, then padding for alignment).
pub const HEADER: usize = 16;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// Reading failed.
    #[error("reading a frame: {0}")]
    Io(#[from] io::Error),
    /// The header announced more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Messages that can be framed.
pub trait Message:
    Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>> + Sized
where
    Self::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<Self, HighDeserializer<rancor::Error>>,
{
}

impl<T> Message for T
where
    T: Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
}

/// Encodes `msg` as one frame, ready to write.
pub fn encode<M: Message>(msg: &M) -> io::Result<AlignedVec>
where
    M::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<M, HighDeserializer<rancor::Error>>,
{
    let mut buf = AlignedVec::<16>::with_capacity(256);
    buf.extend_from_slice(&[0u8; HEADER]);
    let mut buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let len = buf.len() - HEADER;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the {MAX_FRAME}-byte frame limit"),
        ));
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// Writes `msg` as one frame.
pub fn write<M: Message, W: Write>(w: &mut W, msg: &M) -> io::Result<()>
where
    M::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<M, HighDeserializer<rancor::Error>>,
{
    let buf = encode(msg)?;
    w.write_all(&buf)
}

/// Bytes read at a time into a frame's buffer: the buffer grows only with bytes that arrived,
/// so a peer announcing a large frame and sending nothing costs this much, not the frame.
pub const READ_CHUNK: usize = 64 << 10;

/// Reads one frame's payload into `buf` (reused between calls).
pub fn read_payload<R: Read>(r: &mut R, buf: &mut AlignedVec) -> Result<(), FrameError> {
    read_payload_limited(r, buf, MAX_FRAME)
}

/// Reads one frame's payload of at most `max` bytes into `buf`; a longer announced length is
/// `TooLarge` before any of it is read. The buffer grows by at most [`READ_CHUNK`] ahead of the
/// bytes received.
pub fn read_payload_limited<R: Read>(
    r: &mut R,
    buf: &mut AlignedVec,
    max: usize,
) -> Result<(), FrameError> {
    let mut header = [0u8; HEADER];
    match r.read_exact(&mut header[..1]) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        other => other?,
    }
    r.read_exact(&mut header[1..])?;
    let len = payload_len(&header);
    if len > max.min(MAX_FRAME) {
        return Err(FrameError::TooLarge(len));
    }
    buf.clear();
    while buf.len() < len {
        let start = buf.len();
        let end = len.min(start + READ_CHUNK);
        buf.resize(end, 0);
        r.read_exact(&mut buf[start..end])?;
    }
    Ok(())
}

/// The payload length a frame header announces.
pub fn payload_len(header: &[u8; HEADER]) -> usize {
    u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize
}

/// Decodes a payload read by [`read_payload`], validating it first.
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, FrameError>
where
    M::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<M, HighDeserializer<rancor::Error>>,
{
    rkyv::from_bytes::<M, rancor::Error>(payload).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads and decodes one frame.
pub fn read<M: Message, R: Read>(r: &mut R, buf: &mut AlignedVec) -> Result<M, FrameError>
where
    M::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<M, HighDeserializer<rancor::Error>>,
{
    read_payload(r, buf)?;
    decode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientKind, ToRaylet};
    use crate::WorkerId;

    #[test]
    fn round_trip_and_garbage_is_an_error_not_a_panic() {
        let msg = ToRaylet::Register {
            worker: WorkerId(5),
            pid: 42,
            kind: ClientKind::Driver,
            exe: "/bin/x".into(),
            listen: String::new(),
            namespace: String::new(),
            job_key: Vec::new(),
        };
        let mut wire = Vec::new();
        write(&mut wire, &msg).unwrap();
        let mut buf = AlignedVec::new();
        let back: ToRaylet = read(&mut wire.as_slice(), &mut buf).unwrap();
        assert!(matches!(back, ToRaylet::Register { pid: 42, .. }));

        // Flip payload bytes: every corruption decodes to an error or some message, never a panic.
        for i in HEADER..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0xff;
            let _ = read::<ToRaylet, _>(&mut bad.as_slice(), &mut buf);
        }
        let mut huge = vec![0u8; HEADER];
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read::<ToRaylet, _>(&mut huge.as_slice(), &mut buf),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read::<ToRaylet, _>(&mut [].as_slice(), &mut buf),
            Err(FrameError::Closed)
        ));
        // A frame announced at 64 MiB whose sender sends 3 bytes: the buffer grows with what
        // arrived, not with what was announced.
        let mut liar = vec![0u8; HEADER];
        liar[..4].copy_from_slice(&(64u32 << 20).to_le_bytes());
        liar.extend_from_slice(&[1, 2, 3]);
        let mut fresh = AlignedVec::new();
        assert!(read::<ToRaylet, _>(&mut liar.as_slice(), &mut fresh).is_err());
        assert!(
            fresh.capacity() <= 2 * READ_CHUNK,
            "buffer grew to {} bytes for 3 received",
            fresh.capacity()
        );
        liar[..4].copy_from_slice(&(5000u32).to_le_bytes());
        assert!(matches!(
            read_payload_limited(&mut liar.as_slice(), &mut fresh, 4096),
            Err(FrameError::TooLarge(5000))
        ));
        let junk = [4u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert!(matches!(
            read::<ToRaylet, _>(&mut junk.as_slice(), &mut buf),
            Err(FrameError::Malformed(_))
        ));
    }
}
