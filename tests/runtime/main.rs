//! Integration tests of the single-node runtime with real worker processes.
//!
//! Tests in this binary share one embedded cluster (oxray runs one runtime per process); the
//! workers are this test binary, switched into worker mode before `main`. Tests that need a
//! process of their own (shutdown, killed drivers, a standalone node) run `oxray-test-driver`.

mod actors;
mod async_refs;
mod borrowing;
mod cluster;
mod failures;
mod hostile;
mod node_core;
mod objects;
#[path = "../pid_exit.rs"]
mod pid_exit;
mod placement;
mod processes;
mod spill;
mod streams;
mod tasks;

use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Starts the shared cluster once: 2 CPUs, a 1 GiB store, and a custom resource.
pub fn cluster() {
    static CLUSTER: OnceLock<oxray::Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        oxray::init_with(
            oxray::Config::new()
                .num_cpus(2)
                .object_store_memory(1 << 30)
                .resource("slot", 4.0),
        )
        .expect("start the test cluster")
    });
}

/// Loading every CPU on purpose (`node_core`'s 30 s CPU hog) would make the multi-node tests
/// that run beside it miss health checks they do not test. The hog holds this exclusively;
/// tests whose nodes must answer health checks hold it shared, so they never overlap the hog.
static CPU_HOG: RwLock<()> = RwLock::new(());

/// Taken by a test that needs its nodes to answer health checks on time.
pub fn no_cpu_hog() -> RwLockReadGuard<'static, ()> {
    CPU_HOG.read().unwrap_or_else(|p| p.into_inner())
}

/// Taken by the test that loads every CPU.
pub fn cpu_hog() -> RwLockWriteGuard<'static, ()> {
    CPU_HOG.write().unwrap_or_else(|p| p.into_inner())
}

/// Private (anonymous) resident memory of this process, in KiB.
pub fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `f` every 20 ms until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
