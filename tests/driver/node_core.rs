//! Drivers for the node-core fault tests (`tests/runtime/node_core.rs`): a driver that gets
//! stopped with work in flight, steady work while the CPUs are hogged, an actor whose restarted
//! worker is killed before it registers, and work needing a resource whose only node died.
//! Each prints `key value` lines the test checks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

use oxray::prelude::*;

use crate::cluster_work::Tally;
use crate::Keeper;

/// Prints `lines` lines of ~100 bytes to stderr (which the raylet forwards to the driver), in
/// bursts of 100 with a short pause, so the output flows steadily for a second or more.
#[oxray::remote]
fn chatty(lines: u64) -> u64 {
    let filler = "x".repeat(80);
    let mut err = std::io::stderr().lock();
    for i in 0..lines {
        let _ = writeln!(err, "chatty {i:>8} {filler}");
        if i % 100 == 99 {
            let _ = err.flush();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    lines
}

/// Sleeps `ms`, then says where it ran.
#[oxray::remote]
fn work_where(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    oxray::node_id().expect("node id")
}

/// An actor whose constructor takes `ms`.
#[oxray::actor]
pub struct Slow;

#[oxray::actor]
impl Slow {
    fn new(ms: u64) -> Self {
        std::thread::sleep(Duration::from_millis(ms));
        Slow
    }

    fn ping(&self) -> String {
        "pong".into()
    }
}

pub(crate) fn say(line: impl std::fmt::Display) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// `stalled`: attached to a node with resource `slot:1`. Starts three tasks that print a lot
/// (one runs, two wait for `slot`), makes an actor whose constructor takes 2.5 s and calls it,
/// and once a chatty task holds its lease says `stop-me` (the test then SIGSTOPs this process:
/// while it is stopped its output, the actor's readiness and its lease requests all pile up at
/// the raylet). When continued, it collects everything and says `done`.
pub fn stalled() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let chat: Vec<ObjectRef<u64>> = (0..3)
        .map(|_| chatty::options().resource("slot", 1.0).remote(20_000))
        .collect::<oxray::Result<_>>()?;
    let slow = Slow::remote(2500)?;
    let pong = slow.ping()?;
    let started = Instant::now();
    loop {
        let s = oxray::status()?;
        if s.workers.iter().any(|w| w.state == "leased") {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            say("error no chatty task started within 60 s");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    say("stop-me");
    let wait = Duration::from_secs(120);
    let mut lines = 0;
    for r in &chat {
        lines += oxray::get_timeout(r, wait)?;
    }
    say(format!("chatty-lines {lines}"));
    say(format!("ping {}", oxray::get_timeout(&pong, wait)?));
    say("done");
    Ok(())
}

/// `busy N MS`: runs N tasks of MS ms each and says how many finished and where they ran.
pub fn busy(n: u64, ms: u64) -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let refs: Vec<ObjectRef<String>> = (0..n)
        .map(|_| work_where::remote(ms))
        .collect::<oxray::Result<_>>()?;
    let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
    for r in &refs {
        *per_node
            .entry(oxray::get_timeout(r, Duration::from_secs(120))?)
            .or_default() += 1;
    }
    say(format!("tasks {}", per_node.values().sum::<u32>()));
    say(format!("per-node {per_node:?}"));
    say("done");
    Ok(())
}

/// `steady SECS`: for SECS seconds, rounds of six 50 ms tasks: two anywhere, two needing
/// resource `m1`, two needing `m2` (one member each). Says how many rounds and tasks finished
/// and on how many nodes.
pub fn steady(secs: u64) -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let started = Instant::now();
    let (mut rounds, mut tasks) = (0u32, 0usize);
    let mut nodes = BTreeSet::new();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(secs) {
        let round = Instant::now();
        let mut refs = Vec::new();
        for resource in ["", "m1", "m2"] {
            for _ in 0..2 {
                let options = work_where::options();
                let options = if resource.is_empty() {
                    options
                } else {
                    options.resource(resource, 1.0)
                };
                refs.push(options.remote(50)?);
            }
        }
        for r in &refs {
            nodes.insert(oxray::get_timeout(r, Duration::from_secs(60))?);
            tasks += 1;
        }
        slowest = slowest.max(round.elapsed());
        rounds += 1;
    }
    say(format!("rounds {rounds}"));
    say(format!("tasks {tasks}"));
    say(format!("nodes {}", nodes.len()));
    say(format!("slowest-round-ms {}", slowest.as_millis()));
    say("done");
    Ok(())
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a worker process of this driver's job on its own node.
    unsafe { libc::kill(pid as i32, sig) };
}

/// The children of process `pid` (every thread's).
fn children(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

fn cmdline(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// The state the node lists for worker process `pid` ("" when it is not listed).
fn worker_state(pid: u32) -> oxray::Result<String> {
    Ok(oxray::status()?
        .workers
        .iter()
        .find(|w| w.pid == pid)
        .map(|w| w.state.clone())
        .unwrap_or_default())
}

/// `restart-unborn`: attached to a standalone node. Makes an actor with restarts to spare,
/// kills its process, catches the worker the raylet starts to restart it before it registers
/// (a new child of the raylet that has exec'd, frozen with SIGSTOP while the node still lists
/// it as `starting`) and kills it too. Then calls the actor and says how the call ended:
/// `after-pid P` (restarted again), `after-dead CAUSE`, or `after-error E` (e.g. a timeout).
pub fn restart_unborn() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let raylet = oxray::status()?.pid;
    let raylet_cmdline = cmdline(raylet);
    let actor = Keeper::options()
        .max_restarts(10)
        .max_task_retries(-1)
        .remote(0)?;
    let mut victim = oxray::get_timeout(&actor.pid()?, Duration::from_secs(60))?;
    say(format!("actor-pid {victim}"));
    let mut caught = None;
    for attempt in 0..5 {
        let before = children(raylet);
        signal(victim, libc::SIGKILL);
        // The raylet starts a new worker: find it as soon as it runs our executable.
        let started = Instant::now();
        let fresh = loop {
            let found = children(raylet).into_iter().find(|p| {
                !before.contains(p) && *p != victim && {
                    let c = cmdline(*p);
                    !c.is_empty() && c != raylet_cmdline
                }
            });
            if let Some(p) = found {
                break Some(p);
            }
            if started.elapsed() > Duration::from_secs(20) {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let Some(fresh) = fresh else {
            say("error the raylet started no worker to restart the actor within 20 s");
            return Ok(());
        };
        signal(fresh, libc::SIGSTOP);
        // Twice: a registration already on its way would be seen by the second answer.
        let state = worker_state(fresh)?;
        let again = worker_state(fresh)?;
        if state == "starting" && again == "starting" {
            signal(fresh, libc::SIGKILL);
            say(format!("killed-starting {fresh}"));
            caught = Some(fresh);
            break;
        }
        // Too late: it registered. Let it become the actor and try again.
        say(format!(
            "missed {fresh} {state}/{again} (attempt {attempt})"
        ));
        signal(fresh, libc::SIGCONT);
        victim = oxray::get_timeout(&actor.pid()?, Duration::from_secs(60))?;
    }
    if caught.is_none() {
        say("error could not catch a restarted worker before it registered");
        return Ok(());
    }
    let started = Instant::now();
    match oxray::get_timeout(&actor.pid()?, Duration::from_secs(20)) {
        Ok(pid) => say(format!("after-pid {pid}")),
        Err(Error::ActorDied { message }) => say(format!("after-dead {message}")),
        Err(e) => say(format!("after-error {e}")),
    }
    say(format!("after-ms {}", started.elapsed().as_millis()));
    let info = oxray::status()?.actors;
    say(format!(
        "actor-states {:?}",
        info.iter()
            .map(|a| (format!("{:?}", a.state), a.restarts, a.death.clone()))
            .collect::<Vec<_>>()
    ));
    say("done");
    Ok(())
}

/// `gpu-lost`: attached to the head of a cluster whose one member has `gpu:1`. Places an actor
/// (one restart allowed) and a task needing half a `gpu` each there and says `placed`; the test kills that
/// node. Once the driver sees it dead it submits a new `gpu` task and an actor call, says
/// `submitted`, and waits for both (the test starts a new `gpu` node meanwhile), saying where
/// they ran.
pub fn gpu_lost() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    // Half a gpu each, so the actor and a task fit together on a node with `gpu:1`.
    let actor = Tally::options()
        .resource("gpu", 0.5)
        .max_restarts(1)
        .max_task_retries(-1)
        .remote(0)?;
    let wait = Duration::from_secs(60);
    say(format!(
        "actor-node {}",
        oxray::get_timeout(&actor.node()?, wait)?
    ));
    let first = work_where::options().resource("gpu", 0.5).remote(0)?;
    say(format!("task-node {}", oxray::get_timeout(&first, wait)?));
    let alive =
        || -> oxray::Result<usize> { Ok(oxray::nodes()?.iter().filter(|n| n.alive).count()) };
    let before = alive()?;
    say("placed");
    let started = Instant::now();
    while alive()? >= before {
        if started.elapsed() > Duration::from_secs(30) {
            say("error the gpu node was not seen dead within 30 s");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let task = work_where::options().resource("gpu", 0.5).remote(0)?;
    let call = actor.node()?;
    say("submitted");
    match oxray::get_timeout(&task, wait) {
        Ok(node) => say(format!("task-after {node}")),
        Err(e) => say(format!("task-after-error {e}")),
    }
    match oxray::get_timeout(&call, Duration::from_secs(30)) {
        Ok(node) => say(format!("actor-after {node}")),
        Err(e) => say(format!("actor-after-error {e}")),
    }
    say("done");
    Ok(())
}

/// `idle`: an embedded node with 2 CPUs runs one task, says `ready`, then does nothing for a
/// minute (the test measures how often its threads wake, then kills it).
pub fn idle() -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(2.0))?;
    let r = work_where::remote(0)?;
    oxray::get(&r)?;
    say("ready");
    // Idling is the point: this is what the test watches.
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// Threads of process `pid` (0 when it is gone).
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (up to 5 s) until every CPU of the node is free again: the lease went back.
fn until_leases_returned() -> oxray::Result<()> {
    let total = oxray::cluster_resources()?
        .get("CPU")
        .copied()
        .unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while oxray::available_resources()?
        .get("CPU")
        .copied()
        .unwrap_or(0.0)
        < total
    {
        if Instant::now() > deadline {
            say("error a lease was not returned within 5 s");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// `lease-churn ROUNDS`: one task at a time, each on a fresh lease that goes back after its
/// linger; prints the threads of this driver and of its node's workers after a warm-up round and
/// at the end (`threads-before`/`threads-after`), which must not grow with the rounds.
pub fn lease_churn(rounds: u32) -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(1.0))?;
    let count = || {
        let me = std::process::id();
        threads(me) + children(me).into_iter().map(threads).sum::<u64>()
    };
    oxray::get(&work_where::remote(0)?)?;
    until_leases_returned()?;
    say(format!("threads-before {}", count()));
    for _ in 0..rounds {
        oxray::get(&work_where::remote(0)?)?;
        until_leases_returned()?;
    }
    say(format!("threads-after {}", count()));
    Ok(())
}

/// Whether this process's environment names the cluster secret variable, and whether the
/// secret's text appears in it at all.
#[oxray::remote]
fn secret_in_environ(secret: String) -> (String, bool, bool) {
    let environ = std::fs::read("/proc/self/environ").unwrap_or_default();
    let text = String::from_utf8_lossy(&environ);
    (
        oxray::node_id().expect("node id"),
        text.contains("OXRAY_CLUSTER_SECRET"),
        text.contains(&secret),
    )
}

/// `environ`: runs a task on the node with resource `m` and reports what its environment holds.
pub fn environ() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let r = secret_in_environ::options()
        .resource("m", 1.0)
        .remote("node-core-secret-0123456789abcdef".to_string())?;
    let (node, named, anywhere) = oxray::get(&r)?;
    say(format!("ran-on {node}"));
    say(format!("secret-in-environ {named}"));
    say(format!("secret-anywhere {anywhere}"));
    Ok(())
}

/// `probe-socket NAME`: connects to the abstract socket NAME and says what the other side did
/// within 3 s: `refused` (no connection), `closed` (it hung up at once) or `open` (it waits for
/// a message, as for a client it serves).
pub fn probe_socket(name: &str) -> oxray::Result<()> {
    use std::io::Read;
    use std::os::linux::net::SocketAddrExt;
    let outcome = (|| {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
        let mut s = std::os::unix::net::UnixStream::connect_addr(&addr).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let mut byte = [0u8; 1];
        Some(match s.read(&mut byte) {
            Ok(0) => "closed",
            Ok(_) => "open",
            Err(_) => "open",
        })
    })();
    say(format!("socket {}", outcome.unwrap_or("refused")));
    Ok(())
}

/// A small actor for counting: each answers with its pid.
#[oxray::actor]
pub struct Pinger;

#[oxray::actor]
impl Pinger {
    fn new() -> Self {
        Pinger
    }

    fn ping(&self) -> u32 {
        std::process::id()
    }
}

/// Creates `n` actors and calls each once; returns them with the pids they answered from.
fn pinged_actors(n: usize) -> oxray::Result<(Vec<ActorHandle<Pinger>>, Vec<u32>)> {
    let actors: Vec<ActorHandle<Pinger>> = (0..n)
        .map(|_| Pinger::remote())
        .collect::<oxray::Result<_>>()?;
    let calls: Vec<ObjectRef<u32>> = actors
        .iter()
        .map(|a| a.ping())
        .collect::<oxray::Result<_>>()?;
    let pids = oxray::get_all(&calls)?;
    Ok((actors, pids))
}

/// CPU time (user + system, in clock ticks) of process `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    field(11) + field(12)
}

/// `many-actors N`: an embedded node creates N actors, calls each once, then idles for 3 s.
/// Prints the creation rate, that every actor answered from a process of its own, the threads
/// per actor (all processes) and of the driver with its embedded raylet, and the CPU the whole
/// idle node used (percent of one core).
pub fn many_actors(n: usize) -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(2.0))?;
    let started = Instant::now();
    let (_actors, pids) = pinged_actors(n)?;
    let pids: BTreeSet<u32> = pids.into_iter().collect();
    let took = started.elapsed();
    say(format!("answered {}", pids.len()));
    say(format!("seconds {:.1}", took.as_secs_f64()));
    say(format!(
        "actors-per-second {:.0}",
        n as f64 / took.as_secs_f64()
    ));
    let me = std::process::id();
    let tree = || {
        let mut all = vec![me];
        all.extend(children(me));
        all
    };
    let total_threads: u64 = tree().into_iter().map(threads).sum();
    say(format!(
        "threads-per-actor {:.1}",
        total_threads as f64 / n as f64
    ));
    // This process holds the driver and the embedded raylet: what each actor costs both.
    say(format!("driver-threads {}", threads(me)));
    let pss_kib: u64 = children(me)
        .into_iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    say(format!("pss-kib-per-actor {}", pss_kib / n.max(1) as u64));
    let before: u64 = tree().into_iter().map(cpu_ticks).sum();
    let t0 = Instant::now();
    // Idling is what is measured here.
    std::thread::sleep(Duration::from_secs(3));
    let used: u64 = tree().into_iter().map(cpu_ticks).sum::<u64>() - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let percent = used as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
    say(format!("idle-cpu-percent {percent:.1}"));
    Ok(())
}

/// Anonymous memory of this process in kB (the embedded raylet's tables live here).
fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `actor-churn N`: an embedded node creates, calls and kills N actors in rounds of 250, then
/// prints how many actors its status still lists and this process's anonymous memory after the
/// first 1,000 deaths and at the end (`rss-kib-at-1000`, `rss-kib-at-end`).
pub fn actor_churn(n: usize) -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(2.0))?;
    let mut died = 0;
    let mut at_1000 = 0;
    while died < n {
        let round = (n - died).min(250);
        let (actors, _) = pinged_actors(round)?;
        for a in &actors {
            oxray::kill(a)?;
        }
        died += round;
        if died >= 1000 && at_1000 == 0 {
            at_1000 = settled_rss_anon_kib();
        }
        if std::env::var_os("OXRAY_CHURN_TRACE").is_some() {
            let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
            eprintln!(
                "died {died} rss {} threads {} fds {fds}",
                rss_anon_kib(),
                threads(std::process::id())
            );
        }
    }
    say(format!("status-actors {}", oxray::status()?.actors.len()));
    say(format!("rss-kib-at-1000 {at_1000}"));
    say(format!("rss-kib-at-end {}", settled_rss_anon_kib()));
    Ok(())
}

