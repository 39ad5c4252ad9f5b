//! The raylet's side of a multi-node cluster: QUIC between raylets, and on the head the control
//! service (node table, health checks, the cluster view).
//!
//! The rest of the raylet is threads and blocking Unix sockets; QUIC needs async, so this module
//! owns a small tokio runtime of its own. It reaches the node through `Node`'s entry points
//! (each one in-memory event on the node state; effects such as socket writes run after the
//! state lock is released), never while holding one of its own locks; the node reaches it
//! through `Link`, whose calls only queue work on the runtime.
//!
//! - [`tls`]: self-signed certificates, TLS 1.3 over ring.
//! - [`auth`]: proving the cluster secret on every connection before anything else is read.
//! - [`wire`]: one framed request and one framed reply per QUIC stream.
//! - `head`: the control service; `member`: joining the head and reporting to it.
//! - `peers`: one connection per peer pair, dialed on first use or accepted, and the dispatch
//!   of every stream a peer opens.
//! - `tunnel`: byte pipes from a local core worker to a socket on another node (task pushes,
//!   actor calls and owner requests cross nodes this way, unchanged).
//! - `jobs`: work spilled to other nodes: a job is *attached* to a peer raylet, which serves it
//!   as if its driver were local, with the job's executable fetched once and cached.
//! - `objects`: pulling objects from other nodes in chunks, and freeing every copy.
//! - `actors`, `names`: where an actor of another node runs; named actors, unique and findable
//!   cluster-wide through the head.
//!
//! - `health`: health checks. Every report period (100 ms, or the health-check period when
//!   shorter) a member sends its load to the head (from a thread and QUIC connection of its
//!   own), whose reply is the cluster view (so every node learns of joins, deaths and free
//!   resources within a report period). The head checks every node once per
//!   `health_check_period` it actually observed; a node with no heartbeat in `health_check_failure_threshold` checks
//!   in a row is marked dead. A node declared dead that is still running joins again as a new
//!   node.

mod actors;
pub mod auth;
mod head;
mod health;
mod jobs;
mod member;
mod names;
mod objects;
mod peers;
mod placement;
mod socket;
pub mod tls;
mod tunnel;
pub mod wire;

pub(crate) use jobs::{split_remote_lease, Forward, REMOTE_LEASE};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use oxray_common::peer::{ClusterView, PeerReply, PeerRequest};

use crate::error::{RayletError, Result};
use crate::node::Node;

/// How a raylet takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The cluster's name; peers of another cluster are refused.
    pub name: String,
    /// The shared secret every connection must prove.
    pub secret: Vec<u8>,
    /// Host (name or IP) to listen on for peers; also the address advertised to them.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// The head's `host:port`; `None` makes this node the head.
    pub head: Option<String>,
    /// How often the head checks that each node sent a heartbeat since the last check. Members
    /// send one (their load) every [`ClusterConfig::report_period`], at least once per check.
    /// Give every node of a cluster the same value.
    pub health_check_period: Duration,
    /// How long a member waits for the head's answer to one heartbeat before it says the head
    /// does not answer (it keeps sending; this does not decide deaths).
    pub health_check_timeout: Duration,
    /// Checks in a row a node may miss (no heartbeat since the previous check) before the head
    /// marks it dead; at least 2, as one period can pass without a heartbeat through timer
    /// jitter alone.
    pub health_check_failure_threshold: u32,
}

