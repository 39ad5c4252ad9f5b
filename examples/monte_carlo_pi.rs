//! Estimating π with an embarrassingly parallel loop: each task draws points from its own seeded
//! stream, so the answer is the same whatever the number of workers. `oxray::progress` hands the
//! results back as tasks finish, with a progress bar (plain lines when not on a terminal).
//!
//! `cargo run --release --example monte_carlo_pi [-- TASKS SAMPLES_PER_TASK]` (default 200 tasks
//! of 1 000 000 samples).

use std::time::Instant;

use oxray::prelude::*;

/// SplitMix64: a tiny, good-enough generator whose stream is fixed by its seed.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Counts how many of `samples` random points of the unit square fall in the quarter circle.
#[oxray::remote]
fn hits(seed: u64, samples: u64) -> u64 {
    let mut rng = SplitMix(seed);
    (0..samples)
        .filter(|_| {
            let (x, y) = (rng.next_f64(), rng.next_f64());
            x * x + y * y <= 1.0
        })
        .count() as u64
}

fn main() -> oxray::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tasks = args.first().copied().unwrap_or(200);
    let samples = args.get(1).copied().unwrap_or(1_000_000);
    let _cluster = oxray::init()?;
    let cpus = oxray::cluster_resources()?
        .get("CPU")
        .copied()
        .unwrap_or(1.0);
    println!("{tasks} tasks x {samples} samples on {cpus} CPUs");

    let t = Instant::now();
    let refs: Vec<ObjectRef<u64>> = (0..tasks)
        .map(|i| hits::remote(i, samples))
        .collect::<Result<_>>()?;
    let mut inside = 0u64;
    // The refs back as their tasks finish, with a progress bar (plain lines when piped).
    for r in oxray::progress("tasks", refs) {
        inside += oxray::get(&r?)?;
    }
    let pi = 4.0 * inside as f64 / (tasks * samples) as f64;
    println!(
        "π ≈ {pi:.6} (error {:.2e}) in {:.2} s",
        (pi - std::f64::consts::PI).abs(),
        t.elapsed().as_secs_f64()
    );

    // The same seeds serially, in this process, give the same bits.
    let serial: u64 = (0..tasks.min(8)).map(|i| hits(i, samples)).sum();
    let parallel: u64 = oxray::get_all(
        &(0..tasks.min(8))
            .map(|i| hits::remote(i, samples))
            .collect::<Result<Vec<_>>>()?,
    )?
    .iter()
    .sum();
    println!(
        "first 8 tasks, serial vs parallel: {serial} == {parallel}: {}",
        serial == parallel
    );
    Ok(())
}
