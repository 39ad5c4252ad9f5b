//! A driver program for the runtime tests that need processes of their own: a standalone node,
//! drivers attaching to it, output forwarding, and what is left after a driver exits or is
//! killed. Usage: `oxray-test-driver MODE [ARGS]`; it prints `key value` lines.

use std::time::Duration;

use oxray::prelude::*;

mod cluster_work;
mod node_core;
#[path = "../pid_exit.rs"]
mod pid_exit;
mod spill;

#[oxray::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[oxray::remote]
fn worker_pid() -> u32 {
    std::thread::sleep(Duration::from_millis(50));
    std::process::id()
}

/// Writes its pid to `path`, then sleeps: the driver kills it mid-task. On a later attempt (the
/// file already exists) it returns at once.
#[oxray::remote]
fn killable(path: String) -> u32 {
    if std::path::Path::new(&path).exists() {
        return std::process::id();
    }
    std::fs::write(&path, std::process::id().to_string()).expect("write pid file");
    std::thread::sleep(Duration::from_secs(60));
    0
}

/// Puts a value in this worker, which owns it, and returns a ref to it with the worker's pid.
#[oxray::remote]
fn owned_elsewhere() -> (u32, Vec<ObjectRef<i64>>) {
    (std::process::id(), vec![oxray::put(&42i64).expect("put")])
}

#[oxray::remote]
fn nap(seconds: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(seconds));
    seconds
}

#[oxray::remote]
fn shout(word: String) -> usize {
    println!("hello from a task: {word}");
    eprintln!("warning from a task: {word}");
    word.len()
}

/// A task-made object that lives in the store (too big to travel inline).
#[oxray::remote]
fn make_big(n: u64) -> Vec<f64> {
    vec![1.0; n as usize]
}

/// A counter actor that outlives (or not) the driver that made it.
#[oxray::actor]
pub struct Keeper {
    n: i64,
}

#[oxray::actor]
impl Keeper {
    fn new(start: i64) -> Self {
        Keeper { n: start }
    }

    fn add(&mut self, by: i64) -> i64 {
        self.n += by;
        self.n
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let result = match mode {
        "raylet" => run_raylet(
            args.get(2).cloned().unwrap_or_default(),
            args.get(3..).unwrap_or_default(),
        ),
        "sum" => sum(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100)),
        "print" => print(),
        "pids" => pids(args.get(2).map(String::as_str) == Some("hang")),
        "nap" => nap_and_report(),
        "kill-retry" => kill_worker_mid_task(3),
        "kill-noretry" => kill_worker_mid_task(0),
        "owner-died" => owner_died(),
        "force-cancel" => force_cancel(),
        "owner-died-stored" => owner_died_stored(),
        "detached-make" => detached_make(),
        "store-free" => store_free(),
        "detached-find" => detached_find(),
        "cluster-work" => cluster_work::run(),
        "cluster-fault" => cluster_work::fault(),
        "direct-calls" => cluster_work::direct_calls(),
        "direct-other-job" => cluster_work::direct_other_job(),
        "direct-faults" => cluster_work::direct_faults(),
        "direct-hang" => cluster_work::direct_hang(),
        "placement" => cluster_work::placement(),
        "broadcast" => {
            cluster_work::broadcast(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(256))
        }
        "spread-count" => cluster_work::spread_count(
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(3200),
            args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0),
        ),
        "strategies" => cluster_work::strategies(
            args.get(2).map(String::as_str).unwrap_or(""),
            args.get(3).map(String::as_str).unwrap_or(""),
        ),
        "named-elsewhere" => cluster_work::named_elsewhere(),
        "if-exists" => cluster_work::if_exists(
            args.get(2).map(String::as_str).unwrap_or("racer"),
            args.get(3).is_some_and(|a| a == "kill"),
        ),
        "own-elsewhere" => cluster_work::own_elsewhere(),
        "cluster-rebuild" => cluster_work::rebuild(),
        "cluster-rebuild-chain" => cluster_work::rebuild_chain(),
        "cluster-larger" => cluster_work::larger(),
        "cluster-rebuild-borrowed" => cluster_work::rebuild_borrowed(),
        "stalled" => node_core::stalled(),
        "busy" => node_core::busy(
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(200),
            args.get(3).and_then(|n| n.parse().ok()).unwrap_or(20),
        ),
        "steady" => node_core::steady(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(30)),
        "restart-unborn" => node_core::restart_unborn(),
        "gpu-lost" => node_core::gpu_lost(),
        "idle" => node_core::idle(),
        "environ" => node_core::environ(),
        "remote-lease-churn" => {
            node_core::remote_lease_churn(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20))
        }
        "queued" => node_core::queued(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100_000)),
        "soak" => node_core::soak(
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(40),
            args.get(3).and_then(|n| n.parse().ok()).unwrap_or(10),
        ),
        "actor-churn" => {
            node_core::actor_churn(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(5000))
        }
        "many-actors" => {
            node_core::many_actors(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100))
        }
        "spill" => spill::spill(),
        "spill-off" => spill::spill_off(),
        "larger" => spill::larger(),
        "memory" => spill::memory(),
        "cycles" => spill::cycles(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(5)),
        "probe-socket" => node_core::probe_socket(args.get(2).map(String::as_str).unwrap_or("")),
        "lease-churn" => {
            node_core::lease_churn(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20))
        }
        _ => {
            eprintln!(
                "usage: oxray-test-driver raylet SESSION | sum N | print | pids [hang] | nap | \
                 kill-retry | kill-noretry | owner-died | detached-make | detached-find | store-free | \
                 cluster-work | cluster-fault | named-elsewhere | own-elsewhere | \
                 cluster-rebuild | stalled | busy N MS | steady SECS | restart-unborn | gpu-lost"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        println!("error {e}");
        std::process::exit(1);
    }
}

