//! Objects that live in a file instead of the arena: Ray's "fallback allocation".
//!
//! An object larger than the whole store, or one that cannot fit after spilling (everything in
//! the store is in use), is created in a file of the node's spill directory: the creator maps
//! the file read-write and fills it ([`FileWriter`]), readers map it read-only
//! ([`ObjectBytes::from_file`]). Spilled objects use the same files, so a reader of a spilled
//! object that cannot be read back into a full store maps its file the same way.
//!
//! The file holds the payload only (no header): its type fingerprint and length travel with the
//! raylet's answer. Pages are shared with the kernel's page cache, so every reader on the node
//! reads one copy, as with the arena.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::error::{Result, StoreError};
use crate::view::{ObjectBytes, PinGuard};
use crate::ObjectId;

/// Makes the file for an object of `len` bytes at `path` (a new file, mode 0600) with every
/// block allocated, so writes through a mapping cannot fault with `SIGBUS` on a full disk: a
/// full disk fails here, as an error.
pub fn allocate_file(path: &Path, len: u64) -> Result<()> {
    let context = || format!("creating {} ({len} bytes)", path.display());
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::io(context(), e))?
    };
    if len == 0 {
        return Ok(());
    }
    let Ok(off_len) = libc::off_t::try_from(len) else {
        let _ = std::fs::remove_file(path);
        return Err(StoreError::io(
            context(),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    };
    // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off_len) };
    if rc != 0 {
        let _ = std::fs::remove_file(path);
        return Err(StoreError::io(
            format!("{} (is the disk full?)", context()),
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

/// A writable mapping of an object's file, for its creator to fill before sealing it.
pub struct FileWriter {
    map: MmapMut,
}

impl FileWriter {
    /// Maps the object file at `path`, which must hold exactly `len` bytes.
    pub fn open(path: &Path, len: u64) -> Result<FileWriter> {
        let context = || format!("opening object file {} to write", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(context(), e))?;
        let map_len = map_checked(&file, len, context)?;
        // SAFETY: the file was made for this writer alone (`allocate_file`, in a directory only
        // this user can enter); nobody else maps it writable or reads it before the object is
        // sealed, and its length was checked, so no access faults past its end.
        let mut map = unsafe { MmapOptions::new().len(map_len).map_mut(&file) }
            .map_err(|e| StoreError::io(context(), e))?;
        populate_write(&mut map);
        Ok(FileWriter { map })
    }

    /// The payload to fill (page aligned).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }
}

/// Maps every page of a new writable file mapping in one `madvise(MADV_POPULATE_WRITE)`:
/// each first write to a page of a preallocated ext4 file otherwise faults and converts its
/// extent, 1 GiB filled in 8.5 s against 0.6 s populated first (this VM). Best effort: kernels
/// before 5.14 lack the flag, and the writes then fault as usual.
fn populate_write(map: &mut MmapMut) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    if map.is_empty() {
        return;
    }
    // SAFETY: the range is exactly this mapping, owned by the caller for its lifetime;
    // populating pages changes no contents.
    unsafe { libc::madvise(map.as_mut_ptr().cast(), map.len(), MADV_POPULATE_WRITE) };
}

/// Checks that `file` holds exactly `len` bytes and returns the length to map.
fn map_checked(file: &File, len: u64, context: impl Fn() -> String) -> Result<usize> {
    let on_disk = file
        .metadata()
        .map_err(|e| StoreError::io(context(), e))?
        .len();
    if on_disk != len {
        return Err(StoreError::io(
            context(),
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the file holds {on_disk} bytes, the object {len}"),
            ),
        ));
    }
    usize::try_from(len).map_err(|_| {
        StoreError::io(
            context(),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
}

/// Keeps a read-only mapping (and whatever else the reader holds) alive with the bytes.
struct FileHold {
    _map: Option<Mmap>,
    _pin: Box<dyn Send + Sync>,
}

impl ObjectBytes {
    /// Maps the sealed object `id` kept in the file at `path` (`len` payload bytes, type
    /// `fingerprint`) read-only; `pin` is dropped with the view.
    pub fn from_file(
        path: &Path,
        id: ObjectId,
        len: u64,
        fingerprint: u64,
        pin: Box<dyn Send + Sync>,
    ) -> Result<ObjectBytes> {
        let context = || format!("reading object {id} from {}", path.display());
        let file = File::open(path).map_err(|e| StoreError::io(context(), e))?;
        let map_len = map_checked(&file, len, context)?;
        if map_len == 0 {
            let hold = FileHold {
                _map: None,
                _pin: pin,
            };
            return Ok(ObjectBytes::with_guard(
                NonNull::dangling(),
                0,
                id,
                fingerprint,
                PinGuard::External(Box::new(hold)),
            ));
        }
        // SAFETY: the file is a sealed object's: nobody writes or truncates it any more (a
        // restore or a delete only unlinks it, which keeps the mapped pages), and its length was
        // checked, so reads stay inside it.
        let map = unsafe { MmapOptions::new().len(map_len).map(&file) }
            .map_err(|e| StoreError::io(context(), e))?;
        let ptr = NonNull::new(map.as_ptr().cast_mut()).unwrap_or(NonNull::dangling());
        let hold = FileHold {
            _map: Some(map),
            _pin: pin,
        };
        Ok(ObjectBytes::with_guard(
            ptr,
            map_len,
            id,
            fingerprint,
            PinGuard::External(Box::new(hold)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_object_written_through_one_mapping_reads_back_through_another() {
        let dir = std::env::temp_dir().join(format!("oxray-file-object-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("obj");
        let len = 3 * 4096 + 100;
        allocate_file(&path, len).unwrap();
        // A second create of the same object is refused (the file is new or nothing).
        assert!(allocate_file(&path, len).is_err());
        let mut w = FileWriter::open(&path, len).unwrap();
        for (i, b) in w.as_mut_slice().iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        drop(w);
        let id = ObjectId::from_u128(7);
        let bytes = ObjectBytes::from_file(&path, id, len, 42, Box::new(())).unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert_eq!(bytes.fingerprint(), 42);
        assert_eq!(bytes.as_ptr() as usize % 64, 0);
        assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        // Unlinking keeps the mapped bytes readable.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes[len as usize - 1], ((len - 1) % 251) as u8);
        // A length that disagrees with the file is refused, not mapped past its end.
        allocate_file(&path, 10).unwrap();
        assert!(ObjectBytes::from_file(&path, id, 4096, 0, Box::new(())).is_err());
        assert!(FileWriter::open(&path, 4096).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
