//! Accepting peers (every node), and the head's control service: node registration, health
//! checks (counted as described in `health`), the cluster view, and the names of named actors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use oxray_common::peer::{ClusterView, NodeInfo, NodeLoad, PeerReply, PeerRequest};
use oxray_common::{ActorId, NodeId};

use super::health::Liveness;
use super::{auth, wire, Shared};
use crate::node::Node;

/// How long a new connection may take to prove the secret.
const AUTH_DEADLINE: Duration = Duration::from_secs(5);

/// The head's node table, in registration order.
#[derive(Default)]
pub(crate) struct Table {
    nodes: Vec<Entry>,
    /// The index the next new node gets (the head is 1).
    next_index: u16,
    /// Named actors, cluster-wide: (namespace, name) → actor. The actor's own nodes keep its
    /// state; the head only keeps names unique and findable from any node.
    names: HashMap<(String, String), ActorId>,
    /// Bumped for every view published to the head's own node (so an older one never replaces
    /// a newer one).
    version: u64,
}

struct Entry {
    info: NodeInfo,
    liveness: Liveness,
}

impl Table {
    /// A node is dead: the names of actors it registered go (their owners were there).
    fn forget_names_of(&mut self, index: u16) {
        self.names.retain(|_, id| id.node_index() != index);
    }

    fn view(&self, cluster: &str) -> ClusterView {
        ClusterView {
            cluster: cluster.to_owned(),
            nodes: self.nodes.iter().map(|e| e.info.clone()).collect(),
        }
    }

    /// The view to give the head's own node, with its version.
    fn publish(&mut self, cluster: &str) -> (u64, ClusterView) {
        self.version += 1;
        (self.version, self.view(cluster))
    }

    /// A heartbeat of node `id` arrived with its load; `Err` is why it is refused.
    fn heard(&mut self, id: NodeId, load: NodeLoad) -> Result<(), String> {
        let Some(e) = self.nodes.iter_mut().find(|e| e.info.id == id) else {
            return Err(format!("node {id} is not registered with this head"));
        };
        if !e.info.alive {
            // As in Ray: a node declared dead stays dead (its work was already given up on).
            return Err(format!(
                "node {id} missed its health checks and was declared dead"
            ));
        }
        if !load.total.is_empty() {
            e.info.total = load.total.clone();
        }
        e.info.load = load;
        e.liveness.heard();
        Ok(())
    }

    /// Views published so far (one per check, registration or departure).
    #[cfg(test)]
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Whether node `id` is alive in the table.
    #[cfg(test)]
    pub(crate) fn alive(&self, id: NodeId) -> Option<bool> {
        self.nodes
            .iter()
            .find(|e| e.info.id == id)
            .map(|e| e.info.alive)
    }

