//! # oxray
//!
//! Ray's model for Rust: remote tasks and immutable objects (actors and clusters are coming), with
//! a shared-memory object store on every node so that tasks read large objects with zero copies.
//!
//! ```no_run
//! use oxray::prelude::*;
//!
//! #[oxray::remote]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! #[oxray::remote]
//! fn mean(xs: ObjectView<Vec<f64>>) -> f64 {
//!     // `xs` reads the node's object store in place: no copy, whatever the size.
//!     xs.iter().map(|x| x.to_native()).sum::<f64>() / xs.len() as f64
//! }
//!
//! fn main() -> oxray::Result<()> {
//!     let _cluster = oxray::init()?; // OXRAY_ADDRESS, or an embedded single-node cluster
//!     let r = add::remote(1, 2)?; // ObjectRef<i64>
//!     let s = add::remote(&r, 10)?; // a ref where an i64 is expected
//!     assert_eq!(oxray::get(&s)?, 13);
//!     let big = oxray::put(&vec![0.5f64; 1 << 20])?; // 8 MiB: goes to the object store
//!     assert_eq!(oxray::get(&mean::remote(&big)?)?, 0.5);
//!     Ok(())
//! }
//! ```
//!
//! ## How it runs
//!
//! `init()` without `OXRAY_ADDRESS` starts a raylet inside the driver: workers are this same
//! executable, started by the raylet and switched into worker mode by a constructor that runs
//! before `main` (so `main` never runs in workers; other constructors do). Everything stops when
//! the [`Cluster`] `init` returned is dropped, or when the driver exits in any way: workers exit
//! when their raylet connection closes, and the object store is a memfd, so no file is left.
//! `init` from several threads (parallel `#[test]`s in one `cargo test` binary) shares one
//! runtime: each caller gets a guard, and the last guard dropped shuts it down.
//!
//! ## Values
//!
//! The standard types, and your own with [`macro@object`] on them (it derives rkyv's `Archive`,
//! `Serialize` and `Deserialize` through oxray's re-export, [`rkyv`]), can be put, passed and
//! returned. Values up to
//! 100 KiB travel inline; larger ones live once in the node's object store. [`get`] returns an
//! owned copy; [`get_view`] and `ObjectView<T>` parameters read in place. Archived numbers are
//! little-endian wrappers: use `.to_native()` (e.g. `xs[i].to_native()`).
//!
//! ## Errors
//!
//! A task's panic or `Err` becomes [`Error::TaskFailed`] at the caller's `get`; a worker that
//! dies is retried (`max_retries`, default 3) and then [`Error::WorkerDied`]; `get` of the wrong
//! type is [`Error::TypeMismatch`]; see [`Error`].

mod config;
mod memory;
mod progress;
mod runtime;

pub use config::Config;
pub use memory::{memory_summary, Holders, MemorySummary, ObjectMemory};
pub use oxray_core_worker::{
    actor_info, exit_actor, get_actor, get_actor_in, kill, kill_with_restart, was_restarted, Actor,
    ActorHandle, ActorId, ActorInfo, ActorOptions, ActorState, Error, IntoArg, Lifetime,
    NodeStatus, ObjectRef, Result, TaskOptions,
};
pub use oxray_macros::{actor, main, object, remote};
pub use oxray_object_store::ObjectView;
pub use progress::{progress, Progress};
#[cfg(target_endian = "little")]
pub use runtime::put_with_len;
pub use runtime::{
    available_resources, cancel, cluster_resources, get, get_all, get_timeout, get_view, init,
    init_with, is_initialized, node_id, nodes, put, shutdown, status, wait, Cluster, NodeInfo,
    WaitResult,
};

/// The node's shared-memory object store (the `oxray-object-store` crate), for use on its own.
pub use oxray_object_store as store;
/// rkyv, whose derives (`Archive`, `Serialize`, `Deserialize`) make user types storable.
pub use oxray_object_store::rkyv;

/// What most programs import: `use oxray::prelude::*;`.
pub mod prelude {
    pub use crate::{actor, remote, ActorHandle, Error, ObjectRef, ObjectView, Result};
}

/// Items the macros' generated code uses. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use oxray_core_worker::__private::linkme;
    pub use oxray_core_worker::{
        submit_task, ActorClass, ActorInstance, ActorMethod, RawActorHandle, RemoteFunction,
        ReturnValue, TaskArgs, TaskError, ACTOR_CLASSES, ACTOR_METHODS, REMOTE_FUNCTIONS,
    };
}
