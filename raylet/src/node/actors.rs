//! The actor manager: the actor table (`Pending` → `Alive` ⇄ `Restarting` → `Dead`), names,
//! callers parked until an actor is alive, and actors this node placed on other nodes.

use oxray_common::protocol::{
    ActorInfo, ActorSpec, ActorState, ClientKind, ErrorKind, FromRaylet, Strategy,
};
use oxray_common::{ActorId, JobId};

use super::effects::LinkOp;
use super::scheduler::Placement;
use super::state::{ActorEntry, NodeState, PlacedActor};
use crate::cluster::Forward;

impl NodeState {
    /// Creates an actor for client `conn`: here, or on a node with room (for a local owner).
    /// In a cluster a named actor's name is claimed at the head first (`claimed` once done).
    pub fn create_actor(&mut self, conn: u64, req: u64, spec: ActorSpec, claimed: bool) {
        let Some((job, kind)) = self.clients.get(&conn).map(|c| (c.job, c.kind)) else {
            return;
        };
        if !spec.name.is_empty() {
            let key = (spec.namespace.clone(), spec.name.clone());
            let here = self
                .actor_names
                .get(&key)
                .and_then(|a| self.actors.get(a))
                .is_some_and(|other| other.state != ActorState::Dead);
            if here || (kind != ClientKind::Remote && self.remote_names.contains_key(&key)) {
                let message = format!(
                    "an actor named {:?} already exists in namespace {:?}; pick another name \
                     or get it with get_actor",
                    spec.name, spec.namespace
                );
                let kind = ErrorKind::NameTaken;
                self.send(conn, FromRaylet::Error { req, kind, message });
                return;
            }
            if kind != ClientKind::Remote && !claimed && self.setup.clustered {
                self.link(LinkOp::ClaimThenCreate { conn, req, spec });
                return;
            }
        }
        if let Some(why) = self.gone_group(&spec.resources) {
            let message = format!("actor {} cannot be placed: {why}", spec.class);
            let kind = ErrorKind::Unschedulable;
            self.send(conn, FromRaylet::Error { req, kind, message });
            return;
        }
        if kind != ClientKind::Remote {
            match self.place_by(spec.strategy, &spec.resources) {
                Placement::Peer(target) => {
                    self.place_elsewhere(target, job, conn, (conn, req), spec);
                    return;
                }
                Placement::Nowhere(why) => {
                    let message = format!("actor {} cannot be placed: {why}", spec.class);
                    let kind = ErrorKind::Unschedulable;
                    self.send(conn, FromRaylet::Error { req, kind, message });
                    return;
                }
                Placement::Here => {}
                Placement::Anywhere => {
                    if !self.available().contains(&spec.resources) {
                        if let Some(target) = self.pick_peer(&spec.resources, None) {
                            self.place_elsewhere(target, job, conn, (conn, req), spec);
                            return;
                        }
                    }
                }
            }
        }
        self.add_actor(spec, conn, job);
        self.send(conn, FromRaylet::ActorCreated { req });
        self.schedule();
    }

    /// Sends actor `spec` of the client `owner` to node `target` and remembers it there; the
    /// answer goes to `(conn, req)` of `reply` (`(0, 0)`: nobody waits for it).
    fn place_elsewhere(
        &mut self,
        target: u16,
        job: JobId,
        owner: u64,
        reply: (u64, u64),
        spec: ActorSpec,
    ) {
        self.note_placed(target, job, owner, &spec);
        let (conn, req) = reply;
        let msg = Forward::CreateActor { conn, req, spec };
        self.link(LinkOp::Forward {
            job,
            index: target,
            msg,
        });
    }

    /// Adds an actor to this node's table, waiting for resources (restarting when its spec says
    /// it ran before), and takes its name.
    fn add_actor(&mut self, spec: ActorSpec, owner_conn: u64, job: JobId) {
        let id = spec.id;
        if !spec.name.is_empty() {
            self.actor_names
                .insert((spec.namespace.clone(), spec.name.clone()), id);
        }
        self.actors
            .insert(id, ActorEntry::new(spec, owner_conn, job));
        self.pending_actors.push_back(id);
    }

