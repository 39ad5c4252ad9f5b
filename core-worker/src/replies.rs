//! Replies from the workers this process sends work to (leased workers and actors), read on
//! the process's event loop.
//!
//! A process that calls a thousand actors keeps a thousand connections; each is a [`Replies`]
//! source on one [`EventLoop`] (started on first use) instead of a reader thread. Its handlers
//! run on the loop's thread and must not block there: settling a result and sending a leased
//! worker its next task (it is idle, so it reads at once) are fine; writing a batch of actor
//! calls, which may fill the socket, is handed to another thread
//! (see `ActorCalls::pump`).
//!
//! [`Frames`] is the source itself, for any message type; a worker's incoming connections
//! beyond its first are read with it too (`crate::incoming`).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use oxray_common::event_loop::{EventLoop, Next, Source};
use oxray_common::frame::{self, FrameError, MAX_FRAME};
use oxray_common::frame_reader::{DontWait, FrameReader, ReadState};
use oxray_common::protocol::FromWorker;

/// Frames handled in one turn before other connections get theirs.
const REPLIES_PER_TURN: usize = 256;

/// Called with each reply; false stops reading (the process is going away).
pub(crate) type OnReply = Box<dyn FnMut(FromWorker) -> bool + Send>;
/// Called once when the connection ends, with the reason.
pub(crate) type OnEnd = Box<dyn FnOnce(String) + Send>;

/// Replies from a leased worker or an actor, read on the event loop.
pub(crate) type Replies = Frames<FromWorker>;

impl Replies {
    /// Reads `stream` (a handle on the connection; the writer keeps its own) on `events`. If
    /// the loop has stopped (the process is shutting down), `on_end` runs at once.
    pub(crate) fn watch(events: &EventLoop, stream: UnixStream, on_reply: OnReply, on_end: OnEnd) {
        Frames::watch_with(
            events,
            stream,
            "worker",
            frame::decode::<FromWorker>,
            on_reply,
            on_end,
        );
    }
}

/// One connection's incoming frames, each decoded as an `M`, as an event-loop source: replies
/// here, and the messages of a worker's connections beyond its first (`crate::incoming`).
pub(crate) struct Frames<M> {
    stream: UnixStream,
    reader: FrameReader,
    /// Who is at the other end, for the reasons given to `on_end`.
    peer: &'static str,
    decode: fn(&[u8]) -> Result<M, FrameError>,
    on_msg: Box<dyn FnMut(M) -> bool + Send>,
    on_end: OnEnd,
    why: Option<String>,
}

impl<M: 'static> Frames<M> {
    /// Reads `stream` on `events`, handing each message to `on_msg` (false: stop, the process
    /// is going away); `on_end` gets why the connection ended (at once if the loop stopped).
    pub(crate) fn watch_with(
        events: &EventLoop,
        stream: UnixStream,
        peer: &'static str,
        decode: fn(&[u8]) -> Result<M, FrameError>,
        on_msg: Box<dyn FnMut(M) -> bool + Send>,
        on_end: OnEnd,
    ) {
        let frames = Frames {
            stream,
            reader: FrameReader::new(MAX_FRAME),
            peer,
            decode,
            on_msg,
            on_end,
            why: None,
        };
        if let Err(frames) = events.add(Box::new(frames)) {
            frames.removed();
        }
    }

    fn end(&mut self, why: String) -> Next {
        self.why = Some(why);
        Next::Remove
    }
}

impl<M: 'static> Source for Frames<M> {
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn ready(&mut self, ended: bool) -> Next {
        let mut handled = 0;
        let mut failure = None;
        let mut going = false;
        let (decode, on_msg) = (self.decode, &mut self.on_msg);
        let on_frame = |payload: &[u8]| {
            match decode(payload) {
                Ok(msg) => {
                    if !on_msg(msg) {
                        going = true;
                        return false;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            }
            handled += 1;
            handled < REPLIES_PER_TURN
        };
        // After the peer's close, read until the read says so (see `Source::ready`).
        let mut stream = DontWait(&self.stream);
        let read = if ended {
            self.reader.read_to_block(&mut stream, on_frame)
        } else {
            self.reader.read(&mut stream, on_frame)
        };
        if going {
            return self.end("the process is shutting down".into());
        }
        if let Some(e) = failure {
            return self.end(format!("the {} connection failed: {e}", self.peer));
        }
        match read {
            Ok(ReadState::Drained) => Next::Keep,
            Ok(ReadState::Stopped) => Next::WakeAt(Instant::now()),
            Ok(ReadState::Closed) | Err(FrameError::Closed) => {
                self.end(format!("the {} process exited", self.peer))
            }
            Err(e) => self.end(format!("the {} connection failed: {e}", self.peer)),
        }
    }

    fn removed(self: Box<Self>) {
        let why = self
            .why
            .unwrap_or_else(|| "the process is shutting down".into());
        (self.on_end)(why);
    }
}
