//! Plain numbers read in place as native slices: `&[f64]` from a view of a `Vec<f64>`, with
//! no copy, ready for ndarray, nalgebra, BLAS or polars.
//!
//! rkyv archives numbers little-endian, as wrapper types (`f64_le`) with the native type's size
//! and alignment. On a little-endian target those bytes *are* the native numbers, so a view's
//! archived vector can be handed out as `&[T]`. The method exists only on little-endian
//! targets: on others, code calling it does not compile (rather than silently copying).

use rkyv::Archive;

use crate::typed::{Object, ObjectView};

/// A plain number whose archived form has its native size, alignment and (on little-endian
/// targets) bits.
///
/// # Safety
///
/// Implementors guarantee that `Self::Archived` is the little-endian encoding of `Self` with
/// the same size and alignment, so a slice of it reads as a slice of `Self` on little-endian
/// targets.
pub unsafe trait Native: Archive + Copy + 'static {}

// SAFETY: rkyv archives these as themselves (u8, i8) or as rend's little-endian wrappers of the
// same size and alignment (the others); `as_slice` checks size and alignment at compile time.
unsafe impl Native for u8 {}
// SAFETY: as above.
unsafe impl Native for i8 {}
// SAFETY: as above.
unsafe impl Native for u16 {}
// SAFETY: as above.
unsafe impl Native for i16 {}
// SAFETY: as above.
unsafe impl Native for u32 {}
// SAFETY: as above.
unsafe impl Native for i32 {}
// SAFETY: as above.
unsafe impl Native for u64 {}
// SAFETY: as above.
unsafe impl Native for i64 {}
// SAFETY: as above.
unsafe impl Native for f32 {}
// SAFETY: as above.
unsafe impl Native for f64 {}

#[cfg(target_endian = "little")]
impl<T: Native> ObjectView<Vec<T>>
where
    Vec<T>: Object<Archived = rkyv::vec::ArchivedVec<T::Archived>>,
{
    /// The numbers in place, as a native slice (no copy; the view keeps them pinned).
    pub fn as_slice(&self) -> &[T] {
        const {
            assert!(std::mem::size_of::<T::Archived>() == std::mem::size_of::<T>());
            assert!(std::mem::align_of::<T::Archived>() == std::mem::align_of::<T>());
        }
        let archived: &[T::Archived] = (**self).as_slice();
        // SAFETY: `T: Native` makes `T::Archived` the little-endian bits of `T`, with the same
        // size and alignment (checked above), and this target is little-endian; the archived
        // slice is aligned for `T::Archived` (rkyv lays it out so, in a 64-byte-aligned block)
        // and lives, immutable, as long as `self`.
        unsafe { std::slice::from_raw_parts(archived.as_ptr().cast::<T>(), archived.len()) }
    }
}

#[cfg(all(target_endian = "little", feature = "ndarray"))]
impl<T: Native> ObjectView<Vec<T>>
where
    Vec<T>: Object<Archived = rkyv::vec::ArchivedVec<T::Archived>>,
{
    /// The numbers in place as a one-dimensional `ndarray` view (no copy).
    pub fn as_array(&self) -> ndarray::ArrayView1<'_, T> {
        ndarray::ArrayView1::from(self.as_slice())
    }

    /// The numbers in place as a `rows × cols` matrix in row-major order (no copy); an error
    /// when `rows × cols` is not the vector's length.
    pub fn as_array2(
        &self,
        rows: usize,
        cols: usize,
    ) -> Result<ndarray::ArrayView2<'_, T>, ndarray::ShapeError> {
        ndarray::ArrayView2::from_shape((rows, cols), self.as_slice())
    }
}

/// Bytes of the archived form of a `Vec<T>` of `n` numbers: the elements, padding to 8, then
/// the vector's root (a 64-bit relative pointer and a 64-bit length).
pub fn vec_encoded_len<T: Native>(n: usize) -> usize {
    vec_root::<T>(n) + VEC_ROOT
}

/// Size of rkyv's `ArchivedVec` root with 64-bit relative pointers.
const VEC_ROOT: usize = 16;

fn vec_root<T: Native>(n: usize) -> usize {
    (n * std::mem::size_of::<T>()).next_multiple_of(8)
}

