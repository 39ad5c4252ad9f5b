//! The shared-memory arena: one file in `/dev/shm` (by default), mapped by every process on the
//! node.
//!
//! The creator (the raylet) makes the file with mode 0600 and `O_EXCL`, sizes it, and unlinks it
//! when the [`Arena`] is dropped. Other processes [`open`](Arena::open) it by path. Pages are
//! reserved with `posix_fallocate` before any block is handed out, so a full `/dev/shm` is an
//! error from `create` instead of a `SIGBUS` on first write: either all at start
//! ([`Reserve::Upfront`]) or as the allocator's high-water mark grows ([`Reserve::OnAllocate`],
//! the default; see `docs/ARCHITECTURE.md` for why).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Result, StoreError};

/// When the arena's pages are reserved in the shm file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reserve {
    /// Reserve every page when the arena is created: the arena's full size is taken from
    /// `/dev/shm` (and from node memory) at once.
    Upfront,
    /// Reserve pages as the allocator first hands them out (one `posix_fallocate` per growth of
    /// the high-water mark). Start-up stays fast and node memory grows with real use.
    #[default]
    OnAllocate,
}

/// How to create an arena.
#[derive(Debug, Clone)]
pub struct ArenaOptions {
    /// Size in bytes.
    pub size: u64,
    /// Directory for the backing file (default `/dev/shm`).
    pub dir: PathBuf,
    /// Prefix of the file name; the pid and a unique suffix follow it.
    pub name_prefix: String,
    /// When pages are reserved.
    pub reserve: Reserve,
    /// Map with `MAP_POPULATE` so first writes take no page faults (costs start-up time).
    pub populate: bool,
    /// Back the arena with an anonymous `memfd` instead of a file in `dir`. Nothing is left in
    /// any file system, even if every process is killed; other processes of the same user open
    /// it as `/proc/<pid>/fd/<fd>` (its [`path`](Arena::path)) while the creator lives.
    pub memfd: bool,
}

impl ArenaOptions {
    /// An arena of `size` bytes in `/dev/shm`.
    pub fn new(size: u64) -> Self {
        ArenaOptions {
            size,
            dir: PathBuf::from("/dev/shm"),
            name_prefix: "oxray".into(),
            reserve: Reserve::default(),
            populate: false,
            memfd: false,
        }
    }
}

/// A mapped shared-memory arena.
#[derive(Debug)]
pub struct Arena {
    map: MmapRaw,
    file: File,
    path: PathBuf,
    /// Whether this process created the file (and so unlinks it on drop).
    owner: bool,
    /// Bytes from the start already reserved with `posix_fallocate`.
    reserved: AtomicU64,
    /// One bit per [`PREFAULT_CHUNK`] of the arena already mapped into this process.
    prefaulted: Box<[AtomicU64]>,
}

/// Granularity of the prefault bookkeeping.
const PREFAULT_CHUNK: u64 = 2 << 20;

fn prefault_bitmap(size: u64) -> Box<[AtomicU64]> {
    let chunks = size.div_ceil(PREFAULT_CHUNK);
    (0..chunks.div_ceil(64))
        .map(|_| AtomicU64::new(0))
        .collect()
}

