//! The node state driven in memory: scripted events in, effects out, no processes or sockets.
//! A [`Sim`] is one node; cluster tests build several and hand each the same view, the way the
//! head's heartbeat replies would.

use oxray_common::peer::{ClusterView, NodeInfo, NodeLoad};
use oxray_common::protocol::{
    ActorSpec, ActorState, ClientKind, ErrorKind, FromRaylet, Strategy, ToRaylet,
};
use oxray_common::resources::Resources;
use oxray_common::{ActorId, JobId, NodeId, WorkerId};
use oxray_object_store::StoreStats;

use std::collections::BTreeSet;

use super::effects::{Effect, LinkOp};
use super::pool::MAX_FAILED_STARTS;
use super::{NodeState, Registration, Setup};
use crate::cluster::Forward;

/// One node's state and everything it asked for so far.
struct Sim {
    st: NodeState,
    next_conn: u64,
    next_pid: u32,
    out: Vec<Effect>,
}

fn res(pairs: &[(&str, f64)]) -> Resources {
    let mut r = Resources::new();
    for (k, v) in pairs {
        r.set(k, *v);
    }
    r
}

impl Sim {
    fn new(total: &[(&str, f64)], clustered: bool) -> Sim {
        let setup = Setup {
            id: NodeId::random(),
            session: "sim".into(),
            arena: "/proc/self/fd/0".into(),
            total: res(total),
            prestart_workers: 0,
            clustered,
            places_groups: !clustered,
            max_dead_actors: 1000,
            store_full_wait_ms: 1000,
        };
        Sim {
            st: NodeState::new(setup),
            next_conn: 1,
            next_pid: 1000,
            out: Vec::new(),
        }
    }

    /// Collects the effects of the last events; returns the new ones.
    fn effects(&mut self) -> &[Effect] {
        let start = self.out.len();
        let new = self.st.take_effects();
        self.out.extend(new);
        &self.out[start..]
    }

    /// Forgets what was collected so far.
    fn clear(&mut self) {
        self.effects();
        self.out.clear();
    }

    fn client(&mut self, kind: ClientKind) -> u64 {
        let conn = self.next_conn;
        self.next_conn += 1;
        let ok = self.st.register(
            conn,
            Registration {
                worker: WorkerId::random(),
                pid: 1,
                kind,
                exe: "/bin/true".into(),
                program: "prog".into(),
                listen: String::new(),
                namespace: "ns".into(),
                job_key: None,
            },
        );
        assert!(ok);
        conn
    }

    fn driver(&mut self) -> u64 {
        self.client(ClientKind::Driver)
    }

    /// Workers the node asked to spawn since the last `clear`.
    fn spawned(&mut self) -> Vec<WorkerId> {
        self.effects();
        self.out
            .iter()
            .filter_map(|e| match e {
                Effect::Spawn { worker, .. } => Some(*worker),
                _ => None,
            })
            .collect()
    }

    /// The spawned worker starts and registers; returns its connection.
    fn start_worker(&mut self, worker: WorkerId) -> u64 {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.st.worker_started(worker, pid);
        let conn = self.next_conn;
        self.next_conn += 1;
        let ok = self.st.register(
            conn,
            Registration {
                worker,
                pid,
                kind: ClientKind::Worker,
                exe: String::new(),
                program: String::new(),
                listen: format!("unix:@sim-w{worker}"),
                namespace: String::new(),
                job_key: None,
            },
        );
        assert!(ok, "a spawned worker registers");
        conn
    }

    fn send(&mut self, conn: u64, msg: ToRaylet) {
        assert!(self.st.message(conn, msg).is_none(), "a state message");
    }

    fn lease(&mut self, conn: u64, req: u64, need: &[(&str, f64)]) {
        self.lease_by(conn, req, need, Strategy::Default);
    }

    fn lease_by(&mut self, conn: u64, req: u64, need: &[(&str, f64)], strategy: Strategy) {
        let msg = ToRaylet::RequestLease {
            req,
            resources: res(need),
            near: 0,
            strategy,
        };
        self.send(conn, msg);
    }

    /// Errors sent to `conn`: (req, kind, message).
    fn errors(&mut self, conn: u64) -> Vec<(u64, ErrorKind, String)> {
        self.sent_to(conn)
            .into_iter()
            .filter_map(|m| match m {
                FromRaylet::Error { req, kind, message } => Some((req, kind, message)),
                _ => None,
            })
            .collect()
    }

    /// Messages sent to `conn` since the last `clear`.
    fn sent_to(&mut self, conn: u64) -> Vec<FromRaylet> {
        self.effects();
        self.out
            .iter()
            .filter_map(|e| match e {
                Effect::Send { conn: c, msg } if *c == conn => Some(msg.clone()),
                _ => None,
            })
            .collect()
    }

    /// Lease grants to `conn`: (req, lease).
    fn grants(&mut self, conn: u64) -> Vec<(u64, u64)> {
        self.sent_to(conn)
            .into_iter()
            .filter_map(|m| match m {
                FromRaylet::LeaseGranted { req, lease, .. } => Some((req, lease)),
                _ => None,
            })
            .collect()
    }

    fn warnings(&mut self, conn: u64) -> Vec<String> {
        self.sent_to(conn)
            .into_iter()
            .filter_map(|m| match m {
                FromRaylet::Warning { message, .. } => Some(message),
                _ => None,
            })
            .collect()
    }

    /// Lease requests forwarded to other nodes: (node index, req).
    fn forwarded_leases(&mut self) -> Vec<(u16, u64)> {
        self.effects();
        self.out
            .iter()
            .filter_map(|e| match e {
                Effect::Link(LinkOp::Forward {
                    index,
                    msg: Forward::Lease { req, .. },
                    ..
                }) => Some((*index, *req)),
                _ => None,
            })
            .collect()
    }

    fn killed(&mut self) -> Vec<WorkerId> {
        self.effects();
        self.out
            .iter()
            .filter_map(|e| match e {
                Effect::Kill { worker } => Some(*worker),
                _ => None,
            })
            .collect()
    }

    fn actor(&self, id: ActorId) -> (ActorState, String, u32) {
        let a = &self.st.actors[&id];
        (a.state, a.death.clone(), a.restarts)
    }

    fn status_reasons(&self) -> Vec<String> {
        let stats = StoreStats::default();
        self.st
            .status(1, "unix:@sim", &stats)
            .pending
            .into_iter()
            .map(|p| p.reason)
            .collect()
    }
}

fn spec(class: &str, need: &[(&str, f64)], max_restarts: i64) -> ActorSpec {
    ActorSpec {
        id: ActorId::random(),
        class: class.into(),
        args: Vec::new(),
        resources: res(need),
        name: String::new(),
        namespace: "ns".into(),
        max_restarts,
        detached: false,
        max_concurrency: 1,
        restarts: 0,
        strategy: Strategy::Default,
    }
}

