//! Streaming tasks: a task returning `impl Iterator<Item = T>` gives an `ObjectRefStream` of
//! its items, each a ref as soon as it is stored.

use oxray::prelude::*;

use crate::cluster;

#[oxray::remote]
fn count_up(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

/// Items big enough for the object store (200 KB each), each filled with its index.
#[oxray::remote]
fn chunks(n: u64) -> impl Iterator<Item = Vec<u8>> {
    (0..n).map(|i| vec![i as u8; 200_000])
}

#[oxray::remote]
fn breaks_at(k: u64) -> impl Iterator<Item = u64> {
    (0..).map(move |i| if i == k { panic!("broke at {k}") } else { i })
}

/// 10,000 small items come back in order, each its own object; the stream then ends.
#[test]
fn a_stream_of_ten_thousand_items_in_order() {
    cluster();
    let stream = count_up::remote(10_000).expect("submit");
    let refs: Vec<ObjectRef<u64>> = stream.collect::<Result<_>>().expect("items");
    assert_eq!(refs.len(), 10_000);
    let values = oxray::get_all(&refs).expect("values");
    assert_eq!(values, (0..10_000).collect::<Vec<u64>>());
}

/// Stored items read back whole; a stream dropped after 3 of 20 items frees the other 17
/// from the store (none of its items is listed after).
#[test]
fn stored_items_and_a_stream_dropped_early() {
    cluster();
    let mut stream = chunks::remote(20).expect("submit");
    let first: Vec<ObjectRef<Vec<u8>>> = (0..3)
        .map(|_| stream.next().expect("an item").expect("stored"))
        .collect();
    for (i, r) in first.iter().enumerate() {
        let v = oxray::get_view(r).expect("view");
        assert_eq!(v.len(), 200_000);
        assert!(v.iter().all(|b| *b == i as u8));
    }
    // Let the task finish, then drop the stream with 17 items unread.
    let task = stream.task_id();
    let rest: Vec<ObjectRef<Vec<u8>>> = stream
        .by_ref()
        .take(0)
        .collect::<Result<_>>()
        .expect("none");
    assert!(rest.is_empty());
    drop(stream);
    let kept: Vec<String> = first.iter().map(|r| r.id().to_string()).collect();
    let summary = oxray::memory_summary().expect("summary");
    let mine_left: Vec<&oxray::ObjectMemory> = summary
        .objects
        .iter()
        .filter(|o| o.holders.is_some() && !kept.contains(&o.id) && o.size >= 200_000)
        .filter(|o| {
            // An item of this task: the task's id with an index in bits 40..64.
            let id = u128::from_str_radix(&o.id, 16).unwrap_or(0);
            id & !(((1u128 << 24) - 1) << 40) == task.as_u128()
        })
        .collect();
    assert!(
        mine_left.is_empty(),
        "items kept after the stream dropped: {mine_left:?}"
    );
}

/// A task that panics after 5 items: the 5 items come, then the error, then the end.
#[test]
fn a_stream_whose_task_panics_midway() {
    cluster();
    let mut stream = breaks_at::remote(5).expect("submit");
    for i in 0..5 {
        let r = stream
            .next()
            .expect("an item")
            .expect("an item before the panic");
        assert_eq!(oxray::get(&r).expect("value"), i);
    }
    match stream.next() {
        Some(Err(Error::TaskFailed { message, .. })) => {
            assert!(message.contains("broke at 5"), "{message}")
        }
        other => panic!("expected the task's error, got {other:?}"),
    }
    assert!(stream.next().is_none());
}

/// Counts up, recording in a file how far it got (its progress is visible while it runs).
#[oxray::remote]
fn counted(n: u64, progress: String) -> impl Iterator<Item = u64> {
    (0..n).inspect(move |i| {
        // Written aside and renamed over, so a reader never sees a half-written number.
        let aside = format!("{progress}.part");
        let _ = std::fs::write(&aside, (i + 1).to_string());
        let _ = std::fs::rename(&aside, &progress);
    })
}

/// With a window of 4, the task makes at most 4 items ahead of those taken: after taking 2 it
/// has made at most 6; reading on gets all 100 in order; a stream dropped while its task waits
/// on its window lets the task end.
#[test]
fn a_stream_window_bounds_the_items_made_ahead() {
    cluster();
    let progress = std::env::temp_dir().join(format!("oxray-window-{}", std::process::id()));
    let _ = std::fs::remove_file(&progress);
    let path = progress.display().to_string();
    /// Removes the progress files however the test ends.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(format!("{}.part", self.0));
        }
    }
    let _cleanup = Cleanup(path.clone());
    let mut stream = counted::options()
        .stream_window(4)
        .remote(100, path.clone())
        .expect("submit");
    let first: Vec<u64> = (0..2)
        .map(|_| oxray::get(&stream.next().expect("item").expect("ok")).expect("value"))
        .collect();
    assert_eq!(first, vec![0, 1]);
    // The window lets the task make items up to index 5 now (taken 2 + window 4), never more
    // until we take more.
    let made: u64 = std::fs::read_to_string(&progress)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        (2..=6).contains(&made),
        "made {made} items ahead of 2 taken"
    );
    let rest: Vec<u64> = stream
        .map(|r| oxray::get(&r.expect("ok")).expect("value"))
        .collect();
    assert_eq!(rest, (2..100).collect::<Vec<_>>());
    // Dropped while its task waits on its window: the task stops (its count is small).
    let mut stream = counted::options()
        .stream_window(2)
        .remote(1_000_000, path.clone())
        .expect("submit");
    assert_eq!(
        oxray::get(&stream.next().expect("item").expect("ok")).expect("value"),
        0
    );
    let total = stream.total();
    drop(stream);
    let made = oxray::get(&total).expect("the task ended");
    assert!(
        made < 10,
        "the task made {made} items after its stream was dropped"
    );
}
