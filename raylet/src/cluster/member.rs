//! A member node: joining the head, and its heartbeats (see `health` for the design), which
//! run on a thread of their own with their own QUIC endpoint and connection to the head.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxray_common::peer::{PeerReply, PeerRequest};
use oxray_common::NodeId;
use tokio::sync::{mpsc, Notify};

use super::head::self_info;
use super::{dial, peers, resolve, tls, wire, Shared};
use crate::error::{RayletError, Result};
use crate::node::Node;

/// How long a member waits for a head that does not answer yet (nodes of a batch job start
/// together, and the head may come up last).
pub(crate) const HEAD_WAIT: Duration = Duration::from_secs(60);

/// Joins the head, waiting up to [`HEAD_WAIT`] while nothing answers at its address; a head
/// that answers and refuses (a wrong secret, say) fails at once.
pub(crate) fn join_when_up(
    runtime: &tokio::runtime::Runtime,
    shared: &Arc<Shared>,
    node: &Arc<Node>,
    head: &str,
) -> Result<quinn::Connection> {
    let deadline = Instant::now() + HEAD_WAIT;
    let mut said = false;
    loop {
        match runtime.block_on(join(shared, node, head)) {
            Err(RayletError::Unreachable { reason, .. }) if Instant::now() < deadline => {
                if !said {
                    tracing::warn!(
                        "waiting for the head at {head} ({reason}); up to {} s",
                        HEAD_WAIT.as_secs()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Connects to the head, proves the secret and registers; returns the connection.
pub(crate) async fn join(
    shared: &Arc<Shared>,
    node: &Arc<Node>,
    head: &str,
) -> Result<quinn::Connection> {
    // Through the peer table: the head uses this connection for its own requests to us too.
    let conn = peers::connection(shared, head).await?;
    let register = PeerRequest::Register {
        node: self_info(shared, node, false, node.load()),
    };
    match wire::request(&conn, &register, head).await? {
        PeerReply::View(view) => {
            node.set_cluster_view(view);
            Ok(conn)
        }
        PeerReply::Refused { reason } | PeerReply::Error { message: reason } => {
            Err(RayletError::Peer {
                peer: head.to_owned(),
                reason: format!("the head refused to register this node: {reason}"),
            })
        }
        other => Err(RayletError::Peer {
            peer: head.to_owned(),
            reason: format!("unexpected answer to Register: {other:?}"),
        }),
    }
}

/// The member's heartbeat thread. [`Reporter::stop`] (or the node stopping) ends it, after it
/// told the head the node is leaving.
pub(crate) struct Reporter {
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts sending heartbeats to the head at `head` (`host:port`) from a thread of their own.
    pub(crate) fn start(shared: &Arc<Shared>, head: &str) -> Result<Reporter> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RayletError::io("starting the health-check runtime", e))?;
        let stop = Arc::new(Notify::new());
        let heartbeats = Heartbeats {
            shared: shared.clone(),
            head: head.to_owned(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("oxray-health".into())
            .spawn(move || {
                runtime.block_on(heartbeats.run());
                runtime.shutdown_timeout(Duration::from_millis(200));
            })
            .map_err(|e| RayletError::io("starting the health-check thread", e))?;
        Ok(Reporter {
            stop,
            thread: Some(thread),
        })
    }

    /// Says goodbye to the head and ends the thread.
    pub(crate) fn stop(mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An answer (or its absence) to one request of the heartbeat loop.
struct Answer {
    /// `Register` (joining again) rather than `Heartbeat`.
    register: bool,
    /// The request's sequence number (views are applied in this order).
    seq: u64,
    /// The node id the request was sent for.
    id: NodeId,
    reply: std::result::Result<Result<PeerReply>, tokio::time::error::Elapsed>,
}

/// A member that the head declared dead and that joins again as a new node.
struct Rejoining {
    old: NodeId,
    reason: String,
    /// A `Register` is on its way.
    sent: bool,
}

struct Heartbeats {
    shared: Arc<Shared>,
    head: String,
    stop: Arc<Notify>,
}

impl Heartbeats {
    /// Every period: a heartbeat with the node's last load, each its own request (a slow answer
    /// does not hold back the next one); answers bring the view. Redials when the connection to
    /// the head is gone; joins again as a new node when the head refuses the node.
    async fn run(self) {
        let config = &self.shared.config;
        let head = self.head.as_str();
        let mut endpoint: Option<quinn::Endpoint> = None;
        let mut conn: Option<quinn::Connection> = None;
        let (answers, mut answered) = mpsc::unbounded_channel::<Answer>();
        let mut tick = tokio::time::interval(config.report_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0u64;
        let mut silent = false;
        let mut rejoining: Option<Rejoining> = None;
        loop {
            let mut send_now = false;
            tokio::select! {
                _ = self.stop.notified() => break,
                _ = tick.tick() => send_now = true,
                Some(answer) = answered.recv() => {
                    let Some(node) = self.shared.node.upgrade() else { break };
                    match self.on_answer(&node, answer, &mut rejoining, &mut silent).await {
                        Next::Go => {}
                        Next::SendNow => send_now = true,
                        Next::Stop => break,
                    }
                }
            }
            if !send_now {
                continue;
            }
            let Some(node) = self.shared.node.upgrade() else {
                break;
            };
            if node.stopping.load(Ordering::Relaxed) {
                break;
            }
            let c = match conn.as_ref().filter(|c| c.close_reason().is_none()) {
                Some(c) => c.clone(),
                None => {
                    let dialed = tokio::select! {
                        _ = self.stop.notified() => break,
                        dialed = self.connect(&mut endpoint) => dialed,
                    };
                    match dialed {
                        Ok(c) => {
                            conn = Some(c.clone());
                            c
                        }
                        Err(e) => {
                            if !std::mem::replace(&mut silent, true) {
                                tracing::warn!(
                                    "the head at {head} does not answer ({e}); \
                                     retrying"
                                );
                            }
                            continue;
                        }
                    }
                }
            };
            seq += 1;
            let id = node.id();
            let (register, req) = match &mut rejoining {
                Some(r) if r.sent => continue,
                Some(r) => {
                    r.sent = true;
                    let info = self_info(&self.shared, &node, false, self.shared.sync.load());
                    (true, PeerRequest::Register { node: info })
                }
                None => (
                    false,
                    PeerRequest::Heartbeat {
                        node: id,
                        load: self.shared.sync.load(),
                    },
                ),
            };
            drop(node);
            let answers = answers.clone();
            let head = self.head.clone();
            let timeout = config.health_check_timeout;
            tokio::spawn(async move {
                let reply = tokio::time::timeout(timeout, wire::request(&c, &req, &head)).await;
                let _ = answers.send(Answer {
                    register,
                    seq,
                    id,
                    reply,
                });
            });
        }
        // Tell the head, so it marks the node dead now rather than after its checks.
        if let (Some(c), Some(node)) = (conn, self.shared.node.upgrade()) {
            let leave = PeerRequest::Leave { node: node.id() };
            let _ =
                tokio::time::timeout(Duration::from_millis(500), wire::request(&c, &leave, head))
                    .await;
            c.close(0u32.into(), b"node stopping");
        }
        if let Some(ep) = endpoint {
            let _ = tokio::time::timeout(Duration::from_millis(200), ep.wait_idle()).await;
        }
    }

    /// Handles one answer.
    async fn on_answer(
        &self,
        node: &Arc<Node>,
        answer: Answer,
        rejoining: &mut Option<Rejoining>,
        silent: &mut bool,
    ) -> Next {
        let head = self.head.as_str();
        let reply = match answer.reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                if !std::mem::replace(silent, true) {
                    tracing::warn!("the head at {head} does not answer ({e}); retrying");
                }
                // A closed connection is dialed again at the next tick.
                if let Some(r) = rejoining.as_mut().filter(|_| answer.register) {
                    r.sent = false;
                }
                return Next::Go;
            }
            Err(_) => {
                if !std::mem::replace(silent, true) {
                    tracing::warn!(
                        "the head at {head} did not answer a heartbeat within {:?}; \
                         still trying",
                        self.shared.config.health_check_timeout
                    );
                }
                if let Some(r) = rejoining.as_mut().filter(|_| answer.register) {
                    r.sent = false;
                }
                return Next::Go;
            }
        };
        if std::mem::replace(silent, false) {
            tracing::info!("the head at {head} answers again");
        }
        match (answer.register, reply) {
            (false, PeerReply::View(view)) => {
                self.shared.sync.post_view(answer.seq, view);
                Next::Go
            }
            // An answer to a heartbeat sent before this node joined again.
            (false, PeerReply::Refused { .. }) if answer.id != node.id() || rejoining.is_some() => {
                Next::Go
            }
            (false, PeerReply::Refused { reason }) => {
                // Declared dead while running: join again as a new node (the old one stays dead).
                let new = NodeId::random();
                let n = node.clone();
                let _ = tokio::task::spawn_blocking(move || n.rejoined(new)).await;
                *rejoining = Some(Rejoining {
                    old: answer.id,
                    reason,
                    sent: false,
                });
                Next::SendNow
            }
            (true, PeerReply::View(view)) => {
                let index = view
                    .nodes
                    .iter()
                    .find(|n| n.id == answer.id)
                    .map_or(0, |n| n.index);
                self.shared.sync.post_view(answer.seq, view);
                if let Some(r) = rejoining.take() {
                    tracing::info!(
                        "joined the head at {head} again as node {} (index \
                         {index}); it had refused node {}: {}",
                        answer.id,
                        r.old,
                        r.reason
                    );
                }
                Next::Go
            }
            (true, PeerReply::Refused { reason } | PeerReply::Error { message: reason }) => {
                tracing::warn!(
                    "the head at {head} refused to register this node again: \
                     {reason}; stopping"
                );
                node.stop();
                Next::Stop
            }
            (_, other) => {
                tracing::warn!("unexpected answer from the head at {head}: {other:?}");
                if let Some(r) = rejoining.as_mut().filter(|_| answer.register) {
                    r.sent = false;
                }
                Next::Go
            }
        }
    }

    /// Dials the head from the heartbeats' own endpoint (made on first use, on this thread, so
    /// its I/O runs here).
    async fn connect(&self, endpoint: &mut Option<quinn::Endpoint>) -> Result<quinn::Connection> {
        let config = &self.shared.config;
        let ep = match endpoint {
            Some(ep) => ep.clone(),
            None => {
                let bind: SocketAddr = if resolve(&self.head).await?.is_ipv6() {
                    SocketAddr::from(([0u16; 8], 0))
                } else {
                    SocketAddr::from(([0u8; 4], 0))
                };
                let mut ep = quinn::Endpoint::client(bind)
                    .map_err(|e| RayletError::io("opening the health-check endpoint", e))?;
                ep.set_default_client_config(tls::client_config()?);
                endpoint.insert(ep).clone()
            }
        };
        dial(&ep, &self.head, &config.name, &config.secret).await
    }
}

/// What the heartbeat loop does after an answer.
enum Next {
    Go,
    /// Send the next request now (a `Register` after a refusal).
    SendNow,
    Stop,
}
