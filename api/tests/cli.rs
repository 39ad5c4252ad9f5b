//! The `oxray` command: start a node, inspect it, stop it; bad input is refused clearly.

use std::process::Command;
use std::time::{Duration, Instant};

const OXRAY: &str = env!("CARGO_BIN_EXE_oxray");

fn oxray(args: &[&str]) -> (bool, String) {
    let out = Command::new(OXRAY)
        .args(args)
        .env_remove("OXRAY_ADDRESS")
        .output()
        .expect("run oxray");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn start_status_stop() {
    let session = format!("oxray-cli-test-{}", std::process::id());
    let (ok, out) = oxray(&[
        "start",
        "--head",
        "--num-cpus",
        "3",
        "--object-store-memory",
        "100000000",
        "--resources",
        "gpu=1",
        "--session",
        &session,
    ]);
    assert!(ok, "{out}");
    let address = out.lines().next().expect("address line").trim().to_owned();
    assert_eq!(address, format!("unix:@{session}"));
    // `start` returned only once the node accepts clients: no sleep needed.
    let (ok, out) = oxray(&["status", "--address", &address]);
    assert!(ok, "{out}");
    assert!(
        out.contains("{CPU: 3, gpu: 1} available of {CPU: 3, gpu: 1}"),
        "{out}"
    );
    assert!(out.contains("100.0 MB"), "{out}");
    let (ok, out) = oxray(&["stop", "--address", &address]);
    assert!(ok, "{out}");
    let start = Instant::now();
    let mut gone = false;
    while start.elapsed() < Duration::from_secs(10) {
        if !oxray(&["status", "--address", &address]).0 {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone, "the node still answers after stop");
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let (ok, out) = oxray(&["start", "--head", "--num-cpus", "many"]);
    assert!(!ok);
    assert!(out.contains("--num-cpus: `many` is not a number"), "{out}");
    let (ok, out) = oxray(&["status", "--address", "unix:@no-such-oxray-node-here"]);
    assert!(!ok);
    assert!(out.contains("cannot reach the oxray node"), "{out}");
    let (ok, out) = oxray(&["status", "--address", "localhost:1234"]);
    assert!(!ok);
    assert!(out.contains("needs its secret"), "{out}");
    let (ok, out) = oxray(&["start", "--address", "unix:@somewhere"]);
    assert!(!ok);
    assert!(out.contains("is not a head's HOST:PORT"), "{out}");
    let (ok, out) = oxray(&["start", "--num-cpus", "2"]);
    assert!(!ok);
    assert!(out.contains("say what to start"), "{out}");
    let (ok, out) = oxray(&["start", "--head", "--port", "99999"]);
    assert!(!ok);
    assert!(
        out.contains("--port: `99999` is not a port number"),
        "{out}"
    );
    let (ok, out) = oxray(&["frobnicate"]);
    assert!(!ok);
    assert!(out.contains("usage"), "{out}");
}
