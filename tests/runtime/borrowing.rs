//! Refs inside values: returned from tasks, passed inside arguments, fetched from their owners,
//! freed when nobody holds them, and a typed error when their owner dies.

use std::time::Duration;

use oxray::prelude::*;
use oxray::rkyv::{Archive, Deserialize, Serialize};

use crate::{cluster, eventually};

/// Puts `n` values in this worker (which owns them) and returns refs to them.
#[oxray::remote]
fn make_refs(n: i64, scale: i64) -> Vec<ObjectRef<i64>> {
    (0..n)
        .map(|i| oxray::put(&(i * scale)).expect("put"))
        .collect()
}

/// Puts large objects in this worker and returns refs to them, with its pid.
#[oxray::remote]
fn make_big_refs(n: u64, len: u64) -> (u32, Vec<ObjectRef<Vec<u8>>>) {
    let refs = (0..n)
        .map(|i| oxray::put(&vec![i as u8; len as usize]).expect("put"))
        .collect();
    (std::process::id(), refs)
}

#[derive(Archive, Serialize, Deserialize)]
#[rkyv(crate = oxray::rkyv)]
struct Batch {
    name: String,
    parts: Vec<ObjectRef<i64>>,
}

/// Gets every ref inside its argument.
#[oxray::remote]
fn total(batch: Batch) -> (String, i64) {
    let values = oxray::get_all(&batch.parts).expect("get the parts");
    (batch.name, values.iter().sum())
}

/// Holds refs to values its caller owns.
#[oxray::remote]
fn sum_refs(parts: Vec<ObjectRef<i64>>) -> i64 {
    oxray::get_all(&parts).expect("get").iter().sum()
}

#[test]
fn refs_returned_by_a_task_are_read_from_their_owner() {
    cluster();
    let outer = make_refs::remote(1000, 3).unwrap();
    let refs = oxray::get(&outer).unwrap();
    assert_eq!(refs.len(), 1000);
    drop(outer); // The borrowed refs stay valid without the containing object.
    let values = oxray::get_all(&refs).unwrap();
    assert_eq!(values, (0..1000).map(|i| i * 3).collect::<Vec<_>>());
    // Passed on to another task, which borrows them in turn.
    let s = sum_refs::remote(refs.clone()).unwrap();
    assert_eq!(
        oxray::get(&s).unwrap(),
        (0..1000).map(|i| i * 3).sum::<i64>()
    );
}

#[test]
fn refs_inside_a_struct_argument() {
    cluster();
    let parts: Vec<ObjectRef<i64>> = (1..=10).map(|i| oxray::put(&i).unwrap()).collect();
    let r = total::remote(Batch {
        name: "ten".into(),
        parts: parts.clone(),
    })
    .unwrap();
    assert_eq!(oxray::get(&r).unwrap(), ("ten".to_string(), 55));
}

#[test]
fn large_objects_behind_borrowed_refs_are_freed_after_the_last_ref() {
    cluster();
    let used = || oxray::status().unwrap().store_used;
    let before = used();
    let (pid, refs) = oxray::get(&make_big_refs::remote(4, 8 << 20).unwrap()).unwrap();
    assert!(pid > 0);
    for (i, r) in refs.iter().enumerate() {
        let view = oxray::get_view(r).unwrap();
        assert_eq!(view.len(), 8 << 20);
        assert!(view.iter().all(|b| *b == i as u8));
    }
    assert!(used() >= before + (32 << 20));
    drop(refs);
    // Other tests share the store: look for our 32 MiB going away.
    assert!(
        eventually(Duration::from_secs(10), || used() < before + (8 << 20)),
        "store use stayed at {} (before: {before})",
        used()
    );
}
