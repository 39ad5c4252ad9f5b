//! Object store benchmark: create + seal + get of objects from 8 B to 1 GiB, next to a plain
//! `memcpy` of the same size on the same machine.
//!
//! `cargo run --release --example store_bench` (add `-- --quick` to skip the 1 GiB size).
//!
//! Rows:
//! - `raw put`: create, copy the bytes in, seal, get (pin + header check), release, delete;
//! - `typed put`: the same through `Store::put` (rkyv encoding straight into the arena) and a
//!   validated `ObjectView<Vec<u8>>`;
//! - `memcpy`: copying the same bytes into a buffer that was already touched;
//! - `view open`: `get_view` of an already stored object (pin, type check, rkyv validation): no
//!   copy, so its time must not depend on the size.

use std::hint::black_box;
use std::time::{Duration, Instant};

use oxray_object_store::{ArenaOptions, CreateOptions, ObjectId, Store};

const SIZES: [(usize, &str); 5] = [
    (8, "8 B"),
    (1 << 10, "1 KiB"),
    (1 << 20, "1 MiB"),
    (100 << 20, "100 MiB"),
    (1 << 30, "1 GiB"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let store = Store::new(&ArenaOptions::new(if quick {
        512 << 20
    } else {
        2200 << 20
    }))?;
    let mut next_id = 0u128;
    let mut id = || {
        next_id += 1;
        ObjectId::from_u128(next_id)
    };
    println!(
        "{:<9} {:>14} {:>10} {:>14} {:>10} {:>10} {:>12}",
        "size", "raw put ops/s", "GB/s", "typed put op/s", "GB/s", "memcpy GB/s", "view open µs"
    );
    for (size, label) in SIZES {
        if quick && size > (100 << 20) {
            continue;
        }
        let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut dst = vec![0u8; size];
        let budget = Duration::from_millis(if size >= 100 << 20 { 3000 } else { 700 });

        let raw = per_second(budget, || {
            let oid = id();
            let mut w = store
                .create(oid, size as u64, CreateOptions::default())
                .unwrap();
            w.as_mut_slice().copy_from_slice(&src);
            w.seal().unwrap();
            black_box(store.get(oid).unwrap().len());
            store.delete(oid).unwrap();
        });
        let typed = per_second(budget, || {
            let oid = id();
            store.put(oid, &src, false).unwrap();
            black_box(store.get_view::<Vec<u8>>(oid).unwrap().len());
            store.delete(oid).unwrap();
        });
        let memcpy = per_second(budget, || {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        });
        let kept = id();
        store.put(kept, &src, false)?;
        let open = per_second(Duration::from_millis(300), || {
            black_box(store.get_view::<Vec<u8>>(kept).unwrap().len());
        });
        store.delete(kept)?;
        let gb = |ops: f64| ops * size as f64 / 1e9;
        println!(
            "{:<9} {:>14.0} {:>10.2} {:>14.0} {:>10.2} {:>10.2} {:>12.2}",
            label,
            raw,
            gb(raw),
            typed,
            gb(typed),
            gb(memcpy),
            1e6 / open
        );
    }
    Ok(())
}

/// Runs `f` repeatedly (once to warm up, then until `budget` is spent, at least three times) and
/// returns calls per second.
fn per_second(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while n < 3 || (start.elapsed() < budget && n < 10_000_000) {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}
