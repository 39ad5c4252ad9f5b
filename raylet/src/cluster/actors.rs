//! Actors on other nodes: where one runs, and killing it.
//!
//! An actor's id carries the index of the node whose raylet registered it (its *home*). The
//! home runs it, or placed it on another node and remembers which. So any raylet asked about an
//! actor it does not host asks the home (or the node it placed the actor on), which answers
//! from its table, waiting while the actor starts or restarts, with the actor's address made
//! reachable from anywhere (`peer://…`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use oxray_common::peer::{PeerReply, PeerRequest};
use oxray_common::protocol::{ActorInfo, ActorState, ErrorKind, FromRaylet};
use oxray_common::ActorId;

use super::{peers, wire, Shared};
use crate::error::{RayletError, Result};

/// How long a `wait_alive` question waits for a starting actor.
const WAIT_ALIVE: Duration = Duration::from_secs(30);

/// How often a `wait_alive` question looks again for an actor whose node did not answer.
const RELOOK: Duration = Duration::from_millis(100);

/// Asks node `index` about actor `id` for local client `(conn, req)`; the answer goes to the
/// client as `Actor` or `Error`. With `wait_alive`, a node that does not answer (it may have
/// just died, and its actors are being started again elsewhere) is no final answer: the
/// actor's place is looked up again until `WAIT_ALIVE` runs out.
pub(crate) fn query(
    shared: &Arc<Shared>,
    conn: u64,
    req: u64,
    index: u16,
    id: ActorId,
    wait_alive: bool,
    kill: Option<bool>,
) {
    let shared = shared.clone();
    shared.runtime.clone().spawn(async move {
        let started = Instant::now();
        let mut index = index;
        let reply = loop {
            let err = match ask(&shared, index, id, wait_alive, kill).await {
                Ok(info) => {
                    if let Some(node) = shared.node.upgrade() {
                        node.placed_actor_seen(&info);
                    }
                    break FromRaylet::Actor { req, info };
                }
                Err(e) => e,
            };
            if !wait_alive || started.elapsed() >= WAIT_ALIVE {
                break FromRaylet::Error {
                    req,
                    kind: ErrorKind::BadRequest,
                    message: err.to_string(),
                };
            }
            tokio::time::sleep(RELOOK).await;
            let Some(node) = shared.node.upgrade() else {
                return;
            };
            match node.actor_location(id) {
                Some(i) => index = i,
                None => {
                    // Now in this node's own table (started here again, or dead).
                    node.get_actor(conn, req, Some(id), "", "", wait_alive);
                    return;
                }
            }
        };
        if let Some(node) = shared.node.upgrade() {
            node.send_to_client(conn, &reply);
        }
    });
}

async fn ask(
    shared: &Arc<Shared>,
    index: u16,
    id: ActorId,
    wait_alive: bool,
    kill: Option<bool>,
) -> Result<ActorInfo> {
    let peer = peers::peer_address(shared, index)?;
    let conn = peers::connection(shared, &peer).await?;
    let req = PeerRequest::Actor {
        id,
        wait_alive,
        kill,
    };
    match wire::request(&conn, &req, &peer).await? {
        PeerReply::Actor(info) => Ok(info),
        PeerReply::Error { message } => Err(RayletError::Peer {
            peer,
            reason: message,
        }),
        other => Err(RayletError::Peer {
            peer,
            reason: format!("unexpected answer {other:?}"),
        }),
    }
}

/// Answers a peer's `Actor` question.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    id: ActorId,
    wait_alive: bool,
    kill: Option<bool>,
) -> PeerReply {
    let started = Instant::now();
    let mut kill = kill;
    loop {
        let Some(node) = shared.node.upgrade() else {
            return PeerReply::Error {
                message: "the node is stopping".into(),
            };
        };
        match node.actor_for_peer(id, kill.take()) {
            Ok(Some(mut info)) => {
                let starting = matches!(info.state, ActorState::Pending | ActorState::Restarting);
                if wait_alive && starting && started.elapsed() < WAIT_ALIVE {
                    drop(node);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                if info.address.starts_with("unix:") {
                    info.address = format!("peer://{}/{}", shared.peer_address, info.address);
                }
                return PeerReply::Actor(info);
            }
            Ok(None) => {
                return PeerReply::Error {
                    message: format!("no actor with id {id} on node {}", node.id()),
                }
            }
            Err(placed) => {
                // This node placed it elsewhere (which hosts it itself): ask there.
                drop(node);
                match ask(shared, placed, id, wait_alive, kill).await {
                    Ok(info) => {
                        if let Some(node) = shared.node.upgrade() {
                            node.placed_actor_seen(&info);
                        }
                        return PeerReply::Actor(info);
                    }
                    Err(_) if wait_alive && started.elapsed() < WAIT_ALIVE => {
                        tokio::time::sleep(RELOOK).await;
                    }
                    Err(e) => {
                        return PeerReply::Error {
                            message: e.to_string(),
                        }
                    }
                }
            }
        }
    }
}
