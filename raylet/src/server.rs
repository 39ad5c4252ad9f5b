//! The Unix-socket server: accepts local clients and hands each to the node's event loop
//! (`raylet/src/client.rs`).
//!
//! Sockets live in Linux's abstract namespace (`@name`), so nothing is left in the file system
//! when a raylet is killed. Abstract sockets have no file permissions, so every connection's
//! peer credentials are checked: only processes of the raylet's own user are served.

use std::collections::HashMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxray_common::frame;
use oxray_common::protocol::{FromRaylet, ToRaylet};

use crate::client::Client;
use crate::error::{RayletError, Result};
use crate::node::Node;

/// Parses `unix:@name` (abstract) into a socket address (a `?direct=` part is not needed
/// on this node and is ignored; see [`oxray_common::address`]).
pub fn parse_address(address: &str) -> Option<SocketAddr> {
    let (socket, _) = oxray_common::address::split_direct(address);
    let name = socket.strip_prefix("unix:@")?;
    SocketAddr::from_abstract_name(name.as_bytes()).ok()
}

/// Connects to a raylet or worker address.
pub fn connect(address: &str) -> std::io::Result<UnixStream> {
    let addr = parse_address(address).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{address}` is not an oxray node address (expected unix:@NAME)"),
        )
    })?;
    UnixStream::connect_addr(&addr)
}

/// Connects to a worker socket anywhere in the cluster: directly when `address` is on this
/// node (`unix:@NAME`), else (`peer://HOST:PORT/unix:@NAME`) through a tunnel of the local
/// raylet at `raylet`, which relays the bytes over QUIC to that node's raylet. Either way the
/// caller gets a Unix stream that carries its bytes unchanged.
pub fn connect_anywhere(raylet: &str, address: &str) -> std::io::Result<UnixStream> {
    let (address, _) = oxray_common::address::split_direct(address);
    if !address.starts_with("peer://") {
        return connect(address);
    }
    let mut stream = connect(raylet)?;
    frame::write(
        &mut stream,
        &ToRaylet::Tunnel {
            target: address.to_owned(),
        },
    )?;
    let mut buf = oxray_object_store::HeapBytes::new();
    // Unbuffered, so nothing after the answer is read here.
    let mut reader = &stream;
    match frame::read::<FromRaylet, _>(&mut reader, &mut buf) {
        Ok(FromRaylet::TunnelOpen) => Ok(stream),
        Ok(FromRaylet::Error { message, .. }) => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("reaching {address}: {message}"),
        )),
        Ok(other) => Err(std::io::Error::other(format!(
            "reaching {address}: unexpected answer {other:?}"
        ))),
        Err(e) => Err(std::io::Error::other(format!("reaching {address}: {e}"))),
    }
}

pub(crate) fn bind(address: &str) -> Result<UnixListener> {
    let addr = parse_address(address)
        .ok_or_else(|| RayletError::Config(format!("bad address {address}")))?;
    UnixListener::bind_addr(&addr)
        .map_err(|e| RayletError::io(format!("listening on {address}"), e))
}

/// Unblocks the accept loop (after `stopping` was set) by connecting to it.
pub(crate) fn wake_acceptor(address: &str) {
    let _ = connect(address);
}

/// Local connections served at once, at most; more are refused, logged.
pub(crate) const MAX_CONNECTIONS: usize = 4096;
/// Connections of one process that have not sent their first message yet, at most: a client
/// that opens connections and says nothing holds this many places, and other processes (the
/// node's own workers registering, say) are not held up by it.
pub(crate) const MAX_UNREGISTERED_PER_PROCESS: usize = 16;
/// How long a new local connection may take to send its first message.
pub(crate) const FIRST_MESSAGE_DEADLINE: Duration = Duration::from_secs(5);
/// The largest first message (`Register` or `Tunnel`: well under 1 KiB).
pub(crate) const MAX_FIRST_FRAME: usize = 64 << 10;

/// Live local connections.
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Connections before their first message, by the pid of the process that made them.
static UNREGISTERED: Mutex<Option<HashMap<i32, usize>>> = Mutex::new(None);

/// One connection counted in [`CONNECTIONS`], given back on drop.
pub(crate) struct Counted;

impl Counted {
    fn take() -> Option<Counted> {
        CONNECTIONS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONNECTIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| Counted)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection of process `pid` counted in [`UNREGISTERED`] until its first message.
pub(crate) struct Unregistered(i32);

impl Unregistered {
    fn take(pid: i32) -> Option<Unregistered> {
        let mut table = UNREGISTERED.lock().unwrap_or_else(|p| p.into_inner());
        let n = table
            .get_or_insert_with(HashMap::new)
            .entry(pid)
            .or_default();
        if *n >= MAX_UNREGISTERED_PER_PROCESS {
            return None;
        }
        *n += 1;
        Some(Unregistered(pid))
    }
}

impl Drop for Unregistered {
    fn drop(&mut self) {
        let mut table = UNREGISTERED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = table.as_mut() {
            if let Some(n) = t.get_mut(&self.0) {
                *n -= 1;
                if *n == 0 {
                    t.remove(&self.0);
                }
            }
        }
    }
}

pub(crate) fn accept_loop(node: Arc<Node>, listener: UnixListener) {
    for stream in listener.incoming() {
        if node.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        // SAFETY: getuid cannot fail.
        let me = unsafe { libc::getuid() };
        let Some(cred) = peer_credentials(&stream).filter(|c| c.uid == me) else {
            tracing::warn!("refused a connection from another user");
            continue;
        };
        let Some(connection) = Counted::take() else {
            tracing::warn!("refused a connection: {MAX_CONNECTIONS} connections are open already");
            continue;
        };
        let Some(unregistered) = Unregistered::take(cred.pid) else {
            tracing::warn!(
                "refused a connection of process {}: it has \
                 {MAX_UNREGISTERED_PER_PROCESS} connections that sent nothing yet",
                cred.pid
            );
            continue;
        };
        let client = Client::new(node.clone(), stream, Some((connection, unregistered)));
        if node.events().add(Box::new(client)).is_err() {
            // The node stopped serving meanwhile.
            break;
        }
    }
}

/// Serves a connection made inside the raylet (a job attached by another node) like an
/// accepted one.
pub(crate) fn serve_detached(node: Arc<Node>, stream: UnixStream) -> Result<()> {
    let client = Client::new(node.clone(), stream, None);
    node.events().add(Box::new(client)).map_err(|_| {
        RayletError::io(
            "serving an attached job",
            std::io::Error::other("the raylet is stopping"),
        )
    })
}

/// Whether the process at the other end of `stream` runs as this process's user (`SO_PEERCRED`).
/// Abstract sockets have no file permissions, so every oxray socket (the raylet's, and each core
/// worker's task and owner socket) serves only peers that pass this check.
pub fn same_user(stream: &UnixStream) -> bool {
    // SAFETY: getuid cannot fail.
    peer_credentials(stream).is_some_and(|c| c.uid == unsafe { libc::getuid() })
}

/// The pid, uid and gid of the process at the other end of `stream` (`SO_PEERCRED`).
fn peer_credentials(stream: &UnixStream) -> Option<libc::ucred> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; the fd is open.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred)
}
