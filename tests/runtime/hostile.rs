//! Hostile input: peers that lie about frame lengths before proving the secret, local clients
//! that announce huge first messages or connect and say nothing. The raylet must stay small,
//! bounded in threads, and keep serving the work of honest drivers meanwhile.

use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::{Duration, Instant};

use oxray_raylet::cluster::{self, tls};

use crate::node_core::{driver, head, raylet, status_within, value, DRIVER, SECRET};

/// A field of `/proc/<pid>/status` in its unit (kB for memory), 0 if missing.
fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A frame header announcing a payload of `len` bytes.
fn header(len: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h
}

/// 16 QUIC connections (more than the per-address cap of unauthenticated ones), each sending
/// only a frame header announcing 64 MiB before proving the secret: the head never reserves
/// that memory (it refuses any first message over 4 KiB), stays under 64 MiB of anonymous
/// memory, and meanwhile serves a driver's tasks and a peer that does know the secret.
#[test]
fn unauthenticated_peers_announcing_huge_frames_cost_the_head_little() {
    let _load = crate::no_cpu_hog();
    let h = head("qa", &["cpus=2", "resources=m1:2;m2:2"]);
    let mut work = driver(&["steady", "4"], &h);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut peak = 0;
    rt.block_on(async {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("ep");
        ep.set_default_client_config(tls::client_config().expect("tls"));
        let addr = h.peer.parse().expect("peer addr");
        let mut held = Vec::new();
        for _ in 0..16 {
            let Ok(connecting) = ep.connect(addr, "oxray") else {
                continue;
            };
            // Connections over the cap are refused: that is part of what is tested.
            let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await
            else {
                continue;
            };
            if let Ok((mut send, recv)) = conn.open_bi().await {
                let _ = send.write_all(&header(64 << 20)).await;
                held.push((conn, send, recv));
            }
        }
        // Every lie is answered with a refusal (or the connection closes) without the head
        // waiting for the 64 MiB.
        for (_, _, recv) in &mut held {
            let mut buf = vec![0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut buf)).await;
            peak = peak.max(status_field(h.proc.pid(), "RssAnon:"));
        }
    });
    peak = peak.max(status_field(h.proc.pid(), "RssAnon:"));
    assert!(peak > 0, "read the head's memory");
    assert!(
        peak < 64 << 10,
        "the head grew to {peak} kB of anonymous memory under the attack"
    );
    let view = cluster::probe(&h.peer, "test", SECRET.as_bytes());
    assert!(
        view.is_ok(),
        "a peer with the secret is still served: {view:?}"
    );
    let status = work.exit_within(Duration::from_secs(120));
    assert!(status.is_some_and(|s| s.success()), "{}", work.log());
    assert!(
        value(&work.out(), "tasks").parse::<u32>().unwrap_or(0) > 0,
        "{}",
        work.log()
    );
    assert!(
        h.proc.log().contains("over the 4096-byte limit"),
        "the head says why it refused: {}",
        h.proc.log()
    );
}

/// Local clients announcing 64 MiB first messages, then 300 connections that say nothing: the
/// raylet's memory and threads stay bounded (first messages are capped at 64 KiB, one process
/// may hold at most 16 silent connections, each for at most 5 s), and a driver runs its tasks
/// throughout, its workers registering while the attack goes on.
#[test]
fn local_clients_that_lie_or_say_nothing_are_bounded() {
    let node = raylet("la", &["cpus=2", "resources=m1:2;m2:2"]);
    let pid = node.proc.pid();
    let mut work = driver(&["steady", "4"], &node);
    let name = node.address.trim_start_matches("unix:@").to_owned();
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
    let threads_before = status_field(pid, "Threads:");
    let mut liars = Vec::new();
    for _ in 0..8 {
        let mut s = UnixStream::connect_addr(&addr).expect("connect");
        let _ = s.write_all(&header(64 << 20));
        let _ = s.write_all(&[7u8; 1024]);
        liars.push(s);
    }
    let mut silent = Vec::new();
    let mut peak_threads = 0;
    for _ in 0..300 {
        if let Ok(s) = UnixStream::connect_addr(&addr) {
            silent.push(s);
        }
        peak_threads = peak_threads.max(status_field(pid, "Threads:"));
    }
    let rss = status_field(pid, "RssAnon:");
    assert!(
        rss < 64 << 10,
        "the raylet grew to {rss} kB under the attack"
    );
    assert!(
        peak_threads < threads_before + 40,
        "threads went from {threads_before} to {peak_threads} with 300 silent connections"
    );
    let status = work.exit_within(Duration::from_secs(120));
    assert!(status.is_some_and(|s| s.success()), "{}", work.log());
    // The silent ones are dropped after the first-message deadline: threads come back.
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_field(pid, "Threads:") > threads_before + 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = status_field(pid, "Threads:");
    assert!(
        after <= threads_before + 8,
        "threads stayed at {after} (from {threads_before}) after the silent connections timed out"
    );
    drop(silent);
    drop(liars);
}

/// What `oxray-test-driver probe-socket NAME` saw, run as `uid` (when given).
fn probe_socket(name: &str, uid: Option<u32>) -> String {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // Another user may not reach the build directory (under /root, say): run a copy of the
    // probe from a world-readable temporary directory.
    let dir = std::env::temp_dir().join(format!("oxray-probe-{}", std::process::id()));
    let exe = dir.join("probe");
    if !exe.exists() {
        std::fs::create_dir_all(&dir).expect("probe dir");
        std::fs::copy(DRIVER, &exe).expect("copy the probe");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("mode");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("mode");
    }
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["probe-socket", name]).current_dir(&dir);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("run the probe");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    value(&text, "socket")
}

/// Abstract sockets have no file permissions: the raylet's socket and every worker's socket
/// serve only processes of the same user (`SO_PEERCRED`). Run as root, the test probes them as
/// `nobody` (hung up on at once) and as itself (served).
#[test]
fn sockets_serve_only_their_own_user() {
    // SAFETY: getuid has no preconditions and cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: dropping to another user needs root");
        return;
    }
    let node = raylet("pc", &["cpus=2", "resources=m1:2;m2:2"]);
    let mut work = driver(&["steady", "6"], &node);
    let deadline = Instant::now() + Duration::from_secs(60);
    let worker = loop {
        let status = status_within(&node.address, Duration::from_secs(5)).expect("status");
        if let Some(w) = status.workers.iter().find(|w| w.state != "starting") {
            break w.worker;
        }
        assert!(Instant::now() < deadline, "no worker registered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let worker_socket = format!("{}-w{}", node.session, worker.0);
    let raylet_socket = node.session.clone();
    const NOBODY: u32 = 65534;
    assert_eq!(probe_socket(&worker_socket, Some(NOBODY)), "closed");
    assert_eq!(probe_socket(&raylet_socket, Some(NOBODY)), "closed");
    assert_eq!(
        probe_socket(&worker_socket, None),
        "open",
        "its own user is served"
    );
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("oxray-probe-{}", std::process::id())),
    );
    let status = work.exit_within(Duration::from_secs(120));
    assert!(status.is_some_and(|s| s.success()), "{}", work.log());
}
