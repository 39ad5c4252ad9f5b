//! `cluster-work`: the cross-node workload of the cluster tests, run by a driver attached to
//! the head of a three-node cluster (`OXRAY_ADDRESS`). Node `b` has resource `b`, node `c` has
//! `gpu`; the head has one CPU. Prints `key value` lines the test checks.

use std::collections::BTreeSet;
use std::time::Duration;

use oxray::prelude::*;

/// Sleeps, then says where it ran.
#[oxray::remote]
fn where_am_i(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    oxray::node_id().expect("node id")
}

/// Prints a line, which reaches the driver prefixed with its pid and node.
#[oxray::remote]
fn say_hello() -> u32 {
    println!("hello from the gpu node");
    std::process::id()
}

/// A big object made where the task runs: `n` numbers from `seed`.
#[oxray::remote]
fn make_numbers(n: u64, seed: u64) -> Vec<u64> {
    (0..n)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed)
        .collect()
}

/// Reads a big object in place where the task runs; returns its checksum and the node.
#[oxray::remote]
fn checksum(xs: ObjectView<Vec<u64>>) -> (u64, String) {
    let sum = fold_sum(xs.iter().map(|x| x.to_native()));
    (sum, oxray::node_id().expect("node id"))
}

/// A counter that says where it lives.
#[oxray::actor]
pub struct Tally {
    n: i64,
}

#[oxray::actor]
impl Tally {
    fn new(start: i64) -> Self {
        Tally { n: start }
    }

    fn add(&mut self, by: i64) -> i64 {
        self.n += by;
        self.n
    }

    fn node(&self) -> String {
        oxray::node_id().expect("node id")
    }

    fn restarted(&self) -> bool {
        oxray::was_restarted()
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Waits `ms`, then says which process ran it.
    fn slow_pid(&self, ms: u64) -> u32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }
}

/// Calls a tally actor from a task (wherever the task runs).
#[oxray::remote]
fn add_from_task(t: ActorHandle<Tally>, by: i64) -> i64 {
    let r = t.add(by).expect("call");
    oxray::get(&r).expect("result")
}

/// An order-sensitive checksum.
/// Waits (up to 30 s) until at most `n` nodes are alive, and returns how many are. The head's
/// view is the only place a driver learns of a death, and it offers no notification, so this
/// asks it again every 50 ms.
fn alive_at_most(n: usize) -> oxray::Result<usize> {
    let alive =
        || -> oxray::Result<usize> { Ok(oxray::nodes()?.iter().filter(|n| n.alive).count()) };
    let started = std::time::Instant::now();
    while alive()? > n && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    alive()
}

/// Returns when the test is done with this process: its stdin is a pipe the test holds, which
/// closes when the test kills this process or ends.
fn until_killed() {
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
}

fn fold_sum(xs: impl Iterator<Item = u64>) -> u64 {
    xs.fold(0u64, |acc, x| acc.rotate_left(5) ^ x)
}

fn sum_of(n: u64, seed: u64) -> u64 {
    fold_sum((0..n).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed))
}

