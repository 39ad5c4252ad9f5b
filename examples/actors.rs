//! Actors: a counter called from the driver and from tasks holding its handle, a named actor
//! found by name, and an actor that restarts after its process is killed.
//!
//! `cargo run --release --example actors`

use std::time::Duration;

use oxray::prelude::*;

/// A counter: state that lives in its own worker process.
#[oxray::actor]
pub struct Counter {
    n: i64,
}

#[oxray::actor]
impl Counter {
    fn new(start: i64) -> Self {
        Counter { n: start }
    }

    fn incr(&mut self, by: i64) -> i64 {
        self.n += by;
        self.n
    }

    fn get(&self) -> i64 {
        self.n
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn restarted(&self) -> bool {
        oxray::was_restarted()
    }
}

/// A task that holds a handle to the counter and calls it.
#[oxray::remote]
fn hit(counter: ActorHandle<Counter>, times: i64) -> i64 {
    let mut last = 0;
    for _ in 0..times {
        last = oxray::get(&counter.incr(1).expect("call")).expect("result");
    }
    last
}

fn main() -> oxray::Result<()> {
    let _cluster = oxray::init_with(oxray::Config::new().namespace("demo"))?;

    // 1. Calls from one caller run in order.
    let c = Counter::remote(0)?;
    let refs: Vec<ObjectRef<i64>> = (0..1000).map(|_| c.incr(1)).collect::<Result<_>>()?;
    let values = oxray::get_all(&refs)?;
    println!(
        "1000 calls: last value {} (in order: {})",
        values[999],
        values.windows(2).all(|w| w[1] == w[0] + 1)
    );

    // 2. Handles are values: 10 tasks call the same counter.
    let tasks: Vec<ObjectRef<i64>> = (0..10)
        .map(|_| hit::remote(c.clone(), 100))
        .collect::<Result<_>>()?;
    oxray::get_all(&tasks)?;
    println!("after 10 tasks x 100 calls: {}", oxray::get(&c.get()?)?);

    // 3. A named actor, found by name.
    let _named = Counter::options().name("global").remote(100)?;
    let found = oxray::get_actor::<Counter>("global")?;
    println!("found \"global\": value {}", oxray::get(&found.get()?)?);

    // 4. Kill its process: it restarts (max_restarts = 1) with fresh state.
    let r = Counter::options().max_restarts(1).remote(7)?;
    oxray::get(&r.incr(1)?)?;
    let pid = oxray::get(&r.pid()?)?;
    oxray::kill_with_restart(&r)?;
    std::thread::sleep(Duration::from_millis(100));
    let new_pid = oxray::get(&r.pid()?)?;
    println!(
        "restarted: pid {pid} -> {new_pid}, value {} (reset), was_restarted = {}",
        oxray::get(&r.get()?)?,
        oxray::get(&r.restarted()?)?
    );

    // 5. kill: no restart; calls fail with ActorDied.
    oxray::kill(&c)?;
    match oxray::get(&c.get()?) {
        Err(Error::ActorDied { message }) => println!("after kill: {message}"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
