//! Health checks: how the head decides that a node is dead, and the thread that keeps the node's
//! own (possibly slow) work off the heartbeat path.
//!
//! # The design
//!
//! Members send a `Heartbeat` (their load) to the head every report period
//! (`ClusterConfig::report_period`: 100 ms, or the health-check period when that is shorter, so
//! spillback sees fresh loads); the reply is the cluster view. The head checks every node once per period, on its own timer: a node
//! *misses* a check when no heartbeat of it arrived since the previous check, and is marked
//! dead after `health_check_failure_threshold` misses in a row (Ray's GCS: a probe every 3 s,
//! dead after 5 failures). What counts is checks the head actually made, not wall time:
//!
//! - **A starved head** (its runtime threads delayed or blocked for seconds) makes no checks
//!   while starved; its timer skips the periods it slept through
//!   (`MissedTickBehavior::Skip`), so it wakes up to *one* check, not a burst. One check can
//!   count one miss at most, however long the head was away, and a node needs
//!   `failure_threshold` of them in a row. The heartbeats that queued up meanwhile are read
//!   before the next check. Since every check is at or after its own period's deadline, a
//!   death takes `failure_threshold` checks the head made *and* more than
//!   `failure_threshold - 1` periods in which no heartbeat of the node was read.
//! - **A starved member** still sends: its heartbeats leave from a thread of their own
//!   ("oxray-health", a current-thread runtime) over a QUIC endpoint and connection of their
//!   own, so neither node work nor the cluster runtime's other tasks (pulls, tunnels, jobs) can
//!   delay them. A heartbeat carries the last load snapshot; the node is asked for its load, and
//!   given the views the head sends back, on another thread ([`NodeSync`]), so a node whose
//!   state is busy still reports on time. Each heartbeat is its own request: a slow answer does
//!   not hold back the next heartbeat.
//! - **On the head**, a heartbeat's answer touches only the node table (a short mutex, never
//!   held while calling into the node); the head's own load and the views it publishes to its
//!   node also go through [`NodeSync`].
//!
//! Why not the old rule (dead after `timeout` of wall time without a heartbeat): a head whose
//! timer ran late saw every node as silent at once, and a member whose reporting task shared
//! two runtime threads with a 1 GiB pull (whose allocation blocks a thread while the kernel
//! zeroes its pages) went silent for over 3 s; both produced false deaths. Why not head-driven
//! probes as in Ray: the members' reports already carry the load and bring back the view, and
//! counting the head's own checks gives the same starvation-proof count with one message per
//! period instead of two.
//!
//! `health_check_timeout` is how long a member waits for the answer to one heartbeat before it
//! says the head does not answer (and redials when the connection is gone); it does not decide
//! deaths.
//!
//! # Rejoining
//!
//! A node declared dead stays dead in the head's table (its work was given up on: tasks retried
//! elsewhere, actors restarted elsewhere, its objects reported lost). If it is in fact still
//! running, its next heartbeat is refused; it then joins again as a *new* node (a new id, a new
//! index from the head) instead of stopping, with one log line, and calls `Node::rejoined`.
//! What the cluster gave up on then goes as after a real node death: every other node dropped
//! its connection to this one, so the jobs they attached here end (their workers and
//! non-detached actors stop with them), and this node's own jobs see their attachments to other
//! nodes close (leases there end, actors there start again elsewhere). Processes that started
//! under the old index keep ids naming it, so other nodes can no longer reach them; local
//! drivers and their local work go on. A member of a restarted
//! head (which knows no node) joins it the same way.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use oxray_common::peer::{ClusterView, NodeLoad};

use crate::node::Node;

/// One node's standing in the head's health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Liveness {
    /// A heartbeat arrived since the last check.
    heard: bool,
    /// Checks missed in a row.
    missed: u32,
}

impl Liveness {
    /// A node that just registered: it counts as heard, so its first check passes.
    pub(crate) fn new() -> Liveness {
        Liveness {
            heard: true,
            missed: 0,
        }
    }

    /// A heartbeat arrived.
    pub(crate) fn heard(&mut self) {
        self.heard = true;
    }

    /// The head checks the node (once per period it actually observed); true when the node has
    /// now missed `threshold` checks in a row.
    pub(crate) fn check(&mut self, threshold: u32) -> bool {
        if std::mem::take(&mut self.heard) {
            self.missed = 0;
        } else {
            self.missed = self.missed.saturating_add(1);
        }
        self.missed >= threshold
    }

