//! Direct connections between core workers on different nodes.
//!
//! A caller that leased a worker on another node, or calls an actor there, connects straight to
//! that process instead of through both raylets (Ray's model: raylets stay on the control path).
//! A worker of a cluster node listens on a TCP port of the node's address and adds it to the
//! address it registers (`unix:@NAME?direct=IP:PORT`, see [`oxray_common::address`]).
//!
//! - **Transport**: TCP with TLS 1.3 (rustls with ring, a fresh self-signed certificate per
//!   process, ALPN `oxray-direct/1`). Not QUIC: a killed process's TCP connections are closed by
//!   its kernel at once, so a caller sees a dead worker or actor as promptly as over a Unix
//!   socket (QUIC would wait for its idle timeout), and TCP keep-alives and a user timeout notice
//!   a machine that vanished within ~10 s, as the raylets' health checks do.
//! - **Who may connect**: processes of the same job only. After the handshake both sides prove
//!   the job's credential (32 random bytes the driver's raylet makes and hands to the job's
//!   processes on every node; never the cluster secret) with an HMAC over keying material
//!   exported from this TLS session, the dialer first, as raylets prove the cluster secret (see
//!   `oxray_raylet::cluster::auth`). A proof is worthless on any other connection. A listener
//!   gives an unproved connection 5 s and serves at most [`MAX_UNPROVEN`] at once.
//! - **Another job's process** (a detached actor created by another driver) refuses our proof;
//!   the caller then goes through the raylets, as it does when the direct address does not
//!   answer at all (a firewall between machines).
//! - **Bridging**: the rest of the core worker speaks framed messages over Unix streams, so each
//!   direct connection is bridged to one end of a socket pair by this module's one runtime
//!   thread (`oxray-direct`), started when first needed: a worker waits on its direct listener
//!   with the thread that accepts its Unix connections, so a worker nobody on another node
//!   calls costs no thread for it.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use oxray_raylet::cluster::auth::{self, Role};
use oxray_raylet::cluster::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a dial may take to reach the process.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the TLS handshake and both proofs may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections a listener serves at once before they proved the credential; more are closed.
pub(crate) const MAX_UNPROVEN: usize = 16;
/// Buffer per direction of a bridge.
const BRIDGE_BUFFER: usize = 64 << 10;
/// What the proofs are bound to besides the session.
const CONTEXT: &str = "oxray-direct";
/// Length of a proof (HMAC-SHA256).
const PROOF_LEN: usize = 32;

/// A process's direct-connection service: a runtime thread, its TLS configs and the job's key.
pub(crate) struct Direct {
    runtime: tokio::runtime::Handle,
    connector: TlsConnector,
    acceptor: TlsAcceptor,
    key: Arc<[u8]>,
    /// Accepted connections still proving the credential.
    unproven: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

/// Why a dial did not give a connection.
#[derive(Debug)]
pub(crate) enum DialError {
    /// Nothing answered at the address (the process is gone, or a firewall).
    Unreachable(io::Error),
    /// The process answered but did not accept our credential or prove its own (another job's
    /// process), or the handshake failed.
    Refused(String),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Unreachable(e) => write!(f, "no answer: {e}"),
            DialError::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl Direct {
    /// Starts the service for a job whose credential is `key`.
    pub(crate) fn start(key: &[u8]) -> io::Result<Direct> {
        // One thread drives every connection: a current-thread runtime blocked on forever.
        let runtime = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        );
        let driven = runtime.clone();
        std::thread::Builder::new()
            .name("oxray-direct".into())
            .spawn(move || driven.block_on(std::future::pending::<()>()))?;
        let runtime = runtime.handle().clone();
        let client = tls::rustls_client(tls::DIRECT_ALPN).map_err(io::Error::other)?;
        let server = tls::rustls_server(tls::DIRECT_ALPN).map_err(io::Error::other)?;
        Ok(Direct {
            runtime,
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
            key: key.into(),
            unproven: Arc::new(tokio::sync::Semaphore::new(MAX_UNPROVEN)),
        })
    }