/// [`rss_anon_kib`] once the threads that served killed actors have ended (their stacks count
/// as anonymous memory while they live): waits up to 10 s for the thread count to settle.
fn settled_rss_anon_kib() -> u64 {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = threads(me);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = threads(me);
        if now == last {
            break;
        }
        last = now;
    }
    rss_anon_kib()
}

/// Threads, open files and anonymous memory (kB) of process `pid`.
fn footprint(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (field("Threads:"), fds, field("RssAnon:"))
}

/// Sum of [`footprint`] over this driver (with its embedded raylet) and its workers.
fn tree_footprint() -> (u64, u64, u64) {
    let me = std::process::id();
    let mut all = vec![me];
    all.extend(children(me));
    all.into_iter()
        .map(footprint)
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

/// `soak SECS WARMUP`: a mixed workload on an embedded node for SECS seconds — tasks whose
/// leases go back between rounds, actor calls, puts and gets of large objects, one actor created
/// and killed per round — printing the footprint (threads, fds, anonymous kB of the driver and
/// its workers) after WARMUP seconds and at the end, each measured between rounds once the
/// previous round's leases went back.
pub fn soak(secs: u64, warmup: u64) -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(2.0))?;
    let counter = Pinger::remote()?;
    let started = Instant::now();
    let mut warm = None;
    let mut rounds = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let tasks: Vec<ObjectRef<String>> = (0..4)
            .map(|_| work_where::remote(1))
            .collect::<oxray::Result<_>>()?;
        oxray::get_all(&tasks)?;
        let calls: Vec<ObjectRef<u32>> = (0..50)
            .map(|_| counter.ping())
            .collect::<oxray::Result<_>>()?;
        oxray::get_all(&calls)?;
        let big = oxray::put(&vec![rounds as f64; 1 << 17])?;
        let back: Vec<f64> = oxray::get(&big)?;
        assert_eq!(back.len(), 1 << 17);
        drop(big);
        let short = Pinger::remote()?;
        oxray::get(&short.ping()?)?;
        oxray::kill(&short)?;
        rounds += 1;
        until_leases_returned()?;
        if warm.is_none() && started.elapsed() >= Duration::from_secs(warmup) {
            warm = Some(tree_footprint());
        }
    }
    let end = tree_footprint();
    let warm = warm.unwrap_or(end);
    say(format!("rounds {rounds}"));
    say(format!("warm {} {} {}", warm.0, warm.1, warm.2));
    say(format!("end {} {} {}", end.0, end.1, end.2));
    Ok(())
}

