//! Reading frames from a nonblocking stream a piece at a time, for [`crate::event_loop`] sources.
//!
//! [`crate::frame::read`] blocks until a whole frame is there; a source on an event loop must
//! take what has arrived and come back later. A [`FrameReader`] keeps the partial header and
//! payload between calls. Like the blocking reader, its payload buffer grows only with bytes
//! that arrived, and an announced length over the limit is refused before any of it is read.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use rkyv::util::AlignedVec;

use crate::frame::{payload_len, FrameError, HEADER, MAX_FRAME, READ_CHUNK};

/// Why [`FrameReader::read`] returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// Everything that had arrived was taken; call again when readable.
    Drained,
    /// The frame callback asked to stop; call again to go on (nothing was lost).
    Stopped,
    /// The peer closed the stream between frames.
    Closed,
}

/// Incremental frame reader over a nonblocking stream (see the module docs).
pub struct FrameReader {
    header: [u8; HEADER],
    header_got: usize,
    /// The payload length once the header is complete.
    len: Option<usize>,
    payload: AlignedVec,
    chunk: Vec<u8>,
    pos: usize,
    end: usize,
    max: usize,
    exact: bool,
}

impl FrameReader {
    /// A reader of frames up to `max` bytes (capped at [`MAX_FRAME`]).
    pub fn new(max: usize) -> FrameReader {
        FrameReader {
            header: [0; HEADER],
            header_got: 0,
            len: None,
            payload: AlignedVec::new(),
            chunk: Vec::new(),
            pos: 0,
            end: 0,
            max: max.min(MAX_FRAME),
            exact: false,
        }
    }

    /// In exact mode nothing past the current frame is read from the stream, so the bytes
    /// after it are left for whoever takes the stream next (a tunnel's first message).
    pub fn set_exact(&mut self, exact: bool) {
        self.exact = exact;
    }

    /// Changes the largest frame accepted from now on.
    pub fn set_max(&mut self, max: usize) {
        self.max = max.min(MAX_FRAME);
    }

    /// Whether part of a frame has been read.
    pub fn mid_frame(&self) -> bool {
        self.header_got > 0
    }

    /// Reads what `r` has and calls `on_frame` with each complete payload (16-byte aligned,
    /// ready for [`crate::frame::decode`]) until the read would block, the stream closes, or
    /// `on_frame` returns false.
    ///
    /// A read that returned less than asked for counts as having drained the stream, as it
    /// does for sockets (a socket read takes everything queued, and each later arrival is a
    /// new readiness edge): that saves a read that would only say "would block" on every
    /// message, on the path of every reply. Use [`FrameReader::read_to_block`] for streams
    /// without that property.
    pub fn read<R: Read>(
        &mut self,
        r: &mut R,
        on_frame: impl FnMut(&[u8]) -> bool,
    ) -> Result<ReadState, FrameError> {
        self.read_inner(r, on_frame, true)
    }

    /// [`FrameReader::read`] that reads on until the stream says it would block.
    pub fn read_to_block<R: Read>(
        &mut self,
        r: &mut R,
        on_frame: impl FnMut(&[u8]) -> bool,
    ) -> Result<ReadState, FrameError> {
        self.read_inner(r, on_frame, false)
    }

    fn read_inner<R: Read>(
        &mut self,
        r: &mut R,
        mut on_frame: impl FnMut(&[u8]) -> bool,
        short_drains: bool,
    ) -> Result<ReadState, FrameError> {
        let mut drained = false;
        loop {
            while self.pos < self.end {
                if self.take_buffered()? && !self.deliver(&mut on_frame) {
                    return Ok(ReadState::Stopped);
                }
            }
            // A zero-length frame is complete with its header.
            if self.len == Some(0) && !self.deliver(&mut on_frame) {
                return Ok(ReadState::Stopped);
            }
            if drained {
                return Ok(ReadState::Drained);
            }
            let want = if self.exact {
                match self.len {
                    None => HEADER - self.header_got,
                    Some(len) => (len - self.payload.len()).min(READ_CHUNK),
                }
            } else {
                READ_CHUNK
            };
            if self.chunk.len() < want {
                self.chunk.resize(want, 0);
            }
            self.pos = 0;
            self.end = 0;
            match r.read(&mut self.chunk[..want]) {
                Ok(0) if self.mid_frame() => {
                    return Err(FrameError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed in the middle of a frame",
                    )))
                }
                Ok(0) => return Ok(ReadState::Closed),
                Ok(n) => {
                    self.end = n;
                    drained = short_drains && n < want;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadState::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }

    /// Moves buffered bytes into the header or payload; true when a frame is complete.
    fn take_buffered(&mut self) -> Result<bool, FrameError> {
        let avail = &self.chunk[self.pos..self.end];
        match self.len {
            None => {
                let n = (HEADER - self.header_got).min(avail.len());
                self.header[self.header_got..self.header_got + n].copy_from_slice(&avail[..n]);
                self.header_got += n;
                self.pos += n;
                if self.header_got < HEADER {
                    return Ok(false);
                }
                let len = payload_len(&self.header);
                if len > self.max {
                    return Err(FrameError::TooLarge(len));
                }
                self.len = Some(len);
                self.payload.clear();
                Ok(len == 0)
            }
            Some(len) => {
                let n = (len - self.payload.len()).min(avail.len());
                self.payload.extend_from_slice(&avail[..n]);
                self.pos += n;
                Ok(self.payload.len() == len)
            }
        }
    }

    fn deliver(&mut self, on_frame: &mut impl FnMut(&[u8]) -> bool) -> bool {
        self.header_got = 0;
        self.len = None;
        let go = on_frame(&self.payload);
        self.payload.clear();
        go
    }
}

/// Reads a socket without blocking (`recv` with `MSG_DONTWAIT`) while the socket itself stays
/// blocking: its other handles (a writer thread's, a tunnel's after hand-over) keep blocking
/// semantics, which setting `O_NONBLOCK` on the shared file would take from them.
pub struct DontWait<'a>(pub &'a UnixStream);

