//! The scheduler: grants leases against free resources, starts workers for work that has
//! resources but no idle worker, places waiting actors, spills work to other nodes (locality
//! first, then this node, then the node with most room), and tells requesters whose work no
//! alive node can run.
//!
//! Every event that can make waiting work runnable runs a pass: a lease returned or blocked,
//! a request or actor added, a worker registered, exited or failed to start, a client gone, a
//! new cluster view (a node joined or died).

use std::collections::HashMap;

use oxray_common::peer::{ClusterView, NodeInfo};
use oxray_common::protocol::{ClientKind, ErrorKind, FromRaylet, Strategy};
use oxray_common::resources::{Resources, CPU};
use oxray_common::{ActorId, JobId, NodeId};

use super::effects::LinkOp;
use super::state::{Lease, LeaseRequest, NodeState, WorkerState};
use crate::cluster::Forward;

/// Views (one per report period, ~100 ms) during which a node whose attachment closed gets no
/// work: long enough for the head to learn that a stopping or lost node is gone.
pub(crate) const SHUN_VIEWS: u32 = 30;

impl NodeState {
    /// A client asks for a worker lease. A strategy other than `Default` decides the node
    /// once, here, for requests of local clients (work forwarded here stays here).
    pub fn request_lease(
        &mut self,
        conn: u64,
        req: u64,
        resources: Resources,
        near: u16,
        strategy: Strategy,
    ) {
        let Some((job, kind)) = self.clients.get(&conn).map(|c| (c.job, c.kind)) else {
            return;
        };
        let mut spill = kind != ClientKind::Remote;
        if let Some(message) = self.gone_group(&resources) {
            let kind = ErrorKind::Unschedulable;
            self.send(conn, FromRaylet::Error { req, kind, message });
            return;
        }
        if spill {
            match self.place_by(strategy, &resources) {
                Placement::Anywhere => {}
                Placement::Here => spill = false,
                Placement::Peer(index) => {
                    let msg = Forward::Lease {
                        conn,
                        req,
                        resources,
                        strategy,
                    };
                    self.link(LinkOp::Forward { job, index, msg });
                    return;
                }
                Placement::Nowhere(message) => {
                    let kind = ErrorKind::Unschedulable;
                    self.send(conn, FromRaylet::Error { req, kind, message });
                    return;
                }
            }
        }
        self.pending.push_back(LeaseRequest {
            req,
            conn,
            job,
            resources,
            spill,
            near,
            warned: false,
        });
        self.schedule();
    }

    /// Where `strategy` puts work needing `resources` (see [`Strategy`]). Work it sends to
    /// another node counts as taken there until the next view.
    pub(crate) fn place_by(&mut self, strategy: Strategy, resources: &Resources) -> Placement {
        let placed = match strategy {
            Strategy::Default => Placement::Anywhere,
            Strategy::NodeAffinity {
                node_id: node,
                soft,
            } => match self.place_on(node, resources) {
                Placement::Nowhere(_) if soft => Placement::Anywhere,
                other => other,
            },
            Strategy::Spread => self.spread(resources),
        };
        if let Placement::Peer(index) = placed {
            self.spilled.entry(index).or_default().add(resources);
        }
        placed
    }

    /// Work pinned to node `node`: here, there, or nowhere with the reason.
    fn place_on(&mut self, node: NodeId, resources: &Resources) -> Placement {
        if node == self.setup.id {
            return if self.total().contains(resources) {
                Placement::Here
            } else {
                Placement::Nowhere(format!(
                    "node {node} (this node) never has {resources}: it has {}",
                    self.total()
                ))
            };
        }
        let Some(n) = self.view.nodes.iter().find(|n| n.id == node) else {
            return Placement::Nowhere(format!(
                "no node {node} in the cluster (see `oxray status` or `oxray::nodes()`)"
            ));
        };
        if !n.alive || self.shunned.contains_key(&n.index) {
            return Placement::Nowhere(format!("node {node} is dead"));
        }
        if !n.total.contains(resources) {
            return Placement::Nowhere(format!(
                "node {node} never has {resources}: it has {}",
                n.total
            ));
        }
        Placement::Peer(n.index)
    }

