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

/// Each item says which process made it: (pid, index).
#[oxray::remote]
fn pid_and_index(n: u64) -> impl Iterator<Item = (u32, u64)> {
    let pid = std::process::id();
    (0..n).map(move |i| (pid, i))
}

/// A streaming task whose worker is killed mid-way is run again, and the stream gives each
/// item once, in order: the items after the kill come from another process.
#[test]
fn a_stream_whose_worker_is_killed_is_retried_without_duplicates() {
    cluster();
    // A window of 4 holds the task at the 5th item ahead, so it is killed mid-stream.
    let mut stream = pid_and_index::options()
        .stream_window(4)
        .remote(40)
        .expect("submit");
    let mut seen: Vec<(u32, u64)> = (0..6)
        .map(|_| oxray::get(&stream.next().expect("an item").expect("ok")).expect("value"))
        .collect();
    let first_pid = seen[0].0;
    // SAFETY: kill(2) on the worker process this test's task runs in.
    assert_eq!(unsafe { libc::kill(first_pid as i32, libc::SIGKILL) }, 0);
    for r in stream.by_ref() {
        seen.push(oxray::get(&r.expect("an item")).expect("value"));
    }
    let indexes: Vec<u64> = seen.iter().map(|(_, i)| *i).collect();
    assert_eq!(
        indexes,
        (0..40).collect::<Vec<_>>(),
        "items lost or repeated"
    );
    assert!(
        seen.iter().any(|(pid, _)| *pid != first_pid),
        "no item came from the retry: {seen:?}"
    );
    assert_eq!(oxray::get(&stream.total()).expect("count"), 40);
}

/// Streams are awaited item by item (here on tokio): as a `Stream` (`into_async`), in order,
/// and with `next_async`, the task's error after the items before it.
#[test]
fn a_stream_is_awaited_item_by_item() {
    use futures_util::StreamExt;
    cluster();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut stream = count_up::remote(1_000).expect("submit").into_async();
        let mut values = Vec::new();
        while let Some(r) = stream.next().await {
            values.push(r.expect("an item").await.expect("value"));
        }
        assert_eq!(values, (0..1_000).collect::<Vec<u64>>());
        // Fused: asked again after the end, it stays ended.
        assert!(stream.next().await.is_none());

        // Without `StreamExt`: `next_async`.
        let mut broken = breaks_at::remote(3).expect("submit");
        for i in 0..3 {
            let r = broken.next_async().await.expect("an item").expect("ok");
            assert_eq!(r.await.expect("value"), i);
        }
        match broken.next_async().await {
            Some(Err(Error::TaskFailed { message, .. })) => {
                assert!(message.contains("broke at 3"), "{message}")
            }
            other => panic!("expected the task's error, got {other:?}"),
        }
        assert!(broken.next_async().await.is_none());
    });
}

/// Three returns of different types, each a ref of its own.
#[oxray::remote(num_returns = 3)]
fn stats(xs: Vec<f64>) -> (f64, f64, usize) {
    let sum: f64 = xs.iter().sum();
    let max = xs.iter().copied().fold(f64::MIN, f64::max);
    (sum, max, xs.len())
}

/// `n` returns of one type, from a `Vec`; `Err` fails every one of them.
#[oxray::remote(num_returns = 4)]
fn quarters(n: u64, fail: bool) -> Result<Vec<Vec<u64>>, String> {
    if fail {
        return Err("no quarters today".into());
    }
    // A `Vec` of the wrong length is a failure too.
    let parts = if n == 0 { 3 } else { 4 };
    Ok((0..parts).map(|q| (q * n..(q + 1) * n).collect()).collect())
}

#[oxray::remote]
fn add_up(x: f64, n: usize) -> f64 {
    x + n as f64
}

/// `num_returns`: each return is its own object, usable alone (even as another task's
/// argument before it is ready); a failed task fails all of them.
#[test]
fn a_task_with_several_returns_gives_a_ref_for_each() {
    cluster();
    let (sum, max, len) = stats::remote(vec![1.0, 5.0, 2.5]).expect("submit");
    // Passed on before it is ready: the next task waits for this one return.
    let later = add_up::remote(&sum, &len).expect("submit");
    assert_eq!(oxray::get(&max).expect("max"), 5.0);
    assert_eq!(oxray::get(&len).expect("len"), 3);
    assert_eq!(oxray::get(&sum).expect("sum"), 8.5);
    assert_eq!(oxray::get(&later).expect("sum + len"), 11.5);
    assert_ne!(sum.id(), max.id());

    let parts = quarters::remote(50_000, false).expect("submit");
    assert_eq!(parts.len(), 4);
    // Large returns go to the store, one object each.
    for (q, r) in parts.iter().enumerate().rev() {
        let v = oxray::get_view(r).expect("a quarter");
        let q = q as u64;
        assert_eq!(
            v.as_slice(),
            &(q * 50_000..(q + 1) * 50_000).collect::<Vec<u64>>()[..]
        );
    }
    for parts in [
        quarters::remote(1, true).expect("submit"),
        quarters::remote(0, false).expect("submit"),
    ] {
        for r in &parts {
            match oxray::get(r) {
                Err(Error::TaskFailed { message, .. }) => assert!(
                    message.contains("no quarters") || message.contains("num_returns is 4"),
                    "{message}"
                ),
                other => panic!("expected the task's error, got {other:?}"),
            }
        }
    }
}
