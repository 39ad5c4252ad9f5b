//! The cluster report: what the dashboard shows and `oxray status --json` prints, one JSON
//! document gathered from the node asked and every other node of its cluster reachable from
//! this machine.
//!
//! Nodes on other machines are known only through the head's cluster view (resources, store
//! use, workers, actors, jobs: what they report every health-check period); their actors,
//! objects and runs are listed by asking them on their own machine.

use std::collections::{BTreeMap, HashMap};

use oxray_common::peer::JobSummary;
use oxray_common::protocol::{ActorState, NodeStatus, StoredObject};
use oxray_common::resources::Resources;
use serde::Serialize;

use crate::error::Result;
use crate::tool;

/// The largest objects listed (of every node together).
pub const OBJECTS_LISTED: usize = 100;

/// The whole report.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    /// The cluster's name (empty: a single node).
    pub cluster: String,
    /// The node asked (its id).
    pub asked: String,
    /// Every node, the one asked first.
    pub nodes: Vec<NodeReport>,
    /// Actors, dead ones included (with the cause of death).
    pub actors: Vec<ActorReport>,
    /// Tasks and actor calls by state and by function.
    pub tasks: TaskReport,
    /// Objects in the stores (and spilled), the largest first.
    pub objects: ObjectReport,
    /// Jobs (drivers) of every node.
    pub jobs: Vec<JobReport>,
    /// Programs submitted to the node asked with `oxray job submit`.
    pub submitted: Vec<SubmittedReport>,
}

/// A program submitted with `oxray job submit`.
#[derive(Serialize, Debug, Clone)]
pub struct SubmittedReport {
    /// Its id (`job-N`).
    pub job: String,
    /// The program and its arguments.
    pub command: String,
    /// `running`, `succeeded`, `failed` or `stopped`.
    pub state: String,
    /// Its process.
    pub pid: u32,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When it ended (0: it runs).
    pub ended_ms: u64,
    /// How it ended.
    pub exit: String,
}

/// One node.
#[derive(Serialize, Debug, Clone)]
pub struct NodeReport {
    /// Its id.
    pub id: String,
    /// The address local clients attach with.
    pub address: String,
    /// Where other raylets reach it (empty: a single node).
    pub peer_address: String,
    /// The machine's host name (empty when not known).
    pub hostname: String,
    /// The cluster's head (a single node is its own head).
    pub head: bool,
    /// Whether it answers health checks.
    pub alive: bool,
    /// Whether it answered from this machine (else the figures are the head's last view).
    pub reachable: bool,
    /// The raylet's pid.
    pub pid: u32,
    /// All resources.
    pub total: BTreeMap<String, f64>,
    /// Resources not leased.
    pub available: BTreeMap<String, f64>,
    /// Object store size in bytes.
    pub store_capacity: u64,
    /// Store bytes in use.
    pub store_used: u64,
    /// Objects in the store.
    pub store_objects: u64,
    /// Objects spilled to disk (or made in files) now.
    pub spilled_objects: u64,
    /// Their bytes.
    pub spilled_bytes: u64,
    /// Bytes spilled since the node started.
    pub spilled_total: u64,
    /// Bytes restored since the node started.
    pub restored_total: u64,
    /// Where spilled objects go (empty: spilling is off, or not known).
    pub spill_dir: String,
    /// Worker processes (for an unreachable node only their number is known).
    pub workers: Vec<WorkerReport>,
    /// How many worker processes.
    pub worker_count: u32,
    /// Connected drivers.
    pub drivers: u32,
    /// Lease requests waiting for resources.
    pub pending: Vec<PendingReport>,
    /// Task and actor call runs its workers reported since it started.
    pub runs: u64,
    /// Of them, failed.
    pub failed: u64,
}

/// One worker process.
#[derive(Serialize, Debug, Clone)]
pub struct WorkerReport {
    /// Its pid.
    pub pid: u32,
    /// `starting`, `idle`, `leased`, `blocked` or `actor`.
    pub state: String,
    /// The job it works for.
    pub job: String,
}

