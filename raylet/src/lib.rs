//! # oxray-raylet
//!
//! The node daemon of oxray, as a library (so a driver can embed a single-node cluster) and, later,
//! the `raylet` binary. One raylet per node: it owns the node's [`oxray_object_store::Store`],
//! serves local clients on a Unix socket, grants worker leases, starts and reaps worker processes,
//! moves objects between nodes over QUIC and, on the head node, hosts the control service.
//!
//! Status: not written yet (issues "Single-node runtime" and "Multi-node cluster"). The object
//! store it will own is complete in `oxray-object-store`.

pub use oxray_object_store::Store;
