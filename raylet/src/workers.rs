//! Starting worker processes and forwarding their output.
//!
//! A worker is the driver's own executable started with `OXRAY_WORKER_*` variables set; the
//! core-worker's start-up hook sees them and runs the worker loop instead of `main`. Its stdout
//! and stderr are piped here and forwarded line by line, prefixed with its pid, to the driver of
//! its job (or to the raylet's own stderr when that driver is gone).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use oxray_common::protocol::FromRaylet;
use oxray_common::WorkerId;

use crate::node::{send, Conn, Node};

/// Environment variable naming the worker's id; its presence puts a process in worker mode.
pub const ENV_WORKER_ID: &str = "OXRAY_WORKER_ID";
/// Environment variable with the raylet's address.
pub const ENV_RAYLET: &str = "OXRAY_RAYLET_ADDRESS";

pub(crate) fn spawn(
    node: &Node,
    exe: &str,
    id: WorkerId,
    driver: Option<Conn>,
) -> std::io::Result<Child> {
    let mut child = Command::new(exe)
        .env(ENV_WORKER_ID, id.0.to_string())
        .env(ENV_RAYLET, &node.address)
        .env_remove("OXRAY_ADDRESS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    if let Some(out) = child.stdout.take() {
        forward(out, pid, 1, driver.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward(err, pid, 2, driver);
    }
    Ok(child)
}

fn forward(stream: impl Read + Send + 'static, pid: u32, which: u8, driver: Option<Conn>) {
    let spawned = std::thread::Builder::new()
        .name(format!("oxray-out-{pid}"))
        .spawn(move || {
            let reader = BufReader::new(stream);
            for line in reader.lines() {
                let Ok(line) = line else { break };
                match &driver {
                    Some(conn) => send(
                        conn,
                        &FromRaylet::WorkerOutput {
                            pid,
                            stream: which,
                            line,
                        },
                    ),
                    None => eprintln!("(pid={pid}) {line}"),
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("[raylet] cannot forward output of worker {pid}: {e}");
    }
}

/// Waits for a killed child in the background so it does not stay a zombie.
pub(crate) fn reap_later(child: Option<Child>) {
    if let Some(mut child) = child {
        let _ = std::thread::Builder::new()
            .name("oxray-reap".into())
            .spawn(move || {
                let _ = child.wait();
            });
    }
}
