//! # oxray
//!
//! Ray's model for Rust: remote tasks, long-lived actors and immutable objects, on one machine or
//! a cluster, with a shared-memory object store on every node so that tasks and actors read large
//! objects with zero copies.
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
//!     xs.as_slice().iter().sum::<f64>() / xs.len() as f64
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
//! ## A tour
//!
//! - **Starting**: [`init`] (or [`init_with`] and a [`Config`]) attaches to the node at
//!   `OXRAY_ADDRESS`, or embeds a single-node cluster in the program. It returns a [`Cluster`]
//!   guard; oxray stops when the last guard drops, or at [`shutdown`].
//! - **Tasks**: `#[oxray::remote]` on a function gives `f::remote(args)` returning an
//!   [`ObjectRef`], and `f::options()` for resources, retries and names ([`TaskOptions`]).
//!   Arguments are values or refs; [`get`], [`get_all`], [`get_timeout`], [`wait`], [`cancel`],
//!   and [`progress`] to take results as they finish.
//! - **Streams**: a task returning `impl Iterator<Item = T>` gives an [`ObjectRefStream`] that
//!   yields each item's ref as soon as it is stored, while the task makes the next (blocking,
//!   or awaited with `next_async`, or as a `futures::Stream` with `into_async`); a retried
//!   stream gives each item once. `#[oxray::remote(num_returns = n)]` gives a ref for each of
//!   a function's `n` returns.
//! - **Async**: an [`ObjectRef`] is a future (`r.await`, or `(&r).await` to keep the ref)
//!   giving `Result<T>`; [`get_view_async`], [`get_all_async`] and [`wait_async`] are the async
//!   forms of the blocking calls. They are woken by oxray's own events (no polling), work on any
//!   executor, and may be dropped mid-wait.
//! - **Actors**: `#[oxray::actor]` on a struct and its impl gives `T::remote(ctor args)`
//!   returning an [`ActorHandle`] whose methods submit calls, run in order in the actor's own
//!   process; names, namespaces, detached lifetimes, restarts ([`ActorOptions`]), [`get_actor`],
//!   [`kill`], [`exit_actor`], [`was_restarted`]; [`ActorPool`] spreads work over a set of
//!   actors.
//! - **Placement**: `options().scheduling_strategy(..)` on tasks and actors:
//!   [`SchedulingStrategy::Spread`] round-robins over the nodes, `NodeAffinity { node_id, soft }`
//!   pins to one node ([`NodeId`]s from [`nodes`] parse with `.parse()`). [`placement_group`]
//!   reserves bundles of resources across nodes at once ([`PlacementStrategy`]); tasks and
//!   actors run in a bundle with `options().placement_group(&pg, Some(i))`.
//! - **Objects**: [`put`] stores a value once per node; [`get_view`] and `ObjectView<T>`
//!   parameters read it in place (`as_slice()` gives `&[f64]` for vectors of numbers);
//!   [`put_with_len`] builds a large array directly in the store. A full store spills objects
//!   to disk and reads them back when used; [`memory_summary`] (and `oxray memory`) shows what
//!   fills it.
//! - **Clusters**: `oxray start --head --port P` and `oxray start --address HOST:P` (or
//!   `oxray up CLUSTER.toml`) form a cluster over QUIC with a shared secret; the same program,
//!   attached with `OXRAY_ADDRESS`, runs its tasks and actors on every node, moves objects where
//!   they are read, and survives a node's death (tasks retried, actors restarted, lost results
//!   made again from their tasks). [`nodes`], [`cluster_resources`], [`available_resources`],
//!   [`status`].
//! - **The `oxray` command**: `start`, `status`, `stop`, `wait`, `up`, `down`, `memory`, `logs`,
//!   `completions`; `oxray --help` lists every flag.
//!
//! ## How it runs
//!
//! `init()` without `OXRAY_ADDRESS` starts a raylet inside the driver: workers are this same
//! executable, started by the raylet and switched into worker mode by a constructor that runs
//! before `main` (so `main` never runs in workers; other constructors do). Everything stops when
//! the [`Cluster`] `init` returned is dropped, or when the driver exits in any way: workers exit
//! when their raylet connection closes, and the object store is a memfd, so no file is left.
//! `init` from several threads (parallel `#[test]`s in one `cargo test` binary) shares one
//! runtime: each caller gets a guard, and the last guard dropped shuts it down. Logs go to
//! stderr through `tracing` (`OXRAY_LOG` filters them; an embedded node logs warnings only).
//!
//! ## Values
//!
//! The standard types, and your own with [`macro@object`] on them (it derives rkyv's `Archive`,
//! `Serialize` and `Deserialize` through oxray's re-export, [`rkyv`]), can be put, passed and
//! returned. Values up to 100 KiB travel inline; larger ones live once in the node's object
//! store. [`get`] returns an owned copy; [`get_view`] and `ObjectView<T>` parameters read in
//! place. Inside archived values numbers are little-endian wrappers: use `.to_native()` (e.g.
//! `xs[i].to_native()`), or `as_slice()` on a view of a vector of numbers.
//!
//! ## Errors
//!
//! A task's panic or `Err` becomes [`Error::TaskFailed`] at the caller's `get`; a worker that
//! dies is retried (`max_retries`, default 3) and then [`Error::WorkerDied`]; `get` of the wrong
//! type is [`Error::TypeMismatch`]; a result the store cannot hold is
//! [`Error::ObjectStoreFull`]; an object lost with its node and not rebuildable is
//! [`Error::ObjectLost`], one whose owner exited [`Error::OwnerDied`]; see [`Error`].

