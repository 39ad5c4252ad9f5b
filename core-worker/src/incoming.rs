//! Connections to this process beyond the first, served without a thread each.
//!
//! A worker's first connection (usually the submitter that leased it, or an actor's first
//! caller) is served on a thread of its own, which runs its tasks and calls as they are read:
//! the fewest thread hand-offs per call. An actor called by a thousand processes would need a
//! thousand such threads, so every other connection is read on the process's event loop (the
//! one that reads replies, see `crate::replies`) and its messages are handled, in order, by a
//! thread of a small pool ([`MAX_THREADS`]) while it has any. A connection holds a pool thread
//! only while it has messages, so threads grow with the connections busy at once, not with the
//! connections open; messages of different connections still run concurrently, as on threads
//! of their own. Beyond [`MAX_THREADS`] busy connections, the others wait their turn.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use oxray_common::frame;
use oxray_common::protocol::ToWorker;

use crate::core::CoreWorker;
use crate::executor::Writer;
use crate::replies::Frames;

/// Pool threads at most: connections busy at once beyond this wait for one.
pub(crate) const MAX_THREADS: usize = 32;
/// A pool thread with nothing to do for this long ends.
const IDLE_END: Duration = Duration::from_secs(30);
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One connection's messages waiting to be handled.
struct Conn {
    core: Weak<CoreWorker>,
    writer: Writer,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<ToWorker>,
    /// A pool thread has (or will take) this connection.
    scheduled: bool,
    /// A reply could not be written: the rest is dropped.
    broken: bool,
}

impl Conn {
    fn push(self: &Arc<Self>, msg: ToWorker) {
        let mut q = lock(&self.queue);
        if q.broken {
            return;
        }
        q.messages.push_back(msg);
        if !q.scheduled {
            q.scheduled = true;
            drop(q);
            POOL.run(self.clone());
        }
    }

    /// Handles the queued messages in order until none is left.
    fn drain(&self) {
        loop {
            let (msg, more) = {
                let mut q = lock(&self.queue);
                match q.messages.pop_front() {
                    Some(m) => {
                        let more = !q.messages.is_empty();
                        (m, more)
                    }
                    None => {
                        q.scheduled = false;
                        return;
                    }
                }
            };
            let Some(core) = self.core.upgrade() else {
                lock(&self.queue).messages.clear();
                continue;
            };
            if !crate::executor::handle(&core, &self.writer, msg, more) {
                let mut q = lock(&self.queue);
                q.broken = true;
                q.messages.clear();
            }
        }
    }
}

/// Serves `stream` on the process's event loop and pool; gives it back if the loop cannot run
/// (the caller then serves it on a thread of its own).
pub(crate) fn watch(core: &Arc<CoreWorker>, stream: UnixStream) -> Result<(), UnixStream> {
    let Ok(events) = core.events() else {
        return Err(stream);
    };
    let Ok(writer) = stream.try_clone() else {
        return Err(stream);
    };
    let conn = Arc::new(Conn {
        core: Arc::downgrade(core),
        writer: Arc::new(Mutex::new(writer)),
        queue: Mutex::default(),
    });
    let on_msg = Box::new(move |msg| {
        conn.push(msg);
        true
    });
    // Queued messages are still handled after the end; the writer closes with the last one.
    let on_end = Box::new(|why: String| {
        if why.contains("connection failed") {
            eprintln!("oxray: dropped a connection: {why}");
        }
    });
    Frames::watch_with(
        events,
        stream,
        "caller",
        frame::decode::<ToWorker>,
        on_msg,
        on_end,
    );
    Ok(())
}

/// Threads that drain busy connections.
struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
}

#[derive(Default)]
struct PoolState {
    ready: VecDeque<Arc<Conn>>,
    threads: usize,
    idle: usize,
}

static POOL: Pool = Pool {
    state: Mutex::new(PoolState {
        ready: VecDeque::new(),
        threads: 0,
        idle: 0,
    }),
    work: Condvar::new(),
};

impl Pool {
    fn run(&'static self, conn: Arc<Conn>) {
        let mut st = lock(&self.state);
        st.ready.push_back(conn);
        if st.idle > 0 {
            self.work.notify_one();
            return;
        }
        if st.threads < MAX_THREADS {
            st.threads += 1;
            let started = std::thread::Builder::new()
                .name("oxray-conn-pool".into())
                .spawn(move || self.serve());
            if started.is_err() {
                st.threads -= 1;
                if st.threads == 0 {
                    // No thread at all: drain here rather than never.
                    let ready: Vec<_> = st.ready.drain(..).collect();
                    drop(st);
                    for c in ready {
                        c.drain();
                    }
                }
            }
        }
    }

    fn serve(&'static self) {
        let mut st = lock(&self.state);
        loop {
            if let Some(conn) = st.ready.pop_front() {
                drop(st);
                conn.drain();
                st = lock(&self.state);
                continue;
            }
            st.idle += 1;
            let (next, waited) = self
                .work
                .wait_timeout(st, IDLE_END)
                .unwrap_or_else(|p| p.into_inner());
            st = next;
            st.idle -= 1;
            if waited.timed_out() && st.ready.is_empty() {
                st.threads -= 1;
                return;
            }
        }
    }
}
