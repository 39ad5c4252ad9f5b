//! One thread that serves many file descriptors: connections, pipes, process exits.
//!
//! A process that talks to many peers (a raylet with a thousand workers, a driver with a
//! thousand actors) would otherwise need a thread per peer, blocked in `read`. Here each peer is a
//! [`Source`] registered with an [`EventLoop`]: its descriptor is watched with epoll (through
//! `mio`), and its [`Source::ready`] runs on the loop's thread when it is readable or when a
//! deadline it asked for passes. So a peer costs a table entry, and an idle process sleeps in
//! `epoll_wait` until something arrives.
//!
//! The contract for a source: the descriptor is nonblocking, and `ready` reads until the read
//! would block (readiness is edge-triggered), never blocks and never waits for another source of
//! the same loop (it would wait for itself). A source that wants to be called again without new
//! input (it stopped reading on purpose, or has a deadline) returns [`Next::WakeAt`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

/// What a source wants after [`Source::ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Call again when the descriptor is readable.
    Keep,
    /// Call again when readable, or at this instant at the latest.
    WakeAt(Instant),
    /// Stop watching it; [`Source::removed`] follows.
    Remove,
}

/// Something the loop watches (see the module docs for the contract).
pub trait Source: Send + 'static {
    /// The descriptor to watch; nonblocking, and open for as long as the source is registered.
    fn fd(&self) -> RawFd;
    /// The descriptor is readable (or closed), or a deadline passed: do what can be done
    /// without blocking. `ended` says an event reported the peer's end closed (or an error):
    /// the close may have come in one readiness edge with the last data, so read on until the
    /// read itself says so (a short read is not proof of an empty stream then). It stays true
    /// for the source's later calls.
    fn ready(&mut self, ended: bool) -> Next;
    /// The loop no longer watches it: after `ready` returned [`Next::Remove`], when it could not
    /// be registered, or when the loop stopped. The descriptor may be handed on from here.
    fn removed(self: Box<Self>) {}
}

const WAKER: Token = Token(usize::MAX);

/// A thread serving [`Source`]s. Stopping it (or dropping it) removes every source.
pub struct EventLoop {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    registry: Registry,
    waker: Waker,
    incoming: Mutex<Vec<Box<dyn Source>>>,
    stop: AtomicBool,
    thread: OnceLock<ThreadId>,
}

