//! The error type users see (re-exported as `oxray::Error`).

use std::sync::Arc;
use std::time::Duration;

/// Everything an oxray call can fail with. Each message says what happened and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task panicked or returned `Err`.
    #[error("task {function} failed in worker pid {pid}: {message}")]
    TaskFailed {
        /// The panic message or the error's text.
        message: String,
        /// The function's registered name.
        function: String,
        /// The worker process it ran in.
        pid: u32,
    },
    /// The worker running the task died (killed, crashed, out of memory) on every attempt.
    #[error(
        "task {function} lost its worker process {attempts} time(s) (max_retries exhausted): \
         {message}"
    )]
    WorkerDied {
        /// The function.
        function: String,
        /// How many times it was tried.
        attempts: u32,
        /// What was seen.
        message: String,
    },
    /// The actor is dead.
    #[error("actor died: {message}")]
    ActorDied {
        /// Why.
        message: String,
    },
    /// The object's data is gone (its only copy was lost).
    #[error("object {id} was lost: {message}")]
    ObjectLost {
        /// The object.
        id: String,
        /// Why.
        message: String,
    },
    /// The process that owned the object is gone.
    #[error("the owner of object {id} died, so its value can no longer be read")]
    OwnerDied {
        /// The object.
        id: String,
    },
    /// A `get_timeout` or `wait` timed out.
    #[error("timed out after {waited:?} waiting for objects; they may still arrive")]
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
    /// The task was cancelled.
    #[error("the task was cancelled")]
    Cancelled,
    /// The node's object store has no room.
    #[error("{message}")]
    ObjectStoreFull {
        /// The store's explanation (what holds the memory).
        message: String,
    },
    /// A read asked for another type than the object holds.
    #[error("{message}")]
    TypeMismatch {
        /// The store's explanation.
        message: String,
    },
    /// No remote function of that name in the worker's executable.
    #[error(
        "function {name} is not registered in the worker's executable; workers run the driver's \
         own binary, so this means it was built without that function (rebuild and restart)"
    )]
    FunctionNotFound {
        /// The name looked for.
        name: String,
    },
    /// A live actor of the namespace already has the name asked for (use
    /// `options().get_if_exists(true)` to get it instead, or `get_actor`).
    #[error("{message}")]
    NameTaken {
        /// Which name, in which namespace.
        message: String,
    },
    /// The work's scheduling strategy names a node that is dead, unknown, or never has the
    /// resources it needs (a hard `NodeAffinity`): pick a live node from `oxray::nodes()`, or
    /// make the affinity soft.
    #[error("unschedulable: {message}")]
    Unschedulable {
        /// Which node, and why it cannot run the work.
        message: String,
    },
    /// A placement group was removed (or never existed) while work waited for it.
    #[error("placement group: {message}")]
    PlacementGroup {
        /// Which group, and what happened to it.
        message: String,
    },
    /// Bad configuration or arguments.
    #[error("configuration: {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The runtime is not running.
    #[error("oxray is not initialized: call oxray::init() first")]
    NotInitialized,
    /// The connection to the node's raylet broke.
    #[error("lost the connection to the raylet: {message}")]
    RayletDied {
        /// What was seen.
        message: String,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

impl From<oxray_object_store::StoreError> for Error {
    fn from(e: oxray_object_store::StoreError) -> Self {
        use oxray_object_store::StoreError as S;
        match e {
            S::ObjectStoreFull { .. } | S::ObjectTooLarge { .. } => Error::ObjectStoreFull {
                message: e.to_string(),
            },
            S::TypeMismatch { .. } | S::Corrupt { .. } => Error::TypeMismatch {
                message: e.to_string(),
            },
            S::ObjectNotFound(id) => Error::ObjectLost {
                id: id.to_string(),
                message: "it is not in the node's object store".into(),
            },
            S::Io { context, source } => Error::io(context, source),
            other => Error::Config {
                message: other.to_string(),
            },
        }
    }
}

/// The result type of oxray calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
