//! # oxray-object-store
//!
//! The per-node shared-memory object store of [oxray](https://github.com/oxray/oxray): one
//! arena file in `/dev/shm`, created by the node's raylet and mapped by every worker and driver on
//! the node, so a large object exists once per node and every process reads it in place.
//!
//! The crate has no sockets and no runtime: it is usable and testable on its own, across
//! processes.
//!
//! - [`Arena`]: the shared-memory file and its mapping (mode 0600, unlinked by its creator).
//! - [`Allocator`]: 64-byte aligned best-fit blocks with coalescing, O(log n).
//! - [`ObjectTable`]: create → seal → pin/release → delete, per-client pins, LRU eviction of
//!   evictable objects. Pure bookkeeping, owned by one process.
//! - [`Store`]: the arena and its table behind a mutex: raw operations for the raylet to serve
//!   other processes, and typed `put`/`get_view` for the owner process.
//! - [`file_object`]: objects kept in files (larger than the store, or no room left in it), mapped
//!   by their writer and readers like the arena.
//! - [`ObjectBytes`] and [`ObjectView`]: pinned, zero-copy read views; an `ObjectView<T>` derefs
//!   to rkyv's archived `T` in place, after checking the type fingerprint in the object header.
//!
//! Where the metadata lives and why (the owner's memory, not the arena) is explained in
//! `docs/ARCHITECTURE.md`: a client that crashes mid-operation cannot corrupt the table, and its
//! pins are released when the owner sees it disconnect.
//!
//! ```
//! use oxray_object_store::{ArenaOptions, ObjectId, Store};
//!
//! let store = Store::new(&ArenaOptions::new(16 << 20))?;
//! let id = ObjectId::from_u128(1);
//! store.put(id, &vec![1.5f64; 1000], false)?;
//! let view = store.get_view::<Vec<f64>>(id)?; // no copy: reads the arena
//! assert_eq!(view.len(), 1000);
//! assert_eq!(view[3].to_native(), 1.5);
//! # Ok::<(), oxray_object_store::StoreError>(())
//! ```

pub mod allocator;
pub mod arena;
mod error;
pub mod file_object;
mod header;
mod id;
pub mod native;
mod store;
pub mod table;
pub mod typed;
mod view;

pub use allocator::{Allocator, ALIGNMENT};
pub use arena::{Arena, ArenaOptions, Reserve};
pub use error::{Result, StoreError};
pub use file_object::{allocate_file, FileWriter};
pub use header::HEADER_SIZE;
pub use id::{ArchivedObjectId, ObjectId};
#[cfg(target_endian = "little")]
pub use native::encode_vec_in_place;
pub use native::{vec_encoded_len, Native};
#[cfg(feature = "ndarray")]
pub use ndarray;
pub use rkyv;
pub use store::{ObjectWriter, Store};
pub use table::{ClientId, CreateOptions, Location, ObjectInfo, ObjectTable, StoreStats};
pub use typed::{fingerprint, Encode, Object, ObjectView};
pub use view::{HeapBytes, ObjectBytes};
