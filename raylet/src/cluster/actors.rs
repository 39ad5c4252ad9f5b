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

/// How long a peer's `wait_alive` question waits for a starting actor.
const WAIT_ALIVE: Duration = Duration::from_secs(30);

/// Asks node `index` about actor `id` for local client `(conn, req)`; the answer goes to the
/// client as `Actor` or `Error`.
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
        let reply = match ask(&shared, index, id, wait_alive, kill).await {
            Ok(info) => FromRaylet::Actor { req, info },
            Err(e) => FromRaylet::Error {
                req,
                kind: ErrorKind::BadRequest,
                message: e.to_string(),
            },
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
                    message: format!("no actor with id {id} on node {}", node.id),
                }
            }
            Err(placed) => {
                // This node placed it elsewhere (which hosts it itself): ask there.
                return match ask(shared, placed, id, wait_alive, kill).await {
                    Ok(info) => PeerReply::Actor(info),
                    Err(e) => PeerReply::Error {
                        message: e.to_string(),
                    },
                };
            }
        }
    }
}
