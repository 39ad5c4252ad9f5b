//! Faults the node core must survive: a driver stopped (SIGSTOP) with work in flight, every CPU
//! busy for 30 s, a restarted actor's worker killed before it registers, and work needing a
//! resource whose only node died. Raylets and drivers are real processes (`oxray-test-driver`),
//! killed by pid and reaped when a test ends; every wait has a deadline.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxray_raylet::NodeStatus;

pub(crate) const DRIVER: &str = env!("CARGO_BIN_EXE_oxray-test-driver");
pub(crate) const SECRET: &str = "node-core-secret-0123456789abcdef";
/// What the head prints when it declares a node dead.
const MARKED_DEAD: &str = "marked dead";

/// Text a process printed, as it arrives: a channel per stream plus everything in one log.
type Log = Arc<Mutex<String>>;

/// Reads `stream` line by line on a thread of its own: each line goes to `log` and to `tx`.
fn collect(stream: impl Read + Send + 'static, tx: Sender<String>, log: Log) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
            // The receiver may be gone; keep draining so the process never blocks on a pipe.
            let _ = tx.send(line);
        }
    });
}

/// A process started by a test: SIGKILLed (stopped or not) and reaped on drop.
pub(crate) struct Proc {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    out: Log,
    err: Log,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a process");
        let (out, err) = (Log::default(), Log::default());
        let (out_tx, stdout) = channel();
        let (err_tx, stderr) = channel();
        collect(child.stdout.take().expect("stdout"), out_tx, out.clone());
        collect(child.stderr.take().expect("stderr"), err_tx, err.clone());
        Proc {
            child,
            stdout,
            stderr,
            out,
            err,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child this test started and has not reaped.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// What it printed on stdout so far.
    pub(crate) fn out(&self) -> String {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Everything it printed so far: stdout, then stderr.
    pub(crate) fn log(&self) -> String {
        self.out() + &self.err.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first line on `lines` matching `want`, waiting at most `limit`.
    fn first_line(
        lines: &Receiver<String>,
        limit: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match lines.recv_timeout(left) {
                Ok(line) if want(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    fn stdout_line(&self, limit: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        Self::first_line(&self.stdout, limit, want)
    }

    fn stderr_line(&self, limit: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        Self::first_line(&self.stderr, limit, want)
    }

    /// Its exit status if it ended within `limit` (polled every 20 ms).
    pub(crate) fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed driver's embedded raylet cannot remove its session directory.
        oxray_raylet::files::sweep_stale_sessions();
    }
}

/// A raylet process (`oxray-test-driver raylet`); its session's temp dir goes with it.
pub(crate) struct Raylet {
    pub(crate) proc: Proc,
    pub(crate) session: String,
    pub(crate) address: String,
    pub(crate) peer: String,
}

impl Raylet {
    /// Everything it printed (the head reports dead nodes on stderr).
    fn log(&self) -> String {
        self.proc.log()
    }
}

impl Drop for Raylet {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let _ = std::fs::remove_dir_all(oxray_raylet::files::session_dir(&self.session));
    }
}

/// Starts a raylet with `opts` (see the driver's `raylet` mode); waits for its address, and for
/// its peer address when it is in a cluster.
pub(crate) fn raylet(tag: &str, opts: &[&str]) -> Raylet {
    raylet_env(tag, opts, &[])
}

/// [`raylet`] with variables `env` set in the raylet's environment.
fn raylet_env(tag: &str, opts: &[&str], env: &[(&str, &str)]) -> Raylet {
    let session = format!("oxray-nc-{}-{tag}", std::process::id());
    let mut cmd = Command::new(DRIVER);
    cmd.arg("raylet").arg(&session).args(opts);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut node = Raylet {
        proc: Proc::spawn(cmd),
        session,
        address: String::new(),
        peer: String::new(),
    };
    let limit = Duration::from_secs(90);
    let line = |prefix: &str| {
        node.proc
            .stdout_line(limit, |l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].to_owned())
            .unwrap_or_else(|| panic!("raylet {tag} printed no `{prefix}`: {}", node.log()))
    };
    let address = line("address ");
    let clustered = opts
        .iter()
        .any(|o| o.starts_with("head_port=") || o.starts_with("join="));
    let peer = if clustered {
        line("peer ")
    } else {
        String::new()
    };
    node.address = address;
    node.peer = peer;
    node
}

/// A cluster head; `extra` are more `key=value` options of the driver's `raylet` mode.
pub(crate) fn head(tag: &str, extra: &[&str]) -> Raylet {
    let secret = format!("secret={SECRET}");
    let mut opts = vec!["head_port=0", secret.as_str()];
    opts.extend_from_slice(extra);
    raylet(tag, &opts)
}

fn member(tag: &str, head: &Raylet, extra: &[&str]) -> Raylet {
    let secret = format!("secret={SECRET}");
    let join = format!("join={}", head.peer);
    let mut opts = vec![join.as_str(), secret.as_str()];
    opts.extend_from_slice(extra);
    raylet(tag, &opts)
}

/// The test driver running `args`, attached to `node`.
pub(crate) fn driver(args: &[&str], node: &Raylet) -> Proc {
    let mut cmd = Command::new(DRIVER);
    cmd.args(args).env("OXRAY_ADDRESS", &node.address);
    Proc::spawn(cmd)
}

/// Runs the test driver with `args` on an embedded node; returns what it printed once it
/// exited successfully within `limit` (fails the test otherwise).
pub(crate) fn run_to_end(args: &[&str], limit: Duration) -> String {
    let mut cmd = Command::new(DRIVER);
    cmd.args(args);
    let mut proc = Proc::spawn(cmd);
    let status = proc.exit_within(limit);
    assert!(status.is_some_and(|s| s.success()), "{}", proc.log());
    proc.out()
}

/// The node's status, or `None` if it does not answer within `limit` (a frozen node).
pub(crate) fn status_within(address: &str, limit: Duration) -> Option<NodeStatus> {
    let (tx, rx) = channel();
    let address = address.to_owned();
    // A node that never answers leaves this thread blocked until the node is killed.
    std::thread::spawn(move || {
        let _ = tx.send(oxray_raylet::tool::status(&address));
    });
    rx.recv_timeout(limit).ok()?.ok()
}

/// The cluster as the head sees it: `(alive, dead)` node counts.
fn alive_and_dead(head: &Raylet) -> Option<(usize, usize)> {
    let s = status_within(&head.address, Duration::from_secs(5))?;
    let alive = s.cluster.nodes.iter().filter(|n| n.alive).count();
    Some((alive, s.cluster.nodes.len() - alive))
}

/// The id of `node` as `oxray::node_id` prints it.
fn id_of(head: &Raylet, node: &Raylet) -> String {
    let s = status_within(&head.address, Duration::from_secs(10)).expect("head status");
    s.cluster
        .nodes
        .iter()
        .find(|n| n.local_address == node.address)
        .map(|n| n.id.to_string())
        .expect("the node is in the view")
}

pub(crate) fn value(out: &str, key: &str) -> String {
    crate::processes::value(out, key)
        .unwrap_or_default()
        .to_owned()
}

/// A driver stopped (SIGSTOP) for twice the health-check timeout, in the worst state: its
/// tasks print a lot (the raylet forwards their output over its socket, which fills), it has
/// lease requests waiting and an actor about to become ready that it waits for. Proves that
/// meanwhile another driver on the same node runs 200 tasks to the end, that node keeps
/// answering, no node is marked dead, and the stopped driver, continued, gets its results (or
/// a clean error) and exits.
#[test]
fn a_stopped_driver_does_not_stall_its_node() {
    let _load = crate::no_cpu_hog();
    let h = head("sh", &["cpus=2"]);
    let m = member("sm", &h, &["cpus=2", "resources=slot:1"]);
    let stopped = driver(&["stalled"], &m);
    let ready = stopped.stdout_line(Duration::from_secs(90), |l| {
        l == "stop-me" || l.starts_with("error")
    });
    assert_eq!(ready.as_deref(), Some("stop-me"), "{}", stopped.out());
    stopped.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    let mut problems = Vec::new();

    // Another driver on the same node, while the first is stopped.
    let mut other = driver(&["busy", "200", "100"], &m);
    let mut other_exit = None;
    let mut dead_seen = None;
    let hold = Duration::from_secs(6);
    let other_limit = Duration::from_secs(45);
    loop {
        if other_exit.is_none() {
            other_exit = other.child.try_wait().ok().flatten();
        }
        match alive_and_dead(&h) {
            Some((_, 0)) => {}
            Some((alive, dead)) => {
                dead_seen.get_or_insert_with(|| {
                    format!(
                        "{:.1} s after the stop the head lists {dead} dead node(s), {alive} alive",
                        stopped_at.elapsed().as_secs_f64()
                    )
                });
            }
            None => {
                dead_seen.get_or_insert_with(|| {
                    "the head did not answer its status within 5 s".to_owned()
                });
            }
        }
        let waited = stopped_at.elapsed();
        if (other_exit.is_some() && waited >= hold) || waited >= other_limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let other_out = other.log();
    if !(other_exit.is_some_and(|s| s.success()) && value(&other_out, "tasks") == "200") {
        problems.push(format!(
            "the other driver on the node did not finish its 200 tasks within {other_limit:?} \
             while the first driver was stopped (exit {other_exit:?}): {other_out}"
        ));
    }
    if let Some(d) = dead_seen {
        problems.push(d);
    }
    if status_within(&m.address, Duration::from_secs(5)).is_none() {
        problems.push(format!(
            "the node of the stopped driver did not answer its status within 5 s, {:.1} s \
             after the stop",
            stopped_at.elapsed().as_secs_f64()
        ));
    }

    // Continued, it finishes its work or gets a clean error, and exits.
    stopped.signal(libc::SIGCONT);
    let mut stopped = stopped;
    let exit = stopped.exit_within(Duration::from_secs(90));
    let out = stopped.out();
    let finished = out.lines().any(|l| l == "done") && value(&out, "ping") == "pong";
    let clean_error = out.lines().any(|l| l.starts_with("error "));
    if exit.is_none() || !(finished || clean_error) {
        problems.push(format!(
            "the continued driver did not finish or fail cleanly within 90 s (exit {exit:?}); \
             its stdout: {out}"
        ));
    }
    match alive_and_dead(&h) {
        Some((2, 0)) => {}
        other => problems.push(format!("at the end the head lists (alive, dead) {other:?}")),
    }
    if h.log().contains(MARKED_DEAD) {
        problems.push(format!("the head marked a node dead: {}", h.log()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Four processes spin on the VM's two cores for the 30 s a driver on the head spends running
/// rounds of tasks on all three nodes (default health checks: every 100 ms, dead after 3 s
/// of silence). Proves that under full CPU load every task finishes, on every node, and the
/// head declares no node dead.
#[test]
fn a_cluster_with_every_cpu_busy_keeps_its_nodes_and_finishes_its_tasks() {
    let _load = crate::cpu_hog();
    let h = head("lh", &["cpus=2"]);
    let m1 = member("l1", &h, &["cpus=2", "resources=m1:2"]);
    let m2 = member("l2", &h, &["cpus=2", "resources=m2:2"]);
    assert_eq!(alive_and_dead(&h), Some((3, 0)));
    let spinners: Vec<Proc> = (0..4)
        .map(|_| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "while :; do :; done"]);
            Proc::spawn(cmd)
        })
        .collect();
    let mut work = driver(&["steady", "30"], &h);
    let started = Instant::now();
    let mut exit = None;
    let mut dead_seen = None;
    while started.elapsed() < Duration::from_secs(120) {
        exit = work.child.try_wait().ok().flatten();
        if exit.is_some() {
            break;
        }
        if let Some((alive, dead)) = alive_and_dead(&h) {
            if dead > 0 {
                dead_seen.get_or_insert(format!(
                    "after {:.1} s of load the head lists {dead} dead node(s), {alive} alive",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let loaded_for = started.elapsed();
    drop(spinners);
    let out = work.log();
    let mut problems = Vec::new();
    if !exit.is_some_and(|s| s.success()) || !out.lines().any(|l| l == "done") {
        problems.push(format!(
            "the driver did not finish within 120 s (exit {exit:?}): {out}"
        ));
    }
    if value(&out, "nodes") != "3" {
        problems.push(format!("the tasks did not run on all three nodes: {out}"));
    }
    if let Some(d) = dead_seen {
        problems.push(d);
    }
    match alive_and_dead(&h) {
        Some((3, 0)) => {}
        other => problems.push(format!("at the end the head lists (alive, dead) {other:?}")),
    }
    if h.log().contains(MARKED_DEAD) {
        problems.push(format!("the head marked a node dead: {}", h.log()));
    }
    assert!(
        problems.is_empty(),
        "under {loaded_for:?} of full CPU load:\n{}",
        problems.join("\n")
    );
    drop((m1, m2));
}

/// An actor's process is killed; the worker the raylet starts to restart it is killed too,
/// before it registers (the driver catches it as a new child of the raylet that the node still
/// lists as `starting`). Proves the actor then restarts again or dies with a cause: a call on
/// it returns within 20 s instead of waiting on an actor stuck `Restarting`.
#[test]
fn an_actor_whose_restarting_worker_dies_before_registering_restarts_or_dies() {
    let _load = crate::no_cpu_hog();
    let node = raylet("unborn", &["cpus=2"]);
    let mut d = driver(&["restart-unborn"], &node);
    let exit = d.exit_within(Duration::from_secs(120));
    let out = d.log();
    assert!(exit.is_some(), "the driver did not end within 120 s: {out}");
    let caught = value(&out, "killed-starting");
    assert!(
        !caught.is_empty(),
        "the test could not kill a restarting worker before it registered: {out}"
    );
    let first = value(&out, "actor-pid");
    let after = value(&out, "after-pid");
    let dead = value(&out, "after-dead");
    let restarted = !after.is_empty() && after != first && after != caught;
    assert!(
        restarted || !dead.is_empty(),
        "after its restarting worker {caught} died before registering, a call on the actor did \
         not return a result or ActorDied within 20 s (the actor stays Restarting): {out}"
    );
    assert!(exit.is_some_and(|s| s.success()), "{out}");
}

/// A cluster head and member A with `gpu=1`; an actor (one restart allowed) and a task needing
/// `gpu` run on A, then A is killed. Proves that the work that now fits nowhere is explained:
/// the driver prints a warning naming the missing resource, the node's status gives the reason
/// for the waiting request; and that once a new `gpu` node B joins, the actor and a new task
/// run there.
#[test]
fn work_whose_only_node_died_is_explained_and_runs_on_a_new_node() {
    let _load = crate::no_cpu_hog();
    let fast = ["period_ms=50", "threshold=12"];
    let h = head("gh", &[&["cpus=2"][..], &fast[..]].concat());
    let a = member(
        "ga",
        &h,
        &[&["cpus=1", "resources=gpu:1"][..], &fast[..]].concat(),
    );
    let a_id = id_of(&h, &a);
    let d = driver(&["gpu-lost"], &h);
    let placed = d.stdout_line(Duration::from_secs(90), |l| {
        l == "placed" || l.starts_with("error")
    });
    let out = d.log();
    assert_eq!(placed.as_deref(), Some("placed"), "{out}");
    assert_eq!(value(&out, "actor-node"), a_id, "{out}");
    assert_eq!(value(&out, "task-node"), a_id, "{out}");
    drop(a);
    let submitted = d.stdout_line(Duration::from_secs(30), |l| {
        l == "submitted" || l.starts_with("error")
    });
    assert_eq!(submitted.as_deref(), Some("submitted"), "{}", d.log());

    let mut problems = Vec::new();
    let warning = d.stderr_line(Duration::from_secs(20), |l| {
        l.contains("oxray: warning:") && l.contains("no alive node has") && l.contains("gpu")
    });
    if warning.is_none() {
        problems.push(format!(
            "within 20 s the driver printed no `oxray: warning: .. no alive node has .. gpu` \
             line; it printed: {}",
            d.log()
        ));
    }
    // The head holds the waiting gpu request: its status says why it waits.
    let mut last = String::new();
    let explained = crate::eventually(Duration::from_secs(10), || {
        let Some(s) = status_within(&h.address, Duration::from_secs(5)) else {
            return false;
        };
        last = format!("{:?}", s.pending);
        s.pending.iter().any(|p| {
            let text = format!("{p:?}");
            p.infeasible && text.contains("gpu") && text.contains("no alive node has")
        })
    });
    if !explained {
        problems.push(format!(
            "the head's status lists no infeasible gpu request whose reason says \
             `no alive node has`: pending {last}"
        ));
    }

    let b = member(
        "gb",
        &h,
        &[&["cpus=1", "resources=gpu:1"][..], &fast[..]].concat(),
    );
    let b_id = id_of(&h, &b);
    let mut d = d;
    let done = d.stdout_line(Duration::from_secs(120), |l| l == "done");
    let out = d.log();
    if done.is_none() {
        problems.push(format!("the driver did not finish within 120 s: {out}"));
    }
    if value(&out, "task-after") != b_id {
        problems.push(format!(
            "the new gpu task did not run on node B ({b_id}): {out}"
        ));
    }
    if value(&out, "actor-after") != b_id {
        problems.push(format!(
            "the gpu actor was not restarted on node B ({b_id}): {out}"
        ));
    }
    let _ = d.exit_within(Duration::from_secs(10));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Context switches (voluntary and not) of every thread of `pid` and of its child processes.
fn wakeups(pid: u32) -> u64 {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(pid) {
                pids.push(p);
            }
        }
    }
    let mut total = 0;
    for p in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    total
}

/// An idle driver with an embedded node (and its idle workers) wakes at most ~20 times a second:
/// nothing in the raylet or the core worker polls. A 2 ms or 12 ms polling loop would show up
/// as hundreds of wake-ups a second.
#[test]
fn an_idle_driver_with_an_embedded_node_barely_wakes() {
    let mut cmd = Command::new(DRIVER);
    cmd.arg("idle");
    let proc = Proc::spawn(cmd);
    proc.stdout_line(Duration::from_secs(60), |l| l == "ready")
        .unwrap_or_else(|| panic!("the idle driver never got ready: {}", proc.log()));
    // Let start-up work (worker registration, lease return after its linger) finish.
    std::thread::sleep(Duration::from_secs(1));
    let window = Duration::from_secs(3);
    let (before, t0) = (wakeups(proc.pid()), Instant::now());
    std::thread::sleep(window);
    let per_second = (wakeups(proc.pid()) - before) as f64 / t0.elapsed().as_secs_f64();
    assert!(
        per_second <= 20.0,
        "an idle driver and its workers woke {per_second:.0} times a second"
    );
}

/// A lease that goes back closes its connection on both ends: 20 leases taken and returned one
/// after another leave the driver and its workers with as many threads as one did (each used to
/// leave a reader thread in the driver and a serving thread in the worker behind).
#[test]
fn returned_leases_leave_no_threads_behind() {
    let out = run_to_end(&["lease-churn", "20"], Duration::from_secs(120));
    assert!(!out.contains("error"), "{out}");
    let before: u64 = value(&out, "threads-before")
        .parse()
        .expect("threads-before");
    let after: u64 = value(&out, "threads-after").parse().expect("threads-after");
    assert!(
        after <= before + 2,
        "threads grew from {before} to {after} over 20 returned leases"
    );
}

/// The cluster secret never reaches a worker: a member raylet that has it in its environment
/// (as `oxray start` and `oxray up` pass it) starts workers without it, so a task cannot read
/// the cluster's key from `/proc/self/environ`.
#[test]
fn a_task_on_a_member_node_cannot_read_the_cluster_secret() {
    let _load = crate::no_cpu_hog();
    let h = head("eh", &["cpus=1"]);
    let secret = format!("secret={SECRET}");
    let join = format!("join={}", h.peer);
    let m = raylet_env(
        "em",
        &[join.as_str(), secret.as_str(), "cpus=1", "resources=m:1"],
        &[("OXRAY_CLUSTER_SECRET", SECRET)],
    );
    let mut d = driver(&["environ"], &h);
    let status = d.exit_within(Duration::from_secs(120));
    let out = d.out();
    assert!(status.is_some_and(|s| s.success()), "{}", d.log());
    assert_eq!(
        value(&out, "ran-on"),
        id_of(&h, &m),
        "the task ran on the member"
    );
    assert_eq!(value(&out, "secret-in-environ"), "false", "{out}");
    assert_eq!(value(&out, "secret-anywhere"), "false", "{out}");
}

/// 200 actors on one node: each created, each answering from a process of its own, in bounded
/// time and threads. An actor costs the driver and the raylet (one process here: the node is
/// embedded) no thread: their connections, output pipes and exits are served by event loops,
/// so the driver's thread count does not grow with the actors (it was ~5 per actor). The
/// figures for 1,000 are in the issue notes; the driver prints them.
#[test]
fn two_hundred_actors_on_one_node_each_answer() {
    let _load = crate::no_cpu_hog();
    let out = run_to_end(&["many-actors", "200"], Duration::from_secs(120));
    assert_eq!(value(&out, "answered"), "200", "{out}");
    let threads: f64 = value(&out, "threads-per-actor").parse().expect("threads");
    assert!(threads <= 4.0, "{threads} threads per actor: {out}");
    let driver: u64 = value(&out, "driver-threads")
        .parse()
        .expect("driver threads");
    assert!(
        driver <= 40,
        "the driver with its raylet has {driver} threads for 200 actors: {out}"
    );
}

/// 5,000 actors created, called and killed on one node: the node's status lists only the last
/// 1,000 dead ones (`RayletConfig::max_dead_actors`), and the process holding the embedded
/// raylet (and the callers' per-actor state) does not grow with the count.
#[test]
fn five_thousand_dead_actors_leave_status_and_memory_bounded() {
    let _load = crate::no_cpu_hog();
    let out = run_to_end(&["actor-churn", "5000"], Duration::from_secs(240));
    assert_eq!(value(&out, "status-actors"), "1000", "{out}");
    let at_1000: u64 = value(&out, "rss-kib-at-1000").parse().expect("rss");
    let at_end: u64 = value(&out, "rss-kib-at-end").parse().expect("rss");
    assert!(
        at_end <= at_1000 + (24 << 10),
        "anonymous memory went from {at_1000} kB after 1,000 dead actors to {at_end} kB after 5,000"
    );
}

/// A driver that runs on: 40 s of mixed work (tasks whose leases go back between rounds, actor
/// calls, puts and gets of 1 MiB objects, an actor created and killed every round). After a
/// 10 s warm-up, the threads and open files of the driver (with its embedded raylet) and its
/// workers stay flat, and their anonymous memory grows by at most a few MiB. (Longer runs:
/// `oxray-test-driver soak SECS WARMUP`.)
#[test]
fn a_long_running_driver_stops_growing_after_warm_up() {
    let _load = crate::no_cpu_hog();
    let out = run_to_end(&["soak", "40", "10"], Duration::from_secs(180));
    let numbers = |key: &str| -> Vec<u64> {
        value(&out, key)
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    let (warm, end) = (numbers("warm"), numbers("end"));
    assert_eq!((warm.len(), end.len()), (3, 3), "{out}");
    assert!(
        end[0] <= warm[0] + 4,
        "threads grew from {} to {}: {out}",
        warm[0],
        end[0]
    );
    assert!(
        end[1] <= warm[1] + 8,
        "open files grew from {} to {}: {out}",
        warm[1],
        end[1]
    );
    assert!(
        end[2] <= warm[2] + (8 << 10),
        "anonymous memory grew from {} kB to {} kB: {out}",
        warm[2],
        end[2]
    );
}

/// A burst of 100,000 queued tasks: once they ran and their refs were dropped, the driver gives
/// the memory back (the ref table and queues shrink and the allocator returns free pages)
/// instead of keeping its high-water mark for the rest of its life.
#[test]
fn a_driver_gives_back_the_memory_of_a_burst() {
    let _load = crate::no_cpu_hog();
    let out = run_to_end(&["queued", "100000"], Duration::from_secs(240));
    assert_eq!(value(&out, "tasks"), "100000", "{out}");
    let kib = |key: &str| -> u64 { value(&out, key).parse().expect(key) };
    let (before, queued, after) = (
        kib("rss-kib-before"),
        kib("rss-kib-queued"),
        kib("rss-kib-after-drop"),
    );
    assert!(queued > before, "{out}");
    // The embedded node keeps the last 100,000 runs for the timeline by design (56 bytes each,
    // bounded however many tasks run): that much is not part of the burst's high-water mark.
    let timeline_kib = 100_000 * 56 / 1024;
    assert!(
        after.saturating_sub(before + timeline_kib) < (queued - before) / 3,
        "after the burst the driver still holds {after} kB (queued: {queued} kB, before: {before} kB)"
    );
}

/// Leases of another node that go back close their tunnel too: 20 rounds of one task on the
/// member, each on a fresh lease, leave the driver's threads and the raylets' open files where
/// they were after the first (each used to leave a thread in the driver, a tunnel open on the
/// head and a socket on the member).
#[test]
fn returned_leases_of_another_node_leave_no_tunnels_behind() {
    let _load = crate::no_cpu_hog();
    let h = head("th", &["cpus=1"]);
    let _m = member("tm", &h, &["cpus=1", "resources=m1:1"]);
    let mut d = driver(&["remote-lease-churn", "20"], &h);
    let status = d.exit_within(Duration::from_secs(120));
    let out = d.out();
    assert!(status.is_some_and(|s| s.success()), "{}", d.log());
    let num = |key: &str| -> u64 { value(&out, key).parse().expect(key) };
    let (before, after) = (num("threads-before"), num("threads-after"));
    assert!(
        after <= before + 2,
        "driver threads grew from {before} to {after}: {out}"
    );
    let (before, after) = (num("raylet-fds-before"), num("raylet-fds-after"));
    assert!(
        after <= before + 4,
        "raylets' open files grew from {before} to {after}: {out}"
    );
}