pub fn run() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let alive = oxray::nodes()?.iter().filter(|n| n.alive).count();
    println!("alive {alive}");
    println!("driver-node {}", oxray::node_id()?);

    // More work than the head's one CPU: it spreads.
    let refs: Vec<_> = (0..16)
        .map(|_| where_am_i::remote(700))
        .collect::<oxray::Result<_>>()?;
    let ran: BTreeSet<String> = oxray::get_all(&refs)?.into_iter().collect();
    println!("spread {}", ran.into_iter().collect::<Vec<_>>().join(","));

    // A custom resource only one node has routes the work there.
    let gpu = where_am_i::options().resource("gpu", 1.0).remote(0)?;
    println!("gpu-node {}", oxray::get(&gpu)?);
    let hello = say_hello::options().resource("gpu", 1.0).remote()?;
    println!("hello-pid {}", oxray::get(&hello)?);

    // 256 MiB made on node b, read in place on node c, and fetched by the driver.
    let n = 32 << 20;
    let big = make_numbers::options().resource("b", 1.0).remote(n, 7)?;
    let (sum, at) = oxray::get(&checksum::options().resource("gpu", 1.0).remote(&big)?)?;
    println!("big-read-on {at}");
    println!("big-sum-ok {}", sum == sum_of(n, 7));
    // A task reading it needs only a CPU, and the head has one free: still it goes to b, which
    // holds the object and has room (locality before local-first).
    let (near_sum, near_at) = oxray::get(&checksum::remote(&big)?)?;
    println!("near-read-on {near_at}");
    println!("near-sum-ok {}", near_sum == sum_of(n, 7));
    let here = oxray::get_view(&big)?;
    let local_sum = fold_sum(here.iter().map(|x| x.to_native()));
    println!(
        "big-driver-ok {}",
        here.len() as u64 == n && local_sum == sum_of(n, 7)
    );
    drop(here);

    // An actor placed on node b, called from the driver and from tasks on other nodes.
    let tally = Tally::options().resource("b", 1.0).remote(0)?;
    for _ in 0..10 {
        tally.add(1)?;
    }
    println!("actor-node {}", oxray::get(&tally.node()?)?);
    let from_tasks: Vec<_> = (0..4)
        .map(|_| {
            add_from_task::options()
                .resource("gpu", 0.25)
                .remote(tally.clone(), 10)
        })
        .collect::<oxray::Result<_>>()?;
    oxray::get_all(&from_tasks)?;
    println!("actor-total {}", oxray::get(&tally.add(0)?)?);
    println!("done");
    Ok(())
}

/// Sleeps `ms`, then says where it ran.
#[oxray::remote]
fn nap_where(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    oxray::node_id().expect("node id")
}

/// `cluster-fault`: makes an object and two actors on node `b` and starts long tasks on every
/// node; the test kills node `b` after `submitted`. Every task must still finish (retried
/// elsewhere), the object whose only copy was on `b` must be reported lost, not hang, the actor
/// with a restart left must start again on another node, and the one without must be dead.
pub fn fault() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let n = 1 << 20;
    let big = make_numbers::options().resource("b", 1.0).remote(n, 3)?;
    let (ready, _) = oxray::wait(std::slice::from_ref(&big), 1, Some(Duration::from_secs(60)))?;
    println!("big-ready {}", ready.len());
    // Neither fits on the head (1 CPU); node b has the most free CPUs (6, less 1 if the lease
    // of `big` lingers, against 2 on c) even after taking the first: both go there.
    let keep = Tally::options()
        .num_cpus(2.0)
        .max_restarts(1)
        .max_task_retries(-1)
        .remote(5)?;
    let lone = Tally::options().num_cpus(1.5).remote(0)?;
    println!("lone-node {}", oxray::get(&lone.node()?)?);
    println!("keep-node {}", oxray::get(&keep.node()?)?);
    println!("keep-before {}", oxray::get(&keep.add(10)?)?);
    let refs: Vec<_> = (0..10)
        .map(|_| nap_where::remote(2000))
        .collect::<oxray::Result<_>>()?;
    std::thread::sleep(Duration::from_millis(700));
    println!("submitted");
    let ran = oxray::get_all(&refs)?;
    println!("tasks-done {}", ran.len());
    println!("ran-on {}", ran.join(","));
    let started = std::time::Instant::now();
    while oxray::nodes()?.iter().filter(|n| n.alive).count() > 2 {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match oxray::get_timeout(&big, Duration::from_secs(20)) {
        Ok(v) => println!("big-got {}", v.len()),
        Err(e @ Error::ObjectLost { .. }) => println!("big-lost {e}"),
        Err(e) => println!("big-error {e:?}"),
    }
    // Started again from its constructor's arguments on a live node.
    let wait = Duration::from_secs(40);
    println!("keep-after {}", oxray::get_timeout(&keep.add(1)?, wait)?);
    println!(
        "keep-node-after {}",
        oxray::get_timeout(&keep.node()?, wait)?
    );
    println!(
        "keep-restarted {}",
        oxray::get_timeout(&keep.restarted()?, wait)?
    );
    match lone.add(1).and_then(|r| oxray::get_timeout(&r, wait)) {
        Ok(v) => println!("lone-after {v}"),
        Err(e @ Error::ActorDied { .. }) => println!("lone-dead {e}"),
        Err(e) => println!("lone-error {e:?}"),
    }
    println!("done");
    Ok(())
}

