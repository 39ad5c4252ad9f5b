//! Awaiting refs: on a plain `block_on` and on tokio, many at once, failures, `wait_async`,
//! views, and futures dropped mid-wait.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use oxray::prelude::*;

use crate::cluster;

#[oxray::remote]
fn slow_square(ms: u64, x: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * x
}

#[oxray::remote]
fn fails(why: String) -> Result<i64, String> {
    Err(why)
}

#[oxray::remote]
fn numbers(n: u64) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

/// Wakes a parked thread: the smallest executor there is.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `f` to completion on this thread, parking between polls (no timer, no runtime). It
/// polls again only when woken: a future that is never woken fails the test after 60 s.
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        let parked = std::time::Instant::now();
        std::thread::park_timeout(Duration::from_secs(60));
        assert!(
            parked.elapsed() < Duration::from_secs(60),
            "the future was never woken"
        );
    }
}

#[test]
fn a_ref_is_a_future_on_any_executor() {
    cluster();
    let r = slow_square::remote(300, 7).expect("submit");
    // Awaiting a borrow keeps the ref; awaiting it again gives the same value.
    assert_eq!(block_on((&r).into_future()).expect("value"), 49);
    assert_eq!(block_on(r.into_future()).expect("value"), 49);
    let failed = fails::remote("no luck".to_owned()).expect("submit");
    match block_on(failed.into_future()) {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("no luck"), "{message}"),
        other => panic!("expected TaskFailed, got {other:?}"),
    }
}

#[test]
fn many_refs_awaited_at_once_on_tokio() {
    cluster();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let refs: Vec<ObjectRef<i64>> = (0..40)
        .map(|i| slow_square::remote(20, i))
        .collect::<Result<_>>()
        .expect("submit");
    let sum: i64 = runtime.block_on(async {
        // One tokio task per ref, all waiting at once on one thread.
        let handles: Vec<_> = refs
            .iter()
            .cloned()
            .map(|r| tokio::spawn(async move { r.await }))
            .collect();
        let mut sum = 0;
        for h in handles {
            sum += h.await.expect("join").expect("value");
        }
        sum
    });
    assert_eq!(sum, (0..40i64).map(|i| i * i).sum::<i64>());
    let all = runtime
        .block_on(oxray::get_all_async(&refs))
        .expect("values");
    assert_eq!(all, (0..40i64).map(|i| i * i).collect::<Vec<_>>());
    // A view, awaited.
    let big = numbers::remote(100_000).expect("submit");
    let view = runtime.block_on(oxray::get_view_async(&big)).expect("view");
    assert_eq!(view.as_slice()[99_999], 99_999.0);
}

#[test]
fn wait_async_and_futures_dropped_mid_wait() {
    cluster();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let slow = slow_square::remote(1500, 3).expect("submit");
    // Given up on by a timeout: the future is dropped while the task runs (it sleeps 1.5 s
    // once started, so 50 ms after its submission it cannot be done).
    let early = runtime.block_on(async {
        tokio::time::timeout(Duration::from_millis(50), (&slow).into_future()).await
    });
    assert!(early.is_err(), "the slow task finished within 50 ms");
    let quick: Vec<ObjectRef<i64>> = (0..2)
        .map(|i| slow_square::remote(0, i))
        .collect::<Result<_>>()
        .expect("submit");
    let all = vec![slow.clone(), quick[0].clone(), quick[1].clone()];
    let (ready, not_ready) = runtime.block_on(oxray::wait_async(&all, 2));
    // The two quick ones, unless the slow one finished first (a loaded machine).
    assert_eq!(ready.len(), 2);
    assert_eq!(not_ready.len(), 1);
    assert!(ready.contains(&quick[0]) || ready.contains(&quick[1]));
    // The ref given up on still works, awaited again to the end.
    assert_eq!(runtime.block_on((&slow).into_future()).expect("value"), 9);
    let (ready, not_ready) = runtime.block_on(oxray::wait_async(&all, 3));
    assert_eq!((ready.len(), not_ready.len()), (3, 0));
}

/// An async task: awaits a ref it was given and tokio's timer, on its worker's runtime.
#[oxray::remote]
async fn add_later(r: Vec<ObjectRef<i64>>, ms: u64) -> i64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let mut sum = 0;
    for x in r {
        sum += x.await.expect("an argument's value");
    }
    sum
}

/// An async task that fails.
#[oxray::remote]
async fn fails_later(why: String) -> Result<u8, String> {
    tokio::task::yield_now().await;
    Err(why)
}

/// An actor with async methods beside a sync one.
#[oxray::actor]
pub struct Account {
    balance: i64,
}

#[oxray::actor]
impl Account {
    fn new(balance: i64) -> Self {
        Account { balance }
    }

    async fn deposit(&mut self, r: Vec<ObjectRef<i64>>) -> i64 {
        for x in r {
            self.balance += x.await.expect("an amount");
        }
        self.balance
    }

