//! The placement-group manager: on the head (or a node outside any cluster), the table of
//! groups and the two-phase placement of their bundles (the nodes' side is `bundles`).
//!
//! A group waits in creation order until a plan fits ([`plan`]: PACK, SPREAD, STRICT_PACK,
//! STRICT_SPREAD over the free resources the last view showed, less what was sent since).
//! Then every node of the plan is asked to *prepare* its bundles; once all said yes, all are
//! asked to *commit*; a no (or a node that dies meanwhile) in either phase releases the bundles
//! everywhere they were taken and the group waits for the next view to try again, so a group
//! is never left half-reserved. This node's part is done in place; other nodes' go through the
//! link (`LinkOp::Bundles`) and come back as [`NodeState::bundles_answered`]. When a node
//! holding bundles of a created group dies, those bundles are placed again (`Rescheduling`),
//! as in Ray; the actors that ran in them restart through the usual actor restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use oxray_common::placement::{
    BundleOp, PlacementGroupId, PlacementGroupInfo, PlacementGroupSpec, PlacementGroupState,
    PlacementRequest, PlacementStrategy,
};
use oxray_common::protocol::{ErrorKind, FromRaylet};
use oxray_common::resources::{Resources, CPU};
use oxray_common::{JobId, NodeId};

use super::effects::{Effect, LinkOp};
use super::state::NodeState;

/// Removed groups kept in the table (status, late `Wait`s); older ones are forgotten.
const REMOVED_KEPT: usize = 1000;

/// The most bundles one group may have (planning is linear in bundles × nodes per try).
const MAX_BUNDLES: usize = 10_000;

/// Who waits for a manager's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiter {
    /// A local client's request.
    Client { conn: u64, req: u64 },
    /// A request another node passed on (`Effect::PeerAnswer` completes it).
    Peer(u64),
}

/// One try at placing a group's bundles.
#[derive(Debug)]
struct Attempt {
    id: u64,
    /// Bundles by node.
    plan: BTreeMap<u16, Vec<u32>>,
    /// Nodes that have not answered the current phase.
    waiting: BTreeSet<u16>,
    /// Nodes that prepared (released on a rollback).
    prepared: BTreeSet<u16>,
    /// Why the attempt fails, once a node said no.
    failed: Option<String>,
    committing: bool,
}

#[derive(Debug)]
struct Group {
    info: PlacementGroupInfo,
    /// The node index of each bundle (`None`: not placed now).
    at: Vec<Option<u16>>,
    attempt: Option<Attempt>,
    /// A try failed: the next one waits for a new view (fresher loads).
    wait_for_view: bool,
}

/// The groups this node manages.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    groups: HashMap<PlacementGroupId, Group>,
    /// Groups to place, in creation order.
    queue: VecDeque<PlacementGroupId>,
    names: HashMap<(String, String), PlacementGroupId>,
    waiters: HashMap<PlacementGroupId, Vec<Waiter>>,
    removed: VecDeque<PlacementGroupId>,
    next_attempt: u64,
}

/// A node a plan may use.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub index: u16,
    pub free: Resources,
    pub total: Resources,
}

/// Why a plan does not fit now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoPlan {
    /// Some node could hold it once work there ends.
    Busy(String),
    /// No alive node set can ever hold it.
    Infeasible(String),
}

impl NoPlan {
    fn reason(&self) -> String {
        match self {
            NoPlan::Busy(m) => format!("waiting for resources: {m}"),
            NoPlan::Infeasible(m) => format!("infeasible: {m}"),
        }
    }
}

