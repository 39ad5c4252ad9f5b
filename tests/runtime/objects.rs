//! Objects: large values both ways, zero-copy views, freeing, and the store's errors.

use oxray::prelude::*;
use oxray::rkyv::{Archive, Deserialize, Serialize};

use crate::{cluster, rss_anon_kib};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = oxray::rkyv)]
struct Sample {
    label: String,
    values: Vec<f64>,
}

#[oxray::remote]
fn sum_owned(xs: Vec<f64>) -> f64 {
    xs.iter().sum()
}

#[oxray::remote]
fn make_big(n: u64, scale: f64) -> Vec<f64> {
    (0..n).map(|i| i as f64 * scale).collect()
}

#[oxray::remote]
fn summarize(s: Sample) -> Sample {
    Sample {
        label: s.label.to_uppercase(),
        values: vec![s.values.iter().sum()],
    }
}

/// Sums a view and reports how much this worker's private memory grew while reading it.
#[oxray::remote]
fn sum_view_memory(xs: ObjectView<Vec<f64>>) -> (f64, u64) {
    let before = rss_anon_kib();
    let sum: f64 = xs.iter().map(|x| x.to_native()).sum();
    (sum, rss_anon_kib().saturating_sub(before))
}

/// The same through an owned copy.
#[oxray::remote]
fn sum_copy_memory(xs: ObjectView<Vec<f64>>) -> (f64, u64) {
    let before = rss_anon_kib();
    let owned: Vec<f64> = xs.deserialize().expect("copy");
    let sum: f64 = owned.iter().sum();
    (sum, rss_anon_kib().saturating_sub(before))
}

#[test]
fn large_objects_both_ways() {
    cluster();
    let n = 2_000_000u64; // 16 MB: in the store, not inline
    let data: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let expected: f64 = data.iter().sum();
    let big = oxray::put(&data).unwrap();
    assert_eq!(
        oxray::get(&sum_owned::remote(&big).unwrap()).unwrap(),
        expected
    );
    // By value: a large argument is put into the store on the caller's behalf.
    assert_eq!(
        oxray::get(&sum_owned::remote(data.clone()).unwrap()).unwrap(),
        expected
    );
    // A large result made by a task.
    let made = make_big::remote(n, 0.5).unwrap();
    let back = oxray::get(&made).unwrap();
    assert_eq!(back.len(), n as usize);
    assert_eq!(back[12345], 12345.0 * 0.5);
    let view = oxray::get_view(&made).unwrap();
    assert_eq!(view[777].to_native(), 388.5);
    // And passed on to another task without the driver copying it.
    assert_eq!(
        oxray::get(&sum_owned::remote(&made).unwrap()).unwrap(),
        expected * 0.5
    );
}

#[test]
fn user_types_round_trip() {
    cluster();
    let s = Sample {
        label: "setting-a".into(),
        values: vec![1.0, 2.0, 3.5],
    };
    let r = summarize::remote(s.clone()).unwrap();
    assert_eq!(
        oxray::get(&r).unwrap(),
        Sample {
            label: "SETTING-A".into(),
            values: vec![6.5]
        }
    );
    let p = oxray::put(&s).unwrap();
    assert_eq!(oxray::get_view(&p).unwrap().label, "setting-a");
}

#[test]
fn views_do_not_copy_into_the_task() {
    cluster();
    let n = 32 << 20; // 256 MiB of f64
    let data: Vec<f64> = (0..n).map(|i| (i % 1000) as f64).collect();
    let expected: f64 = data.iter().sum();
    let big = oxray::put(&data).unwrap();
    drop(data);
    let (sum, view_growth) = oxray::get(&sum_view_memory::remote(&big).unwrap()).unwrap();
    assert_eq!(sum, expected);
    let (sum2, copy_growth) = oxray::get(&sum_copy_memory::remote(&big).unwrap()).unwrap();
    assert_eq!(sum2, expected);
    // The copy costs the object's size in private memory; the view costs nothing of the kind.
    assert!(
        copy_growth > 200 << 10,
        "an owned copy should grow memory: {copy_growth} KiB"
    );
    assert!(
        view_growth < 16 << 10,
        "reading a 256 MiB view grew the worker's private memory by {view_growth} KiB"
    );
}