    /// A pending actor of a local owner that cannot be placed here goes to node `target`:
    /// callers parked here for it ask there instead.
    pub(crate) fn move_pending_actor(&mut self, id: ActorId, target: u16) {
        let Some(a) = self.actors.remove(&id) else {
            return;
        };
        let key = (a.spec.namespace.clone(), a.spec.name.clone());
        if self.actor_names.get(&key) == Some(&id) {
            self.actor_names.remove(&key);
        }
        self.log(format!(
            "actor {id} ({}) waits for {}: placing it on node {target}",
            a.spec.class, a.spec.resources
        ));
        let mut spec = a.spec;
        spec.restarts = a.restarts;
        // The creator was answered when the actor was registered here; this forward needs none.
        self.place_elsewhere(target, a.owner_job, a.owner_conn, (0, 0), spec);
        for (conn, req) in self.actor_waiters.remove(&id).unwrap_or_default() {
            self.link(LinkOp::QueryActor {
                conn,
                req,
                index: target,
                id,
                wait_alive: true,
                kill: None,
            });
        }
    }

    /// Answers a client's `GetActor`: from this node's table (parking the request while the
    /// actor starts, with `wait_alive`), or by asking the node that knows.
    pub fn get_actor(
        &mut self,
        conn: u64,
        req: u64,
        id: Option<ActorId>,
        name: &str,
        namespace: &str,
        wait_alive: bool,
    ) {
        let key = (namespace.to_owned(), name.to_owned());
        let found = match id {
            Some(id) => Some(id),
            None => self.actor_names.get(&key).copied().filter(|a| {
                self.actors
                    .get(a)
                    .is_some_and(|e| e.state != ActorState::Dead)
            }),
        };
        let elsewhere = match found {
            Some(a) if !self.actors.contains_key(&a) => Some(a),
            None if id.is_none() => self.remote_names.get(&key).copied(),
            _ => None,
        };
        if let Some(a) = elsewhere.filter(|_| self.setup.clustered) {
            if let Some(index) = self.actor_home(a) {
                self.link(LinkOp::QueryActor {
                    conn,
                    req,
                    index,
                    id: a,
                    wait_alive,
                    kill: None,
                });
                return;
            }
        }
        if found.is_none() && elsewhere.is_none() && id.is_none() && self.setup.clustered {
            self.link(LinkOp::LookupName {
                conn,
                req,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                wait_alive,
            });
            return;
        }
        let reply = match found.and_then(|a| self.actors.get(&a)) {
            None => FromRaylet::Error {
                req,
                kind: ErrorKind::BadRequest,
                message: match id {
                    Some(id) => format!("no actor with id {id} on this node"),
                    None => format!("no live actor named {name:?} in namespace {namespace:?}"),
                },
            },
            Some(entry)
                if wait_alive
                    && matches!(entry.state, ActorState::Pending | ActorState::Restarting) =>
            {
                let aid = entry.spec.id;
                self.actor_waiters.entry(aid).or_default().push((conn, req));
                return;
            }
            Some(entry) => FromRaylet::Actor {
                req,
                info: entry.info(),
            },
        };
        self.send(conn, reply);
    }

    /// A client's `KillActor`: kill (and maybe restart) an actor here, or ask the node that
    /// knows it.
    /// The actor's creator let go of every handle: it ends for good. An actor on another node
    /// is killed there (its cause then reads as a kill).
    pub fn release_actor(&mut self, conn: u64, id: ActorId) {
        if self.actors.contains_key(&id) {
            let cause = "its creator dropped every handle to it".to_string();
            self.actor_process_lost(id, Some(cause), true);
            self.schedule();
        } else {
            // No reply is awaited: request 0 is answered to nobody.
            self.kill_actor(conn, 0, id, false);
        }
    }