/// Resources as `(name, amount)` pairs.
type Res<'a> = &'a [(&'a str, f64)];

/// A cluster view: `(node, index, total, available, alive)` per node.
fn view(nodes: &[(&Sim, u16, Res, Res, bool)]) -> ClusterView {
    ClusterView {
        cluster: "sim".into(),
        nodes: nodes
            .iter()
            .map(|(sim, index, total, free, alive)| NodeInfo {
                id: sim.st.setup.id,
                index: *index,
                session: format!("sim-{index}"),
                peer_address: format!("127.0.0.1:{}", 7000 + index),
                local_address: String::new(),
                hostname: String::new(),
                pid: 0,
                is_head: *index == 1,
                alive: *alive,
                total: res(total),
                load: NodeLoad {
                    available: res(free),
                    ..NodeLoad::default()
                },
            })
            .collect(),
    }
}

#[test]
fn a_lease_is_granted_once_a_worker_registers_and_freed_resources_serve_the_next() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    let d = n.driver();
    n.lease(d, 1, &[("CPU", 1.0)]);
    n.lease(d, 2, &[("CPU", 1.0)]);
    let spawned = n.spawned();
    assert_eq!(spawned.len(), 1, "one CPU: one worker wanted");
    assert!(n.grants(d).is_empty());
    n.start_worker(spawned[0]);
    let grants = n.grants(d);
    assert_eq!(grants.len(), 1, "only one fits");
    assert_eq!(grants[0].0, 1, "first come, first served");
    n.clear();
    n.send(d, ToRaylet::ReturnLease { lease: grants[0].1 });
    let grants = n.grants(d);
    assert_eq!(grants.iter().map(|g| g.0).collect::<Vec<_>>(), vec![2]);
    assert!(n.spawned().is_empty(), "the idle worker is reused");
}

#[test]
fn requests_are_served_in_arrival_order_across_drivers() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    let (a, b) = (n.driver(), n.driver());
    n.lease(a, 10, &[("CPU", 1.0)]);
    n.lease(b, 20, &[("CPU", 1.0)]);
    n.lease(a, 11, &[("CPU", 1.0)]);
    // Workers are per job: a's worker serves a, b's serves b, one CPU between them.
    let spawned = n.spawned();
    for w in spawned {
        n.start_worker(w);
    }
    let first = n.grants(a);
    assert_eq!(first.len(), 1);
    assert!(n.grants(b).is_empty(), "b waits behind a's earlier request");
    n.clear();
    n.send(a, ToRaylet::ReturnLease { lease: first[0].1 });
    n.effects();
    if n.grants(b).is_empty() {
        // b's worker may still have to start.
        let more = n.spawned();
        for w in more {
            n.start_worker(w);
        }
    }
    assert_eq!(
        n.grants(b).len(),
        1,
        "b is served before a's second request"
    );
    assert!(n.grants(a).is_empty());
}

#[test]
fn a_blocked_worker_gives_its_cpu_back() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    let d = n.driver();
    n.lease(d, 1, &[("CPU", 1.0)]);
    let w = n.spawned()[0];
    let wc = n.start_worker(w);
    assert_eq!(n.grants(d).len(), 1);
    n.clear();
    n.lease(d, 2, &[("CPU", 1.0)]);
    assert!(n.spawned().is_empty(), "no CPU free");
    n.send(wc, ToRaylet::Blocked);
    assert_eq!(n.spawned().len(), 1, "the nested task gets a worker");
}

#[test]
fn work_no_node_can_run_is_warned_once_and_shown_as_infeasible() {
    let mut n = Sim::new(&[("CPU", 2.0)], false);
    let d = n.driver();
    n.lease(d, 1, &[("gpu", 1.0)]);
    let w = n.warnings(d);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("no alive node has") && w[0].contains("gpu"),
        "{w:?}"
    );
    assert!(n.spawned().is_empty(), "no worker for work that cannot run");
    n.clear();
    n.lease(d, 2, &[("CPU", 1.0)]);
    assert!(n.warnings(d).is_empty(), "warned once only");
    let reasons = n.status_reasons();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("infeasible: no alive node has")),
        "{reasons:?}"
    );
}

#[test]
fn a_full_node_spills_to_the_peer_with_room_and_prefers_the_node_near_the_data() {
    let mut a = Sim::new(&[("CPU", 1.0)], true);
    let b = Sim::new(&[("CPU", 4.0)], true);
    let c = Sim::new(&[("CPU", 4.0)], true);
    let cpu: &[(&str, f64)] = &[("CPU", 4.0)];
    let v = view(&[
        (&a, 1, &[("CPU", 1.0)], &[("CPU", 1.0)], true),
        (&b, 2, cpu, &[("CPU", 1.0)], true),
        (&c, 3, cpu, cpu, true),
    ]);
    a.st.set_view(v);
    let d = a.driver();
    a.lease(d, 1, &[("CPU", 1.0)]);
    assert!(a.forwarded_leases().is_empty(), "fits here: stays here");
    a.lease(d, 2, &[("CPU", 1.0)]);
    assert_eq!(
        a.forwarded_leases(),
        vec![(3, 2)],
        "to the node with most room"
    );
    a.clear();
    let near = ToRaylet::RequestLease {
        req: 3,
        resources: res(&[("CPU", 1.0)]),
        near: 2,
        strategy: Strategy::Default,
    };
    a.send(d, near);
    assert_eq!(
        a.forwarded_leases(),
        vec![(2, 3)],
        "to the node holding the data"
    );
    a.clear();
    a.lease(d, 4, &[("CPU", 1.0)]);
    assert_eq!(
        a.forwarded_leases(),
        vec![(3, 4)],
        "b's one free CPU was counted as taken"
    );
}

#[test]
fn work_waits_while_no_node_has_its_resource_and_goes_to_one_that_joins() {
    let mut a = Sim::new(&[("CPU", 1.0)], true);
    let g = Sim::new(&[("CPU", 1.0), ("gpu", 1.0)], true);
    let me: &[(&str, f64)] = &[("CPU", 1.0)];
    a.st.set_view(view(&[(&a, 1, me, me, true)]));
    let d = a.driver();
    a.lease(d, 7, &[("gpu", 1.0)]);
    let created = spec("GpuActor", &[("gpu", 1.0)], 1);
    let actor = created.id;
    a.send(
        d,
        ToRaylet::CreateActor {
            req: 8,
            spec: created,
        },
    );
    let w = a.warnings(d);
    assert_eq!(w.len(), 2, "one for the task, one for the actor: {w:?}");
    assert!(w.iter().any(|m| m.contains("actor GpuActor")), "{w:?}");
    assert!(a.forwarded_leases().is_empty());
    a.clear();
    let gpu: &[(&str, f64)] = &[("CPU", 1.0), ("gpu", 1.0)];
    a.st.set_view(view(&[(&a, 1, me, me, true), (&g, 2, gpu, gpu, true)]));
    assert_eq!(
        a.forwarded_leases(),
        vec![(2, 7)],
        "the task goes to the gpu node"
    );
    a.effects();
    let placed = a.out.iter().any(|e| {
        matches!(e, Effect::Link(LinkOp::Forward { index: 2, msg: Forward::CreateActor { spec, .. }, .. }) if spec.id == actor)
    });
    assert!(placed, "the actor goes there too");
    assert!(a.st.remote_actors.contains_key(&actor));
    assert!(a.st.pending.is_empty() && a.st.pending_actors.is_empty());
}