/// Places `bundles` (index, resources) by `strategy` on `nodes` (sorted by index), avoiding
/// `taken` (nodes holding the group's other bundles, for the strict strategies): the node of
/// each bundle.
pub(crate) fn plan(
    bundles: &[(u32, Resources)],
    strategy: PlacementStrategy,
    nodes: &[Candidate],
    taken: &[u16],
) -> Result<Vec<(u32, u16)>, NoPlan> {
    let mut sum = Resources::new();
    for (_, r) in bundles {
        sum.add(r);
    }
    let most_free = |ns: &mut Vec<Candidate>| {
        ns.sort_by(|a, b| {
            b.free
                .get(CPU)
                .total_cmp(&a.free.get(CPU))
                .then(a.index.cmp(&b.index))
        })
    };
    match strategy {
        PlacementStrategy::StrictPack => {
            let mut ns: Vec<Candidate> = nodes
                .iter()
                .filter(|n| taken.is_empty() || taken.contains(&n.index))
                .cloned()
                .collect();
            most_free(&mut ns);
            if let Some(n) = ns.iter().find(|n| n.free.contains(&sum)) {
                return Ok(bundles.iter().map(|(i, _)| (*i, n.index)).collect());
            }
            if ns.iter().any(|n| n.total.contains(&sum)) {
                Err(NoPlan::Busy(format!("no node has {sum} free")))
            } else {
                Err(NoPlan::Infeasible(format!(
                    "STRICT_PACK needs one node with {sum}; no alive node has that much"
                )))
            }
        }
        PlacementStrategy::Pack => {
            if taken.is_empty() {
                if let Ok(p) = plan(bundles, PlacementStrategy::StrictPack, nodes, &[]) {
                    return Ok(p);
                }
            }
            greedy(bundles, nodes, |_, used| used)
        }
        PlacementStrategy::StrictSpread => {
            let free_nodes: Vec<&Candidate> =
                nodes.iter().filter(|n| !taken.contains(&n.index)).collect();
            let mut left: Vec<Candidate> = free_nodes.iter().map(|n| (*n).clone()).collect();
            let mut out = Vec::new();
            // Largest bundles first, each on the free-est node left that fits it.
            let mut order: Vec<&(u32, Resources)> = bundles.iter().collect();
            order.sort_by(|a, b| b.1.get(CPU).total_cmp(&a.1.get(CPU)));
            for (i, r) in order {
                most_free(&mut left);
                match left.iter().position(|n| n.free.contains(r)) {
                    Some(k) => {
                        out.push((*i, left[k].index));
                        left.remove(k);
                    }
                    None => {
                        let could = free_nodes
                            .iter()
                            .filter(|n| bundles.iter().any(|(_, b)| n.total.contains(b)))
                            .count();
                        let need = bundles.len();
                        return Err(if could >= need {
                            NoPlan::Busy(format!(
                                "STRICT_SPREAD needs {need} nodes with room free at once"
                            ))
                        } else {
                            NoPlan::Infeasible(format!(
                                "STRICT_SPREAD needs {need} distinct nodes; {could} alive \
                                 nodes can hold its bundles"
                            ))
                        });
                    }
                }
            }
            out.sort_unstable();
            Ok(out)
        }
        PlacementStrategy::Spread => {
            if let Ok(p) = plan(bundles, PlacementStrategy::StrictSpread, nodes, taken) {
                return Ok(p);
            }
            // Some share a node: the least used that fits, as evenly as it goes.
            greedy(
                bundles,
                nodes,
                |n, used| {
                    if used == Some(n) {
                        None
                    } else {
                        Some(n)
                    }
                },
            )
        }
    }
}

