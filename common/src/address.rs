//! Where a core worker listens, written as one string.
//!
//! - `unix:@NAME`: a socket on this node.
//! - `peer://HOST:PORT/unix:@NAME`: a socket on the node whose raylet is at `HOST:PORT`,
//!   reached through the raylets (a tunnel).
//! - either of those followed by `?direct=IP:PORT`: the process also takes direct connections
//!   (TCP and TLS, proved with the job's credential) at `IP:PORT`, which callers on other nodes
//!   use instead of a tunnel.

/// What separates a socket address from the process's direct address.
const DIRECT: &str = "?direct=";

/// Splits `address` into the socket part and the direct address, if it has one.
pub fn split_direct(address: &str) -> (&str, Option<&str>) {
    match address.split_once(DIRECT) {
        Some((socket, direct)) => (socket, Some(direct)),
        None => (address, None),
    }
}

/// `socket` with the direct address `direct` added.
pub fn with_direct(socket: &str, direct: &str) -> String {
    format!("{socket}{DIRECT}{direct}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_address_is_split_off_and_put_back() {
        let a = with_direct("peer://10.0.0.1:7000/unix:@s-w12", "10.0.0.1:41234");
        assert_eq!(
            split_direct(&a),
            ("peer://10.0.0.1:7000/unix:@s-w12", Some("10.0.0.1:41234"))
        );
        assert_eq!(split_direct("unix:@s-w12"), ("unix:@s-w12", None));
    }
}