/// `raylet SESSION [key=value ..]`: a standalone node; with `head_port=P` (0: any) a cluster
/// head, with `join=HOST:PORT` a member. Other keys: `cpus`, `resources` (`a:1;b:2`), `secret`,
/// `cluster`, `period_ms` (100), `threshold` (missed checks before death, 30), `timeout_ms`
/// (3000), `store_mb`. Prints `address ..` and, in a cluster, `peer ..`.
fn run_raylet(session: String, opts: &[String]) -> oxray::Result<()> {
    let bad = |message: String| Error::Config { message };
    let kv: std::collections::HashMap<&str, &str> =
        opts.iter().filter_map(|o| o.split_once('=')).collect();
    let get = |k: &str| kv.get(k).copied();
    let num = |k: &str, default: f64| -> oxray::Result<f64> {
        get(k).map_or(Ok(default), |v| {
            v.parse().map_err(|_| bad(format!("{k}={v}")))
        })
    };
    let mut config = oxray_raylet::RayletConfig {
        num_cpus: num("cpus", 2.0)?,
        object_store_memory: (num("store_mb", 256.0)? as u64) << 20,
        session,
        prestart_workers: 0,
        ..Default::default()
    };
    for r in get("resources")
        .unwrap_or("")
        .split(';')
        .filter(|r| !r.is_empty())
    {
        let (name, amount) = r
            .split_once(':')
            .ok_or_else(|| bad(format!("resource {r}")))?;
        let amount = amount.parse().map_err(|_| bad(format!("resource {r}")))?;
        config.resources.push((name.to_owned(), amount));
    }
    let secret = get("secret").unwrap_or("").as_bytes().to_vec();
    let name = get("cluster").unwrap_or("test");
    let mut cluster = match (get("head_port"), get("join")) {
        (Some(port), _) => Some(oxray_raylet::cluster::ClusterConfig::head(
            name,
            secret,
            "127.0.0.1",
            port.parse().map_err(|_| bad(format!("head_port={port}")))?,
        )),
        (None, Some(head)) => Some(oxray_raylet::cluster::ClusterConfig::member(
            name,
            secret,
            "127.0.0.1",
            0,
            head,
        )),
        (None, None) => None,
    };
    if let Some(c) = &mut cluster {
        c.health_check_period = Duration::from_millis(num("period_ms", 100.0)? as u64);
        c.health_check_timeout = Duration::from_millis(num("timeout_ms", 3000.0)? as u64);
        c.health_check_failure_threshold = num("threshold", 30.0)? as u32;
    }
    config.cluster = cluster;
    let mut raylet = oxray_raylet::Raylet::start(config).map_err(|e| bad(e.to_string()))?;
    println!("address {}", raylet.address());
    if let Some(peer) = raylet.peer_address() {
        println!("peer {peer}");
    }
    raylet.wait();
    Ok(())
}

