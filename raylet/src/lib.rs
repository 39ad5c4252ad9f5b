//! # oxray-raylet
//!
//! The node daemon of oxray, as a library (so a driver can embed a single-node cluster) and as
//! the `raylet` binary. One raylet per node: it owns the node's
//! `Store`, serves local clients (drivers and workers) on a Unix
//! socket, grants worker leases against the node's resources, starts, reuses and reaps worker
//! processes, and forwards their output to their driver.
//!
//! The raylet is not on the per-task path: a submitter leases a worker once and then pushes
//! tasks straight to it (see `oxray-core-worker`). It handles lease requests, object store
//! operations (create, seal, pin, release, delete) and status.
//!
//! - [`config`]: what a raylet offers (CPUs, custom resources, store size).
//! - `node`: the node core: `NodeState`, a state machine (events in, effects out, no I/O, tested
//!   in memory) split by concern (dispatch, scheduler, actors, pool, report), and `Node`, the I/O
//!   layer that runs each event under the state lock and carries out its effects after.
//! - `outbox`: per-connection outboxes, so a client that stops reading stalls only itself.
//! - `server`: the socket server; [`workers`]: starting, reaping and killing worker processes.
//! - `submitted_jobs`: driver programs handed to the node with `oxray job submit`, run here.
//! - [`files`]: the state and session directories and how they are kept from other users.
//! - [`dashboard`]: the head's web page and the cluster report behind it (and behind
//!   `oxray status --json`); [`timeline`]: the runs workers report, as Chrome trace JSON.
//! - [`cluster`]: QUIC to other raylets, and on the head the control service (node table,
//!   health checks, cluster view); [`cluster_file`]: the TOML file `oxray up` reads.
//!
//! Nothing a client sends can make the raylet panic: a malformed frame drops that connection.

mod client;
pub mod cluster;
pub mod cluster_file;
pub mod config;
pub mod dashboard;
mod error;
pub mod files;
pub mod job_client;
pub mod log_watch;
pub mod logging;
mod node;
mod outbox;
pub mod server;
mod spill;
mod submitted_jobs;
pub mod timeline;
pub mod tool;
pub mod workers;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use oxray_object_store::{ArenaOptions, Store};

pub use config::RayletConfig;
pub use error::{RayletError, Result};
pub use oxray_common::peer::{self, ClusterView, NodeInfo, NodeLoad};
pub use oxray_common::protocol::NodeStatus;

/// The directory of a session's directory that holds its workers' output
/// (`worker-PID.log` each), see [`worker_log`].
pub const WORKER_LOGS: &str = "workers";

/// Where the node of session `session` keeps the output of its worker `pid`.
pub fn worker_log(session: &str, pid: u32) -> std::path::PathBuf {
    files::session_dir(session)
        .join(WORKER_LOGS)
        .join(format!("worker-{pid}.log"))
}

/// A running raylet. Dropping it stops the raylet and kills its workers.
pub struct Raylet {
    node: Arc<node::Node>,
    acceptor: Option<JoinHandle<()>>,
    cluster: Option<cluster::Cluster>,
    #[cfg(feature = "dashboard")]
    dashboard: Option<dashboard::Server>,
    /// `shutdown` ran (it runs once; `drop` calls it too).
    shut_down: bool,
}

impl Raylet {
    /// Starts a raylet: creates the object store (a memfd, so nothing is left behind however the
    /// process ends), listens on the session's socket, claims the session's directory when in a
    /// cluster (see [`files`]; directories of dead nodes are swept first), and serves clients on
    /// background threads. Session and cluster names are checked first ([`files::check_name`]).
    pub fn start(config: RayletConfig) -> Result<Raylet> {
        // A driver's embedded node speaks up only for warnings; a standalone one logs its life.
        logging::init(if config.embedded { "warn" } else { "info" });
        if config.num_cpus.is_nan() || config.num_cpus < 0.0 {
            return Err(RayletError::Config(format!(
                "num_cpus must be zero or more, not {}",
                config.num_cpus
            )));
        }
        files::check_name("session", &config.session).map_err(RayletError::Config)?;
        if let Some(c) = &config.cluster {
            files::check_name("cluster name", &c.name).map_err(RayletError::Config)?;
        }
        files::sweep_stale_sessions();
        let mut opts = ArenaOptions::new(config.object_store_memory);
        opts.memfd = true;
        opts.name_prefix = "oxray-object-store".into();
        let store = Store::new(&opts)?;
        let cluster_config = config.cluster.clone();
        let node = node::Node::new(config, store)
            .map_err(|e| RayletError::io("starting the raylet's spawner and event loop", e))?;
        let listener = server::bind(&node.address)?;
        // Cluster nodes keep files (executables fetched from other nodes), standalone nodes
        // their workers' output and submitted jobs, so they have a session directory (a
        // driver's embedded node, often never shut down, leaves nothing). After binding: holding the session's socket makes this process its owner.
        if node.config.cluster.is_some() || !node.config.embedded {
            let dir =
                files::claim_session_dir(&node.config.session, true).map_err(RayletError::Files)?;
            // A standalone node keeps each worker's output too (`oxray logs --worker PID`); a
            // driver's embedded node prints it in the driver, which is where it is looked for.
            let workers = dir.join(WORKER_LOGS);
            files::private_dir(&workers).map_err(RayletError::Files)?;
            let _ = node.worker_logs.set(workers);
        }
        // Joining happens after binding the local socket (so the advertised address works) and
        // before serving, so a refused node fails its start instead of running alone.
        let cluster = match cluster_config {
            Some(c) => Some(cluster::Cluster::start(c, &node)?),
            None => None,
        };
        let acceptor = {
            let node = node.clone();
            std::thread::Builder::new()
                .name("oxray-raylet-accept".into())
                .spawn(move || server::accept_loop(node, listener))
                .map_err(|e| RayletError::io("starting the raylet", e))?
        };
        tracing::info!(
            address = %node.address,
            pid = std::process::id(),
            cpus = node.config.num_cpus,
            store_bytes = node.config.object_store_memory,
            "node started"
        );
        Ok(Raylet {
            shut_down: false,
            #[cfg(feature = "dashboard")]
            dashboard: start_dashboard(&node),
            node,
            acceptor: Some(acceptor),
            cluster,
        })
    }

