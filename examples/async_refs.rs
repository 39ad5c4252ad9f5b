//! Refs in async code: a tokio program submits a batch of simulations and awaits them, taking
//! each result as it finishes (`wait_async`), with a deadline from tokio's own timer, while its
//! other async work goes on (here a ticker on the same thread).
//!
//! `cargo run --release --example async_refs`

use std::future::IntoFuture;
use std::time::Duration;

use oxray::prelude::*;

/// A stand-in for one replicate of a simulation study: `ms` of work, then a number.
#[oxray::remote]
fn simulate(seed: u64, ms: u64) -> f64 {
    std::thread::sleep(Duration::from_millis(ms));
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    (x % 1000) as f64 / 1000.0
}

fn main() -> oxray::Result<()> {
    let _cluster = oxray::init()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        // A ref is a future: await one directly.
        let first = simulate::remote(7, 10)?.await?;
        println!("one replicate: {first:.3}");

        // Many at once: take them as they finish, while a ticker runs beside them.
        let mut pending: Vec<ObjectRef<f64>> = (1..=24)
            .map(|seed| simulate::remote(seed, 20 + (seed % 5) * 30))
            .collect::<oxray::Result<_>>()?;
        let ticker = tokio::spawn(async {
            let mut ticks = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                ticks += 1;
                if ticks % 4 == 0 {
                    println!("  (the event loop is free: tick {ticks})");
                }
            }
        });
        let mut total = 0.0;
        let mut done = 0;
        while !pending.is_empty() {
            let (ready, rest) = oxray::wait_async(&pending, 1).await;
            for r in ready {
                total += r.await?;
                done += 1;
            }
            pending = rest;
            if done % 6 == 0 {
                println!("{done} of 24 replicates done");
            }
        }
        ticker.abort();
        println!("mean of 24 replicates: {:.3}", total / 24.0);

        // A deadline is the executor's business: this one is too short, and the ref stays
        // usable after the timeout drops the future.
        let slow = simulate::remote(99, 500)?;
        match tokio::time::timeout(Duration::from_millis(100), (&slow).into_future()).await {
            Ok(v) => println!("finished early: {:?}", v?),
            Err(_) => println!("not done after 100 ms; waiting on..."),
        }
        println!("slow replicate: {:.3}", slow.await?);
        Ok(())
    })
}
