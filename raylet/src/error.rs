//! The raylet's error type.

/// Why the raylet could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RayletError {
    /// The object store could not be created.
    #[error("object store: {0}")]
    Store(#[from] oxray_object_store::StoreError),
    /// A socket or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("bad raylet configuration: {0}")]
    Config(String),
    /// A cluster config file is malformed or inconsistent.
    #[error("{path}{}: {reason}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    ClusterFile {
        /// The file.
        path: String,
        /// The line the problem is on, when known.
        line: Option<usize>,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A private directory or file is unsafe to use (see [`crate::files`]): the message names
    /// the path and the fix.
    #[error("{0}")]
    Files(String),
    /// A request about submitted jobs was refused (an unknown job, a bad upload): the message
    /// says why and what to do.
    #[error("{0}")]
    Job(String),
    /// The raylet is stopping.
    #[error("the raylet is stopping")]
    Stopping,
    /// Nothing answered at a cluster peer's address (not started yet, gone, or no route).
    #[error("cluster peer {peer}: {reason}")]
    Unreachable {
        /// The peer's address.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// A cluster peer was refused, refused us, or broke the protocol.
    #[error("cluster peer {peer}: {reason}")]
    Peer {
        /// The peer's address.
        peer: String,
        /// What went wrong.
        reason: String,
    },
}

impl RayletError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RayletError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The raylet's result type.
pub type Result<T, E = RayletError> = std::result::Result<T, E>;