impl Arena {
    /// Creates a new arena file and maps it.
    pub fn create(opts: &ArenaOptions) -> Result<Arena> {
        if opts.size == 0 {
            return Err(StoreError::io(
                "object store size must be above zero",
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        if opts.memfd {
            return Self::create_memfd(opts);
        }
        let available = free_bytes(&opts.dir)?;
        if available < opts.size {
            return Err(StoreError::ShmTooSmall {
                dir: opts.dir.display().to_string(),
                available,
                requested: opts.size,
            });
        }
        let path = opts.dir.join(unique_name(&opts.name_prefix));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
        // From here the file exists: remove it again on any failure.
        let arena = (|| {
            file.set_len(opts.size)
                .map_err(|e| StoreError::io(format!("sizing {}", path.display()), e))?;
            let map = map_file(&file, opts.size, opts.populate, &path)?;
            Ok(Arena {
                map,
                file,
                path: path.clone(),
                owner: true,
                reserved: AtomicU64::new(0),
                prefaulted: prefault_bitmap(opts.size),
            })
        })();
        match arena {
            Ok(arena) => {
                if opts.reserve == Reserve::Upfront {
                    arena.reserve_upto(opts.size)?;
                }
                Ok(arena)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    fn create_memfd(opts: &ArenaOptions) -> Result<Arena> {
        use std::os::fd::FromRawFd;
        // A memfd's pages are shared memory charged to RAM (not to /dev/shm's size limit):
        // refuse an arena the machine could never back, rather than fail later.
        if let Some(memory) = machine_memory() {
            if opts.size > memory {
                return Err(StoreError::StoreTooLarge {
                    requested: opts.size,
                    memory,
                });
            }
        }
        let name = std::ffi::CString::new(opts.name_prefix.as_bytes()).unwrap_or_default();
        // SAFETY: `name` is a valid C string; the call returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(StoreError::io(
                "creating the object store (memfd_create)",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let path = PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
        file.set_len(opts.size)
            .map_err(|e| StoreError::io("sizing the object store memfd", e))?;
        let map = map_file(&file, opts.size, opts.populate, &path)?;
        let arena = Arena {
            map,
            file,
            path,
            owner: false,
            reserved: AtomicU64::new(0),
            prefaulted: prefault_bitmap(opts.size),
        };
        if opts.reserve == Reserve::Upfront {
            arena.reserve_upto(opts.size)?;
        }
        Ok(arena)
    }

    /// Maps an arena another process created.
    pub fn open(path: &Path) -> Result<Arena> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(format!("opening object store {}", path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| StoreError::io(format!("reading size of {}", path.display()), e))?
            .len();
        let map = map_file(&file, size, false, path)?;
        Ok(Arena {
            map,
            file,
            path: path.to_owned(),
            owner: false,
            reserved: AtomicU64::new(size),
            prefaulted: prefault_bitmap(size),
        })
    }

    /// The backing file's path (what other processes pass to [`open`](Self::open)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// Makes sure the pages of `0..end` are backed by the shm file system, so writes there cannot
    /// fault with `SIGBUS`. Cheap when already done: one atomic load.
    pub fn reserve_upto(&self, end: u64) -> Result<()> {
        let end = end.min(self.size());
        let done = self.reserved.load(Ordering::Acquire);
        if end <= done {
            return Ok(());
        }
        // Reserve in steps of at least 32 MiB so small objects do not make a syscall each.
        let target = (end.max(done + (32 << 20))).min(self.size());
        let len = (target - done) as libc::off_t;
        // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), done as libc::off_t, len) };
        if rc != 0 {
            return Err(StoreError::io(
                format!(
                    "reserving {} bytes of the object store in {} (is /dev/shm full? enlarge it or \
                     lower object_store_memory)",
                    target - done,
                    self.path.display()
                ),
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        self.reserved.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Maps the pages of `offset..offset + len` into this process ahead of writing them, with
    /// one `madvise(MADV_POPULATE_WRITE)` instead of one page fault per 4 KiB page (about 4x
    /// faster to fill a new object on a VM). Pages stay mapped, so 2 MiB chunks already done are
    /// skipped: filling a reused block costs nothing here. Best effort: kernels before 5.14 lack
    /// the call, and then pages fault in as usual.
    pub fn prefault(&self, offset: u64, len: u64) {
        let Some(end) = offset.checked_add(len).filter(|&e| e <= self.size()) else {
            return;
        };
        let mut chunk = offset / PREFAULT_CHUNK;
        while chunk * PREFAULT_CHUNK < end {
            let (lo, hi) = (chunk * PREFAULT_CHUNK, (chunk + 1) * PREFAULT_CHUNK);
            let (word, bit) = ((chunk / 64) as usize, 1u64 << (chunk % 64));
            let done = self.prefaulted[word].load(Ordering::Relaxed) & bit != 0;
            if !done {
                let (from, to) = (lo.max(offset), hi.min(end));
                self.populate_write(from, to - from);
                // Only a chunk covered whole is known to be mapped.
                if from == lo && to == hi {
                    self.prefaulted[word].fetch_or(bit, Ordering::Relaxed);
                }
            }
            chunk += 1;
        }
    }

    fn populate_write(&self, offset: u64, len: u64) {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        let page = 4096;
        let start = offset / page * page;
        let end = offset + len;
        let Some(p) = self.ptr(start, end - start) else {
            return;
        };
        // SAFETY: the range is inside our mapping (checked by `ptr`) and page aligned (the
        // mapping is); MADV_POPULATE_WRITE only faults pages in and never changes their contents.
        unsafe { libc::madvise(p.cast(), (end - start) as usize, MADV_POPULATE_WRITE) };
    }

    /// The payload of an object this process was given to write (the store's owner created it
    /// for this client and has not sealed it), or `None` when the range is outside the arena.
    ///
    /// # Safety
    ///
    /// The caller must have exclusive write access to `offset..offset + len` for the lifetime of
    /// the slice: the range is an unsealed object the store created for this client, and no
    /// other slice of it is alive.
    // Shared memory: exclusivity comes from the store's protocol, not from `&mut self`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn payload_mut(&self, offset: u64, len: u64) -> Option<&mut [u8]> {
        let len_usize = usize::try_from(len).ok()?;
        let p = self.ptr(offset, len)?;
        // SAFETY: in bounds (checked by `ptr`); exclusivity is the caller's contract.
        Some(unsafe { std::slice::from_raw_parts_mut(p, len_usize) })
    }

    /// Pointer to `offset`, after checking that `offset..offset + len` lies in the arena.
    pub(crate) fn ptr(&self, offset: u64, len: u64) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        if end > self.size() {
            return None;
        }
        // SAFETY: `offset <= size`, so the result stays inside (or one past) the mapping.
        Some(unsafe { self.map.as_mut_ptr().add(offset as usize) })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn map_file(file: &File, size: u64, populate: bool, path: &Path) -> Result<MmapRaw> {
    let len = usize::try_from(size).map_err(|_| {
        StoreError::io(
            format!(
                "object store {} is larger than the address space",
                path.display()
            ),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let mut opts = MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    opts.map_raw(file)
        .map_err(|e| StoreError::io(format!("mapping {}", path.display()), e))
}

/// RAM and swap in bytes, from `/proc/meminfo` (`None` if it cannot be read).
fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = meminfo.lines().find_map(|l| l.strip_prefix(key))?;
        line.trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some((kib("MemTotal:")? + kib("SwapTotal:").unwrap_or(0)) * 1024)
}

fn free_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        StoreError::io(
            format!("bad directory name {}", dir.display()),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable space for a statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(StoreError::io(
            format!("checking free space in {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::AtomicU32;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos:08x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_private_and_unlinked_on_drop() {
        let arena = Arena::create(&ArenaOptions::new(1 << 20)).unwrap();
        let path = arena.path().to_owned();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = Arena::open(&path).unwrap();
        assert_eq!(other.size(), 1 << 20);
        drop(other);
        assert!(path.exists(), "a reader does not unlink");
        drop(arena);
        assert!(!path.exists(), "the creator unlinks");
    }

    #[test]
    fn memfd_arena_is_shared_by_proc_path_and_leaves_no_file() {
        let mut opts = ArenaOptions::new(1 << 20);
        opts.memfd = true;
        let arena = Arena::create(&opts).unwrap();
        assert!(arena.path().starts_with("/proc/"));
        arena.reserve_upto(4096).unwrap();
        // SAFETY: test-only exclusive use of the first page.
        unsafe { arena.payload_mut(0, 4).unwrap() }.copy_from_slice(b"oxra");
        let other = Arena::open(arena.path()).unwrap();
        // SAFETY: reading what was written above; nobody writes concurrently.
        assert_eq!(unsafe { other.payload_mut(0, 4).unwrap() }, b"oxra");
    }

    #[test]
    fn refuses_more_than_the_directory_holds() {
        let mut opts = ArenaOptions::new(u64::MAX / 2);
        opts.dir = std::env::temp_dir();
        let err = Arena::create(&opts).unwrap_err();
        assert!(matches!(err, StoreError::ShmTooSmall { .. }), "{err}");
        assert!(err.to_string().contains("object_store_memory"), "{err}");
    }

    #[test]
    fn refuses_a_memfd_larger_than_the_machine() {
        let mut opts = ArenaOptions::new(u64::MAX / 2);
        opts.memfd = true;
        let err = Arena::create(&opts).unwrap_err();
        assert!(matches!(err, StoreError::StoreTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("object_store_memory"), "{err}");
    }

    #[test]
    fn reserves_lazily() {
        let arena = Arena::create(&ArenaOptions::new(256 << 20)).unwrap();
        arena.reserve_upto(1).unwrap();
        assert_eq!(arena.reserved.load(Ordering::Relaxed), 32 << 20);
        arena.reserve_upto(100 << 20).unwrap();
        assert_eq!(arena.reserved.load(Ordering::Relaxed), 100 << 20);
        arena.reserve_upto(u64::MAX).unwrap();
        assert_eq!(arena.reserved.load(Ordering::Relaxed), 256 << 20);
    }
}