    /// One health check of every live member (the head checks itself by running this):
    /// returns the nodes that have now missed `threshold` checks in a row, marked dead.
    fn check(&mut self, threshold: u32) -> Vec<NodeInfo> {
        let mut died = Vec::new();
        for e in &mut self.nodes {
            if e.info.is_head || !e.info.alive {
                continue;
            }
            if e.liveness.check(threshold) {
                e.info.alive = false;
                died.push(e.info.clone());
            }
        }
        for n in &died {
            self.forget_names_of(n.index);
        }
        died
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Table> {
    shared.table.lock().unwrap_or_else(|p| p.into_inner())
}

/// This node as the cluster sees it, with `load` as its load.
pub(crate) fn self_info(shared: &Shared, node: &Node, is_head: bool, load: NodeLoad) -> NodeInfo {
    NodeInfo {
        id: node.id(),
        index: node.index(),
        session: node.config.session.clone(),
        peer_address: shared.peer_address.clone(),
        local_address: node.address.clone(),
        hostname: hostname(),
        pid: std::process::id(),
        is_head,
        alive: true,
        total: node.config.total_resources(),
        load,
    }
}

/// The machine's host name (empty if unknown).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The head enters itself in its own table.
pub(crate) fn register_self(shared: &Shared, node: &Node) {
    let mut info = self_info(shared, node, true, node.load());
    info.index = 1;
    let mut table = lock(shared);
    table.next_index = 2;
    table.nodes.push(Entry {
        info,
        liveness: Liveness::new(),
    });
    let (seq, view) = table.publish(&shared.config.name);
    // Never lock the node's state under the table: the node calls in here holding it.
    drop(table);
    shared.sync.apply_now(node, seq, view);
}

/// The head's health checks: once per health-check period it observed, check every member;
/// once per report period, refresh its own load (the last reading, taken on the sync thread)
/// and publish the view to its node. Periods the head slept through (a starved runtime) are
/// skipped, not made up in a burst.
pub(crate) async fn monitor(shared: Arc<Shared>) {
    let config = &shared.config;
    let mut check = tokio::time::interval(config.health_check_period);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut report = tokio::time::interval(config.report_period());
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first ticks are immediate; the first check is a period after the head started.
    check.tick().await;
    loop {
        let checking = tokio::select! {
            _ = check.tick() => true,
            _ = report.tick() => false,
        };
        let Some(node) = shared.node.upgrade() else {
            return;
        };
        let load = shared.sync.load();
        let mut table = lock(&shared);
        if let Some(me) = table.nodes.iter_mut().find(|e| e.info.is_head) {
            if !load.total.is_empty() {
                me.info.total = load.total.clone();
            }
            me.info.load = load;
        }
        if checking {
            for n in table.check(config.health_check_failure_threshold) {
                tracing::warn!(
                    "node {} ({}) missed {} health checks in a row (one every \
                     {:?}): marked dead",
                    n.id,
                    n.peer_address,
                    config.health_check_failure_threshold,
                    config.health_check_period
                );
            }
        }
        let (seq, view) = table.publish(&config.name);
        drop(table);
        drop(node);
        shared.sync.post_view(seq, view);
    }
}

/// Connections that have not proved the secret yet, at most, from one IP address.
pub(crate) const MAX_UNAUTHENTICATED_PER_IP: usize = 8;
/// Connections that have not proved the secret yet, at most, in all.
pub(crate) const MAX_UNAUTHENTICATED: usize = 64;

/// Connections still proving the secret, by address (see [`MAX_UNAUTHENTICATED`]).
#[derive(Default)]
struct Unproven {
    by_ip: HashMap<std::net::IpAddr, usize>,
    total: usize,
    /// A refusal was logged and none since the counts fell below the caps.
    said: bool,
}

/// One connection counted in [`Unproven`] until dropped.
struct Proving {
    table: Arc<std::sync::Mutex<Unproven>>,
    ip: std::net::IpAddr,
}

impl Drop for Proving {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.by_ip.remove(&self.ip);
            }
        }
        t.said = false;
    }
}

/// Counts a new connection from `ip`, or `None` when that would pass a cap.
fn start_proving(table: &Arc<std::sync::Mutex<Unproven>>, ip: std::net::IpAddr) -> Option<Proving> {
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    let from_ip = t.by_ip.get(&ip).copied().unwrap_or(0);
    if t.total >= MAX_UNAUTHENTICATED || from_ip >= MAX_UNAUTHENTICATED_PER_IP {
        if !std::mem::replace(&mut t.said, true) {
            tracing::warn!(
                "refusing connections from {ip}: {} connections ({from_ip} from it) \
                 have not proved the cluster secret yet (caps {MAX_UNAUTHENTICATED}, \
                 {MAX_UNAUTHENTICATED_PER_IP} per address)",
                t.total
            );
        }
        return None;
    }
    t.total += 1;
    *t.by_ip.entry(ip).or_default() += 1;
    Some(Proving {
        table: table.clone(),
        ip,
    })
}

/// Accepts peer connections until the endpoint closes. Connections that have not proved the
/// secret yet are capped per address and in all; each has [`AUTH_DEADLINE`] to do it and may
/// send one frame of at most `wire::MAX_AUTH_FRAME` bytes before.
pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let unproven = Arc::new(std::sync::Mutex::new(Unproven::default()));
    while let Some(incoming) = endpoint.accept().await {
        let Some(proving) = start_proving(&unproven, incoming.remote_address().ip()) else {
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address().to_string();
            match tokio::time::timeout(AUTH_DEADLINE, incoming).await {
                Ok(Ok(conn)) => serve(conn, shared, remote, proving).await,
                Ok(Err(e)) => tracing::warn!("peer {remote}: handshake failed: {e}"),
                Err(_) => tracing::warn!(
                    "peer {remote}: no TLS handshake within {} s; dropped",
                    AUTH_DEADLINE.as_secs()
                ),
            }
        });
    }
}