    /// Checks missed in a row so far.
    #[cfg(test)]
    pub(crate) fn missed(&self) -> u32 {
        self.missed
    }
}

/// What the cluster tasks exchange with the node through the sync thread.
struct SyncState {
    /// The newest view not yet given to the node, with its sequence number.
    pending: Option<(u64, ClusterView)>,
    /// The sequence number of the last view given to the node.
    applied: u64,
    /// The node's load, as last read.
    load: NodeLoad,
    stop: bool,
}

/// The node's side of the cluster's periodic work, on a thread of its own: it reads the node's
/// load every period (heartbeats send the last reading) and gives the node the newest view the
/// cluster tasks posted (older ones are dropped). Calls into the node may wait for its state
/// lock; they happen here, never on a task that sends or answers heartbeats.
pub(crate) struct NodeSync {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// Serializes giving views to the node, so a view never replaces a newer one.
    applying: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeSync {
    /// A sync with the node's current load (read once, here).
    pub(crate) fn new(load: NodeLoad) -> Arc<NodeSync> {
        Arc::new(NodeSync {
            state: Mutex::new(SyncState {
                pending: None,
                applied: 0,
                load,
                stop: false,
            }),
            wake: Condvar::new(),
            applying: Mutex::new(()),
        })
    }

    /// Starts the thread: the load is read every `period`.
    pub(crate) fn start(
        self: &Arc<Self>,
        node: Weak<Node>,
        period: Duration,
    ) -> std::io::Result<()> {
        let sync = self.clone();
        std::thread::Builder::new()
            .name("oxray-node-sync".into())
            .spawn(move || sync.run(node, period))
            .map(drop)
    }

    fn run(&self, node: Weak<Node>, period: Duration) {
        let mut next_load = Instant::now() + period;
        loop {
            let view = {
                let mut st = lock(&self.state);
                loop {
                    if st.stop {
                        return;
                    }
                    if st.pending.is_some() {
                        break;
                    }
                    let now = Instant::now();
                    if now >= next_load {
                        break;
                    }
                    st = self
                        .wake
                        .wait_timeout(st, next_load - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                st.pending.take()
            };
            let Some(node) = node.upgrade() else {
                return;
            };
            if let Some((seq, view)) = view {
                self.apply_now(&node, seq, view);
            }
            if Instant::now() >= next_load {
                let load = node.load();
                lock(&self.state).load = load;
                next_load = Instant::now() + period;
            }
        }
    }

    /// Gives the node `view` on the sync thread, unless a newer one (by `seq`) came first.
    pub(crate) fn post_view(&self, seq: u64, view: ClusterView) {
        let mut st = lock(&self.state);
        let newest = st.pending.as_ref().map_or(st.applied, |(s, _)| *s);
        if seq > newest {
            st.pending = Some((seq, view));
            self.wake.notify_one();
        }
    }

    /// Gives the node `view` now, on this thread, unless a newer one (by `seq`) was given.
    /// For registrations and departures, which the node must know of before the answer goes.
    pub(crate) fn apply_now(&self, node: &Node, seq: u64, view: ClusterView) {
        let _one_at_a_time = lock(&self.applying);
        {
            let mut st = lock(&self.state);
            if seq <= st.applied {
                return;
            }
            st.applied = seq;
            if st.pending.as_ref().is_some_and(|(s, _)| *s <= seq) {
                st.pending = None;
            }
        }
        node.set_cluster_view(view);
    }

    /// The node's load as last read (at most a period old).
    pub(crate) fn load(&self) -> NodeLoad {
        lock(&self.state).load.clone()
    }

    /// Ends the thread.
    pub(crate) fn stop(&self) {
        lock(&self.state).stop = true;
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_dead_after_threshold_checks_in_a_row_without_a_heartbeat() {
        let mut l = Liveness::new();
        // Registration counts as heard: the first check passes.
        assert!(!l.check(3));
        assert!(!l.check(3));
        assert!(!l.check(3));
        // One heartbeat resets the count.
        l.heard();
        assert!(!l.check(3));
        assert_eq!(l.missed(), 0);
        assert!(!l.check(3));
        assert!(!l.check(3));
        assert!(l.check(3));
        assert_eq!(l.missed(), 3);
    }

    #[test]
    fn many_heartbeats_between_checks_count_once() {
        let mut l = Liveness::new();
        for _ in 0..100 {
            l.heard();
        }
        assert!(!l.check(2));
        assert!(!l.check(2));
        assert!(l.check(2));
    }

    #[test]
    fn views_are_given_newest_first_and_never_replaced_by_older_ones() {
        let sync = NodeSync::new(NodeLoad::default());
        let view = |name: &str| ClusterView {
            cluster: name.into(),
            nodes: Vec::new(),
        };
        sync.post_view(2, view("two"));
        sync.post_view(1, view("one"));
        let pending = lock(&sync.state)
            .pending
            .clone()
            .map(|(s, v)| (s, v.cluster));
        assert_eq!(pending, Some((2, "two".to_owned())));
        sync.post_view(3, view("three"));
        let pending = lock(&sync.state)
            .pending
            .clone()
            .map(|(s, v)| (s, v.cluster));
        assert_eq!(pending, Some((3, "three".to_owned())));
    }

    /// A head and a member in this process, checking every 50 ms, dead after 4 misses.
    fn pair(tag: &str) -> (crate::Raylet, crate::Raylet) {
        use crate::cluster::ClusterConfig;
        let secret = b"health-test-secret-0123456789".to_vec();
        let node = |role: &str, cluster: ClusterConfig| crate::RayletConfig {
            num_cpus: 1.0,
            object_store_memory: 32 << 20,
            session: format!("oxray-health-{tag}-{role}-{}", std::process::id()),
            prestart_workers: 0,
            cluster: Some(ClusterConfig {
                health_check_period: Duration::from_millis(50),
                health_check_failure_threshold: 4,
                health_check_timeout: Duration::from_secs(3),
                ..cluster
            }),
            ..crate::RayletConfig::default()
        };
        let head = crate::Raylet::start(node(
            "head",
            ClusterConfig::head("health", secret.clone(), "127.0.0.1", 0),
        ))
        .expect("start the head");
        let peer = head.peer_address().expect("peer address").to_owned();
        let member = crate::Raylet::start(node(
            "member",
            ClusterConfig::member("health", secret, "127.0.0.1", 0, &peer),
        ))
        .expect("start the member");
        (head, member)
    }

    /// Blocks both threads of `raylet`'s cluster runtime for `how_long`; returns once they are.
    fn block_runtime(
        raylet: &crate::Raylet,
        how_long: Duration,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let cluster = raylet.cluster.as_ref().expect("in a cluster");
        let runtime = cluster.runtime.as_ref().expect("runtime");
        let all_in = Arc::new(std::sync::Barrier::new(3));
        let handles = (0..2)
            .map(|_| {
                let all_in = all_in.clone();
                runtime.spawn(async move {
                    all_in.wait();
                    std::thread::sleep(how_long);
                })
            })
            .collect();
        all_in.wait();
        handles
    }

    /// Waits until the head made `checks` more health checks; then whether `member` is alive.
    fn alive_after_checks(head: &crate::Raylet, member: &crate::Raylet, checks: u64) -> bool {
        let shared = &head.cluster.as_ref().expect("cluster").shared;
        let version = || lock(&shared.table).version();
        let from = version();
        let deadline = Instant::now() + Duration::from_secs(20);
        while version() < from + checks && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(version() >= from + checks, "the head stopped checking");
        lock(&shared.table).alive(member.node.id()) == Some(true)
    }

    #[test]
    fn starved_runtimes_and_a_busy_node_cause_no_false_death() {
        let (head, member) = pair("starved");
        let id = member.node.id();
        assert!(alive_after_checks(&head, &member, 2));
        // The member's cluster runtime is stuck for 40 periods (as when a pull's allocation
        // blocked one of its threads): its heartbeats leave from their own thread.
        let _stuck = block_runtime(&member, Duration::from_secs(2));
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(2) {
            assert!(
                alive_after_checks(&head, &member, 1),
                "the member died while stuck"
            );
        }
        // The head's runtime is stuck for 40 periods: it wakes up to one check, not forty,
        // and reads the queued heartbeats before the next.
        let _stuck = block_runtime(&head, Duration::from_secs(2));
        assert!(
            alive_after_checks(&head, &member, 8),
            "declared dead by a starved head"
        );
        // The member's node state is locked (slow node work): heartbeats go on with the last
        // load.
        {
            let _busy = member.node.lock();
            let waited = Instant::now();
            while waited.elapsed() < Duration::from_secs(2) {
                assert!(
                    alive_after_checks(&head, &member, 1),
                    "died while its node was busy"
                );
            }
        }
        assert!(alive_after_checks(&head, &member, 8));
        assert_eq!(member.node.id(), id, "the member never had to join again");
    }
}
