//! Encoding values: inline on the heap when small, straight into the store when large.

use oxray_object_store::typed::{encode_into, encoded_len};
use oxray_object_store::{fingerprint, HeapBytes, Object, StoreError};

/// Values whose encoding is at most this many bytes travel inline in messages and stay in their
/// owner's memory; larger ones go to the node's object store (as in Ray).
pub const INLINE_MAX: usize = 100 * 1024;

/// A task's return value with its type erased, so the executor can decide where it goes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a task or stored by oxray",
    label = "oxray cannot store this type",
    note = "put `#[oxray::object]` on the type (it derives rkyv's Archive, Serialize and Deserialize with the right crate path), or derive them yourself with `#[rkyv(crate = oxray::rkyv)]`"
)]
pub trait ReturnValue: Send {
    /// The type fingerprint.
    fn fingerprint(&self) -> u64;
    /// Encoded size.
    fn encoded_len(&self) -> Result<usize, StoreError>;
    /// Encodes into `buf` (exactly `encoded_len` bytes, 16-byte aligned).
    fn encode_into(&self, buf: &mut [u8]) -> Result<(), StoreError>;
    /// A streaming task's items (see [`Items`]); `None` for a plain value.
    fn take_items(&mut self) -> Option<ItemIter> {
        None
    }
}

/// The items of a streaming task, each stored as an object of its own.
pub type ItemIter = Box<dyn Iterator<Item = Box<dyn ReturnValue>> + Send>;

/// What a streaming task (`#[oxray::remote] fn f(..) -> impl Iterator<Item = T>`) returns to
/// the worker: the iterator, run item by item as each is stored and reported.
pub struct Items(Option<ItemIter>);

impl Items {
    /// Wraps a task's iterator.
    pub fn new<T: Object + Send + 'static>(
        items: impl Iterator<Item = T> + Send + 'static,
    ) -> Items {
        Items(Some(Box::new(
            items.map(|x| Box::new(x) as Box<dyn ReturnValue>),
        )))
    }
}

impl Items {
    /// The returns of a task with several (`num_returns`), each stored as an object of its own.
    pub fn returns(values: Vec<Box<dyn ReturnValue>>) -> Items {
        Items(Some(Box::new(values.into_iter())))
    }
}

impl ReturnValue for Items {
    fn fingerprint(&self) -> u64 {
        0
    }

    fn encoded_len(&self) -> Result<usize, StoreError> {
        Err(StoreError::Serialize {
            ty: "a stream",
            reason: "a stream is not a value: its items are stored one by one".into(),
        })
    }

    fn encode_into(&self, _buf: &mut [u8]) -> Result<(), StoreError> {
        self.encoded_len().map(|_| ())
    }

    fn take_items(&mut self) -> Option<ItemIter> {
        self.0.take()
    }
}

impl<T: Object + Send> ReturnValue for T {
    fn fingerprint(&self) -> u64 {
        fingerprint::<T>()
    }

    fn encoded_len(&self) -> Result<usize, StoreError> {
        encoded_len(self)
    }

    fn encode_into(&self, buf: &mut [u8]) -> Result<(), StoreError> {
        encode_into(self, buf)
    }
}

/// Encodes a value into an aligned heap buffer.
pub fn encode_heap(value: &dyn ReturnValue, len: usize) -> Result<HeapBytes, StoreError> {
    let mut buf = HeapBytes::with_capacity(len);
    buf.resize(len, 0);
    value.encode_into(&mut buf)?;
    Ok(buf)
}

/// Copies received bytes into an aligned buffer (message payloads are not aligned for rkyv).
pub fn aligned_copy(bytes: &[u8]) -> HeapBytes {
    let mut buf = HeapBytes::with_capacity(bytes.len());
    buf.extend_from_slice(bytes);
    buf
}

/// A `Vec<T>` of plain numbers that a closure writes in place where it is stored (see
/// [`CoreWorker::put_with_len`](crate::CoreWorker::put_with_len)): no heap vector, one pass.
#[cfg(target_endian = "little")]
pub(crate) struct FilledVec<T, F> {
    pub n: usize,
    pub fill: std::sync::Mutex<Option<F>>,
    pub _numbers: std::marker::PhantomData<fn() -> T>,
}

#[cfg(target_endian = "little")]
impl<T, F> ReturnValue for FilledVec<T, F>
where
    T: oxray_object_store::Native,
    Vec<T>: Object,
    F: FnOnce(&mut [T]) + Send,
{
    fn fingerprint(&self) -> u64 {
        fingerprint::<Vec<T>>()
    }

    fn encoded_len(&self) -> Result<usize, StoreError> {
        Ok(oxray_object_store::vec_encoded_len::<T>(self.n))
    }

    fn encode_into(&self, buf: &mut [u8]) -> Result<(), StoreError> {
        let fill = self
            .fill
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| StoreError::Serialize {
                ty: std::any::type_name::<Vec<T>>(),
                reason: "the fill closure already ran".into(),
            })?;
        oxray_object_store::encode_vec_in_place::<T>(buf, self.n, fill)
    }
}

/// A task's large `Vec<T>` result of plain numbers, written in place in the store by `fill`
/// (no heap vector, no copy). Return it from a remote function; the ref is an
/// `ObjectRef<Vec<T>>` (this example runs in the `oxray` crate's docs):
///
/// ```ignore
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
/// let r: oxray::ObjectRef<Vec<f64>> = squares::remote(1 << 20)?;
/// assert_eq!(oxray::get_view(&r)?.as_slice()[3], 9.0);
/// # Ok(())
/// # }
/// ```
#[cfg(target_endian = "little")]
pub struct VecInPlace<T> {
    n: usize,
    fill: std::sync::Mutex<Option<Fill<T>>>,
}

/// The closure that writes a [`VecInPlace`]'s numbers.
#[cfg(target_endian = "little")]
type Fill<T> = Box<dyn FnOnce(&mut [T]) + Send>;

#[cfg(target_endian = "little")]
impl<T: oxray_object_store::Native> VecInPlace<T> {
    /// A vector of `n` numbers that `fill` writes where the result is stored.
    pub fn new(n: usize, fill: impl FnOnce(&mut [T]) + Send + 'static) -> Self {
        VecInPlace {
            n,
            fill: std::sync::Mutex::new(Some(Box::new(fill))),
        }
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

#[cfg(target_endian = "little")]
impl<T> ReturnValue for VecInPlace<T>
where
    T: oxray_object_store::Native,
    Vec<T>: Object,
{
    fn fingerprint(&self) -> u64 {
        fingerprint::<Vec<T>>()
    }

    fn encoded_len(&self) -> Result<usize, StoreError> {
        Ok(oxray_object_store::vec_encoded_len::<T>(self.n))
    }

    fn encode_into(&self, buf: &mut [u8]) -> Result<(), StoreError> {
        let fill = self
            .fill
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| StoreError::Serialize {
                ty: std::any::type_name::<Vec<T>>(),
                reason: "the fill closure already ran".into(),
            })?;
        oxray_object_store::encode_vec_in_place::<T>(buf, self.n, fill)
    }
}
