//! The `oxray` command: run and inspect a standalone node.
//!
//! ```text
//! oxray start --head [--port P] [NODE OPTIONS]        a single node, or a cluster's head (--port)
//! oxray start --address HEAD_HOST:PORT [NODE OPTIONS] a node joining the head
//!   NODE OPTIONS: --num-cpus N  --object-store-memory BYTES  --resources name=amount,..
//!                 --session NAME  --node-ip-address HOST  --cluster-name NAME
//!                 --secret-file PATH (or OXRAY_CLUSTER_SECRET)
//!                 --health-check-period-ms MS (1000)  --health-check-failure-threshold N (5)
//!                 --health-check-timeout-ms MS (10000)  --block
//! oxray status [--address ADDRESS] [--secret-file PATH] [--cluster-name NAME] | [--file FILE]
//! oxray wait --nodes N [--timeout SECONDS] [--address ADDRESS]
//! oxray stop [--address ADDRESS]
//! oxray up CLUSTER.toml       start every node of a cluster config file
//! oxray down CLUSTER.toml     stop them
//! ```
//!
//! `start` runs the node in the background and returns once it accepts clients (and, for a
//! member, once the head has registered it), printing the local address; drivers on that
//! machine attach with `OXRAY_ADDRESS=<address>`. With `--block` the node runs in the
//! foreground instead (printing the address at the same point) until it is stopped or killed,
//! which is what a batch system's job step (Slurm's `srun`) needs. A member whose head does not
//! answer yet waits for it (up to a minute); one started without `--node-ip-address`
//! advertises the local address its packets to the head leave from. `wait` returns once the
//! cluster of the node at `--address` has N live nodes (or fails after the timeout, 60 s by
//! default), so scripts need no sleeps. A head started with `--port` and no secret
//! makes one and writes it to a file only this user can read; other nodes join with
//! `--secret-file` pointing at a copy. `status` and `stop` use `--address`, else
//! `OXRAY_ADDRESS`, else the node this user started last; `status` of a `host:port` address asks
//! that raylet over QUIC (with the secret) for the cluster's nodes.
//!
//! Files (logs, the last address, session directories) live in `$TMPDIR/oxray-<uid>`, private
//! to the user and checked before use (`oxray_raylet::files`); `--session` and `--cluster-name`
//! are checked before they name anything, and `--secret-file` must be `chmod 600`. `start`,
//! `up` and `stop` remove the session directories of nodes that were killed.

mod up;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oxray_raylet::cluster::ClusterConfig;
use oxray_raylet::{files, tool, Raylet, RayletConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("start") => start(&args[1..]),
        Some("status") => status(&args[1..]),
        Some("stop") => stop(&args[1..]),
        Some("wait") => wait(&args[1..]),
        Some("up") => match args.get(1) {
            Some(file) => up::up(file),
            None => Err("usage: oxray up CLUSTER.toml".into()),
        },
        Some("down") => match args.get(1) {
            Some(file) => up::down(file),
            None => Err("usage: oxray down CLUSTER.toml".into()),
        },
        Some("__node") => run_node(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    if let Err(e) = result {
        eprintln!("oxray: {e}");
        std::process::exit(2);
    }
}

const USAGE: &str = "usage:
  oxray start --head [--port P] [NODE OPTIONS]
  oxray start --address HEAD_HOST:PORT [NODE OPTIONS]
    NODE OPTIONS: --num-cpus N  --object-store-memory BYTES  --resources name=amount,..
                  --session NAME  --node-ip-address HOST  --cluster-name NAME
                  --secret-file PATH (or OXRAY_CLUSTER_SECRET)
                  --health-check-period-ms MS (1000)  --health-check-failure-threshold N (5)
                  --health-check-timeout-ms MS (10000)
                  --block (stay in the foreground, e.g. under srun)
  oxray status [--address ADDRESS] [--secret-file PATH] [--cluster-name NAME] | [--file FILE]
  oxray wait --nodes N [--timeout SECONDS] [--address ADDRESS]
  oxray stop [--address ADDRESS]
  oxray up CLUSTER.toml
  oxray down CLUSTER.toml";

/// The cluster name when none is given.
const DEFAULT_CLUSTER: &str = "oxray";

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The user's state directory (`$TMPDIR/oxray-<uid>`), made or checked (`files`: 0700, ours,
/// not a link).
fn state_dir() -> Result<PathBuf, String> {
    files::ensure_state_dir()
}

/// Checks `--session` and `--cluster-name` before either names a file.
fn check_names(args: &[String]) -> Result<(), String> {
    if let Some(s) = flag(args, "--session") {
        files::check_name("--session", s)?;
    }
    if let Some(n) = flag(args, "--cluster-name") {
        files::check_name("--cluster-name", n)?;
    }
    Ok(())
}

fn node_config(args: &[String]) -> Result<RayletConfig, String> {
    let mut config = RayletConfig {
        prestart_workers: 0,
        ..RayletConfig::default()
    };
    if let Some(n) = flag(args, "--num-cpus") {
        config.num_cpus = n
            .parse()
            .map_err(|_| format!("--num-cpus: `{n}` is not a number"))?;
    }
    if let Some(m) = flag(args, "--object-store-memory") {
        config.object_store_memory = m
            .parse()
            .map_err(|_| format!("--object-store-memory: `{m}` is not a number of bytes"))?;
    }
    if let Some(rs) = flag(args, "--resources") {
        for kv in rs.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--resources: `{kv}` is not name=amount"))?;
            let v: f64 = v
                .parse()
                .map_err(|_| format!("--resources: `{v}` is not a number"))?;
            config.resources.push((k.to_owned(), v));
        }
    }
    if let Some(s) = flag(args, "--session") {
        config.session = s.to_owned();
    }
    config.cluster = cluster_config(args)?;
    Ok(config)
}