/// `named-elsewhere`: run on another node than the driver that ran `detached-make`. Finds its
/// detached actor by name, cannot take the name for a new actor, kills the actor (which frees
/// the name) and takes the name for a new one.
pub fn named_elsewhere() -> oxray::Result<()> {
    use crate::Keeper;
    let _cluster = oxray::init()?;
    let keeper = oxray::get_actor_in::<Keeper>("keeper", "shared")?;
    println!("added {}", oxray::get(&keeper.add(1)?)?);
    match oxray::get_actor_in::<Keeper>("temp", "shared") {
        Ok(_) => println!("temp found"),
        Err(e) => println!("temp-error {e}"),
    }
    match Keeper::options()
        .name("keeper")
        .namespace("shared")
        .remote(0)
    {
        Ok(_) => println!("clash-made"),
        Err(e) => println!("clash-refused {e}"),
    }
    // get_if_exists: the actor made on the head, found from this node (42 + 1).
    let same = Keeper::options()
        .name("keeper")
        .namespace("shared")
        .get_if_exists(true)
        .remote(0)?;
    println!("if-exists {}", oxray::get(&same.add(1)?)?);
    oxray::kill(&keeper)?;
    match oxray::get_actor_in::<Keeper>("keeper", "shared") {
        Ok(_) => println!("after-kill found"),
        Err(e) => println!("after-kill-error {e}"),
    }
    let again = Keeper::options()
        .name("keeper")
        .namespace("shared")
        .remote(7)?;
    println!("retaken {}", oxray::get(&again.add(1)?)?);
    Ok(())
}

/// `own-elsewhere`: makes an 8 MiB object on node `b` (owned by this driver), says `made`, then
/// waits to be killed; the test checks that node `b` frees it once this process is gone.
pub fn own_elsewhere() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let big = make_numbers::options()
        .resource("b", 1.0)
        .remote(1 << 20, 5)?;
    let (ready, _) = oxray::wait(std::slice::from_ref(&big), 1, Some(Duration::from_secs(60)))?;
    println!("made {}", ready.len());
    until_killed();
    Ok(())
}

/// `cluster-rebuild`: makes a 8 MiB object with a task needing resource `x` (nodes b and c have
/// it, two each), says where it was made, and once the test killed that node (one node fewer
/// alive) reads it: the task runs again on the other node and the contents are the same.
pub fn rebuild() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let n = 1 << 20;
    let obj = make_numbers::options()
        .resource("x", 1.0)
        .max_retries(2)
        .remote(n, 11)?;
    // Read where it lives (locality), so no other node holds a copy.
    let (sum, at) = oxray::get(&checksum::options().resource("x", 1.0).remote(&obj)?)?;
    println!("made-on {at}");
    println!("made-sum-ok {}", sum == sum_of(n, 11));
    println!("alive-after-kill {}", alive_at_most(2)?);
    let numbers = oxray::get_timeout(&obj, Duration::from_secs(60))?;
    println!(
        "rebuilt-sum-ok {}",
        numbers.len() as u64 == n && fold_sum(numbers.into_iter()) == sum_of(n, 11)
    );
    let (_, now_at) = oxray::get(&checksum::options().resource("x", 1.0).remote(&obj)?)?;
    println!("rebuilt-on {now_at}");
    println!("done");
    Ok(())
}