/// A lease request waiting for resources.
#[derive(Serialize, Debug, Clone)]
pub struct PendingReport {
    /// What it asks for.
    pub resources: String,
    /// Why it waits.
    pub reason: String,
    /// No node of the cluster could ever grant it.
    pub infeasible: bool,
}

/// One actor.
#[derive(Serialize, Debug, Clone)]
pub struct ActorReport {
    /// Its id.
    pub id: String,
    /// Its class.
    pub class: String,
    /// Its name, if named.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `pending`, `alive`, `restarting` or `dead`.
    pub state: String,
    /// Its process (0: none now).
    pub pid: u32,
    /// The node that reported it.
    pub node: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Why it died (empty while it lives).
    pub death: String,
}

/// Tasks and actor calls.
#[derive(Serialize, Debug, Clone, Default)]
pub struct TaskReport {
    /// Runs that returned a value, on every node reached, since the nodes started.
    pub finished: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Workers running a task now (leased or blocked in a `get`).
    pub running: u64,
    /// Lease requests waiting for resources now.
    pub pending: u64,
    /// Runs by function, most first.
    pub by_function: Vec<FunctionReport>,
}

/// The runs of one function (or actor method) on every node reached.
#[derive(Serialize, Debug, Clone)]
pub struct FunctionReport {
    /// The function or `Class::method`.
    pub function: String,
    /// An actor method.
    pub actor_call: bool,
    /// Runs that returned a value.
    pub finished: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Mean time of a run, in milliseconds.
    pub mean_ms: f64,
    /// Runs per node (node id to runs).
    pub per_node: BTreeMap<String, u64>,
}

/// Objects.
#[derive(Serialize, Debug, Clone, Default)]
pub struct ObjectReport {
    /// Objects on the nodes reached.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The largest [`OBJECTS_LISTED`].
    pub largest: Vec<ObjectEntry>,
}

/// One object.
#[derive(Serialize, Debug, Clone)]
pub struct ObjectEntry {
    /// Its id.
    pub id: String,
    /// Its size in bytes.
    pub size: u64,
    /// The node that holds it.
    pub node: String,
    /// `in memory`, `spilled` or `in a file`.
    pub place: String,
    /// Readers holding it now.
    pub pins: u32,
    /// The primary copy (else a copy pulled from another node).
    pub primary: bool,
}

/// One job (a driver and what it started).
#[derive(Serialize, Debug, Clone)]
pub struct JobReport {
    /// The node its driver attached to.
    pub node: String,
    /// The job's id on that node.
    pub job: String,
    /// Whether its driver still runs.
    pub driver: bool,
    /// Its namespace.
    pub namespace: String,
    /// The driver's program.
    pub program: String,
    /// Its worker processes on that node.
    pub workers: u32,
}

fn resources(r: &Resources) -> BTreeMap<String, f64> {
    r.iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn actor_state(s: ActorState) -> &'static str {
    match s {
        ActorState::Pending => "pending",
        ActorState::Alive => "alive",
        ActorState::Restarting => "restarting",
        ActorState::Dead => "dead",
    }
}

/// The node at `address` (answering with `status`) and every other live node of its cluster,
/// as `(node id, local address)`, the asked node first.
pub fn cluster_nodes(address: &str, status: &NodeStatus) -> Vec<(String, String)> {
    let mut nodes = vec![(status.node.to_string(), address.to_owned())];
    for n in status.cluster.nodes.iter().filter(|n| n.alive) {
        if n.local_address != address {
            nodes.push((n.id.to_string(), n.local_address.clone()));
        }
    }
    nodes
}

