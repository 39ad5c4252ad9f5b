//! Tasks: values and refs as arguments, ordering, nesting, wait, cancel, resources.

use std::time::{Duration, Instant};

use oxray::prelude::*;

use crate::cluster;

#[oxray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[oxray::remote]
fn inc(x: i64) -> i64 {
    x + 1
}

#[oxray::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[oxray::remote]
fn sleep_then(ms: u64, value: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    value
}

#[oxray::remote]
fn describe(name: String, weights: Vec<f64>) -> String {
    format!("{name}:{}", weights.iter().sum::<f64>())
}

/// Submits `inner` tasks and waits for them inside a task (nested work).
#[oxray::remote]
fn outer(setting: i64, inner: i64) -> i64 {
    let refs: Vec<ObjectRef<i64>> = (0..inner)
        .map(|i| square::remote(setting * 100 + i))
        .collect::<Result<_>>()
        .expect("submit inner tasks");
    oxray::get_all(&refs)
        .expect("get inner results")
        .iter()
        .sum()
}

#[oxray::remote]
fn needs_slot() -> i64 {
    7
}

#[test]
fn values_and_refs_as_arguments() {
    cluster();
    let r = add::remote(1, 2).unwrap();
    let s = add::remote(&r, 10).unwrap();
    assert_eq!(oxray::get(&s).unwrap(), 13);
    // The tutorial's DAG: add(inc(1), inc(2)).
    let dag = add::remote(inc::remote(1).unwrap(), inc::remote(2).unwrap()).unwrap();
    assert_eq!(oxray::get(&dag).unwrap(), 5);
    // A put value as an argument, and strings and vectors.
    let w = oxray::put(&vec![0.5, 1.5, 2.0]).unwrap();
    let d = describe::remote("w".to_string(), &w).unwrap();
    assert_eq!(oxray::get(&d).unwrap(), "w:4");
}

#[test]
fn a_chain_of_refs() {
    cluster();
    let mut r = inc::remote(0).unwrap();
    for _ in 0..49 {
        r = inc::remote(&r).unwrap();
    }
    assert_eq!(oxray::get(&r).unwrap(), 50);
}

#[test]
fn results_come_back_in_submission_order() {
    cluster();
    let refs: Vec<ObjectRef<i64>> = (0..200).map(square::remote).collect::<Result<_>>().unwrap();
    let expected: Vec<i64> = (0..200).map(|x| x * x).collect();
    assert_eq!(oxray::get_all(&refs).unwrap(), expected);
}

#[test]
fn submitting_many_tasks_returns_before_the_first_result() {
    cluster();
    let first = sleep_then::remote(1000, 1).unwrap();
    let t = Instant::now();
    let refs: Vec<ObjectRef<i64>> = (0..2000)
        .map(square::remote)
        .collect::<Result<_>>()
        .unwrap();
    let submit = t.elapsed();
    let (ready, _) = oxray::wait(std::slice::from_ref(&first), 1, Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty(), "the 300 ms task cannot be done yet");
    assert!(
        submit < Duration::from_millis(300),
        "submitting took {submit:?}"
    );
    assert_eq!(oxray::get(&refs[1999]).unwrap(), 1999 * 1999);
    assert_eq!(oxray::get(&first).unwrap(), 1);
}

#[test]
fn nested_tasks_do_not_deadlock() {
    cluster();
    // 4 outer tasks on 2 CPUs, each blocked in get on 10 inner tasks: the blocked workers lend
    // their CPUs, or this would hang.
    let flat: Vec<i64> = (0..4)
        .map(|s| (0..10).map(|i| (s * 100 + i) * (s * 100 + i)).sum())
        .collect();
    let refs: Vec<ObjectRef<i64>> = (0..4)
        .map(|s| outer::remote(s, 10))
        .collect::<Result<_>>()
        .unwrap();
    let nested: Vec<i64> = refs
        .iter()
        .map(|r| oxray::get_timeout(r, Duration::from_secs(60)).unwrap())
        .collect();
    assert_eq!(nested, flat);
}

#[test]
fn wait_and_timeouts() {
    cluster();
    // On the custom `slot` resource, so CPU-bound tests running alongside cannot delay them.
    let slow = sleep_then::options()
        .num_cpus(0.0)
        .resource("slot", 1.0)
        .remote(1500, 3)
        .unwrap();
    let fast = square::options()
        .num_cpus(0.0)
        .resource("slot", 1.0)
        .remote(4)
        .unwrap();
    let t = Instant::now();
    let (ready, not_ready) = oxray::wait(
        &[slow.clone(), fast.clone()],
        1,
        Some(Duration::from_secs(10)),
    )
    .unwrap();
    assert_eq!(ready, vec![fast.clone()]);
    assert_eq!(not_ready, vec![slow.clone()]);
    // A zero timeout returns at once.
    let t0 = Instant::now();
    let (ready, _) = oxray::wait(std::slice::from_ref(&slow), 1, Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty());
    assert!(t0.elapsed() < Duration::from_millis(200));
    match oxray::get_timeout(&slow, Duration::from_millis(50)) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(oxray::get(&slow).unwrap(), 3);
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert!(
        oxray::wait(&[fast], 2, None).is_err(),
        "more returns than refs"
    );
}

