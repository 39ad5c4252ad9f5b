//! The shared-big-array workload (W3) on a node whose object store is smaller than the data: a
//! 1 GiB f64 array through a 512 MiB store, two ways.
//!
//! 1. **One object**: the whole array in one `put_with_len`. It can never fit in the store, so
//!    the node makes it in a file of its spill directory (Ray's fallback allocation) and every
//!    task maps that file read-only: 8 tasks each read one range of it, in place.
//! 2. **Chunks**: the array in 8 objects of 128 MiB. Chunks that do not fit are spilled to disk
//!    and read back transparently when tasks read them.
//!
//! Both results equal a serial pass.
//!
//! `cargo run --release --example bigger_than_memory [-- VALUES CHUNKS STORE_MIB]` (default
//! 134 217 728 f64 = 1 GiB, 8 chunks or tasks, 512 MiB; `-- 16777216 8 64` for a small run).

use std::time::Instant;

use oxray::prelude::*;

/// Sum and sum of squares of one chunk, read in place as a plain `&[f64]`.
#[oxray::remote]
fn moments(xs: ObjectView<Vec<f64>>) -> (f64, f64) {
    sums(xs.as_slice())
}

/// Sum and sum of squares of `xs[start..end]`, read in place.
#[oxray::remote]
fn moments_of(xs: ObjectView<Vec<f64>>, start: usize, end: usize) -> (f64, f64) {
    let xs: &[f64] = xs.as_slice();
    sums(&xs[start.min(xs.len())..end.min(xs.len())])
}

fn sums(xs: &[f64]) -> (f64, f64) {
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

/// Mean and standard deviation from the tasks' partial sums.
fn mean_sd(parts: &[ObjectRef<(f64, f64)>], n: usize) -> oxray::Result<(f64, f64)> {
    let (sum, sq) = oxray::get_all(parts)?
        .into_iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let mean = sum / n as f64;
    Ok((mean, (sq / n as f64 - mean * mean).sqrt()))
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
    let mib = (n * 8) as f64 / 1048576.0;
    let _cluster = oxray::init_with(
        oxray::Config::new()
            .num_cpus(2.0)
            .object_store_memory(store_mib << 20),
    )?;
    let base = mem_available_mb();
    let (s_sum, s_sq) = (0..n).fold((0.0, 0.0), |(a, b), i| {
        let x = value(i);
        (a + x, b + x * x)
    });
    let s_mean = s_sum / n as f64;
    let s_sd = (s_sq / n as f64 - s_mean * s_mean).sqrt();
    println!("serial pass: mean {s_mean:.4}, sd {s_sd:.4}");
    let same = |mean: f64| (s_mean - mean).abs() < 1e-9 * s_mean.abs().max(1.0);

    // 1. One object larger than the store, read by many tasks by range.
    let t = Instant::now();
    let whole = oxray::put_with_len::<f64>(n, |s| {
        for (i, x) in s.iter_mut().enumerate() {
            *x = value(i);
        }
    })?;
    let built = t.elapsed().as_secs_f64();
    let place = oxray::memory_summary()?
        .objects
        .iter()
        .find(|o| o.id == whole.id().to_string())
        .map_or_else(|| "?".to_owned(), |o| o.place.clone());
    let t = Instant::now();
    let parts: Vec<ObjectRef<(f64, f64)>> = (0..chunks)
        .map(|c| moments_of::remote(&whole, c * per, (c + 1) * per))
        .collect::<oxray::Result<_>>()?;
    let (mean, sd) = mean_sd(&parts, n)?;
    println!(
        "one {mib:.0} MiB object ({place}) built in {built:.2} s; {chunks} tasks read it in \
         {:.2} s: mean {mean:.4}, sd {sd:.4} (equal to the serial pass: {})",
        t.elapsed().as_secs_f64(),
        same(mean)
    );
    println!(
        "node memory used: {:.0} MB for a {mib:.0} MiB array and a {store_mib} MiB store",
        base - mem_available_mb(),
    );
    drop(whole);

    // 2. The same array in chunks, spilled and read back as needed.
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
        "built {mib:.0} MiB in {chunks} chunks in {:.2} s: {} chunks spilled ({:.0} MB on disk)",
        t.elapsed().as_secs_f64(),
        status.spilled_objects,
        status.spilled_bytes as f64 / 1e6
    );
    let t = Instant::now();
    let sums: Vec<ObjectRef<(f64, f64)>> = parts
        .iter()
        .map(moments::remote)
        .collect::<oxray::Result<_>>()?;
    let (mean, sd) = mean_sd(&sums, n)?;
    let status = oxray::status()?;
    println!(
        "{chunks} tasks read every chunk in {:.2} s: mean {mean:.4}, sd {sd:.4} (equal to the \
         serial pass: {}; {:.0} MB restored from disk, {:.0} MB spilled in all)",
        t.elapsed().as_secs_f64(),
        same(mean),
        status.restored_total as f64 / 1e6,
        status.spilled_total as f64 / 1e6
    );
    println!(
        "node memory used: {:.0} MB for a {mib:.0} MiB array and a {store_mib} MiB store",
        base - mem_available_mb(),
    );
    Ok(())
}