/// How often members report their load (see [`ClusterConfig::report_period`]).
pub const REPORT_PERIOD: Duration = Duration::from_millis(100);
/// Default [`ClusterConfig::health_check_period`].
pub const DEFAULT_HEALTH_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// Default [`ClusterConfig::health_check_timeout`].
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ClusterConfig::health_check_failure_threshold`].
pub const DEFAULT_HEALTH_CHECK_FAILURE_THRESHOLD: u32 = 5;

impl ClusterConfig {
    /// A head listening on `host:port`, with Ray-like health-check defaults scaled for faster
    /// detection (Ray: a check every 3 s, dead after 5 failures; here a heartbeat every second,
    /// dead after 5 missed checks in a row, an answer awaited up to 10 s).
    pub fn head(name: &str, secret: Vec<u8>, host: &str, port: u16) -> Self {
        ClusterConfig {
            name: name.to_owned(),
            secret,
            host: host.to_owned(),
            port,
            head: None,
            health_check_period: DEFAULT_HEALTH_CHECK_PERIOD,
            health_check_timeout: DEFAULT_HEALTH_CHECK_TIMEOUT,
            health_check_failure_threshold: DEFAULT_HEALTH_CHECK_FAILURE_THRESHOLD,
        }
    }

    /// How often members report their load to the head (whose answer is the cluster view):
    /// [`REPORT_PERIOD`], or the health-check period when that is shorter. Spillback decisions
    /// use these reports, so they must be fresher than the health checks need.
    pub fn report_period(&self) -> Duration {
        self.health_check_period.min(REPORT_PERIOD)
    }

    /// A member joining the head at `head` (`host:port`), listening on `host:port`.
    pub fn member(name: &str, secret: Vec<u8>, host: &str, port: u16, head: &str) -> Self {
        ClusterConfig {
            head: Some(head.to_owned()),
            ..ClusterConfig::head(name, secret, host, port)
        }
    }

    fn validate(&self) -> Result<()> {
        if self.secret.len() < 16 {
            return Err(RayletError::Config(
                "the cluster secret must be at least 16 bytes (e.g. `openssl rand -hex 16`)".into(),
            ));
        }
        if self.health_check_period.is_zero()
            || self.health_check_timeout <= self.health_check_period
        {
            return Err(RayletError::Config(
                "health_check_timeout must be longer than health_check_period, both above 0".into(),
            ));
        }
        if self.health_check_failure_threshold < 2 {
            return Err(RayletError::Config(format!(
                "health_check_failure_threshold must be at least 2, not {} (one period can pass \
                 without a heartbeat through timer jitter alone)",
                self.health_check_failure_threshold
            )));
        }
        Ok(())
    }
}

/// State shared by the cluster tasks.
pub(crate) struct Shared {
    config: ClusterConfig,
    node: Weak<Node>,
    /// The address peers reach this raylet at (`host:port`, the real port).
    peer_address: String,
    /// The head's node table (head only).
    table: Mutex<head::Table>,
    /// Calls into the node for health checks (its load, the views), off the heartbeat path.
    sync: Arc<health::NodeSync>,
    /// This raylet's QUIC endpoint (it listens and dials).
    endpoint: quinn::Endpoint,
    /// Where the cluster's async tasks run.
    runtime: tokio::runtime::Handle,
    /// Authenticated connections to peers, by their address.
    peers: Mutex<HashMap<SocketAddr, quinn::Connection>>,
    /// Serializes dialing, so two requests for one peer make one connection.
    dialing: tokio::sync::Mutex<()>,
    /// Local jobs attached to peers: (job, peer index) → the pipe.
    proxies: Mutex<HashMap<(oxray_common::JobId, u16), Arc<jobs::Proxy>>>,
    /// Executables of local jobs, hashed once.
    exes: Mutex<HashMap<String, oxray_common::peer::ExeInfo>>,
    /// Fetching an executable from a peer (one at a time).
    fetching: tokio::sync::Mutex<()>,
    /// Objects being pulled here, with the `(connection, request)` pins waiting for them.
    pulls: Mutex<HashMap<oxray_common::ObjectId, Vec<(u64, u64)>>>,
    /// Peers that pulled copies of objects from here, in the order they asked (freed with the
    /// primary; offered as sources to later pullers).
    pulled_by: Mutex<HashMap<oxray_common::ObjectId, Vec<SocketAddr>>>,
    /// Pulls in progress here: each ends (its sender drops) when the copy is sealed or failed;
    /// peers asking for chunks of it meanwhile wait for that.
    pulling: Mutex<HashMap<oxray_common::ObjectId, tokio::sync::watch::Receiver<()>>>,
    /// Object bytes this node sent to peers since it started.
    served: std::sync::atomic::AtomicU64,
    /// Tunnels opened through this raylet (see `Link::tunnels`).
    tunnels: std::sync::atomic::AtomicU64,
}

/// Locks a mutex, ignoring poisoning (no invariant spans a panic here).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A raylet's cluster membership: its QUIC endpoint and background tasks. Dropping it closes
/// the endpoint and stops the tasks.
pub(crate) struct Cluster {
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    /// A member's heartbeats.
    reporter: Option<member::Reporter>,
    /// `host:port` peers reach this node at.
    pub peer_address: String,
}

impl Cluster {
    /// Starts listening for peers and, for a member, joins the head (returning once registered,
    /// or with the head's refusal).
    pub(crate) fn start(config: ClusterConfig, node: &Arc<Node>) -> Result<Cluster> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("oxray-quic")
            .enable_all()
            .build()
            .map_err(|e| RayletError::io("starting the QUIC runtime", e))?;
        let endpoint = runtime.block_on(bind(&config.host, config.port))?;
        let port = endpoint
            .local_addr()
            .map_err(|e| RayletError::io("reading the QUIC endpoint's address", e))?
            .port();
        let peer_address = format!("{}:{port}", config.host);
        let sync = health::NodeSync::new(node.load());
        sync.start(Arc::downgrade(node), config.report_period())
            .map_err(|e| RayletError::io("starting the node's sync thread", e))?;
        let shared = Arc::new(Shared {
            config,
            node: Arc::downgrade(node),
            peer_address: peer_address.clone(),
            table: Mutex::new(head::Table::default()),
            sync,
            endpoint: endpoint.clone(),
            runtime: runtime.handle().clone(),
            peers: Mutex::new(HashMap::new()),
            dialing: tokio::sync::Mutex::new(()),
            proxies: Mutex::new(HashMap::new()),
            exes: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
            pulls: Mutex::new(HashMap::new()),
            pulled_by: Mutex::new(HashMap::new()),
            pulling: Mutex::new(HashMap::new()),
            served: std::sync::atomic::AtomicU64::new(0),
            tunnels: std::sync::atomic::AtomicU64::new(0),
        });
        node.set_link(Link(shared.clone()));
        runtime.spawn(head::accept_loop(endpoint.clone(), shared.clone()));
        // From here on, dropping `cluster` undoes the start.
        let mut cluster = Cluster {
            runtime: Some(runtime),
            endpoint,
            shared: shared.clone(),
            peer_address,
            reporter: None,
        };
        match shared.config.head.clone() {
            None => {
                head::register_self(&shared, node);
                if let Some(rt) = &cluster.runtime {
                    rt.spawn(head::monitor(shared.clone()));
                }
            }
            Some(head) => {
                if let Some(rt) = &cluster.runtime {
                    member::join_when_up(rt, &shared, node, &head)?;
                }
                cluster.reporter = Some(member::Reporter::start(&shared, &head)?);
            }
        }
        Ok(cluster)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A member tells the head it is leaving (from its heartbeat thread), so the cluster
        // does not wait for its health checks.
        if let Some(reporter) = self.reporter.take() {
            reporter.stop();
        }
        self.shared.sync.stop();
        self.endpoint.close(0u32.into(), b"node stopping");
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(200));
        }
    }
}

/// What the node's synchronous code uses to reach peers: every call returns at once and does
/// its work on the cluster's runtime.
#[derive(Clone)]
pub(crate) struct Link(Arc<Shared>);

impl Link {
    /// Object bytes sent to other nodes since this node started.
    pub(crate) fn bytes_served(&self) -> u64 {
        self.0.served.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections relayed through this raylet to or from other nodes since it started.
    pub(crate) fn tunnels(&self) -> u64 {
        self.0.tunnels.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The host part of this node's peer address (the IP other nodes reach it at).
    pub(crate) fn advertised_host(&self) -> &str {
        let addr = &self.0.peer_address;
        match addr.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => addr,
        }
    }

    /// Carries out a request of the node state (see `crate::node::LinkOp`).
    pub(crate) fn carry_out(&self, op: crate::node::LinkOp) {
        use crate::node::LinkOp;
        match op {
            LinkOp::Forward { job, index, msg } => self.forward(job, index, msg),
            LinkOp::QueryActor {
                conn,
                req,
                index,
                id,
                wait_alive,
                kill,
            } => self.query_actor(conn, req, index, id, wait_alive, kill),
            LinkOp::ClaimThenCreate { conn, req, spec } => self.claim_then_create(conn, req, spec),
            LinkOp::ReleaseName {
                namespace,
                name,
                id,
            } => self.release_name(namespace, name, id),
            LinkOp::LookupName {
                conn,
                req,
                namespace,
                name,
                wait_alive,
            } => self.lookup_name(conn, req, namespace, name, wait_alive),
            LinkOp::JobEnded(job) => self.job_ended(job),
            LinkOp::OwnerGone(owner) => self.owner_gone(owner),
            LinkOp::NodeDied(address) => self.node_died(&address),
            LinkOp::PlacementToHead { conn, req, request } => {
                placement::to_head(&self.0, conn, req, request)
            }
            LinkOp::Bundles {
                index,
                group,
                attempt,
                op,
            } => placement::bundles(&self.0, index, group, attempt, op),
        }
    }

    /// The node at `peer_address` was declared dead: close the connection to it.
    pub(crate) fn node_died(&self, peer_address: &str) {
        if let Ok(addr) = peer_address.parse::<SocketAddr>() {
            if let Some(conn) = lock(&self.0.peers).remove(&addr) {
                conn.close(2u32.into(), b"declared dead");
            }
        }
    }

    /// Asks node `index` about actor `id` (killing it first with `kill`) for a local client;
    /// the answer goes to the client as `Actor` or `Error`.
    pub(crate) fn query_actor(
        &self,
        conn: u64,
        req: u64,
        index: u16,
        id: oxray_common::ActorId,
        wait_alive: bool,
        kill: Option<bool>,
    ) {
        actors::query(&self.0, conn, req, index, id, wait_alive, kill);
    }

    /// Claims a new actor's name at the head, then creates the actor (`Node::create_actor`).
    pub(crate) fn claim_then_create(
        &self,
        conn: u64,
        req: u64,
        spec: oxray_common::protocol::ActorSpec,
    ) {
        names::claim_then_create(&self.0, conn, req, spec);
    }

    /// Frees a dead actor's name at the head.
    pub(crate) fn release_name(&self, namespace: String, name: String, id: oxray_common::ActorId) {
        names::release(&self.0, namespace, name, id);
    }

    /// Finds a named actor anywhere in the cluster for a local client.
    pub(crate) fn lookup_name(
        &self,
        conn: u64,
        req: u64,
        namespace: String,
        name: String,
        wait_alive: bool,
    ) {
        names::lookup(&self.0, conn, req, namespace, name, wait_alive);
    }

    /// Connects a local client's socket to `target` (`peer://HOST:PORT/unix:@NAME`).
    pub(crate) fn open_tunnel(&self, stream: std::os::unix::net::UnixStream, target: String) {
        let shared = self.0.clone();
        self.0.runtime.spawn(tunnel::open(shared, stream, target));
    }

    /// Sends a local client's request to the peer with index `index`, for job `job`; the
    /// answer goes back to the client as if this node had given it.
    pub(crate) fn forward(&self, job: oxray_common::JobId, index: u16, msg: jobs::Forward) {
        jobs::forward(&self.0, job, index, msg);
    }

    /// A local job ended: its attachments to peers close (their workers there stop).
    pub(crate) fn job_ended(&self, job: oxray_common::JobId) {
        jobs::job_ended(&self.0, job);
    }

    /// Pulls object `id` from the node with index `index`, then pins it for `(conn, req)`.
    pub(crate) fn pull(&self, id: oxray_common::ObjectId, index: u16, conn: u64, req: u64) {
        objects::pull(&self.0, id, index, conn, req);
    }

    /// A local process that owned objects ended: other nodes free what it owned there.
    pub(crate) fn owner_gone(&self, owner: oxray_common::WorkerId) {
        objects::owner_gone(&self.0, owner);
    }

    /// Frees every copy of `ids` in the cluster (the primaries are on node `index`).
    pub(crate) fn delete(&self, ids: Vec<oxray_common::ObjectId>, index: u16) {
        objects::delete_everywhere(&self.0, ids, index);
    }
}