mod actor_pool;
mod config;
mod memory;
mod progress;
mod runtime;
pub mod timeline;

pub use actor_pool::ActorPool;
pub use config::Config;
pub use memory::{memory_summary, Holders, MemorySummary, ObjectMemory};
pub use oxray_core_worker::await_refs::{Get, GetAll, GetRef, GetView, Wait};
/// A task's large `Vec<T>` result of plain numbers, written in place in the store: return
/// `VecInPlace::new(n, fill)` from a remote function and its ref is an `ObjectRef<Vec<T>>`.
///
/// ```
/// #[oxray::remote]
/// fn squares(n: usize) -> oxray::VecInPlace<f64> {
///     oxray::VecInPlace::new(n, |s| {
///         for (i, x) in s.iter_mut().enumerate() {
///             *x = (i * i) as f64;
///         }
///     })
/// }
/// # fn main() -> oxray::Result<()> {
/// # let _cluster = oxray::init()?;
/// let r: oxray::ObjectRef<Vec<f64>> = squares::remote(1 << 20)?; // 8 MiB, no heap copy
/// assert_eq!(oxray::get_view(&r)?.as_slice()[3], 9.0);
/// # Ok(())
/// # }
/// ```
#[cfg(target_endian = "little")]
pub use oxray_core_worker::VecInPlace;
pub use oxray_core_worker::{
    actor_info, context, exit_actor, get_actor, get_actor_in, kill, kill_with_restart,
    was_restarted, Actor, ActorHandle, ActorId, ActorInfo, ActorOptions, ActorState,
    AsyncObjectRefStream, Error, IntoArg, Lifetime, NodeId, NodeStatus, ObjectRef, ObjectRefStream,
    Result, RuntimeContext, SchedulingStrategy, TaskOptions,
};
pub use oxray_core_worker::{
    bundle, get_placement_group, placement_group, placement_group_table, PlacementGroup,
    PlacementGroupId, PlacementGroupInfo, PlacementGroupOptions, PlacementGroupState,
    PlacementStrategy, Resources,
};
pub use oxray_macros::{actor, main, object, remote};
pub use oxray_object_store::ObjectView;
pub use progress::{progress, Progress};
#[cfg(target_endian = "little")]
pub use runtime::put_with_len;
pub use runtime::{
    available_resources, cancel, cancel_with, cluster_resources, get, get_all, get_all_async,
    get_timeout, get_view, get_view_async, init, init_with, is_initialized, node_id, nodes, put,
    shutdown, status, wait, wait_async, CancelOptions, Cluster, NodeInfo, WaitResult,
};
pub use timeline::timeline;

/// The node's shared-memory object store (the `oxray-object-store` crate), for use on its own.
pub use oxray_object_store as store;
/// The `ndarray` version whose views `ObjectView<Vec<T>>::as_array` and `as_array2` return.
#[cfg(feature = "ndarray")]
pub use oxray_object_store::ndarray;
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
        block_on_task, submit_returns, submit_stream, submit_task, ActorClass, ActorInstance,
        ActorMethod, Items, LocalCall, RawActorHandle, RemoteFunction, ReturnValue, TaskArgs,
        TaskError, ACTOR_CLASSES, ACTOR_METHODS, REMOTE_FUNCTIONS,
    };
}