/// Places bundles one by one on a node that still fits them: `prefer(node, last)` says whether
/// to try the node used last first (`Some(last)`, PACK) or to move on (`None`, SPREAD).
fn greedy(
    bundles: &[(u32, Resources)],
    nodes: &[Candidate],
    prefer: impl Fn(u16, Option<u16>) -> Option<u16>,
) -> Result<Vec<(u32, u16)>, NoPlan> {
    let mut left: Vec<Candidate> = nodes.to_vec();
    left.sort_by(|a, b| {
        b.free
            .get(CPU)
            .total_cmp(&a.free.get(CPU))
            .then(a.index.cmp(&b.index))
    });
    let mut count: HashMap<u16, usize> = HashMap::new();
    let mut last: Option<u16> = None;
    let mut out = Vec::new();
    for (i, r) in bundles {
        let pick = last
            .and_then(|l| prefer(l, Some(l)))
            .filter(|l| left.iter().any(|n| n.index == *l && n.free.contains(r)))
            .or_else(|| {
                left.iter()
                    .filter(|n| n.free.contains(r))
                    .min_by_key(|n| count.get(&n.index).copied().unwrap_or(0))
                    .map(|n| n.index)
            });
        let Some(k) = pick else {
            return Err(if nodes.iter().any(|n| n.total.contains(r)) {
                NoPlan::Busy(format!("no node has {r} free for bundle {i}"))
            } else {
                NoPlan::Infeasible(format!("bundle {i} needs {r}; no alive node has that much"))
            });
        };
        if let Some(n) = left.iter_mut().find(|n| n.index == k) {
            n.free.subtract(r);
        }
        *count.entry(k).or_default() += 1;
        last = Some(k);
        out.push((*i, k));
    }
    Ok(out)
}

impl NodeState {
    /// A placement-group request from a local client or (on the manager) another node.
    pub fn placement(&mut self, waiter: Waiter, request: PlacementRequest) {
        if !self.setup.places_groups {
            if let Waiter::Client { conn, req } = waiter {
                self.link(LinkOp::PlacementToHead { conn, req, request });
            }
            return;
        }
        match request {
            PlacementRequest::Create(spec) => self.create_group(waiter, spec),
            PlacementRequest::Wait(id) => match self.pgs.groups.get(&id) {
                Some(g)
                    if matches!(
                        g.info.state,
                        PlacementGroupState::Created | PlacementGroupState::Removed
                    ) =>
                {
                    let info = g.info.clone();
                    self.answer(waiter, Ok(vec![info]));
                }
                Some(_) => self.pgs.waiters.entry(id).or_default().push(waiter),
                None => self.answer(waiter, Err(unknown(id))),
            },
            PlacementRequest::Remove(id) => {
                let answer = match self.pgs.groups.contains_key(&id) {
                    true => {
                        self.remove_group(id);
                        Ok(self.group_infos(&[id]))
                    }
                    false => Err(unknown(id)),
                };
                self.answer(waiter, answer);
                // Resources it held here may serve waiting work now.
                self.schedule();
            }
            PlacementRequest::Get { namespace, name } => {
                let answer = match self.pgs.names.get(&(namespace.clone(), name.clone())) {
                    Some(id) => Ok(self.group_infos(&[*id])),
                    None => Err((
                        ErrorKind::BadRequest,
                        format!("no placement group named {name:?} in namespace {namespace:?}"),
                    )),
                };
                self.answer(waiter, answer);
            }
            PlacementRequest::Table => {
                let mut all: Vec<PlacementGroupInfo> =
                    self.pgs.groups.values().map(|g| g.info.clone()).collect();
                all.sort_by(|a, b| {
                    a.spec
                        .name
                        .cmp(&b.spec.name)
                        .then(a.spec.id.cmp(&b.spec.id))
                });
                self.answer(waiter, Ok(all));
            }
            PlacementRequest::JobEnded(node, job) => {
                self.groups_of_job_end(node, job);
                self.answer(waiter, Ok(Vec::new()));
                self.schedule();
            }
        }
    }

