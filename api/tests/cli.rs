//! The `oxray` command: start a node, inspect it, stop it; bad input is refused clearly.

use std::process::Command;
use std::time::{Duration, Instant};

const OXRAY: &str = env!("CARGO_BIN_EXE_oxray");

fn oxray(args: &[&str]) -> (bool, String) {
    let out = Command::new(OXRAY)
        .args(args)
        .env_remove("OXRAY_ADDRESS")
        .output()
        .expect("run oxray");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Removes, when dropped, the logs that nodes started by this test process left in the CLI's
/// state directory (`$TMPDIR/oxray-<uid>/<session>.log`; every session here names our pid).
struct NodeLogs;

impl Drop for NodeLogs {
    fn drop(&mut self) {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let dir = std::env::temp_dir().join(format!("oxray-{uid}"));
        let pid = std::process::id().to_string();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") && name.contains(&pid) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[test]
fn start_status_stop() {
    let _logs = NodeLogs;
    let session = format!("oxray-cli-test-{}", std::process::id());
    let (ok, out) = oxray(&[
        "start",
        "--head",
        "--num-cpus",
        "3",
        "--object-store-memory",
        "100000000",
        "--resources",
        "gpu=1",
        "--session",
        &session,
    ]);
    assert!(ok, "{out}");
    let address = out.lines().next().expect("address line").trim().to_owned();
    assert_eq!(address, format!("unix:@{session}"));
    // `start` returned only once the node accepts clients: no sleep needed.
    let (ok, out) = oxray(&["status", "--address", &address]);
    assert!(ok, "{out}");
    assert!(
        out.contains("{CPU: 3, gpu: 1} available of {CPU: 3, gpu: 1}"),
        "{out}"
    );
    assert!(out.contains("100.0 MB"), "{out}");
    let (ok, out) = oxray(&["stop", "--address", &address]);
    assert!(ok, "{out}");
    let start = Instant::now();
    let mut gone = false;
    while start.elapsed() < Duration::from_secs(10) {
        if !oxray(&["status", "--address", &address]).0 {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone, "the node still answers after stop");
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let (ok, out) = oxray(&["start", "--head", "--num-cpus", "many"]);
    assert!(!ok);
    assert!(out.contains("--num-cpus: `many` is not a number"), "{out}");
    let (ok, out) = oxray(&["status", "--address", "unix:@no-such-oxray-node-here"]);
    assert!(!ok);
    assert!(out.contains("cannot reach the oxray node"), "{out}");
    let (ok, out) = oxray(&["status", "--address", "localhost:1234"]);
    assert!(!ok);
    assert!(out.contains("needs its secret"), "{out}");
    let (ok, out) = oxray(&["start", "--address", "unix:@somewhere"]);
    assert!(!ok);
    assert!(out.contains("is not a head's HOST:PORT"), "{out}");
    let (ok, out) = oxray(&["start", "--num-cpus", "2"]);
    assert!(!ok);
    assert!(out.contains("say what to start"), "{out}");
    let (ok, out) = oxray(&["start", "--head", "--port", "99999"]);
    assert!(!ok);
    assert!(
        out.contains("--port: `99999` is not a port number"),
        "{out}"
    );
    let (ok, out) = oxray(&[
        "start",
        "--address",
        "127.0.0.1:1",
        "--health-check-failure-threshold",
        "five",
    ]);
    assert!(!ok);
    assert!(
        out.contains("--health-check-failure-threshold: `five` is not a whole number"),
        "{out}"
    );
    let (ok, out) = oxray(&["frobnicate"]);
    assert!(!ok);
    assert!(out.contains("usage"), "{out}");
}

/// A free UDP port on loopback for a head (QUIC is UDP).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn up_status_down_from_a_config_file() {
    let _logs = NodeLogs;
    let dir = std::env::temp_dir().join(format!("oxray-up-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("cluster.secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("secret");
    let name = format!("uptest{}", std::process::id());
    let port = free_port();
    let file = dir.join("cluster.toml");
    std::fs::write(
        &file,
        format!(
            r#"
cluster_name = "{name}"
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
resources = {{ gpu = 1 }}
object_store_memory = 100_000_000
"#
        ),
    )
    .expect("write the file");
    let file = file.display().to_string();
    let (ok, out) = oxray(&["up", &file]);
    // Whatever happens next, stop what was started.
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = oxray(&["down", &self.0]);
        }
    }
    let down = Down(file.clone());
    assert!(ok, "{out}");
    assert!(out.contains("is up: 3 nodes"), "{out}");
    // `up` returned once every node was registered: no sleep needed.
    let (ok, out) = oxray(&["status", "--file", &file]);
    assert!(ok, "{out}");
    assert!(out.contains("3 nodes (3 alive)"), "{out}");
    assert!(out.contains("{CPU: 1, gpu: 1}"), "{out}");
    assert!(out.contains(&format!("head at 127.0.0.1:{port}")), "{out}");
    // The local address of the head answers too, with the whole cluster.
    let (ok, out) = oxray(&["status", "--address", &format!("unix:@{name}-head")]);
    assert!(ok, "{out}");
    assert!(out.contains("3 nodes (3 alive)"), "{out}");
    drop(down);
    for session in ["head", "node1", "node2"] {
        let address = format!("unix:@{name}-{session}");
        let start = Instant::now();
        while oxray(&["status", "--address", &address]).0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{session} still answers after down"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_malformed_config_file_is_rejected_with_its_line() {
    let dir = std::env::temp_dir().join(format!("oxray-bad-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "cluster_name = \"x\"\nsecret = \"0123456789abcdef0123\"\n[head]\naddress = \"127.0.0.1\"\nport = 7000\nnum_cpu = 2\n",
    )
    .expect("write");
    let (ok, out) = oxray(&["up", &file.display().to_string()]);
    assert!(!ok);
    assert!(out.contains("line 6"), "{out}");
    assert!(out.contains("num_cpu"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (at most 10 s) until nothing answers at `address`.
fn assert_gone(address: &str) {
    let start = Instant::now();
    while oxray(&["status", "--address", address]).0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{address} still answers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A foreground (`--block`) node process, killed and reaped on drop.
struct Foreground(std::process::Child);

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn foreground(args: &[&str]) -> Foreground {
    Foreground(
        Command::new(OXRAY)
            .args(["start", "--block"])
            .args(args)
            .env("OXRAY_CLUSTER_SECRET", "0123456789abcdef0123456789abcdef")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start a foreground node"),
    )
}

#[test]
fn a_member_started_before_its_head_waits_for_it_and_wait_counts_the_nodes() {
    let _logs = NodeLogs;
    use std::io::BufRead;
    let port = free_port().to_string();
    let head_address = format!("127.0.0.1:{port}");
    let tag = std::process::id();
    let member_session = format!("oxray-wait-m-{tag}");
    let head_session = format!("oxray-wait-h-{tag}");
    let mut member = foreground(&["--address", &head_address, "--session", &member_session]);
    // Nothing answers at the head's address yet: the member says it waits (after one 5 s try,
    // which a plain QUIC dial would have ended with an error).
    let stderr = member.0.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let waiting = lines
        .by_ref()
        .take(5)
        .map_while(Result::ok)
        .find(|l| l.contains("waiting for the head"));
    assert!(waiting.is_some(), "the member did not wait for its head");
    // Keep reading, so the member's later messages do not hit a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let mut head = foreground(&["--head", "--port", &port, "--session", &head_session]);
    let (ok, out) = oxray(&[
        "wait",
        "--address",
        &format!("unix:@{head_session}"),
        "--nodes",
        "2",
        "--timeout",
        "30",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("2 nodes alive"), "{out}");
    // The member advertises the address its packets to the head leave from (loopback here).
    let (ok, out) = oxray(&["status", "--address", &format!("unix:@{head_session}")]);
    assert!(ok, "{out}");
    assert!(out.contains("2 nodes (2 alive)"), "{out}");
    let member_line = out
        .lines()
        .find(|l| l.contains(&format!("session {member_session}")))
        .unwrap_or_default();
    assert!(member_line.contains("alive at 127.0.0.1:"), "{out}");
    // More nodes than there are: a clear error once the timeout passes.
    let (ok, out) = oxray(&[
        "wait",
        "--address",
        &format!("unix:@{head_session}"),
        "--nodes",
        "3",
        "--timeout",
        "0.3",
    ]);
    assert!(!ok && out.contains("2 of 3 nodes alive"), "{out}");
    // A foreground node ends when stopped, successfully.
    for (node, session) in [(&mut member, &member_session), (&mut head, &head_session)] {
        let (ok, out) = oxray(&["stop", "--address", &format!("unix:@{session}")]);
        assert!(ok, "{out}");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = node.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{session} did not end"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{session} ended with {status}");
    }
}

#[test]
fn the_slurm_script_starts_a_node_per_host_and_runs_the_program_attached() {
    let _logs = NodeLogs;
    // Stand-ins for Slurm's commands: three hosts, all this machine on loopback.
    let dir = std::env::temp_dir().join(format!("oxray-slurm-test-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("temp dir");
    let fakes = [
        ("scontrol", "#!/bin/sh\nprintf 'n1\\nn2\\nn3\\n'\n"),
        // srun [options] COMMAND...: runs the command here.
        (
            "srun",
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do case \"$1\" in -w) shift 2;; -*) shift;; *) break;; esac; done\nexec \"$@\"\n",
        ),
        ("hostname", "#!/bin/sh\necho 127.0.0.1\n"),
    ];
    for (name, text) in fakes {
        let path = bin.join(name);
        std::fs::write(&path, text).expect("write a fake command");
        let mut perms = std::fs::metadata(&path).expect("metadata").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).expect("chmod");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/slurm.sh");
    let job = format!("{}", std::process::id());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The "program" is `oxray status`: it attaches through OXRAY_ADDRESS like any driver.
    let out = Command::new("bash")
        .arg(script)
        .args([OXRAY, "status"])
        .env("PATH", path)
        .env("SLURM_JOB_NODELIST", "n[1-3]")
        .env("SLURM_JOB_ID", &job)
        .env("SLURM_CPUS_PER_TASK", "1")
        .env("OXRAY", OXRAY)
        .env("OXRAY_PORT", free_port().to_string())
        .env("OXRAY_SECRET_DIR", &dir)
        .env_remove("OXRAY_ADDRESS")
        .output()
        .expect("run the script");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("3 nodes (3 alive)"), "{text}");
    for host in ["n1", "n2", "n3"] {
        assert!(
            text.contains(&format!("session oxray-{job}-{host}")),
            "{text}"
        );
    }
    // The script ended its steps (the nodes) and removed the job's secret.
    for host in ["n1", "n2", "n3"] {
        assert_gone(&format!("unix:@oxray-{job}-{host}"));
    }
    assert!(!dir.join(format!(".oxray-{job}.secret")).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
