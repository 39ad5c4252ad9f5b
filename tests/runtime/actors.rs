//! Actors: ordering, handles in tasks, names, restarts, kill, exit, concurrency, resources.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use oxray::prelude::*;
use oxray::ActorState;

use crate::{alive, cluster, eventually};

#[oxray::actor]
pub struct Counter {
    n: i64,
    log: Vec<i64>,
}

#[oxray::actor]
impl Counter {
    fn new(start: i64) -> Self {
        Counter {
            n: start,
            log: Vec::new(),
        }
    }

    fn incr(&mut self, by: i64) -> i64 {
        self.n += by;
        self.log.push(by);
        self.n
    }

    fn log(&self) -> Vec<i64> {
        self.log.clone()
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn restarted(&self) -> bool {
        oxray::was_restarted()
    }

    fn fail(&self, how: String) -> Result<i64, String> {
        if how == "panic" {
            panic!("method panicked");
        }
        Err(format!("method refused: {how}"))
    }

    fn quit(&self) -> i64 {
        oxray::exit_actor()
    }
}

/// Calls `incr` from inside a task, through a handle passed as an argument.
#[oxray::remote]
fn hit(counter: ActorHandle<Counter>, tag: i64, times: i64) -> Vec<i64> {
    let refs: Vec<ObjectRef<i64>> = (0..times)
        .map(|_| counter.incr(tag))
        .collect::<Result<_>>()
        .expect("calls");
    oxray::get_all(&refs).expect("results")
}

/// Returns a handle it was given, to show handles travel both ways.
#[oxray::remote]
fn pass_back(counter: ActorHandle<Counter>) -> ActorHandle<Counter> {
    counter
}

#[oxray::actor]
pub struct Latch {
    arrived: AtomicU32,
    barrier: Mutex<Option<std::sync::Arc<Barrier>>>,
}

#[oxray::actor]
impl Latch {
    fn new(parties: u32) -> Self {
        Latch {
            arrived: AtomicU32::new(0),
            barrier: Mutex::new(Some(std::sync::Arc::new(Barrier::new(parties as usize)))),
        }
    }

    /// Returns once `parties` calls are inside at the same time.
    fn meet(&self) -> u32 {
        let b = self.barrier.lock().expect("lock").clone().expect("barrier");
        self.arrived.fetch_add(1, Ordering::SeqCst);
        b.wait();
        self.arrived.load(Ordering::SeqCst)
    }
}

#[oxray::actor]
pub struct Broken;

#[oxray::actor]
impl Broken {
    fn new(fail: bool) -> Self {
        if fail {
            panic!("cannot build this actor");
        }
        Broken
    }

    fn ping(&self) -> u8 {
        1
    }
}

#[test]
fn calls_from_one_caller_run_in_order_in_one_process() {
    cluster();
    let c = Counter::remote(0).unwrap();
    let refs: Vec<ObjectRef<i64>> = (1..=500).map(|i| c.incr(i)).collect::<Result<_>>().unwrap();
    let values = oxray::get_all(&refs).unwrap();
    let expected: Vec<i64> = (1..=500)
        .scan(0, |s, i| {
            *s += i;
            Some(*s)
        })
        .collect();
    assert_eq!(values, expected);
    assert_eq!(
        oxray::get(&c.log().unwrap()).unwrap(),
        (1..=500).collect::<Vec<_>>()
    );
    let pids: Vec<u32> = (0..5)
        .map(|_| oxray::get(&c.pid().unwrap()).unwrap())
        .collect();
    assert!(
        pids.windows(2).all(|w| w[0] == w[1]),
        "same actor process throughout"
    );
    assert_ne!(pids[0], std::process::id());
    oxray::kill(&c).unwrap();
}

#[test]
fn handles_are_values_for_tasks() {
    cluster();
    let c = Counter::remote(0).unwrap();
    let tasks: Vec<ObjectRef<Vec<i64>>> = (1..=4)
        .map(|t| hit::remote(c.clone(), t, 50))
        .collect::<Result<_>>()
        .unwrap();
    for seen in oxray::get_all(&tasks).unwrap() {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "each caller sees its calls in order"
        );
    }
    let log = oxray::get(&c.log().unwrap()).unwrap();
    assert_eq!(log.len(), 200);
    for t in 1..=4 {
        assert_eq!(
            log.iter().filter(|v| **v == t).count(),
            50,
            "exact count for caller {t}"
        );
    }
    let back = oxray::get(&pass_back::remote(c.clone()).unwrap()).unwrap();
    assert_eq!(back.id(), c.id());
    assert_eq!(oxray::get(&back.incr(0).unwrap()).unwrap(), 500);
    oxray::kill(&c).unwrap();
}

