//! Tests that need processes of their own: a standalone node with two drivers, output
//! forwarding, and that nothing is left after a driver exits or is killed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{alive, eventually};

const DRIVER: &str = env!("CARGO_BIN_EXE_oxray-test-driver");

pub fn run(args: &[&str], address: Option<&str>) -> String {
    let mut cmd = Command::new(DRIVER);
    cmd.args(args).env_remove("OXRAY_ADDRESS");
    if let Some(a) = address {
        cmd.env("OXRAY_ADDRESS", a);
    }
    let out = cmd.output().expect("run the test driver");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "driver {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout + &String::from_utf8_lossy(&out.stderr)
}

pub fn value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

/// Kills and reaps a child on drop, so a failing test leaves nothing behind (not even the
/// session directory of a raylet it ran, standalone or embedded).
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        oxray_raylet::files::sweep_stale_sessions();
    }
}

/// Starts a standalone node; returns it and its address.
fn standalone_node(name: &str) -> (Reaped, String) {
    let session = format!("oxray-test-{}-{name}", std::process::id());
    let mut node = Reaped(
        Command::new(DRIVER)
            .args(["raylet", &session])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a standalone node"),
    );
    let mut line = String::new();
    BufReader::new(node.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address");
    let address = line
        .trim()
        .strip_prefix("address ")
        .expect("address line")
        .to_owned();
    (node, address)
}

#[test]
fn a_get_fails_with_a_typed_error_when_the_node_dies() {
    let (mut node, address) = standalone_node("dies");
    let mut driver = Reaped(
        Command::new(DRIVER)
            .arg("nap")
            .env("OXRAY_ADDRESS", &address)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the driver"),
    );
    let mut lines = BufReader::new(driver.0.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().and_then(|l| l.ok()).as_deref(),
        Some("submitted")
    );
    // Let the task start, then kill the node (and with it the worker running the task).
    std::thread::sleep(Duration::from_millis(300));
    node.0.kill().expect("kill the node");
    node.0.wait().expect("reap the node");
    let start = std::time::Instant::now();
    let outcome = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    assert!(start.elapsed() < Duration::from_secs(20), "the get hung");
    assert!(
        outcome.starts_with("get-error") && outcome.contains("raylet"),
        "expected a typed error naming the raylet, got: {outcome}"
    );
}

#[test]
fn two_drivers_share_a_standalone_node() {
    let (node, address) = standalone_node("standalone");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&["sum", "100"], Some(&address)));
        let b = s.spawn(|| run(&["sum", "50"], Some(&address)));
        (a.join().expect("driver a"), b.join().expect("driver b"))
    });
    assert_eq!(value(&a, "embedded"), Some("false"));
    assert_eq!(
        value(&a, "sum"),
        Some(&*(0..100i64).map(|x| x * x).sum::<i64>().to_string())
    );
    assert_eq!(
        value(&b, "sum"),
        Some(&*(0..50i64).map(|x| x * x).sum::<i64>().to_string())
    );
    assert!(alive(node.0.id()), "the node outlives its drivers");
}

#[test]
fn worker_output_reaches_the_driver_with_the_pid() {
    let out = run(&["print"], None);
    assert_eq!(value(&out, "len"), Some("5"));
    let line = out
        .lines()
        .find(|l| l.contains("hello from a task: oxray"))
        .unwrap_or_else(|| panic!("no forwarded line in: {out}"));
    assert!(line.starts_with("(pid="), "{line}");
    assert!(out
        .lines()
        .any(|l| l.starts_with("(pid=") && l.contains("warning from a task")));
}

fn worker_pids(out: &str) -> Vec<u32> {
    out.lines()
        .filter_map(|l| l.strip_prefix("worker-pid ")?.parse().ok())
        .collect()
}

fn oxray_shm_files() -> usize {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("oxray"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_driver_that_exits_leaves_no_process() {
    let out = run(&["pids"], None);
    let pids = worker_pids(&out);
    assert!(!pids.is_empty(), "{out}");
    assert!(
        eventually(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p))),
        "workers still running: {pids:?}"
    );
}

#[test]
fn a_killed_driver_leaves_no_process_and_no_shm_file() {
    let shm_before = oxray_shm_files();
    let mut driver = Reaped(
        Command::new(DRIVER)
            .args(["pids", "hang"])
            .env_remove("OXRAY_ADDRESS")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the driver"),
    );
    let reader = BufReader::new(driver.0.stdout.take().expect("stdout"));
    let mut pids = Vec::new();
    for line in reader.lines() {
        let line = line.expect("read");
        if let Some(p) = line.strip_prefix("worker-pid ") {
            pids.push(p.parse::<u32>().expect("pid"));
        }
        if line == "ready" {
            break;
        }
    }
    assert!(!pids.is_empty());
    assert!(pids.iter().all(|p| alive(*p)));
    // SIGKILL: no destructor runs in the driver.
    driver.0.kill().expect("kill the driver");
    driver.0.wait().expect("reap the driver");
    assert!(
        eventually(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p))),
        "workers outlived their killed driver: {pids:?}"
    );
    assert!(
        oxray_shm_files() <= shm_before,
        "an shm file was left behind"
    );
}

#[test]
fn a_detached_actor_outlives_its_driver_and_is_found_by_the_next() {
    let (_node, address) = standalone_node("detached");
    let out = run(&["detached-make"], Some(&address));
    assert_eq!(value(&out, "added"), Some("41"), "{out}");
    let keeper: u32 = value(&out, "keeper-pid").expect(&out).parse().expect("pid");
    let temp: u32 = value(&out, "temp-pid").expect(&out).parse().expect("pid");
    // The non-detached actor dies with its driver; the detached one lives on.
    assert!(
        eventually(Duration::from_secs(10), || !alive(temp)),
        "the non-detached actor outlived its driver"
    );
    assert!(alive(keeper), "the detached actor died with its driver");

    let out = run(&["detached-find"], Some(&address));
    assert_eq!(value(&out, "added"), Some("42"), "{out}");
    assert_eq!(
        value(&out, "keeper-pid"),
        Some(keeper.to_string().as_str()),
        "{out}"
    );
    assert!(out.contains("temp-error"), "{out}");
    assert!(
        eventually(Duration::from_secs(10), || !alive(keeper)),
        "the killed detached actor is still running"
    );
}
