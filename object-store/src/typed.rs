//! Typed objects: rkyv encoding straight into the arena, and views that deref to the archived
//! value in place.
//!
//! A value is serialized twice over: first into a counting writer that only measures (for flat
//! data such as `Vec<f64>` that is one addition, since rkyv copies plain slices whole), then into
//! its arena block. So a `put` costs one allocation in the arena and one copy of the bytes, and
//! there is no intermediate buffer.

use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::{self, Source};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Positional, Writer};
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::view::ObjectBytes;
use crate::ObjectId;

/// The rkyv serializer oxray encodes objects with.
pub type ObjectSerializer<'a> = HighSerializer<ArenaWriter, ArenaHandle<'a>, rancor::Error>;

/// Values that can be encoded into an object. Implemented for every type that derives
/// `rkyv::Serialize` (and for the standard types rkyv supports).
pub trait Encode: for<'a> Serialize<ObjectSerializer<'a>> {}
impl<T: for<'a> Serialize<ObjectSerializer<'a>>> Encode for T {}

/// Values that can be stored and read back: encodable, with an archived form that can be
/// validated and deserialized. Implemented for every type deriving rkyv's `Archive`,
/// `Serialize` and `Deserialize` (with `bytecheck`, rkyv's default).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in an oxray object store",
    label = "not storable",
    note = "put `#[oxray::object]` on the type (it derives rkyv's Archive, Serialize and Deserialize with the right crate path), or derive them yourself with `#[rkyv(crate = oxray::rkyv)]`"
)]
pub trait Object: Encode + Archive + Sized {
    /// Validates `bytes` as an archived `Self` and returns a reference into them.
    fn access(bytes: &[u8]) -> Result<&Self::Archived, rancor::Error>;
    /// Builds an owned value from its archived form.
    fn decode(archived: &Self::Archived) -> Result<Self, rancor::Error>;
}

impl<T> Object for T
where
    T: Encode + Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn access(bytes: &[u8]) -> Result<&Self::Archived, rancor::Error> {
        rkyv::access::<T::Archived, rancor::Error>(bytes)
    }

    fn decode(archived: &Self::Archived) -> Result<Self, rancor::Error> {
        rkyv::deserialize::<T, rancor::Error>(archived)
    }
}

/// The fingerprint recorded for objects of type `T`: a hash of the type's name and its archived
/// size and alignment. Stable for one build of a program (every process of a session runs the
/// same executable); never 0, which marks untyped bytes.
pub fn fingerprint<T: Archive>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(std::any::type_name::<T>().as_bytes());
    eat(&(std::mem::size_of::<T::Archived>() as u64).to_le_bytes());
    eat(&(std::mem::align_of::<T::Archived>() as u64).to_le_bytes());
    h.max(1)
}

/// An rkyv writer over a raw byte range, or (with no range) a counter that only measures.
pub struct ArenaWriter {
    ptr: *mut u8,
    cap: usize,
    pos: usize,
}

impl ArenaWriter {
    fn counting() -> Self {
        ArenaWriter {
            ptr: std::ptr::null_mut(),
            cap: usize::MAX,
            pos: 0,
        }
    }
}

impl Positional for ArenaWriter {
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: Source> Writer<E> for ArenaWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        let end = self.pos.checked_add(bytes.len()).filter(|&e| e <= self.cap);
        let Some(end) = end else {
            return Err(E::new(WriteOverflow));
        };
        if !self.ptr.is_null() {
            // SAFETY: `ptr..ptr + cap` is a writable range owned by this writer (see
            // `encode_into`), `pos + len <= cap` was checked above, and `bytes` cannot overlap
            // it (it comes from the value being serialized, not from the arena block).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.pos), bytes.len())
            };
        }
        self.pos = end;
        Ok(())
    }
}

#[derive(Debug)]
struct WriteOverflow;

impl std::fmt::Display for WriteOverflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the value's encoding grew between measuring and writing it")
    }
}

impl std::error::Error for WriteOverflow {}

/// Bytes `value` takes once encoded.
pub fn encoded_len<T: Encode>(value: &T) -> Result<usize> {
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, ArenaWriter::counting())
        .map(|w| w.pos)
        .map_err(|e| serialize_error::<T>(e))
}