    async fn balance_after(&self, ms: u64) -> i64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.balance
    }

    fn balance(&self) -> i64 {
        self.balance
    }
}

#[test]
fn async_tasks_and_async_actor_methods_run_on_their_workers() {
    cluster();
    let parts: Vec<ObjectRef<i64>> = (1..=4)
        .map(|i| slow_square::remote(10, i))
        .collect::<Result<_>>()
        .expect("submit");
    let sum = add_later::remote(parts.clone(), 20).expect("submit");
    assert_eq!(oxray::get(&sum).expect("sum"), 1 + 4 + 9 + 16);
    match oxray::get(&fails_later::remote("later".to_owned()).expect("submit")) {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("later"), "{message}"),
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    let account = Account::remote(100).expect("an actor");
    assert_eq!(
        oxray::get(&account.deposit(parts).expect("call")).expect("balance"),
        130
    );
    assert_eq!(
        oxray::get(&account.balance_after(5).expect("call")).expect("balance"),
        130
    );
    assert_eq!(
        oxray::get(&account.balance().expect("call")).expect("balance"),
        130
    );
}

/// An async actor whose calls wait for each other: they can only all finish if they run at
/// the same time.
#[oxray::actor]
pub struct Rendezvous {
    arrived: tokio::sync::watch::Sender<u32>,
}

#[oxray::actor]
impl Rendezvous {
    fn new() -> Self {
        Rendezvous {
            arrived: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Arrives, then waits up to `ms` for `parties` arrivals in all; whether they came.
    async fn arrive(&self, parties: u32, ms: u64) -> bool {
        self.arrived.send_modify(|n| *n += 1);
        let mut seen = self.arrived.subscribe();
        let all_came =
            tokio::time::timeout(Duration::from_millis(ms), seen.wait_for(|n| *n >= parties))
                .await
                .is_ok();
        all_came
    }

    /// Arrives, waits for `parties` arrivals, then says which call it is (`context()`).
    async fn arrive_and_say(&self, parties: u32) -> String {
        self.arrived.send_modify(|n| *n += 1);
        let mut seen = self.arrived.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_secs(30), seen.wait_for(|n| *n >= parties)).await;
        let c = oxray::context().expect("context");
        c.task_id.map(|t| t.to_string()).unwrap_or_default()
    }

    /// A sync method beside the async ones.
    fn arrivals(&self) -> u32 {
        *self.arrived.borrow()
    }

    /// An async method that fails, and one that panics: each fails its own call only.
    async fn refuse(&self) -> Result<u32, String> {
        tokio::task::yield_now().await;
        Err("not today".into())
    }

    async fn explode(&self) -> u32 {
        tokio::task::yield_now().await;
        panic!("boom in an async method")
    }
}

/// 100 calls of an async actor wait for one another (a latch only they can open): they run
/// interleaved on its event loop, not one at a time; a sync method runs beside them; errors
/// and panics fail their own calls; `max_concurrency` bounds how many run at once.
#[test]
fn an_async_actor_runs_its_calls_concurrently() {
    cluster();
    let r = Rendezvous::remote().expect("an actor");
    let calls: Vec<ObjectRef<bool>> = (0..100)
        .map(|_| r.arrive(100, 30_000))
        .collect::<Result<_>>()
        .expect("submit");
    let met = oxray::get_all(&calls).expect("results");
    assert!(met.iter().all(|m| *m), "not all 100 calls ran at once");
    assert_eq!(
        oxray::get(&r.arrivals().expect("call")).expect("count"),
        100
    );
    match oxray::get(&r.refuse().expect("call")) {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("not today")),
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    match oxray::get(&r.explode().expect("call")) {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("boom"), "{message}"),
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    // Still serving after both.
    assert_eq!(
        oxray::get(&r.arrivals().expect("call")).expect("count"),
        100
    );

    // At most 10 at once: the first 10 of 11 parties wait in vain (300 ms), then the 11th
    // gets in and sees all 11 arrivals.
    let limited = Rendezvous::options()
        .max_concurrency(10)
        .remote()
        .expect("an actor");
    let calls: Vec<ObjectRef<bool>> = (0..11)
        .map(|_| limited.arrive(11, 300))
        .collect::<Result<_>>()
        .expect("submit");
    let met = oxray::get_all(&calls).expect("results");
    assert_eq!(met.iter().filter(|m| **m).count(), 1, "{met:?}");
    assert!(met[10], "{met:?}");
}

/// Calls of an async actor interleave on one thread, and each still sees its own task id in
/// `context()` after an await.
#[test]
fn async_actor_calls_each_see_their_own_context() {
    cluster();
    let r = Rendezvous::remote().expect("an actor");
    let calls: Vec<ObjectRef<String>> = (0..3)
        .map(|_| r.arrive_and_say(3))
        .collect::<Result<_>>()
        .expect("submit");
    for call in &calls {
        assert_eq!(oxray::get(call).expect("a task id"), call.id().to_string());
    }
}