/// Binds a QUIC endpoint that both accepts and dials.
async fn bind(host: &str, port: u16) -> Result<quinn::Endpoint> {
    let addr = resolve(&format!("{host}:{port}")).await?;
    let listen = |e| RayletError::io(format!("listening for peers on {addr}"), e);
    let socket = std::net::UdpSocket::bind(addr).map_err(listen)?;
    tls::size_socket_buffers(&socket);
    let network = tls::Network::of(&addr);
    let mut config = quinn::EndpointConfig::default();
    // What peers may send us (quinn's default is 1,472 bytes, which caps MTU discovery).
    config
        .max_udp_payload_size(network.max_udp_payload())
        .map_err(|e| RayletError::Config(format!("QUIC endpoint config: {e}")))?;
    use quinn::Runtime;
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut socket = runtime.wrap_udp_socket(socket).map_err(listen)?;
    if network == tls::Network::Loopback {
        socket = Arc::new(socket::OnePacketSends(socket));
    }
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        config,
        Some(tls::server_config_for(network)?),
        socket,
        runtime,
    )
    .map_err(listen)?;
    endpoint.set_default_client_config(tls::client_config_for(network)?);
    Ok(endpoint)
}

async fn resolve(address: &str) -> Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| RayletError::io(format!("resolving {address}"), e))?;
    addrs.next().ok_or_else(|| RayletError::Peer {
        peer: address.to_owned(),
        reason: "the name resolves to no address".into(),
    })
}