/// Encodes `value` into `buf`, which must be exactly [`encoded_len`] bytes and 16-byte aligned
/// (arena payloads are 64-byte aligned).
pub fn encode_into<T: Encode>(value: &T, buf: &mut [u8]) -> Result<()> {
    if !buf.is_empty() && !(buf.as_ptr() as usize).is_multiple_of(16) {
        return Err(StoreError::Serialize {
            ty: std::any::type_name::<T>(),
            reason: "destination buffer is not 16-byte aligned".into(),
        });
    }
    let writer = ArenaWriter {
        ptr: buf.as_mut_ptr(),
        cap: buf.len(),
        pos: 0,
    };
    let w = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, writer)
        .map_err(|e| serialize_error::<T>(e))?;
    if w.pos != buf.len() {
        return Err(StoreError::Serialize {
            ty: std::any::type_name::<T>(),
            reason: format!(
                "encoding took {} bytes where {} were measured",
                w.pos,
                buf.len()
            ),
        });
    }
    Ok(())
}

fn serialize_error<T: ?Sized>(e: rancor::Error) -> StoreError {
    StoreError::Serialize {
        ty: std::any::type_name::<T>(),
        reason: e.to_string(),
    }
}

/// A zero-copy, read-only view of a stored `T`: derefs to `T::Archived`, which lives in the
/// shared arena. The object stays pinned (never freed or evicted) while the view lives.
///
/// Archived numbers are little-endian wrapper types (`f64` archives as `rkyv::rend::f64_le`):
/// read them with `.to_native()` or compare through them, e.g. `view.iter().map(|x|
/// x.to_native()).sum::<f64>()` for a `Vec<f64>`.
pub struct ObjectView<T: Object> {
    bytes: ObjectBytes,
    archived: NonNull<T::Archived>,
    _type: PhantomData<fn() -> T>,
}

// SAFETY: the view only hands out `&T::Archived` into immutable (sealed) shared memory that
// `bytes` keeps mapped and pinned; sharing or sending it is as safe as sharing `&T::Archived`.
unsafe impl<T: Object> Send for ObjectView<T> where T::Archived: Sync {}
// SAFETY: as above.
unsafe impl<T: Object> Sync for ObjectView<T> where T::Archived: Sync {}

impl<T: Object> ObjectView<T> {
    /// Checks that `bytes` holds a `T` (type fingerprint, then rkyv validation) and wraps it.
    pub fn new(bytes: ObjectBytes) -> Result<Self> {
        let expected = fingerprint::<T>();
        if bytes.fingerprint() != expected {
            return Err(StoreError::TypeMismatch {
                id: bytes.id(),
                expected: std::any::type_name::<T>(),
                expected_fingerprint: expected,
                stored: bytes.fingerprint(),
            });
        }
        let archived = T::access(bytes.as_slice()).map_err(|e| StoreError::Corrupt {
            id: bytes.id(),
            ty: std::any::type_name::<T>(),
            reason: e.to_string(),
        })?;
        let archived = NonNull::from(archived);
        Ok(ObjectView {
            bytes,
            archived,
            _type: PhantomData,
        })
    }

    /// An owned copy of the value.
    pub fn deserialize(&self) -> Result<T> {
        T::decode(self).map_err(|e| StoreError::Corrupt {
            id: self.bytes.id(),
            ty: std::any::type_name::<T>(),
            reason: e.to_string(),
        })
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.bytes.id()
    }

    /// The raw encoded bytes.
    pub fn bytes(&self) -> &ObjectBytes {
        &self.bytes
    }
}

impl<T: Object> Deref for ObjectView<T> {
    type Target = T::Archived;

    fn deref(&self) -> &T::Archived {
        // SAFETY: `archived` was validated by `T::access` over `self.bytes`, which stays mapped,
        // pinned and immutable for as long as `self` lives.
        unsafe { self.archived.as_ref() }
    }
}

impl<T: Object> std::fmt::Debug for ObjectView<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectView")
            .field("id", &self.id())
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.bytes.len())
            .finish()
    }
}