    /// The address clients attach with (`unix:@SESSION`).
    pub fn address(&self) -> &str {
        &self.node.address
    }

    /// Where other raylets reach this one (`host:port`), if it is part of a cluster.
    pub fn peer_address(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.peer_address.as_str())
    }

    /// The node's current state.
    pub fn status(&self) -> NodeStatus {
        self.node.status()
    }

    /// Blocks until a client asks the raylet to stop (`oxray stop`).
    pub fn wait(&mut self) {
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }

    /// Stops serving and kills every worker.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        self.node.stopping.store(true, Ordering::SeqCst);
        server::wake_acceptor(&self.node.address);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        #[cfg(feature = "dashboard")]
        drop(self.dashboard.take());
        self.node.submitted_jobs.stop_all();
        self.node.kill_all_workers();
        // After the workers are reaped (their exits are events on the loop): every connection
        // left is let go of.
        self.node.events().stop();
        // Spill files go with the node.
        self.node.spill.stop();
        self.cluster = None;
        tracing::info!(address = %self.node.address, "node stopped");
        let _ = std::fs::remove_dir_all(self.node.config.session_dir());
    }
}

/// Starts the dashboard if the node's configuration asks for one. A port in use is logged,
/// not fatal: the node itself works without it.
#[cfg(feature = "dashboard")]
fn start_dashboard(node: &node::Node) -> Option<dashboard::Server> {
    let port = node.config.dashboard_port?;
    match dashboard::Server::start(port, &node.address) {
        Ok(server) => {
            let _ = node.dashboard.set(server.url().to_owned());
            // The token stays out of the log: `oxray status` shows the whole address.
            let at = server.url().split("/?").next().unwrap_or_default();
            tracing::info!("dashboard serving at {at} (`oxray status` shows its address)");
            Some(server)
        }
        Err(e) => {
            tracing::warn!("no dashboard: {e}");
            None
        }
    }
}

impl Drop for Raylet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(session: &str) -> RayletConfig {
        RayletConfig {
            session: session.to_owned(),
            object_store_memory: 64 << 20,
            prestart_workers: 0,
            num_cpus: 1.0,
            ..RayletConfig::default()
        }
    }

    #[test]
    fn traversal_session_names_are_refused() {
        for bad in ["../../../tmp/evil", "a/b", "..", ""] {
            let err = Raylet::start(config(bad)).err().expect(bad).to_string();
            assert!(err.contains("is not allowed"), "{err}");
        }
        let mut c = config(&format!("oxray-name-test-{}", std::process::id()));
        c.cluster = Some(cluster::ClusterConfig::head(
            "../evil",
            b"0123456789abcdef0123".to_vec(),
            "127.0.0.1",
            0,
        ));
        let err = Raylet::start(c)
            .err()
            .expect("bad cluster name")
            .to_string();
        assert!(
            err.contains("cluster name") && err.contains("is not allowed"),
            "{err}"
        );
    }

    #[test]
    fn a_link_planted_at_the_session_dir_is_refused_and_not_followed() {
        let session = format!("oxray-link-test-{}", std::process::id());
        files::ensure_state_dir().expect("state dir");
        let target = std::env::temp_dir().join(format!("{session}-target"));
        std::fs::create_dir_all(&target).expect("target");
        let planted = files::session_dir(&session);
        let _ = std::fs::remove_file(&planted);
        std::os::unix::fs::symlink(&target, &planted).expect("symlink");
        let mut c = config(&session);
        c.cluster = Some(cluster::ClusterConfig::head(
            "t",
            b"0123456789abcdef0123".to_vec(),
            "127.0.0.1",
            0,
        ));
        let result = Raylet::start(c);
        let _ = std::fs::remove_file(&planted);
        let wrote_through = target.join("pid").exists();
        let _ = std::fs::remove_dir_all(&target);
        let err = result
            .err()
            .expect("a planted link must be refused")
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!wrote_through, "the raylet wrote through the link");
    }
}
