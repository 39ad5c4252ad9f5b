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

/// A free UDP port on loopback for a head (QUIC is UDP).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn up_status_down_from_a_config_file() {
    let dir = std::env::temp_dir().join(format!("oxray-up-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("cluster.secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("secret");
    let name = format!("uptest{}", std::process::id());
    let port = free_port();
    let file = dir.join("cluster.toml");
    std::fs::write(
        &file,
        format!(
            r#"
cluster_name = "{name}"
secret_file = "cluster.secret"

[head]
address = "127.0.0.1"
port = {port}
num_cpus = 1
object_store_memory = 100_000_000

[[node]]
address = "127.0.0.1"
num_cpus = 2
object_store_memory = 100_000_000

[[node]]
address = "127.0.0.1"
num_cpus = 1
resources = {{ gpu = 1 }}
object_store_memory = 100_000_000
"#
        ),
    )
    .expect("write the file");
    let file = file.display().to_string();
    let (ok, out) = oxray(&["up", &file]);
    // Whatever happens next, stop what was started.
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = oxray(&["down", &self.0]);
        }
    }
    let down = Down(file.clone());
    assert!(ok, "{out}");
    assert!(out.contains("is up: 3 nodes"), "{out}");
    // `up` returned once every node was registered: no sleep needed.
    let (ok, out) = oxray(&["status", "--file", &file]);
    assert!(ok, "{out}");
    assert!(out.contains("3 nodes (3 alive)"), "{out}");
    assert!(out.contains("{CPU: 1, gpu: 1}"), "{out}");
    assert!(out.contains(&format!("head at 127.0.0.1:{port}")), "{out}");
    // The local address of the head answers too, with the whole cluster.
    let (ok, out) = oxray(&["status", "--address", &format!("unix:@{name}-head")]);
    assert!(ok, "{out}");
    assert!(out.contains("3 nodes (3 alive)"), "{out}");
    drop(down);
    for session in ["head", "node1", "node2"] {
        let address = format!("unix:@{name}-{session}");
        let start = Instant::now();
        while oxray(&["status", "--address", &address]).0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{session} still answers after down"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_malformed_config_file_is_rejected_with_its_line() {
    let dir = std::env::temp_dir().join(format!("oxray-bad-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "cluster_name = \"x\"\nsecret = \"0123456789abcdef0123\"\n[head]\naddress = \"127.0.0.1\"\nport = 7000\nnum_cpu = 2\n",
    )
    .expect("write");
    let (ok, out) = oxray(&["up", &file.display().to_string()]);
    assert!(!ok);
    assert!(out.contains("line 6"), "{out}");
    assert!(out.contains("num_cpu"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
