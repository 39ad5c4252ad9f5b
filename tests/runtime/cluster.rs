//! Multi-node clusters: real raylet processes on loopback (distinct ports and sessions) joined
//! over QUIC. Each test starts its own nodes and kills them by pid when it ends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oxray_common::placement::{PlacementGroupState, PlacementStrategy};
use oxray_raylet::cluster::{self, auth, tls, wire};
use oxray_raylet::peer::{PeerReply, PeerRequest};
use oxray_raylet::ClusterView;

use crate::eventually;

const DRIVER: &str = env!("CARGO_BIN_EXE_oxray-test-driver");
const SECRET: &str = "test-secret-0123456789abcdef";

/// A raylet process, killed and reaped on drop (its session's temp dir goes with it).
struct Node {
    child: Child,
    session: String,
    address: String,
    peer: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(oxray_raylet::files::session_dir(&self.session));
    }
}

/// Starts a raylet with `opts` (see the test driver's `raylet` mode); `Err` is what it printed
/// when it could not start.
fn start(tag: &str, opts: &[&str]) -> Result<Node, String> {
    let session = format!("oxray-cl-{}-{tag}", std::process::id());
    let mut child = Command::new(DRIVER)
        .arg("raylet")
        .arg(&session)
        .args(opts)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut address = String::new();
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines().take(4) {
        let line = line.map_err(|e| e.to_string())?;
        printed.push_str(&line);
        if let Some(a) = line.strip_prefix("address ") {
            address = a.to_owned();
            if !opts
                .iter()
                .any(|o| o.starts_with("head_port=") || o.starts_with("join="))
            {
                break;
            }
        } else if let Some(p) = line.strip_prefix("peer ") {
            return Ok(Node {
                child,
                session,
                address,
                peer: p.to_owned(),
            });
        }
    }
    if !address.is_empty() {
        return Ok(Node {
            child,
            session,
            address,
            peer: String::new(),
        });
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(printed)
}

fn head(tag: &str, extra: &[&str]) -> Node {
    let secret = format!("secret={SECRET}");
    let mut opts = vec!["head_port=0", secret.as_str()];
    opts.extend_from_slice(extra);
    start(tag, &opts).expect("start the head")
}

fn member(tag: &str, head: &Node, extra: &[&str]) -> Node {
    let secret = format!("secret={SECRET}");
    let join = format!("join={}", head.peer);
    let mut opts = vec![join.as_str(), secret.as_str()];
    opts.extend_from_slice(extra);
    start(tag, &opts).expect("start a member")
}

/// Starts the test driver with `args` (its mode first) attached to `node`; its stdout comes
/// back line by line, and its stdin stays open until it is killed.
fn spawn_driver(
    args: &[&str],
    node: &Node,
) -> (Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut driver = Command::new(DRIVER)
        .args(args)
        .env("OXRAY_ADDRESS", &node.address)
        // Held open while the child lives: drivers that wait to be killed wait for its end.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the driver");
    let stdout = driver.stdout.take().expect("stdout");
    (driver, BufReader::new(stdout).lines())
}

/// Runs the test driver with `args` (its mode first) attached to `node`, handing each line it
/// prints to `on_line` (at most 40, until `done`), then kills it; returns what it printed.
fn drive(args: &[&str], node: &Node, mut on_line: impl FnMut(&str)) -> String {
    let (mut driver, lines) = spawn_driver(args, node);
    let mut out = String::new();
    for line in lines.take(40) {
        let Ok(line) = line else { break };
        out.push_str(&line);
        out.push('\n');
        on_line(&line);
        if line == "done" {
            break;
        }
    }
    let _ = driver.kill();
    let _ = driver.wait();
    out
}

/// The value a driver printed for `key`, or "".
fn value_in(out: &str, key: &str) -> String {
    crate::processes::value(out, key)
        .unwrap_or_default()
        .to_owned()
}

fn view_of(node: &Node) -> ClusterView {
    oxray_raylet::tool::status(&node.address)
        .expect("status")
        .cluster
}

#[test]
fn three_nodes_join_and_every_node_sees_the_cluster() {
    let _load = crate::no_cpu_hog();
    // Slow health checks (a minute of silence): a node marked dead below must have said it was
    // leaving.
    let slow = "threshold=600";
    let h = head("h3", &["cpus=2", slow]);
    let b = member("b3", &h, &["cpus=1", slow]);
    let c = member("c3", &h, &["cpus=3", "resources=gpu:1", slow]);
    // Registration is done when `start` returns: the head knows all three at once.
    let view = view_of(&h);
    assert_eq!(view.cluster, "test");
    assert_eq!(view.nodes.len(), 3, "{view:?}");
    assert!(view.nodes.iter().all(|n| n.alive));
    assert_eq!(view.nodes.iter().filter(|n| n.is_head).count(), 1);
    let gpu_node = view
        .nodes
        .iter()
        .find(|n| n.total.get("gpu") == 1.0)
        .expect("the gpu node");
    assert_eq!(gpu_node.peer_address, c.peer);
    assert_eq!(gpu_node.total.get("CPU"), 3.0);
    assert_eq!(gpu_node.local_address, c.address);
    // Members learn the whole cluster from their health-check replies.
    assert!(eventually(Duration::from_secs(10), || view_of(&b)
        .nodes
        .len()
        == 3));
    // Over QUIC, with the secret, any node answers.
    let remote = cluster::probe(&b.peer, "test", SECRET.as_bytes()).expect("probe");
    assert_eq!(remote.nodes.len(), 3);
    // A node that stops says so: the head marks it dead without waiting for the timeout.
    oxray_raylet::tool::stop(&b.address).expect("stop node b");
    let b_gone = || {
        view_of(&h)
            .nodes
            .iter()
            .any(|n| n.local_address == b.address && !n.alive)
    };
    assert!(eventually(Duration::from_secs(10), b_gone));
    assert_eq!(view_of(&h).nodes.iter().filter(|n| n.alive).count(), 2);
}

#[test]
fn peers_without_the_secret_are_refused() {
    let _load = crate::no_cpu_hog();
    let h = head("hs", &[]);
    let err = cluster::probe(&h.peer, "test", b"not-the-secret-but-long-enough").unwrap_err();
    assert!(
        err.to_string().contains("does not know the cluster secret"),
        "{err}"
    );
    let err = cluster::probe(&h.peer, "other", SECRET.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("wants to join cluster"), "{err}");
    let join = format!("join={}", h.peer);
    let err = start("hs-bad", &[join.as_str(), "secret=wrong-secret-0123456789"])
        .err()
        .expect("a node with the wrong secret must not start");
    assert!(err.contains("does not know the cluster secret"), "{err}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("ep");
        ep.set_default_client_config(tls::client_config().expect("tls"));
        let addr = h.peer.parse().expect("peer addr");
        // A first message that is not the proof.
        let conn = ep
            .connect(addr, "oxray")
            .expect("connect")
            .await
            .expect("tls");
        match wire::request(&conn, &PeerRequest::GetView, &h.peer).await {
            Ok(PeerReply::Refused { reason }) => {
                assert!(reason.contains("instead of proving"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Nothing more is served on that connection.
        let again = wire::request(&conn, &PeerRequest::GetView, &h.peer).await;
        assert!(!matches!(again, Ok(PeerReply::View(_))), "{again:?}");
        // Garbage as the first message.
        let conn = ep
            .connect(addr, "oxray")
            .expect("connect")
            .await
            .expect("tls");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        send.write_all(&[0xff; 40]).await.expect("write");
        send.finish().expect("finish");
        match wire::read::<PeerReply>(&mut recv, &h.peer).await {
            Ok(PeerReply::Refused { reason }) => assert!(reason.contains("malformed"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Authenticated, a malformed request gets an error and the connection keeps working.
        let conn = ep
            .connect(addr, "oxray")
            .expect("connect")
            .await
            .expect("tls");
        let proof = auth::prove(&conn, auth::Role::Dialer, "test", SECRET.as_bytes());
        let ok = wire::request(
            &conn,
            &PeerRequest::Auth {
                cluster: "test".into(),
                proof,
            },
            &h.peer,
        )
        .await;
        assert!(matches!(ok, Ok(PeerReply::AuthOk { .. })), "{ok:?}");
        for bad in [
            vec![],
            vec![1u8; 15],
            vec![0xab; 1000],
            40u32.to_le_bytes().repeat(20),
        ] {
            let (mut send, mut recv) = conn.open_bi().await.expect("stream");
            send.write_all(&bad).await.expect("write");
            send.finish().expect("finish");
            let reply = wire::read::<PeerReply>(&mut recv, &h.peer).await;
            assert!(matches!(reply, Ok(PeerReply::Error { .. })), "{reply:?}");
        }
        // Well-formed requests with bad content get a reason, and nothing is served.
        let error_of = |reply: oxray_raylet::Result<PeerReply>| match reply {
            Ok(PeerReply::Error { message }) => message,
            other => panic!("expected an error, got {other:?}"),
        };
        let tunnel = PeerRequest::Tunnel {
            target: "unix:@some-other-program".into(),
        };
        let (reply, ..) = wire::open(&conn, &tunnel, &h.peer).await.expect("tunnel");
        assert!(error_of(Ok(reply)).contains("not a worker socket"));
        let attach = PeerRequest::Attach {
            origin: Default::default(),
            origin_address: "127.0.0.1:1".into(),
            job: Default::default(),
            namespace: String::new(),
            exe: oxray_raylet::peer::ExeInfo {
                hash: "00".repeat(32),
                len: 1,
                os: "plan9".into(),
                arch: std::env::consts::ARCH.into(),
            },
            job_key: vec![0; 32],
        };
        let message = error_of(wire::request(&conn, &attach, &h.peer).await);
        assert!(message.contains("plan9"), "{message}");
        let unknown = oxray_object_store::ObjectId::from_u128(0xdead_beef);
        let info = PeerRequest::ObjectInfo { id: unknown };
        assert!(error_of(wire::request(&conn, &info, &h.peer).await).contains("not on node"));
        let chunk = PeerRequest::Chunk {
            id: unknown,
            offset: 0,
            len: 1 << 20,
        };
        error_of(wire::request(&conn, &chunk, &h.peer).await);
        let view = wire::request(&conn, &PeerRequest::GetView, &h.peer).await;
        assert!(matches!(view, Ok(PeerReply::View(_))), "{view:?}");
    });
    // The head survived all of it.
    assert_eq!(view_of(&h).nodes.len(), 1);
}

#[test]
fn a_silent_node_is_marked_dead_and_every_node_learns_it() {
    let _load = crate::no_cpu_hog();
    let fast = ["period_ms=50", "threshold=12"];
    let h = head("hd", &fast);
    let b = member("bd", &h, &fast);
    let mut c = member("cd", &h, &fast);
    let c_pid = c.child.id();
    assert_eq!(view_of(&h).nodes.len(), 3);
    c.child.kill().expect("kill the node");
    let _ = c.child.wait();
    let dead = |v: &ClusterView| v.nodes.iter().any(|n| n.pid == c_pid && !n.alive);
    assert!(eventually(Duration::from_secs(10), || dead(&view_of(&h))));
    assert!(eventually(Duration::from_secs(10), || dead(&view_of(&b))));
    let alive = view_of(&h).nodes.iter().filter(|n| n.alive).count();
    assert_eq!(alive, 2);
}

/// Sends `signal` to a node this test started.
fn signal(node: &Node, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(node.child.id()).expect("pid");
    // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

#[test]
fn a_node_declared_dead_while_running_joins_again_as_a_new_node() {
    let fast = ["period_ms=50", "threshold=8"];
    let h = head("hj", &fast);
    let b = member("bj", &h, &fast);
    let old = id_of(&view_of(&h), &b);
    let entries_of_b = |view: &ClusterView| -> Vec<(String, bool, u16)> {
        view.nodes
            .iter()
            .filter(|n| n.local_address == b.address)
            .map(|n| (n.id.to_string(), n.alive, n.index))
            .collect()
    };
    // Frozen past the threshold: the head gives up on it.
    signal(&b, libc::SIGSTOP);
    let declared = eventually(Duration::from_secs(10), || {
        entries_of_b(&view_of(&h)) == vec![(old.clone(), false, 2)]
    });
    signal(&b, libc::SIGCONT);
    assert!(declared, "b is dead: {:?}", view_of(&h));
    // Running again, it is refused and registers as a new node from the same address; the old
    // entry stays dead.
    let rejoined = || {
        let entries = entries_of_b(&view_of(&h));
        entries.len() == 2
            && entries[0] == (old.clone(), false, 2)
            && entries[1].0 != old
            && entries[1].1
            && entries[1].2 == 3
    };
    assert!(
        eventually(Duration::from_secs(10), rejoined),
        "{:?}",
        view_of(&h)
    );
    let new = entries_of_b(&view_of(&h))[1].0.clone();
    // The node itself goes by its new id and index, and it stays alive.
    let own = || {
        let status = oxray_raylet::tool::status(&b.address).expect("status of b");
        let me = status.cluster.nodes.iter().find(|n| n.id == status.node);
        status.node.to_string() == new && me.is_some_and(|n| n.alive && n.index == 3)
    };
    assert!(eventually(Duration::from_secs(10), own));
    assert_eq!(view_of(&h).nodes.iter().filter(|n| n.alive).count(), 2);
}

/// The id of the node whose local address is `address`, as `oxray::node_id` prints it.
fn id_of(view: &ClusterView, node: &Node) -> String {
    view.nodes
        .iter()
        .find(|n| n.local_address == node.address)
        .map(|n| n.id.to_string())
        .expect("the node is in the view")
}

#[test]
fn work_spreads_routes_by_resource_and_objects_and_actors_cross_nodes() {
    let _load = crate::no_cpu_hog();
    let store = "store_mb=768";
    let h = head("hw", &["cpus=1", store]);
    let b = member("bw", &h, &["cpus=2", "resources=b:1", store]);
    let c = member("cw", &h, &["cpus=2", "resources=gpu:1", store]);
    let view = view_of(&h);
    let (h_id, b_id, c_id) = (id_of(&view, &h), id_of(&view, &b), id_of(&view, &c));
    let out = crate::processes::run(&["cluster-work"], Some(&h.address));
    let value = |k: &str| value_in(&out, k);
    assert_eq!(value("alive"), "3", "{out}");
    assert_eq!(value("driver-node"), h_id, "{out}");
    // Sixteen 700 ms tasks on a head with one CPU: the other nodes take some (even after
    // fetching the driver's executable, which is the first spill's cost).
    let spread: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("spread "))
        .unwrap_or_default()
        .split(',')
        .collect();
    for id in [&h_id, &b_id, &c_id] {
        assert!(spread.contains(&id.as_str()), "no task ran on {id}: {out}");
    }
    assert_eq!(value("gpu-node"), c_id, "only node c has a gpu: {out}");
    // What a task on node c prints reaches the driver, saying which process and node.
    let from = format!("(pid={}, node={}) ", value("hello-pid"), c.session);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&from) && l.ends_with("hello from the gpu node")),
        "no line from {from}: {out}"
    );
    // 256 MiB made on b, read in place on c and by the driver on the head, bit for bit.
    assert_eq!(value("big-read-on"), c_id, "{out}");
    assert_eq!(value("big-sum-ok"), "true", "{out}");
    assert_eq!(value("big-driver-ok"), "true", "{out}");
    // A CPU-only task reading it runs on b, next to the object, not on the driver's node.
    assert_eq!(value("near-read-on"), b_id, "{out}");
    assert_eq!(value("near-sum-ok"), "true", "{out}");
    // The actor lives on b; 10 calls from the driver and 4 × 10 from tasks on c.
    assert_eq!(value("actor-node"), b_id, "{out}");
    assert_eq!(value("actor-total"), "50", "{out}");
    assert!(out.lines().any(|l| l == "done"), "{out}");
}

/// Tasks and actor calls from a driver on one node to processes on another go straight between
/// the processes: neither raylet relays a connection (`tunnels` stays 0 on both). A call from
/// another job (another credential) to the same detached actor, after its driver exited, goes
/// through the raylets, which also shows the count counts.
#[test]
fn calls_go_straight_to_processes_on_other_nodes_and_other_jobs_go_through_the_raylets() {
    let _load = crate::no_cpu_hog();
    let h = head("hdc", &["cpus=0"]);
    let m = member("mdc", &h, &["cpus=2", "resources=m:1"]);
    let view = view_of(&h);
    let (h_id, m_id) = (id_of(&view, &h), id_of(&view, &m));
    let tunnels = |n: &Node| {
        oxray_raylet::tool::status(&n.address)
            .expect("status")
            .tunnels
    };
    // The driver stays up (its job owns the actor) until killed at the end.
    let (driver, lines) = spawn_driver(&["direct-calls"], &h);
    let driver = crate::processes::Reaped(driver);
    let mut out = String::new();
    for line in lines.take(10) {
        let Ok(line) = line else { break };
        out.push_str(&line);
        out.push('\n');
        if line == "done" {
            break;
        }
    }
    assert_eq!(value_in(&out, "driver-node"), h_id, "{out}");
    assert_eq!(value_in(&out, "task-nodes"), m_id, "{out}");
    assert_eq!(value_in(&out, "actor-node"), m_id, "{out}");
    assert_eq!(value_in(&out, "actor-total"), "200", "{out}");
    assert_eq!((tunnels(&h), tunnels(&m)), (0, 0), "relayed: {out}");
    // The actor's direct port, as the member lists it, turns strangers away.
    let actors = oxray_raylet::tool::status(&m.address)
        .expect("status")
        .actors;
    let direct = actors
        .iter()
        .find_map(|a| oxray_common::address::split_direct(&a.address).1)
        .expect("the actor takes direct connections");
    direct_port_refuses_strangers(direct);
    // The driver exits; its detached actor on the member lives on, and another job (another
    // credential) reaches it through the raylets.
    drop(driver);
    let other = crate::processes::run(&["direct-other-job"], Some(&h.address));
    assert_eq!(value_in(&other, "actor-total"), "201", "{other}");
    assert!(tunnels(&h) > 0 && tunnels(&m) > 0, "{other}");
}

/// Over direct connections, failures look as they do on one node: a killed worker's streaming
/// task is retried with no item lost or repeated, a killed actor with no restarts left is
/// `ActorDied`, one with a restart left answers from its new process. A caller killed mid-call
/// frees what it held on the other node: its actor's process ends and the resources return.
#[test]
fn killed_processes_on_other_nodes_fail_as_on_one_node_and_a_killed_caller_frees_its_hold() {
    let _load = crate::no_cpu_hog();
    let h = head("hk", &["cpus=0"]);
    let m = member("mk", &h, &["cpus=2", "resources=m:1"]);
    let out = drive(&["direct-faults"], &h, |_| {});
    for (key, want) in [
        ("stream-killed", "true"),
        ("stream-ok", "true"),
        ("fragile-killed", "true"),
        ("fragile-after", "ActorDied"),
        ("sturdy-killed", "true"),
        ("sturdy-new-process", "true"),
        ("sturdy-restarted", "true"),
    ] {
        assert_eq!(value_in(&out, key), want, "{key}: {out}");
    }

    let available = |n: &Node, what: &str| {
        oxray_raylet::tool::status(&n.address)
            .expect("status")
            .available
            .get(what)
    };
    let (driver, mut lines) = spawn_driver(&["direct-hang"], &h);
    let mut driver = crate::processes::Reaped(driver);
    let line = lines.next().and_then(Result::ok).unwrap_or_default();
    let actor: u32 = value_in(&line, "calling").parse().expect("the actor's pid");
    // The task holds one of the member's CPUs once it runs there.
    assert!(
        crate::eventually(Duration::from_secs(30), || available(&m, "CPU") == 1.0),
        "the task never ran on the member"
    );
    let _ = driver.0.kill();
    let _ = driver.0.wait();
    assert!(
        crate::eventually(Duration::from_secs(30), || {
            !crate::alive(actor) && available(&m, "CPU") == 2.0 && available(&m, "m") == 1.0
        }),
        "the killed caller's actor ({actor}) or resources were not freed: CPU {}, m {}",
        available(&m, "CPU"),
        available(&m, "m")
    );
}

/// A process without the job's credential gets nothing from a worker's direct port: bytes that
/// are not TLS, and a TLS session with a wrong proof, are answered by a closed connection, never
/// by the worker's own proof.
fn direct_port_refuses_strangers(addr: &str) {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let connect = || {
        let tcp = TcpStream::connect(addr).expect("connect to the direct port");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        tcp
    };
    let mut plain = connect();
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let mut answer = Vec::new();
    // An alert at most, then the end (not a timeout).
    let read = plain.read_to_end(&mut answer);
    assert!(
        !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "left open: {read:?}"
    );
    assert!(answer.len() < 64, "answered {} bytes", answer.len());

    let config = tls::rustls_client(tls::DIRECT_ALPN).expect("client config");
    let name = "oxray".try_into().expect("server name");
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let mut session = rustls::StreamOwned::new(conn, connect());
    session
        .write_all(&[0u8; 32])
        .expect("handshake and a wrong proof");
    session.flush().expect("flush");
    let mut proof = Vec::new();
    let read = session.read_to_end(&mut proof);
    assert!(
        proof.is_empty(),
        "a stranger got {} bytes back ({read:?})",
        proof.len()
    );
    assert!(
        !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "left open: {read:?}"
    );
}

/// An object every node reads at once is served by the nodes that pulled it as well as by its
/// owner's node (Ray's pull from any location): one copy reaches each node, the bytes sent add
/// up to one object per reader, and the members sent some of them.
#[test]
fn a_broadcast_is_served_by_the_copies_as_well_as_the_owners_node() {
    let _load = crate::no_cpu_hog();
    let opts = ["cpus=1", "store_mb=256"];
    let h = head("hbc", &opts);
    let members: Vec<Node> = (0..4)
        .map(|i| member(&format!("mbc{i}"), &h, &opts))
        .collect();
    let out = crate::processes::run(&["broadcast", "24"], Some(&h.address));
    assert_eq!(value_in(&out, "copies"), "4", "{out}");
    assert_eq!(value_in(&out, "nodes-read"), "4", "{out}");
    assert_eq!(value_in(&out, "sums-ok"), "true", "{out}");
    let served = |n: &Node| {
        oxray_raylet::tool::status(&n.address)
            .expect("status")
            .bytes_served
    };
    let by_members: Vec<u64> = members.iter().map(served).collect();
    let by_head = served(&h);
    let object = 24u64 << 20;
    // One object per reader (plus the few bytes of small results that crossed too).
    let total = by_head + by_members.iter().sum::<u64>();
    assert!(
        (4 * object..4 * object + (1 << 20)).contains(&total),
        "{total} bytes sent: head {by_head}, members {by_members:?}"
    );
    assert!(
        by_members.iter().any(|b| *b > 0) && by_head < 4 * object,
        "only the owner's node served: head {by_head}, members {by_members:?}"
    );
}

/// SPREAD puts 30 tasks on all three nodes (the head alone has room for all); hard node affinity runs work (and an actor) on
/// the node named, and once that node is killed fails typed (the actor dies with it, restarts
/// left or not), while soft affinity falls back to a live node.
#[test]
fn spread_and_node_affinity_on_three_nodes() {
    let _load = crate::no_cpu_hog();
    // The head could run all 30 tasks at once: only SPREAD sends them elsewhere.
    let h = head("hst", &["cpus=30"]);
    let b = member("bst", &h, &["cpus=2"]);
    let c = member("cst", &h, &["cpus=2"]);
    let view = view_of(&h);
    let (h_id, b_id, c_id) = (id_of(&view, &h), id_of(&view, &b), id_of(&view, &c));
    let mut b = Some(b);
    let out = drive(&["strategies", &b_id, &c_id], &h, |line| {
        if line == "kill-b" {
            // Killed by pid, its session removed.
            drop(b.take());
        }
    });
    let value = |k: &str| value_in(&out, k);
    let spread: Vec<String> = value("spread").split(',').map(str::to_owned).collect();
    for id in [&h_id, &b_id, &c_id] {
        assert!(spread.contains(id), "no SPREAD task ran on {id}: {out}");
    }
    assert_eq!(value("pinned-on"), b_id, "{out}");
    assert_eq!(value("soft-pinned-on"), c_id, "{out}");
    assert_eq!(value("actor-pinned-on"), b_id, "{out}");
    assert!(
        value("hard-dead").starts_with("unschedulable") && value("hard-dead").contains("dead"),
        "{out}"
    );
    let soft = value("soft-dead-ran-on");
    assert!(soft == h_id || soft == c_id, "{out}");
    assert_eq!(value("actor-hard-dead"), "unschedulable", "{out}");
    assert_eq!(value("pinned-actor"), "died", "{out}");
    assert!(out.lines().any(|l| l == "done"), "{out}");
}

/// Placement groups across real nodes: STRICT_SPREAD of 4 bundles on 3 nodes pends as
/// infeasible, then is placed (on 4 distinct nodes) when a fourth joins, and its tasks run on
/// their bundles' nodes; an actor in a bundle on a member that is killed restarts on another
/// node, its group placed again there. A member lists the groups (asking the head).
#[test]
fn placement_groups_wait_for_nodes_and_move_off_dead_ones() {
    let _load = crate::no_cpu_hog();
    let h = head("hpg", &["cpus=2"]);
    let mut members = vec![
        member("bpg", &h, &["cpus=2"]),
        member("cpg", &h, &["cpus=2"]),
    ];
    let mut listed = Vec::new();
    let out = drive(&["placement"], &h, |line| {
        if line == "join-d" {
            members.push(member("dpg", &h, &["cpus=2"]));
        }
        if let Some(node) = line.strip_prefix("kill ") {
            let view = view_of(&h);
            let k = members
                .iter()
                .position(|m| id_of(&view, m) == node)
                .expect("the actor's node is a member");
            // While the group and actor live: what a member lists (it asks the head).
            listed = oxray_raylet::tool::placement_groups(&members[0].address).expect("list");
            drop(members.remove(k));
        }
    });
    let value = |k: &str| value_in(&out, k);
    assert_eq!(value("ready-on-3"), "false", "{out}");
    assert_eq!(value("pending-state"), "Pending", "{out}");
    assert!(value("pending-reason").contains("infeasible"), "{out}");
    assert_eq!(value("placed-on").split(',').count(), 4, "{out}");
    assert_eq!(
        value("tasks-on").split(',').count(),
        4,
        "one task per node: {out}"
    );
    let was = value("actor-on");
    let was = was.split(' ').next().unwrap_or_default().to_owned();
    let now = value("actor-restarted-on");
    assert!(!now.is_empty() && now != was, "{out}");
    assert_eq!(value("pair-created"), "true", "{out}");
    assert!(!value("pair-on").contains(&was), "{out}");
    assert!(out.lines().any(|l| l == "done"), "{out}");
    assert_eq!(
        listed.len(),
        2,
        "the removed group and the live one: {listed:?}"
    );
    assert!(
        listed
            .iter()
            .any(|g| g.state == PlacementGroupState::Created
                && g.spec.strategy == PlacementStrategy::StrictSpread
                && g.nodes.iter().all(Option::is_some)),
        "{listed:?}"
    );
}

#[test]
fn named_actors_are_unique_and_found_from_every_node() {
    let _load = crate::no_cpu_hog();
    let h = head("hn", &["cpus=1"]);
    let c = member("cn", &h, &["cpus=1"]);
    // A driver on the head makes a detached "keeper" (40 + 1) and a non-detached "temp".
    let made = crate::processes::run(&["detached-make"], Some(&h.address));
    assert_eq!(
        crate::processes::value(&made, "added"),
        Some("41"),
        "{made}"
    );
    // The head's view is the cluster's job table: the job lives on (its detached actor does),
    // its driver is gone.
    let listed = eventually(Duration::from_secs(10), || {
        let view = view_of(&h);
        let head = view.nodes.iter().find(|n| n.is_head).expect("head");
        let jobs = &head.load.jobs;
        jobs.len() == 1 && !jobs[0].driver && jobs[0].program.starts_with("oxray-test-driver")
    });
    assert!(listed, "the head lists the job: {:?}", view_of(&h));
    // A driver on the other node finds "keeper" by name; "temp" died with its driver.
    let out = crate::processes::run(&["named-elsewhere"], Some(&c.address));
    let value = |k: &str| crate::processes::value(&out, k).unwrap_or_default();
    assert_eq!(value("added"), "42", "{out}");
    assert!(value("temp-error").contains("no live actor"), "{out}");
    assert!(
        value("clash-refused").contains("already exists"),
        "a name is unique across the cluster: {out}"
    );
    assert_eq!(value("if-exists"), "43", "get_if_exists found it: {out}");
    assert!(value("after-kill-error").contains("no live actor"), "{out}");
    assert_eq!(
        value("retaken"),
        "8",
        "a killed actor's name is free: {out}"
    );
}

#[test]
fn objects_on_other_nodes_are_freed_when_their_owner_is_killed() {
    let _load = crate::no_cpu_hog();
    let h = head("ho", &["cpus=1"]);
    let b = member("bo", &h, &["cpus=1", "resources=b:1"]);
    let objects_on_b = || {
        view_of(&h)
            .nodes
            .iter()
            .find(|n| n.local_address == b.address)
            .map_or(u64::MAX, |n| n.load.store_objects)
    };
    let (mut driver, mut lines) = spawn_driver(&["own-elsewhere"], &h);
    let made = lines.next();
    let held = matches!(made, Some(Ok(ref l)) if l == "made 1")
        && eventually(Duration::from_secs(10), || objects_on_b() == 1);
    // Killed: it cannot say goodbye, and nobody else will ever read its object.
    let _ = driver.kill();
    let _ = driver.wait();
    assert!(held, "the driver's object was made on b: {made:?}");
    assert!(
        eventually(Duration::from_secs(10), || objects_on_b() == 0),
        "node b still holds {} objects of the killed driver",
        objects_on_b()
    );
}

#[test]
fn a_lost_task_result_is_made_again_by_its_task() {
    let _load = crate::no_cpu_hog();
    let fast = ["period_ms=50", "threshold=12"];
    let h = head("hr", &[&["cpus=1"][..], &fast[..]].concat());
    let mut b = member(
        "br",
        &h,
        &[&["cpus=2", "resources=x:2"][..], &fast[..]].concat(),
    );
    let mut c = member(
        "cr",
        &h,
        &[&["cpus=2", "resources=x:2"][..], &fast[..]].concat(),
    );
    let view = view_of(&h);
    let (b_id, c_id) = (id_of(&view, &b), id_of(&view, &c));
    let mut survivor = String::new();
    let out = drive(&["cluster-rebuild"], &h, |line| {
        if let Some(at) = line.strip_prefix("made-on ") {
            // The only copy goes with its node.
            let (gone, other) = if at == b_id {
                (&mut b, &c_id)
            } else {
                (&mut c, &b_id)
            };
            survivor = other.clone();
            let _ = gone.child.kill();
            let _ = gone.child.wait();
        }
    });
    let value = |k: &str| value_in(&out, k);
    assert!(
        value("made-on") == b_id || value("made-on") == c_id,
        "{out}"
    );
    assert_eq!(value("made-sum-ok"), "true", "{out}");
    assert_eq!(value("alive-after-kill"), "2", "{out}");
    assert_eq!(value("rebuilt-sum-ok"), "true", "the task ran again: {out}");
    assert_eq!(value("rebuilt-on"), survivor, "{out}");
}

/// A chain `a -> b(a) -> c(b)` made on one node that is then killed: reading `c` makes `a`, `b`
/// and `c` again on the other node, in order (lineage through object arguments), and `c` holds
/// what it should.
#[test]
fn a_lost_chain_of_results_is_made_again_from_its_first_task() {
    let _load = crate::no_cpu_hog();
    let fast = ["period_ms=50", "threshold=12"];
    let h = head("hq", &[&["cpus=1"][..], &fast[..]].concat());
    let mut b = member(
        "bq",
        &h,
        &[&["cpus=2", "resources=x:2"][..], &fast[..]].concat(),
    );
    let mut c = member(
        "cq",
        &h,
        &[&["cpus=2", "resources=x:2"][..], &fast[..]].concat(),
    );
    let view = view_of(&h);
    let (b_id, c_id) = (id_of(&view, &b), id_of(&view, &c));
    let out = drive(&["cluster-rebuild-chain"], &h, |line| {
        if let Some(at) = line.strip_prefix("made-on ") {
            let gone = if at == b_id { &mut b } else { &mut c };
            let _ = gone.child.kill();
            let _ = gone.child.wait();
        }
    });
    let value = |k: &str| value_in(&out, k);
    let made_on = value("made-on");
    assert!(made_on == b_id || made_on == c_id, "{out}");
    assert_eq!(
        value("a-on"),
        made_on,
        "the chain was made on one node: {out}"
    );
    assert_eq!(
        value("b-on"),
        made_on,
        "the chain was made on one node: {out}"
    );
    assert_eq!(value("alive-after-kill"), "2", "{out}");
    assert_eq!(
        value("rebuilt-sum-ok"),
        "true",
        "the chain ran again: {out}"
    );
}

/// A borrower's read triggers the rebuild: an object made on a node that is then killed is
/// read, through a ref handed inside a vector, by a task on the head (a borrower, not the
/// owner); the borrower asks the owner, which runs the object's task again on the surviving
/// node, and the borrower reads the right numbers.
#[test]
fn a_borrowers_read_of_a_lost_object_has_its_owner_make_it_again() {
    let _load = crate::no_cpu_hog();
    let fast = ["period_ms=50", "threshold=12"];
    let h = head(
        "hb",
        &[&["cpus=1", "resources=h:1"][..], &fast[..]].concat(),
    );
    let mut b = member(
        "bb",
        &h,
        &[&["cpus=2", "resources=x:2"][..], &fast[..]].concat(),
    );
    let mut c = member(
        "cb",
        &h,
        &[&["cpus=2", "resources=x:2"][..], &fast[..]].concat(),
    );
    let view = view_of(&h);
    let (b_id, c_id) = (id_of(&view, &b), id_of(&view, &c));
    let out = drive(&["cluster-rebuild-borrowed"], &h, |line| {
        if let Some(at) = line.strip_prefix("made-on ") {
            let gone = if at == b_id { &mut b } else { &mut c };
            let _ = gone.child.kill();
            let _ = gone.child.wait();
        }
    });
    let value = |k: &str| value_in(&out, k);
    assert!(
        value("made-on") == b_id || value("made-on") == c_id,
        "{out}"
    );
    assert_eq!(value("alive-after-kill"), "2", "{out}");
    assert_eq!(value("borrower-read"), "true", "{out}");
    assert_eq!(value("borrower-sum-ok"), "true", "{out}");
    assert_eq!(value("borrower-on-head"), "true", "{out}");
}

/// Objects larger than a node's whole store cross nodes: a 48 MiB put on the head is read by
/// a task on a member whose store is 32 MiB (pulled into a file of its spill directory), and an
/// 80 MiB result made there (in a file) is read by the driver on the head (64 MiB store).
#[test]
fn objects_larger_than_a_nodes_store_cross_nodes_through_files() {
    let _load = crate::no_cpu_hog();
    let h = head("hl", &["cpus=1", "store_mb=64"]);
    let _m = member("ml", &h, &["cpus=1", "resources=x:1", "store_mb=32"]);
    let out = drive(&["cluster-larger"], &h, |_| {});
    assert_eq!(value_in(&out, "pulled-sum-ok"), "true", "{out}");
    assert_eq!(value_in(&out, "read-elsewhere"), "true", "{out}");
    assert_eq!(value_in(&out, "made-elsewhere-exact"), "true", "{out}");
}

#[test]
fn killing_a_node_mid_work_retries_its_tasks_restarts_its_actors_and_reports_its_objects_lost() {
    let _load = crate::no_cpu_hog();
    let fast = ["period_ms=50", "threshold=12"];
    let h = head("hf", &[&["cpus=1"][..], &fast[..]].concat());
    let mut b = member(
        "bf",
        &h,
        &[&["cpus=6", "resources=b:1"][..], &fast[..]].concat(),
    );
    let c = member("cf", &h, &[&["cpus=2"][..], &fast[..]].concat());
    let view = view_of(&h);
    let b_id = id_of(&view, &b);
    let c_id = id_of(&view, &c);
    let out = drive(&["cluster-fault"], &h, |line| {
        if line == "submitted" {
            // Work is running on every node: node b goes, with its workers' results.
            b.child.kill().expect("kill node b");
            let _ = b.child.wait();
        }
    });
    let value = |k: &str| value_in(&out, k);
    assert_eq!(value("big-ready"), "1", "{out}");
    assert_eq!(value("tasks-done"), "10", "every task finishes: {out}");
    assert!(
        !value("ran-on").contains(&b_id),
        "no result can come from the killed node: {out}"
    );
    assert!(
        value("big-lost").contains("dead"),
        "the object whose only copy was on b is lost: {out}"
    );
    // Both actors ran on b; the one with a restart left runs again on c (the head has too few
    // CPUs), fresh from its constructor (5 + 1), and knows it was restarted.
    assert_eq!(value("lone-node"), b_id, "{out}");
    assert_eq!(value("keep-node"), b_id, "{out}");
    assert_eq!(value("keep-before"), "15", "{out}");
    assert_eq!(value("keep-after"), "6", "{out}");
    assert_eq!(value("keep-node-after"), c_id, "{out}");
    assert_eq!(value("keep-restarted"), "true", "{out}");
    assert!(
        value("lone-dead").contains("max_restarts (0)"),
        "the actor without restarts is dead, and says why: {out}"
    );
    drop(c);
}