/// Serves one connection: the secret first, then requests, each on its own stream.
async fn serve(conn: quinn::Connection, shared: Arc<Shared>, remote: String, proving: Proving) {
    let proved = authenticate(&conn, &shared, &remote).await;
    drop(proving);
    if let Err(reason) = proved {
        tracing::warn!("refused peer {remote}: {reason}");
        // Let the refusal reach the peer (it hangs up on reading it) before closing.
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
        conn.close(1u32.into(), b"refused");
        return;
    }
    super::peers::remember(&shared, &conn);
    super::peers::serve_streams(conn, shared, remote).await;
}

/// Reads the first stream, which must prove the secret; answers with this side's proof.
async fn authenticate(
    conn: &quinn::Connection,
    shared: &Shared,
    remote: &str,
) -> Result<(), String> {
    let (mut send, mut recv) = tokio::time::timeout(AUTH_DEADLINE, conn.accept_bi())
        .await
        .map_err(|_| "it sent nothing within 5 s".to_owned())?
        .map_err(|e| format!("connection lost before authenticating: {e}"))?;
    let first = tokio::time::timeout(
        AUTH_DEADLINE,
        wire::read_limited::<PeerRequest>(&mut recv, remote, wire::MAX_AUTH_FRAME),
    )
    .await
    .map_err(|_| "its first message did not arrive within 5 s".to_owned())?;
    let cluster = &shared.config.name;
    let refusal = match first {
        Ok(PeerRequest::Auth {
            cluster: theirs,
            proof,
        }) => {
            if &theirs != cluster {
                format!("it wants to join cluster {theirs:?}, this is {cluster:?}")
            } else if !auth::verify(
                conn,
                auth::Role::Dialer,
                cluster,
                &shared.config.secret,
                &proof,
            ) {
                "it does not know the cluster secret".into()
            } else {
                let proof = auth::prove(conn, auth::Role::Listener, cluster, &shared.config.secret);
                return wire::write(&mut send, &PeerReply::AuthOk { proof }, remote)
                    .await
                    .map_err(|e| e.to_string());
            }
        }
        Ok(other) => format!(
            "its first message was {} instead of proving the cluster secret",
            request_name(&other)
        ),
        Err(e) => format!("its first message is malformed: {e}"),
    };
    let reply = PeerReply::Refused {
        reason: refusal.clone(),
    };
    let _ = wire::write(&mut send, &reply, remote).await;
    Err(refusal)
}

fn request_name(req: &PeerRequest) -> &'static str {
    match req {
        PeerRequest::Auth { .. } => "Auth",
        PeerRequest::Register { .. } => "Register",
        PeerRequest::Heartbeat { .. } => "Heartbeat",
        PeerRequest::GetView => "GetView",
        PeerRequest::Leave { .. } => "Leave",
        PeerRequest::Tunnel { .. } => "Tunnel",
        PeerRequest::Attach { .. } => "Attach",
        PeerRequest::FetchExe { .. } => "FetchExe",
        PeerRequest::ObjectInfo { .. } => "ObjectInfo",
        PeerRequest::Chunk { .. } => "Chunk",
        PeerRequest::Delete { .. } => "Delete",
        PeerRequest::OwnerGone { .. } => "OwnerGone",
        PeerRequest::Actor { .. } => "Actor",
        PeerRequest::ClaimName { .. } => "ClaimName",
        PeerRequest::LookupName { .. } => "LookupName",
        PeerRequest::ReleaseName { .. } => "ReleaseName",
        PeerRequest::Placement(_) => "Placement",
        PeerRequest::Bundles(_) => "Bundles",
    }
}

