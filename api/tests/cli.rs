//! The `oxray` command: start a node, inspect it, stop it; bad input is refused clearly.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{free_port, wait_gone};

const OXRAY: &str = env!("CARGO_BIN_EXE_oxray");

fn mode(m: u32) -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(m)
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::os::unix::fs::MetadataExt::mode(&std::fs::symlink_metadata(path).expect("stat")) & 0o777
}

/// A temp dir of its own for one test (the CLI's `TMPDIR` there), removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("oxray-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    /// The CLI's state directory under this `TMPDIR`.
    fn state(&self) -> std::path::PathBuf {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        self.0.join(format!("oxray-{uid}"))
    }

    /// Runs `oxray ARGS` with `TMPDIR` here and no secret in the environment.
    fn oxray(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(OXRAY)
            .args(args)
            .env("TMPDIR", &self.0)
            .env_remove("OXRAY_ADDRESS")
            .env_remove("OXRAY_CLUSTER_SECRET")
            .output()
            .expect("run oxray");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
    /// Stops the node however the test ends (a failed assertion must not leave it running).
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = oxray(&["stop", "--address", &self.0]);
        }
    }
    let _stop = Stop(address.clone());
    // `start` returned only once the node accepts clients: no sleep needed.
    let (ok, out) = oxray(&["status", "--address", &address]);
    assert!(ok, "{out}");
    assert!(
        out.contains("{CPU: 3, gpu: 1} available of {CPU: 3, gpu: 1}"),
        "{out}"
    );
    assert!(out.contains("100.0 MB"), "{out}");
    assert!(out.contains("placement groups: 0"), "{out}");
    // A placement group a driver made is listed with its bundles and where they are.
    {
        let _driver = oxray::init_with(oxray::Config::new().address(address.clone()))
            .expect("attach a driver");
        let pg = oxray::PlacementGroupOptions::new(
            vec![oxray::bundle(&[("gpu", 1.0)])],
            oxray::PlacementStrategy::StrictPack,
        )
        .name("cli-pg")
        .create()
        .expect("a placement group");
        pg.ready().expect("placed");
        let (ok, out) = oxray(&["status", "--address", &address]);
        assert!(ok, "{out}");
        assert!(out.contains("placement groups: 1"), "{out}");
        assert!(out.contains("name \"cli-pg\" StrictPack Created"), "{out}");
        assert!(out.contains("bundle 0: {gpu: 1} on node"), "{out}");
        // The node's gpu is now the group's.
        let resources = out
            .lines()
            .find(|l| l.trim_start().starts_with("resources:"))
            .unwrap_or_default();
        assert!(
            resources.contains("gpu_group_0_") && !resources.contains(" gpu: 1"),
            "{out}"
        );
    }
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
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let remembered = std::env::temp_dir().join(format!("oxray-{uid}/address"));
    let still = std::fs::read_to_string(remembered).unwrap_or_default();
    assert_ne!(
        still.trim(),
        address,
        "stop forgets the address of the node it stopped"
    );
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let (ok, out) = oxray(&["start", "--head", "--num-cpus", "many"]);
    assert!(!ok);
    assert!(out.contains("`many` is not a number of CPUs"), "{out}");
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
    assert!(out.contains("'99999' for '--port <PORT>'"), "{out}");
    let (ok, out) = oxray(&[
        "start",
        "--address",
        "127.0.0.1:1",
        "--health-check-failure-threshold",
        "five",
    ]);
    assert!(!ok);
    assert!(
        out.contains("'five' for '--health-check-failure-threshold <N>'"),
        "{out}"
    );
    let (ok, out) = oxray(&["start", "--head", "--address", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(out.contains("cannot be used with"), "{out}");
    let (ok, out) = oxray(&["frobnicate"]);
    assert!(!ok);
    assert!(
        out.contains("unrecognized subcommand 'frobnicate'"),
        "{out}"
    );
}

/// A misspelt flag is refused (exit code 2, nothing started) with the flag it resembles; it
/// used to be ignored, starting a node with defaults.
#[test]
fn a_typo_in_a_flag_exits_2_with_a_suggestion() {
    let scratch = Scratch::new("typo");
    let out = Command::new(OXRAY)
        .args(["start", "--head", "--num-cpu", "8"])
        .env("TMPDIR", &scratch.0)
        .env_remove("OXRAY_ADDRESS")
        .output()
        .expect("run oxray");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("a similar argument exists: '--num-cpus'"),
        "{text}"
    );
    assert!(
        !scratch.state().join("address").exists(),
        "a node was started anyway"
    );
}