/// Gathers the report from the node at `address` (a local `unix:@SESSION` address) and the
/// other nodes of its cluster that answer from this machine.
pub fn gather(address: &str) -> Result<Report> {
    let asked = tool::status(address)?;
    let mut reached: Vec<(NodeStatus, Vec<StoredObject>)> = Vec::new();
    let objects = tool::memory(address).unwrap_or_default();
    let others: Vec<String> = cluster_nodes(address, &asked)
        .into_iter()
        .skip(1)
        .map(|(_, at)| at)
        .collect();
    reached.push((asked, objects));
    let submitted = crate::job_client::list(address)
        .unwrap_or_default()
        .into_iter()
        .map(|j| SubmittedReport {
            command: std::iter::once(j.program)
                .chain(j.args)
                .collect::<Vec<_>>()
                .join(" "),
            job: j.job,
            state: j.state.as_str().to_owned(),
            pid: j.pid,
            started_ms: j.started_ms,
            ended_ms: j.ended_ms,
            exit: j.exit,
        })
        .collect();
    for at in others {
        // A node on another machine (or one that just died) does not answer here.
        if let Ok(status) = tool::status(&at) {
            let objects = tool::memory(&at).unwrap_or_default();
            reached.push((status, objects));
        }
    }
    let mut report = build(reached);
    report.submitted = submitted;
    Ok(report)
}