    /// SPREAD: the next alive node in index order after the last one picked that has
    /// `resources` free (counting what was sent there since the last view), else the next one
    /// that has them at all.
    fn spread(&mut self, resources: &Resources) -> Placement {
        let mut nodes: Vec<(u16, bool)> = Vec::new();
        if self.total().contains(resources) {
            nodes.push((self.index, self.available().contains(resources)));
        }
        if self.setup.clustered {
            for n in self.alive_peers(None) {
                if n.total.contains(resources) {
                    nodes.push((n.index, self.room(n).contains(resources)));
                }
            }
        }
        if nodes.is_empty() {
            // Nowhere now: it waits (and is reported) as other work does.
            return Placement::Anywhere;
        }
        nodes.sort_unstable();
        let after = self.spread_last;
        let turn = |room_only: bool| {
            let ok = |(_, room): &&(u16, bool)| !room_only || *room;
            nodes
                .iter()
                .filter(ok)
                .find(|(i, _)| *i > after)
                .or_else(|| nodes.iter().find(|n| ok(n)))
                .map(|(i, _)| *i)
        };
        let Some(pick) = turn(true).or_else(|| turn(false)) else {
            return Placement::Anywhere;
        };
        self.spread_last = pick;
        if pick == self.index {
            Placement::Here
        } else {
            Placement::Peer(pick)
        }
    }

    /// A lease request forwarded to node `from`, whose attachment closed before it answered,
    /// comes back to the local queue (and may go to another node again, not to `from`).
    pub fn requeue_lease(
        &mut self,
        conn: u64,
        req: u64,
        resources: Resources,
        from: u16,
        strategy: Strategy,
    ) {
        self.shun(from);
        self.request_lease(conn, req, resources, 0, strategy);
    }

    /// A client gives a lease of this node back.
    pub fn return_lease(&mut self, lease: u64) {
        if let Some(l) = self.leases.remove(&lease) {
            if let Some(w) = self.workers.get_mut(&l.worker) {
                if w.state == WorkerState::Leased(lease) {
                    w.state = WorkerState::Idle;
                }
            }
        }
        self.schedule();
    }

    /// A client gives back a lease of another node that it got through this one.
    pub fn return_remote_lease(&mut self, conn: u64, lease: u64) {
        let job = self.clients.get(&conn).map(|c| c.job);
        self.remote_leases.remove(&lease);
        if let Some(job) = job {
            let (index, lease) = crate::cluster::split_remote_lease(lease);
            let msg = Forward::ReturnLease { lease };
            self.link(LinkOp::Forward { job, index, msg });
        }
    }

    /// A local client now holds a lease of another node. False when it is gone.
    pub fn note_remote_lease(&mut self, conn: u64, lease: u64) -> bool {
        if !self.clients.contains_key(&conn) {
            return false;
        }
        self.remote_leases.insert(lease, conn);
        true
    }

    /// The worker on `conn` blocks in `get` (its lease stops counting) or resumes.
    pub fn set_blocked(&mut self, conn: u64, blocked: bool) {
        let Some(worker) = self.clients.get(&conn).map(|c| c.worker) else {
            return;
        };
        if let Some(l) = self.leases.values_mut().find(|l| l.worker == worker) {
            l.blocked = blocked;
        }
        if blocked {
            self.schedule();
        }
    }

    /// A new view of the cluster from the head: learn this node's index, drop connections to
    /// nodes that died, and schedule (work may now fit elsewhere, or nowhere).
    pub fn set_view(&mut self, view: ClusterView) {
        if let Some(me) = view.nodes.iter().find(|n| n.id == self.setup.id) {
            self.index = me.index;
        }
        let died: Vec<String> = view
            .nodes
            .iter()
            .filter(|n| !n.alive && n.id != self.setup.id)
            .filter(|n| self.view.nodes.iter().any(|o| o.id == n.id && o.alive))
            .map(|n| n.peer_address.clone())
            .collect();
        for address in died {
            self.link(LinkOp::NodeDied(address));
        }
        self.view = view;
        self.spilled.clear();
        self.shunned.retain(|_, views| {
            *views -= 1;
            *views > 0
        });
        self.groups_see_view();
        self.schedule();
    }

    /// Sends no work to node `index` for the next [`SHUN_VIEWS`] views: its attachment just
    /// closed (it is stopping or lost), though the view may still show it alive.
    pub(crate) fn shun(&mut self, index: u16) {
        self.shunned.insert(index, SHUN_VIEWS);
    }

    /// The head declared this node dead while it ran on, and it joins again as node `id`.
    /// What the cluster gave up on goes the way it goes after a real node death: the other
    /// nodes dropped their connections to this one, so the jobs they attached here end (their
    /// workers and actors stop), and this node's own jobs see their attachments there close
    /// (their leases there end, their actors there start again elsewhere). Only the id and the
    /// spill accounting change here; the index follows with the next view.
    pub fn rejoined(&mut self, id: NodeId) {
        self.log(format!(
            "node {} was declared dead by the head; joining again as node {id}",
            self.setup.id
        ));
        self.setup.id = id;
        self.spilled.clear();
    }