    fn create_group(&mut self, waiter: Waiter, spec: PlacementGroupSpec) {
        if let Some(message) = invalid(&spec) {
            self.answer(waiter, Err((ErrorKind::BadRequest, message)));
            return;
        }
        let key = (spec.namespace.clone(), spec.name.clone());
        if !spec.name.is_empty() && self.pgs.names.contains_key(&key) {
            let message = format!(
                "a placement group named {:?} already exists in namespace {:?}",
                spec.name, spec.namespace
            );
            self.answer(waiter, Err((ErrorKind::NameTaken, message)));
            return;
        }
        if self.pgs.groups.contains_key(&spec.id) {
            let info = self.group_infos(&[spec.id]);
            self.answer(waiter, Ok(info));
            return;
        }
        let id = spec.id;
        let n = spec.bundles.len();
        if !spec.name.is_empty() {
            self.pgs.names.insert(key, id);
        }
        let info = PlacementGroupInfo {
            spec,
            state: PlacementGroupState::Pending,
            nodes: vec![None; n],
            reason: "not placed yet".into(),
        };
        self.pgs.groups.insert(
            id,
            Group {
                info: info.clone(),
                at: vec![None; n],
                attempt: None,
                wait_for_view: false,
            },
        );
        self.pgs.queue.push_back(id);
        self.answer(waiter, Ok(vec![info]));
        self.schedule();
    }

    /// Infos of these groups (the known ones).
    fn group_infos(&self, ids: &[PlacementGroupId]) -> Vec<PlacementGroupInfo> {
        ids.iter()
            .filter_map(|id| self.pgs.groups.get(id).map(|g| g.info.clone()))
            .collect()
    }

    fn answer(
        &mut self,
        waiter: Waiter,
        answer: Result<Vec<PlacementGroupInfo>, (ErrorKind, String)>,
    ) {
        let msg = |req| match answer.clone() {
            Ok(groups) => FromRaylet::PlacementGroups { req, groups },
            Err((kind, message)) => FromRaylet::Error { req, kind, message },
        };
        match waiter {
            Waiter::Client { conn: 0, .. } => {}
            Waiter::Client { conn, req } => self.send(conn, msg(req)),
            Waiter::Peer(token) => self.push(Effect::PeerAnswer { token, msg: msg(0) }),
        }
    }

    /// Answers the waiters of group `id` (it was created or removed).
    fn wake_group(&mut self, id: PlacementGroupId) {
        let infos = self.group_infos(&[id]);
        for w in self.pgs.waiters.remove(&id).unwrap_or_default() {
            self.answer(w, Ok(infos.clone()));
        }
    }

    /// Removes group `id`: its bundles are released where they are (their work stops).
    fn remove_group(&mut self, id: PlacementGroupId) {
        let Some(g) = self.pgs.groups.get_mut(&id) else {
            return;
        };
        if g.info.state == PlacementGroupState::Removed {
            return;
        }
        g.info.state = PlacementGroupState::Removed;
        g.info.reason = String::new();
        g.info.nodes = vec![None; g.at.len()];
        let mut held: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
        for (i, at) in g.at.iter_mut().enumerate() {
            if let Some(n) = at.take() {
                held.entry(n).or_default().push(i as u32);
            }
        }
        // Bundles of an attempt in flight are released as well (a prepare that lands later
        // is released when its answer comes: the attempt is gone).
        if let Some(a) = g.attempt.take() {
            for (n, idx) in a.plan {
                held.entry(n).or_default().extend(idx);
            }
        }
        let key = (g.info.spec.namespace.clone(), g.info.spec.name.clone());
        if self.pgs.names.get(&key) == Some(&id) {
            self.pgs.names.remove(&key);
        }
        self.pgs.queue.retain(|q| *q != id);
        for (node, mut indexes) in held {
            indexes.sort_unstable();
            indexes.dedup();
            self.send_bundle_op(node, id, 0, BundleOp::Release { group: id, indexes });
        }
        self.pgs.removed.push_back(id);
        while self.pgs.removed.len() > REMOVED_KEPT {
            if let Some(old) = self.pgs.removed.pop_front() {
                self.pgs.groups.remove(&old);
            }
        }
        self.wake_group(id);
    }

    /// A job ended on `node`: its groups that are not detached go.
    fn groups_of_job_end(&mut self, node: NodeId, job: JobId) {
        let ids: Vec<PlacementGroupId> = self
            .pgs
            .groups
            .values()
            .filter(|g| !g.info.spec.detached && g.info.spec.creator == (node, job))
            .map(|g| g.info.spec.id)
            .collect();
        for id in ids {
            self.remove_group(id);
        }
    }

