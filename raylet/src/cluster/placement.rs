//! Placement groups across nodes: a member passes its clients' requests on to the head, whose
//! node state manages the groups (`node/placement.rs`); the head's manager asks members to
//! prepare, commit or release bundles (`node/bundles.rs`). Both ride on one QUIC stream per
//! request, like the other control requests.

use std::sync::Arc;

use oxray_common::peer::{PeerReply, PeerRequest};
use oxray_common::placement::{BundleOp, PlacementGroupId, PlacementRequest};
use oxray_common::protocol::{ErrorKind, FromRaylet};

use super::{peers, wire, Shared};

/// Passes local client `(conn, req)`'s request on to the head; its answer goes to the client.
pub(crate) fn to_head(shared: &Arc<Shared>, conn: u64, req: u64, request: PlacementRequest) {
    let shared = shared.clone();
    shared.runtime.clone().spawn(async move {
        let Some(head) = shared.config.head.clone() else {
            return;
        };
        let asked = async {
            let c = peers::connection(&shared, &head).await?;
            wire::request(&c, &PeerRequest::Placement(request), &head).await
        };
        let answer = match asked.await {
            Ok(PeerReply::Answer(msg)) => with_req(msg, req),
            Ok(PeerReply::Error { message }) => FromRaylet::Error {
                req,
                kind: ErrorKind::BadRequest,
                message,
            },
            Ok(other) => FromRaylet::Error {
                req,
                kind: ErrorKind::BadRequest,
                message: format!("unexpected answer from the head: {other:?}"),
            },
            Err(e) => FromRaylet::Error {
                req,
                kind: ErrorKind::BadRequest,
                message: format!(
                    "the head ({head}) manages placement groups and did not answer: {e}"
                ),
            },
        };
        if let (Some(node), true) = (shared.node.upgrade(), conn != 0) {
            node.send_to_client(conn, &answer);
        }
    });
}

/// The answer the head gave, with the asking client's request number.
fn with_req(msg: FromRaylet, req: u64) -> FromRaylet {
    match msg {
        FromRaylet::PlacementGroups { groups, .. } => FromRaylet::PlacementGroups { req, groups },
        FromRaylet::Error { kind, message, .. } => FromRaylet::Error { req, kind, message },
        other => other,
    }
}

/// Sends the manager's bundle request to node `index`; the answer goes back to the manager
/// (`Node::bundles_answered`). A node that cannot be reached answers no.
pub(crate) fn bundles(
    shared: &Arc<Shared>,
    index: u16,
    group: PlacementGroupId,
    attempt: u64,
    op: BundleOp,
) {
    let shared = shared.clone();
    shared.runtime.clone().spawn(async move {
        let asked = async {
            let address = peers::peer_address(&shared, index)?;
            let c = peers::connection(&shared, &address).await?;
            wire::request(&c, &PeerRequest::Bundles(op), &address).await
        };
        let result = match asked.await {
            Ok(PeerReply::Ok) => Ok(()),
            Ok(PeerReply::Error { message }) => Err(message),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(format!("node {index} did not answer: {e}")),
        };
        if let Some(node) = shared.node.upgrade() {
            node.bundles_answered(group, attempt, index, result);
        }
    });
}

/// On the head: serves another node's client request with the manager.
pub(crate) async fn serve(shared: &Arc<Shared>, request: PlacementRequest) -> PeerReply {
    let Some(node) = shared.node.upgrade() else {
        return PeerReply::Error {
            message: "the node is stopping".into(),
        };
    };
    if shared.config.head.is_some() {
        return PeerReply::Error {
            message: "this node is not the head; placement groups are managed there".into(),
        };
    }
    let answer = node.placement_from_peer(request);
    drop(node);
    match answer.await {
        Ok(msg) => PeerReply::Answer(msg),
        Err(_) => PeerReply::Error {
            message: "the head stopped before answering".into(),
        },
    }
}

/// On any node: carries out the manager's bundle request.
pub(crate) fn serve_bundles(shared: &Shared, op: BundleOp) -> PeerReply {
    match shared.node.upgrade().map(|node| node.bundle_op(op)) {
        Some(Ok(())) => PeerReply::Ok,
        Some(Err(message)) => PeerReply::Error { message },
        None => PeerReply::Error {
            message: "the node is stopping".into(),
        },
    }
}