/// Adds one to every number, reading its argument in place.
#[oxray::remote]
fn plus_one(xs: ObjectView<Vec<u64>>) -> Vec<u64> {
    xs.iter().map(|x| x.to_native().wrapping_add(1)).collect()
}

/// `cluster-rebuild-chain`: `a`, `b = plus_one(a)`, `c = plus_one(b)`, 8 MiB each, all needing
/// resource `x` (so all on node b or c, together: each task goes where its argument is); says
/// where each was made (`made-on` last, on which the test kills that node), then reads `c`:
/// `a` and `b` are made again first, and `c` holds what it should.
pub fn rebuild_chain() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let n = 1 << 20;
    let a = make_numbers::options()
        .resource("x", 1.0)
        .max_retries(2)
        .remote(n, 5)?;
    let b = plus_one::options()
        .resource("x", 1.0)
        .max_retries(2)
        .remote(&a)?;
    let c = plus_one::options()
        .resource("x", 1.0)
        .max_retries(2)
        .remote(&b)?;
    let on = |r: &ObjectRef<Vec<u64>>| -> oxray::Result<String> {
        Ok(oxray::get(&checksum::options().resource("x", 1.0).remote(r)?)?.1)
    };
    println!("a-on {}", on(&a)?);
    println!("b-on {}", on(&b)?);
    println!("made-on {}", on(&c)?);
    println!("alive-after-kill {}", alive_at_most(2)?);
    let numbers = oxray::get_timeout(&c, Duration::from_secs(90))?;
    let want =
        fold_sum((0..n).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 5).wrapping_add(2)));
    println!(
        "rebuilt-sum-ok {}",
        numbers.len() as u64 == n && fold_sum(numbers.into_iter()) == want
    );
    println!("done");
    Ok(())
}

/// `cluster-larger`: objects larger than the stores that hold them, across nodes (the member
/// with resource `x` has a 32 MiB store, the head 64 MiB). A 48 MiB vector put on the head
/// and read by a task on the member (pulled into a file there); an 80 MiB result made on the
/// member (in a file there) and read by the driver on the head (pulled from that file into a
/// file here). Prints whether each came back exact and where the tasks ran.
pub fn larger() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let here = oxray::node_id()?;
    let n = 6 << 20; // 48 MiB of u64
    let put = oxray::put(&make_numbers(n, 11))?;
    let want = fold_sum(make_numbers(n, 11).into_iter());
    let (sum, on) = oxray::get(&checksum::options().resource("x", 1.0).remote(&put)?)?;
    println!("pulled-sum-ok {}", sum == want);
    println!("read-elsewhere {}", on != here);
    let m = 10 << 20; // 80 MiB
    let made = make_numbers::options().resource("x", 1.0).remote(m, 12)?;
    let numbers = oxray::get(&made)?;
    println!(
        "made-elsewhere-exact {}",
        numbers.len() as u64 == m
            && fold_sum(numbers.into_iter()) == fold_sum(make_numbers(m, 12).into_iter())
    );
    println!("done");
    Ok(())
}

/// Reads a borrowed ref (its owner is the driver) and says what it found and where it ran.
#[oxray::remote]
fn read_borrowed(refs: Vec<ObjectRef<Vec<u64>>>) -> (bool, u64, String) {
    let here = oxray::node_id().unwrap_or_default();
    match refs.first().map(oxray::get) {
        Some(Ok(xs)) => (true, fold_sum(xs.into_iter()), here),
        Some(Err(e)) => {
            eprintln!("read_borrowed: {e}");
            (false, 0, here)
        }
        None => (false, 0, here),
    }
}

