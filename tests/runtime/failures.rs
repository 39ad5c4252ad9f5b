//! Failures: panics and errors in tasks, killed workers, unknown functions.

use std::time::Duration;

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

/// Writes its pid to `path`, then sleeps: the test kills it mid-task. On a later attempt (the
/// file already exists) it returns at once.
#[oxray::remote]
fn killable(path: String) -> u32 {
    if std::path::Path::new(&path).exists() {
        return std::process::id();
    }
    std::fs::write(&path, std::process::id().to_string()).expect("write pid file");
    std::thread::sleep(Duration::from_secs(60));
    0
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

fn pid_file(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("oxray-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path.display().to_string()
}

fn kill_when_started(path: &str) -> u32 {
    let mut victim = 0;
    assert!(
        crate::eventually(Duration::from_secs(20), || {
            victim = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            victim != 0
        }),
        "the task never started"
    );
    // SAFETY: kill(2) on a pid our task reported; it is one of this test's worker processes.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    victim
}

#[test]
fn a_killed_worker_is_retried_on_a_new_worker() {
    cluster();
    let path = pid_file("retry");
    let r = killable::remote(path.clone()).unwrap();
    let victim = kill_when_started(&path);
    let second = oxray::get_timeout(&r, Duration::from_secs(30)).unwrap();
    assert_ne!(second, victim, "the retry ran in another process");
    assert!(second != 0);
}

#[test]
fn without_retries_a_killed_worker_is_a_typed_error() {
    cluster();
    let path = pid_file("noretry");
    let r = killable::options()
        .max_retries(0)
        .remote(path.clone())
        .unwrap();
    kill_when_started(&path);
    match oxray::get_timeout(&r, Duration::from_secs(30)) {
        Err(Error::WorkerDied { function, .. }) => assert!(function.ends_with("killable")),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    // The runtime goes on.
    assert!(oxray::get(&pid::remote().unwrap()).unwrap() > 0);
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
