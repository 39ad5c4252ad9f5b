//! # oxray-core-worker
//!
//! The library inside every oxray driver and worker process (Ray's `core_worker`). It will own
//! the refs its process created and count them (local handles, refs inside submitted tasks,
//! borrowers), submit tasks by leasing a worker from the raylet and pushing tasks straight to it,
//! run tasks in worker mode, keep the link-time function registry, and read objects from the
//! node's [`oxray_object_store`] arena with zero copies.
//!
//! Status: not written yet (issue "Single-node runtime"). Today it only re-exports the store types
//! it will build on.

pub use oxray_object_store::{ObjectId, ObjectView};
