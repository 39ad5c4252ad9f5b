//! The dashboard: the cluster in a browser, and the report behind it.
//!
//! The head node serves one HTML page and a small JSON API on loopback (`--dashboard-port`,
//! 8265 by default as Ray's; `--no-dashboard` turns it off). Every request must carry the
//! node's random access token (`?token=…`, part of the address `oxray start` and `oxray status`
//! print), because any local user can reach a loopback port:
//!
//! - `GET /?token=T`: the page (plain HTML, CSS and JavaScript embedded in the binary; it asks
//!   the API every two seconds and draws what it gets);
//! - `GET /api/cluster?token=T`: the [`report::Report`] as JSON, the same document
//!   `oxray status --json` prints;
//! - `GET /api/timeline?token=T`: the timeline of every node reachable from the head as Chrome
//!   trace JSON (the `oxray timeline` file), to open in Perfetto.
//!
//! The server runs on a thread of its own with a single-threaded tokio runtime; the report is
//! gathered by asking the node over its local socket like any other tool, so the dashboard
//! adds nothing to the node's event loop but those requests.

pub mod report;
#[cfg(feature = "dashboard")]
mod server;

#[cfg(feature = "dashboard")]
pub(crate) use server::Server;

/// The dashboard's port unless told otherwise (Ray's).
pub const DEFAULT_PORT: u16 = 8265;