/// Every subcommand and flag is in `--help`; completions are generated for the shells.
#[test]
fn help_lists_every_subcommand_and_flag_and_completions_come_out() {
    let (ok, out) = oxray(&["--help"]);
    assert!(ok, "{out}");
    for sub in [
        "start",
        "status",
        "wait",
        "stop",
        "up",
        "down",
        "completions",
    ] {
        assert!(out.contains(&format!("  {sub} ")), "`{sub}` missing: {out}");
    }
    assert!(
        !out.contains("__node"),
        "the internal subcommand shows: {out}"
    );
    let (ok, out) = oxray(&["start", "--help"]);
    assert!(ok, "{out}");
    for flag in [
        "--head",
        "--address",
        "--port",
        "--num-cpus",
        "--object-store-memory",
        "--resources",
        "--session",
        "--node-ip-address",
        "--cluster-name",
        "--secret-file",
        "--health-check-period-ms",
        "--health-check-failure-threshold",
        "--health-check-timeout-ms",
        "--block",
    ] {
        assert!(out.contains(flag), "`{flag}` missing: {out}");
    }
    for (sub, flags) in [
        (
            "status",
            &["--address", "--file", "--secret-file", "--cluster-name"][..],
        ),
        ("wait", &["--nodes", "--timeout", "--address"][..]),
        ("stop", &["--address"][..]),
    ] {
        let (ok, out) = oxray(&[sub, "--help"]);
        assert!(ok, "{out}");
        for flag in flags {
            assert!(out.contains(flag), "`{sub} {flag}` missing: {out}");
        }
    }
    let (ok, out) = oxray(&["completions", "bash"]);
    assert!(
        ok && out.contains("_oxray()") && out.contains("--num-cpus"),
        "{out}"
    );
    let (ok, out) = oxray(&["completions", "zsh"]);
    assert!(ok && out.contains("#compdef oxray"), "{out}");
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
    std::fs::set_permissions(dir.join("cluster.secret"), mode(0o600)).expect("chmod");
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
    // Nothing ran yet: no object bytes served, no connection relayed.
    assert!(
        out.contains(
            "across nodes: 0.0 MB of objects served to other nodes; 0 connections relayed"
        ),
        "{out}"
    );
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

/// `oxray status` and `stop` without an address ask the nodes started here, last first: when
/// the last one started (a member) was killed, `status` still shows the cluster, from the head.
#[test]
fn status_without_an_address_still_shows_the_cluster_when_the_last_node_died() {
    let scratch = Scratch::new("deadmember");
    let secret = scratch.0.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("secret");
    std::fs::set_permissions(&secret, mode(0o600)).expect("chmod");
    let secret = secret.display().to_string();
    let port = free_port().to_string();
    let tag = std::process::id();
    let (head, member) = (format!("dead{tag}-head"), format!("dead{tag}-member"));
    let (ok, out) = scratch.oxray(&[
        "start",
        "--head",
        "--port",
        &port,
        "--num-cpus",
        "1",
        "--session",
        &head,
        "--secret-file",
        &secret,
    ]);
    assert!(ok, "{out}");
    struct Stop<'a>(&'a Scratch, String);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.oxray(&["stop", "--address", &self.1]);
        }
    }
    let _stop_head = Stop(&scratch, format!("unix:@{head}"));
    let head_peer = format!("127.0.0.1:{port}");
    let (ok, out) = scratch.oxray(&[
        "start",
        "--address",
        &head_peer,
        "--num-cpus",
        "1",
        "--session",
        &member,
        "--secret-file",
        &secret,
        "--node-ip-address",
        "127.0.0.1",
    ]);
    assert!(ok, "{out}");
    let _stop_member = Stop(&scratch, format!("unix:@{member}"));
    let (ok, out) = scratch.oxray(&["status"]);
    assert!(ok, "{out}");
    assert!(out.contains("2 nodes (2 alive)"), "{out}");
    let pid: i32 = out
        .lines()
        .find(|l| l.contains(&format!("at unix:@{member} (raylet pid")))
        .and_then(|l| l.rsplit("pid ").next())
        .and_then(|p| p.trim_end_matches(')').parse().ok())
        .expect("the member's pid");
    // SAFETY: kill(2) has no memory effects; `pid` is the member node this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "the member did not exit"
    );
    let (ok, out) = scratch.oxray(&["status"]);
    assert!(ok, "{out}");
    assert!(out.contains("2 nodes"), "{out}");
    assert!(
        out.contains(&format!("at unix:@{head} (raylet pid")),
        "{out}"
    );
    assert!(
        out.contains("cannot reach the oxray node"),
        "the dead one is named: {out}"
    );
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