/// An actor built from other actors' handles.
#[oxray::actor]
pub struct Relay {
    targets: Vec<ActorHandle<Counter>>,
}

#[oxray::actor]
impl Relay {
    fn new(targets: Vec<ActorHandle<Counter>>) -> Self {
        Relay { targets }
    }

    /// Adds `by` to every target; returns their new values.
    fn incr_all(&self, by: i64) -> Vec<i64> {
        let refs: Vec<_> = self
            .targets
            .iter()
            .map(|t| t.incr(by).expect("call"))
            .collect();
        oxray::get_all(&refs).expect("get")
    }
}

/// Handles in a constructor's arguments decode in the new actor process even when its start
/// message arrives right after its registration (a race once lost in most runs of this test).
#[test]
fn actor_handles_can_be_constructor_arguments() {
    cluster();
    let c = Counter::remote(0).unwrap();
    let relays: Vec<ActorHandle<Relay>> = (0..24)
        .map(|_| Relay::remote(vec![c.clone()]))
        .collect::<Result<_>>()
        .unwrap();
    for (i, r) in relays.iter().enumerate() {
        let seen = oxray::get(&r.incr_all(1).unwrap()).unwrap();
        assert_eq!(seen, vec![i as i64 + 1], "relay {i} reached the counter");
    }
    for r in &relays {
        oxray::kill(r).unwrap();
    }
    oxray::kill(&c).unwrap();
}

