//! oxray quickstart: remote tasks, refs as arguments, `wait`, and a zero-copy view of a large
//! object, on a single-node cluster embedded in this program.
//!
//! Run it with `cargo run --release --example quickstart`.

use std::time::{Duration, Instant};

use oxray::prelude::*;

/// A remote function: `square::remote(x)` runs it in a worker process.
#[oxray::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[oxray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Reads its argument in place in the node's object store: no copy, whatever its size.
#[oxray::remote]
fn mean(xs: ObjectView<Vec<f64>>) -> f64 {
    xs.iter().map(|x| x.to_native()).sum::<f64>() / xs.len() as f64
}

/// A task that fails: the error reaches the caller's `get`.
#[oxray::remote]
fn checked_sqrt(x: f64) -> Result<f64, String> {
    if x < 0.0 {
        Err(format!("cannot take the square root of {x}"))
    } else {
        Ok(x.sqrt())
    }
}

fn main() -> oxray::Result<()> {
    let started = Instant::now();
    let cluster = oxray::init()?;
    println!(
        "oxray node at {} (embedded in this process)",
        cluster.address()
    );

    // 1. A parallel map: results come back in submission order.
    let refs: Vec<ObjectRef<i64>> = (0..4).map(square::remote).collect::<Result<_>>()?;
    println!("squares of 0..4: {:?}", oxray::get_all(&refs)?);
    println!(
        "first results after {:.1} ms (init included)",
        started.elapsed().as_secs_f64() * 1e3
    );

    // 2. Refs as arguments: `add` waits for `square(3)` without the driver fetching it.
    let nine = square::remote(3)?;
    let sum = add::remote(&nine, 10)?;
    println!("square(3) + 10 = {}", oxray::get(&sum)?);

    // 3. Many small tasks.
    let t = Instant::now();
    let many: Vec<ObjectRef<i64>> = (0..10_000).map(square::remote).collect::<Result<_>>()?;
    let submitted = t.elapsed();
    let total: i64 = oxray::get_all(&many)?.iter().sum();
    let all = t.elapsed();
    println!(
        "10 000 tasks: submitted in {:.1} ms, done in {:.1} ms ({:.1} µs per task); sum = {total}",
        submitted.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e6 / 10_000.0
    );

    // 4. wait: take results as they come.
    let (ready, pending) = oxray::wait(&many[..100], 10, Some(Duration::from_secs(5)))?;
    println!(
        "wait: {} ready, {} not returned yet",
        ready.len(),
        pending.len()
    );

    // 5. A big array, put once into shared memory and read in place by tasks.
    let data: Vec<f64> = (0..10_000_000).map(|i| (i % 100) as f64).collect();
    let big = oxray::put(&data)?;
    let means: Vec<ObjectRef<f64>> = (0..4).map(|_| mean::remote(&big)).collect::<Result<_>>()?;
    println!(
        "mean of 80 MB array, by 4 tasks: {:?}",
        oxray::get_all(&means)?
    );
    let t = Instant::now();
    let view = oxray::get_view(&big)?;
    println!(
        "zero-copy view in the driver: {} values, opened in {:.1} µs",
        view.len(),
        t.elapsed().as_secs_f64() * 1e6
    );

    // 6. Errors are values at `get`.
    match oxray::get(&checked_sqrt::remote(-4.0)?) {
        Err(Error::TaskFailed { message, .. }) => println!("task failed as expected: {message}"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