/// Answers one authenticated control request.
pub(crate) fn handle(shared: &Shared, req: PeerRequest) -> PeerReply {
    let is_head = shared.config.head.is_none();
    let not_head = || PeerReply::Error {
        message: format!(
            "this node is not the head (the head is {})",
            shared.config.head.as_deref().unwrap_or("?")
        ),
    };
    match req {
        PeerRequest::Auth { .. } => PeerReply::Error {
            message: "already authenticated".into(),
        },
        PeerRequest::Register { node } => {
            if !is_head {
                return not_head();
            }
            register(shared, node)
        }
        PeerRequest::Heartbeat { node, load } => {
            if !is_head {
                return not_head();
            }
            heartbeat(shared, node, load)
        }
        PeerRequest::Leave { node } => {
            if !is_head {
                return not_head();
            }
            leave(shared, node)
        }
        PeerRequest::ClaimName { .. }
        | PeerRequest::LookupName { .. }
        | PeerRequest::ReleaseName { .. } => {
            if !is_head {
                return not_head();
            }
            names(shared, req)
        }
        PeerRequest::Tunnel { .. }
        | PeerRequest::Attach { .. }
        | PeerRequest::FetchExe { .. }
        | PeerRequest::ObjectInfo { .. }
        | PeerRequest::Chunk { .. }
        | PeerRequest::Delete { .. }
        | PeerRequest::OwnerGone { .. }
        | PeerRequest::Placement(_)
        | PeerRequest::Bundles(_)
        | PeerRequest::Actor { .. } => PeerReply::Error {
            message: "not a control request".into(),
        },
        PeerRequest::GetView => {
            if is_head {
                PeerReply::View(lock(shared).view(&shared.config.name))
            } else {
                match shared.node.upgrade() {
                    Some(node) => PeerReply::View(node.cluster_view()),
                    None => PeerReply::Error {
                        message: "the node is stopping".into(),
                    },
                }
            }
        }
    }
}

fn register(shared: &Shared, mut info: NodeInfo) -> PeerReply {
    let mut table = lock(shared);
    if let Some(e) = table
        .nodes
        .iter()
        .find(|e| e.info.alive && e.info.id != info.id && e.info.session == info.session)
    {
        return PeerReply::Refused {
            reason: format!(
                "session {:?} is already used by the live node {} at {}",
                info.session, e.info.id, e.info.peer_address
            ),
        };
    }
    info.alive = true;
    info.is_head = false;
    info.index = match table.nodes.iter().find(|e| e.info.id == info.id) {
        Some(e) => e.info.index,
        None => {
            if table.next_index == u16::MAX {
                return PeerReply::Refused {
                    reason: "the cluster has no node index left (65534 joins)".into(),
                };
            }
            table.next_index += 1;
            table.next_index - 1
        }
    };
    tracing::info!(
        "node {} joined from {} (session {}, {})",
        info.id,
        info.peer_address,
        info.session,
        info.total
    );
    table.nodes.retain(|e| e.info.id != info.id);
    table.nodes.push(Entry {
        info,
        liveness: Liveness::new(),
    });
    let (seq, view) = table.publish(&shared.config.name);
    drop(table);
    // The head's node knows of the new node before the node's start returns.
    if let Some(node) = shared.node.upgrade() {
        shared.sync.apply_now(&node, seq, view.clone());
    }
    PeerReply::View(view)
}

fn leave(shared: &Shared, id: NodeId) -> PeerReply {
    let mut table = lock(shared);
    if let Some(e) = table.nodes.iter_mut().find(|e| e.info.id == id) {
        if e.info.alive {
            tracing::info!("node {id} ({}) left", e.info.peer_address);
        }
        e.info.alive = false;
        let index = e.info.index;
        table.forget_names_of(index);
    }
    let (seq, view) = table.publish(&shared.config.name);
    drop(table);
    if let Some(node) = shared.node.upgrade() {
        shared.sync.apply_now(&node, seq, view.clone());
    }
    PeerReply::View(view)
}

/// Answers a heartbeat: only the node table is touched (never the node), so node work cannot
/// delay the answer.
fn heartbeat(shared: &Shared, id: NodeId, load: NodeLoad) -> PeerReply {
    let mut table = lock(shared);
    match table.heard(id, load) {
        Ok(()) => PeerReply::View(table.view(&shared.config.name)),
        Err(reason) => PeerReply::Refused { reason },
    }
}

