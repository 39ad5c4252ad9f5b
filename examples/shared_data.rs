//! One big array, put once into the node's shared-memory store and read by many tasks with zero
//! copies (the tutorial's "shared big array" workload). Node memory stays at about one copy, however
//! many tasks and workers read it.
//!
//! `cargo run --release --example shared_data [-- VALUES TASKS]` (default 100 000 000 f64 =
//! 800 MB and 50 tasks; `-- 10000000 20` for a small run).
//!
//! Memory is measured honestly: node memory as the drop in `MemAvailable`, not RSS (which counts
//! the shared store once in every process that maps it).

use std::time::Instant;

use oxray::prelude::*;

/// Mean and standard deviation of one slice of the array, read in place as a plain `&[f64]`
/// (`as_slice`: no copy, the form ndarray, nalgebra or BLAS take).
#[oxray::remote]
fn stats(xs: ObjectView<Vec<f64>>, part: u64, parts: u64) -> (f64, f64) {
    let xs: &[f64] = xs.as_slice();
    let n = xs.len() as u64;
    let (lo, hi) = (
        (n * part / parts) as usize,
        (n * (part + 1) / parts) as usize,
    );
    let slice = &xs[lo..hi];
    let len = slice.len() as f64;
    let mean = slice.iter().sum::<f64>() / len;
    let var = slice.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / len;
    (mean, var.sqrt())
}

/// Mean over the whole array: every task reads all 800 MB, none copies it.
#[oxray::remote]
fn mean(xs: ObjectView<Vec<f64>>) -> f64 {
    xs.as_slice().iter().sum::<f64>() / xs.len() as f64
}

/// The dot product of the array with itself, on native slices (what a BLAS `ddot` computes).
#[oxray::remote]
fn dot(xs: ObjectView<Vec<f64>>) -> f64 {
    let a: &[f64] = xs.as_slice();
    a.iter().zip(a).map(|(x, y)| x * y).sum()
}

fn mem_available_mb() -> f64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() -> oxray::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100_000_000);
    let tasks = args.get(1).copied().unwrap_or(50);
    let size_mb = n as f64 * 8.0 / 1048576.0;

    let _cluster = oxray::init_with(oxray::Config::new().object_store_memory(n * 8 + (256 << 20)))?;
    let base = mem_available_mb();

    let data: Vec<f64> = (0..n).map(|i| (i % 1000) as f64 / 10.0).collect();
    let t = Instant::now();
    let big = oxray::put(&data)?;
    // The only copy left is the store's.
    drop(data);
    println!(
        "put {size_mb:.0} MiB once in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let parts: Vec<ObjectRef<(f64, f64)>> = (0..tasks)
        .map(|p| stats::remote(&big, p, tasks))
        .collect::<Result<_>>()?;
    // Shown as they finish; the results are then read in submission order.
    for r in oxray::progress("slices", parts.clone()) {
        r?;
    }
    let results = oxray::get_all(&parts)?;
    println!(
        "{tasks} tasks computed mean/sd of their slices in {:.2} s (first: mean {:.3}, sd {:.3})",
        t.elapsed().as_secs_f64(),
        results[0].0,
        results[0].1
    );

    let t = Instant::now();
    let full: Vec<ObjectRef<f64>> = (0..8).map(|_| mean::remote(&big)).collect::<Result<_>>()?;
    let means = oxray::get_all(&full)?;
    let used = base - mem_available_mb();
    println!(
        "8 tasks each read all {size_mb:.0} MiB in {:.2} s: mean {:.4} (all equal: {})",
        t.elapsed().as_secs_f64(),
        means[0],
        means.iter().all(|m| *m == means[0])
    );

    let view = oxray::get_view(&big)?;
    let native: &[f64] = view.as_slice();
    let serial = native.iter().sum::<f64>() / native.len() as f64;
    println!("serial pass in the driver (also zero-copy): {serial:.4}");
    let remote_dot = oxray::get(&dot::remote(&big)?)?;
    let local_dot: f64 = native.iter().map(|x| x * x).sum();
    println!("dot product in a task on &[f64]: {remote_dot:.1} (driver: {local_dot:.1})");
    println!(
        "node memory used since start: {used:.0} MB for a {size_mb:.0} MiB object ({:.2} x)",
        used / size_mb
    );
    Ok(())
}