/// A foreground (`--block`) node process, killed and reaped on drop (its session directory
/// goes with it).
struct Foreground(std::process::Child, String);

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(oxray_raylet::files::session_dir(&self.1));
    }
}

fn foreground(args: &[&str]) -> Foreground {
    let session = args
        .iter()
        .position(|a| *a == "--session")
        .and_then(|i| args.get(i + 1))
        .map_or_else(String::new, |s| (*s).to_owned());
    Foreground(
        Command::new(OXRAY)
            .args(["start", "--block"])
            .args(args)
            .env("OXRAY_CLUSTER_SECRET", "0123456789abcdef0123456789abcdef")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start a foreground node"),
        session,
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

#[test]
fn traversal_session_and_cluster_names_are_refused() {
    let scratch = Scratch::new("names");
    let evil = format!("../../evil-{}", std::process::id());
    for args in [
        ["start", "--head", "--session", evil.as_str()],
        ["start", "--head", "--cluster-name", "a/b"],
        ["start", "--head", "--session", ".."],
    ] {
        let (ok, out) = scratch.oxray(&args);
        assert!(!ok, "{out}");
        assert!(out.contains("is not allowed"), "{out}");
    }
    // Nothing was written outside the state directory (the log would have gone to
    // $TMPDIR/../evil-PID.log).
    let escaped = scratch.state().join(format!("{evil}.log"));
    assert!(!escaped.exists(), "{} was written", escaped.display());
}

#[test]
fn a_readable_secret_file_is_refused_with_the_chmod_hint() {
    let scratch = Scratch::new("secret");
    let secret = scratch.0.join("cluster.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("secret");
    std::fs::set_permissions(&secret, mode(0o644)).expect("chmod");
    let path = secret.display().to_string();
    let hint = format!("chmod 600 {path}");
    let (ok, out) = scratch.oxray(&["start", "--address", "127.0.0.1:1", "--secret-file", &path]);
    assert!(!ok && out.contains(&hint), "{out}");
    let (ok, out) = scratch.oxray(&["status", "--address", "127.0.0.1:1", "--secret-file", &path]);
    assert!(!ok && out.contains(&hint), "{out}");
    // The same file in a cluster config file.
    let file = scratch.0.join("c.toml");
    std::fs::write(
        &file,
        "cluster_name = \"c\"\nsecret_file = \"cluster.secret\"\n[head]\naddress = \"127.0.0.1\"\nport = 7000\n",
    )
    .expect("toml");
    let (ok, out) = scratch.oxray(&["up", &file.display().to_string()]);
    assert!(!ok && out.contains(&hint), "{out}");
}

#[test]
fn the_state_dir_is_private_and_links_there_are_refused() {
    let scratch = Scratch::new("state");
    let state = scratch.state();
    // 0755, as older versions made it: tightened to 0700 (the documented choice).
    std::fs::create_dir(&state).expect("state dir");
    std::fs::set_permissions(&state, mode(0o755)).expect("chmod");
    // Fails after the state directory was checked: a member without the cluster's secret.
    let (ok, out) = scratch.oxray(&["start", "--address", "127.0.0.1:1"]);
    assert!(!ok && out.contains("needs its secret"), "{out}");
    assert_eq!(mode_of(&state), 0o700);
    assert_eq!(mode_of(&state.join("sessions")), 0o700);
    // Writable by others: refused, naming the path and the fix.
    std::fs::set_permissions(&state, mode(0o777)).expect("chmod");
    let (ok, out) = scratch.oxray(&["start", "--head"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&state.display().to_string()) && out.contains("chmod 700"),
        "{out}"
    );
    std::fs::remove_dir_all(&state).expect("rm");
    // A link planted where the state directory goes: refused and not followed.
    let elsewhere = scratch.0.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("dir");
    std::os::unix::fs::symlink(&elsewhere, &state).expect("symlink");
    let (ok, out) = scratch.oxray(&["start", "--head"]);
    assert!(!ok && out.contains("symbolic link"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&elsewhere).expect("read").collect();
    assert!(left.is_empty(), "files written through the link: {left:?}");
}

#[test]
fn made_secrets_and_logs_are_private_and_stop_removes_the_secret() {
    let scratch = Scratch::new("made");
    let session = format!("oxray-made-{}", std::process::id());
    let port = free_port().to_string();
    let (ok, out) = scratch.oxray(&["start", "--head", "--port", &port, "--session", &session]);
    assert!(ok, "{out}");
    let secret = out
        .split("--secret-file ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the join hint names the secret")
        .to_owned();
    let secret = std::path::PathBuf::from(secret);
    assert_eq!(mode_of(&secret), 0o600);
    assert_eq!(mode_of(&scratch.state()), 0o700);
    assert_eq!(
        mode_of(&scratch.state().join(format!("{session}.log"))),
        0o600
    );
    let (ok, out) = scratch.oxray(&["stop", "--address", &format!("unix:@{session}")]);
    assert!(ok, "{out}");
    assert!(!secret.exists(), "stop left the secret the CLI made");
    assert_gone(&format!("unix:@{session}"));
}

#[test]
fn session_dirs_of_killed_nodes_are_swept_by_the_next_start() {
    let scratch = Scratch::new("sweep");
    let tag = std::process::id();
    let (killed, next) = (format!("oxray-killed-{tag}"), format!("oxray-next-{tag}"));
    // A cluster head (only cluster nodes keep a session directory), with a secret the CLI made.
    let port = free_port().to_string();
    let (ok, out) = scratch.oxray(&["start", "--head", "--port", &port, "--session", &killed]);
    assert!(ok, "{out}");
    let pid: i32 = out
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .and_then(|p| p.trim().parse().ok())
        .expect("the node's pid");
    let dir = scratch.state().join("sessions").join(&killed);
    assert!(
        dir.join("pid").exists(),
        "no session directory at {}",
        dir.display()
    );
    // SAFETY: plain kill(2) of the node this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert_gone(&format!("unix:@{killed}"));
    assert!(dir.exists(), "a killed node cannot clean up");
    let (ok, out) = scratch.oxray(&["start", "--head", "--session", &next]);
    assert!(ok, "{out}");
    let start = Instant::now();
    // The killed node is reaped by whoever adopted it; until then it is a zombie (dead too).
    while dir.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not swept: {}",
            dir.display()
        );
        let _ = scratch.oxray(&["stop", "--address", "unix:@nobody-here"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = scratch.oxray(&["stop", "--address", &format!("unix:@{next}")]);
    assert!(ok, "{out}");
    assert_gone(&format!("unix:@{next}"));
}

/// `oxray memory` lists a node's objects (none here: drivers put them; the runtime tests cover
/// a full listing) with its totals, groups by owner on request, and refuses an unknown grouping.
#[test]
fn memory_lists_a_nodes_objects_and_groups_them() {
    let scratch = Scratch::new("memory");
    // A node killed earlier left its entry in the list of nodes started here.
    std::fs::create_dir_all(scratch.state()).expect("state dir");
    std::fs::set_permissions(scratch.state(), mode(0o700)).expect("chmod");
    std::fs::write(scratch.state().join("nodes"), "unix:@killed-long-ago\n").expect("nodes");
    let session = format!("mem{}", std::process::id());
    let (ok, out) = scratch.oxray(&["start", "--head", "--num-cpus", "1", "--session", &session]);
    assert!(ok, "{out}");
    let address = format!("unix:@{session}");
    let listed = std::fs::read_to_string(scratch.state().join("nodes")).expect("nodes");
    assert_eq!(
        listed.trim(),
        address,
        "dead entries are dropped when a node starts"
    );
    let (ok, out) = scratch.oxray(&["memory"]);
    let (stop_ok, stop_out) = scratch.oxray(&["stop", "--address", &address]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "at {address}: 0 objects, 0.0 MB in memory, 0.0 MB spilled"
        )),
        "{out}"
    );
    assert!(stop_ok, "{stop_out}");
    let (ok, out) = scratch.oxray(&["memory", "--group-by", "colour"]);
    assert!(!ok);
    assert!(out.contains("possible values: owner, node"), "{out}");
}

/// A background node writes a log with levels and times (`oxray logs` prints it; `OXRAY_LOG`
/// filters it), and `logs --follow` prints what comes next until the node stops.
#[test]
fn logs_print_and_follow_a_nodes_log_with_levels_and_filters() {
    let scratch = Scratch::new("logs");
    let session = format!("logs{}", std::process::id());
    let address = format!("unix:@{session}");
    let (ok, out) = scratch.oxray(&["start", "--head", "--num-cpus", "1", "--session", &session]);
    assert!(ok, "{out}");
    let mut follow = Command::new(OXRAY)
        .args(["logs", "--follow", "--address", &address])
        .env("TMPDIR", &scratch.0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run oxray logs --follow");
    let (ok, out) = scratch.oxray(&["logs"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(" INFO ") && out.contains("node started"),
        "{out}"
    );
    assert!(out.contains(&format!("address={address}")), "{out}");
    let (ok, stop_out) = scratch.oxray(&["stop", "--address", &address]);
    assert!(ok, "{stop_out}");
    // The follower ends by itself once the node is gone (it checks every second).
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = follow.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        let _ = tx.send(text);
    });
    let followed = rx.recv_timeout(Duration::from_secs(30));
    let _ = follow.kill();
    let _ = follow.wait();
    let followed = followed.expect("logs --follow did not end after the node stopped");
    assert!(followed.contains("node stopped"), "{followed}");

    // A filter that leaves out info lines.
    let quiet = format!("logq{}", std::process::id());
    let out = Command::new(OXRAY)
        .args(["start", "--head", "--num-cpus", "1", "--session", &quiet])
        .env("TMPDIR", &scratch.0)
        .env("OXRAY_LOG", "warn")
        .env_remove("OXRAY_ADDRESS")
        .output()
        .expect("start");
    assert!(out.status.success(), "{out:?}");
    let (ok, log) = scratch.oxray(&["logs", "--address", &format!("unix:@{quiet}")]);
    let _ = scratch.oxray(&["stop", "--address", &format!("unix:@{quiet}")]);
    assert!(ok, "{log}");
    assert!(
        !log.contains("node started"),
        "OXRAY_LOG=warn let info through: {log}"
    );

    // A malformed filter is reported, and the node runs with the default one.
    let odd = format!("logm{}", std::process::id());
    let out = Command::new(OXRAY)
        .args(["start", "--head", "--num-cpus", "1", "--session", &odd])
        .env("TMPDIR", &scratch.0)
        .env("OXRAY_LOG", "oxray_raylet=loudest")
        .env_remove("OXRAY_ADDRESS")
        .output()
        .expect("start");
    assert!(out.status.success(), "{out:?}");
    let (ok, log) = scratch.oxray(&["logs", "--address", &format!("unix:@{odd}")]);
    let _ = scratch.oxray(&["stop", "--address", &format!("unix:@{odd}")]);
    assert!(ok, "{log}");
    assert!(log.contains("is not a log filter"), "{log}");
    assert!(
        log.contains("node started"),
        "the default filter applies: {log}"
    );
}

/// The quickstart example's executable (built by `cargo test --workspace` with the other
/// targets; built here when this test runs alone).
fn quickstart() -> std::path::PathBuf {
    let dir = std::path::Path::new(OXRAY).parent().expect("target dir");
    let exe = dir.join("examples").join("quickstart");
    if !exe.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-p", "oxray-examples", "--example", "quickstart"])
            .status()
            .expect("run cargo");
        assert!(built.success(), "building the quickstart failed");
    }
    exe
}

/// `oxray timeline` after the quickstart ran attached to a node: valid Chrome trace JSON with
/// one complete event per task the quickstart submitted (10,011), each on a worker process,
/// named after its function.
#[test]
fn timeline_of_the_quickstart_has_one_event_per_task() {
    let scratch = Scratch::new("timeline");
    let session = format!("tl{}", std::process::id());
    let (ok, out) = scratch.oxray(&["start", "--head", "--num-cpus", "2", "--session", &session]);
    assert!(ok, "{out}");
    let address = format!("unix:@{session}");
    let run = Command::new(quickstart())
        .env("TMPDIR", &scratch.0)
        .env("OXRAY_ADDRESS", &address)
        .output()
        .expect("run the quickstart");
    let trace_path = scratch.0.join("trace.json");
    let (tl_ok, tl_out) = scratch.oxray(&["timeline", "-o", trace_path.to_str().expect("path")]);
    let (stop_ok, stop_out) = scratch.oxray(&["stop", "--address", &address]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(tl_ok, "{tl_out}");
    assert!(stop_ok, "{stop_out}");
    assert!(tl_out.contains("wrote 10011 task"), "{tl_out}");
    let text = std::fs::read_to_string(&trace_path).expect("trace");
    let trace: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let runs: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(runs.len(), 10_011);
    let named = |name: &str| runs.iter().filter(|e| e["name"] == name).count();
    assert_eq!(named("quickstart::square"), 10_005, "{:?}", runs.first());
    assert_eq!(named("quickstart::add"), 1);
    assert_eq!(named("quickstart::mean"), 4);
    assert_eq!(named("quickstart::checked_sqrt"), 1);
    assert!(runs.iter().all(|e| e["cat"] == "task"
        && e["ts"].as_u64().is_some()
        && e["dur"].as_u64().is_some()
        && e["tid"].as_u64().is_some_and(|pid| pid != 0)));
    // The failing task is marked so.
    assert!(runs
        .iter()
        .any(|e| e["name"] == "quickstart::checked_sqrt" && e["args"]["ok"] == false));
    // One process per node, named.
    assert!(events
        .iter()
        .any(|e| e["ph"] == "M" && e["name"] == "process_name"));
}