/// The report of the nodes that answered, `reached[0]` being the one asked (without the
/// submitted jobs, which [`gather`] adds).
pub fn build(reached: Vec<(NodeStatus, Vec<StoredObject>)>) -> Report {
    let view = reached
        .first()
        .map(|(s, _)| s.cluster.clone())
        .unwrap_or_default();
    let asked = reached
        .first()
        .map(|(s, _)| s.node.to_string())
        .unwrap_or_default();
    let mut nodes = Vec::new();
    let mut actors: Vec<ActorReport> = Vec::new();
    let mut actor_index: HashMap<String, usize> = HashMap::new();
    let mut tasks = TaskReport::default();
    let mut functions: BTreeMap<(String, bool), (FunctionReport, u64)> = BTreeMap::new();
    let mut all_objects = Vec::new();
    let mut jobs = Vec::new();
    for (s, objects) in &reached {
        let id = s.node.to_string();
        let info = view.nodes.iter().find(|n| n.id == s.node);
        let (ok, failed): (u64, u64) = s
            .runs
            .iter()
            .fold((0, 0), |(o, f), r| (o + r.ok, f + r.failed));
        nodes.push(NodeReport {
            id: id.clone(),
            address: s.address.clone(),
            peer_address: info.map(|n| n.peer_address.clone()).unwrap_or_default(),
            hostname: info.map(|n| n.hostname.clone()).unwrap_or_default(),
            head: info.is_none_or(|n| n.is_head),
            alive: true,
            reachable: true,
            pid: s.pid,
            total: resources(&s.total),
            available: resources(&s.available),
            store_capacity: s.store_capacity,
            store_used: s.store_used,
            store_objects: s.store_objects,
            spilled_objects: s.spilled_objects,
            spilled_bytes: s.spilled_bytes,
            spilled_total: s.spilled_total,
            restored_total: s.restored_total,
            spill_dir: s.spill_dir.clone(),
            workers: s
                .workers
                .iter()
                .map(|w| WorkerReport {
                    pid: w.pid,
                    state: w.state.clone(),
                    job: w.job.to_string(),
                })
                .collect(),
            worker_count: s.workers.len() as u32,
            drivers: s.drivers,
            pending: s
                .pending
                .iter()
                .map(|p| PendingReport {
                    resources: p.resources.to_string(),
                    reason: p.reason.clone(),
                    infeasible: p.infeasible,
                })
                .collect(),
            runs: ok + failed,
            failed,
        });
        tasks.finished += ok;
        tasks.failed += failed;
        tasks.running += s
            .workers
            .iter()
            .filter(|w| w.state == "leased" || w.state == "blocked")
            .count() as u64;
        tasks.pending += s.pending.len() as u64;
        for r in &s.runs {
            let (entry, total_us) = functions
                .entry((r.function.clone(), r.actor_call))
                .or_insert_with(|| {
                    (
                        FunctionReport {
                            function: r.function.clone(),
                            actor_call: r.actor_call,
                            finished: 0,
                            failed: 0,
                            mean_ms: 0.0,
                            per_node: BTreeMap::new(),
                        },
                        0,
                    )
                });
            entry.finished += r.ok;
            entry.failed += r.failed;
            *total_us = total_us.saturating_add(r.total_us);
            *entry.per_node.entry(id.clone()).or_default() += r.ok + r.failed;
        }
        for a in &s.actors {
            let report = ActorReport {
                id: a.id.to_string(),
                class: a.class.clone(),
                name: a.name.clone(),
                namespace: a.namespace.clone(),
                state: actor_state(a.state).to_owned(),
                pid: a.pid,
                node: id.clone(),
                restarts: a.restarts,
                death: a.death.clone(),
            };
            // Several nodes may know one actor (the head's table, and the node that hosts it):
            // the entry of the node that hosts it (a local address) wins.
            match actor_index.get(&report.id) {
                Some(&i) if !a.address.starts_with("peer://") => actors[i] = report,
                Some(_) => {}
                None => {
                    actor_index.insert(report.id.clone(), actors.len());
                    actors.push(report);
                }
            }
        }
        all_objects.extend(objects.iter().map(|o| ObjectEntry {
            id: o.id.to_string(),
            size: o.size,
            node: id.clone(),
            place: o.place.clone(),
            pins: o.pins,
            primary: o.primary,
        }));
        jobs.extend(s.jobs.iter().map(|j| job(&id, j)));
    }
    // Nodes on other machines (or not answering): the head's last view of them.
    for n in &view.nodes {
        if reached.iter().any(|(s, _)| s.node == n.id) {
            continue;
        }
        let id = n.id.to_string();
        nodes.push(NodeReport {
            id: id.clone(),
            address: n.local_address.clone(),
            peer_address: n.peer_address.clone(),
            hostname: n.hostname.clone(),
            head: n.is_head,
            alive: n.alive,
            reachable: false,
            pid: n.pid,
            total: resources(&n.total),
            available: resources(&n.load.available),
            store_capacity: n.load.store_capacity,
            store_used: n.load.store_used,
            store_objects: n.load.store_objects,
            spilled_objects: 0,
            spilled_bytes: 0,
            spilled_total: 0,
            restored_total: 0,
            spill_dir: String::new(),
            workers: Vec::new(),
            worker_count: n.load.workers,
            drivers: 0,
            pending: Vec::new(),
            runs: 0,
            failed: 0,
        });
        tasks.pending += u64::from(n.load.pending);
        jobs.extend(n.load.jobs.iter().map(|j| job(&id, j)));
    }
    tasks.by_function = functions
        .into_values()
        .map(|(mut f, total_us)| {
            let runs = f.finished + f.failed;
            if runs > 0 {
                f.mean_ms = total_us as f64 / runs as f64 / 1000.0;
            }
            f
        })
        .collect();
    tasks
        .by_function
        .sort_by_key(|f| std::cmp::Reverse(f.finished + f.failed));
    let count = all_objects.len() as u64;
    let bytes = all_objects.iter().map(|o| o.size).sum();
    all_objects.sort_by_key(|o| std::cmp::Reverse(o.size));
    all_objects.truncate(OBJECTS_LISTED);
    Report {
        cluster: view.cluster.clone(),
        asked,
        nodes,
        actors,
        tasks,
        objects: ObjectReport {
            count,
            bytes,
            largest: all_objects,
        },
        jobs,
        submitted: Vec::new(),
    }
}

fn job(node: &str, j: &JobSummary) -> JobReport {
    JobReport {
        node: node.to_owned(),
        job: j.job.to_string(),
        driver: j.driver,
        namespace: j.namespace.clone(),
        program: j.program.clone(),
        workers: j.workers,
    }
}
