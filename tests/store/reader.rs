//! A second process for the store's multi-process tests: maps an arena by path and reads or
//! writes the objects the test names, printing what it saw as `key=value` lines.
//!
//! Usage: `oxray-store-reader ARENA COMMAND ID BLOCK [ARG]`, commands:
//! - `hash`: the payload's length and FNV-1a hash
//! - `sum-f64`: sum of a `Vec<f64>` read through a zero-copy view, and the growth of this process's
//!   private memory (`RssAnon`) while reading it
//! - `wrong-type`: tries to view a `Vec<f64>` object as `Vec<u64>` and prints the error
//! - `fill BYTE`: fills an unsealed object's payload with BYTE (the test seals it)

use std::path::Path;
use std::sync::Arc;

use oxray_object_store::{Arena, ObjectBytes, ObjectId, ObjectView, HEADER_SIZE};

fn main() {
    if let Err(e) = run() {
        println!("error={e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: oxray-store-reader ARENA COMMAND ID BLOCK [ARG]".into());
    }
    let arena = Arc::new(Arena::open(Path::new(&args[1])).map_err(|e| e.to_string())?);
    let id = ObjectId::from_u128(args[3].parse().map_err(|_| "bad id")?);
    let block: u64 = args[4].parse().map_err(|_| "bad block")?;
    let read = || ObjectBytes::from_arena(arena.clone(), block, id, Box::new(()));
    match args[2].as_str() {
        "hash" => {
            let bytes = read().map_err(|e| e.to_string())?;
            println!("len={}", bytes.len());
            println!("fnv={:016x}", fnv(&bytes));
        }
        "sum-f64" => {
            let before = rss_anon_kib();
            let view = ObjectView::<Vec<f64>>::new(read().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            let sum: f64 = view.iter().map(|x| x.to_native()).sum();
            let after = rss_anon_kib();
            println!("len={}", view.len());
            println!("sum={sum}");
            println!("rss_anon_growth_kib={}", after.saturating_sub(before));
        }
        "wrong-type" => match ObjectView::<Vec<u64>>::new(read().map_err(|e| e.to_string())?) {
            Ok(_) => println!("read=ok"),
            Err(e) => println!("read_error={e}"),
        },
        "fill" => {
            let byte: u8 = args
                .get(5)
                .and_then(|b| b.parse().ok())
                .ok_or("fill needs a byte")?;
            let len: u64 = args
                .get(6)
                .and_then(|l| l.parse().ok())
                .ok_or("fill needs a length")?;
            // SAFETY: the test created this object for this process and does not touch it until
            // we exit; this is the only slice of it.
            let buf =
                unsafe { arena.payload_mut(block + HEADER_SIZE, len) }.ok_or("out of range")?;
            buf.fill(byte);
            println!("filled={len}");
        }
        other => return Err(format!("unknown command {other}")),
    }
    Ok(())
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