/// The head's answer to `ClaimName`, `LookupName` and `ReleaseName` (the head's own node calls
/// this directly).
pub(crate) fn names(shared: &Shared, req: PeerRequest) -> PeerReply {
    let mut table = lock(shared);
    match req {
        PeerRequest::ClaimName {
            namespace,
            name,
            id,
        } => PeerReply::Named(Some(*table.names.entry((namespace, name)).or_insert(id))),
        PeerRequest::LookupName { namespace, name } => {
            PeerReply::Named(table.names.get(&(namespace, name)).copied())
        }
        PeerRequest::ReleaseName {
            namespace,
            name,
            id,
        } => {
            let key = (namespace, name);
            if table.names.get(&key) == Some(&id) {
                table.names.remove(&key);
            }
            PeerReply::Ok
        }
        _ => PeerReply::Error {
            message: "not a name request".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table with the head (index 1) and members with indexes 2.. (ids = indexes).
    fn table(members: u16) -> Table {
        let mut t = Table::default();
        for index in 1..=members + 1 {
            t.nodes.push(Entry {
                info: NodeInfo {
                    id: NodeId(u64::from(index)),
                    index,
                    session: format!("s{index}"),
                    peer_address: format!("127.0.0.1:{}", 7000 + index),
                    local_address: format!("unix:@s{index}"),
                    hostname: String::new(),
                    pid: u32::from(index),
                    is_head: index == 1,
                    alive: true,
                    total: Default::default(),
                    load: NodeLoad::default(),
                },
                liveness: Liveness::new(),
            });
        }
        t.next_index = members + 2;
        t
    }

    fn alive(t: &Table) -> Vec<u16> {
        t.nodes
            .iter()
            .filter(|e| e.info.alive)
            .map(|e| e.info.index)
            .collect()
    }

    fn heard(t: &mut Table, index: u16) -> Result<(), String> {
        t.heard(NodeId(u64::from(index)), NodeLoad::default())
    }

    #[test]
    fn a_silent_member_dies_after_threshold_checks_and_the_others_live() {
        let mut t = table(3);
        // Node 4 goes silent; 2 and 3 report every period (some twice, some late in it).
        for round in 1..=4 {
            heard(&mut t, 2).expect("alive");
            if round % 2 == 0 {
                heard(&mut t, 3).expect("alive");
            }
            heard(&mut t, 3).expect("alive");
            let died = t.check(4);
            // Registration counts as heard, so the first check passes: dead at the fifth.
            assert!(died.is_empty(), "round {round}: {died:?}");
        }
        heard(&mut t, 2).expect("alive");
        heard(&mut t, 3).expect("alive");
        let died: Vec<u16> = t.check(4).iter().map(|n| n.index).collect();
        assert_eq!(died, vec![4]);
        assert_eq!(alive(&t), vec![1, 2, 3]);
        // Dead stays dead: its next heartbeat is refused, and it is not reported dead again.
        let refused = heard(&mut t, 4).unwrap_err();
        assert!(refused.contains("declared dead"), "{refused}");
        heard(&mut t, 2).expect("alive");
        heard(&mut t, 3).expect("alive");
        assert!(t.check(4).is_empty());
        assert_eq!(alive(&t), vec![1, 2, 3]);
        let unknown = t.heard(NodeId(99), NodeLoad::default()).unwrap_err();
        assert!(unknown.contains("not registered"), "{unknown}");
    }

    #[test]
    fn one_heartbeat_resets_the_count() {
        let mut t = table(1);
        for _ in 0..10 {
            assert!(t.check(3).is_empty());
            assert!(t.check(3).is_empty());
            heard(&mut t, 2).expect("alive");
        }
        assert_eq!(alive(&t), vec![1, 2]);
    }

    #[test]
    fn a_head_that_did_not_check_for_a_long_time_declares_no_one_dead() {
        // The head's timer skips the periods it slept through: after 10 s without a check (a
        // starved head; no heartbeats read meanwhile either) it makes one check, which counts
        // one miss at most. The heartbeats read after it reset the count.
        let mut t = table(5);
        assert!(t.check(5).is_empty());
        // ... 10 s pass with no check and nothing read ...
        assert!(t.check(5).is_empty(), "one check after a long sleep");
        for i in 2..=6 {
            heard(&mut t, i).expect("alive");
        }
        assert!(t.check(5).is_empty());
        assert_eq!(alive(&t), vec![1, 2, 3, 4, 5, 6]);
        // The head itself is never checked.
        let mut t = table(0);
        for _ in 0..100 {
            assert!(t.check(2).is_empty());
        }
        assert_eq!(alive(&t), vec![1]);
    }

    #[test]
    fn a_dead_node_loses_its_names() {
        let mut t = table(1);
        let on_2 = ActorId::random().with_node(2);
        let on_1 = ActorId::random().with_node(1);
        t.names.insert(("ns".into(), "a".into()), on_2);
        t.names.insert(("ns".into(), "b".into()), on_1);
        for _ in 0..3 {
            t.check(2);
        }
        assert_eq!(alive(&t), vec![1]);
        assert_eq!(t.names.len(), 1);
        assert_eq!(t.names.get(&("ns".into(), "b".into())), Some(&on_1));
    }
}
