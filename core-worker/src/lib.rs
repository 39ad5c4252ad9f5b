//! # oxray-core-worker
//!
//! The library inside every oxray driver and worker process (Ray's `core_worker`):
//!
//! - [`core`]: the process's [`CoreWorker`]: its raylet connection, the owner's ref table, `put`,
//!   `get`, `wait`;
//! - [`await_refs`]: `ObjectRef<T>` as a future, and async `get_view`, `get_all`, `wait`;
//! - `refs`: ownership and reference counting of the objects this process created;
//! - `submitter`: dependency resolution, worker leases, and tasks pushed straight to leased
//!   workers (the raylet is not on the per-task path);
//! - `direct`: connections straight to workers and actors on other nodes (TCP and TLS, proved
//!   with the job's credential), so no call is relayed through a raylet;
//! - `executor` and `worker_mode`: the worker side: entered before `main` when the raylet
//!   starts this executable as a worker, runs tasks, stores results; `incoming` serves the
//!   connections beyond the first without a thread each;
//! - [`registry`]: the link-time table of `#[oxray::remote]` functions;
//! - [`args`] and [`value`]: how arguments and results are encoded (inline when ≤ 100 KiB, in the
//!   node's store otherwise).
//!
//! Users reach all of this through the `oxray` crate.

pub mod actor_handle;
pub mod actor_host;
pub mod args;
mod async_tasks;
pub mod await_refs;
mod borrow;
mod context;
pub mod core;
mod direct;
mod error;
mod executor;
mod incoming;
mod lineage;
mod object_ref;
mod owners;
pub mod placement;
mod raylet_client;
mod refs;
pub mod registry;
mod replies;
pub mod stream;
mod submitter;
pub mod task;
mod task_events;
pub mod value;
mod worker_mode;

pub use crate::core::{current, is_initialized, CoreWorker};
pub use actor_handle::{
    actor_info, get_actor, get_actor_in, kill, kill_with_restart, Actor, ActorHandle, ActorOptions,
    Lifetime, RawActorHandle,
};
pub use actor_host::{
    exit_actor, was_restarted, ActorClass, ActorInstance, ActorMethod, LocalCall, ACTOR_CLASSES,
    ACTOR_METHODS,
};
pub use args::{ArgSpec, IntoArg, TaskArgs};
pub use async_tasks::block_on_task;
pub use context::{context, RuntimeContext};
pub use error::{Error, Result};
pub use object_ref::ObjectRef;
pub use oxray_common::placement::{
    PlacementGroupId, PlacementGroupInfo, PlacementGroupState, PlacementStrategy,
};
pub use oxray_common::protocol::{ActorInfo, ActorState, Strategy as SchedulingStrategy};
pub use oxray_common::protocol::{ClientKind, NodeStatus};
pub use oxray_common::resources::Resources;
pub use oxray_common::{ActorId, JobId, NodeId, WorkerId};
pub use oxray_object_store::{ObjectId, ObjectView};
pub use placement::{
    bundle, get_placement_group, placement_group, placement_group_table, PlacementGroup,
    PlacementGroupOptions,
};
pub use registry::{RemoteFunction, TaskError, REMOTE_FUNCTIONS};
pub use stream::{submit_returns, submit_stream, AsyncObjectRefStream, ObjectRefStream, Returns};
pub use task::{submit_task, TaskOptions};
#[cfg(target_endian = "little")]
pub use value::VecInPlace;
pub use value::{Items, ReturnValue};
pub use worker_mode::is_worker;

/// Re-exports for the code the macros generate. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use linkme;
}
