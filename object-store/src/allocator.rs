//! The arena allocator: hands out 64-byte aligned, never-overlapping blocks of offsets.
//!
//! Best fit over a size-ordered set of free blocks, with immediate coalescing of neighbours on
//! free. Every operation is O(log n) in the number of free blocks. Best fit with coalescing keeps
//! fragmentation low in practice (it is what dlmalloc, which Ray's plasma uses, does for large
//! blocks), and freeing every block always returns the arena to one free block.
//!
//! The allocator only does arithmetic on offsets; it never touches memory, so it is tested on its
//! own (see the property tests below) and the object table owns one per arena.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Alignment (and granularity) of every block, in bytes. A cache line, and enough for any rkyv
/// archived type.
pub const ALIGNMENT: u64 = 64;

/// Rounds `n` up to the next multiple of [`ALIGNMENT`], or `None` on overflow.
pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGNMENT - 1).map(|v| v & !(ALIGNMENT - 1))
}

/// Bytes to skip from `offset` to reach the next offset `o` with `o % align == phase`.
fn pad(offset: u64, align: u64, phase: u64) -> u64 {
    (phase + align - offset % align) % align
}

/// A best-fit allocator over the offsets `0..capacity`.
#[derive(Debug)]
pub struct Allocator {
    capacity: u64,
    /// Free blocks by (size, offset): the first entry at or above a size is the best fit.
    by_size: BTreeSet<(u64, u64)>,
    /// Free blocks by offset, for finding the neighbours to coalesce with.
    by_offset: BTreeMap<u64, u64>,
    /// Live blocks: offset to size.
    live: HashMap<u64, u64>,
    used: u64,
}

impl Allocator {
    /// An allocator over `capacity` bytes (rounded down to [`ALIGNMENT`]).
    pub fn new(capacity: u64) -> Self {
        let capacity = capacity & !(ALIGNMENT - 1);
        let mut a = Allocator {
            capacity,
            by_size: BTreeSet::new(),
            by_offset: BTreeMap::new(),
            live: HashMap::new(),
            used: 0,
        };
        if capacity > 0 {
            a.insert_free(0, capacity);
        }
        a
    }

    /// Total bytes managed.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes in live blocks (after rounding to the alignment).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The size of the largest block that [`allocate`](Self::allocate) could return now.
    pub fn largest_free(&self) -> u64 {
        self.by_size.last().map_or(0, |&(size, _)| size)
    }

    /// Number of free blocks (1 when nothing is allocated; more means fragmentation).
    pub fn free_blocks(&self) -> usize {
        self.by_offset.len()
    }

    /// Number of live blocks.
    pub fn live_blocks(&self) -> usize {
        self.live.len()
    }

    /// The size a request of `size` bytes really takes, or `None` when it can never fit.
    pub fn block_size(&self, size: u64) -> Option<u64> {
        let size = align_up(size.max(1))?;
        (size <= self.capacity).then_some(size)
    }

    /// Reserves a block of at least `size` bytes; returns its offset (a multiple of
    /// [`ALIGNMENT`]), or `None` when no free block is large enough.
    pub fn allocate(&mut self, size: u64) -> Option<u64> {
        self.allocate_aligned(size, ALIGNMENT, 0)
    }

    /// Like [`allocate`](Self::allocate), but the block starts at an offset `o` with
    /// `o % align == phase` (`align` a power of two, at least [`ALIGNMENT`]; `phase` a multiple
    /// of [`ALIGNMENT`] below `align`). The store uses it to put large payloads on page
    /// boundaries, right after their header. The space skipped in front stays free.
    pub fn allocate_aligned(&mut self, size: u64, align: u64, phase: u64) -> Option<u64> {
        if !align.is_power_of_two()
            || align < ALIGNMENT
            || phase >= align
            || !phase.is_multiple_of(ALIGNMENT)
        {
            return None;
        }
        let size = self.block_size(size)?;
        // Worst case padding in front is `align - ALIGNMENT`; a block that large always fits.
        let want = size.checked_add(align - ALIGNMENT)?;
        let &(free_size, offset) = self
            .by_size
            .range((size, 0)..)
            .take(8)
            .find(|&&(len, off)| pad(off, align, phase) + size <= len)
            .or_else(|| self.by_size.range((want, 0)..).next())?;
        let front = pad(offset, align, phase);
        let start = offset + front;
        self.remove_free(offset, free_size);
        if front > 0 {
            self.insert_free(offset, front);
        }
        if free_size > front + size {
            self.insert_free(start + size, free_size - front - size);
        }
        self.live.insert(start, size);
        self.used += size;
        Some(start)
    }

    /// Returns the block at `offset` to the free space; returns its size, or `None` when no live
    /// block starts there (a double free is refused, not corrupting).
    pub fn free(&mut self, offset: u64) -> Option<u64> {
        let size = self.live.remove(&offset)?;
        self.used -= size;
        let mut start = offset;
        let mut len = size;
        if let Some((&prev, &prev_len)) = self.by_offset.range(..offset).next_back() {
            if prev + prev_len == offset {
                self.remove_free(prev, prev_len);
                start = prev;
                len += prev_len;
            }
        }
        if let Some(&next_len) = self.by_offset.get(&(offset + size)) {
            self.remove_free(offset + size, next_len);
            len += next_len;
        }
        self.insert_free(start, len);
        Some(size)
    }