fn sum(n: i64) -> oxray::Result<()> {
    let cluster = oxray::init()?;
    println!("embedded {}", cluster.is_embedded());
    let refs: Vec<ObjectRef<i64>> = (0..n).map(square::remote).collect::<Result<_>>()?;
    let total: i64 = oxray::get_all(&refs)?.iter().sum();
    println!("sum {total}");
    Ok(())
}

fn print() -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(1))?;
    let n = oxray::get(&shout::remote("oxray".to_string())?)?;
    // Output lines travel separately from results: give them a moment to arrive.
    std::thread::sleep(Duration::from_millis(300));
    println!("len {n}");
    Ok(())
}

/// Waits on a 60 s task and reports how the get ended (the test kills the node meanwhile).
fn nap_and_report() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let r = nap::remote(60)?;
    println!("submitted");
    match oxray::get(&r) {
        Ok(v) => println!("result {v}"),
        Err(e) => println!("get-error {e}"),
    }
    Ok(())
}

fn kill(pid: u32) {
    // SAFETY: kill(2) on the pid of a worker of this driver's own node.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Two parties meet: each call returns once both are inside, with both callers' pids.
#[oxray::actor]
pub struct Gate {
    pids: std::sync::Mutex<Vec<u32>>,
    barrier: std::sync::Barrier,
}

#[oxray::actor]
impl Gate {
    fn new() -> Self {
        Gate {
            pids: std::sync::Mutex::new(Vec::new()),
            barrier: std::sync::Barrier::new(2),
        }
    }

    fn meet(&self, pid: u32) -> Vec<u32> {
        self.pids.lock().expect("lock").push(pid);
        self.barrier.wait();
        self.pids.lock().expect("lock").clone()
    }
}

/// Meets the driver at `gate`, then works for 10 s.
#[oxray::remote]
fn gated_sleep(gate: ActorHandle<Gate>) -> u32 {
    oxray::get(&gate.meet(std::process::id()).expect("call")).expect("met");
    std::thread::sleep(Duration::from_secs(10));
    std::process::id()
}

/// Force-cancels a running 10 s task on a one-CPU node: reports how its get ended, how soon
/// the next task had the CPU, and whether the task's worker process is gone.
fn force_cancel() -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(1))?;
    let gate = Gate::options().max_concurrency(2).remote()?;
    let r = gated_sleep::remote(gate.clone())?;
    // Returns once the task is inside its run.
    let pids = oxray::get(&gate.meet(0)?)?;
    let victim = pids.into_iter().find(|p| *p != 0).unwrap_or(0);
    let cancelled = std::time::Instant::now();
    oxray::cancel_with(
        &r,
        oxray::CancelOptions {
            force: true,
            ..Default::default()
        },
    )?;
    match oxray::get(&r) {
        Err(oxray::Error::Cancelled) => println!("get cancelled"),
        other => println!("get {other:?}"),
    }
    // The only CPU is free again: the next task runs now, not in 10 s.
    let next = square::remote(7)?;
    println!("next {}", oxray::get(&next)?);
    println!("next-after-ms {}", cancelled.elapsed().as_millis());
    println!(
        "victim-gone {}",
        victim != 0 && crate::pid_exit::exits_within(victim, Duration::from_secs(10))
    );
    Ok(())
}