    pub fn kill_actor(&mut self, conn: u64, req: u64, id: ActorId, restart: bool) {
        if !self.actors.contains_key(&id) {
            if let Some(index) = self.actor_home(id).filter(|_| self.setup.clustered) {
                self.link(LinkOp::QueryActor {
                    conn,
                    req,
                    index,
                    id,
                    wait_alive: false,
                    kill: Some(restart),
                });
                return;
            }
        }
        let cause = (!restart).then(|| "killed by oxray::kill".to_string());
        self.actor_process_lost(id, cause, true);
        self.schedule();
        let reply = match self.actors.get(&id) {
            Some(a) => FromRaylet::Actor {
                req,
                info: a.info(),
            },
            None => FromRaylet::Error {
                req,
                kind: ErrorKind::BadRequest,
                message: format!("no actor with id {id}"),
            },
        };
        self.send(conn, reply);
    }

    /// The worker on connection `conn` built actor `id`.
    pub fn actor_ready(&mut self, conn: u64, id: ActorId) {
        let Some(worker) = self.clients.get(&conn).map(|c| c.worker) else {
            return;
        };
        let (address, pid) = self
            .workers
            .get(&worker)
            .map(|w| (w.address.clone(), w.pid))
            .unwrap_or_default();
        if let Some(a) = self.actors.get_mut(&id) {
            if a.worker == Some(worker) {
                a.state = ActorState::Alive;
                a.address = address;
                a.pid = pid;
            }
        }
        self.notify_actor(id);
    }

    /// The actor's constructor failed: it is dead (restarting would fail the same way).
    pub fn actor_failed(&mut self, id: ActorId, message: &str) {
        let cause = format!("its constructor failed: {message}");
        self.actor_process_lost(id, Some(cause), true);
        self.schedule();
    }

    /// The actor called `exit_actor()`: when its process ends it is dead, not restarted.
    pub fn actor_exiting(&mut self, id: ActorId) {
        if let Some(a) = self.actors.get_mut(&id) {
            a.exiting = true;
        }
    }

    /// The node that knows where actor `id` (not in this node's table) runs: where this node
    /// placed it, or the node that registered it.
    pub(crate) fn actor_home(&self, id: ActorId) -> Option<u16> {
        if let Some(p) = self.remote_actors.get(&id) {
            return Some(p.node);
        }
        let home = id.node_index();
        (home != 0 && home != self.index).then_some(home)
    }

    /// Where to ask about actor `id`: `Some(node)` when another node knows, `None` when this
    /// node's own table answers.
    pub fn actor_location(&self, id: ActorId) -> Option<u16> {
        if self.actors.contains_key(&id) {
            return None;
        }
        self.actor_home(id)
    }

    /// Answers a peer's question about an actor: from this node's table (killing it first when
    /// asked), or `Err(index)` naming the node this node placed it on.
    pub fn actor_for_peer(
        &mut self,
        id: ActorId,
        kill: Option<bool>,
    ) -> Result<Option<ActorInfo>, u16> {
        if !self.actors.contains_key(&id) {
            return match self.remote_actors.get(&id) {
                Some(p) => Err(p.node),
                None => Ok(None),
            };
        }
        if let Some(restart) = kill {
            let cause = (!restart).then(|| "killed by oxray::kill".to_string());
            self.actor_process_lost(id, cause, true);
            self.schedule();
        }
        Ok(self.actors.get(&id).map(ActorEntry::info))
    }

