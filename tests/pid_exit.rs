//! Waiting for a process (not necessarily our child) to exit, on its pidfd: shared by the test
//! driver and the runtime tests.

use std::time::Duration;

/// Whether process `pid` exits within `limit` (already gone: true).
pub fn exits_within(pid: u32, limit: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as i32, 0) };
    if fd < 0 {
        return true;
    }
    let mut p = libc::pollfd {
        fd: fd as i32,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on a descriptor we own, closed right after.
    unsafe {
        let n = libc::poll(&mut p, 1, limit.as_millis() as i32);
        libc::close(fd as i32);
        n == 1
    }
}
