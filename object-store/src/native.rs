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

#[cfg(test)]
mod tests {
    use crate::arena::ArenaOptions;
    use crate::{ObjectId, Store};

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