    /// A job's attachment to node `index` closed: the leases it had there are gone, and its
    /// actors there start again elsewhere if their `max_restarts` allows, else are dead.
    pub fn peer_lost(&mut self, job: JobId, index: u16) {
        self.shun(index);
        let NodeState {
            remote_leases,
            clients,
            ..
        } = self;
        // Only this job's leases there are gone; other jobs' attachments may still be up.
        remote_leases.retain(|lease, holder| {
            crate::cluster::split_remote_lease(*lease).0 != index
                || clients.get(holder).is_some_and(|c| c.job != job)
        });
        let lost: Vec<ActorId> = self
            .remote_actors
            .iter()
            .filter(|(_, p)| p.node == index && p.job == job)
            .map(|(a, _)| *a)
            .collect();
        for a in lost {
            if let Some(placed) = self.remote_actors.remove(&a) {
                self.replace_actor(placed, index);
            }
        }
        self.schedule();
    }

    /// Node `gone` that hosted `placed` went away: start the actor again (here or on another
    /// node) if its `max_restarts` allows; otherwise record it dead with the cause.
    fn replace_actor(&mut self, placed: PlacedActor, gone: u16) {
        let max = placed.spec.max_restarts;
        if let Strategy::NodeAffinity {
            node_id: node,
            soft: false,
        } = placed.spec.strategy
        {
            let death = format!(
                "the node it was pinned to (node {node}, index {gone}) went away, and its \
                 node affinity is hard"
            );
            self.log(format!("actor {} is dead: {death}", placed.spec.id));
            self.bury(placed, death);
            return;
        }
        if max >= 0 && i64::from(placed.restarts) >= max {
            let death = format!(
                "the node it ran on (node {gone}) went away and max_restarts ({max}) is exhausted"
            );
            self.log(format!("actor {} is dead: {death}", placed.spec.id));
            self.bury(placed, death);
            return;
        }
        let PlacedActor {
            job,
            owner_conn,
            mut spec,
            restarts,
            ..
        } = placed;
        spec.restarts = restarts + 1;
        self.log(format!(
            "actor {} ({}) lost with node {gone}; starting it again (restart {})",
            spec.id, spec.class, spec.restarts
        ));
        self.forget_remote_name(&spec);
        if !self.available().contains(&spec.resources) {
            if let Some(target) = self.pick_peer(&spec.resources, Some(gone)) {
                self.place_elsewhere(target, job, owner_conn, (0, 0), spec);
                return;
            }
        }
        // Waits here (as a restarting actor) until this node or a node that joins has room.
        self.add_actor(spec, owner_conn, job);
    }

    /// Drops the name of an actor this node placed elsewhere (if that actor still has it).
    fn forget_remote_name(&mut self, spec: &ActorSpec) {
        let key = (spec.namespace.clone(), spec.name.clone());
        if self.remote_names.get(&key) == Some(&spec.id) {
            self.remote_names.remove(&key);
        }
    }

    /// Records that this node placed actor `spec` on node `target`.
    fn note_placed(&mut self, target: u16, job: JobId, owner_conn: u64, spec: &ActorSpec) {
        if !spec.name.is_empty() {
            let key = (spec.namespace.clone(), spec.name.clone());
            self.remote_names.insert(key, spec.id);
        }
        self.remote_actors.insert(
            spec.id,
            PlacedActor {
                node: target,
                job,
                owner_conn,
                spec: spec.clone(),
                restarts: spec.restarts,
            },
        );
    }

    /// A hosting node answered about an actor this node placed there: keep its restart count
    /// (it counts the restarts it did itself); a dead one is recorded here, so that losing that
    /// node later does not bring it back.
    pub fn placed_actor_seen(&mut self, info: &ActorInfo) {
        if info.state == ActorState::Dead {
            if let Some(mut placed) = self.remote_actors.remove(&info.id) {
                placed.restarts = info.restarts;
                self.bury(placed, info.death.clone());
            }
        } else if let Some(p) = self.remote_actors.get_mut(&info.id) {
            p.restarts = p.restarts.max(info.restarts);
        }
    }