#[test]
fn store_memory_is_freed_when_the_last_ref_drops() {
    // In a driver of its own: the shared test store has other tests' objects coming and going.
    let out = crate::processes::run(&["store-free"], None);
    let num = |key: &str| -> u64 {
        crate::processes::value(&out, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {out}"))
    };
    let (before, with, after) = (num("before"), num("with"), num("after"));
    assert!(
        with >= before + (64 << 20) + 32_000_000,
        "a put of 64 MiB and a task result of 32 MB should be in the store: {out}"
    );
    assert!(after <= before + (1 << 20), "store use did not drop: {out}");
}

/// Reads its argument as a native `&[f64]` in place and returns what it saw: length, sum and
/// whether the slice points into the store's mapping rather than a copy (its first element's
/// address is the view's).
#[oxray::remote]
fn native_sum(xs: ObjectView<Vec<f64>>) -> (u64, f64, bool) {
    let native: &[f64] = xs.as_slice();
    let in_place = std::ptr::eq(native.as_ptr().cast::<u8>(), xs.as_ptr().cast::<u8>());
    (native.len() as u64, native.iter().sum(), in_place)
}

/// A view of a vector of numbers is a plain `&[f64]` (no copy), equal to the data put, in the
/// driver and in a task.
#[test]
fn views_of_numbers_are_native_slices() {
    cluster();
    let data: Vec<f64> = (0..1_000_000).map(|i| (i % 977) as f64 * 0.25).collect();
    let r = oxray::put(&data).expect("put");
    let view = oxray::get_view(&r).expect("view");
    let native: &[f64] = view.as_slice();
    assert_eq!(native, &data[..]);
    let (len, sum, in_place) = oxray::get(&native_sum::remote(&r).expect("submit")).expect("get");
    assert_eq!(len, data.len() as u64);
    assert_eq!(sum, data.iter().sum::<f64>());
    assert!(in_place, "the task's slice is a copy");
    let ints: Vec<u16> = (0..60_000).map(|i| (i * 7 % 65_521) as u16).collect();
    let r = oxray::put(&ints).expect("put");
    assert_eq!(oxray::get_view(&r).expect("view").as_slice(), &ints[..]);
}

/// `put_with_len` writes numbers straight into the store (large) or inline (small); either way
/// they read back as the vector the closure wrote, in the driver and in a task.
#[test]
fn put_with_len_fills_the_object_in_place() {
    cluster();
    let n = 3_000_000;
    let r = oxray::put_with_len::<f64>(n, |s| {
        for (i, x) in s.iter_mut().enumerate() {
            *x = (i % 1013) as f64 - 0.5;
        }
    })
    .expect("put_with_len");
    let want: Vec<f64> = (0..n).map(|i| (i % 1013) as f64 - 0.5).collect();
    assert_eq!(oxray::get_view(&r).expect("view").as_slice(), &want[..]);
    let (len, sum, _) = oxray::get(&native_sum::remote(&r).expect("submit")).expect("get");
    assert_eq!((len, sum), (n as u64, want.iter().sum::<f64>()));
    let small = oxray::put_with_len::<u32>(10, |s| {
        for (i, x) in s.iter_mut().enumerate() {
            *x = i as u32 * 3;
        }
    })
    .expect("put_with_len");
    assert_eq!(
        oxray::get(&small).expect("get"),
        (0..10).map(|i| i * 3).collect::<Vec<u32>>()
    );
}

/// Sums a vector read in place.
#[oxray::remote]
fn sum_i64(xs: ObjectView<Vec<i64>>) -> i64 {
    xs.as_slice().iter().sum()
}

/// A task returning `VecInPlace` of `n` numbers: written in place where the result is stored.
#[oxray::remote]
fn ramp(n: usize, step: i64) -> oxray::VecInPlace<i64> {
    oxray::VecInPlace::new(n, move |s| {
        for (i, x) in s.iter_mut().enumerate() {
            *x = i as i64 * step;
        }
    })
}

/// The same, fallible: `Result<VecInPlace<T>, E>` gives an `ObjectRef<Vec<T>>` too.
#[oxray::remote]
fn ramp_checked(n: usize) -> Result<oxray::VecInPlace<u16>, String> {
    if n > 1 << 24 {
        return Err(format!("{n} numbers is too many"));
    }
    Ok(oxray::VecInPlace::new(n, |s| {
        for (i, x) in s.iter_mut().enumerate() {
            *x = i as u16;
        }
    }))
}

/// A task's large result written in place (`VecInPlace`) reads back as the vector the closure
/// wrote, large (in the store) and small (inline), and through a fallible task.
#[test]
fn a_task_result_written_in_place_reads_back() {
    cluster();
    let big: ObjectRef<Vec<i64>> = ramp::remote(2_000_000, 3).expect("submit");
    let want: Vec<i64> = (0..2_000_000).map(|i| i * 3).collect();
    assert_eq!(oxray::get_view(&big).expect("view").as_slice(), &want[..]);
    let small = ramp::remote(5, -2).expect("submit");
    assert_eq!(oxray::get(&small).expect("get"), vec![0, -2, -4, -6, -8]);
    let sum = oxray::get(&sum_i64::remote(&big).expect("submit")).expect("get");
    assert_eq!(sum, want.iter().sum::<i64>());
    let checked = ramp_checked::remote(70_000).expect("submit");
    let got = oxray::get(&checked).expect("get");
    assert!(got.len() == 70_000 && got.iter().enumerate().all(|(i, x)| *x == i as u16));
    let refused = oxray::get(&ramp_checked::remote(1 << 25).expect("submit"));
    assert!(
        matches!(&refused, Err(oxray::Error::TaskFailed { message, .. }) if message.contains("too many")),
        "{refused:?}"
    );
}

/// Sums the rows of a `rows × cols` matrix read in place through ndarray.
#[oxray::remote]
fn row_sums(m: ObjectView<Vec<f64>>, rows: usize, cols: usize) -> Vec<f64> {
    match m.as_array2(rows, cols) {
        Ok(a) => a.rows().into_iter().map(|r| r.sum()).collect(),
        Err(_) => Vec::new(),
    }
}

/// With the `ndarray` feature a stored vector reads as `ArrayView1`/`ArrayView2` in place,
/// equal to the data put, in the driver and in a task; a wrong shape is an error.
#[test]
fn ndarray_views_of_stored_numbers() {
    cluster();
    let (rows, cols) = (300, 500);
    let data: Vec<f64> = (0..rows * cols).map(|i| (i % 97) as f64).collect();
    let r = oxray::put(&data).expect("put");
    let view = oxray::get_view(&r).expect("view");
    let a = view.as_array();
    assert_eq!(a.len(), rows * cols);
    assert_eq!(a.sum(), data.iter().sum::<f64>());
    assert!(std::ptr::eq(a.as_ptr(), view.as_slice().as_ptr()), "copied");
    let m = view.as_array2(rows, cols).expect("shape");
    assert_eq!(m[[2, 7]], data[2 * cols + 7]);
    assert!(view.as_array2(rows + 1, cols).is_err());
    let want: Vec<f64> = data.chunks(cols).map(|c| c.iter().sum()).collect();
    let got = oxray::get(&row_sums::remote(&r, rows, cols).expect("submit")).expect("get");
    assert_eq!(got, want);
}
