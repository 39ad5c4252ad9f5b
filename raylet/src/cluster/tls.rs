//! TLS for QUIC between raylets: encryption from TLS 1.3, identity from the cluster secret.
//!
//! Every raylet makes a fresh self-signed certificate at start (rcgen). Certificates are not
//! what proves membership: the dialer accepts any certificate whose handshake signature checks
//! out, and both sides then prove the cluster secret over the session's exported keying material
//! (see [`super::auth`]). A man in the middle would hold two TLS sessions with different keying
//! material, so it cannot relay a proof. This avoids distributing a CA; rustls has no PSK mode.
//! The crypto provider is ring, set explicitly (no aws-lc-rs, no cmake).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{RayletError, Result};

/// The ALPN protocol name: a peer speaking anything else is refused in the handshake.
pub const ALPN: &[u8] = b"oxray/1";

/// The ALPN protocol name of direct connections between core workers (TCP and TLS), so a
/// worker's port and a raylet's never take each other's connections.
pub const DIRECT_ALPN: &[u8] = b"oxray-direct/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> RayletError {
    RayletError::Config(format!("{what}: {e}"))
}

/// The server side: a new self-signed certificate.
pub fn server_config() -> Result<quinn::ServerConfig> {
    server_config_for(Network::Lan)
}

/// [`server_config`] for a node on `network`.
pub fn server_config_for(network: Network) -> Result<quinn::ServerConfig> {
    let tls = rustls_server(ALPN)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| tls_error("QUIC server config", e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport(network)));
    Ok(config)
}

/// The client side: any certificate, as long as the handshake is signed by its key.
pub fn client_config() -> Result<quinn::ClientConfig> {
    client_config_for(Network::Lan)
}

/// [`client_config`] for a node on `network`.
pub fn client_config_for(network: Network) -> Result<quinn::ClientConfig> {
    let tls = rustls_client(ALPN)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| tls_error("QUIC client config", e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport(network)));
    Ok(config)
}

/// A TLS 1.3 server speaking `alpn`, with a new self-signed certificate.
pub fn rustls_server(alpn: &[u8]) -> Result<rustls::ServerConfig> {
    let key = rcgen::generate_simple_self_signed(vec!["oxray".to_owned()])
        .map_err(|e| tls_error("making the node's certificate", e))?;
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .map_err(|e| tls_error("TLS certificate", e))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// A TLS 1.3 client speaking `alpn` that takes any certificate whose handshake signature checks
/// out (who the peer is, is proved afterwards; see [`super::auth`]).
pub fn rustls_client(alpn: &[u8]) -> Result<rustls::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// UDP socket buffers to ask for. The kernel default (~208 KiB) overflows when a fast sender
/// bursts at a receiver on another core (loopback, LAN), and every drop halves QUIC's
/// congestion window; the kernel caps the request at `net.core.{r,w}mem_max`.
const SOCKET_BUFFER: usize = 8 << 20;

/// Enlarges the socket's buffers (best effort: a smaller cap only costs speed).
pub fn size_socket_buffers(socket: &std::net::UdpSocket) {
    let sock = quinn::udp::UdpSockRef::from(socket);
    if let Ok(state) = quinn::udp::UdpSocketState::new(sock) {
        let _ = state.set_recv_buffer_size(quinn::udp::UdpSockRef::from(socket), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size(quinn::udp::UdpSockRef::from(socket), SOCKET_BUFFER);
    }
}

/// Bytes a peer may have in flight to us per connection. At most what the socket buffer can
/// hold, so a receiver that falls behind stops the sender instead of dropping its packets (a
/// drop costs a congestion-window halving); 2 MiB still allows 2 GB/s at 1 ms round trips.
/// (On the 2-core VM: 0.51 → 0.70 GB/s for 100 MiB pulls against 64 MiB windows.)
const RECEIVE_WINDOW: usize = 2 << 20;

/// Where a node's peers are, which decides how big its QUIC packets may be. Per packet QUIC
/// pays framing, header protection, an AEAD call and ack bookkeeping, so bigger packets move
/// more bytes per CPU second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Other machines: MTU discovery probes up to 6.5 KB (an Ethernet path stays at ~1.45 KB,
    /// jumbo frames get more), and quinn sends up to 10 packets in one GSO `sendmsg`. Not more:
    /// the batch must fit one UDP datagram (65,507 bytes); a bigger one fails with `EMSGSIZE`,
    /// which quinn takes for a lost MTU probe (with a 9 or 16 KB bound every full batch was
    /// dropped, the congestion window collapsed and black-hole detection reset the MTU). 4.4×
    /// bigger packets than Ethernet's took 100 MiB pulls on the 2-core VM from 0.7 to 1.6 GB/s.
    Lan,
    /// This machine (a loopback address): one packet per `sendmsg` (no GSO batch), each up to
    /// 60 KB. On the 2-core VM, 2026-12-02, A/B in one sitting: cross-node pulls 1.2–1.4 GB/s
    /// with `Lan`'s settings, 1.5–1.76 GB/s with these.
    Loopback,
}

impl Network {
    /// The network of a node bound to `addr`.
    pub fn of(addr: &std::net::SocketAddr) -> Network {
        if addr.ip().is_loopback() {
            Network::Loopback
        } else {
            Network::Lan
        }
    }

    /// The largest UDP payload (QUIC packet) the node sends or accepts; MTU discovery probes up
    /// to it.
    pub fn max_udp_payload(self) -> u16 {
        match self {
            Network::Lan => 6_500,
            Network::Loopback => 60_000,
        }
    }
}

/// Flow-control windows that keep a burst within the socket buffer; MTU discovery up to the
/// network's packet size; keep-alives so idle peers stay connected.
fn transport(network: Network) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(network.max_udp_payload());
    t.mtu_discovery_config(Some(mtu));
    t.max_concurrent_bidi_streams(1024u32.into());
    t.stream_receive_window((RECEIVE_WINDOW as u32).into());
    t.receive_window((RECEIVE_WINDOW as u32).into());
    t.send_window(64 << 20);
    t.keep_alive_interval(Some(std::time::Duration::from_secs(1)));
    if let Ok(idle) = std::time::Duration::from_secs(10).try_into() {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Accepts any server certificate but still checks the handshake signatures against it, so the
/// session keys are bound to the certificate the server presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
