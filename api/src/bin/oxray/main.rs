//! The `oxray` command: start, inspect and stop nodes and clusters.
//!
//! `oxray --help` lists the subcommands and `oxray SUBCOMMAND --help` their options (parsed by
//! clap: an unknown or misspelt flag is refused with a suggestion, exit code 2).
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
//! `OXRAY_ADDRESS`, else the nodes this user started on this machine, last first, skipping
//! those that no longer answer (so `status` still shows the cluster when the last node
//! started has died); `status` of a `host:port` address asks that raylet over QUIC (with the
//! secret) for the cluster's nodes.
//!
//! Files (logs, the nodes started, session directories) live in `$TMPDIR/oxray-<uid>`, private
//! to the user and checked before use (`oxray_raylet::files`); `--session` and `--cluster-name`
//! are checked before they name anything, and `--secret-file` must be `chmod 600`. `start`,
//! `up` and `stop` remove the session directories of nodes that were killed.

mod job;
mod node_args;
mod up;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::{CommandFactory, Parser, Subcommand};
use oxray_raylet::cluster::ClusterConfig;
use oxray_raylet::{files, tool, Raylet};

use node_args::{NodeArgs, DEFAULT_CLUSTER};

/// Run and inspect oxray nodes: a single node, or a cluster of them.
#[derive(Parser, Debug)]
#[command(name = "oxray", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a node in the background: `--head` (with `--port`, a cluster's head) or
    /// `--address HEAD_HOST:PORT` (join a cluster). Prints its local address.
    Start {
        #[command(flatten)]
        node: NodeArgs,
        /// Stay in the foreground until stopped (under a batch system's job step, e.g. srun).
        #[arg(long)]
        block: bool,
    },
    /// Show a node and its cluster: resources, store, workers, actors, waiting work.
    Status {
        /// A node's local address (unix:@SESSION) or a raylet's HOST:PORT [default:
        /// OXRAY_ADDRESS, else the nodes started here, last first]
        #[arg(long)]
        address: Option<String>,
        /// Ask the head of the cluster this config file describes.
        #[arg(long, value_name = "CLUSTER.toml", conflicts_with = "address")]
        file: Option<PathBuf>,
        /// The cluster secret's file, for a HOST:PORT address.
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
        /// The cluster's name, for a HOST:PORT address.
        #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER)]
        cluster_name: String,
        /// Print the cluster report the dashboard shows, as JSON (nodes, actors, tasks by
        /// state and function, the largest objects, jobs).
        #[arg(long, conflicts_with = "file")]
        json: bool,
    },
    /// List the objects in the nodes' stores (and spilled from them), largest first, with their
    /// owners, readers' pins and totals.
    Memory {
        /// A node's local address [default: as for status]
        #[arg(long)]
        address: Option<String>,
        /// Totals per owner process or per node instead of one line per object.
        #[arg(long, value_enum)]
        group_by: Option<GroupBy>,
    },
    /// Write which worker ran which task or actor call, and when, as Chrome trace JSON (open
    /// it in https://ui.perfetto.dev or chrome://tracing): every node of the cluster that
    /// answers from here, the last 100,000 runs each.
    Timeline {
        /// A node's local address [default: as for status]
        #[arg(long)]
        address: Option<String>,
        /// Where to write the trace.
        #[arg(
            long,
            short,
            value_name = "FILE",
            default_value = "oxray-timeline.json"
        )]
        output: PathBuf,
    },
    /// Print a node's log (the nodes `oxray start` ran in the background write one each).
    Logs {
        /// The node's local address [default: as for status]
        #[arg(long)]
        address: Option<String>,
        /// Keep printing what the node writes, until it stops.
        #[arg(long, short)]
        follow: bool,
        /// Print what worker process PID of that node wrote (its stdout and stderr) instead.
        #[arg(long, value_name = "PID")]
        worker: Option<u32>,
    },
    /// Wait until the cluster has at least N live nodes.
    Wait {
        /// The number of live nodes to wait for.
        #[arg(long, value_name = "N")]
        nodes: usize,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = seconds)]
        timeout: f64,
        /// A node's local address [default: as for status]
        #[arg(long)]
        address: Option<String>,
    },
    /// Stop a node (its workers are killed).
    Stop {
        /// The node's local address [default: OXRAY_ADDRESS, else the last node started here
        /// that still answers]
        #[arg(long)]
        address: Option<String>,
    },
    /// Start every node of a cluster config file.
    Up {
        /// The cluster config file.
        #[arg(value_name = "CLUSTER.toml")]
        file: PathBuf,
    },
    /// Stop every node of a cluster config file.
    Down {
        /// The cluster config file.
        #[arg(value_name = "CLUSTER.toml")]
        file: PathBuf,
    },
    /// Submit a driver program to the cluster's head, and follow, list or stop submitted jobs.
    Job {
        #[command(subcommand)]
        cmd: job::JobCmd,
    },
    /// Print a shell completion script (e.g. `oxray completions bash > ~/.oxray.bash`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The node process `start` runs in the background (not for direct use).
    #[command(name = "__node", hide = true)]
    Node {
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// How `oxray memory` groups its totals.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum GroupBy {
    /// One line per owner process.
    Owner,
    /// One line per node.
    Node,
}

