//! The shared-big-array workload (W3) on a node whose object store is smaller than the data: a
//! 1 GiB f64 array, built in place in the store in 8 chunks of 128 MiB, through a 512 MiB store.
//! Chunks that do not fit are spilled to disk and read back transparently when tasks read them;
//! the result equals a serial pass.
//!
//! `cargo run --release --example bigger_than_memory [-- VALUES CHUNKS STORE_MIB]` (default
//! 134 217 728 f64 = 1 GiB, 8 chunks, 512 MiB; `-- 16777216 8 64` for a small run).

use std::time::Instant;

use oxray::prelude::*;

/// Sum and sum of squares of one chunk, read in place as a plain `&[f64]`.
#[oxray::remote]
fn moments(xs: ObjectView<Vec<f64>>) -> (f64, f64) {
    let xs: &[f64] = xs.as_slice();
    (xs.iter().sum(), xs.iter().map(|x| x * x).sum())
}

/// The value at position `i` of the whole array.
fn value(i: usize) -> f64 {
    (i % 1000) as f64 / 10.0
}

fn mem_available_mb() -> f64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() -> oxray::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(1 << 27);
    let chunks = args.get(1).copied().unwrap_or(8).max(1);
    let store_mib = args.get(2).copied().unwrap_or(512) as u64;
    let per = n.div_ceil(chunks);
    let _cluster = oxray::init_with(
        oxray::Config::new()
            .num_cpus(2.0)
            .object_store_memory(store_mib << 20),
    )?;
    let base = mem_available_mb();
    let t = Instant::now();
    let parts: Vec<ObjectRef<Vec<f64>>> = (0..chunks)
        .map(|c| {
            let start = c * per;
            let len = per.min(n.saturating_sub(start));
            oxray::put_with_len::<f64>(len, |s| {
                for (k, x) in s.iter_mut().enumerate() {
                    *x = value(start + k);
                }
            })
        })
        .collect::<oxray::Result<_>>()?;
    let status = oxray::status()?;
    println!(
        "built {:.0} MiB in {chunks} chunks in a {store_mib} MiB store in {:.2} s: {} chunks \
         spilled ({:.0} MB on disk)",
        (n * 8) as f64 / 1048576.0,
        t.elapsed().as_secs_f64(),
        status.spilled_objects,
        status.spilled_bytes as f64 / 1e6
    );
    let t = Instant::now();
    let sums: Vec<ObjectRef<(f64, f64)>> = parts
        .iter()
        .map(moments::remote)
        .collect::<oxray::Result<_>>()?;
    let (sum, sq) = oxray::get_all(&sums)?
        .into_iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let mean = sum / n as f64;
    let sd = (sq / n as f64 - mean * mean).sqrt();
    let status = oxray::status()?;
    println!(
        "{chunks} tasks read every chunk in {:.2} s: mean {mean:.4}, sd {sd:.4} ({:.0} MB restored \
         from disk, {:.0} MB spilled in all)",
        t.elapsed().as_secs_f64(),
        status.restored_total as f64 / 1e6,
        status.spilled_total as f64 / 1e6
    );
    let (s_sum, s_sq) = (0..n).fold((0.0, 0.0), |(a, b), i| {
        let x = value(i);
        (a + x, b + x * x)
    });
    let s_mean = s_sum / n as f64;
    println!(
        "serial pass: mean {s_mean:.4}, sd {:.4} (equal: {})",
        (s_sq / n as f64 - s_mean * s_mean).sqrt(),
        (s_mean - mean).abs() < 1e-9 * s_mean.abs().max(1.0)
    );
    println!(
        "node memory used: {:.0} MB for a {:.0} MiB array and a {store_mib} MiB store",
        base - mem_available_mb(),
        (n * 8) as f64 / 1048576.0
    );
    Ok(())
}