impl EventLoop {
    /// Starts the loop on a new thread called `name`.
    pub fn start(name: &str) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared {
            registry,
            waker,
            incoming: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(poll, &theirs))?;
        let _ = shared.thread.set(thread.thread().id());
        Ok(EventLoop {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Starts watching `source` (from any thread; its first [`Source::ready`] runs on the loop
    /// right away, so input that arrived before is not missed). Once the loop has stopped, the
    /// source is handed back.
    pub fn add(&self, source: Box<dyn Source>) -> Result<(), Box<dyn Source>> {
        let mut incoming = lock(&self.shared.incoming);
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(source);
        }
        incoming.push(source);
        drop(incoming);
        // A failed wake means the loop is gone; it then drops what is queued.
        let _ = self.shared.waker.wake();
        Ok(())
    }

    /// Whether the caller runs on this loop's thread (where nothing may block).
    pub fn is_current(&self) -> bool {
        self.shared.thread.get() == Some(&std::thread::current().id())
    }

    /// Stops the loop: every source is removed ([`Source::removed`]) on its thread, which this
    /// waits for (unless called from the loop itself).
    pub fn stop(&self) {
        {
            let _incoming = lock(&self.shared.incoming);
            self.shared.stop.store(true, Ordering::Release);
        }
        let _ = self.shared.waker.wake();
        if self.is_current() {
            return;
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Entry {
    source: Box<dyn Source>,
    /// Bumped when the slot is reused, so an old deadline does not call a new source.
    generation: u64,
    wake: Option<Instant>,
    /// An event reported the peer's end closed (see [`Source::ready`]).
    ended: bool,
}

/// The loop's own table, touched only by its thread.
#[derive(Default)]
struct Table {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    generations: Vec<u64>,
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Table {
    fn insert(&mut self, registry: &Registry, source: Box<dyn Source>) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                self.slots.len() - 1
            }
        };
        let fd = source.fd();
        if registry
            .register(&mut SourceFd(&fd), Token(slot), Interest::READABLE)
            .is_err()
        {
            self.free.push(slot);
            source.removed();
            return;
        }
        self.generations[slot] += 1;
        self.slots[slot] = Some(Entry {
            source,
            generation: self.generations[slot],
            wake: None,
            // Input may have come (and gone) before registration: read it all the first time.
            ended: true,
        });
        self.call(registry, slot, false);
        if let Some(e) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            e.ended = false;
        }
    }

    fn call(&mut self, registry: &Registry, slot: usize, ended: bool) {
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        entry.ended |= ended;
        match entry.source.ready(entry.ended) {
            Next::Keep => entry.wake = None,
            Next::WakeAt(at) => {
                entry.wake = Some(at);
                self.deadlines.push(Reverse((at, slot, entry.generation)));
            }
            Next::Remove => self.remove(registry, slot),
        }
    }

    fn remove(&mut self, registry: &Registry, slot: usize) {
        if let Some(entry) = self.slots.get_mut(slot).and_then(Option::take) {
            let fd = entry.source.fd();
            let _ = registry.deregister(&mut SourceFd(&fd));
            self.free.push(slot);
            entry.source.removed();
        }
    }

    /// Calls the sources whose deadline passed.
    fn expire(&mut self, registry: &Registry, now: Instant) {
        while let Some(&Reverse((at, slot, generation))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let due = self.slots[slot]
                .as_ref()
                .is_some_and(|e| e.generation == generation && e.wake == Some(at));
            if due {
                self.call(registry, slot, false);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _, _))| *at)
    }
}

fn run(mut poll: Poll, shared: &Shared) {
    let mut events = Events::with_capacity(256);
    let mut table = Table::default();
    let registry = &shared.registry;
    loop {
        let timeout = table
            .next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // epoll_wait fails only on a bad epoll descriptor: nothing more can be served.
            break;
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let mut woken = false;
        for event in &events {
            if event.token() == WAKER {
                woken = true;
            } else {
                let ended = event.is_read_closed() || event.is_error();
                table.call(registry, event.token().0, ended);
            }
        }
        // New sources only after this round's events: a slot freed above and reused now must
        // not receive an event meant for its old source.
        if woken {
            let incoming = std::mem::take(&mut *lock(&shared.incoming));
            for source in incoming {
                table.insert(registry, source);
            }
        }
        table.expire(registry, Instant::now());
    }
    let queued = std::mem::take(&mut *lock(&shared.incoming));
    for source in queued {
        source.removed();
    }
    for slot in 0..table.slots.len() {
        table.remove(registry, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Echoes what it reads to a channel; reports its removal.
    struct Echo {
        stream: UnixStream,
        got: mpsc::Sender<Vec<u8>>,
        gone: mpsc::Sender<()>,
    }

    impl Source for Echo {
        fn fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }
        fn ready(&mut self, _ended: bool) -> Next {
            let mut buf = [0u8; 64];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => return Next::Remove,
                    Ok(n) => {
                        let _ = self.got.send(buf[..n].to_vec());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                    Err(_) => return Next::Remove,
                }
            }
        }
        fn removed(self: Box<Self>) {
            let _ = self.gone.send(());
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn serves_many_sources_on_one_thread_and_removes_closed_ones() {
        let lp = EventLoop::start("test-loop").unwrap();
        let (got_tx, got) = mpsc::channel();
        let (gone_tx, gone) = mpsc::channel();
        let mut ours = Vec::new();
        for _ in 0..100 {
            let (a, b) = UnixStream::pair().unwrap();
            b.set_nonblocking(true).unwrap();
            let echo = Echo {
                stream: b,
                got: got_tx.clone(),
                gone: gone_tx.clone(),
            };
            assert!(lp.add(Box::new(echo)).is_ok());
            ours.push(a);
        }
        // Written before and after registration alike: every byte arrives once.
        for (i, a) in ours.iter_mut().enumerate() {
            a.write_all(&[i as u8]).unwrap();
        }
        let mut seen = [false; 100];
        for _ in 0..100 {
            let bytes = got.recv_timeout(WAIT).unwrap();
            for b in bytes {
                assert!(!seen[b as usize], "byte {b} twice");
                seen[b as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        ours.truncate(50);
        for _ in 0..50 {
            gone.recv_timeout(WAIT).unwrap();
        }
        assert!(gone.try_recv().is_err(), "an open source was removed");
        lp.stop();
        for _ in 0..50 {
            gone.recv_timeout(WAIT).unwrap();
        }
        let (_a, b) = UnixStream::pair().unwrap();
        let late = Echo {
            stream: b,
            got: got_tx,
            gone: gone_tx,
        };
        assert!(
            lp.add(Box::new(late)).is_err(),
            "a stopped loop took a source"
        );
    }

    /// Holds the loop's thread in `ready` until released (test only: a loop busy elsewhere).
    struct Blocker {
        stream: UnixStream,
        entered: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    }

    impl Source for Blocker {
        fn fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }
        fn ready(&mut self, _ended: bool) -> Next {
            let mut buf = [0u8; 8];
            if matches!(self.stream.read(&mut buf), Ok(n) if n > 0) {
                let _ = self.entered.send(());
                let _ = self.release.recv_timeout(WAIT);
            }
            Next::Keep
        }
    }

    /// Trusts a short read as "drained" unless told the peer's end closed (as the frame
    /// sources do).
    struct ShortReads {
        stream: UnixStream,
        called: mpsc::Sender<()>,
        gone: mpsc::Sender<()>,
    }

    impl Source for ShortReads {
        fn fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }
        fn ready(&mut self, ended: bool) -> Next {
            let _ = self.called.send(());
            let mut buf = [0u8; 64];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => return Next::Remove,
                    Ok(n) if n < buf.len() && !ended => return Next::Keep,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                    Err(_) => return Next::Remove,
                }
            }
        }
        fn removed(self: Box<Self>) {
            let _ = self.gone.send(());
        }
    }

    /// The last data and the close arrive in one readiness edge (the loop was busy): the source
    /// is told, reads on, and sees the close.
    #[test]
    fn a_close_that_comes_with_the_last_data_is_seen() {
        let lp = EventLoop::start("test-close").unwrap();
        let (mut peer, ours) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (gone_tx, gone) = mpsc::channel();
        let (called_tx, called) = mpsc::channel();
        assert!(lp
            .add(Box::new(ShortReads {
                stream: ours,
                called: called_tx,
                gone: gone_tx,
            }))
            .is_ok());
        // Registered (its first call came) before the loop is held.
        called.recv_timeout(WAIT).unwrap();
        let (mut poke, held) = UnixStream::pair().unwrap();
        held.set_nonblocking(true).unwrap();
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let blocker = Blocker {
            stream: held,
            entered: entered_tx,
            release: release_rx,
        };
        assert!(lp.add(Box::new(blocker)).is_ok());
        // The loop's thread is held; meanwhile the peer writes its last bytes and closes.
        poke.write_all(b"x").unwrap();
        entered.recv_timeout(WAIT).unwrap();
        peer.write_all(b"last words").unwrap();
        drop(peer);
        release.send(()).unwrap();
        gone.recv_timeout(WAIT).expect("the close was missed");
    }

    /// Asks for a wake-up twice, then goes.
    struct Timer {
        stream: UnixStream,
        calls: u32,
        fired: mpsc::Sender<Instant>,
    }

    impl Source for Timer {
        fn fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }
        fn ready(&mut self, _ended: bool) -> Next {
            self.calls += 1;
            if self.calls > 1 {
                let _ = self.fired.send(Instant::now());
            }
            if self.calls == 3 {
                return Next::Remove;
            }
            Next::WakeAt(Instant::now() + Duration::from_millis(20))
        }
    }

    #[test]
    fn deadlines_call_a_source_without_input() {
        let lp = EventLoop::start("test-timer").unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let timer = Timer {
            stream: b,
            calls: 0,
            fired: tx,
        };
        assert!(lp.add(Box::new(timer)).is_ok());
        let first = rx.recv_timeout(WAIT).unwrap();
        let second = rx.recv_timeout(WAIT).unwrap();
        assert!(first - start >= Duration::from_millis(20));
        assert!(second - first >= Duration::from_millis(20));
        // Removed after the third call: the sender is dropped with it.
        assert!(rx.recv_timeout(WAIT).is_err());
    }
}
