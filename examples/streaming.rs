//! A streaming task (Ray's generators): one task yields the replicates of a simulation one by
//! one, and the driver reads each as soon as it is stored, while the task makes the next. Then
//! the same stream read from async code, and a task with two returns (`num_returns`).
//!
//! `cargo run --release --example streaming`

use std::time::{Duration, Instant};

/// Replicates of a random walk: each item is one walk's end point, made in `ms` of work.
#[oxray::remote]
fn walks(n: u64, ms: u64) -> impl Iterator<Item = (u64, f64)> {
    (0..n).map(move |i| {
        std::thread::sleep(Duration::from_millis(ms));
        (i, walk_end(i))
    })
}

/// The end point of walk `i`: 1000 steps of ±1.
fn walk_end(i: u64) -> f64 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut pos = 0.0f64;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pos += if x & 1 == 0 { 1.0 } else { -1.0 };
    }
    pos
}

fn main() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let started = Instant::now();
    let mut sum_sq = 0.0;
    let mut n = 0u64;
    // Items arrive while the task still runs: the first after ~20 ms, not after all 20.
    for item in walks::remote(20, 20)? {
        let (i, pos) = oxray::get(&item?)?;
        sum_sq += pos * pos;
        n += 1;
        if i % 5 == 0 {
            println!(
                "replicate {i:>2} at {:>4} ms: end point {pos:+.0}",
                started.elapsed().as_millis()
            );
        }
    }
    println!(
        "{n} replicates, mean squared distance {:.0} (a fair walk of 1000 steps: ~1000)",
        sum_sq / n as f64
    );

    // From async code: each item awaited (any executor; here a small tokio runtime).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| oxray::Error::Config {
            message: format!("no tokio runtime: {e}"),
        })?;
    let far = runtime.block_on(async {
        let mut stream = walks::remote(10, 5)?;
        let mut far = 0;
        while let Some(item) = stream.next_async().await {
            let (_, pos) = item?.await?;
            far += u32::from(pos.abs() > 30.0);
        }
        Ok::<u32, oxray::Error>(far)
    })?;
    println!("async: {far} of 10 walks ended more than 30 steps out");

    // Two returns, a ref each: the positive and negative end points of 100 walks.
    let (pos, neg) = sides::remote(100)?;
    println!(
        "{} walks ended right of the start, {} left of it",
        oxray::get(&pos)?.len(),
        oxray::get(&neg)?.len()
    );
    Ok(())
}

/// End points of `n` walks, split by side: two returns, each an object of its own.
#[oxray::remote(num_returns = 2)]
fn sides(n: u64) -> (Vec<f64>, Vec<f64>) {
    (0..n).map(walk_end).partition(|p| *p > 0.0)
}