#[test]
fn a_lease_request_whose_node_died_comes_back_and_spills_again() {
    let mut a = Sim::new(&[("CPU", 1.0)], true);
    let b = Sim::new(&[("CPU", 2.0)], true);
    let c = Sim::new(&[("CPU", 2.0)], true);
    let one: &[(&str, f64)] = &[("CPU", 1.0)];
    let two: &[(&str, f64)] = &[("CPU", 2.0)];
    a.st.set_view(view(&[(&a, 1, one, &[], true), (&b, 2, two, two, true)]));
    let d = a.driver();
    a.lease(d, 1, &[("CPU", 2.0)]);
    assert_eq!(a.forwarded_leases(), vec![(2, 1)]);
    a.clear();
    // b dies before answering; c has joined meanwhile.
    a.st.set_view(view(&[
        (&a, 1, one, &[], true),
        (&b, 2, two, two, false),
        (&c, 3, two, two, true),
    ]));
    a.effects();
    assert!(
        a.out
            .iter()
            .any(|e| matches!(e, Effect::Link(LinkOp::NodeDied(addr)) if addr.ends_with(":7002"))),
        "the dead node's connection is dropped"
    );
    a.clear();
    a.st.requeue_lease(d, 1, res(&[("CPU", 2.0)]), 2, Strategy::Default);
    assert_eq!(a.forwarded_leases(), vec![(3, 1)], "to the live node");
}

#[test]
fn work_does_not_bounce_back_to_a_node_whose_attachment_just_closed() {
    let mut a = Sim::new(&[("CPU", 1.0)], true);
    let b = Sim::new(&[("CPU", 1.0), ("gpu", 1.0)], true);
    let one: &[(&str, f64)] = &[("CPU", 1.0)];
    let gpu: &[(&str, f64)] = &[("CPU", 1.0), ("gpu", 1.0)];
    let both = |a: &Sim| view(&[(a, 1, one, one, true), (&b, 2, gpu, gpu, true)]);
    a.st.set_view(both(&a));
    let d = a.driver();
    let s = spec("GpuActor", &[("gpu", 1.0)], 3);
    let id = s.id;
    a.send(d, ToRaylet::CreateActor { req: 1, spec: s });
    a.lease(d, 2, &[("gpu", 1.0)]);
    assert_eq!(a.forwarded_leases(), vec![(2, 2)]);
    assert!(a.st.remote_actors.contains_key(&id), "placed on b");
    a.clear();
    // b is stopping: the job's attachment closes while the view still shows b alive.
    a.st.requeue_lease(d, 2, res(&[("gpu", 1.0)]), 2, Strategy::Default);
    a.st.peer_lost(JobId(1), 2);
    assert!(a.forwarded_leases().is_empty(), "not sent back to b");
    assert_eq!(
        a.actor(id).0,
        ActorState::Restarting,
        "waits here, not bounced to b"
    );
    assert_eq!(a.actor(id).2, 1, "one restart spent, not one per bounce");
    assert!(
        !a.warnings(d).is_empty(),
        "nothing else has a gpu: the user is told"
    );
    a.clear();
    // A while later (b came back under the same index, say), work may go there again.
    for _ in 0..super::scheduler::SHUN_VIEWS {
        a.st.set_view(both(&a));
    }
    assert_eq!(a.forwarded_leases(), vec![(2, 2)]);
}

#[test]
fn an_actor_whose_worker_cannot_be_started_dies_with_the_reason() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    let d = n.driver();
    let s = spec("Unstartable", &[], -1);
    let id = s.id;
    n.send(d, ToRaylet::CreateActor { req: 1, spec: s });
    let w = n.spawned();
    n.clear();
    n.st.worker_start_failed(w[0], "No such file or directory");
    let (state, death, restarts) = n.actor(id);
    assert_eq!(
        (state, restarts),
        (ActorState::Dead, 0),
        "no restarts spent"
    );
    assert!(
        death.contains("could not be started") && death.contains("No such file"),
        "{death}"
    );
    assert!(n.spawned().is_empty());
}

#[test]
fn a_worker_killed_while_starting_is_not_kept() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    let d = n.driver();
    n.lease(d, 1, &[("CPU", 1.0)]);
    let w = n.spawned()[0];
    n.st.disconnect(d);
    assert!(
        !n.st.worker_started(w, 77),
        "its process must be killed at once"
    );
}

#[test]
fn an_actor_starts_restarts_and_dies_with_its_cause() {
    let mut n = Sim::new(&[("CPU", 2.0)], false);
    let d = n.driver();
    let s = spec("Counter", &[], 1);
    let id = s.id;
    n.send(d, ToRaylet::CreateActor { req: 1, spec: s });
    assert!(matches!(
        n.sent_to(d).as_slice(),
        [
            FromRaylet::Registered { .. },
            FromRaylet::ActorCreated { req: 1 }
        ]
    ));
    // A caller waits for it to be alive.
    n.send(
        d,
        ToRaylet::GetActor {
            req: 2,
            id: Some(id),
            name: String::new(),
            namespace: String::new(),
            wait_alive: true,
        },
    );
    let w = n.spawned();
    assert_eq!(w.len(), 1);
    let wc = n.start_worker(w[0]);
    assert!(n
        .sent_to(wc)
        .iter()
        .any(|m| matches!(m, FromRaylet::StartActor { restarts: 0, .. })));
    n.send(wc, ToRaylet::ActorReady { id });
    assert_eq!(n.actor(id).0, ActorState::Alive);
    assert!(n.sent_to(d).iter().any(
        |m| matches!(m, FromRaylet::Actor { req: 2, info } if info.state == ActorState::Alive)
    ));
    n.clear();
    // Its process dies: it restarts once.
    n.st.disconnect(wc);
    assert_eq!(n.actor(id).0, ActorState::Restarting);
    let w2 = n.spawned();
    assert_eq!(w2.len(), 1, "a new process for the restart");
    let wc2 = n.start_worker(w2[0]);
    assert!(n
        .sent_to(wc2)
        .iter()
        .any(|m| matches!(m, FromRaylet::StartActor { restarts: 1, .. })));
    n.send(wc2, ToRaylet::ActorReady { id });
    n.clear();
    // Dies again: max_restarts is spent.
    n.st.disconnect(wc2);
    let (state, death, restarts) = n.actor(id);
    assert_eq!((state, restarts), (ActorState::Dead, 1));
    assert!(death.contains("max_restarts (1) is exhausted"), "{death}");
    assert!(n.spawned().is_empty());
}

