//! One-shot requests from command-line tools (`oxray status`, `oxray stop`).

use oxray_common::frame;
use oxray_common::protocol::{ClientKind, FromRaylet, NodeStatus, ToRaylet};
use oxray_common::WorkerId;
use oxray_object_store::HeapBytes;

use crate::error::{RayletError, Result};
use crate::server::connect;

fn ask(address: &str, request: ToRaylet) -> Result<FromRaylet> {
    let io = |what: &str, e| RayletError::io(format!("{what} {address}"), e);
    let mut stream = connect(address).map_err(|e| io("cannot reach the oxray node at", e))?;
    let register = ToRaylet::Register {
        worker: WorkerId::random(),
        pid: std::process::id(),
        kind: ClientKind::Tool,
        exe: String::new(),
        listen: String::new(),
        namespace: String::new(),
        job_key: Vec::new(),
    };
    frame::write(&mut stream, &register).map_err(|e| io("writing to", e))?;
    frame::write(&mut stream, &request).map_err(|e| io("writing to", e))?;
    let mut buf = HeapBytes::new();
    // Skip the registration reply (and anything else) until the answer.
    for _ in 0..16 {
        match frame::read::<FromRaylet, _>(&mut stream, &mut buf) {
            Ok(FromRaylet::Registered { .. }) => continue,
            Ok(reply) => return Ok(reply),
            Err(e) => {
                return Err(RayletError::Config(format!(
                    "the node at {address} did not answer: {e}"
                )))
            }
        }
    }
    Err(RayletError::Config(format!(
        "the node at {address} sent no answer"
    )))
}

/// The state of the node at `address`.
pub fn status(address: &str) -> Result<NodeStatus> {
    match ask(address, ToRaylet::Status { req: 1 })? {
        FromRaylet::Status { status, .. } => Ok(*status),
        other => Err(RayletError::Config(format!("unexpected answer {other:?}"))),
    }
}

/// The placement groups of the cluster of the node at `address` (the head manages them; a
/// member asks it).
pub fn placement_groups(address: &str) -> Result<Vec<oxray_common::placement::PlacementGroupInfo>> {
    let request = oxray_common::placement::PlacementRequest::Table;
    match ask(address, ToRaylet::Placement { req: 1, request })? {
        FromRaylet::PlacementGroups { groups, .. } => Ok(groups),
        FromRaylet::Error { message, .. } => Err(RayletError::Config(message)),
        other => Err(RayletError::Config(format!("unexpected answer {other:?}"))),
    }
}

/// The objects in the store of the node at `address` (and spilled from it), largest first.
pub fn memory(address: &str) -> Result<Vec<oxray_common::protocol::StoredObject>> {
    match ask(address, ToRaylet::Memory { req: 1 })? {
        FromRaylet::Memory { objects, .. } => Ok(objects),
        other => Err(RayletError::Config(format!("unexpected answer {other:?}"))),
    }
}

/// The task events the node at `address` recorded (`oxray timeline`), with its id.
pub fn timeline(
    address: &str,
) -> Result<(oxray_common::NodeId, Vec<oxray_common::protocol::TaskEvent>)> {
    match ask(address, ToRaylet::Timeline { req: 1 })? {
        FromRaylet::Timeline { node, events, .. } => Ok((node, events)),
        other => Err(RayletError::Config(format!("unexpected answer {other:?}"))),
    }
}

/// Asks the node at `address` to stop (its workers are killed).
pub fn stop(address: &str) -> Result<()> {
    let node = status(address)?;
    ask(address, ToRaylet::Stop { req: 1 })?;
    // A node in a process of its own is stopped once that process is gone (its log is
    // complete then); an embedded one stops serving and leaves its driver running.
    if node.own_process && !crate::workers::exits_within(node.pid, STOP_WAIT) {
        return Err(RayletError::Config(format!(
            "the node at {address} (pid {}) is still shutting down after {} s; its log says why",
            node.pid,
            STOP_WAIT.as_secs()
        )));
    }
    Ok(())
}

/// How long `stop` waits for a node's process to end.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