/// `queued N`: submits N tiny tasks at once and reports this driver's anonymous memory (kB)
/// before, with all N queued, after they ran, and after their refs were dropped.
pub fn queued(n: usize) -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().num_cpus(2.0))?;
    oxray::get(&work_where::remote(0)?)?;
    let before = rss_anon_kib();
    let started = Instant::now();
    let refs: Vec<ObjectRef<String>> = (0..n)
        .map(|_| work_where::remote(0))
        .collect::<oxray::Result<_>>()?;
    let submitted = started.elapsed();
    let queued = rss_anon_kib();
    let mut done = 0;
    for r in &refs {
        oxray::get(r)?;
        done += 1;
    }
    let drained = started.elapsed();
    let ran = rss_anon_kib();
    drop(refs);
    until_leases_returned()?;
    let after = settled_rss_anon_kib();
    say(format!("tasks {done}"));
    say(format!("submit-seconds {:.1}", submitted.as_secs_f64()));
    say(format!("drain-seconds {:.1}", drained.as_secs_f64()));
    say(format!("rss-kib-before {before}"));
    say(format!("rss-kib-queued {queued}"));
    say(format!(
        "bytes-per-queued-task {}",
        (queued.saturating_sub(before)) * 1024 / n.max(1) as u64
    ));
    say(format!("rss-kib-after-run {ran}"));
    say(format!("rss-kib-after-drop {after}"));
    Ok(())
}

/// `remote-lease-churn ROUNDS`: one task at a time on the node with resource `m1` (another
/// node), each round 100 ms apart so the lease goes back in between (its linger is 50 ms);
/// prints this driver's threads and the open files of every raylet of the cluster after a
/// warm-up round and at the end.
pub fn remote_lease_churn(rounds: u32) -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let once = || -> oxray::Result<()> {
        let r = work_where::options().resource("m1", 1.0).remote(0)?;
        oxray::get(&r)?;
        // The workload: a task now and then, each on a fresh lease.
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    };
    let raylet_fds = || -> oxray::Result<usize> {
        let view = oxray::status()?.cluster;
        Ok(view
            .nodes
            .iter()
            .map(|n| std::fs::read_dir(format!("/proc/{}/fd", n.pid)).map_or(0, |d| d.count()))
            .sum())
    };
    once()?;
    say(format!("threads-before {}", threads(std::process::id())));
    say(format!("raylet-fds-before {}", raylet_fds()?));
    for _ in 0..rounds {
        once()?;
    }
    say(format!("threads-after {}", threads(std::process::id())));
    say(format!("raylet-fds-after {}", raylet_fds()?));
    Ok(())
}