#[test]
fn kill_and_owner_exit_end_actors_for_good() {
    let mut n = Sim::new(&[("CPU", 2.0)], false);
    let d = n.driver();
    let (s1, s2) = (spec("A", &[], -1), spec("B", &[], -1));
    let (a1, a2) = (s1.id, s2.id);
    n.send(d, ToRaylet::CreateActor { req: 1, spec: s1 });
    n.send(d, ToRaylet::CreateActor { req: 2, spec: s2 });
    let ws = n.spawned();
    assert_eq!(ws.len(), 2);
    for w in &ws {
        n.start_worker(*w);
    }
    n.clear();
    n.send(
        d,
        ToRaylet::KillActor {
            req: 3,
            id: a1,
            restart: false,
        },
    );
    let (state, death, _) = n.actor(a1);
    assert_eq!(state, ActorState::Dead);
    assert_eq!(death, "killed by oxray::kill");
    assert_eq!(n.killed().len(), 1, "its process is killed");
    assert!(
        n.spawned().is_empty(),
        "infinite restarts, but a kill is final"
    );
    n.clear();
    n.st.disconnect(d);
    let (state, death, _) = n.actor(a2);
    assert_eq!(
        (state, death.as_str()),
        (ActorState::Dead, "its owner exited")
    );
    assert_eq!(n.killed().len(), 1);
}

#[test]
fn a_restarted_actor_whose_worker_dies_before_registering_restarts_again() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    let d = n.driver();
    let s = spec("Flaky", &[], 2);
    let id = s.id;
    n.send(d, ToRaylet::CreateActor { req: 1, spec: s });
    let w = n.spawned()[0];
    let wc = n.start_worker(w);
    n.send(wc, ToRaylet::ActorReady { id });
    n.clear();
    n.st.disconnect(wc);
    let w2 = n.spawned();
    assert_eq!(w2.len(), 1);
    n.clear();
    // The restart's process dies before it registers: noticed when it is reaped.
    n.st.worker_started(w2[0], 4242);
    n.st.worker_exited(w2[0], "signal: 9 (SIGKILL)");
    assert_eq!(n.actor(id).0, ActorState::Restarting, "restarts again");
    let w3 = n.spawned();
    assert_eq!(
        w3.len(),
        1,
        "with a new process at once, no other event needed"
    );
    n.clear();
    n.st.worker_exited(w3[0], "signal: 9 (SIGKILL)");
    let (state, death, _) = n.actor(id);
    assert_eq!(state, ActorState::Dead, "max_restarts (2) spent");
    assert!(death.contains("max_restarts"), "{death}");
}

#[test]
fn workers_that_keep_failing_to_start_fail_the_waiting_requests() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    let d = n.driver();
    n.lease(d, 1, &[("CPU", 1.0)]);
    for attempt in 0..MAX_FAILED_STARTS {
        let w = n.spawned();
        assert_eq!(w.len(), 1, "attempt {attempt} starts one worker");
        n.clear();
        n.st.worker_start_failed(w[0], "exec format error");
    }
    let errors: Vec<String> = n
        .sent_to(d)
        .into_iter()
        .filter_map(|m| match m {
            FromRaylet::Error {
                req: 1, message, ..
            } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("keep failing to start") && errors[0].contains("exec format"));
    assert!(n.spawned().is_empty(), "no endless respawning");
    assert!(n.st.pending.is_empty());
}

#[test]
fn a_leased_worker_that_dies_frees_its_resources_and_a_driver_that_leaves_frees_everything() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    let d = n.driver();
    n.lease(d, 1, &[("CPU", 1.0)]);
    let w = n.spawned()[0];
    let wc = n.start_worker(w);
    assert_eq!(n.grants(d).len(), 1);
    n.lease(d, 2, &[("CPU", 1.0)]);
    n.clear();
    n.st.disconnect(wc);
    n.st.worker_exited(w, "exit status: 1");
    assert!(n.st.leases.is_empty(), "the lease ended with its worker");
    let w2 = n.spawned();
    assert_eq!(w2.len(), 1, "the waiting request gets a new worker");
    n.start_worker(w2[0]);
    assert_eq!(n.grants(d).iter().map(|g| g.0).collect::<Vec<_>>(), vec![2]);
    n.lease(d, 3, &[("CPU", 1.0)]);
    n.clear();
    n.st.disconnect(d);
    assert!(n.st.pending.is_empty() && n.st.leases.is_empty() && n.st.jobs.is_empty());
    assert_eq!(n.killed(), w2, "its workers are killed");
}

#[test]
fn an_idle_worker_that_exits_is_forgotten_and_an_unknown_worker_is_refused() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    let d = n.driver();
    n.lease(d, 1, &[("CPU", 1.0)]);
    let w = n.spawned()[0];
    let wc = n.start_worker(w);
    let lease = n.grants(d)[0].1;
    n.send(d, ToRaylet::ReturnLease { lease });
    n.st.disconnect(wc);
    assert!(n.st.workers.is_empty());
    let stranger = Registration {
        worker: WorkerId::random(),
        pid: 9,
        kind: ClientKind::Worker,
        exe: String::new(),
        program: String::new(),
        listen: String::new(),
        namespace: String::new(),
        job_key: None,
    };
    assert!(
        !n.st.register(99, stranger),
        "a worker this node did not start"
    );
}

#[test]
fn only_the_last_dead_actors_are_remembered() {
    let mut n = Sim::new(&[("CPU", 1.0)], false);
    n.st.setup.max_dead_actors = 3;
    let d = n.driver();
    let mut ids = Vec::new();
    for i in 0..5 {
        let s = spec("Short", &[], 0);
        ids.push(s.id);
        n.send(d, ToRaylet::CreateActor { req: i, spec: s });
        n.send(
            d,
            ToRaylet::KillActor {
                req: 100 + i,
                id: ids[i as usize],
                restart: false,
            },
        );
    }
    let kept: Vec<ActorId> = ids[2..].to_vec();
    assert_eq!(
        n.st.actors.len(),
        3,
        "the two oldest dead actors are forgotten"
    );
    for id in &kept {
        assert_eq!(n.actor(*id).0, ActorState::Dead);
    }
    let stats = StoreStats::default();
    assert_eq!(n.st.status(1, "unix:@sim", &stats).actors.len(), 3);
    // A live actor is never forgotten, however many die after it.
    let live = spec("Long", &[], 0);
    let live_id = live.id;
    n.send(
        d,
        ToRaylet::CreateActor {
            req: 50,
            spec: live,
        },
    );
    for i in 0..4 {
        let s = spec("Short", &[], 0);
        let id = s.id;
        n.send(
            d,
            ToRaylet::CreateActor {
                req: 60 + i,
                spec: s,
            },
        );
        n.send(
            d,
            ToRaylet::KillActor {
                req: 70 + i,
                id,
                restart: false,
            },
        );
    }
    assert!(n.st.actors.contains_key(&live_id));
    assert_eq!(n.st.actors.len(), 4, "3 dead and the live one");
}