fn seconds(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!("`{v}` is not a number of seconds")),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Start { node, block } => start(node, block),
        Cmd::Status {
            address,
            file,
            secret_file,
            cluster_name,
            json,
        } => {
            if json {
                status_json(address)
            } else {
                status(address, file, secret_file, &cluster_name)
            }
        }
        Cmd::Wait {
            nodes,
            timeout,
            address,
        } => wait(nodes, timeout, address),
        Cmd::Stop { address } => stop(address),
        Cmd::Memory { address, group_by } => memory(address, group_by),
        Cmd::Logs {
            address,
            follow,
            worker,
        } => logs(address, follow, worker),
        Cmd::Timeline { address, output } => timeline(address, &output),
        Cmd::Job { cmd } => match job::run(cmd, job_node) {
            Ok(0) => Ok(()),
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
        Cmd::Up { file } => up::up(&file),
        Cmd::Down { file } => up::down(&file),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "oxray", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Node { node } => run_node(&node),
    };
    if let Err(e) = result {
        eprintln!("oxray: {e}");
        std::process::exit(2);
    }
}

/// The user's state directory (`$TMPDIR/oxray-<uid>`), made or checked (`files`: 0700, ours,
/// not a link).
fn state_dir() -> Result<PathBuf, String> {
    files::ensure_state_dir()
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

fn start(mut node: NodeArgs, block: bool) -> Result<(), String> {
    let dir = state_dir()?;
    files::sweep_stale_sessions();
    let mut made_secret = None;
    if node.head && node.port.is_some() && node.secret()?.is_none() {
        let session = node.session();
        let path = new_secret_file(&session)?;
        node.session = Some(session);
        node.secret_file = Some(path.clone());
        made_secret = Some(path);
    }
    let result = start_node(&dir, &node, block, made_secret.as_deref());
    if let (Err(_), Some(secret)) = (&result, &made_secret) {
        // The node did not start: the session directory made for its secret goes.
        if let Some(session_dir) = secret.parent() {
            let _ = std::fs::remove_dir_all(session_dir);
        }
    }
    result
}

fn start_node(
    dir: &Path,
    node: &NodeArgs,
    block: bool,
    made_secret: Option<&Path>,
) -> Result<(), String> {
    let config = node.config()?;
    if block {
        let cluster = config.cluster.clone();
        let mut raylet = Raylet::start(config).map_err(|e| e.to_string())?;
        let address = raylet.address().to_owned();
        announce(
            dir,
            &address,
            format!(
                "oxray node running in the foreground (pid {}); stop it with `oxray stop \
                 --address {address}` or a signal.",
                std::process::id()
            ),
        );
        dashboard_hint(&raylet.status().dashboard);
        join_hint(cluster.as_ref(), node, made_secret);
        raylet.wait();
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
    let mut background = node.clone();
    background.session = Some(config.session.clone());
    let mut child = Command::new(exe)
        .arg("__node")
        .args(background.to_args())
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
    if let Ok(status) = tool::status(address) {
        dashboard_hint(&status.dashboard);
    }
    join_hint(config.cluster.as_ref(), node, made_secret);
    Ok(())
}

/// Says where the node's dashboard is, if it serves one.
fn dashboard_hint(url: &str) {
    if !url.is_empty() {
        eprintln!("Dashboard (only for you: the address holds its token): {url}");
    }
}

/// The file listing the local addresses of the nodes this user started (oldest first).
const NODES_FILE: &str = "nodes";
/// Entries kept in [`NODES_FILE`] at most.
const NODES_KEPT: usize = 64;

/// The names of the abstract Unix sockets bound on this machine (`/proc/net/unix`).
fn abstract_sockets() -> std::collections::HashSet<String> {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter_map(|p| p.strip_prefix('@'))
        .map(str::to_owned)
        .collect()
}

/// The local addresses of the nodes this user started and did not stop, oldest first.
fn started_nodes(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(NODES_FILE))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("unix:@"))
        .map(str::to_owned)
        .collect()
}