    /// Grants what can be granted, starts workers for requests that have resources but no
    /// idle worker, places waiting actors, and warns about work no alive node can run.
    pub(crate) fn schedule(&mut self) {
        self.schedule_work();
        if self.setup.places_groups && !self.placing {
            self.placing = true;
            let changed = self.place_groups();
            self.placing = false;
            if changed {
                self.schedule_work();
            }
        }
    }

    /// One pass over the waiting leases and actors.
    fn schedule_work(&mut self) {
        if self.stopping {
            return;
        }
        let mut available = self.available();
        let mut wanted: HashMap<JobId, usize> = HashMap::new();
        let mut i = 0;
        while i < self.pending.len() {
            let r = &self.pending[i];
            let (spill, near, fits) = (r.spill, r.near, available.contains(&r.resources));
            if !fits && !self.feasible(&r.resources, spill) {
                self.warn_infeasible_lease(i);
                i += 1;
                continue;
            }
            let wants_near = spill && near != 0 && near != self.index;
            // Locality first (the node holding the work's arguments, if it has room), then this
            // node, then any node with room.
            let target = if wants_near || (spill && !fits) {
                let resources = r.resources.clone();
                if wants_near && self.peer_has_room(near, &resources) {
                    Some(near)
                } else if fits {
                    None
                } else {
                    self.pick_peer(&resources, None)
                }
            } else {
                None
            };
            if let Some(target) = target {
                if let Some(r) = self.pending.remove(i) {
                    let msg = Forward::Lease {
                        conn: r.conn,
                        req: r.req,
                        resources: r.resources,
                        strategy: Strategy::Default,
                    };
                    self.link(LinkOp::Forward {
                        job: r.job,
                        index: target,
                        msg,
                    });
                }
                continue;
            }
            if !fits {
                i += 1;
                continue;
            }
            let job = self.pending[i].job;
            let idle = self
                .workers
                .iter()
                .find(|(_, w)| w.job == job && w.state == WorkerState::Idle)
                .map(|(id, _)| *id);
            let Some(worker) = idle else {
                *wanted.entry(job).or_default() += 1;
                available.subtract(&self.pending[i].resources);
                i += 1;
                continue;
            };
            let Some(r) = self.pending.remove(i) else {
                break;
            };
            available.subtract(&r.resources);
            self.grant(r, worker);
        }
        self.place_actors(&mut available);
        for (job, want) in wanted {
            let starting = self
                .workers
                .values()
                .filter(|w| w.job == job && w.state == WorkerState::Starting && w.actor.is_none())
                .count();
            for _ in starting..want {
                if self.spawn_worker(job, None).is_none() {
                    break;
                }
            }
        }
    }

    /// Leases idle `worker` to request `r`.
    fn grant(&mut self, r: LeaseRequest, worker: oxray_common::WorkerId) {
        let lease = self.new_lease_id();
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        w.state = WorkerState::Leased(lease);
        let (address, pid) = (w.address.clone(), w.pid);
        self.leases.insert(
            lease,
            Lease {
                worker,
                holder: r.conn,
                resources: r.resources,
                blocked: false,
            },
        );
        let msg = FromRaylet::LeaseGranted {
            req: r.req,
            lease,
            worker,
            address,
            pid,
        };
        self.send(r.conn, msg);
    }

    /// Starts a worker for each waiting actor that fits in `available`; moves those of local
    /// owners that fit only elsewhere to that node; warns owners of actors nothing can host.
    fn place_actors(&mut self, available: &mut Resources) {
        let mut i = 0;
        while i < self.pending_actors.len() {
            let id = self.pending_actors[i];
            let Some(a) = self.actors.get(&id) else {
                self.pending_actors.remove(i);
                continue;
            };
            let (job, resources) = (a.owner_job, a.spec.resources.clone());
            // An actor placed here by its strategy waits here.
            let movable = a.spec.strategy == Strategy::Default;
            if !available.contains(&resources) {
                let local_owner = movable
                    && self
                        .clients
                        .get(&a.owner_conn)
                        .is_none_or(|c| c.kind != ClientKind::Remote)
                    && !self.jobs.get(&job).is_some_and(|j| j.remote);
                if local_owner {
                    if let Some(target) = self.pick_peer(&resources, None) {
                        self.pending_actors.remove(i);
                        self.move_pending_actor(id, target);
                        continue;
                    }
                }
                if !self.feasible(&resources, local_owner) {
                    self.warn_infeasible_actor(id);
                }
                i += 1;
                continue;
            }
            let Some(worker) = self.spawn_worker(job, Some(id)) else {
                self.pending_actors.remove(i);
                self.actor_process_lost(
                    id,
                    Some("its worker process could not be started (see the raylet's log)".into()),
                    false,
                );
                continue;
            };
            self.pending_actors.remove(i);
            available.subtract(&resources);
            let lease = self.new_lease_id();
            self.leases.insert(
                lease,
                Lease {
                    worker,
                    holder: 0,
                    resources,
                    blocked: false,
                },
            );
            if let Some(a) = self.actors.get_mut(&id) {
                a.worker = Some(worker);
                a.lease = Some(lease);
            }
        }
    }

