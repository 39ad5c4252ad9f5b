//! A member node: joining the head and reporting to it every health-check period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use oxray_common::peer::{PeerReply, PeerRequest};

use super::head::self_info;
use super::{peers, wire, Shared};
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
                    eprintln!(
                        "oxray raylet: waiting for the head at {head} ({reason}); up to {} s",
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
        node: self_info(shared, node, false),
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

/// Reports this node's load every period; the reply is the cluster view. Reconnects when the
/// head is unreachable; stops the node if the head declared it dead.
pub(crate) async fn report_loop(shared: Arc<Shared>, mut conn: quinn::Connection) {
    let config = &shared.config;
    let head = config.head.clone().unwrap_or_default();
    let remember = |conn: &quinn::Connection| {
        *shared.head_conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
    };
    remember(&conn);
    let mut tick = tokio::time::interval(config.health_check_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        let Some(node) = shared.node.upgrade() else {
            return;
        };
        if node.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let req = PeerRequest::Heartbeat {
            node: node.id(),
            load: node.load(),
        };
        let reply = tokio::time::timeout(
            config.health_check_timeout,
            wire::request(&conn, &req, &head),
        )
        .await;
        match reply {
            Ok(Ok(PeerReply::View(view))) => {
                if unreachable_since.take().is_some() {
                    eprintln!("oxray raylet: the head at {head} answers again");
                }
                node.set_cluster_view(view);
            }
            Ok(Ok(PeerReply::Refused { reason })) => {
                eprintln!("oxray raylet: the head at {head} refused this node: {reason}; stopping");
                node.stop();
                return;
            }
            Ok(Ok(other)) => {
                eprintln!("oxray raylet: unexpected answer from the head at {head}: {other:?}");
            }
            Ok(Err(_)) | Err(_) => {
                if unreachable_since.is_none() {
                    eprintln!("oxray raylet: the head at {head} does not answer; retrying");
                    unreachable_since = Some(std::time::Instant::now());
                }
                if let Ok(Ok(c)) = tokio::time::timeout(
                    config.health_check_timeout,
                    peers::connection(&shared, &head),
                )
                .await
                {
                    remember(&c);
                    conn = c;
                }
            }
        }
    }
}
