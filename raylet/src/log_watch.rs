//! Waiting for a file to be written to (inotify), for `oxray logs --follow` and the logs of
//! submitted jobs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// An inotify watch on one file's writes.
pub struct Watch {
    fd: OwnedFd,
}

impl Watch {
    /// Watches `path` for writes.
    pub fn new(path: &Path) -> Result<Watch, String> {
        use std::os::unix::ffi::OsStrExt;
        let fail = |what: &str| {
            format!(
                "{what} {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )
        };
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(fail("watching"));
        }
        // SAFETY: `raw` is a descriptor the kernel just returned; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| format!("{} has a NUL byte in its name", path.display()))?;
        // SAFETY: `fd` is an open inotify descriptor and `name` a NUL-terminated path.
        let rc = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), name.as_ptr(), libc::IN_MODIFY) };
        if rc < 0 {
            return Err(fail("watching"));
        }
        Ok(Watch { fd })
    }

    /// Blocks until the file is written to (true) or `limit` passes (false).
    pub fn wait(&self, limit: Duration) -> Result<bool, String> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, on a descriptor this watch owns.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n <= 0 {
            return Ok(false);
        }
        // Drain the events (their content does not matter: the caller reads the file on).
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is valid for writes of its length; the descriptor is nonblocking.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                return Ok(true);
            }
        }
    }
}