/// `cluster-rebuild-borrowed`: makes an 8 MiB object with a task needing resource `x` (nodes b
/// and c), says where (`made-on`; the test kills that node), then hands the ref, inside a
/// vector, to a task on the head (resource `h`): that task is a borrower, and its read finds
/// the copy lost, so it asks the driver (the owner) to make the object again. Prints whether
/// the borrower read the right numbers.
pub fn rebuild_borrowed() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let n = 1 << 20;
    let obj = make_numbers::options()
        .resource("x", 1.0)
        .max_retries(2)
        .remote(n, 13)?;
    let (_, at) = oxray::get(&checksum::options().resource("x", 1.0).remote(&obj)?)?;
    println!("made-on {at}");
    println!("alive-after-kill {}", alive_at_most(2)?);
    let (ok, sum, on) = oxray::get_timeout(
        &read_borrowed::options()
            .resource("h", 1.0)
            .remote(vec![obj.clone()])?,
        Duration::from_secs(90),
    )?;
    println!("borrower-read {ok}");
    println!("borrower-sum-ok {}", sum == sum_of(n, 13));
    println!("borrower-on-head {}", on == oxray::node_id()?);
    println!("done");
    Ok(())
}

/// `if-exists NAME [kill]`: gets or makes the detached actor NAME in namespace "race" with
/// `get_if_exists`, prints its id and the value of one `add(1)`; with `kill`, kills it.
pub fn if_exists(name: &str, kill: bool) -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().namespace("race"))?;
    let t = Tally::options()
        .name(name)
        .lifetime(oxray::Lifetime::Detached)
        .get_if_exists(true)
        .remote(0)?;
    println!("actor {}", oxray::actor_info(&t)?.id);
    println!("added {}", oxray::get(&t.add(1)?)?);
    if kill {
        oxray::kill(&t)?;
    }
    Ok(())
}

/// `strategies B C`: SPREAD and node affinity on a three-node cluster whose head has room for
/// all the work (so only SPREAD sends it elsewhere); the test kills node `B` (its id) when this
/// prints `kill-b`.
pub fn strategies(b: &str, c: &str) -> oxray::Result<()> {
    use oxray::SchedulingStrategy;
    let _cluster = oxray::init()?;
    let parse = |id: &str| -> oxray::Result<oxray::NodeId> {
        id.parse().map_err(|e| oxray::Error::Config {
            message: format!("not a node id: {id}: {e}"),
        })
    };
    let (b, c) = (parse(b)?, parse(c)?);
    let pin = |node_id, soft| SchedulingStrategy::NodeAffinity { node_id, soft };
    // Pinned to b and to c though the driver's node has room (this also brings the driver's
    // executable to both, so the SPREAD work below starts as fast there as here).
    let on_b = where_am_i::options()
        .scheduling_strategy(pin(b, false))
        .remote(0)?;
    let on_c = where_am_i::options()
        .scheduling_strategy(pin(c, true))
        .remote(0)?;
    println!("pinned-on {}", oxray::get(&on_b)?);
    println!("soft-pinned-on {}", oxray::get(&on_c)?);
    let spread: Vec<_> = (0..30)
        .map(|_| {
            where_am_i::options()
                .scheduling_strategy(SchedulingStrategy::Spread)
                .remote(200)
        })
        .collect::<oxray::Result<_>>()?;
    let ran: BTreeSet<String> = oxray::get_all(&spread)?.into_iter().collect();
    println!("spread {}", ran.into_iter().collect::<Vec<_>>().join(","));
    let pin = |soft| SchedulingStrategy::NodeAffinity { node_id: b, soft };
    let tally = Tally::options()
        .scheduling_strategy(pin(false))
        .max_restarts(5)
        .remote(0)?;
    println!("actor-pinned-on {}", oxray::get(&tally.node()?)?);
    println!("kill-b");
    alive_at_most(2)?;
    let hard = where_am_i::options()
        .scheduling_strategy(pin(false))
        .remote(0)
        .and_then(|r| oxray::get(&r));
    match hard {
        Err(oxray::Error::Unschedulable { message }) => {
            println!("hard-dead unschedulable {message}")
        }
        other => println!("hard-dead other {other:?}"),
    }
    let soft = where_am_i::options()
        .scheduling_strategy(pin(true))
        .remote(0)?;
    println!("soft-dead-ran-on {}", oxray::get(&soft)?);
    match Tally::options().scheduling_strategy(pin(false)).remote(0) {
        Err(oxray::Error::Unschedulable { .. }) => println!("actor-hard-dead unschedulable"),
        other => println!("actor-hard-dead other {:?}", other.map(|_| ())),
    }
    // The pinned actor died with its node, restarts left or not.
    match tally.add(1).and_then(|r| oxray::get(&r)) {
        Err(oxray::Error::ActorDied { .. }) => println!("pinned-actor died"),
        other => println!("pinned-actor other {other:?}"),
    }
    println!("done");
    Ok(())
}

