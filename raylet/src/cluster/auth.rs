//! Proving the cluster secret on a QUIC connection.
//!
//! Both sides derive 32 bytes from the TLS session (RFC 5705 keying material exporter, label
//! `LABEL`) and prove the secret with HMAC-SHA256 over the role, the cluster name and those
//! bytes. The dialer proves first; the listener answers with its own proof only if the dialer's
//! was right, so a peer without the secret learns nothing but "refused". Verification is
//! constant-time (ring's `hmac::verify`).

use ring::hmac;

/// The exporter label: binds proofs to oxray and to one TLS session.
pub const LABEL: &[u8] = b"EXPORTER-oxray-cluster-auth";

/// Which side of the connection a proof is for; the two proofs differ so one cannot be
/// reflected back as the other.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// The side that opened the connection.
    Dialer,
    /// The side that accepted it.
    Listener,
}

impl Role {
    fn tag(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer",
            Role::Listener => b"listener",
        }
    }
}

/// The bytes a proof covers on `conn`, or `None` if the session cannot export them.
fn transcript(conn: &quinn::Connection, role: Role, cluster: &str) -> Option<Vec<u8>> {
    let mut exported = [0u8; 32];
    conn.export_keying_material(&mut exported, LABEL, cluster.as_bytes())
        .ok()?;
    Some(message(role, cluster, &exported))
}

/// What a proof for `role` covers: the role, the context (the cluster's name) and the bytes
/// exported from the TLS session.
fn message(role: Role, context: &str, exported: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(64 + context.len());
    msg.extend_from_slice(role.tag());
    msg.push(0);
    msg.extend_from_slice(context.as_bytes());
    msg.push(0);
    msg.extend_from_slice(exported);
    msg
}

/// A proof of `secret` for `role` over bytes `exported` from a TLS session (exported with
/// [`LABEL`] and `context`), for transports other than quinn's.
pub fn prove_exported(role: Role, context: &str, exported: &[u8], secret: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::sign(&key, &message(role, context, exported))
        .as_ref()
        .to_vec()
}

/// Whether `proof` is the other side's valid [`prove_exported`] proof.
pub fn verify_exported(
    role: Role,
    context: &str,
    exported: &[u8],
    secret: &[u8],
    proof: &[u8],
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &message(role, context, exported), proof).is_ok()
}

/// This side's proof of `secret` for `role` on `conn`.
pub fn prove(conn: &quinn::Connection, role: Role, cluster: &str, secret: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    match transcript(conn, role, cluster) {
        Some(msg) => hmac::sign(&key, &msg).as_ref().to_vec(),
        None => Vec::new(),
    }
}

/// Whether `proof` is the other side's valid proof for `role` on `conn`.
pub fn verify(
    conn: &quinn::Connection,
    role: Role,
    cluster: &str,
    secret: &[u8],
    proof: &[u8],
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    transcript(conn, role, cluster).is_some_and(|msg| hmac::verify(&key, &msg, proof).is_ok())
}
