//! Running `async fn` tasks and actor methods: each worker thread that runs one gets a
//! single-threaded tokio runtime (made on first use, kept for the thread's life), and the
//! function's future runs to completion on it. Inside, refs can be awaited (see
//! [`crate::await_refs`]) and tokio's timers and I/O work as in any tokio program.
//!
//! A task holds its worker thread until its future completes. An actor's `async fn(&mut self)`
//! methods run this way too (one at a time); its `async fn(&self)` methods run interleaved on
//! the actor's event loop instead (see `actor_host`).

use std::cell::OnceCell;
use std::future::Future;

use crate::registry::TaskError;

thread_local! {
    static RUNTIME: OnceCell<tokio::runtime::Runtime> = const { OnceCell::new() };
}

/// Runs `future` to completion on this thread's runtime.
pub fn block_on_task<F: Future>(future: F) -> Result<F::Output, TaskError> {
    RUNTIME.with(|cell| {
        if cell.get().is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| TaskError::App(format!("starting the task's async runtime: {e}")))?;
            let _ = cell.set(runtime);
        }
        match cell.get() {
            Some(runtime) => Ok(runtime.block_on(future)),
            None => Err(TaskError::App("the task's async runtime is gone".into())),
        }
    })
}