/// `placement`: placement groups on a three-node cluster. A STRICT_SPREAD group of 4 pends
/// until the test adds a fourth node (`join-d`); then an actor in a SPREAD group's bundle on
/// a member is restarted elsewhere when the test kills that member (`kill NODE`).
pub fn placement() -> oxray::Result<()> {
    use oxray::{bundle, PlacementGroupState, PlacementStrategy};
    let _cluster = oxray::init()?;
    let one = || bundle(&[("CPU", 1.0)]);
    let four = oxray::placement_group(vec![one(); 4], PlacementStrategy::StrictSpread)?;
    println!("ready-on-3 {}", four.wait(Duration::from_millis(500))?);
    let info = four.info()?;
    println!("pending-state {:?}", info.state);
    println!("pending-reason {}", info.reason);
    println!("join-d");
    four.ready()?;
    let nodes: BTreeSet<String> = four
        .info()?
        .nodes
        .iter()
        .flatten()
        .map(|n| n.to_string())
        .collect();
    println!(
        "placed-on {}",
        nodes.into_iter().collect::<Vec<_>>().join(",")
    );
    // Tasks in each bundle run on that bundle's node.
    let ran: Vec<_> = (0..4)
        .map(|i| {
            where_am_i::options()
                .placement_group(&four, Some(i))
                .remote(0)
        })
        .collect::<oxray::Result<_>>()?;
    let ran: BTreeSet<String> = oxray::get_all(&ran)?.into_iter().collect();
    println!("tasks-on {}", ran.into_iter().collect::<Vec<_>>().join(","));
    four.remove()?;

    let head = oxray::node_id()?;
    let pair = oxray::placement_group(vec![one(), one()], PlacementStrategy::StrictSpread)?;
    pair.ready()?;
    let at: Vec<String> = pair
        .info()?
        .nodes
        .iter()
        .map(|n| n.map(|n| n.to_string()).unwrap_or_default())
        .collect();
    // The bundle on a member (the two are on distinct nodes, so one is).
    let b = if at[0] == head { 1 } else { 0 };
    let tally = Tally::options()
        .placement_group(&pair, Some(b))
        .max_restarts(3)
        .max_task_retries(-1)
        .remote(0)?;
    let was = oxray::get(&tally.node()?)?;
    println!("actor-on {was} bundle-on {}", at[b]);
    println!("kill {was}");
    let alive = alive_at_most(3)?;
    println!("alive-after-kill {alive}");
    // The call waits for the restart (its bundle placed again on a live node).
    let now = oxray::get_timeout(&tally.node()?, Duration::from_secs(60))?;
    println!("actor-restarted-on {now}");
    let info = pair.info()?;
    println!("pair-state {:?}", info.state);
    let still: Vec<String> = info.nodes.iter().flatten().map(|n| n.to_string()).collect();
    println!("pair-on {}", still.join(","));
    println!(
        "pair-created {}",
        info.state == PlacementGroupState::Created
    );
    pair.remove()?;
    println!("done");
    Ok(())
}

