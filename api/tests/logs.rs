//! A background node's log, as `oxray logs` shows it: rotated by size, read back whole.

mod support;

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