/// Three nodes of 4 CPUs each, all free, as node 1 (`a`) sees them.
fn three_nodes() -> (Sim, Sim, Sim) {
    let mut a = Sim::new(&[("CPU", 4.0)], true);
    let b = Sim::new(&[("CPU", 4.0)], true);
    let c = Sim::new(&[("CPU", 4.0)], true);
    let cpu: &[(&str, f64)] = &[("CPU", 4.0)];
    let v = view(&[
        (&a, 1, cpu, cpu, true),
        (&b, 2, cpu, cpu, true),
        (&c, 3, cpu, cpu, true),
    ]);
    a.st.index = 1;
    a.st.set_view(v);
    (a, b, c)
}

#[test]
fn spread_goes_round_robin_over_the_nodes_that_fit() {
    let (mut a, _b, _c) = three_nodes();
    let d = a.driver();
    for req in 1..=6 {
        a.lease_by(d, req, &[("CPU", 1.0)], Strategy::Spread);
    }
    // Here, 2, 3, here, 2, 3: two requests stay here (queued for a worker), four go out.
    assert_eq!(
        a.forwarded_leases(),
        vec![(2, 2), (3, 3), (2, 5), (3, 6)],
        "round-robin"
    );
    assert_eq!(a.st.pending.len(), 2);
    assert!(a.st.pending.iter().all(|r| !r.spill), "kept here");
    // What went out counts as taken there until the next view, once.
    assert_eq!(a.st.spilled[&2].get("CPU"), 2.0);
    assert_eq!(a.st.spilled[&3].get("CPU"), 2.0);
    a.clear();
    // Nodes that never fit are skipped: only this one has a gpu.
    let (mut g, b, c) = three_nodes();
    g.st.setup.total = res(&[("CPU", 4.0), ("gpu", 1.0)]);
    g.st.recount_total();
    let d = g.driver();
    g.lease_by(d, 1, &[("gpu", 1.0)], Strategy::Spread);
    g.lease_by(d, 2, &[("gpu", 1.0)], Strategy::Spread);
    assert!(g.forwarded_leases().is_empty(), "no other node has a gpu");
    assert!(g.st.pending.iter().all(|r| !r.spill), "kept here by SPREAD");
    drop((b, c));
}

#[test]
fn spread_prefers_nodes_with_room_now() {
    let (mut a, b, c) = three_nodes();
    let cpu: &[(&str, f64)] = &[("CPU", 4.0)];
    // b is busy (no free CPU), c is free.
    a.st.set_view(view(&[
        (&a, 1, cpu, cpu, true),
        (&b, 2, cpu, &[], true),
        (&c, 3, cpu, cpu, true),
    ]));
    let d = a.driver();
    for req in 1..=4 {
        a.lease_by(d, req, &[("CPU", 1.0)], Strategy::Spread);
    }
    let out = a.forwarded_leases();
    assert!(out.iter().all(|(i, _)| *i == 3), "never to busy b: {out:?}");
    assert_eq!(out.len(), 2, "{out:?}");
}

#[test]
fn node_affinity_hard_pins_work_and_fails_typed_on_a_dead_node() {
    let (mut a, b, c) = three_nodes();
    let d = a.driver();
    let to_b = Strategy::NodeAffinity {
        node_id: b.st.setup.id,
        soft: false,
    };
    a.lease_by(d, 1, &[("CPU", 1.0)], to_b);
    assert_eq!(a.forwarded_leases(), vec![(2, 1)], "to b, though here fits");
    let here = Strategy::NodeAffinity {
        node_id: a.st.setup.id,
        soft: false,
    };
    a.lease_by(d, 2, &[("CPU", 1.0)], here);
    assert_eq!(a.st.pending.len(), 1);
    assert!(!a.st.pending[0].spill, "pinned here");
    a.clear();
    // b dies: hard affinity to it fails at once, typed.
    let cpu: &[(&str, f64)] = &[("CPU", 4.0)];
    a.st.set_view(view(&[
        (&a, 1, cpu, cpu, true),
        (&b, 2, cpu, cpu, false),
        (&c, 3, cpu, cpu, true),
    ]));
    a.clear();
    a.lease_by(d, 3, &[("CPU", 1.0)], to_b);
    let errors = a.errors(d);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].0, errors[0].1), (3, ErrorKind::Unschedulable));
    assert!(errors[0].2.contains("is dead"), "{}", errors[0].2);
    assert!(a.forwarded_leases().is_empty());
    // Never fits on c (it has 4 CPUs): typed too.
    a.clear();
    let to_c = Strategy::NodeAffinity {
        node_id: c.st.setup.id,
        soft: false,
    };
    a.lease_by(d, 4, &[("CPU", 8.0)], to_c);
    let errors = a.errors(d);
    assert!(errors[0].2.contains("never has"), "{errors:?}");
    // An actor pinned to the dead node is refused the same way.
    a.clear();
    let mut s = spec("Pinned", &[], 0);
    s.strategy = to_b;
    a.send(d, ToRaylet::CreateActor { req: 5, spec: s });
    let errors = a.errors(d);
    assert_eq!(errors[0].1, ErrorKind::Unschedulable, "{errors:?}");
}

#[test]
fn node_affinity_soft_falls_back_when_its_node_is_gone() {
    let (mut a, b, c) = three_nodes();
    let cpu: &[(&str, f64)] = &[("CPU", 4.0)];
    a.st.set_view(view(&[
        (&a, 1, cpu, &[], true),
        (&b, 2, cpu, cpu, false),
        (&c, 3, cpu, cpu, true),
    ]));
    let d = a.driver();
    // Fill this node, so the fallback (Default) spills.
    a.st.setup.total = res(&[("CPU", 0.5)]);
    a.st.recount_total();
    let soft_b = Strategy::NodeAffinity {
        node_id: b.st.setup.id,
        soft: true,
    };
    a.lease_by(d, 1, &[("CPU", 1.0)], soft_b);
    assert!(a.errors(d).is_empty());
    assert_eq!(
        a.forwarded_leases(),
        vec![(3, 1)],
        "to the live node with room"
    );
    // Soft affinity to a live node still goes there.
    a.clear();
    let soft_c = Strategy::NodeAffinity {
        node_id: c.st.setup.id,
        soft: true,
    };
    a.lease_by(d, 2, &[("CPU", 1.0)], soft_c);
    assert_eq!(a.forwarded_leases(), vec![(3, 2)]);
}