/// The secret from `--secret-file` or `OXRAY_CLUSTER_SECRET`, if given.
fn secret(args: &[String]) -> Result<Option<Vec<u8>>, String> {
    if let Some(path) = flag(args, "--secret-file") {
        let text =
            files::read_secret_file(Path::new(path)).map_err(|e| format!("--secret-file: {e}"))?;
        return Ok(Some(text.into_bytes()));
    }
    Ok(std::env::var("OXRAY_CLUSTER_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().as_bytes().to_vec()))
}

/// Cluster membership from the flags: `--head --port P` makes a head, `--address H:P` a member.
fn cluster_config(args: &[String]) -> Result<Option<ClusterConfig>, String> {
    let head = args.iter().any(|a| a == "--head");
    let join = flag(args, "--address");
    let port = match flag(args, "--port") {
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("--port: `{p}` is not a port number"))?,
        ),
        None => None,
    };
    let name = flag(args, "--cluster-name").unwrap_or(DEFAULT_CLUSTER);
    let host = match (flag(args, "--node-ip-address"), join) {
        (Some(h), _) => h.to_owned(),
        (None, Some(head)) => route_ip(head).unwrap_or_else(|| "127.0.0.1".into()),
        (None, None) => "127.0.0.1".into(),
    };
    let host = host.as_str();
    let millis = |name: &str| -> Result<Option<std::time::Duration>, String> {
        flag(args, name)
            .map(|v| {
                v.parse::<u64>()
                    .map(std::time::Duration::from_millis)
                    .map_err(|_| format!("{name}: `{v}` is not a number of milliseconds"))
            })
            .transpose()
    };
    let period = millis("--health-check-period-ms")?;
    let timeout = millis("--health-check-timeout-ms")?;
    let threshold = flag(args, "--health-check-failure-threshold")
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                format!("--health-check-failure-threshold: `{v}` is not a whole number")
            })
        })
        .transpose()?;
    let with_health = |mut c: ClusterConfig| {
        if let Some(p) = period {
            c.health_check_period = p;
        }
        if let Some(t) = timeout {
            c.health_check_timeout = t;
        }
        if let Some(n) = threshold {
            c.health_check_failure_threshold = n;
        }
        Some(c)
    };
    match (head, join, port) {
        (true, Some(_), _) => Err("--head and --address exclude each other".into()),
        (true, None, None) => Ok(None),
        (true, None, Some(port)) => {
            let secret = secret(args)?.ok_or(
                "a cluster head needs a secret: --secret-file PATH or OXRAY_CLUSTER_SECRET",
            )?;
            Ok(with_health(ClusterConfig::head(name, secret, host, port)))
        }
        (false, Some(head), port) => {
            if !head.contains(':') || head.starts_with("unix:") {
                return Err(format!(
                    "--address: `{head}` is not a head's HOST:PORT (the head's --port)"
                ));
            }
            let secret = secret(args)?.ok_or(
                "joining a cluster needs its secret: --secret-file PATH or OXRAY_CLUSTER_SECRET",
            )?;
            Ok(with_health(ClusterConfig::member(
                name,
                secret,
                host,
                port.unwrap_or(0),
                head,
            )))
        }
        (false, None, _) => Err(
            "say what to start: `oxray start --head` (a single node or, with --port, a cluster's \
             head) or `oxray start --address HEAD_HOST:PORT` (join a cluster)"
                .into(),
        ),
    }
}

