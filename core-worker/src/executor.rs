//! Worker mode: accept task pushes from submitters and run them.
//!
//! A worker listens on its own socket; a submitter that leased it connects and pushes tasks. One
//! task runs at a time (a lease is one CPU slot); a task that blocks in `get` tells the raylet,
//! which lends its CPU out so nested tasks cannot deadlock. A panic or `Err` in the function fails
//! only that task; the worker keeps serving.

use std::io::{BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use oxray_common::frame::{self, FrameError};
use oxray_common::protocol::{
    FailureKind, FromWorker, TaskFailure, TaskOutcome, TaskSpec, ToWorker,
};
use oxray_object_store::HeapBytes;

use crate::args::TaskArgs;
use crate::core::CoreWorker;
use crate::registry::{self, TaskError};
use crate::value::{encode_heap, INLINE_MAX};

/// Serializes task execution in this worker.
static EXEC: Mutex<()> = Mutex::new(());

/// Binds the worker's task socket (abstract namespace).
pub(crate) fn bind(name: &str) -> std::io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    UnixListener::bind_addr(&addr)
}

/// Serves submitters until the process exits (when the raylet connection closes).
pub(crate) fn serve(core: Arc<CoreWorker>, listener: UnixListener) -> ! {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let core = core.clone();
        let _ = std::thread::Builder::new()
            .name("oxray-task-conn".into())
            .spawn(move || serve_conn(core, stream));
    }
    std::process::exit(0)
}

fn serve_conn(core: Arc<CoreWorker>, stream: UnixStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut buf = HeapBytes::new();
    loop {
        match frame::read::<ToWorker, _>(&mut reader, &mut buf) {
            Ok(ToWorker::Task(spec)) => {
                let outcome = execute(&core, &spec);
                let reply = FromWorker::Done {
                    id: spec.id,
                    outcome,
                };
                let Ok(bytes) = frame::encode(&reply) else {
                    break;
                };
                if writer.write_all(&bytes).is_err() {
                    break;
                }
            }
            Err(FrameError::Closed) => break,
            Err(e) => {
                eprintln!("oxray worker: dropped a submitter connection: {e}");
                break;
            }
        }
    }
}

fn failure(kind: FailureKind, message: String, spec: &TaskSpec) -> TaskOutcome {
    TaskOutcome::Failed(TaskFailure {
        kind,
        message,
        function: spec.function.clone(),
        pid: std::process::id(),
    })
}

/// Runs one task and says how it ended.
pub(crate) fn execute(core: &Arc<CoreWorker>, spec: &TaskSpec) -> TaskOutcome {
    let _running = EXEC.lock().unwrap_or_else(|p| p.into_inner());
    let Some(invoke) = registry::lookup(&spec.function) else {
        return failure(
            FailureKind::FunctionNotFound,
            format!("no function {} in this executable", spec.function),
            spec,
        );
    };
    let args = TaskArgs {
        args: &spec.args,
        core,
    };
    let value = match catch_unwind(AssertUnwindSafe(|| invoke(&args))) {
        Ok(Ok(v)) => v,
        Ok(Err(TaskError::App(m))) => return failure(FailureKind::Error, m, spec),
        Ok(Err(TaskError::BadArgument(m))) => return failure(FailureKind::BadArgument, m, spec),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the task panicked".into());
            return failure(FailureKind::Panic, format!("panicked: {msg}"), spec);
        }
    };
    let len = match value.encoded_len() {
        Ok(l) => l,
        Err(e) => return failure(FailureKind::Store, e.to_string(), spec),
    };
    if len <= INLINE_MAX {
        return match encode_heap(value.as_ref(), len) {
            Ok(bytes) => TaskOutcome::Inline {
                fingerprint: value.fingerprint(),
                bytes: bytes.to_vec(),
            },
            Err(e) => failure(FailureKind::Store, e.to_string(), spec),
        };
    }
    match core.create_in_store(spec.id, len, value.as_ref()) {
        Ok(()) => TaskOutcome::Stored,
        Err(e) => failure(FailureKind::Store, e.to_string(), spec),
    }
}