#[test]
fn cancel_a_queued_task() {
    cluster();
    // Fill both CPUs, then cancel a task still in the queue.
    let busy: Vec<_> = (0..2)
        .map(|i| sleep_then::remote(800, i).unwrap())
        .collect();
    let queued = sleep_then::remote(10, 99).unwrap();
    oxray::cancel(&queued).unwrap();
    assert!(matches!(oxray::get(&queued), Err(Error::Cancelled)));
    assert_eq!(oxray::get_all(&busy).unwrap(), vec![0, 1]);
}

#[test]
fn custom_resources_and_infeasible_requests() {
    cluster();
    let total = oxray::cluster_resources().unwrap();
    assert_eq!(total.get("CPU"), Some(&2.0));
    assert_eq!(total.get("slot"), Some(&4.0));
    let r = needs_slot::options()
        .resource("slot", 1.0)
        .remote()
        .unwrap();
    assert_eq!(oxray::get(&r).unwrap(), 7);
    // No node has a GPU: the task waits (as in Ray) and is visible as infeasible.
    let gpu = needs_slot::options().resource("gpu", 1.0).remote().unwrap();
    let (ready, _) = oxray::wait(
        std::slice::from_ref(&gpu),
        1,
        Some(Duration::from_millis(300)),
    )
    .unwrap();
    assert!(ready.is_empty());
    let status = oxray::status().unwrap();
    assert!(
        status
            .pending
            .iter()
            .any(|p| p.infeasible && p.resources.get("gpu") == 1.0),
        "the infeasible request is reported: {status:?}"
    );
    oxray::cancel(&gpu).unwrap();
    assert!(matches!(oxray::get(&gpu), Err(Error::Cancelled)));
    let nodes = oxray::nodes().unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].alive);
}

/// Sleeps longer for lower numbers, so tasks finish in roughly the reverse of submission order.
#[oxray::remote]
fn late_for_low(x: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(10 * (20 - x.clamp(0, 20)) as u64));
    x
}

/// `progress` hands back every ref once, as its task finishes (not in submission order).
#[test]
fn progress_yields_every_ref_once_as_it_finishes() {
    cluster();
    // A quarter CPU each: several run at once even while other tests hold a CPU (one at a
    // time would finish in submission order).
    let refs: Vec<ObjectRef<i64>> = (0..20)
        .map(|x| late_for_low::options().num_cpus(0.25).remote(x))
        .collect::<oxray::Result<_>>()
        .expect("submit");
    let mut got = Vec::new();
    for r in oxray::progress("test", refs) {
        got.push(oxray::get(&r.expect("wait")).expect("get"));
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "each once: {got:?}");
    assert_ne!(
        got,
        (0..20).collect::<Vec<_>>(),
        "in finishing order: {got:?}"
    );
}

/// What `oxray::context()` says inside a task: [task id, job, worker, node, driver?, actor].
#[oxray::remote]
fn my_context() -> Vec<String> {
    let c = oxray::context().expect("context");
    vec![
        c.task_id.map(|t| t.to_string()).unwrap_or_default(),
        c.job_id.to_string(),
        c.worker_id.to_string(),
        c.node_id.to_string(),
        c.is_driver.to_string(),
        c.actor_id.map(|a| a.to_string()).unwrap_or_default(),
    ]
}

/// The runtime context: in the driver no task and `is_driver`; in a task its own id (its
/// result's), the driver's job and node, a worker of its own, no actor.
#[test]
fn the_runtime_context_says_who_runs() {
    cluster();
    let me = oxray::context().expect("context");
    assert!(me.is_driver);
    assert_eq!((me.task_id, me.actor_id), (None, None));
    let r = my_context::remote().expect("submit");
    let seen = oxray::get(&r).expect("context");
    assert_eq!(seen[0], r.id().to_string());
    assert_eq!(seen[1], me.job_id.to_string());
    assert_ne!(seen[2], me.worker_id.to_string());
    assert_eq!(seen[3], me.node_id.to_string());
    assert_eq!(seen[4], "false");
    assert_eq!(seen[5], "");
}

#[oxray::remote]
fn always_fails() -> Result<i64, String> {
    Err("as planned".into())
}