/// `spread-count N MS`: N tasks of MS milliseconds spread over the cluster (SPREAD); prints
/// how many ran on each node, the nodes used, and the time.
pub fn spread_count(n: usize, ms: u64) -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let alive = oxray::nodes()?.iter().filter(|n| n.alive).count();
    let started = std::time::Instant::now();
    let refs: Vec<_> = (0..n)
        .map(|_| {
            where_am_i::options()
                .num_cpus(0.1)
                .scheduling_strategy(oxray::SchedulingStrategy::Spread)
                .remote(ms)
        })
        .collect::<oxray::Result<_>>()?;
    let mut per_node: std::collections::BTreeMap<String, usize> = Default::default();
    for node in oxray::get_all(&refs)? {
        *per_node.entry(node).or_default() += 1;
    }
    println!("alive {alive}");
    println!("nodes-used {}", per_node.len());
    println!(
        "fewest-on-a-node {}",
        per_node.values().min().copied().unwrap_or(0)
    );
    println!("seconds {:.1}", started.elapsed().as_secs_f64());
    Ok(())
}

/// Sums a stored array where the task runs; says where.
#[oxray::remote]
fn sum_here(xs: ObjectView<Vec<u64>>) -> (u64, String) {
    (
        fold_sum(xs.iter().map(|x| x.to_native())),
        oxray::node_id().expect("node id"),
    )
}

/// `broadcast MIB`: puts MIB of numbers on the driver's node, then reads it on every other
/// alive node at once (one task pinned to each); prints the time and the rate of the copies.
pub fn broadcast(mib: u64) -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let n = mib << 17;
    let data: Vec<u64> = (0..n).collect();
    let expected = fold_sum(data.iter().copied());
    let big = oxray::put(&data)?;
    drop(data);
    let here = oxray::node_id()?;
    let others: Vec<oxray::NodeId> = oxray::nodes()?
        .iter()
        .filter(|n| n.alive && n.id != here)
        .filter_map(|n| n.id.parse().ok())
        .collect();
    // Warm: every node has the driver's executable and a worker before the clock starts.
    let warm: Vec<_> = others
        .iter()
        .map(|id| {
            where_am_i::options()
                .num_cpus(0.1)
                .scheduling_strategy(oxray::SchedulingStrategy::NodeAffinity {
                    node_id: *id,
                    soft: false,
                })
                .remote(0)
        })
        .collect::<oxray::Result<_>>()?;
    oxray::get_all(&warm)?;
    let started = std::time::Instant::now();
    let reads: Vec<_> = others
        .iter()
        .map(|id| {
            sum_here::options()
                .num_cpus(0.1)
                .scheduling_strategy(oxray::SchedulingStrategy::NodeAffinity {
                    node_id: *id,
                    soft: false,
                })
                .remote(&big)
        })
        .collect::<oxray::Result<_>>()?;
    let got = oxray::get_all(&reads)?;
    let secs = started.elapsed().as_secs_f64();
    let ok = got.iter().all(|(s, _)| *s == expected);
    let nodes: BTreeSet<&String> = got.iter().map(|(_, n)| n).collect();
    let moved = (mib as f64) * 1.048_576e6 * others.len() as f64;
    println!("copies {}", others.len());
    println!("nodes-read {}", nodes.len());
    println!("sums-ok {ok}");
    println!("seconds {secs:.2}");
    println!("gigabytes-moved {:.2}", moved / 1e9);
    println!("gigabytes-per-second {:.2}", moved / 1e9 / secs);
    Ok(())
}