/// Writes the archived form of a `Vec<T>` of `n` numbers into `buf`
/// ([`vec_encoded_len`] bytes, aligned for `T`), letting `fill` write the numbers in place: one
/// pass over the memory, no heap copy. What `fill` leaves unwritten keeps `buf`'s old bytes
/// (any bits are a valid number).
#[cfg(target_endian = "little")]
pub fn encode_vec_in_place<T: Native>(
    buf: &mut [u8],
    n: usize,
    fill: impl FnOnce(&mut [T]),
) -> crate::Result<()> {
    const {
        assert!(std::mem::size_of::<T::Archived>() == std::mem::size_of::<T>());
        assert!(std::mem::align_of::<T::Archived>() == std::mem::align_of::<T>());
    }
    let root = vec_root::<T>(n);
    let bad = |reason: &'static str| crate::StoreError::Serialize {
        ty: std::any::type_name::<Vec<T>>(),
        reason: reason.into(),
    };
    if buf.len() != root + VEC_ROOT {
        return Err(bad("the buffer is not the vector's encoded length"));
    }
    if !(buf.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>().max(8)) {
        return Err(bad("the buffer is not aligned for the vector"));
    }
    let (data, rest) = buf.split_at_mut(n * std::mem::size_of::<T>());
    // SAFETY: `data` is `n * size_of::<T>()` bytes, aligned for `T` (checked above: the buffer
    // start is, and the elements start there), exclusively borrowed, and any bit pattern is a
    // valid `T` (plain numbers).
    let elements = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<T>(), n) };
    fill(elements);
    let (padding, root_bytes) = rest.split_at_mut(root - n * std::mem::size_of::<T>());
    padding.fill(0);
    // The root: a pointer relative to itself back to the elements at 0, then the length.
    let offset = -(i64::try_from(root).map_err(|_| bad("the vector is too large"))?);
    root_bytes[..8].copy_from_slice(&offset.to_le_bytes());
    root_bytes[8..].copy_from_slice(&(n as u64).to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::arena::ArenaOptions;
    use crate::{ObjectId, Store};

    use super::*;
    use crate::typed::{encode_into, encoded_len};

    /// The in-place layout is byte for byte what rkyv writes for the same vector.
    fn same_as_rkyv<T: Native + Default + From<u8> + crate::typed::Encode>(n: usize) {
        let v: Vec<T> = (0..n).map(|i| T::from((i % 200) as u8)).collect();
        let len = encoded_len(&v).expect("len");
        assert_eq!(
            vec_encoded_len::<T>(n),
            len,
            "{} x {n}",
            std::any::type_name::<T>()
        );
        let mut want = rkyv::util::AlignedVec::<16>::new();
        want.resize(len, 0);
        encode_into(&v, &mut want).expect("encode");
        let mut got = rkyv::util::AlignedVec::<16>::new();
        got.resize(len, 0xAA);
        encode_vec_in_place::<T>(&mut got, n, |s| s.copy_from_slice(&v)).expect("in place");
        assert_eq!(&got[..], &want[..], "{} x {n}", std::any::type_name::<T>());
    }

    #[test]
    fn in_place_vectors_are_what_rkyv_writes() {
        for n in [1, 2, 3, 7, 8, 100, 4097] {
            same_as_rkyv::<u8>(n);
            same_as_rkyv::<u16>(n);
            same_as_rkyv::<u32>(n);
            same_as_rkyv::<u64>(n);
            same_as_rkyv::<i16>(n);
            same_as_rkyv::<i32>(n);
            same_as_rkyv::<i64>(n);
            same_as_rkyv::<f32>(n);
            same_as_rkyv::<f64>(n);
        }
    }

    #[test]
    fn a_view_of_numbers_is_a_native_slice_equal_to_the_data() {
        let store = Store::new(&ArenaOptions::new(16 << 20)).expect("store");
        let xs: Vec<f64> = (0..100_000).map(|i| i as f64 * 0.5 - 7.25).collect();
        store.put(ObjectId::from_u128(1), &xs, false).expect("put");
        let view = store
            .get_view::<Vec<f64>>(ObjectId::from_u128(1))
            .expect("view");
        let native: &[f64] = view.as_slice();
        assert_eq!(native, &xs[..]);
        assert_eq!(native.as_ptr() as usize % std::mem::align_of::<f64>(), 0);
        let ys: Vec<i32> = (-500..500).collect();
        store.put(ObjectId::from_u128(2), &ys, false).expect("put");
        let view = store
            .get_view::<Vec<i32>>(ObjectId::from_u128(2))
            .expect("view");
        assert_eq!(view.as_slice(), &ys[..]);
        let bytes: Vec<u8> = (0..=255).collect();
        store
            .put(ObjectId::from_u128(3), &bytes, false)
            .expect("put");
        let view = store
            .get_view::<Vec<u8>>(ObjectId::from_u128(3))
            .expect("view");
        assert_eq!(view.as_slice(), &bytes[..]);
    }
}
