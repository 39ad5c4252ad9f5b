//! Spilling to disk, with a real node whose store is smaller than the data (driver modes
//! `spill` and `spill-off` of `oxray-test-driver`).

use std::time::Duration;

use crate::node_core::{run_to_end, value};

/// Three times a 32 MiB store put while every ref is held: every object comes back bit-exact
/// (`get` and `get_view`), a task reads a spilled argument, tasks' results totalling three
/// times the store come back too, the counters show bytes spilled and restored, and the spill
/// files are gone once the refs drop and the directory once the runtime shuts down.
#[test]
fn three_times_the_store_is_spilled_and_read_back_exactly() {
    let out = run_to_end(&["spill"], Duration::from_secs(240));
    let n = |key: &str| -> u64 {
        value(&out, key)
            .parse()
            .unwrap_or_else(|_| panic!("{key}: {out}"))
    };
    assert!(n("spilled-after-puts") > 0, "nothing was spilled: {out}");
    assert_eq!(n("exact"), 24, "{out}");
    assert_eq!(n("views"), 24, "{out}");
    assert_eq!(value(&out, "task-sum-ok"), "true", "{out}");
    assert_eq!(n("made"), 24, "{out}");
    // At least twice the store went to disk, and came back when read.
    assert!(n("spilled-total") >= 2 * (32 << 20), "{out}");
    assert!(n("restored-total") >= 32 << 20, "{out}");
    assert!(n("files-while-held") > 0, "{out}");
    assert_eq!(n("spilled-after-drop"), 0, "{out}");
    assert_eq!(
        n("files-after-drop"),
        0,
        "spill files outlived their objects: {out}"
    );
    assert_eq!(value(&out, "dir-after-shutdown"), "false", "{out}");
}

/// With spilling off, a put that does not fit is a typed `ObjectStoreFull` that says so, and
/// so is the `get` of a task whose result does not fit (it was `TaskFailed`); a put larger than
/// the whole store is refused at once; every object stored before reads back intact.
#[test]
fn with_spilling_off_a_full_store_is_a_typed_error() {
    let out = run_to_end(&["spill-off"], Duration::from_secs(120));
    let after: u64 = value(&out, "full-after").parse().expect("a full error");
    assert!((5..=8).contains(&after), "{out}");
    assert!(
        value(&out, "message").contains("spilling to disk is off"),
        "{out}"
    );
    // The configured wait for room (2.5 s, against the default 1 s) went by before the error.
    let waited: u64 = value(&out, "full-wait-ms").parse().expect("a wait");
    assert!(waited >= 2500, "{out}");
    assert!(
        value(&out, "task-full").contains("spilling to disk is off"),
        "{out}"
    );
    // An object larger than the store is refused without waiting for room that cannot come.
    assert!(
        value(&out, "too-large").contains("object_store_memory"),
        "{out}"
    );
    let too_large_ms: u64 = value(&out, "too-large-ms").parse().expect("a time");
    assert!(too_large_ms < 2500, "{out}");
    assert_eq!(
        value(&out, "intact"),
        format!("{after} of {after}"),
        "{out}"
    );
}

/// Five rounds of `init`, a 200 MB put read through a view, and `shutdown` in one process: each
/// shutdown unmaps the store and lets it go (before, the driver's owner service kept its core
/// worker, and so the arena, alive: Shmem grew by each round's store).
#[test]
fn init_shutdown_cycles_release_the_store() {
    let out = run_to_end(&["cycles", "5"], Duration::from_secs(120));
    let numbers = |key: &str| -> Vec<u64> {
        value(&out, key)
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    let arenas = numbers("arenas");
    assert_eq!(
        arenas,
        vec![0; 5],
        "arenas still mapped after shutdown: {out}"
    );
    let rss = numbers("rss-shmem-kib");
    assert_eq!(rss.len(), 5, "{out}");
    assert!(
        rss.iter().all(|kib| *kib < 16 << 10),
        "shared memory stays resident: {out}"
    );
}

/// `memory_summary` (and the node listing `oxray memory` prints) shows every object, in memory
/// or spilled, with its size, a viewed object's pin and the refs holding it in the driver.
#[test]
fn memory_summary_lists_spilled_and_in_memory_objects_with_their_holders() {
    let out = run_to_end(&["memory"], Duration::from_secs(120));
    let n = |key: &str| -> u64 {
        value(&out, key)
            .parse()
            .unwrap_or_else(|_| panic!("{key}: {out}"))
    };
    assert_eq!(n("objects"), 10, "{out}");
    assert!(n("spilled") >= 2, "{out}");
    assert!(n("in-memory") >= 1, "{out}");
    assert_eq!(n("spilled") + n("in-memory"), 10, "{out}");
    assert_eq!(n("first-pins"), 1, "the view's pin: {out}");
    assert_eq!(n("first-refs"), 1, "the driver's ref: {out}");
    assert_eq!(value(&out, "sizes-ok"), "true", "{out}");
    assert_eq!(n("listed"), 10, "{out}");
}

/// Objects a 32 MiB store cannot hold are made in files of the spill directory and read in
/// place from there (Ray's fallback allocation): an 80 MiB vector built with `put_with_len`,
/// read through a view and by a task; a 48 MiB task result, and one written in place
/// (`VecInPlace`); a put while every byte of the
/// store is pinned by views. Their files go with their refs.
#[test]
fn objects_larger_than_the_store_live_in_files_and_read_back_exactly() {
    let out = run_to_end(&["larger"], Duration::from_secs(240));
    assert_eq!(value(&out, "put-exact"), "true", "{out}");
    assert_eq!(value(&out, "task-sum-ok"), "true", "{out}");
    assert_eq!(value(&out, "place"), "in-a-file", "{out}");
    assert_eq!(value(&out, "task-result-exact"), "true", "{out}");
    assert_eq!(value(&out, "in-place-result-exact"), "true", "{out}");
    assert_eq!(value(&out, "pinned-full-put-exact"), "true", "{out}");
    let n = |key: &str| -> u64 {
        value(&out, key)
            .parse()
            .unwrap_or_else(|_| panic!("{key}: {out}"))
    };
    assert!(n("files-while-held") >= 3, "{out}");
    assert_eq!(n("spilled-after-drop"), 0, "{out}");
    assert_eq!(n("files-after-drop"), 0, "{out}");
}
