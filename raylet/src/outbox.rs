//! Per-connection outboxes: how the raylet writes to its clients without ever blocking on one.
//!
//! Each client connection has an [`Outbox`]. A message is first tried straight on the socket
//! without waiting (`MSG_DONTWAIT`), which is what happens almost always: replies are small
//! and clients read them at once, so no thread is woken. When the socket buffer is full, the
//! rest queues and the connection's own writer thread (started on first need) writes it,
//! blocking only itself. A client that stops reading therefore stalls nobody else; it is
//! disconnected, with a logged reason, when one write stays blocked for [`STALL_LIMIT`] or its
//! queue grows past [`MAX_QUEUED`].
//!
//! Lock order: an outbox's own mutex is a leaf; it is never held while taking another lock,
//! and the node's state lock is never held while pushing (effects are applied after it is
//! released).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rkyv::util::AlignedVec;

/// How long one write to a client may stay blocked before the client is disconnected.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Bytes queued for one client beyond which it is disconnected (it stopped reading).
pub(crate) const MAX_QUEUED: usize = 256 << 20;
/// Bytes queued beyond which the outbox is [`Outbox::backlogged`] (output forwarding slows the
/// worker down instead of queueing without bound).
const SOFT_QUEUED: usize = 4 << 20;

/// The write side of one client connection.
pub(crate) struct Outbox {
    /// The connection number, for logs.
    conn: u64,
    stream: UnixStream,
    inner: Mutex<Inner>,
    /// Signalled when there is something to write (or the outbox closed).
    data: Condvar,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<AlignedVec>,
    /// Bytes of the first queued frame already written.
    sent: usize,
    queued: usize,
    /// The writer thread is writing (taken frames are in flight: no direct write may pass them).
    writing: bool,
    writer: bool,
    closed: bool,
    /// Frames dropped by [`Outbox::push_unless_backlogged`].
    dropped: u64,
}