#[test]
fn an_actor_with_hard_affinity_dies_with_its_node() {
    let (mut a, b, c) = three_nodes();
    let d = a.driver();
    let mut s = spec("Pinned", &[("CPU", 1.0)], -1);
    let id = s.id;
    s.strategy = Strategy::NodeAffinity {
        node_id: b.st.setup.id,
        soft: false,
    };
    a.send(d, ToRaylet::CreateActor { req: 1, spec: s });
    assert_eq!(a.st.remote_actors.get(&id).map(|p| p.node), Some(2));
    let cpu: &[(&str, f64)] = &[("CPU", 4.0)];
    a.st.set_view(view(&[
        (&a, 1, cpu, cpu, true),
        (&b, 2, cpu, cpu, false),
        (&c, 3, cpu, cpu, true),
    ]));
    a.st.peer_lost(JobId(1), 2);
    let (state, death, _) = a.actor(id);
    assert_eq!(state, ActorState::Dead, "not started again elsewhere");
    assert!(death.contains("node affinity is hard"), "{death}");
    assert!(!a.st.remote_actors.contains_key(&id), "not placed again");
}

mod placement_groups {
    use oxray_common::placement::{
        resources_in_group, BundleOp, PlacementGroupId, PlacementGroupInfo, PlacementGroupSpec,
        PlacementGroupState, PlacementRequest, PlacementStrategy,
    };

    use super::super::placement::{plan, Candidate, NoPlan, Waiter};
    use super::*;

    fn cand(index: u16, free: f64, total: f64) -> Candidate {
        Candidate {
            index,
            free: Resources::cpus(free),
            total: Resources::cpus(total),
        }
    }

    fn cpus(n: usize, each: f64) -> Vec<(u32, Resources)> {
        (0..n as u32).map(|i| (i, Resources::cpus(each))).collect()
    }

    #[test]
    fn each_strategy_places_bundles_as_ray_does() {
        let nodes = [cand(1, 4.0, 4.0), cand(2, 2.0, 2.0), cand(3, 2.0, 2.0)];
        // PACK: all on one node when they fit there.
        let p = plan(&cpus(3, 1.0), PlacementStrategy::Pack, &nodes, &[]).expect("fits");
        assert!(p.iter().all(|(_, n)| *n == 1), "{p:?}");
        // PACK: spills over when no node holds all.
        let p = plan(&cpus(3, 2.0), PlacementStrategy::Pack, &nodes, &[]).expect("fits");
        let used: BTreeSet<u16> = p.iter().map(|(_, n)| *n).collect();
        assert!(used.len() >= 2 && used.contains(&1), "{p:?}");
        // STRICT_PACK: one node or nothing; busy vs never.
        let busy = [cand(1, 1.0, 4.0), cand(2, 2.0, 2.0)];
        assert!(matches!(
            plan(&cpus(2, 2.0), PlacementStrategy::StrictPack, &busy, &[]),
            Err(NoPlan::Busy(_))
        ));
        assert!(matches!(
            plan(&cpus(3, 2.0), PlacementStrategy::StrictPack, &nodes, &[]),
            Err(NoPlan::Infeasible(_))
        ));
        // SPREAD: distinct nodes while there are enough, then shared.
        let p = plan(&cpus(3, 1.0), PlacementStrategy::Spread, &nodes, &[]).expect("fits");
        assert_eq!(p.iter().map(|(_, n)| *n).collect::<BTreeSet<_>>().len(), 3);
        let p = plan(&cpus(4, 1.0), PlacementStrategy::Spread, &nodes, &[]).expect("fits");
        assert_eq!(p.len(), 4);
        // STRICT_SPREAD: 4 bundles on 3 nodes never fit; avoids nodes already holding some.
        match plan(&cpus(4, 1.0), PlacementStrategy::StrictSpread, &nodes, &[]) {
            Err(NoPlan::Infeasible(m)) => assert!(m.contains("4 distinct nodes"), "{m}"),
            other => panic!("expected infeasible, got {other:?}"),
        }
        let p = plan(
            &cpus(1, 1.0),
            PlacementStrategy::StrictSpread,
            &nodes,
            &[1, 2],
        )
        .expect("fits");
        assert_eq!(p, vec![(0, 3)]);
    }

    /// A head (index 1) and members (2, 3, ...) that carry out its bundle requests.
    struct Cluster {
        nodes: Vec<Sim>,
        alive: Vec<bool>,
        head_driver: u64,
    }

    impl Cluster {
        fn new(cpus: &[f64]) -> Cluster {
            let mut nodes: Vec<Sim> = cpus
                .iter()
                .map(|c| Sim::new(&[("CPU", *c)], true))
                .collect();
            nodes[0].st.setup.places_groups = true;
            let head_driver = nodes[0].driver();
            let mut c = Cluster {
                alive: vec![true; nodes.len()],
                nodes,
                head_driver,
            };
            c.publish();
            c
        }

        /// Every node gets the view (with each node's real free resources and total).
        fn publish(&mut self) {
            let infos: Vec<NodeInfo> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(k, n)| NodeInfo {
                    id: n.st.setup.id,
                    index: k as u16 + 1,
                    session: format!("sim-{k}"),
                    peer_address: format!("127.0.0.1:{}", 7001 + k),
                    local_address: String::new(),
                    hostname: String::new(),
                    pid: 0,
                    is_head: k == 0,
                    alive: self.alive[k],
                    total: n.st.total().clone(),
                    load: NodeLoad {
                        available: n.st.available(),
                        ..NodeLoad::default()
                    },
                })
                .collect();
            let view = ClusterView {
                cluster: "sim".into(),
                nodes: infos,
            };
            for (k, n) in self.nodes.iter_mut().enumerate() {
                if self.alive[k] {
                    n.st.set_view(view.clone());
                }
            }
        }

        /// The head's bundle requests since the last call: (node index, group, attempt, op).
        fn requests(&mut self) -> Vec<(u16, PlacementGroupId, u64, BundleOp)> {
            let head = &mut self.nodes[0];
            head.effects();
            let mut out = Vec::new();
            head.out.retain(|e| match e {
                Effect::Link(LinkOp::Bundles {
                    index,
                    group,
                    attempt,
                    op,
                }) => {
                    out.push((*index, *group, *attempt, op.clone()));
                    false
                }
                _ => true,
            });
            out
        }