#[test]
fn method_errors_fail_only_that_call() {
    cluster();
    let c = Counter::remote(1).unwrap();
    match oxray::get(&c.fail("panic".to_string()).unwrap()) {
        Err(Error::TaskFailed { message, .. }) => {
            assert!(message.contains("method panicked"), "{message}")
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    match oxray::get(&c.fail("nope".to_string()).unwrap()) {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("method refused: nope")),
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert_eq!(
        oxray::get(&c.incr(1).unwrap()).unwrap(),
        2,
        "the actor kept its state"
    );
    oxray::kill(&c).unwrap();
}

#[test]
fn named_actors_in_namespaces() {
    cluster();
    let a = Counter::options().name("named-a").remote(10).unwrap();
    let found = oxray::get_actor::<Counter>("named-a").unwrap();
    assert_eq!(oxray::get(&found.incr(1).unwrap()).unwrap(), 11);
    // Another namespace has its own names.
    let b = Counter::options()
        .name("named-a")
        .namespace("other")
        .remote(20)
        .unwrap();
    let found_b = oxray::get_actor_in::<Counter>("named-a", "other").unwrap();
    assert_eq!(oxray::get(&found_b.incr(1).unwrap()).unwrap(), 21);
    // A taken name is refused clearly, with its own error.
    let err = Counter::options().name("named-a").remote(0).unwrap_err();
    assert!(matches!(err, Error::NameTaken { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    // Unless the live one is wanted: get_if_exists gives it (its state shows: 11, not 0).
    let same = Counter::options()
        .name("named-a")
        .get_if_exists(true)
        .remote(0)
        .unwrap();
    assert_eq!(oxray::get(&same.incr(1).unwrap()).unwrap(), 12);
    // The wrong class is a type error, an unknown name an error.
    assert!(matches!(
        oxray::get_actor::<Latch>("named-a"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(oxray::get_actor::<Counter>("no-such-actor").is_err());
    // A dead actor's name is free again.
    oxray::kill(&a).unwrap();
    assert!(oxray::get_actor::<Counter>("named-a").is_err());
    let again = Counter::options().name("named-a").remote(5).unwrap();
    assert_eq!(oxray::get(&again.incr(0).unwrap()).unwrap(), 5);
    oxray::kill(&again).unwrap();
    oxray::kill(&b).unwrap();
}

#[test]
fn a_restart_resets_state_and_is_visible() {
    cluster();
    let c = Counter::options().max_restarts(1).remote(100).unwrap();
    assert_eq!(oxray::get(&c.incr(5).unwrap()).unwrap(), 105);
    assert!(!oxray::get(&c.restarted().unwrap()).unwrap());
    let pid = oxray::get(&c.pid().unwrap()).unwrap();
    oxray::kill_with_restart(&c).unwrap();
    // Calls made during the restart wait for it.
    assert_eq!(
        oxray::get(&c.incr(1).unwrap()).unwrap(),
        101,
        "state was reset"
    );
    assert!(oxray::get(&c.restarted().unwrap()).unwrap());
    assert_ne!(oxray::get(&c.pid().unwrap()).unwrap(), pid);
    assert_eq!(oxray::actor_info(&c).unwrap().restarts, 1);
    // The budget is spent: the next crash is final.
    let pid2 = oxray::get(&c.pid().unwrap()).unwrap();
    // SAFETY: kill(2) on this test's own actor process.
    assert_eq!(unsafe { libc::kill(pid2 as i32, libc::SIGKILL) }, 0);
    assert!(eventually(Duration::from_secs(10), || {
        oxray::actor_info(&c).is_ok_and(|i| i.state == ActorState::Dead)
    }));
    match oxray::get(&c.incr(1).unwrap()) {
        Err(Error::ActorDied { message }) => assert!(message.contains("max_restarts"), "{message}"),
        other => panic!("expected ActorDied, got {other:?}"),
    }
}

#[test]
fn a_killed_actor_process_restarts_and_retries_calls() {
    cluster();
    let c = Counter::options()
        .max_restarts(-1)
        .max_task_retries(-1)
        .remote(0)
        .unwrap();
    let pid = oxray::get(&c.pid().unwrap()).unwrap();
    // SAFETY: kill(2) on this test's own actor process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let r = c.incr(3).unwrap();
    assert_eq!(oxray::get_timeout(&r, Duration::from_secs(30)).unwrap(), 3);
    assert!(!alive(pid));
    oxray::kill(&c).unwrap();
}

#[test]
fn kill_and_exit_actor_end_it_for_good() {
    cluster();
    let c = Counter::options().max_restarts(5).remote(0).unwrap();
    let pid = oxray::get(&c.pid().unwrap()).unwrap();
    oxray::kill(&c).unwrap();
    match oxray::get(&c.incr(1).unwrap()) {
        Err(Error::ActorDied { message }) => assert!(message.contains("killed"), "{message}"),
        other => panic!("expected ActorDied, got {other:?}"),
    }
    assert!(
        eventually(Duration::from_secs(10), || !alive(pid)),
        "no restart after kill"
    );

    let e = Counter::options().max_restarts(5).remote(0).unwrap();
    let epid = oxray::get(&e.pid().unwrap()).unwrap();
    assert!(matches!(
        oxray::get(&e.quit().unwrap()),
        Err(Error::ActorDied { .. })
    ));
    assert!(
        eventually(Duration::from_secs(10), || !alive(epid)),
        "exit_actor ends the process"
    );
    match oxray::get(&e.incr(1).unwrap()) {
        Err(Error::ActorDied { message }) => assert!(message.contains("exit_actor"), "{message}"),
        other => panic!("expected ActorDied, got {other:?}"),
    }
}

#[test]
fn a_failing_constructor_is_reported() {
    cluster();
    let b = Broken::options().max_restarts(3).remote(true).unwrap();
    match oxray::get_timeout(&b.ping().unwrap(), Duration::from_secs(20)) {
        Err(Error::ActorDied { message }) => assert!(message.contains("cannot build"), "{message}"),
        other => panic!("expected ActorDied, got {other:?}"),
    }
    let ok = Broken::remote(false).unwrap();
    assert_eq!(oxray::get(&ok.ping().unwrap()).unwrap(), 1);
    oxray::kill(&ok).unwrap();
}

#[test]
fn max_concurrency_runs_calls_in_parallel() {
    cluster();
    let l = Latch::options().max_concurrency(4).remote(4).unwrap();
    let refs: Vec<ObjectRef<u32>> = (0..4).map(|_| l.meet()).collect::<Result<_>>().unwrap();
    for r in &refs {
        assert_eq!(oxray::get_timeout(r, Duration::from_secs(20)).unwrap(), 4);
    }
    oxray::kill(&l).unwrap();
    // Needing 3 at once with only 2 allowed: a timeout, not a hung runtime.
    let small = Latch::options().max_concurrency(2).remote(3).unwrap();
    let stuck: Vec<ObjectRef<u32>> = (0..3).map(|_| small.meet()).collect::<Result<_>>().unwrap();
    assert!(matches!(
        oxray::get_timeout(&stuck[0], Duration::from_millis(500)),
        Err(Error::Timeout { .. })
    ));
    oxray::kill(&small).unwrap();
    assert!(matches!(
        oxray::get(&stuck[0]),
        Err(Error::ActorDied { .. })
    ));
}

#[test]
fn infeasible_actor_resources_pend() {
    cluster();
    let a = Counter::options().resource("tpu", 1.0).remote(0).unwrap();
    let r = a.incr(1).unwrap();
    assert!(matches!(
        oxray::get_timeout(&r, Duration::from_millis(300)),
        Err(Error::Timeout { .. })
    ));
    assert_eq!(oxray::actor_info(&a).unwrap().state, ActorState::Pending);
    oxray::kill(&a).unwrap();
    assert!(matches!(oxray::get(&r), Err(Error::ActorDied { .. })));
}

/// An actor whose constructor may fail, and which notes whether it was built as a restart.
#[oxray::actor]
pub struct Picky {
    built_as_restart: bool,
}

#[oxray::actor]
impl Picky {
    fn new(ok: bool) -> Result<Self, String> {
        if ok {
            Ok(Picky {
                built_as_restart: oxray::was_restarted(),
            })
        } else {
            Err("refusing to start: ok was false".into())
        }
    }

    fn built_as_restart(&self) -> bool {
        self.built_as_restart
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

/// A constructor returning `Result<Self, E>`: `Ok` gives a working actor, `Err` ends it with
/// `ActorDied` carrying the error's text (it used to fail every call with "another class").
/// In a restarted actor's constructor `was_restarted()` is true (it was always false there).
#[test]
fn fallible_constructors_and_was_restarted_in_the_constructor() {
    cluster();
    let refused = Picky::remote(false).unwrap();
    match oxray::get(&refused.pid().unwrap()) {
        Err(Error::ActorDied { message }) => {
            assert!(
                message.contains("refusing to start: ok was false"),
                "{message}"
            )
        }
        other => panic!("expected ActorDied, got {other:?}"),
    }
    let p = Picky::options().max_restarts(1).remote(true).unwrap();
    assert!(!oxray::get(&p.built_as_restart().unwrap()).unwrap());
    let pid = oxray::get(&p.pid().unwrap()).unwrap();
    oxray::kill_with_restart(&p).unwrap();
    assert_ne!(oxray::get(&p.pid().unwrap()).unwrap(), pid);
    assert!(
        oxray::get(&p.built_as_restart().unwrap()).unwrap(),
        "was_restarted() was false in the restarted actor's constructor"
    );
}

/// An actor that reports the runtime context of its calls.
#[oxray::actor]
pub struct Introspect {}

#[oxray::actor]
impl Introspect {
    fn new() -> Self {
        Introspect {}
    }

    /// [actor id, task id].
    fn who(&self) -> Vec<String> {
        let c = oxray::context().expect("context");
        vec![
            c.actor_id.map(|a| a.to_string()).unwrap_or_default(),
            c.task_id.map(|t| t.to_string()).unwrap_or_default(),
        ]
    }
}

/// Inside an actor call the context names the actor and the call.
#[test]
fn the_runtime_context_names_the_actor_and_the_call() {
    cluster();
    let a = Introspect::remote().unwrap();
    let r = a.who().unwrap();
    let seen = oxray::get(&r).unwrap();
    assert_eq!(seen[0], oxray::actor_info(&a).unwrap().id.to_string());
    assert_eq!(seen[1], r.id().to_string());
}

/// A worker for the pool test: doubles, slowly, and says which process did it.
#[oxray::actor]
pub struct Doubler {}

#[oxray::actor]
impl Doubler {
    fn new() -> Self {
        Doubler {}
    }

    /// (2x, pid).
    fn double(&self, x: i64) -> (i64, u32) {
        std::thread::sleep(Duration::from_millis(20));
        (2 * x, std::process::id())
    }
}

/// `ActorPool` over 4 actors: `map` gives 20 results in order, using every actor; unordered
/// gives the same set; `submit`/`get_next` with more calls than actors queue the rest.
#[test]
fn an_actor_pool_spreads_calls_and_keeps_order() {
    cluster();
    let actors: Vec<_> = (0..4).map(|_| Doubler::remote().unwrap()).collect();
    let mut pool = oxray::ActorPool::new(actors);
    let results: Vec<(i64, u32)> = pool
        .map(|a, x| a.double(x), 0..20)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..20).map(|x| 2 * x).collect::<Vec<_>>()
    );
    let pids: std::collections::BTreeSet<u32> = results.iter().map(|r| r.1).collect();
    assert_eq!(pids.len(), 4, "every actor took work: {pids:?}");
    let mut unordered: Vec<i64> = pool
        .map_unordered(|a, x| a.double(x), 100..110)
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, (100..110).map(|x| 2 * x).collect::<Vec<_>>());
    for x in 0..6 {
        pool.submit(move |a| a.double(x)).unwrap();
    }
    // One taken out of order, then the rest in order around it.
    let any = pool.get_next_unordered().unwrap().unwrap().0;
    let mut rest = Vec::new();
    while let Some(r) = pool.get_next() {
        rest.push(r.unwrap().0);
    }
    assert!(
        rest.windows(2).all(|w| w[0] < w[1]),
        "out of order: {rest:?}"
    );
    rest.push(any);
    rest.sort_unstable();
    assert_eq!(rest, vec![0, 2, 4, 6, 8, 10]);
    assert!(!pool.has_next());
}

/// Takes a handle (so it was passed on) and calls it.
#[oxray::remote]
fn bump(c: ActorHandle<Counter>) -> i64 {
    oxray::get(&c.incr(1).expect("call")).expect("value")
}

/// Ray's actor lifetime: when its creator drops every handle (none passed on), a
/// non-detached actor ends, after its pending calls returned; a detached one, and one whose
/// handle was passed to a task, stay.
#[test]
fn an_actor_ends_when_its_creator_drops_every_handle() {
    cluster();
    // A temporary handle with a call pending: the call still returns.
    assert_eq!(
        oxray::get(&Counter::remote(5).unwrap().incr(1).unwrap()).unwrap(),
        6
    );
    let name = format!("kept-{}", std::process::id());
    let detached = Counter::options()
        .name(name.clone())
        .lifetime(oxray::Lifetime::Detached)
        .remote(0)
        .unwrap();
    let detached_id = oxray::actor_info(&detached).unwrap().id;
    let shared = Counter::remote(10).unwrap();
    let shared_id = oxray::actor_info(&shared).unwrap().id;
    assert_eq!(
        oxray::get(&bump::remote(shared.clone()).unwrap()).unwrap(),
        11
    );
    let plain = Counter::remote(0).unwrap();
    let plain_id = oxray::actor_info(&plain).unwrap().id;
    let copy = plain.clone();
    let plain_pid = oxray::get(&plain.pid().unwrap()).unwrap();
    drop(detached);
    drop(shared);
    drop(plain);
    assert!(alive(plain_pid), "a clone still holds it");
    drop(copy);
    assert!(
        crate::pid_exit::exits_within(plain_pid, Duration::from_secs(20)),
        "the actor outlived its last handle"
    );
    // The raylet took the releases in order: by now the others would have ended too.
    let status = oxray::status().unwrap();
    let actor = |id| {
        status
            .actors
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(actor(detached_id).state, ActorState::Alive);
    assert_eq!(actor(shared_id).state, ActorState::Alive);
    let ended = actor(plain_id);
    assert_eq!(ended.state, ActorState::Dead);
    assert!(
        ended.death.contains("dropped every handle"),
        "{}",
        ended.death
    );
    // Clean up the detached one.
    let kept = oxray::get_actor::<Counter>(&name).unwrap();
    oxray::kill(&kept).unwrap();
}

/// Two drivers racing to make the same named actor with `get_if_exists` get one actor: both
/// see the same id, and their two `add(1)` calls land on it (1 and 2).
#[test]
fn get_if_exists_from_two_racing_drivers_gives_one_actor() {
    cluster();
    let guard = oxray::init().unwrap();
    let address = guard.address().to_owned();
    let name = format!("racer-{}", std::process::id());
    let outs: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| crate::processes::run(&["if-exists", &name], Some(&address))))
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("driver"))
            .collect()
    });
    let value = |out: &str, key: &str| crate::processes::value(out, key).unwrap_or("").to_owned();
    assert_eq!(
        value(&outs[0], "actor"),
        value(&outs[1], "actor"),
        "{outs:?}"
    );
    let mut added: Vec<String> = outs.iter().map(|o| value(o, "added")).collect();
    added.sort();
    assert_eq!(added, vec!["1", "2"], "{outs:?}");
    // Found once more, then killed (it is detached).
    let last = crate::processes::run(&["if-exists", &name, "kill"], Some(&address));
    assert_eq!(value(&last, "added"), "3", "{last}");
    drop(guard);
}

/// Counts this process's threads.
#[oxray::actor]
pub struct Target {
    calls: u64,
}

#[oxray::actor]
impl Target {
    fn new() -> Self {
        Target { calls: 0 }
    }

    fn hit(&mut self) -> u64 {
        self.calls += 1;
        self.calls
    }

    fn threads(&self) -> usize {
        std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
    }
}

/// Calls a target actor from its own process.
#[oxray::actor]
pub struct Caller {}

#[oxray::actor]
impl Caller {
    fn new() -> Self {
        Caller {}
    }

    fn call(&self, target: ActorHandle<Target>) -> u64 {
        oxray::get(&target.hit().expect("call")).expect("result")
    }
}

/// An actor called by 48 processes, whose connections all stay open, does not take a thread
/// per caller: connections beyond the first are read on one event loop and handled by a pool
/// of at most `MAX_THREADS` (32) threads while busy. (Served a thread each, it had 50+.)
#[test]
fn an_actor_called_by_many_processes_keeps_its_threads_bounded() {
    cluster();
    let target = Target::remote().expect("target");
    let callers: Vec<ActorHandle<Caller>> =
        (0..48).map(|_| Caller::remote().expect("caller")).collect();
    let calls: Vec<_> = callers
        .iter()
        .map(|c| c.call(target.clone()).expect("submit"))
        .collect();
    let mut seen: Vec<u64> = oxray::get_all(&calls).expect("calls");
    seen.sort_unstable();
    assert_eq!(seen, (1..=48).collect::<Vec<u64>>(), "each call ran once");
    let threads = oxray::get(&target.threads().expect("submit")).expect("threads");
    println!("the target has {threads} threads");
    assert!(
        (1..=40).contains(&threads),
        "{threads} threads for 49 connections"
    );
    for c in &callers {
        oxray::kill(c).expect("kill a caller");
    }
    oxray::kill(&target).expect("kill the target");
}