impl Outbox {
    /// An outbox writing to `stream` (a handle on the connection's socket). Sets the socket's
    /// write timeout to [`STALL_LIMIT`].
    pub(crate) fn new(conn: u64, stream: UnixStream) -> Arc<Outbox> {
        if let Err(e) = stream.set_write_timeout(Some(STALL_LIMIT)) {
            tracing::warn!("connection {conn}: cannot set a write timeout: {e}");
        }
        Arc::new(Outbox {
            conn,
            stream,
            inner: Mutex::new(Inner::default()),
            data: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one encoded frame; never blocks. False when the connection is closed (or was
    /// closed now because its queue overflowed).
    pub(crate) fn push(self: &Arc<Self>, frame: AlignedVec) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        let mut sent = 0;
        if inner.queue.is_empty() && !inner.writing {
            sent = self.try_send(&frame);
            if sent == frame.len() {
                return true;
            }
            inner.sent = sent;
        }
        inner.queued += frame.len() - sent;
        inner.queue.push_back(frame);
        if inner.queued > MAX_QUEUED {
            let queued = inner.queued;
            drop(inner);
            tracing::warn!(
                "connection {}: the client stopped reading ({} MiB queued); disconnected",
                self.conn,
                queued >> 20
            );
            self.close();
            return false;
        }
        self.wake_writer(inner)
    }

    /// Whether more than a few MiB wait to be written: a sender that can wait (a worker's
    /// output, left unread in its pipe) holds back while this is true.
    pub(crate) fn backlogged(&self) -> bool {
        let inner = self.lock();
        inner.queued > SOFT_QUEUED && !inner.closed
    }

    /// Queues one encoded frame unless more than the soft limit is queued already, in which case
    /// it is dropped (and counted in the log). For output that may be lost rather than wait or
    /// grow without bound (worker output relayed from another node). False when not queued.
    pub(crate) fn push_unless_backlogged(self: &Arc<Self>, frame: AlignedVec) -> bool {
        let mut inner = self.lock();
        if inner.queued > SOFT_QUEUED {
            inner.dropped += 1;
            if inner.dropped.is_power_of_two() {
                tracing::warn!(
                    "connection {}: the client reads slowly; {} lines of worker output \
                     dropped so far",
                    self.conn,
                    inner.dropped
                );
            }
            return false;
        }
        drop(inner);
        self.push(frame)
    }

    /// Writes what it can of `frame` without waiting; returns the bytes written.
    fn try_send(&self, frame: &[u8]) -> usize {
        // SAFETY: the fd is open for as long as `self.stream` lives, and `frame` is valid for
        // reads of `frame.len()` bytes for the duration of the call.
        let n = unsafe {
            libc::send(
                self.stream.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(n).unwrap_or(0)
    }

    /// Wakes the writer thread, starting it on first need.
    fn wake_writer(self: &Arc<Self>, mut inner: MutexGuard<'_, Inner>) -> bool {
        if inner.writer {
            drop(inner);
            self.data.notify_one();
            return true;
        }
        inner.writer = true;
        drop(inner);
        let outbox = self.clone();
        let spawned = std::thread::Builder::new()
            .name("oxray-raylet-out".into())
            .spawn(move || outbox.write_loop());
        if let Err(e) = spawned {
            tracing::warn!("connection {}: cannot start its writer: {e}", self.conn);
            self.close();
            return false;
        }
        true
    }

    fn write_loop(&self) {
        loop {
            let mut inner = self.lock();
            while inner.queue.is_empty() && !inner.closed {
                inner = self.data.wait(inner).unwrap_or_else(|p| p.into_inner());
            }
            if inner.closed {
                return;
            }
            let frames = std::mem::take(&mut inner.queue);
            let mut skip = std::mem::take(&mut inner.sent);
            inner.writing = true;
            drop(inner);
            let mut written = 0;
            let mut result = Ok(());
            let mut stream = &self.stream;
            for frame in &frames {
                let rest = &frame[skip..];
                skip = 0;
                result = stream.write_all(rest);
                if result.is_err() {
                    break;
                }
                written += rest.len();
            }
            let mut inner = self.lock();
            inner.writing = false;
            inner.queued -= written.min(inner.queued);
            drop(inner);
            if let Err(e) = result {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    tracing::warn!(
                        "connection {}: the client read nothing for {} s; disconnected",
                        self.conn,
                        STALL_LIMIT.as_secs()
                    );
                }
                self.close();
                return;
            }
        }
    }

    /// Closes the connection: nothing more is written, and its reader sees the end.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.queue.clear();
        inner.queued = 0;
        inner.sent = 0;
        drop(inner);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.data.notify_all();
    }

    /// Forgets the connection (its reader ended): the writer thread, if any, ends.
    pub(crate) fn retire(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.queue.clear();
        inner.queued = 0;
        drop(inner);
        self.data.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn frames_arrive_in_order_when_the_reader_is_slow() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let outbox = Outbox::new(1, a);
        // More than a socket buffer holds, so the writer thread takes over part way.
        let frames: Vec<AlignedVec> = (0..2000u32)
            .map(|i| {
                let mut f = AlignedVec::new();
                f.extend_from_slice(&i.to_le_bytes());
                f.resize(1024, (i % 251) as u8);
                f
            })
            .collect();
        for f in &frames {
            assert!(outbox.push(f.clone()));
        }
        let mut got = vec![0u8; 2000 * 1024];
        b.read_exact(&mut got).unwrap();
        for (i, chunk) in got.chunks(1024).enumerate() {
            assert_eq!(chunk, &frames[i][..], "frame {i} intact and in order");
        }
        outbox.retire();
    }

    #[test]
    fn pushing_to_a_client_that_reads_nothing_never_blocks() {
        let (a, _b) = UnixStream::pair().unwrap();
        let outbox = Outbox::new(2, a);
        let mut big = AlignedVec::new();
        big.resize(1 << 20, 7);
        for _ in 0..64 {
            assert!(outbox.push(big.clone()), "queued, not blocked");
        }
        assert!(outbox.lock().queued > 0, "the rest waits in the queue");
        outbox.close();
        assert!(!outbox.push(AlignedVec::new()), "a closed outbox refuses");
    }
}