/// A task's name (`options().name(..)`) is in its error, beside its function.
#[test]
fn a_named_task_is_named_in_its_error() {
    cluster();
    let r = always_fails::options()
        .name("nightly report")
        .remote()
        .unwrap();
    match oxray::get(&r) {
        Err(e @ Error::TaskFailed { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("\"nightly report\" (") && text.contains("always_fails"),
                "{text}"
            );
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
}

/// A running 10 s task force-cancelled (`cancel_with(force)`): its get is `Cancelled`, it is
/// not retried, its worker process is gone, and the node's only CPU runs the next task at once
/// (in a driver of its own: the shared test cluster's CPUs are busy with other tests).
#[test]
fn force_cancel_stops_a_running_task_and_frees_its_cpu() {
    let out = crate::node_core::run_to_end(&["force-cancel"], Duration::from_secs(120));
    let value = |k: &str| {
        crate::processes::value(&out, k)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(value("get"), "cancelled", "{out}");
    assert_eq!(value("next"), "49", "{out}");
    assert_eq!(value("victim-gone"), "true", "{out}");
    // Well before the 10 s the task would have held the CPU (a loose bound: timing belongs in
    // benchmarks, but this is the feature).
    let after: u64 = value("next-after-ms").parse().expect("a time");
    assert!(after < 8_000, "{out}");
}

/// Holds tasks until released, and takes one report (every wait bounded by a minute).
#[oxray::actor]
pub struct Holdout {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    report: std::sync::Mutex<Option<u32>>,
    reported: std::sync::Condvar,
    met: std::sync::Barrier,
}

#[oxray::actor]
impl Holdout {
    fn new() -> Self {
        Holdout {
            open: std::sync::Mutex::new(false),
            opened: std::sync::Condvar::new(),
            report: std::sync::Mutex::new(None),
            reported: std::sync::Condvar::new(),
            met: std::sync::Barrier::new(2),
        }
    }

    /// Returns once two callers are in.
    fn meet(&self) -> bool {
        self.met.wait();
        true
    }

    /// Returns once released (or after a minute).
    fn hold(&self) -> bool {
        let open = self.open.lock().expect("lock");
        let (open, _) = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(60), |o| !*o)
            .expect("lock");
        *open
    }

    fn release(&self) {
        *self.open.lock().expect("lock") = true;
        self.opened.notify_all();
    }

    fn report(&self, n: u32) {
        *self.report.lock().expect("lock") = Some(n);
        self.reported.notify_all();
    }

    /// The report, once made (u32::MAX if none came within a minute).
    fn reported(&self) -> u32 {
        let r = self.report.lock().expect("lock");
        let (r, _) = self
            .reported
            .wait_timeout_while(r, Duration::from_secs(60), |r| r.is_none())
            .expect("lock");
        r.unwrap_or(u32::MAX)
    }
}

/// Waits at the holdout.
#[oxray::remote]
fn held(h: ActorHandle<Holdout>) -> bool {
    oxray::get(&h.hold().expect("call")).expect("held")
}

/// Submits two held children, meets the driver, then reports how many of its children were
/// cancelled.
#[oxray::remote]
fn parent_of_two(h: ActorHandle<Holdout>) -> u32 {
    let kids: Vec<ObjectRef<bool>> = (0..2)
        .map(|_| {
            held::options()
                .num_cpus(0.0)
                .remote(h.clone())
                .expect("submit")
        })
        .collect();
    oxray::get(&h.meet().expect("call")).expect("met");
    let cancelled = kids
        .iter()
        .filter(|k| matches!(oxray::get(k), Err(Error::Cancelled)))
        .count() as u32;
    oxray::get(&h.report(cancelled).expect("call")).expect("reported");
    cancelled
}

/// `cancel` is recursive (as Ray's): the tasks a cancelled running task submitted are
/// cancelled too, so its waits for them end at once.
#[test]
fn cancelling_a_running_task_cancels_the_tasks_it_submitted() {
    cluster();
    let h = Holdout::options().max_concurrency(8).remote().unwrap();
    let parent = parent_of_two::options()
        .num_cpus(0.0)
        .remote(h.clone())
        .unwrap();
    // Its two children are submitted once it meets us.
    assert!(oxray::get(&h.meet().unwrap()).unwrap());
    oxray::cancel(&parent).unwrap();
    assert!(matches!(oxray::get(&parent), Err(Error::Cancelled)));
    let cancelled = oxray::get(&h.reported().unwrap()).unwrap();
    // Let the children (abandoned, still waiting) end.
    oxray::get(&h.release().unwrap()).unwrap();
    assert_eq!(
        cancelled, 2,
        "children cancelled (u32::MAX: no report within a minute)"
    );
}
