//! Failures: panics and errors in tasks, killed workers, unknown functions.

use oxray::prelude::*;

use crate::{alive, cluster};

#[oxray::remote]
fn explode(code: i64) -> i64 {
    if code > 0 {
        panic!("boom {code}");
    }
    code
}

#[oxray::remote]
fn fallible(x: i64) -> Result<i64, String> {
    if x < 0 {
        Err(format!("negative input {x}"))
    } else {
        Ok(x * 2)
    }
}

#[oxray::remote]
fn pid() -> u32 {
    std::process::id()
}

#[test]
fn panic_and_err_become_task_failed_and_the_worker_survives() {
    cluster();
    match oxray::get(&explode::remote(3).unwrap()) {
        Err(Error::TaskFailed {
            message,
            function,
            pid,
        }) => {
            assert!(message.contains("boom 3"), "{message}");
            assert!(function.ends_with("failures::explode"), "{function}");
            assert!(alive(pid), "the worker that panicked is still running");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    match oxray::get(&fallible::remote(-5).unwrap()) {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("negative input -5")),
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert_eq!(oxray::get(&fallible::remote(21).unwrap()).unwrap(), 42);
    // A failed task's error reaches tasks that depend on it.
    let dependent = fallible::remote(explode::remote(1).unwrap()).unwrap();
    assert!(matches!(
        oxray::get(&dependent),
        Err(Error::TaskFailed { .. })
    ));
}

// Killing workers runs in drivers of their own (`oxray-test-driver`), so the killed worker
// cannot be one that owns objects other tests are reading.

#[test]
fn a_killed_worker_is_retried_on_a_new_worker() {
    let out = crate::processes::run(&["kill-retry"], None);
    let victim: u32 = crate::processes::value(&out, "victim")
        .and_then(|v| v.parse().ok())
        .unwrap();
    let result: u32 = crate::processes::value(&out, "result")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no result: {out}"));
    assert!(victim > 0);
    assert_ne!(result, victim, "the retry ran in another process");
    assert!(result > 0);
}

#[test]
fn without_retries_a_killed_worker_is_a_typed_error() {
    let out = crate::processes::run(&["kill-noretry"], None);
    let err = crate::processes::value(&out, "get-error").unwrap_or_else(|| panic!("{out}"));
    assert!(err.starts_with("WorkerDied"), "{err}");
    assert!(err.contains("killable"), "{err}");
}

#[test]
fn a_get_whose_owner_died_is_a_typed_error() {
    let out = crate::processes::run(&["owner-died"], None);
    let err = crate::processes::value(&out, "get-error").unwrap_or_else(|| panic!("{out}"));
    assert!(err.starts_with("OwnerDied"), "{err}");
}

/// A stored object whose owner died after this process read it once: the next read is
/// `OwnerDied` (it said "not in the store (never created here, ...)" before).
#[test]
fn a_stored_object_whose_owner_died_is_owner_died() {
    let out = crate::processes::run(&["owner-died-stored"], None);
    assert_eq!(
        crate::processes::value(&out, "first-read"),
        Some((8 << 20).to_string().as_str()),
        "{out}"
    );
    let err = crate::processes::value(&out, "get-error").unwrap_or_else(|| panic!("{out}"));
    assert!(err.starts_with("OwnerDied"), "{err}");
}

#[test]
fn an_unknown_function_is_a_typed_error() {
    cluster();
    let r: ObjectRef<i64> = oxray::__private::submit_task(
        oxray::TaskOptions::new("some_other_build::missing"),
        Vec::new(),
    )
    .unwrap();
    match oxray::get(&r) {
        Err(Error::FunctionNotFound { name }) => assert_eq!(name, "some_other_build::missing"),
        other => panic!("expected FunctionNotFound, got {other:?}"),
    }
}