impl Read for DontWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes and the descriptor is open for
        // as long as the borrowed stream lives.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;
    use crate::protocol::ToRaylet;

    /// A stream that hands out its bytes in fixed-size pieces, then would block (or closes).
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        piece: usize,
        close: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.bytes.len() {
                return if self.close {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = self.piece.min(buf.len()).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn frames(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for req in 0..n {
            out.extend_from_slice(&frame::encode(&ToRaylet::Status { req }).unwrap());
        }
        out
    }

    #[test]
    fn frames_in_any_pieces_come_out_whole_and_in_order() {
        for piece in [1, 3, 16, 17, 1000, 1 << 20] {
            let mut stream = Trickle {
                bytes: frames(50),
                at: 0,
                piece,
                close: true,
            };
            let mut reader = FrameReader::new(MAX_FRAME);
            let mut got = Vec::new();
            let state = reader
                .read_to_block(&mut stream, |p| {
                    got.push(frame::decode::<ToRaylet>(p).unwrap());
                    true
                })
                .unwrap();
            assert_eq!(state, ReadState::Closed);
            let reqs: Vec<u64> = got
                .iter()
                .map(|m| match m {
                    ToRaylet::Status { req } => *req,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(reqs, (0..50).collect::<Vec<_>>(), "piece {piece}");
        }
    }

    /// Counts the reads made of a stream.
    struct Counting<R>(R, usize);

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 += 1;
            self.0.read(buf)
        }
    }

    #[test]
    fn a_short_read_ends_the_turn_without_a_read_that_would_block() {
        let stream = Trickle {
            bytes: frames(3),
            at: 0,
            piece: 1 << 20,
            close: false,
        };
        let mut counting = Counting(stream, 0);
        let mut reader = FrameReader::new(MAX_FRAME);
        let mut n = 0;
        let state = reader
            .read(&mut counting, |_| {
                n += 1;
                true
            })
            .unwrap();
        assert_eq!((state, n, counting.1), (ReadState::Drained, 3, 1));
        let state = reader.read_to_block(&mut counting, |_| true).unwrap();
        assert_eq!((state, counting.1), (ReadState::Drained, 2));
    }

    #[test]
    fn exact_mode_reads_nothing_past_the_frame() {
        let mut bytes = frames(1);
        let first = bytes.len();
        bytes.extend_from_slice(b"tunnel bytes");
        let mut stream = Trickle {
            bytes,
            at: 0,
            piece: 1 << 20,
            close: false,
        };
        let mut reader = FrameReader::new(MAX_FRAME);
        reader.set_exact(true);
        let state = reader.read(&mut stream, |_| false).unwrap();
        assert_eq!(state, ReadState::Stopped);
        assert_eq!(stream.at, first);
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut stream = Trickle {
            bytes: frames(1),
            at: 0,
            piece: 1 << 20,
            close: true,
        };
        let mut reader = FrameReader::new(4);
        let e = reader.read(&mut stream, |_| true).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge(_)), "{e}");

        let mut bytes = frames(1);
        bytes.pop();
        let mut stream = Trickle {
            bytes,
            at: 0,
            piece: 7,
            close: true,
        };
        let mut reader = FrameReader::new(MAX_FRAME);
        let e = reader.read_to_block(&mut stream, |_| true).unwrap_err();
        assert!(matches!(e, FrameError::Io(_)), "{e}");
        // Would block half-way: no error, the rest may come.
        let mut bytes = frames(2);
        bytes.truncate(bytes.len() - 3);
        let mut stream = Trickle {
            bytes,
            at: 0,
            piece: 5,
            close: false,
        };
        let mut reader = FrameReader::new(MAX_FRAME);
        let mut n = 0;
        assert_eq!(
            reader
                .read_to_block(&mut stream, |_| {
                    n += 1;
                    true
                })
                .unwrap(),
            ReadState::Drained
        );
        assert_eq!(n, 1);
        assert!(reader.mid_frame());
    }
}