/// Runs a task, kills its worker mid-task, and reports how the get ended.
fn kill_worker_mid_task(retries: u32) -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(2))?;
    let path = std::env::temp_dir().join(format!("oxray-kill-{}-{retries}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let r = killable::options()
        .max_retries(retries)
        .remote(path.display().to_string())?;
    let mut victim = 0;
    for _ in 0..1000 {
        if let Some(p) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            victim = p;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("victim {victim}");
    kill(victim);
    match oxray::get_timeout(&r, Duration::from_secs(30)) {
        Ok(pid) => println!("result {pid}"),
        Err(e) => println!("get-error {e:?}"),
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Gets a ref owned by a worker, kills that worker, then gets the ref's value.
fn owner_died() -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(1))?;
    let (pid, refs) = oxray::get(&owned_elsewhere::remote()?)?;
    kill(pid);
    std::thread::sleep(Duration::from_millis(200));
    match oxray::get_timeout(&refs[0], Duration::from_secs(20)) {
        Ok(v) => println!("result {v}"),
        Err(e) => println!("get-error {e:?}"),
    }
    Ok(())
}

/// Puts an 8 MiB object in this worker, which owns it, and returns a ref to it with the pid.
#[oxray::remote]
fn owned_big_elsewhere() -> (u32, Vec<ObjectRef<Vec<u8>>>) {
    (
        std::process::id(),
        vec![oxray::put(&vec![7u8; 8 << 20]).expect("put")],
    )
}

/// `owner-died-stored`: a stored object owned by a worker, read once here (so its place is
/// known), then its owner is killed: the next read says the owner died (`get-error`).
fn owner_died_stored() -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(2))?;
    let (pid, refs) = oxray::get(&owned_big_elsewhere::remote()?)?;
    println!("first-read {}", oxray::get_view(&refs[0])?.len());
    let id = refs[0].id().to_string();
    kill(pid);
    // The node frees a dead owner's objects when it sees the process go.
    let started = std::time::Instant::now();
    while oxray::memory_summary()?.objects.iter().any(|o| o.id == id)
        && started.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    match oxray::get(&refs[0]) {
        Ok(v) => println!("result {}", v.len()),
        Err(e) => println!("get-error {e:?}"),
    }
    Ok(())
}

/// Puts 64 MiB, has a task make 32 MB, drops both; prints store use at each step. Its own
/// node, so no other test's objects come and go meanwhile.
fn store_free() -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(1))?;
    let used = || oxray::status().map(|s| s.store_used);
    println!("before {}", used()?);
    let big = oxray::put(&vec![1u8; 64 << 20])?;
    let task_made = make_big::remote(4_000_000)?;
    oxray::get_view(&task_made)?;
    println!("with {}", used()?);
    drop(big);
    drop(task_made);
    let start = std::time::Instant::now();
    let mut after = used()?;
    while after > 1 << 20 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        after = used()?;
    }
    println!("after {after}");
    Ok(())
}

/// Makes a detached named actor and a non-detached named one, adds to both, prints their pids.
fn detached_make() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let keeper = Keeper::options()
        .name("keeper")
        .namespace("shared")
        .lifetime(oxray::Lifetime::Detached)
        .remote(40)?;
    let temp = Keeper::options()
        .name("temp")
        .namespace("shared")
        .remote(0)?;
    println!("added {}", oxray::get(&keeper.add(1)?)?);
    println!("keeper-pid {}", oxray::get(&keeper.pid()?)?);
    println!("temp-pid {}", oxray::get(&temp.pid()?)?);
    Ok(())
}

/// Finds the detached actor a previous driver made, adds to it; reports whether `temp` is gone.
fn detached_find() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let keeper = oxray::get_actor_in::<Keeper>("keeper", "shared")?;
    println!("added {}", oxray::get(&keeper.add(1)?)?);
    println!("keeper-pid {}", oxray::get(&keeper.pid()?)?);
    match oxray::get_actor_in::<Keeper>("temp", "shared") {
        Ok(_) => println!("temp found"),
        Err(e) => println!("temp-error {e}"),
    }
    oxray::kill(&keeper)?;
    Ok(())
}

fn pids(hang: bool) -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(2))?;
    let refs: Vec<ObjectRef<u32>> = (0..4)
        .map(|_| worker_pid::remote())
        .collect::<Result<_>>()?;
    let mut pids = oxray::get_all(&refs)?;
    pids.sort_unstable();
    pids.dedup();
    for p in pids {
        println!("worker-pid {p}");
    }
    println!("ready");
    if hang {
        std::thread::sleep(Duration::from_secs(600));
    }
    Ok(())
}