    /// A local job ended: the manager removes its groups that are not detached.
    pub(crate) fn job_ended_groups(&mut self, job: JobId) {
        let request = PlacementRequest::JobEnded(self.setup.id, job);
        let waiter = Waiter::Client { conn: 0, req: 0 };
        self.placement(waiter, request);
    }

    /// Sends `op` for group `id` to node `node`: done in place for this node (its answer is
    /// returned), else passed to the link (answered later with `bundles_answered`).
    fn send_bundle_op(
        &mut self,
        node: u16,
        id: PlacementGroupId,
        attempt: u64,
        op: BundleOp,
    ) -> Option<Result<(), String>> {
        if node == self.index {
            let r = self.apply_bundle_op(op);
            self.groups_changed_here = true;
            return Some(r);
        }
        if let BundleOp::Release { indexes, .. } = &op {
            // Counted as taken there when prepared (until the next view): free again.
            let freed: Vec<Resources> = self
                .pgs
                .groups
                .get(&id)
                .map(|g| {
                    indexes
                        .iter()
                        .filter_map(|i| g.info.spec.bundles.get(*i as usize).cloned())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(sent) = self.spilled.get_mut(&node) {
                for r in &freed {
                    sent.subtract(r);
                }
            }
        }
        self.link(LinkOp::Bundles {
            index: node,
            group: id,
            attempt,
            op,
        });
        None
    }

    /// The nodes a plan may use now: this one and the alive peers, with what they have free.
    fn candidates(&self) -> Vec<Candidate> {
        let mut out = vec![Candidate {
            index: self.index,
            free: self.available(),
            total: self.total().clone(),
        }];
        if self.setup.clustered {
            for n in self.view.nodes.iter().filter(|n| {
                n.alive && n.index != self.index && !self.shunned.contains_key(&n.index)
            }) {
                let mut free = n.load.available.clone();
                if let Some(sent) = self.spilled.get(&n.index) {
                    free.subtract(sent);
                }
                out.push(Candidate {
                    index: n.index,
                    free,
                    total: n.total.clone(),
                });
            }
        }
        out.sort_by_key(|c| c.index);
        out
    }

    /// Tries to place the groups that wait (called after each scheduling pass). Returns
    /// whether this node's bundles changed (a new scheduling pass may grant more).
    pub(crate) fn place_groups(&mut self) -> bool {
        self.groups_changed_here = false;
        let queue: Vec<PlacementGroupId> = self.pgs.queue.iter().copied().collect();
        for id in queue {
            let Some(g) = self.pgs.groups.get(&id) else {
                continue;
            };
            if g.attempt.is_some() || g.wait_for_view {
                continue;
            }
            let todo: Vec<(u32, Resources)> =
                g.at.iter()
                    .enumerate()
                    .filter(|(_, at)| at.is_none())
                    .map(|(i, _)| (i as u32, g.info.spec.bundles[i].clone()))
                    .collect();
            let taken: Vec<u16> = g.at.iter().flatten().copied().collect();
            let strategy = g.info.spec.strategy;
            let found = plan(&todo, strategy, &self.candidates(), &taken);
            match found {
                Ok(placed) => self.start_attempt(id, placed),
                Err(why) => {
                    if let Some(g) = self.pgs.groups.get_mut(&id) {
                        g.info.reason = why.reason();
                    }
                }
            }
        }
        self.groups_changed_here
    }

    /// Phase one of placing `placed` (bundle → node) for group `id`.
    fn start_attempt(&mut self, id: PlacementGroupId, placed: Vec<(u32, u16)>) {
        self.pgs.next_attempt += 1;
        let attempt = self.pgs.next_attempt;
        let mut plan: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
        for (i, n) in &placed {
            plan.entry(*n).or_default().push(*i);
        }
        let Some(g) = self.pgs.groups.get_mut(&id) else {
            return;
        };
        let ops: Vec<(u16, BundleOp)> = plan
            .iter()
            .map(|(n, idx)| {
                let bundles = idx
                    .iter()
                    .map(|i| (*i, g.info.spec.bundles[*i as usize].clone()))
                    .collect();
                (*n, BundleOp::Prepare { group: id, bundles })
            })
            .collect();
        g.attempt = Some(Attempt {
            id: attempt,
            waiting: plan.keys().copied().collect(),
            plan,
            prepared: BTreeSet::new(),
            failed: None,
            committing: false,
        });
        g.info.reason = "being placed".into();
        self.run_phase(id, attempt, ops);
    }

    /// Sends one phase's ops; this node's answer is taken at once.
    fn run_phase(&mut self, id: PlacementGroupId, attempt: u64, ops: Vec<(u16, BundleOp)>) {
        let mut here = None;
        for (node, op) in ops {
            if let BundleOp::Prepare { bundles, .. } = &op {
                // Counted as taken there until the next view shows it.
                let entry = self.spilled.entry(node).or_default();
                for (_, r) in bundles {
                    entry.add(r);
                }
            }
            if let Some(r) = self.send_bundle_op(node, id, attempt, op) {
                here = Some((node, r));
            }
        }
        if let Some((node, r)) = here {
            self.bundles_answered(id, attempt, node, r);
        }
    }

    /// Node `node` answered a bundle request of `attempt` for group `id`.
    pub fn bundles_answered(
        &mut self,
        id: PlacementGroupId,
        attempt: u64,
        node: u16,
        result: Result<(), String>,
    ) {
        let Some(g) = self.pgs.groups.get_mut(&id) else {
            return;
        };
        let current = g.attempt.as_mut().filter(|a| a.id == attempt);
        let Some(a) = current else {
            // A prepare of an attempt that ended (removed group, rollback): give it back
            // (not the bundles the group holds there now).
            if result.is_ok() && attempt != 0 {
                let indexes = (0..g.at.len())
                    .filter(|i| g.at[*i] != Some(node))
                    .map(|i| i as u32)
                    .collect();
                self.send_bundle_op(node, id, 0, BundleOp::Release { group: id, indexes });
            }
            return;
        };
        if !a.waiting.remove(&node) {
            return;
        }
        match result {
            Ok(()) if !a.committing => {
                a.prepared.insert(node);
            }
            Ok(()) => {}
            Err(why) => {
                a.failed.get_or_insert(why);
            }
        }
        if !a.waiting.is_empty() {
            return;
        }
        if a.failed.is_some() {
            self.roll_back(id);
            return;
        }
        if !a.committing {
            a.committing = true;
            a.waiting = a.plan.keys().copied().collect();
            let ops: Vec<(u16, BundleOp)> = a
                .plan
                .iter()
                .map(|(n, idx)| {
                    (
                        *n,
                        BundleOp::Commit {
                            group: id,
                            indexes: idx.clone(),
                        },
                    )
                })
                .collect();
            self.run_phase(id, attempt, ops);
            return;
        }
        // Committed everywhere.
        let plan = std::mem::take(&mut a.plan);
        g.attempt = None;
        for (n, idx) in plan {
            for i in idx {
                g.at[i as usize] = Some(n);
            }
        }
        g.info.state = PlacementGroupState::Created;
        g.info.reason = String::new();
        self.pgs.queue.retain(|q| *q != id);
        self.refresh_nodes(id);
        self.wake_group(id);
    }

    /// An attempt failed: every bundle it took is released, and the group waits for the next
    /// view to try again.
    fn roll_back(&mut self, id: PlacementGroupId) {
        let Some(g) = self.pgs.groups.get_mut(&id) else {
            return;
        };
        let Some(a) = g.attempt.take() else {
            return;
        };
        g.wait_for_view = true;
        g.info.reason = format!(
            "waiting for resources: the last try was rolled back ({})",
            a.failed.clone().unwrap_or_default()
        );
        for (node, indexes) in a.plan {
            if a.prepared.contains(&node) {
                self.send_bundle_op(node, id, 0, BundleOp::Release { group: id, indexes });
            }
        }
    }

    /// Sets the node ids of a group's bundles from their indexes.
    fn refresh_nodes(&mut self, id: PlacementGroupId) {
        let own = (self.index, self.setup.id);
        let ids: HashMap<u16, NodeId> = self
            .view
            .nodes
            .iter()
            .map(|n| (n.index, n.id))
            .chain(std::iter::once(own))
            .collect();
        if let Some(g) = self.pgs.groups.get_mut(&id) {
            g.info.nodes =
                g.at.iter()
                    .map(|at| at.and_then(|n| ids.get(&n).copied()))
                    .collect();
        }
    }

    /// A new view: groups with bundles on nodes that died are placed again; groups whose
    /// last try failed may try again.
    pub(crate) fn groups_see_view(&mut self) {
        if !self.setup.places_groups {
            return;
        }
        let dead: BTreeSet<u16> = self
            .view
            .nodes
            .iter()
            .filter(|n| !n.alive)
            .map(|n| n.index)
            .collect();
        let ids: Vec<PlacementGroupId> = self.pgs.groups.keys().copied().collect();
        for id in ids {
            let mut lost_attempt = None;
            let mut requeue = false;
            if let Some(g) = self.pgs.groups.get_mut(&id) {
                g.wait_for_view = false;
                if g.info.state == PlacementGroupState::Removed {
                    continue;
                }
                let mut lost = false;
                for at in g.at.iter_mut() {
                    if at.is_some_and(|n| dead.contains(&n)) {
                        *at = None;
                        lost = true;
                    }
                }
                if lost && g.info.state == PlacementGroupState::Created {
                    g.info.state = PlacementGroupState::Rescheduling;
                    g.info.reason = "a node holding some of its bundles died".into();
                    requeue = true;
                }
                if let Some(a) = &g.attempt {
                    lost_attempt = a
                        .waiting
                        .iter()
                        .find(|n| dead.contains(n))
                        .map(|n| (a.id, *n));
                }
            }
            if requeue {
                self.pgs.queue.push_back(id);
                self.refresh_nodes(id);
            }
            if let Some((attempt, node)) = lost_attempt {
                self.bundles_answered(id, attempt, node, Err(format!("node {node} died")));
            }
        }
    }
}

impl NodeState {
    /// On the manager: why work needing `resources` can never run, if it names a placement
    /// group that was removed (or never made).
    pub(crate) fn gone_group(&self, resources: &Resources) -> Option<String> {
        if !self.setup.places_groups {
            return None;
        }
        resources.iter().find_map(|(name, _)| {
            let tag = oxray_common::placement::group_of_resource(name)?;
            let id = u64::from_str_radix(tag, 16).ok().map(PlacementGroupId)?;
            match self.pgs.groups.get(&id) {
                Some(g) if g.info.state != PlacementGroupState::Removed => None,
                Some(_) => Some(format!("its placement group {id} was removed")),
                None => Some(format!("there is no placement group {id}")),
            }
        })
    }
}

/// The error for an unknown group.
fn unknown(id: PlacementGroupId) -> (ErrorKind, String) {
    (
        ErrorKind::BadRequest,
        format!("no placement group {id} (removed long ago, or never made)"),
    )
}

/// What is wrong with a spec, if anything.
fn invalid(spec: &PlacementGroupSpec) -> Option<String> {
    if spec.bundles.is_empty() {
        return Some("a placement group needs at least one bundle".into());
    }
    if spec.bundles.len() > MAX_BUNDLES {
        return Some(format!(
            "a placement group has at most {MAX_BUNDLES} bundles, not {}; make fewer, bigger \
             bundles",
            spec.bundles.len()
        ));
    }
    if let Some(i) = spec.bundles.iter().position(Resources::is_empty) {
        return Some(format!(
            "bundle {i} is empty: each bundle needs some resource, e.g. {{\"CPU\": 1}}"
        ));
    }
    None
}
