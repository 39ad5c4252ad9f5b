//! # oxray
//!
//! Ray's model for Rust: remote tasks, long-lived actors and immutable objects, on one machine or
//! a cluster, with a shared-memory object store on every node so that tasks and actors read large
//! objects with zero copies.
//!
//! Status: the object store works today and is re-exported as [`store`]; `init`, `put`, `get`,
//! `#[remote]` and actors come with the runtime (see the README's status table).
//!
//! ```
//! use oxray::store::{ArenaOptions, ObjectId, Store};
//!
//! let store = Store::new(&ArenaOptions::new(8 << 20))?;
//! store.put(ObjectId::from_u128(7), &vec![1u32, 2, 3], false)?;
//! let view = store.get_view::<Vec<u32>>(ObjectId::from_u128(7))?;
//! assert_eq!(view.iter().map(|x| x.to_native()).sum::<u32>(), 6);
//! # Ok::<(), oxray::store::StoreError>(())
//! ```

/// The node's shared-memory object store (the `oxray-object-store` crate).
pub use oxray_object_store as store;
/// rkyv, whose derives (`Archive`, `Serialize`, `Deserialize`) make user types storable.
pub use oxray_object_store::rkyv;
