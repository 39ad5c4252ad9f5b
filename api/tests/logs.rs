//! A background node's log, as `oxray logs` shows it: rotated by size, read back whole.

mod support;

use std::time::Duration;

use support::Scratch;

/// With a tiny rotation size, a node that logs the start and end of eight submitted jobs
/// leaves several rotated files, none much over the size; `oxray logs` prints them oldest
/// first and then the current file, from "node started" to "node stopped", every byte.
#[test]
fn a_nodes_log_is_rotated_by_size_and_read_back_whole() {
    let scratch = Scratch::new("logs");
    let session = format!("lg{}", std::process::id());
    let max = 400u64;
    let max_text = max.to_string();
    let start = scratch.oxray_with(
        &["start", "--head", "--num-cpus", "2", "--session", &session],
        &[
            ("OXRAY_LOG_MAX_BYTES", &max_text),
            ("OXRAY_LOG_BACKUPS", "100"),
        ],
    );
    assert!(start.ok, "{}", start.stderr);
    let address = format!("unix:@{session}");
    for i in 0..8 {
        let job = scratch.oxray(&["job", "submit", "--address", &address, "--", "/bin/true"]);
        assert!(job.ok, "job {i}: {}", job.stderr);
    }
    let stop = scratch.oxray(&["stop", "--address", &address]);
    assert!(stop.ok, "{}", stop.stderr);

    let log = scratch.state().join(format!("{session}.log"));
    let rotated: Vec<_> = (1..=100)
        .map(|i| scratch.state().join(format!("{session}.log.{i}")))
        .take_while(|p| p.exists())
        .collect();
    assert!(rotated.len() >= 4, "only {} rotated files", rotated.len());
    for file in rotated.iter().chain([&log]) {
        let len = std::fs::metadata(file).expect("a log file").len();
        // Rotation happens after the event that crossed the size.
        assert!(len < max + 512, "{} holds {len} bytes", file.display());
    }
    let logs = scratch.oxray(&["logs", "--address", &address]);
    assert!(logs.ok, "{}", logs.stderr);
    let text = logs.stdout;
    assert_eq!(text.matches("job ended").count(), 8, "{text}");
    let started = text.find("node started").expect("the first line");
    let stopped = text.rfind("node stopped").expect("the last line");
    assert!(started < stopped);
    let on_disk: u64 = rotated
        .iter()
        .chain([&log])
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert_eq!(
        text.len() as u64,
        on_disk,
        "`oxray logs` printed a part only"
    );
}

/// Prints a line on stdout and one on stderr; returns its worker's pid.
#[oxray::remote]
fn shout() -> u32 {
    println!("hello from a worker");
    eprintln!("and a warning from it");
    std::process::id()
}

/// A standalone node keeps what each worker wrote: `oxray logs --worker PID` prints it (the
/// driver got it too); an unknown pid is refused, saying where to look.
#[test]
fn a_workers_output_is_kept_by_its_node() {
    let scratch = Scratch::new("workerlogs");
    let session = format!("wl{}", std::process::id());
    let start = scratch.oxray(&[
        "start",
        "--head",
        "--num-cpus",
        "1",
        "--session",
        &session,
        "--no-dashboard",
    ]);
    assert!(start.ok, "{}", start.stderr);
    let address = format!("unix:@{session}");
    let pid = {
        let _driver = oxray::init_with(oxray::Config::new().address(address.clone()))
            .expect("attach to the node");
        oxray::get(&shout::remote().expect("submit")).expect("a pid")
    };
    // The node writes the lines as its event loop reads the worker's pipes, which may be just
    // after the result reached the driver: wait for the writes (inotify), bounded.
    let file = {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        scratch.0.join(format!(
            "oxray-{uid}/sessions/{session}/workers/worker-{pid}.log"
        ))
    };
    let watch = oxray_raylet::log_watch::Watch::new(&file).expect("the worker's file");
    for _ in 0..30 {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("hello from a worker") && text.contains("and a warning") {
            break;
        }
        watch.wait(Duration::from_secs(1)).expect("watch");
    }
    let logs = scratch.oxray(&["logs", "--address", &address, "--worker", &pid.to_string()]);
    let unknown = scratch.oxray(&["logs", "--address", &address, "--worker", "1"]);
    let stop = scratch.oxray(&["stop", "--address", &address]);
    assert!(stop.ok, "{}", stop.stderr);
    assert!(logs.ok, "{}", logs.stderr);
    assert!(
        logs.stdout.contains("hello from a worker\n"),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("and a warning from it\n"),
        "{}",
        logs.stdout
    );
    assert!(
        !unknown.ok && unknown.stderr.contains("no output of worker 1"),
        "{}",
        unknown.stderr
    );
}