    /// The size of the live block at `offset`.
    pub fn size_of(&self, offset: u64) -> Option<u64> {
        self.live.get(&offset).copied()
    }

    fn insert_free(&mut self, offset: u64, size: u64) {
        self.by_size.insert((size, offset));
        self.by_offset.insert(offset, size);
    }

    fn remove_free(&mut self, offset: u64, size: u64) {
        self.by_size.remove(&(size, offset));
        self.by_offset.remove(&offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allocates_aligned_and_reuses_freed_space() {
        let mut a = Allocator::new(1024);
        let x = a.allocate(1).unwrap();
        let y = a.allocate(65).unwrap();
        assert_eq!((x, y), (0, 64));
        assert_eq!(a.used(), 64 + 128);
        assert_eq!(a.free(x), Some(64));
        assert_eq!(a.free(x), None, "double free is refused");
        // Best fit: the 64-byte hole at 0 is reused before the large tail.
        assert_eq!(a.allocate(10), Some(0));
    }

    #[test]
    fn refuses_what_cannot_fit() {
        let mut a = Allocator::new(256);
        assert_eq!(a.allocate(257), None);
        assert_eq!(a.allocate(u64::MAX), None);
        assert_eq!(a.allocate(256), Some(0));
        assert_eq!(a.allocate(1), None);
    }

    #[test]
    fn coalesces_both_neighbours() {
        let mut a = Allocator::new(64 * 3);
        let b: Vec<u64> = (0..3).map(|_| a.allocate(64).unwrap()).collect();
        a.free(b[0]);
        a.free(b[2]);
        assert_eq!(a.free_blocks(), 2);
        a.free(b[1]);
        assert_eq!(a.free_blocks(), 1);
        assert_eq!(a.largest_free(), 64 * 3);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(u64),
        /// size, log2 of the alignment (6..=12), phase in units of 64 bytes
        AllocAligned(u64, u32, u64),
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1u64..5000).prop_map(Op::Alloc),
            1 => (1u64..5000, 6u32..=12, 0u64..64).prop_map(|(s, a, p)| Op::AllocAligned(s, a, p)),
            2 => any::<usize>().prop_map(Op::Free),
        ]
    }

    #[test]
    fn aligned_blocks_leave_the_skipped_front_free() {
        let mut a = Allocator::new(64 * 1024);
        assert_eq!(a.allocate(64), Some(0));
        let b = a.allocate_aligned(8192, 4096, 4096 - 64).unwrap();
        assert_eq!(b, 4096 - 64);
        // The gap between 64 and 4032 is still usable.
        assert_eq!(a.allocate(3968), Some(64));
        assert_eq!(
            a.allocate_aligned(64, 100, 0),
            None,
            "alignment must be a power of two"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random create/delete sequences: blocks are aligned, inside the arena, never overlap,
        /// accounting is exact, and freeing everything reclaims all space as one block.
        #[test]
        fn random_sequences_never_overlap(ops in proptest::collection::vec(op(), 1..400)) {
            let capacity = 64 * 1024;
            let mut a = Allocator::new(capacity);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(_) | Op::AllocAligned(..) => {
                        let (size, res, align, phase) = match op {
                            Op::AllocAligned(size, log, phase) => {
                                let align = 1u64 << log;
                                let phase = (phase * 64) % align;
                                (size, a.allocate_aligned(size, align, phase), align, phase)
                            }
                            Op::Alloc(size) => (size, a.allocate(size), 64, 0),
                            Op::Free(_) => unreachable!(),
                        };
                        if let Some(off) = res {
                            prop_assert_eq!(off % align, phase);
                            let len = align_up(size).unwrap();
                            prop_assert_eq!(off % ALIGNMENT, 0);
                            prop_assert!(off + len <= capacity);
                            for &(o, l) in &live {
                                prop_assert!(off + len <= o || o + l <= off,
                                    "block {}+{} overlaps {}+{}", off, len, o, l);
                            }
                            live.push((off, len));
                        } else {
                            // Refusal is only allowed when no free block is big enough.
                            prop_assert!(a.largest_free() < align_up(size).unwrap() + align - 64);
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (off, len) = live.swap_remove(i % live.len());
                        prop_assert_eq!(a.free(off), Some(len));
                    }
                    Op::Free(_) => {}
                }
                prop_assert_eq!(a.used(), live.iter().map(|&(_, l)| l).sum::<u64>());
            }
            for (off, _) in live.drain(..) {
                prop_assert!(a.free(off).is_some());
            }
            prop_assert_eq!(a.used(), 0);
            prop_assert_eq!(a.free_blocks(), 1);
            prop_assert_eq!(a.largest_free(), capacity);
        }
    }
}