/// `direct-calls`: from a driver on a head with no CPUs, 200 tasks and 200 calls of a detached
/// actor named `direct-tally` (namespace `direct`), all on the other node (resource `m`); the test then
/// checks that no raylet relayed a connection (the calls went straight to the processes), and
/// waits to be killed.
pub fn direct_calls() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    println!("driver-node {}", oxray::node_id()?);
    let mut ran = BTreeSet::new();
    for _ in 0..200 {
        ran.insert(oxray::get(&where_am_i::remote(0)?)?);
    }
    println!(
        "task-nodes {}",
        ran.into_iter().collect::<Vec<_>>().join(",")
    );
    let tally = Tally::options()
        .name("direct-tally")
        .namespace("direct")
        .lifetime(oxray::Lifetime::Detached)
        .resource("m", 1.0)
        .remote(0)?;
    for _ in 0..200 {
        oxray::get(&tally.add(1)?)?;
    }
    println!("actor-node {}", oxray::get(&tally.node()?)?);
    println!("actor-total {}", oxray::get(&tally.add(0)?)?);
    println!("done");
    // The actor's job lives on while another job calls it.
    until_killed();
    Ok(())
}

/// `direct-other-job`: calls the detached `direct-tally` another driver made (another job, so
/// another credential: the call goes through the raylets), then kills it.
pub fn direct_other_job() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let tally = oxray::get_actor_in::<Tally>("direct-tally", "direct")?;
    println!("actor-total {}", oxray::get(&tally.add(1)?)?);
    oxray::kill(&tally)?;
    println!("done");
    Ok(())
}

/// Each item says which process made it: (pid, index).
#[oxray::remote]
fn pid_and_index(n: u64) -> impl Iterator<Item = (u32, u64)> {
    let pid = std::process::id();
    (0..n).map(move |i| (pid, i))
}

fn kill(pid: u32) -> bool {
    // SAFETY: kill(2) on a worker process of this driver's job (on this machine).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) == 0 }
}

/// `direct-faults`: failures of processes on another node, reached over direct connections
/// (the driver's node has no CPUs; the other node has resource `m`). Kills, by pid, the worker
/// of a streaming task mid-stream (retried, no item lost or repeated), an actor with no restarts
/// left (`ActorDied`) and one that may restart (its next call runs in the new process).
pub fn direct_faults() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let mut stream = pid_and_index::options().stream_window(4).remote(40)?;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let item = stream.next().ok_or(oxray::Error::Config {
            message: "the stream ended early".into(),
        })??;
        seen.push(oxray::get(&item)?);
    }
    println!("stream-killed {}", kill(seen[0].0));
    for item in stream.by_ref() {
        seen.push(oxray::get(&item?)?);
    }
    let in_order = seen.iter().map(|(_, i)| *i).eq(0..40);
    let retried = seen.iter().any(|(pid, _)| *pid != seen[0].0);
    println!("stream-ok {}", in_order && retried);

    let fragile = Tally::options()
        .resource("m", 0.5)
        .max_restarts(0)
        .remote(0)?;
    let pid = oxray::get(&fragile.pid()?)?;
    println!("fragile-killed {}", kill(pid));
    match fragile.add(1).and_then(|r| oxray::get(&r)) {
        Ok(n) => println!("fragile-after {n}"),
        Err(oxray::Error::ActorDied { .. }) => println!("fragile-after ActorDied"),
        Err(e) => println!("fragile-after {e:?}"),
    }

    let sturdy = Tally::options()
        .resource("m", 0.5)
        .max_restarts(1)
        .max_task_retries(1)
        .remote(0)?;
    let before = oxray::get(&sturdy.pid()?)?;
    println!("sturdy-killed {}", kill(before));
    let after = oxray::get(&sturdy.pid()?)?;
    println!("sturdy-new-process {}", after != before);
    println!("sturdy-restarted {}", oxray::get(&sturdy.restarted()?)?);
    println!("done");
    Ok(())
}

/// `direct-hang`: starts a 60 s task and a 60 s actor call on the other node (resource `m`),
/// says `calling` with the actor's pid once both are submitted, and is killed by the test
/// mid-call.
pub fn direct_hang() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let tally = Tally::options().resource("m", 0.5).remote(0)?;
    let pid = oxray::get(&tally.pid()?)?;
    let _call = tally.slow_pid(60_000)?;
    let _task = where_am_i::options().resource("m", 0.5).remote(60_000)?;
    println!("calling {pid}");
    until_killed();
    Ok(())
}
