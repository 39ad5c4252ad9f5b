//! `Config`: how `init_with` starts or attaches to a cluster.

/// Options for [`init_with`](crate::init_with). Unset fields take the defaults: attach to
/// `OXRAY_ADDRESS` if set, else embed a single-node cluster with one CPU slot per core and an
/// object store of 30% of RAM.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub(crate) num_cpus: Option<f64>,
    pub(crate) object_store_memory: Option<u64>,
    pub(crate) namespace: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) resources: Vec<(String, f64)>,
    pub(crate) spilling: Option<bool>,
    pub(crate) store_full_wait: Option<std::time::Duration>,
    pub(crate) spill_dir: Option<std::path::PathBuf>,
    pub(crate) dashboard_port: Option<u16>,
}

impl Config {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// CPU slots of the embedded node (default: the machine's cores).
    pub fn num_cpus(mut self, n: impl Into<f64>) -> Self {
        self.num_cpus = Some(n.into());
        self
    }

    /// Object store size of the embedded node, in bytes (default: 30% of RAM).
    pub fn object_store_memory(mut self, bytes: u64) -> Self {
        self.object_store_memory = Some(bytes);
        self
    }

    /// Whether the embedded node spills objects to disk when its store is full (default: on).
    /// Off, a `put` that does not fit fails with `Error::ObjectStoreFull`.
    pub fn spilling(mut self, on: bool) -> Self {
        self.spilling = Some(on);
        self
    }

    /// How long a `put` (or a task's result) waits for room in a full store before it fails
    /// with `Error::ObjectStoreFull`, when spilling is off (default: 1 s; readers may release
    /// what they hold meanwhile). With spilling on, an object that cannot fit is made in a
    /// file instead, and nothing waits.
    pub fn store_full_wait(mut self, wait: std::time::Duration) -> Self {
        self.store_full_wait = Some(wait);
        self
    }

    /// Where the embedded node spills objects (default: its session directory under
    /// `$TMPDIR/oxray-<uid>`). A directory of the node's own is made inside and removed at
    /// shutdown.
    pub fn spill_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// Serve the embedded node's dashboard on `127.0.0.1:port` (0: any free port; default:
    /// none, so tests and scripts that start many embedded nodes do not fight over a port).
    /// [`Cluster::dashboard`](crate::Cluster::dashboard) gives its address with its token.
    /// Needs the `dashboard` feature (on by default).
    pub fn dashboard(mut self, port: u16) -> Self {
        self.dashboard_port = Some(port);
        self
    }

    /// A custom resource of the embedded node, e.g. `("gpu", 1.0)`.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.push((name.to_owned(), amount));
        self
    }

    /// The namespace for named actors (default: one per driver).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Attach to the node at `address` (what `oxray start` printed) instead of embedding one.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }
}
