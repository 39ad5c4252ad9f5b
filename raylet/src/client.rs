//! One local client connection (a driver, a worker, a CLI), served on the node's event loop.
//!
//! A connection costs a table entry in the loop, not a thread. Its first frame is read exactly
//! (nothing after it: a tunnel's bytes belong to the tunnel), small, and within
//! [`FIRST_MESSAGE_DEADLINE`]; after `Register` the rest are read in large chunks and each is an
//! event on the node ([`Node::handle`]), which never blocks: replies go to the client's outbox.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use oxray_common::event_loop::{Next, Source};
use oxray_common::frame::{self, FrameError, MAX_FRAME};
use oxray_common::frame_reader::{DontWait, FrameReader, ReadState};
use oxray_common::protocol::{ErrorKind, FromRaylet, ToRaylet};

use crate::node::Node;
use crate::outbox::Outbox;
use crate::server::{Counted, Unregistered, FIRST_MESSAGE_DEADLINE, MAX_FIRST_FRAME};

/// Frames handled in one turn before other sources get theirs (a client that writes without
/// pause must not starve the rest of the node).
const FRAMES_PER_TURN: usize = 256;

/// A client connection as an event-loop source.
pub(crate) struct Client {
    node: Arc<Node>,
    stream: UnixStream,
    reader: FrameReader,
    conn: u64,
    phase: Phase,
    /// Its place in the connection cap, given back when it goes.
    _counted: Option<Counted>,
}

enum Phase {
    /// Before the first message, which must come by `deadline`.
    First {
        deadline: Instant,
        _unregistered: Option<Unregistered>,
    },
    /// Registered: messages are node events.
    Registered,
    /// Asked for a tunnel: the stream goes to the cluster link once off the loop.
    Tunnel(String),
    /// Controls submitted jobs: the stream goes to the job service once off the loop.
    Jobs,
    /// Done with, nothing more to do.
    Gone,
}

impl Client {
    /// A new connection; `places` are its counts in the connection caps (accepted ones).
    pub(crate) fn new(
        node: Arc<Node>,
        stream: UnixStream,
        places: Option<(Counted, Unregistered)>,
    ) -> Client {
        let (counted, unregistered) = places.unzip();
        let conn = node.next_conn();
        let mut reader = FrameReader::new(MAX_FIRST_FRAME);
        reader.set_exact(true);
        Client {
            node,
            stream,
            reader,
            conn,
            phase: Phase::First {
                deadline: Instant::now() + FIRST_MESSAGE_DEADLINE,
                _unregistered: unregistered,
            },
            _counted: counted,
        }
    }

    /// Reads the first message; true when the connection goes on as a registered client.
    fn first(&mut self, deadline: Instant) -> Option<Next> {
        let mut first = None;
        let read = self.reader.read(&mut DontWait(&self.stream), |payload| {
            first = Some(frame::decode::<ToRaylet>(payload));
            false
        });
        let msg = match (first, read) {
            (Some(Ok(msg)), _) => msg,
            (None, Ok(ReadState::Drained)) if Instant::now() < deadline => {
                return Some(Next::WakeAt(deadline))
            }
            (None, Ok(ReadState::Drained)) => {
                self.log(&format!(
                    "no first message within {FIRST_MESSAGE_DEADLINE:?}"
                ));
                return Some(self.gone());
            }
            (None, Ok(_) | Err(FrameError::Closed)) => return Some(self.gone()),
            (Some(Err(e)), _) | (None, Err(e)) => {
                self.log(&e.to_string());
                return Some(self.gone());
            }
        };
        match msg {
            ToRaylet::Tunnel { target } => {
                self.phase = Phase::Tunnel(target);
                return Some(Next::Remove);
            }
            ToRaylet::Jobs => {
                self.phase = Phase::Jobs;
                return Some(Next::Remove);
            }
            _ => {}
        }
        let Ok(write_half) = self.stream.try_clone() else {
            return Some(self.gone());
        };
        if !self
            .node
            .register(self.conn, Outbox::new(self.conn, write_half), msg)
        {
            return Some(self.gone());
        }
        self.phase = Phase::Registered;
        self.reader.set_exact(false);
        self.reader.set_max(MAX_FRAME);
        None
    }

    /// Handles what a registered client sent (`ended`: read until the read says the stream is
    /// empty or closed, see `Source::ready`).
    fn messages(&mut self, ended: bool) -> Next {
        let (node, conn) = (&self.node, self.conn);
        let mut handled = 0;
        let mut malformed = None;
        let on_frame = |payload: &[u8]| {
            match frame::decode::<ToRaylet>(payload) {
                Ok(msg) => node.handle(conn, msg),
                Err(e) => {
                    malformed = Some(e);
                    return false;
                }
            }
            handled += 1;
            handled < FRAMES_PER_TURN
        };
        let mut stream = DontWait(&self.stream);
        let read = if ended {
            self.reader.read_to_block(&mut stream, on_frame)
        } else {
            self.reader.read(&mut stream, on_frame)
        };
        match (read, malformed) {
            (Ok(ReadState::Drained), _) => Next::Keep,
            (Ok(ReadState::Stopped), None) => Next::WakeAt(Instant::now()),
            (Ok(ReadState::Closed), _) | (Err(FrameError::Closed), _) => self.gone(),
            (Ok(_), Some(e)) | (Err(e), _) => {
                if !self.node.stopping.load(Ordering::SeqCst) {
                    self.log(&e.to_string());
                }
                self.gone()
            }
        }
    }

    fn log(&self, why: &str) {
        tracing::warn!("connection {}: {why}; dropped", self.conn);
    }

    /// Ends the connection (the node lets go of it in [`Source::removed`]).
    fn gone(&mut self) -> Next {
        if !matches!(self.phase, Phase::Registered) {
            self.phase = Phase::Gone;
        }
        Next::Remove
    }
}

impl Source for Client {
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn ready(&mut self, ended: bool) -> Next {
        if let Phase::First { deadline, .. } = self.phase {
            if let Some(next) = self.first(deadline) {
                return next;
            }
        }
        match self.phase {
            Phase::Registered => self.messages(ended),
            _ => Next::Remove,
        }
    }

    fn removed(self: Box<Self>) {
        let Client {
            node,
            stream,
            conn,
            phase,
            ..
        } = *self;
        match phase {
            Phase::Registered => node.disconnect(conn),
            Phase::Tunnel(target) => match node.link() {
                Some(link) => link.open_tunnel(stream, target),
                None => {
                    let reply = FromRaylet::Error {
                        req: 0,
                        kind: ErrorKind::BadRequest,
                        message: format!(
                            "cannot reach {target}: this node is not part of a cluster"
                        ),
                    };
                    let _ = frame::write(&mut &stream, &reply);
                }
            },
            Phase::Jobs => node.submitted_jobs.serve(stream),
            Phase::First { .. } | Phase::Gone => {}
        }
    }
}
