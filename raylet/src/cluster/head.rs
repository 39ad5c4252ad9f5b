//! Accepting peers (every node), and the head's control service: node registration, health
//! checks, the cluster view, and the names of named actors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxray_common::peer::{ClusterView, NodeInfo, NodeLoad, PeerReply, PeerRequest};
use oxray_common::{ActorId, NodeId};

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
}

struct Entry {
    info: NodeInfo,
    last_heard: Instant,
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
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Table> {
    shared.table.lock().unwrap_or_else(|p| p.into_inner())
}

/// This node as the cluster sees it.
pub(crate) fn self_info(shared: &Shared, node: &Node, is_head: bool) -> NodeInfo {
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
        load: node.load(),
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
    let mut info = self_info(shared, node, true);
    info.index = 1;
    let mut table = lock(shared);
    table.next_index = 2;
    table.nodes.push(Entry {
        info,
        last_heard: Instant::now(),
    });
    let view = table.view(&shared.config.name);
    // Never lock the node's state under the table: the node calls in here holding it.
    drop(table);
    node.set_cluster_view(view);
}

/// Every period: refresh the head's own load, mark silent nodes dead, publish the view locally.
pub(crate) async fn monitor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.health_check_period);
    loop {
        tick.tick().await;
        let Some(node) = shared.node.upgrade() else {
            return;
        };
        let load = node.load();
        let mut table = lock(&shared);
        let now = Instant::now();
        let mut died = Vec::new();
        for e in &mut table.nodes {
            if e.info.id == node.id() {
                e.info.load = load.clone();
                e.last_heard = now;
            } else if e.info.alive
                && now.duration_since(e.last_heard) > shared.config.health_check_timeout
            {
                e.info.alive = false;
                died.push(e.info.index);
                eprintln!(
                    "oxray head: node {} ({}) missed its health checks for {:?}: marked dead",
                    e.info.id, e.info.peer_address, shared.config.health_check_timeout
                );
            }
        }
        for index in died {
            table.forget_names_of(index);
        }
        let view = table.view(&shared.config.name);
        drop(table);
        node.set_cluster_view(view);
    }
}

/// Accepts peer connections until the endpoint closes.
pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address().to_string();
            match incoming.await {
                Ok(conn) => serve(conn, shared, remote).await,
                Err(e) => eprintln!("oxray raylet: peer {remote}: handshake failed: {e}"),
            }
        });
    }
}

/// Serves one connection: the secret first, then requests, each on its own stream.
async fn serve(conn: quinn::Connection, shared: Arc<Shared>, remote: String) {
    if let Err(reason) = authenticate(&conn, &shared, &remote).await {
        eprintln!("oxray raylet: refused peer {remote}: {reason}");
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
    let first = tokio::time::timeout(AUTH_DEADLINE, wire::read::<PeerRequest>(&mut recv, remote))
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
    eprintln!(
        "oxray head: node {} joined from {} (session {}, {})",
        info.id, info.peer_address, info.session, info.total
    );
    table.nodes.retain(|e| e.info.id != info.id);
    table.nodes.push(Entry {
        info,
        last_heard: Instant::now(),
    });
    let view = table.view(&shared.config.name);
    drop(table);
    if let Some(node) = shared.node.upgrade() {
        node.set_cluster_view(view.clone());
    }
    PeerReply::View(view)
}

fn leave(shared: &Shared, id: NodeId) -> PeerReply {
    let mut table = lock(shared);
    if let Some(e) = table.nodes.iter_mut().find(|e| e.info.id == id) {
        if e.info.alive {
            eprintln!("oxray head: node {id} ({}) left", e.info.peer_address);
        }
        e.info.alive = false;
        let index = e.info.index;
        table.forget_names_of(index);
    }
    let view = table.view(&shared.config.name);
    drop(table);
    if let Some(node) = shared.node.upgrade() {
        node.set_cluster_view(view.clone());
    }
    PeerReply::View(view)
}

fn heartbeat(shared: &Shared, id: NodeId, load: NodeLoad) -> PeerReply {
    let mut table = lock(shared);
    let Some(e) = table.nodes.iter_mut().find(|e| e.info.id == id) else {
        return PeerReply::Refused {
            reason: format!("node {id} is not registered with this head; restart it"),
        };
    };
    if !e.info.alive {
        // As in Ray: a node declared dead stays dead (its work was already given up on).
        return PeerReply::Refused {
            reason: format!("node {id} missed its health checks and was declared dead; restart it"),
        };
    }
    e.info.load = load;
    e.last_heard = Instant::now();
    PeerReply::View(table.view(&shared.config.name))
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
