//! A streaming task (Ray's generators): one task yields the replicates of a simulation one by
//! one, and the driver reads each as soon as it is stored, while the task makes the next.
//!
//! `cargo run --release --example streaming`

use std::time::{Duration, Instant};

/// Replicates of a random walk: each item is one walk's end point, made in `ms` of work.
#[oxray::remote]
fn walks(n: u64, ms: u64) -> impl Iterator<Item = (u64, f64)> {
    (0..n).map(move |i| {
        std::thread::sleep(Duration::from_millis(ms));
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut pos = 0.0f64;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            pos += if x & 1 == 0 { 1.0 } else { -1.0 };
        }
        (i, pos)
    })
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
    Ok(())
}
