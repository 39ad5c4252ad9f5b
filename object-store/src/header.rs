//! The 64-byte header in front of every object in the arena.
//!
//! It lets a process that was only told an offset check that the object there is the one it asked
//! for, that it is sealed, how long it is and which type it holds, without asking the store's
//! owner again.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::allocator::ALIGNMENT;
use crate::arena::Arena;
use crate::ObjectId;

/// Bytes taken by the header; the payload follows, 64-byte aligned.
pub const HEADER_SIZE: u64 = ALIGNMENT;

const MAGIC: u64 = u64::from_le_bytes(*b"oxrayobj");

/// States of an object's block, as seen by readers in other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum BlockState {
    Free = 0,
    Created = 1,
    Sealed = 2,
}

/// The header's layout in shared memory.
#[repr(C, align(64))]
pub(crate) struct Header {
    magic: u64,
    id: [u8; 16],
    data_len: u64,
    fingerprint: u64,
    state: AtomicU32,
    _reserved: [u8; 20],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE as usize);

/// What a header says about its object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderInfo {
    pub id: ObjectId,
    pub data_len: u64,
    pub fingerprint: u64,
    pub state: BlockState,
}

fn header_ptr(arena: &Arena, block: u64) -> Option<*mut Header> {
    if !block.is_multiple_of(ALIGNMENT) {
        return None;
    }
    arena.ptr(block, HEADER_SIZE).map(|p| p.cast::<Header>())
}

/// Writes a fresh header (state `Created`) at `block`. Called by the store's owner under its lock,
/// for a block the allocator just handed out.
pub(crate) fn write(arena: &Arena, block: u64, id: ObjectId, data_len: u64, fingerprint: u64) {
    let Some(p) = header_ptr(arena, block) else {
        return;
    };
    let header = Header {
        magic: MAGIC,
        id: id.0,
        data_len,
        fingerprint,
        state: AtomicU32::new(BlockState::Created as u32),
        _reserved: [0; 20],
    };
    // SAFETY: `p` is in bounds and 64-byte aligned (checked by `header_ptr`); the block was just
    // allocated, so no reader holds a reference to it, and only the owner writes headers.
    unsafe { p.write(header) };
}

/// Moves the header at `block` to `state`, publishing every earlier write to the payload.
pub(crate) fn set_state(arena: &Arena, block: u64, state: BlockState) {
    let Some(p) = header_ptr(arena, block) else {
        return;
    };
    // SAFETY: in bounds and aligned; `state` is an atomic, so concurrent readers are fine.
    let atomic = unsafe { &(*p).state };
    atomic.store(state as u32, Ordering::Release);
}

/// Reads the header at `block`, or `None` when the offset is out of bounds, misaligned or holds
/// no object header.
pub(crate) fn read(arena: &Arena, block: u64) -> Option<HeaderInfo> {
    let p = header_ptr(arena, block)?;
    // SAFETY: in bounds and aligned. The state is read first with `Acquire`, so a `Sealed` state
    // guarantees the fields below were written before it and are not changing (sealed objects
    // are immutable; a block is only rewritten after it was freed, which its pin prevents).
    unsafe {
        let state = match (*p).state.load(Ordering::Acquire) {
            1 => BlockState::Created,
            2 => BlockState::Sealed,
            _ => BlockState::Free,
        };
        let magic = std::ptr::addr_of!((*p).magic).read_volatile();
        if magic != MAGIC {
            return None;
        }
        Some(HeaderInfo {
            id: ObjectId(std::ptr::addr_of!((*p).id).read_volatile()),
            data_len: std::ptr::addr_of!((*p).data_len).read_volatile(),
            fingerprint: std::ptr::addr_of!((*p).fingerprint).read_volatile(),
            state,
        })
    }
}
