//! Raylet configuration.

use oxray_common::resources::{Resources, CPU};

/// How to start a raylet.
#[derive(Debug, Clone)]
pub struct RayletConfig {
    /// CPUs to offer (default: the machine's).
    pub num_cpus: f64,
    /// Custom resources besides CPU.
    pub resources: Vec<(String, f64)>,
    /// Object store size in bytes (default: 30% of RAM, as Ray).
    pub object_store_memory: u64,
    /// Session name: names the sockets and the session directory (default: derived from pid
    /// and time); 1 to 100 letters, digits, `-`, `_` or `.` (see [`crate::files::check_name`]).
    pub session: String,
    /// Whether this raylet runs inside a driver (it then ends with that driver).
    pub embedded: bool,
    /// Workers to start at once so the first tasks need not wait (default: `num_cpus`).
    pub prestart_workers: usize,
    /// The executable workers run when no driver has named one (embedded: this process's).
    pub default_exe: Option<String>,
    /// Membership of a multi-node cluster (`None`: a single node, no network at all).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Dead actors kept in the actor table (for `status` and for the cause a late caller gets);
    /// older ones are forgotten. Ray keeps 1 000 (`maximum_gcs_destroyed_actor_cached_count`).
    pub max_dead_actors: usize,
    /// Whether primary copies are spilled to disk when the store is full (default: on). Off, a
    /// create that does not fit fails with `ObjectStoreFull`.
    pub spilling: bool,
    /// Where spilled objects go (default: the node's session directory). A directory of the
    /// node's own is made inside and removed when the node stops.
    pub spill_dir: Option<std::path::PathBuf>,
    /// How long a `put` or a task result waits for room when the store is full and spilling
    /// is off (readers may release what they hold) before it is `ObjectStoreFull` (default:
    /// 1 s). With spilling on, a create that cannot fit is made in a file instead.
    pub store_full_wait: std::time::Duration,
    /// The port of the dashboard this node serves on 127.0.0.1 (`None`: no dashboard; 0: any
    /// free port). The address with its token is in [`crate::NodeStatus::dashboard`].
    pub dashboard_port: Option<u16>,
}

/// Default [`RayletConfig::store_full_wait`].
pub const DEFAULT_STORE_FULL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Default [`RayletConfig::max_dead_actors`].
pub const DEFAULT_MAX_DEAD_ACTORS: usize = 1000;

impl Default for RayletConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        RayletConfig {
            num_cpus: cpus as f64,
            resources: Vec::new(),
            object_store_memory: default_store_memory(),
            session: default_session(),
            embedded: false,
            prestart_workers: cpus,
            default_exe: None,
            cluster: None,
            max_dead_actors: DEFAULT_MAX_DEAD_ACTORS,
            spilling: true,
            spill_dir: None,
            store_full_wait: DEFAULT_STORE_FULL_WAIT,
            dashboard_port: None,
        }
    }
}

impl RayletConfig {
    /// The node's total resources.
    pub fn total_resources(&self) -> Resources {
        let mut r = Resources::new();
        r.set(CPU, self.num_cpus);
        for (name, amount) in &self.resources {
            r.set(name, *amount);
        }
        r
    }

    /// The address clients attach with.
    pub fn address(&self) -> String {
        format!("unix:@{}", self.session)
    }

    /// The session's directory, `$TMPDIR/oxray-<uid>/sessions/<session>` (its pid file and the
    /// executables fetched from other nodes; see [`crate::files`]), made by cluster nodes only;
    /// removed when the raylet stops.
    pub fn session_dir(&self) -> std::path::PathBuf {
        crate::files::session_dir(&self.session)
    }
}

/// 30% of physical memory, at least 64 MiB.
pub fn default_store_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(4 << 20);
    (total_kib * 1024 / 10 * 3).max(64 << 20)
}

fn default_session() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("oxray-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}
