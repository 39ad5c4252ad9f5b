//! Named actors across the cluster: the head keeps which actor has each (namespace, name), so
//! names are unique cluster-wide and `get_actor` finds an actor started by any node's driver.
//!
//! The node that registers a named actor claims the name first; any node that records the
//! actor dead for good releases it; a lookup that misses locally asks the head, then asks the
//! actor's home node where it runs. When a node dies, the head forgets the names its drivers
//! registered (their non-detached actors died with them).

use std::sync::Arc;

use oxray_common::peer::{PeerReply, PeerRequest};
use oxray_common::protocol::{ActorSpec, ErrorKind, FromRaylet};
use oxray_common::ActorId;

use super::{actors, head, peers, wire, Shared};
use crate::error::{RayletError, Result};

/// Sends a name request to the head (or answers it here, on the head).
async fn ask_head(shared: &Arc<Shared>, req: PeerRequest) -> Result<PeerReply> {
    let Some(address) = shared.config.head.clone() else {
        return Ok(head::names(shared, req));
    };
    let conn = peers::connection(shared, &address).await?;
    wire::request(&conn, &req, &address).await
}

fn unexpected(shared: &Shared, reply: PeerReply) -> RayletError {
    RayletError::Peer {
        peer: shared.config.head.clone().unwrap_or_default(),
        reason: format!("unexpected answer to a name request: {reply:?}"),
    }
}

/// Claims `spec`'s name for it, then creates it on this node's behalf (`Node::create_actor`);
/// a name another actor has is an error to the client `(conn, req)`.
pub(crate) fn claim_then_create(shared: &Arc<Shared>, conn: u64, req: u64, spec: ActorSpec) {
    let shared = shared.clone();
    shared.runtime.clone().spawn(async move {
        let claim = PeerRequest::ClaimName {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            id: spec.id,
        };
        let bad = ErrorKind::BadRequest;
        let refusal = match ask_head(&shared, claim).await {
            Ok(PeerReply::Named(Some(holder))) if holder == spec.id => None,
            Ok(PeerReply::Named(_)) => Some((
                ErrorKind::NameTaken,
                format!(
                    "an actor named {:?} already exists in namespace {:?} (on another node); \
                     pick another name or get it with get_actor",
                    spec.name, spec.namespace
                ),
            )),
            Ok(PeerReply::Error { message }) => Some((bad, message)),
            Ok(other) => Some((bad, unexpected(&shared, other).to_string())),
            Err(e) => Some((
                bad,
                format!("could not reserve the actor's name at the head: {e}"),
            )),
        };
        match (refusal, shared.node.upgrade()) {
            (None, Some(node)) => node.create_actor(conn, req, spec, true),
            (Some((kind, message)), _) => refuse(&shared, conn, req, kind, message),
            (None, None) => {}
        }
    });
}

/// Answers local client `(conn, req)` with an error.
fn refuse(shared: &Shared, conn: u64, req: u64, kind: ErrorKind, message: String) {
    if let Some(node) = shared.node.upgrade() {
        node.send_to_client(conn, &FromRaylet::Error { req, kind, message });
    }
}

/// Frees a dead actor's name at the head: at once on the head itself, else fire and forget (a
/// lost release only keeps the name until the actor's home node goes away).
pub(crate) fn release(shared: &Arc<Shared>, namespace: String, name: String, id: ActorId) {
    if shared.config.head.is_none() {
        let req = PeerRequest::ReleaseName {
            namespace,
            name,
            id,
        };
        head::names(shared, req);
        return;
    }
    let shared = shared.clone();
    shared.runtime.clone().spawn(async move {
        let req = PeerRequest::ReleaseName {
            namespace,
            name,
            id,
        };
        if let Err(e) = ask_head(&shared, req).await {
            tracing::warn!("could not free actor {id}'s name at the head: {e}");
        }
    });
}

/// Finds the actor named `name` in `namespace` anywhere in the cluster for local client
/// `(conn, req)`: the head says which actor, its home node says where it runs.
pub(crate) fn lookup(
    shared: &Arc<Shared>,
    conn: u64,
    req: u64,
    namespace: String,
    name: String,
    wait_alive: bool,
) {
    let shared = shared.clone();
    shared.runtime.clone().spawn(async move {
        let ask = PeerRequest::LookupName {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let message = match ask_head(&shared, ask).await {
            Ok(PeerReply::Named(Some(id))) => {
                let Some(node) = shared.node.upgrade() else {
                    return;
                };
                match node.actor_location(id) {
                    Some(index) => actors::query(&shared, conn, req, index, id, wait_alive, None),
                    None => node.get_actor(conn, req, Some(id), "", "", wait_alive),
                }
                return;
            }
            Ok(PeerReply::Named(None)) => {
                format!("no live actor named {name:?} in namespace {namespace:?}")
            }
            Ok(PeerReply::Error { message }) => message,
            Ok(other) => unexpected(&shared, other).to_string(),
            Err(e) => format!("could not ask the head for actor {name:?}: {e}"),
        };
        refuse(&shared, conn, req, ErrorKind::BadRequest, message);
    });
}