    /// Records an actor this node placed elsewhere as dead in its own table, so that questions
    /// about it get the cause.
    fn bury(&mut self, placed: PlacedActor, death: String) {
        let PlacedActor {
            job,
            owner_conn,
            mut spec,
            restarts,
            ..
        } = placed;
        let id = spec.id;
        self.forget_remote_name(&spec);
        if !spec.name.is_empty() {
            self.link(LinkOp::ReleaseName {
                namespace: spec.namespace.clone(),
                name: spec.name.clone(),
                id,
            });
        }
        spec.name.clear();
        let mut entry = ActorEntry::new(spec, owner_conn, job);
        entry.state = ActorState::Dead;
        entry.restarts = restarts;
        entry.death = death;
        self.actors.insert(id, entry);
        self.notify_actor(id);
        self.remember_dead(id);
    }

    /// Actor `id` is dead: it stays in the table (status, the cause for late callers) among the
    /// last `max_dead_actors` dead ones; the oldest beyond that is forgotten.
    fn remember_dead(&mut self, id: ActorId) {
        self.dead_actors.push_back(id);
        while self.dead_actors.len() > self.setup.max_dead_actors {
            let Some(old) = self.dead_actors.pop_front() else {
                break;
            };
            if self
                .actors
                .get(&old)
                .is_some_and(|a| a.state == ActorState::Dead)
            {
                self.actors.remove(&old);
                self.actor_waiters.remove(&old);
            }
        }
    }

    /// An actor's process is gone or must go. With `death`, the actor is dead for good;
    /// without, it restarts if its `max_restarts` allows. With `kill`, its process is killed.
    pub(crate) fn actor_process_lost(&mut self, id: ActorId, death: Option<String>, kill: bool) {
        let Some(a) = self.actors.get_mut(&id) else {
            return;
        };
        if a.state == ActorState::Dead {
            return;
        }
        let worker = a.worker.take();
        let lease = a.lease.take();
        a.address.clear();
        a.pid = 0;
        let death = death.or_else(|| {
            if a.exiting {
                Some("it called exit_actor()".into())
            } else if a.spec.max_restarts >= 0 && i64::from(a.restarts) >= a.spec.max_restarts {
                Some(format!(
                    "its process died and max_restarts ({}) is exhausted",
                    a.spec.max_restarts
                ))
            } else {
                None
            }
        });
        let mut release = None;
        match death {
            Some(cause) => {
                a.state = ActorState::Dead;
                a.death = cause;
                let key = (a.spec.namespace.clone(), a.spec.name.clone());
                if self.actor_names.get(&key) == Some(&id) {
                    self.actor_names.remove(&key);
                }
                if !key.1.is_empty() {
                    release = Some(key);
                }
                self.pending_actors.retain(|p| *p != id);
            }
            None => {
                a.restarts += 1;
                a.state = ActorState::Restarting;
                if !self.pending_actors.contains(&id) {
                    self.pending_actors.push_back(id);
                }
            }
        }
        if let Some((namespace, name)) = release {
            self.link(LinkOp::ReleaseName {
                namespace,
                name,
                id,
            });
        }
        if let Some(l) = lease {
            self.leases.remove(&l);
        }
        if let Some(w) = worker {
            if kill {
                self.kill_worker(w);
            } else {
                self.workers.remove(&w);
            }
        }
        self.notify_actor(id);
        if self
            .actors
            .get(&id)
            .is_some_and(|a| a.state == ActorState::Dead)
        {
            self.remember_dead(id);
        }
    }

    /// Answers `GetActor { wait_alive }` requests once the actor is alive or dead.
    pub(crate) fn notify_actor(&mut self, id: ActorId) {
        let Some(a) = self.actors.get(&id) else {
            return;
        };
        if matches!(a.state, ActorState::Pending | ActorState::Restarting) {
            return;
        }
        let info = a.info();
        for (conn, req) in self.actor_waiters.remove(&id).unwrap_or_default() {
            let info = info.clone();
            self.send(conn, FromRaylet::Actor { req, info });
        }
    }
}
