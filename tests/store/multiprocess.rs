//! A parent process owns the store; a child process (`oxray-store-reader`) maps the arena by path
//! and reads or writes objects in place.

use std::collections::HashMap;
use std::process::Command;

use oxray_object_store::{ArenaOptions, ClientId, CreateOptions, ObjectId, Store};

fn child(store: &Store, args: &[String]) -> HashMap<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_oxray-store-reader"))
        .arg(store.arena_path())
        .args(args)
        .output()
        .expect("start the reader process");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "reader failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn args(cmd: &str, id: ObjectId, block: u64, extra: &[&str]) -> Vec<String> {
    let mut v = vec![cmd.to_owned(), id.as_u128().to_string(), block.to_string()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn child_reads_identical_bytes_of_objects_the_parent_sealed() {
    let store = Store::new(&ArenaOptions::new(64 << 20)).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (n, len) in [(1u128, 1usize), (2, 4096), (3, 3 << 20), (4, 0)] {
        let id = ObjectId::from_u128(n);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut w = store
            .create(id, len as u64, CreateOptions::default())
            .unwrap();
        w.as_mut_slice().copy_from_slice(&bytes);
        let loc = w.seal().unwrap();
        let got = child(&store, &args("hash", id, loc.block, &[]));
        assert_eq!(got["len"], len.to_string());
        assert_eq!(got["fnv"], format!("{:016x}", fnv(&bytes)), "object {n}");
    }
}

#[test]
fn child_views_a_large_object_without_copying_it() {
    let store = Store::new(&ArenaOptions::new(300 << 20)).unwrap();
    let id = ObjectId::from_u128(10);
    let n = 32 << 20; // 256 MiB of f64
    let values: Vec<f64> = (0..n).map(|i| (i % 1000) as f64).collect();
    let expected: f64 = values.iter().sum();
    let loc = store.put(id, &values, false).unwrap();
    drop(values);
    let got = child(&store, &args("sum-f64", id, loc.block, &[]));
    assert_eq!(got["len"], n.to_string());
    assert_eq!(got["sum"].parse::<f64>().unwrap(), expected);
    let growth: u64 = got["rss_anon_growth_kib"].parse().unwrap();
    assert!(
        growth < 16 << 10,
        "reading a 256 MiB object grew the reader's private memory by {growth} KiB"
    );
}

#[test]
fn child_gets_a_type_error_not_garbage() {
    let store = Store::new(&ArenaOptions::new(8 << 20)).unwrap();
    let id = ObjectId::from_u128(20);
    let loc = store.put(id, &vec![1.0f64, 2.0], false).unwrap();
    let got = child(&store, &args("wrong-type", id, loc.block, &[]));
    let err = got.get("read_error").expect("the read must fail");
    assert!(err.contains("type mismatch"), "{err}");
}

#[test]
fn child_fills_an_object_the_parent_then_seals() {
    let store = Store::new(&ArenaOptions::new(8 << 20)).unwrap();
    let id = ObjectId::from_u128(30);
    let client = ClientId(5);
    let loc = store
        .create_for(client, id, 100_000, CreateOptions::default())
        .unwrap();
    let got = child(&store, &args("fill", id, loc.block, &["171", "100000"]));
    assert_eq!(got["filled"], "100000");
    store.seal(id).unwrap();
    let bytes = store.get(id).unwrap();
    assert_eq!(bytes.len(), 100_000);
    assert!(bytes.iter().all(|&b| b == 171));
}

#[test]
fn child_is_refused_a_stale_or_wrong_offset() {
    let store = Store::new(&ArenaOptions::new(8 << 20)).unwrap();
    let a = ObjectId::from_u128(40);
    let b = ObjectId::from_u128(41);
    let la = store.put(a, &1u64, false).unwrap();
    store.put(b, &2u64, false).unwrap();
    // Asking for `b` at `a`'s block is refused, and so is a block that was freed.
    let out = Command::new(env!("CARGO_BIN_EXE_oxray-store-reader"))
        .arg(store.arena_path())
        .args(args("hash", b, la.block, &[]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("another object is there"));
    store.delete(a).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oxray-store-reader"))
        .arg(store.arena_path())
        .args(args("hash", a, la.block, &[]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("not sealed"));
}
