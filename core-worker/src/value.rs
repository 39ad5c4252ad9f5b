//! Encoding values: inline on the heap when small, straight into the store when large.

use oxray_object_store::typed::{encode_into, encoded_len};
use oxray_object_store::{fingerprint, HeapBytes, Object, StoreError};

/// Values whose encoding is at most this many bytes travel inline in messages and stay in their
/// owner's memory; larger ones go to the node's object store (as in Ray).
pub const INLINE_MAX: usize = 100 * 1024;

/// A task's return value with its type erased, so the executor can decide where it goes.
pub trait ReturnValue: Send {
    /// The type fingerprint.
    fn fingerprint(&self) -> u64;
    /// Encoded size.
    fn encoded_len(&self) -> Result<usize, StoreError>;
    /// Encodes into `buf` (exactly `encoded_len` bytes, 16-byte aligned).
    fn encode_into(&self, buf: &mut [u8]) -> Result<(), StoreError>;
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