/// Connects to `address` and proves the secret; checks the listener's proof in turn.
pub(crate) async fn dial(
    endpoint: &quinn::Endpoint,
    address: &str,
    cluster: &str,
    secret: &[u8],
) -> Result<quinn::Connection> {
    let peer_error = |reason: String| RayletError::Peer {
        peer: address.to_owned(),
        reason,
    };
    let unreachable = |reason: String| RayletError::Unreachable {
        peer: address.to_owned(),
        reason,
    };
    let addr = resolve(address).await?;
    let connecting = endpoint
        .connect(addr, "oxray")
        .map_err(|e| peer_error(format!("cannot connect: {e}")))?;
    let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| unreachable("no answer within 5 s (is a raylet listening there?)".into()))?
        .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
    let proof = auth::prove(&conn, auth::Role::Dialer, cluster, secret);
    let auth = PeerRequest::Auth {
        cluster: cluster.to_owned(),
        proof,
    };
    match wire::request(&conn, &auth, address).await? {
        PeerReply::AuthOk { proof }
            if auth::verify(&conn, auth::Role::Listener, cluster, secret, &proof) =>
        {
            Ok(conn)
        }
        PeerReply::AuthOk { .. } => {
            conn.close(1u32.into(), b"bad proof");
            Err(peer_error(
                "it does not know the cluster secret (its proof is wrong)".into(),
            ))
        }
        PeerReply::Refused { reason } => Err(peer_error(format!("refused us: {reason}"))),
        other => Err(peer_error(format!("unexpected answer {other:?}"))),
    }
}

/// Asks the raylet at `address` (`host:port`) for the cluster view, proving `secret`: what
/// `oxray status` does for a remote cluster, and how tests check that a wrong secret is refused.
pub fn probe(address: &str, cluster: &str, secret: &[u8]) -> Result<ClusterView> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RayletError::io("starting a QUIC runtime", e))?;
    runtime.block_on(async {
        let bind_addr: SocketAddr = if resolve(address).await?.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let mut endpoint = quinn::Endpoint::client(bind_addr)
            .map_err(|e| RayletError::io("opening a QUIC endpoint", e))?;
        endpoint.set_default_client_config(tls::client_config()?);
        let conn = dial(&endpoint, address, cluster, secret).await?;
        let reply = wire::request(&conn, &PeerRequest::GetView, address).await;
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        match reply? {
            PeerReply::View(view) => Ok(view),
            other => Err(RayletError::Peer {
                peer: address.to_owned(),
                reason: format!("unexpected answer {other:?}"),
            }),
        }
    })
}
