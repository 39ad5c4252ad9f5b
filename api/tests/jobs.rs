//! `oxray job`: programs handed to a 3-node cluster's head, followed, listed and stopped, as a
//! person would from a shell.

mod support;

use std::time::Duration;

use support::{example, free_port, wait_gone, Scratch};

/// A 3-node cluster on loopback from a config file, brought down on drop.
struct Cluster<'a> {
    scratch: &'a Scratch,
    file: String,
}

impl<'a> Cluster<'a> {
    fn up(scratch: &'a Scratch) -> Cluster<'a> {
        let secret = scratch.0.join("cluster.secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("secret");
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let file = scratch.0.join("cluster.toml");
        std::fs::write(
            &file,
            format!(
                r#"
cluster_name = "jobs{pid}"
secret_file = "cluster.secret"

[head]
address = "127.0.0.1"
port = {port}
num_cpus = 1
object_store_memory = 100_000_000

[[node]]
address = "127.0.0.1"
num_cpus = 2
object_store_memory = 100_000_000

[[node]]
address = "127.0.0.1"
num_cpus = 1
object_store_memory = 100_000_000
"#,
                pid = std::process::id(),
                port = free_port()
            ),
        )
        .expect("write the file");
        let cluster = Cluster {
            scratch,
            file: file.display().to_string(),
        };
        let up = scratch.oxray(&["up", &cluster.file]);
        assert!(up.ok, "{}{}", up.stdout, up.stderr);
        cluster
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        let _ = self.scratch.oxray(&["down", &self.file]);
    }
}

/// The done-when of the jobs feature: the quickstart submitted to the head of a 3-node
/// cluster prints its output through `job logs --follow`; a working directory travels with a
/// job; a running job is stopped (its process is gone); `list` shows all three; bad requests
/// are refused with what to do.
#[test]
fn jobs_run_on_the_head_and_their_output_is_followed() {
    let scratch = Scratch::new("jobs");
    let cluster = Cluster::up(&scratch);
    let quickstart = example("quickstart");
    let quickstart = quickstart.to_str().expect("a path");

    let submit = scratch.oxray(&["job", "submit", "--no-wait", "--", quickstart]);
    assert!(submit.ok, "{}{}", submit.stdout, submit.stderr);
    let job = submit.stdout.trim().to_owned();
    assert_eq!(job, "job-1", "{}", submit.stderr);
    // Ran on the head.
    assert!(
        submit
            .stderr
            .contains(&format!("unix:@jobs{}-head", std::process::id())),
        "{}",
        submit.stderr
    );
    let logs = scratch.oxray(&["job", "logs", "--follow", &job]);
    assert!(logs.ok, "{}{}", logs.stdout, logs.stderr);
    for line in [
        "squares of 0..4: [0, 1, 4, 9]",
        "square(3) + 10 = 19",
        "task failed as expected",
    ] {
        assert!(logs.stdout.contains(line), "no {line:?} in {}", logs.stdout);
    }
    assert!(logs.stderr.contains("job-1  succeeded"), "{}", logs.stderr);
    let status = scratch.oxray(&["job", "status", &job]);
    assert!(
        status.ok && status.stdout.contains("succeeded") && status.stdout.contains("exit status 0"),
        "{}{}",
        status.stdout,
        status.stderr
    );
    // Logs without --follow: the same output, once more.
    let again = scratch.oxray(&["job", "logs", &job]);
    assert_eq!(again.stdout, logs.stdout);

    // A working directory goes with the job, which runs inside a copy of it; by default
    // `submit` follows the output to the end and exits as the job did.
    let wd = scratch.0.join("wd");
    std::fs::create_dir_all(wd.join("data")).expect("dir");
    std::fs::write(
        wd.join("data").join("input.txt"),
        "hello from the working dir\n",
    )
    .expect("file");
    let cat = scratch.oxray(&[
        "job",
        "submit",
        "--working-dir",
        wd.to_str().expect("path"),
        "--",
        "/bin/cat",
        "data/input.txt",
    ]);
    assert!(cat.ok, "{}{}", cat.stdout, cat.stderr);
    assert_eq!(cat.stdout, "job-2\nhello from the working dir\n");
    // A job that fails: `submit` exits 1.
    let missing = scratch.oxray(&["job", "submit", "--", "/bin/cat", "no-such-file"]);
    assert_eq!(
        missing.code,
        Some(1),
        "{}{}",
        missing.stdout,
        missing.stderr
    );
    assert!(missing.stderr.contains("failed"), "{}", missing.stderr);

    // A job that would run for ten minutes, stopped.
    let sleep = scratch.oxray(&["job", "submit", "--no-wait", "--", "/bin/sleep", "600"]);
    assert!(sleep.ok, "{}", sleep.stderr);
    let sleeper = sleep.stdout.trim().to_owned();
    let pid: i32 = sleep
        .stderr
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|p| p.parse().ok())
        .expect("a pid");
    let stop = scratch.oxray(&["job", "stop", &sleeper]);
    assert!(
        stop.ok && stop.stdout.contains("stopped"),
        "{}{}",
        stop.stdout,
        stop.stderr
    );
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "the job's process still runs"
    );

    let list = scratch.oxray(&["job", "list"]);
    assert!(list.ok, "{}", list.stderr);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", list.stdout);
    assert!(
        lines[0].starts_with("job-1  succeeded  quickstart"),
        "{}",
        list.stdout
    );
    assert!(
        lines[1].starts_with("job-2  succeeded  cat data/input.txt"),
        "{}",
        list.stdout
    );
    assert!(lines[2].starts_with("job-3  failed"), "{}", list.stdout);
    assert!(
        lines[3].starts_with("job-4  stopped  sleep 600"),
        "{}",
        list.stdout
    );

    // Bad requests: refused, saying what to do.
    let unknown = scratch.oxray(&["job", "status", "job-99"]);
    assert!(
        !unknown.ok && unknown.stderr.contains("oxray job list"),
        "{}",
        unknown.stderr
    );
    let readme = scratch.0.join("README.txt");
    std::fs::write(&readme, "not a program").expect("file");
    let not_exe = scratch.oxray(&["job", "submit", "--", readme.to_str().expect("path")]);
    assert!(
        !not_exe.ok && not_exe.stderr.contains("is not an executable file"),
        "{}",
        not_exe.stderr
    );
    let nothing = scratch.oxray(&["job", "submit"]);
    assert_eq!(nothing.code, Some(2), "{}", nothing.stderr);
    drop(cluster);
}
