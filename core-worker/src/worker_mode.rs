//! Entering worker mode.
//!
//! Workers are the driver's own executable started by the raylet with `OXRAY_WORKER_ID` and
//! `OXRAY_RAYLET_ADDRESS` set. A constructor (the `ctor` crate) runs before `main` in every
//! process that links oxray; when it finds those variables it becomes a worker and never returns
//! to `main`. So worker mode works for a plain `fn main`, `#[oxray::main]`, examples and
//! `cargo test` binaries alike. Code in other constructors (`#[ctor]`, statics initialized before
//! main) also runs in workers.

use oxray_common::protocol::ClientKind;
use oxray_common::WorkerId;
use oxray_raylet::workers::{ENV_DIRECT_HOST, ENV_RAYLET, ENV_WORKER_ID};

use crate::core::CoreWorker;

#[ctor::ctor]
fn enter_worker_mode() {
    let Ok(id) = std::env::var(ENV_WORKER_ID) else {
        return;
    };
    let address = std::env::var(ENV_RAYLET).unwrap_or_default();
    let direct_host = std::env::var(ENV_DIRECT_HOST).ok();
    // Processes this worker starts are not workers.
    std::env::remove_var(ENV_WORKER_ID);
    std::env::remove_var(ENV_RAYLET);
    std::env::remove_var(ENV_DIRECT_HOST);
    let code = match run(&id, &address, direct_host.as_deref()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("oxray worker {id}: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run(id: &str, address: &str, direct_host: Option<&str>) -> Result<(), String> {
    let worker = WorkerId(id.parse().map_err(|_| format!("bad worker id {id}"))?);
    let session = address.strip_prefix("unix:@").unwrap_or(address);
    let listen_name = oxray_common::ids::worker_socket(session, worker);
    let listener =
        crate::executor::bind(&listen_name).map_err(|e| format!("binding {listen_name}: {e}"))?;
    let mut listen = format!("unix:@{listen_name}");
    // A worker of a cluster node also takes direct connections from other nodes; it binds the
    // port before registering, since the raylet may lease it out as soon as it registered.
    let direct = match direct_host {
        Some(host) => {
            let l = crate::direct::bind(host).map_err(|e| format!("binding {host}:0: {e}"))?;
            let port = l.local_addr().map_err(|e| e.to_string())?.port();
            let ip = l.local_addr().map_err(|e| e.to_string())?.ip();
            listen = oxray_common::address::with_direct(&listen, &format!("{ip}:{port}"));
            Some(l)
        }
        None => None,
    };
    let core = CoreWorker::connect(address, ClientKind::Worker, worker, listen, String::new())
        .map_err(|e| e.to_string())?;
    crate::executor::serve(core, listener, direct)
}

/// Whether this process is a worker (its constructor consumed the worker variables).
pub fn is_worker() -> bool {
    crate::core::current().is_ok_and(|c| c.kind() == ClientKind::Worker)
}