/// The local IP address packets to `head` (`host:port`) leave from: what a member advertises
/// when not told (Ray does the same), so other nodes reach it on the network the head is on.
fn route_ip(head: &str) -> Option<String> {
    use std::net::{ToSocketAddrs, UdpSocket};
    let target = head.to_socket_addrs().ok()?.next()?;
    let any = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(any).ok()?;
    // A UDP connect sends nothing; it only picks the route and so the source address.
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

/// A new random secret, written to a new 0600 file in the session's directory (claimed here
/// for the node about to start). That directory is how the CLI records that it made the
/// secret: the node removes its session directory when it stops (`oxray stop`/`down`, which
/// also remove the secret at once), and a later start sweeps it if the node was killed.
fn new_secret_file(session: &str) -> Result<PathBuf, String> {
    use std::io::{Read, Write};
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("reading /dev/urandom for a cluster secret: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let dir = files::claim_session_dir(session, false)?;
    let path = dir.join(SECRET_FILE);
    let _ = std::fs::remove_file(&path);
    let mut file = files::open_private(&path, 0o600, true)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    writeln!(file, "{hex}").map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// The name of the secret `oxray start --head --port` makes, in the session's directory.
const SECRET_FILE: &str = "secret";

fn start(args: &[String]) -> Result<(), String> {
    let mut args = args.to_vec();
    check_names(&args)?;
    let dir = state_dir()?;
    files::sweep_stale_sessions();
    if let Some(p) = flag(&args, "--port") {
        p.parse::<u16>()
            .map_err(|_| format!("--port: `{p}` is not a port number"))?;
    }
    let mut made_secret = None;
    if args.iter().any(|a| a == "--head")
        && flag(&args, "--port").is_some()
        && secret(&args)?.is_none()
    {
        let session = flag(&args, "--session")
            .map(str::to_owned)
            .unwrap_or_else(|| RayletConfig::default().session);
        let path = new_secret_file(&session)?;
        args.extend([
            "--session".to_owned(),
            session,
            "--secret-file".to_owned(),
            path.display().to_string(),
        ]);
        made_secret = Some(path);
    }
    let args = &args[..];
    let result = start_node(&dir, args, made_secret.as_deref());
    if let (Err(_), Some(secret)) = (&result, &made_secret) {
        // The node did not start: the session directory made for its secret goes.
        if let Some(session_dir) = secret.parent() {
            let _ = std::fs::remove_dir_all(session_dir);
        }
    }
    result
}

fn start_node(dir: &Path, args: &[String], made_secret: Option<&Path>) -> Result<(), String> {
    let config = node_config(args)?;
    if args.iter().any(|a| a == "--block") {
        let cluster = config.cluster.clone();
        let mut node = Raylet::start(config).map_err(|e| e.to_string())?;
        let address = node.address().to_owned();
        announce(
            dir,
            &address,
            format!(
                "oxray node running in the foreground (pid {}); stop it with `oxray stop \
                 --address {address}` or a signal.",
                std::process::id()
            ),
        );
        join_hint(cluster.as_ref(), args, made_secret);
        node.wait();
        return Ok(());
    }
    if let Some(head) = config.cluster.as_ref().and_then(|c| c.head.as_deref()) {
        // The node waits for a head that is not up yet; say so before the silence.
        eprintln!("joining the head at {head} (waiting up to a minute if it is not up yet)");
    }
    let log_path = dir.join(format!("{}.log", config.session));
    let log = files::open_private(&log_path, 0o600, false)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let mut child = Command::new(exe)
        .arg("__node")
        .args(args)
        .args(["--session", &config.session])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the node: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let address = line.trim();
    if address.is_empty() {
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(format!("the node did not start: {}", log.trim()));
    }
    announce(
        dir,
        address,
        format!(
            "oxray node started (pid {}, log {}).",
            child.id(),
            log_path.display()
        ),
    );
    join_hint(config.cluster.as_ref(), args, made_secret);
    Ok(())
}

/// Remembers `address` as the node this user started last, prints it (stdout, for scripts),
/// and tells how drivers attach (stderr, after `what` says where the node runs).
fn announce(dir: &Path, address: &str, what: String) {
    let _ = files::write_private(&dir.join("address"), address.as_bytes());
    println!("{address}");
    eprintln!("{what}\nAttach drivers with: export OXRAY_ADDRESS={address}");
}

/// For a head: tells how other nodes join it.
fn join_hint(cluster: Option<&ClusterConfig>, args: &[String], made_secret: Option<&Path>) {
    let Some(c) = cluster.filter(|c| c.head.is_none()) else {
        return;
    };
    let secret_flag = match (made_secret, flag(args, "--secret-file")) {
        (Some(p), _) => format!(" --secret-file {}", p.display()),
        (None, Some(p)) => format!(" --secret-file {p}"),
        (None, None) => String::new(),
    };
    let name = if c.name == DEFAULT_CLUSTER {
        String::new()
    } else {
        format!(" --cluster-name {}", c.name)
    };
    eprintln!(
        "Other nodes join with: oxray start --address {}:{}{secret_flag}{name}",
        c.host, c.port
    );
}

/// `oxray wait --nodes N`: returns once the cluster has N live nodes. Polls the local node
/// (which may not be up yet) every 100 ms, for at most `--timeout` seconds.
fn wait(args: &[String]) -> Result<(), String> {
    let nodes: usize = flag(args, "--nodes")
        .ok_or("usage: oxray wait --nodes N [--timeout SECONDS] [--address ADDRESS]")?
        .parse()
        .map_err(|_| "--nodes: not a number of nodes".to_owned())?;
    let seconds: f64 = match flag(args, "--timeout") {
        Some(t) => t
            .parse()
            .map_err(|_| format!("--timeout: `{t}` is not a number of seconds"))?,
        None => 60.0,
    };
    let timeout = std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("--timeout: `{seconds}` is not a duration"))?;
    let address = address(args)?;
    let start = std::time::Instant::now();
    loop {
        let last = match tool::status(&address) {
            Ok(status) => {
                let alive = if status.cluster.nodes.is_empty() {
                    1 // a node outside any cluster
                } else {
                    status.cluster.nodes.iter().filter(|n| n.alive).count()
                };
                if alive >= nodes {
                    println!("{alive} nodes alive");
                    return Ok(());
                }
                format!("{alive} of {nodes} nodes alive")
            }
            Err(e) => format!("the node at {address} does not answer ({e})"),
        };
        if start.elapsed() >= timeout {
            return Err(format!("gave up after {seconds} s: {last}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn run_node(args: &[String]) -> Result<(), String> {
    let config = node_config(args)?;
    let mut node = Raylet::start(config).map_err(|e| e.to_string())?;
    println!("{}", node.address());
    node.wait();
    Ok(())
}

fn address(args: &[String]) -> Result<String, String> {
    if let Some(a) = flag(args, "--address") {
        return Ok(a.to_owned());
    }
    if let Ok(a) = std::env::var("OXRAY_ADDRESS") {
        if !a.is_empty() {
            return Ok(a);
        }
    }
    std::fs::read_to_string(state_dir()?.join("address"))
        .map(|s| s.trim().to_owned())
        .map_err(|_| {
            "no node address: pass --address, set OXRAY_ADDRESS, or `oxray start --head`".into()
        })
}

fn status(args: &[String]) -> Result<(), String> {
    if let Some(file) = flag(args, "--file") {
        let (head, name, secret) = up::head_of(file)?;
        let view =
            oxray_raylet::cluster::probe(&head, &name, &secret).map_err(|e| e.to_string())?;
        print_cluster(&view);
        return Ok(());
    }
    let address = address(args)?;
    if !address.starts_with("unix:") && address.contains(':') {
        // A raylet's peer address: ask it over QUIC.
        let secret = secret(args)?.ok_or(
            "asking a cluster needs its secret: --secret-file PATH or OXRAY_CLUSTER_SECRET",
        )?;
        let name = flag(args, "--cluster-name").unwrap_or(DEFAULT_CLUSTER);
        let view =
            oxray_raylet::cluster::probe(&address, name, &secret).map_err(|e| e.to_string())?;
        print_cluster(&view);
        return Ok(());
    }
    let s = tool::status(&address).map_err(|e| e.to_string())?;
    if !s.cluster.nodes.is_empty() {
        print_cluster(&s.cluster);
        println!("this node:");
    }
    println!("node {} at {} (raylet pid {})", s.node, s.address, s.pid);
    println!("  resources: {} available of {}", s.available, s.total);
    println!(
        "  object store: {:.1} MB used of {:.1} MB, {} objects",
        s.store_used as f64 / 1e6,
        s.store_capacity as f64 / 1e6,
        s.store_objects
    );
    println!("  drivers: {}", s.drivers);
    println!("  workers: {}", s.workers.len());
    for w in &s.workers {
        println!("    pid {:>7}  {:<8}  job {}", w.pid, w.state, w.job);
    }
    println!("  actors: {}", s.actors.len());
    for a in &s.actors {
        let name = if a.name.is_empty() {
            String::new()
        } else {
            format!(" name {:?}/{:?}", a.namespace, a.name)
        };
        let death = if a.death.is_empty() {
            String::new()
        } else {
            format!(" ({})", a.death)
        };
        println!(
            "    {} {}{name} state {:?} pid {} restarts {}{death}",
            a.id, a.class, a.state, a.pid, a.restarts
        );
    }
    println!("  pending (resources, reason): {}", s.pending.len());
    for p in &s.pending {
        println!("    {}  {}", p.resources, p.reason);
    }
    Ok(())
}

fn print_cluster(view: &oxray_raylet::ClusterView) {
    let alive = view.nodes.iter().filter(|n| n.alive).count();
    println!(
        "cluster {:?}: {} nodes ({alive} alive)",
        view.cluster,
        view.nodes.len()
    );
    for n in &view.nodes {
        let l = &n.load;
        println!(
            "  node {} {}{} at {} ({}, session {}, pid {})",
            n.id,
            if n.alive { "alive" } else { "DEAD" },
            if n.is_head { " head" } else { "" },
            n.peer_address,
            n.hostname,
            n.session,
            n.pid
        );
        println!(
            "    resources {} available of {}; store {:.1} MB used of {:.1} MB ({} objects)",
            l.available,
            n.total,
            l.store_used as f64 / 1e6,
            l.store_capacity as f64 / 1e6,
            l.store_objects
        );
        println!(
            "    workers {}, actors {}, pending lease requests {}",
            l.workers, l.actors, l.pending
        );
        for j in &l.jobs {
            println!(
                "    job {} {} namespace {:?} ({} workers here){}",
                j.job,
                j.program,
                j.namespace,
                j.workers,
                if j.driver {
                    ""
                } else {
                    ", driver exited, detached actors live"
                }
            );
        }
    }
}

fn stop(args: &[String]) -> Result<(), String> {
    // Directories of nodes that were killed go whether or not this stop succeeds.
    files::sweep_stale_sessions();
    let address = address(args)?;
    tool::stop(&address).map_err(|e| e.to_string())?;
    // A secret this CLI made for the node goes now (the node removes its whole session
    // directory as it ends).
    if let Some(session) = address.strip_prefix("unix:@") {
        if files::check_name("session", session).is_ok() {
            let _ = std::fs::remove_file(files::session_dir(session).join(SECRET_FILE));
        }
    }
    // The remembered address of the last node started goes with that node.
    if let Ok(dir) = state_dir() {
        let remembered = dir.join("address");
        if std::fs::read_to_string(&remembered).is_ok_and(|a| a.trim() == address) {
            let _ = std::fs::remove_file(&remembered);
        }
    }
    println!("stopped the node at {address}");
    Ok(())
}