    /// Connects to the process listening at `address` (`IP:PORT`); returns our end of a stream
    /// that carries the connection's bytes. Blocks the calling thread until the credential was
    /// proved both ways (a few hundred microseconds on one machine).
    pub(crate) fn connect(&self, address: &str) -> Result<UnixStream, DialError> {
        let addr: SocketAddr = address.parse().map_err(|_| {
            DialError::Unreachable(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{address}` is not IP:PORT"),
            ))
        })?;
        let (ours, theirs) = UnixStream::pair().map_err(DialError::Unreachable)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (connector, key) = (self.connector.clone(), self.key.clone());
        self.runtime.spawn(async move {
            match dial(&connector, addr, &key).await {
                Ok(tls) => {
                    let _ = tx.send(Ok(()));
                    bridge(tls, theirs).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(ours),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DialError::Refused(
                "the direct-connection thread stopped".into(),
            )),
        }
    }

    /// Takes connection `tcp` accepted on the process's direct listener: once it proved the
    /// job's credential (within 5 s), `serve` gets our end of the stream that carries it. More
    /// than [`MAX_UNPROVEN`] connections still proving are closed at once.
    pub(crate) fn accept(
        &self,
        tcp: std::net::TcpStream,
        serve: impl FnOnce(UnixStream) + Send + 'static,
    ) {
        let from = tcp
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let Ok(permit) = self.unproven.clone().try_acquire_owned() else {
            eprintln!(
                "oxray: refused a direct connection from {from}: {MAX_UNPROVEN} others have not proved the job's credential yet"
            );
            return;
        };
        let tcp = {
            let _in_runtime = self.runtime.enter();
            match tcp
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(tcp))
            {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("oxray: a direct connection from {from}: {e}");
                    return;
                }
            }
        };
        let (acceptor, key) = (self.acceptor.clone(), self.key.clone());
        self.runtime.spawn(async move {
            tune(&tcp);
            let proved = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_one(&acceptor, tcp, &key));
            let tls = match proved.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    eprintln!("oxray: refused a direct connection from {from}: {e}");
                    return;
                }
                Err(_) => {
                    eprintln!(
                        "oxray: refused a direct connection from {from}: no proof within 5 s"
                    );
                    return;
                }
            };
            drop(permit);
            let Ok((ours, theirs)) = UnixStream::pair() else {
                return;
            };
            serve(ours);
            bridge(tls, theirs).await;
        });
    }
}

/// Binds the listener a worker registers: on `host` (the node's address), any free port.
pub(crate) fn bind(host: &str) -> io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind((host, 0))
}

async fn dial(
    connector: &TlsConnector,
    addr: SocketAddr,
    key: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, DialError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| DialError::Unreachable(io::ErrorKind::TimedOut.into()))?
        .map_err(DialError::Unreachable)?;
    tune(&tcp);
    let refused = |e: io::Error| DialError::Refused(e.to_string());
    let proved = async {
        let name = rustls_name()?;
        let mut tls = connector.connect(name, tcp).await?;
        let exported = export(tls.get_ref().1)?;
        tls.write_all(&auth::prove_exported(Role::Dialer, CONTEXT, &exported, key))
            .await?;
        tls.flush().await?;
        let mut proof = [0u8; PROOF_LEN];
        tls.read_exact(&mut proof).await?;
        if !auth::verify_exported(Role::Listener, CONTEXT, &exported, key, &proof) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the process did not prove the job's credential",
            ));
        }
        Ok(tls)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, proved)
        .await
        .map_err(|_| DialError::Refused("no proof within 5 s".into()))?
        .map_err(refused)
}

fn rustls_name() -> io::Result<tokio_rustls::rustls::pki_types::ServerName<'static>> {
    tokio_rustls::rustls::pki_types::ServerName::try_from("oxray")
        .map_err(|e| io::Error::other(e.to_string()))
}

/// The 32 bytes both proofs cover, exported from the TLS session.
fn export<D>(conn: &tokio_rustls::rustls::ConnectionCommon<D>) -> io::Result<[u8; 32]> {
    conn.export_keying_material([0u8; 32], auth::LABEL, Some(CONTEXT.as_bytes()))
        .map_err(|e| io::Error::other(e.to_string()))
}

async fn accept_one(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    key: &[u8],
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut tls = acceptor.accept(tcp).await?;
    let exported = export(tls.get_ref().1)?;
    let mut proof = [0u8; PROOF_LEN];
    tls.read_exact(&mut proof).await?;
    if !auth::verify_exported(Role::Dialer, CONTEXT, &exported, key, &proof) {
        // Closing says no; the dialer learns nothing else.
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "wrong proof of the job's credential (another job's process, or not oxray)",
        ));
    }
    tls.write_all(&auth::prove_exported(
        Role::Listener,
        CONTEXT,
        &exported,
        key,
    ))
    .await?;
    tls.flush().await?;
    Ok(tls)
}

/// Small messages leave at once; a peer that vanished is noticed within ~10 s.
fn tune(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(2))
        .with_interval(Duration::from_secs(1))
        .with_retries(5);
    let _ = sock.set_tcp_keepalive(&keepalive);
    let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(10)));
}

/// Copies bytes both ways between the TLS connection and our end of the socket pair until
/// either side ends; dropping both then closes the other.
async fn bridge<S>(mut tls: S, local: UnixStream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if local.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut local) = tokio::net::UnixStream::from_std(local) else {
        return;
    };
    let _ = tokio::io::copy_bidirectional_with_sizes(
        &mut local,
        &mut tls,
        BRIDGE_BUFFER,
        BRIDGE_BUFFER,
    )
    .await;
}