        /// Carries out the head's requests (a dead node's fail) until none are left.
        fn settle(&mut self) {
            for _ in 0..20 {
                let reqs = self.requests();
                if reqs.is_empty() {
                    return;
                }
                for (index, group, attempt, op) in reqs {
                    let k = usize::from(index) - 1;
                    let result = if self.alive[k] {
                        self.nodes[k].st.bundle_op(op)
                    } else {
                        Err(format!("node {index} is gone"))
                    };
                    self.nodes[0]
                        .st
                        .bundles_answered(group, attempt, index, result);
                }
            }
            panic!("the bundle requests never settled");
        }

        fn create(&mut self, n: usize, each: f64, strategy: PlacementStrategy) -> PlacementGroupId {
            let id = PlacementGroupId::random();
            let spec = PlacementGroupSpec {
                id,
                bundles: vec![Resources::cpus(each); n],
                strategy,
                name: String::new(),
                namespace: "ns".into(),
                detached: false,
                creator: (self.nodes[0].st.setup.id, JobId(1)),
            };
            let d = self.head_driver;
            self.nodes[0].st.placement(
                Waiter::Client { conn: d, req: 1 },
                PlacementRequest::Create(spec),
            );
            id
        }

        fn info(&mut self, id: PlacementGroupId) -> PlacementGroupInfo {
            let d = self.head_driver;
            self.nodes[0].clear();
            self.nodes[0]
                .st
                .placement(Waiter::Client { conn: d, req: 9 }, PlacementRequest::Table);
            let sent = self.nodes[0].sent_to(d);
            sent.into_iter()
                .find_map(|m| match m {
                    FromRaylet::PlacementGroups { req: 9, groups } => {
                        groups.into_iter().find(|g| g.spec.id == id)
                    }
                    _ => None,
                })
                .expect("the group is in the table")
        }