/// Remembers `address` as the node this user started last (and among the nodes started),
/// prints it (stdout, for scripts), and tells how drivers attach (stderr, after `what` says
/// where the node runs).
fn announce(dir: &Path, address: &str, what: String) {
    let _ = files::write_private(&dir.join("address"), address.as_bytes());
    let mut started = started_nodes(dir);
    // Nodes that were killed (not stopped) leave their entries: drop those whose socket is
    // gone (read off /proc/net/unix: no connection, so no node logs a silent client), and
    // keep the list short.
    let listening = abstract_sockets();
    started.retain(|a| {
        a != address
            && a.strip_prefix("unix:@")
                .is_some_and(|name| listening.contains(name))
    });
    started.push(address.to_owned());
    let excess = started.len().saturating_sub(NODES_KEPT);
    started.drain(..excess);
    let _ = files::write_private(&dir.join(NODES_FILE), started.join("\n").as_bytes());
    println!("{address}");
    eprintln!("{what}\nAttach drivers with: export OXRAY_ADDRESS={address}");
}

/// For a head: tells how other nodes join it.
fn join_hint(cluster: Option<&ClusterConfig>, node: &NodeArgs, made_secret: Option<&Path>) {
    let Some(c) = cluster.filter(|c| c.head.is_none()) else {
        return;
    };
    let secret_flag = match made_secret.or(node.secret_file.as_deref()) {
        Some(p) => format!(" --secret-file {}", p.display()),
        None => String::new(),
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

/// `oxray wait --nodes N`: returns once the cluster has N live nodes. Asks the local node
/// (which may not be up yet) every 100 ms, for at most `timeout` seconds.
fn wait(nodes: usize, seconds: f64, address: Option<String>) -> Result<(), String> {
    let timeout = std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("--timeout: `{seconds}` is not a duration"))?;
    let candidates = addresses(address)?;
    let start = std::time::Instant::now();
    loop {
        let mut last = String::new();
        for address in &candidates {
            match tool::status(address) {
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
                    last = format!("{alive} of {nodes} nodes alive");
                    break;
                }
                Err(e) => last = format!("the node at {address} does not answer ({e})"),
            }
        }
        if start.elapsed() >= timeout {
            return Err(format!("gave up after {seconds} s: {last}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn run_node(node: &NodeArgs) -> Result<(), String> {
    let config = node.config()?;
    // `start` made this file the process's stderr; it is rotated by size from here on.
    let log = state_dir()?.join(format!("{}.log", config.session));
    oxray_raylet::logging::init_rotating("info", &log);
    let mut raylet = Raylet::start(config).map_err(|e| e.to_string())?;
    println!("{}", raylet.address());
    raylet.wait();
    Ok(())
}

/// The nodes to ask, in order: `explicit`, else `OXRAY_ADDRESS`, else the nodes this user
/// started here, the last started first.
fn addresses(explicit: Option<String>) -> Result<Vec<String>, String> {
    if let Some(a) = explicit {
        return Ok(vec![a]);
    }
    if let Ok(a) = std::env::var("OXRAY_ADDRESS") {
        if !a.is_empty() {
            return Ok(vec![a]);
        }
    }
    let dir = state_dir()?;
    let mut all: Vec<String> = std::fs::read_to_string(dir.join("address"))
        .map(|s| vec![s.trim().to_owned()])
        .unwrap_or_default();
    for a in started_nodes(&dir).into_iter().rev() {
        if !all.contains(&a) {
            all.push(a);
        }
    }
    all.retain(|a| !a.is_empty());
    if all.is_empty() {
        return Err(
            "no node address: pass --address, set OXRAY_ADDRESS, or `oxray start --head`".into(),
        );
    }
    Ok(all)
}

/// The first of `candidates` that answers, with its status.
fn first_answering(candidates: &[String]) -> Result<(String, oxray_raylet::NodeStatus), String> {
    let mut errors = Vec::new();
    for address in candidates {
        match tool::status(address) {
            Ok(s) => {
                if !errors.is_empty() {
                    eprintln!("({}; asked {address})", errors.join("; "));
                }
                return Ok((address.clone(), s));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(errors.join("; "))
}

fn status(
    address: Option<String>,
    file: Option<PathBuf>,
    secret_file: Option<PathBuf>,
    cluster_name: &str,
) -> Result<(), String> {
    if let Some(file) = file {
        let (head, name, secret) = up::head_of(&file)?;
        let view =
            oxray_raylet::cluster::probe(&head, &name, &secret).map_err(|e| e.to_string())?;
        print_cluster(&view);
        return Ok(());
    }
    let candidates = addresses(address)?;
    if let [address] = &candidates[..] {
        if !address.starts_with("unix:") && address.contains(':') {
            // A raylet's peer address: ask it over QUIC.
            let secret = node_args::secret(secret_file.as_deref())?.ok_or(
                "asking a cluster needs its secret: --secret-file PATH or OXRAY_CLUSTER_SECRET",
            )?;
            let view = oxray_raylet::cluster::probe(address, cluster_name, &secret)
                .map_err(|e| e.to_string())?;
            print_cluster(&view);
            return Ok(());
        }
    }
    let (address, s) = first_answering(&candidates)?;
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
    if s.spill_dir.is_empty() {
        println!("  spilling: off");
    } else {
        println!(
            "  spilled: {} objects, {:.1} MB now; {:.1} MB spilled and {:.1} MB restored in all ({})",
            s.spilled_objects,
            s.spilled_bytes as f64 / 1e6,
            s.spilled_total as f64 / 1e6,
            s.restored_total as f64 / 1e6,
            s.spill_dir
        );
    }
    if !s.dashboard.is_empty() {
        println!("  dashboard: {}", s.dashboard);
    }
    if !s.cluster.nodes.is_empty() {
        println!(
            "  across nodes: {:.1} MB of objects served to other nodes; {} connections relayed (tunnels)",
            s.bytes_served as f64 / 1e6,
            s.tunnels
        );
    }
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
    print_placement_groups(&address);
    Ok(())
}

/// The cluster's placement groups: state, strategy, each bundle and its node, why one waits.
fn print_placement_groups(address: &str) {
    let groups = match tool::placement_groups(address) {
        Ok(g) => g,
        Err(e) => {
            println!("placement groups: unknown ({e})");
            return;
        }
    };
    println!("placement groups: {}", groups.len());
    for g in &groups {
        let name = if g.spec.name.is_empty() {
            String::new()
        } else {
            format!(" name {:?}", g.spec.name)
        };
        println!(
            "  {}{name} {:?} {:?}{}",
            g.spec.id,
            g.spec.strategy,
            g.state,
            if g.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", g.reason)
            }
        );
        for (i, (b, node)) in g.spec.bundles.iter().zip(&g.nodes).enumerate() {
            let at = node.map_or("not placed".to_owned(), |n| format!("on node {n}"));
            println!("    bundle {i}: {b} {at}");
        }
    }
}

/// The node `oxray job` talks to: `explicit` if given, else the head of the cluster of the
/// first node that answers (when the head answers here), else that node.
fn job_node(explicit: Option<String>) -> Result<String, String> {
    let given = explicit.is_some();
    let (address, status) = first_answering(&addresses(explicit)?)?;
    if given {
        return Ok(address);
    }
    let head = status
        .cluster
        .nodes
        .iter()
        .find(|n| n.is_head && n.alive && !n.local_address.is_empty());
    match head {
        Some(h) if h.local_address != address && tool::status(&h.local_address).is_ok() => {
            Ok(h.local_address.clone())
        }
        _ => Ok(address),
    }
}

/// `oxray status --json`: the dashboard's report of the node asked and its cluster.
fn status_json(address: Option<String>) -> Result<(), String> {
    let (address, _) = first_answering(&addresses(address)?)?;
    let report = oxray_raylet::dashboard::report::gather(&address).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

/// `oxray logs`: the log of the node at `address` (`$TMPDIR/oxray-<uid>/SESSION.log`, after
/// its rotated files `SESSION.log.N` … `.1`, oldest first); with `follow`, what the node writes
/// next too (across rotations), until it stops answering. With `worker`, the output of that
/// worker process of the node instead (`SESSION_DIR/workers/worker-PID.log`).
fn logs(address: Option<String>, follow: bool, worker: Option<u32>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let candidates = addresses(address)?;
    let address = match &candidates[..] {
        [one] => one.clone(),
        _ => first_answering(&candidates)
            .map(|(a, _)| a)
            .unwrap_or_else(|_| candidates[0].clone()),
    };
    let session = address
        .strip_prefix("unix:@")
        .ok_or_else(|| format!("`{address}` is not a local node address (unix:@SESSION)"))?;
    files::check_name("session", session)?;
    let path = match worker {
        Some(pid) => oxray_raylet::worker_log(session, pid),
        None => state_dir()?.join(format!("{session}.log")),
    };
    let open = |path: &Path| {
        std::fs::File::open(path).map_err(|e| match worker {
            Some(pid) => format!(
                "no output of worker {pid} at the node at {address} ({}: {e}); `oxray status` \
                 lists its workers (a driver's embedded node prints its workers' output in \
                 the driver only)",
                path.display()
            ),
            None => format!(
                "no log for the node at {address} ({}: {e}); nodes started with --block or \
                 embedded in a driver log to their stderr",
                path.display()
            ),
        })
    };
    let mut out = std::io::stdout();
    let mut copy = |file: &mut std::fs::File, path: &Path| {
        std::io::copy(file, &mut out)
            .map(|_| ())
            .map_err(|e| format!("reading {}: {e}", path.display()))
    };
    let rotated = match worker {
        Some(_) => Vec::new(),
        None => oxray_raylet::logging::rotated(&path),
    };
    for old in rotated {
        copy(&mut open(&old)?, &old)?;
    }
    let mut file = open(&path)?;
    copy(&mut file, &path)?;
    if !follow {
        return Ok(());
    }
    let mut changes = oxray_raylet::log_watch::Watch::new(&path)?;
    loop {
        // Woken by a write to the file, or once a second to see whether the node still runs.
        let changed = changes.wait(std::time::Duration::from_secs(1))?;
        copy(&mut file, &path)?;
        // Rotated: the file read so far is now `.1` (read to its end above); go on with the new.
        let current = std::fs::metadata(&path).map(|m| m.ino()).ok();
        let reading = file.metadata().map(|m| m.ino()).ok();
        if current.is_some() && current != reading {
            file = open(&path)?;
            changes = oxray_raylet::log_watch::Watch::new(&path)?;
            copy(&mut file, &path)?;
        }
        if !changed && tool::status(&address).is_err() {
            return Ok(());
        }
    }
}

/// `oxray timeline`: the runs every node reachable from here recorded, as Chrome trace JSON.
fn timeline(address: Option<String>, output: &std::path::Path) -> Result<(), String> {
    let (address, _) = first_answering(&addresses(address)?)?;
    let (per_node, unreachable) =
        oxray_raylet::timeline::gather(&address).map_err(|e| e.to_string())?;
    for line in unreachable {
        println!("{line}");
    }
    let runs: usize = per_node.iter().map(|(_, e)| e.len()).sum();
    let trace = oxray_raylet::timeline::chrome_trace(&per_node);
    std::fs::write(output, trace.to_string())
        .map_err(|e| format!("writing {}: {e}", output.display()))?;
    println!(
        "wrote {runs} task and actor call runs of {} nodes to {} (open it in \
         https://ui.perfetto.dev or chrome://tracing)",
        per_node.len(),
        output.display()
    );
    Ok(())
}

/// `oxray memory`: the objects of the node asked and of every other node of its cluster whose
/// local address answers from here (nodes on this machine).
fn memory(address: Option<String>, group_by: Option<GroupBy>) -> Result<(), String> {
    let (address, status) = first_answering(&addresses(address)?)?;
    let nodes = oxray_raylet::dashboard::report::cluster_nodes(&address, &status);
    let mut per_owner: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for (node, at) in &nodes {
        let objects = match tool::memory(at) {
            Ok(o) => o,
            Err(e) if *at != address => {
                println!("node {node} at {at}: not reachable from here ({e})");
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        // Objects made in files count as spilled: both are on disk.
        let total = |place: &str| -> f64 {
            objects
                .iter()
                .filter(|o| o.place == place || (place == "spilled" && o.place == "in a file"))
                .map(|o| o.size)
                .sum::<u64>() as f64
                / 1e6
        };
        println!(
            "node {node} at {at}: {} objects, {:.1} MB in memory, {:.1} MB spilled",
            objects.len(),
            total("memory"),
            total("spilled")
        );
        for o in &objects {
            let owner = oxray_common::ids::owner_of(o.id).to_string();
            match group_by {
                None => println!(
                    "  {} {:>10.1} MB  {:<13} pins {}  {}  owner {owner}",
                    o.id,
                    o.size as f64 / 1e6,
                    o.place,
                    o.pins,
                    if o.primary { "primary" } else { "secondary" },
                ),
                Some(GroupBy::Owner) => {
                    let e = per_owner.entry(owner).or_default();
                    e.0 += 1;
                    if o.place != "memory" {
                        e.2 += o.size;
                    } else {
                        e.1 += o.size;
                    }
                }
                Some(GroupBy::Node) => {}
            }
        }
    }
    if group_by == Some(GroupBy::Owner) {
        println!("by owner:");
        for (owner, (count, memory, spilled)) in per_owner {
            println!(
                "  owner {owner}: {count} objects, {:.1} MB in memory, {:.1} MB spilled",
                memory as f64 / 1e6,
                spilled as f64 / 1e6
            );
        }
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

fn stop(address: Option<String>) -> Result<(), String> {
    // Directories of nodes that were killed go whether or not this stop succeeds.
    files::sweep_stale_sessions();
    let candidates = addresses(address)?;
    let address = if let [only] = &candidates[..] {
        only.clone()
    } else {
        first_answering(&candidates)?.0
    };
    tool::stop(&address).map_err(|e| e.to_string())?;
    // A secret this CLI made for the node goes now (the node removes its whole session
    // directory as it ends).
    if let Some(session) = address.strip_prefix("unix:@") {
        if files::check_name("session", session).is_ok() {
            let _ = std::fs::remove_file(files::session_dir(session).join(SECRET_FILE));
        }
    }
    // The node leaves the remembered ones.
    if let Ok(dir) = state_dir() {
        let remembered = dir.join("address");
        if std::fs::read_to_string(&remembered).is_ok_and(|a| a.trim() == address) {
            let _ = std::fs::remove_file(&remembered);
        }
        let mut started = started_nodes(&dir);
        started.retain(|a| *a != address);
        let _ = files::write_private(&dir.join(NODES_FILE), started.join("\n").as_bytes());
    }
    println!("stopped the node at {address}");
    Ok(())
}
