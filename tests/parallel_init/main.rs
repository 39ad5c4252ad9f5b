//! A user's `cargo test` binary: eight `#[test]`s that each call `oxray::init()`, run by the
//! test harness on parallel threads (its default). They share one embedded runtime (each holds
//! a guard; the last to drop shuts it down), so none fails to start or loses its node while
//! another test finishes. Workers are this test binary, started again by the node.

#[oxray::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[oxray::actor]
struct Counter {
    n: i64,
}

#[oxray::actor]
impl Counter {
    fn new(start: i64) -> Self {
        Counter { n: start }
    }

    fn add(&mut self, by: i64) -> i64 {
        self.n += by;
        self.n
    }
}

/// What every test does on the shared runtime: tasks, a put and get, an actor's calls.
fn work(seed: i64) -> oxray::Result<()> {
    let cluster = oxray::init()?;
    assert!(cluster.is_embedded());
    let refs: Vec<_> = (0..20)
        .map(|i| square::remote(seed * 100 + i))
        .collect::<oxray::Result<_>>()?;
    let got = oxray::get_all(&refs)?;
    let want: Vec<i64> = (0..20).map(|i| (seed * 100 + i).pow(2)).collect();
    assert_eq!(got, want);
    let r = oxray::put(&vec![seed; 1000])?;
    assert_eq!(oxray::get(&r)?, vec![seed; 1000]);
    let counter = Counter::remote(seed)?;
    let mut last = 0;
    for _ in 0..10 {
        last = oxray::get(&counter.add(1)?)?;
    }
    assert_eq!(last, seed + 10);
    Ok(())
}

#[test]
fn one() -> oxray::Result<()> {
    work(1)
}

#[test]
fn two() -> oxray::Result<()> {
    work(2)
}

#[test]
fn three() -> oxray::Result<()> {
    work(3)
}

#[test]
fn four() -> oxray::Result<()> {
    work(4)
}

#[test]
fn five() -> oxray::Result<()> {
    work(5)
}

#[test]
fn six() -> oxray::Result<()> {
    work(6)
}

#[test]
fn seven() -> oxray::Result<()> {
    work(7)
}

#[test]
fn eight() -> oxray::Result<()> {
    work(8)
}