    /// Whether some alive node (this one, or with `anywhere` another) has `resources` in total.
    pub(crate) fn feasible(&self, resources: &Resources, anywhere: bool) -> bool {
        self.total().contains(resources)
            || (anywhere
                && self.setup.clustered
                && self.alive_peers(None).any(|n| n.total.contains(resources)))
    }

    /// Why work needing `resources` waits, for status.
    pub(crate) fn waiting_reason(&self, resources: &Resources, anywhere: bool) -> String {
        if self.feasible(resources, anywhere) {
            "waiting for free resources".into()
        } else {
            format!("infeasible: no alive node has {resources}")
        }
    }

    fn warn_infeasible_lease(&mut self, i: usize) {
        let Some(r) = self.pending.get_mut(i) else {
            return;
        };
        if r.warned || in_group(&r.resources) {
            // A group's resources appear once it is placed (and the view shows them): the
            // group's own state says why it waits.
            return;
        }
        r.warned = true;
        let (conn, req) = (r.conn, r.req);
        let message = infeasible_message(&r.resources);
        self.send(conn, FromRaylet::Warning { req, message });
    }

    fn warn_infeasible_actor(&mut self, id: ActorId) {
        let Some(a) = self.actors.get_mut(&id) else {
            return;
        };
        if a.warned || in_group(&a.spec.resources) {
            return;
        }
        a.warned = true;
        let conn = a.owner_conn;
        let message = format!(
            "actor {} ({id}) {}",
            a.spec.class,
            infeasible_message(&a.spec.resources)
        );
        self.log(message.clone());
        self.send(conn, FromRaylet::Warning { req: 0, message });
    }

    /// Alive nodes but this one, `avoid` and the shunned ones.
    fn alive_peers(&self, avoid: Option<u16>) -> impl Iterator<Item = &NodeInfo> {
        let me = self.index;
        self.view.nodes.iter().filter(move |n| {
            n.alive
                && n.index != 0
                && n.index != me
                && Some(n.index) != avoid
                && !self.shunned.contains_key(&n.index)
        })
    }

    /// What node `n` showed free in the last view, less what was sent there since.
    fn room(&self, n: &NodeInfo) -> Resources {
        let mut room = n.load.available.clone();
        if let Some(sent) = self.spilled.get(&n.index) {
            room.subtract(sent);
        }
        room
    }

    /// Whether node `index` showed `resources` free in the last view (less what was sent there
    /// since); if so they count as sent.
    fn peer_has_room(&mut self, index: u16, resources: &Resources) -> bool {
        if !self.setup.clustered {
            return false;
        }
        let Some(n) = self.alive_peers(None).find(|n| n.index == index) else {
            return false;
        };
        if !self.room(n).contains(resources) {
            return false;
        }
        self.spilled.entry(index).or_default().add(resources);
        true
    }

    /// Another node to send work needing `resources` to: the live node with the most free CPUs
    /// that has them free now (counting what was already sent since the last view), else one
    /// that has them at all when this node never will; never `avoid`. `None` keeps the work here.
    pub(crate) fn pick_peer(&mut self, resources: &Resources, avoid: Option<u16>) -> Option<u16> {
        if !self.setup.clustered {
            return None;
        }
        let free = self
            .alive_peers(avoid)
            .filter_map(|n| {
                let room = self.room(n);
                room.contains(resources).then(|| (n.index, room.get(CPU)))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(index, _)| index);
        let target = free.or_else(|| {
            if self.total().contains(resources) {
                return None;
            }
            self.alive_peers(avoid)
                .find(|n| n.total.contains(resources))
                .map(|n| n.index)
        })?;
        self.spilled.entry(target).or_default().add(resources);
        Some(target)
    }
}

/// Where a scheduling strategy puts a piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// As `Default`: locality, this node, then the node with most room.
    Anywhere,
    /// On this node, waiting here for room if need be.
    Here,
    /// On the node with this index.
    Peer(u16),
    /// Nowhere: why (the work fails with `Unschedulable`).
    Nowhere(String),
}

/// Whether work needing `resources` runs in a placement group.
fn in_group(resources: &Resources) -> bool {
    resources
        .iter()
        .any(|(n, _)| oxray_common::placement::group_of_resource(n).is_some())
}

/// The warning for work that needs `resources` no alive node has.
fn infeasible_message(resources: &Resources) -> String {
    format!(
        "needs {resources}, which no alive node has; it waits until a node with them joins \
         (see `oxray status`)"
    )
}