        /// How many bundles of `id` node `k` holds (committed or not).
        fn held(&self, k: usize, id: PlacementGroupId) -> usize {
            self.nodes[k]
                .st
                .bundles
                .keys()
                .filter(|(g, _)| *g == id)
                .count()
        }
    }

    #[test]
    fn a_group_is_prepared_then_committed_on_every_node() {
        let mut c = Cluster::new(&[2.0, 2.0, 2.0]);
        let id = c.create(3, 1.0, PlacementStrategy::StrictSpread);
        let first = c.requests();
        assert!(
            first
                .iter()
                .all(|(_, _, _, op)| matches!(op, BundleOp::Prepare { .. })),
            "prepare first: {first:?}"
        );
        // The head's own bundle is prepared in place, the two others by request.
        assert_eq!(first.len(), 2, "{first:?}");
        for (index, group, attempt, op) in first {
            let k = usize::from(index) - 1;
            let r = c.nodes[k].st.bundle_op(op);
            assert!(r.is_ok());
            assert_eq!(
                c.info(id).state,
                PlacementGroupState::Pending,
                "not before all commit"
            );
            c.nodes[0].st.bundles_answered(group, attempt, index, r);
        }
        c.settle();
        let info = c.info(id);
        assert_eq!(info.state, PlacementGroupState::Created, "{info:?}");
        let ids: BTreeSet<_> = info.nodes.iter().flatten().collect();
        assert_eq!(ids.len(), 3, "one bundle per node: {info:?}");
        for k in 0..3 {
            assert_eq!(c.held(k, id), 1);
            // One CPU left as CPU, one as the bundle's.
            assert_eq!(c.nodes[k].st.total().get("CPU"), 1.0);
        }
        // Work in bundle i asks for its resources, which exist where the bundle is.
        let on: Vec<usize> = (0..3u32)
            .map(|i| {
                let need = resources_in_group(id, Some(i), &Resources::cpus(1.0));
                (0..3)
                    .find(|k| c.nodes[*k].st.total().contains(&need))
                    .expect("a node")
            })
            .collect();
        assert_eq!(on.iter().collect::<BTreeSet<_>>().len(), 3);
        // A waiter is answered at once now.
        let d = c.head_driver;
        c.nodes[0].clear();
        c.nodes[0].st.placement(
            Waiter::Client { conn: d, req: 5 },
            PlacementRequest::Wait(id),
        );
        assert!(c.nodes[0]
            .sent_to(d)
            .iter()
            .any(|m| matches!(m, FromRaylet::PlacementGroups { req: 5, .. })));
    }

    #[test]
    fn a_node_failing_between_prepare_and_commit_rolls_back_then_places_later() {
        let mut c = Cluster::new(&[2.0, 2.0, 2.0]);
        let id = c.create(3, 1.0, PlacementStrategy::StrictSpread);
        // Prepares succeed everywhere.
        for (index, group, attempt, op) in c.requests() {
            let r = c.nodes[usize::from(index) - 1].st.bundle_op(op);
            c.nodes[0].st.bundles_answered(group, attempt, index, r);
        }
        let commits = c.requests();
        assert!(commits
            .iter()
            .all(|(_, _, _, op)| matches!(op, BundleOp::Commit { .. })));
        // Node 3 dies before committing: its commit fails; the others commit.
        for (index, group, attempt, op) in commits {
            let r = if index == 3 {
                Err("node 3 is gone".to_string())
            } else {
                c.nodes[usize::from(index) - 1].st.bundle_op(op)
            };
            c.nodes[0].st.bundles_answered(group, attempt, index, r);
        }
        c.alive[2] = false;
        // Rolled back: every bundle taken is released, none is left half-reserved.
        c.settle();
        let info = c.info(id);
        assert_eq!(info.state, PlacementGroupState::Pending, "{info:?}");
        assert!(info.reason.contains("rolled back"), "{}", info.reason);
        assert_eq!(
            c.held(0, id) + c.held(1, id),
            0,
            "released on the live nodes"
        );
        assert_eq!(c.nodes[1].st.total().get("CPU"), 2.0);
        // STRICT_SPREAD of 3 on the 2 live nodes never fits: it says so once the view shows it.
        c.publish();
        c.settle();
        let info = c.info(id);
        assert!(info.reason.contains("infeasible"), "{}", info.reason);
        // A new node joins: placed.
        c.nodes.push(Sim::new(&[("CPU", 2.0)], true));
        c.alive.push(true);
        c.publish();
        c.settle();
        let info = c.info(id);
        assert_eq!(info.state, PlacementGroupState::Created, "{info:?}");
        let dead = c.nodes[2].st.setup.id;
        assert!(
            !info.nodes.contains(&Some(dead)),
            "placed on the dead node: {info:?}"
        );
        assert_eq!(c.held(3, id), 1);
    }

    #[test]
    fn a_refused_prepare_rolls_back_the_others() {
        let mut c = Cluster::new(&[2.0, 2.0, 2.0]);
        // Node 2 got busy after the view: it refuses to prepare.
        let d2 = c.nodes[1].client(ClientKind::Driver);
        c.nodes[1].lease(d2, 1, &[("CPU", 2.0)]);
        let w = c.nodes[1].spawned();
        c.nodes[1].start_worker(w[0]);
        let id = c.create(3, 1.0, PlacementStrategy::StrictSpread);
        c.settle();
        let info = c.info(id);
        assert_eq!(info.state, PlacementGroupState::Pending);
        assert!(info.reason.contains("rolled back"), "{}", info.reason);
        for k in 0..3 {
            assert_eq!(
                c.held(k, id),
                0,
                "node {k} holds a bundle after the rollback"
            );
        }
        assert_eq!(c.nodes[0].st.total().get("CPU"), 2.0);
    }

    #[test]
    fn a_dead_nodes_bundles_are_placed_again() {
        let mut c = Cluster::new(&[2.0, 2.0, 2.0]);
        let id = c.create(2, 1.0, PlacementStrategy::StrictSpread);
        c.settle();
        let info = c.info(id);
        assert_eq!(info.state, PlacementGroupState::Created);
        let lost = (1..3)
            .find(|k| c.held(*k, id) == 1)
            .expect("a member holds one");
        c.alive[lost] = false;
        c.publish();
        c.settle();
        let info = c.info(id);
        assert_eq!(info.state, PlacementGroupState::Created, "{info:?}");
        let holders: Vec<usize> = (0..3)
            .filter(|k| c.alive[*k] && c.held(*k, id) == 1)
            .collect();
        assert_eq!(holders.len(), 2, "on the two live nodes: {holders:?}");
    }

    #[test]
    fn on_one_node_work_runs_in_its_bundle_and_removal_stops_it() {
        let mut n = Sim::new(&[("CPU", 4.0)], false);
        let d = n.driver();
        let id = PlacementGroupId::random();
        let spec = PlacementGroupSpec {
            id,
            bundles: vec![Resources::cpus(2.0)],
            strategy: PlacementStrategy::StrictPack,
            name: "pg".into(),
            namespace: "ns".into(),
            detached: false,
            creator: (n.st.setup.id, JobId(1)),
        };
        n.st.placement(
            Waiter::Client { conn: d, req: 1 },
            PlacementRequest::Create(spec),
        );
        assert_eq!(n.st.total().get("CPU"), 2.0);
        // A task in bundle 0 gets a lease bounded by the bundle.
        let in_bundle = resources_in_group(id, Some(0), &Resources::cpus(2.0));
        n.send(
            d,
            ToRaylet::RequestLease {
                req: 2,
                resources: in_bundle.clone(),
                near: 0,
                strategy: Strategy::Default,
            },
        );
        let w = n.spawned();
        n.start_worker(w[0]);
        assert_eq!(n.grants(d).len(), 1);
        // A second one waits (the bundle is busy), quietly.
        n.clear();
        n.send(
            d,
            ToRaylet::RequestLease {
                req: 3,
                resources: in_bundle,
                near: 0,
                strategy: Strategy::Default,
            },
        );
        assert!(n.grants(d).is_empty());
        assert!(
            n.warnings(d).is_empty(),
            "no infeasible warning for group work"
        );
        // Work needing the whole node waits while the group holds half of it.
        n.lease(d, 6, &[("CPU", 4.0)]);
        assert!(n.grants(d).is_empty());
        // Removal: its worker is killed, the waiting request fails typed, the CPUs return
        // and serve the work that waited for them.
        n.clear();
        n.st.placement(
            Waiter::Client { conn: d, req: 4 },
            PlacementRequest::Remove(id),
        );
        assert_eq!(n.killed(), vec![w[0]]);
        let errors = n.errors(d);
        assert!(errors
            .iter()
            .any(|(req, kind, _)| *req == 3 && *kind == ErrorKind::Unschedulable));
        assert_eq!(n.st.total().get("CPU"), 4.0);
        let fresh = n.spawned();
        assert_eq!(fresh.len(), 1, "a worker for the waiting work");
        n.start_worker(fresh[0]);
        assert!(n.grants(d).iter().any(|(req, _)| *req == 6));
        // The name is free again.
        n.clear();
        let get = PlacementRequest::Get {
            namespace: "ns".into(),
            name: "pg".into(),
        };
        n.st.placement(Waiter::Client { conn: d, req: 5 }, get);
        assert_eq!(n.errors(d).len(), 1);
    }

    #[test]
    fn a_jobs_groups_go_with_it_unless_detached() {
        let mut n = Sim::new(&[("CPU", 4.0)], false);
        let d = n.driver();
        let job = n.st.clients[&d].job;
        let make = |detached| PlacementGroupSpec {
            id: PlacementGroupId::random(),
            bundles: vec![Resources::cpus(1.0)],
            strategy: PlacementStrategy::Pack,
            name: String::new(),
            namespace: "ns".into(),
            detached,
            creator: (n.st.setup.id, job),
        };
        let (mine, kept) = (make(false), make(true));
        let (mine_id, kept_id) = (mine.id, kept.id);
        for spec in [mine, kept] {
            n.st.placement(
                Waiter::Client { conn: d, req: 1 },
                PlacementRequest::Create(spec),
            );
        }
        assert_eq!(n.st.total().get("CPU"), 2.0);
        n.st.disconnect(d);
        let state = |n: &mut Sim, id| {
            let t = n.driver();
            n.clear();
            n.st.placement(Waiter::Client { conn: t, req: 2 }, PlacementRequest::Table);
            n.sent_to(t)
                .into_iter()
                .find_map(|m| match m {
                    FromRaylet::PlacementGroups { groups, .. } => groups
                        .into_iter()
                        .find(|g| g.spec.id == id)
                        .map(|g| g.state),
                    _ => None,
                })
                .expect("listed")
        };
        assert_eq!(state(&mut n, mine_id), PlacementGroupState::Removed);
        assert_eq!(state(&mut n, kept_id), PlacementGroupState::Created);
        assert_eq!(n.st.total().get("CPU"), 3.0, "the job's bundle came back");
    }

    #[test]
    fn a_removed_groups_bundles_count_as_free_again_before_the_next_view() {
        // The head has no CPU: every group goes to node 2, which has room for two at a time.
        let mut c = Cluster::new(&[0.0, 2.0]);
        for round in 0..10 {
            let id = c.create(1, 1.0, PlacementStrategy::StrictPack);
            c.settle();
            let info = c.info(id);
            assert_eq!(
                info.state,
                PlacementGroupState::Created,
                "round {round}: {info:?}"
            );
            let d = c.head_driver;
            c.nodes[0].st.placement(
                Waiter::Client { conn: d, req: 7 },
                PlacementRequest::Remove(id),
            );
            c.settle();
            assert_eq!(c.held(1, id), 0);
        }
    }
}
