//! Connecting to another core worker's socket (a leased worker, an actor, an owner): directly
//! when it is on this node, through a tunnel of the local raylet when its address is
//! `peer://HOST:PORT/unix:@NAME` (another node). Either way the caller gets a Unix stream and
//! speaks the same protocol.

use std::io;
use std::os::unix::net::UnixStream;

use oxray_common::frame;
use oxray_common::protocol::{FromRaylet, ToRaylet};
use oxray_object_store::HeapBytes;

/// Connects to `address`; `raylet` is the local raylet's address, which carries tunnels.
pub(crate) fn connect(raylet: &str, address: &str) -> io::Result<UnixStream> {
    if !address.starts_with("peer://") {
        return oxray_raylet::server::connect(address);
    }
    let mut stream = oxray_raylet::server::connect(raylet)?;
    frame::write(
        &mut stream,
        &ToRaylet::Tunnel {
            target: address.to_owned(),
        },
    )?;
    let mut buf = HeapBytes::new();
    // Unbuffered, so nothing after the answer is read here.
    let mut reader = &stream;
    match frame::read::<FromRaylet, _>(&mut reader, &mut buf) {
        Ok(FromRaylet::TunnelOpen) => Ok(stream),
        Ok(FromRaylet::Error { message, .. }) => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("reaching {address}: {message}"),
        )),
        Ok(other) => Err(io::Error::other(format!(
            "reaching {address}: unexpected answer {other:?}"
        ))),
        Err(e) => Err(io::Error::other(format!("reaching {address}: {e}"))),
    }
}
