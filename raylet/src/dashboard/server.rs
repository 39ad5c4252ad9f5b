//! The dashboard's HTTP server (axum on a thread of its own).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ring::rand::SecureRandom;

use super::report;
use crate::error::{RayletError, Result};

/// The page, with its styles and script.
const PAGE: &str = include_str!("page.html");

/// How long stopping waits for the server thread to end.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A running dashboard; dropping it stops the server.
pub(crate) struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    ended: std::sync::mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    token: String,
    /// The node's local address, asked for the report.
    node: String,
}

impl Server {
    /// Serves the dashboard of the node at `node` on `127.0.0.1:port` (0: any free port).
    pub(crate) fn start(port: u16, node: &str) -> Result<Server> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|e| {
            RayletError::io(
                format!(
                    "serving the dashboard on 127.0.0.1:{port} (choose another port with \
                     --dashboard-port, or turn it off with --no-dashboard)"
                ),
                e,
            )
        })?;
        let io = |e| RayletError::io("serving the dashboard", e);
        listener.set_nonblocking(true).map_err(io)?;
        let port = listener.local_addr().map_err(io)?.port();
        let token = new_token()?;
        let url = format!("http://127.0.0.1:{port}/?token={token}");
        let shared = Arc::new(Shared {
            token,
            node: node.to_owned(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ended_tx, ended) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("oxray-dashboard".into())
            .spawn(move || {
                serve(listener, shared, stopped);
                let _ = ended_tx.send(());
            })
            .map_err(io)?;
        Ok(Server {
            url,
            stop: Some(stop),
            ended,
            thread: Some(thread),
        })
    }

    /// The page's address, token included.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Joined only once it has ended: a browser holding a request open cannot hold the
        // node's shutdown up for longer than STOP_WAIT.
        if self.ended.recv_timeout(STOP_WAIT).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("the dashboard could not start its runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("the dashboard could not listen: {e}");
                return;
            }
        };
        let app = Router::new()
            .route("/", get(page))
            .route("/api/cluster", get(cluster))
            .route("/api/timeline", get(timeline))
            .fallback(not_found)
            .with_state(shared);
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!("the dashboard stopped: {e}");
        }
    });
}

/// 128 random bits, in hex.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| {
            RayletError::io(
                "making the dashboard's token",
                std::io::Error::other("no randomness"),
            )
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether the request's `token` is the dashboard's (compared in constant time).
fn allowed(shared: &Shared, query: &HashMap<String, String>) -> bool {
    let Some(given) = query.get("token") else {
        return false;
    };
    let (a, b) = (given.as_bytes(), shared.token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Headers every answer carries: nothing cached, no token leaked in a `Referer`, no sniffing.
fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:",
        ),
    );
    r
}

fn refused() -> Response {
    answer(
        StatusCode::UNAUTHORIZED,
        "text/plain; charset=utf-8",
        "this dashboard needs its token: open the address `oxray status` prints \
         (http://127.0.0.1:PORT/?token=...)\n"
            .into(),
    )
}

async fn page(
    State(shared): State<Arc<Shared>>,
    query: Query<HashMap<String, String>>,
) -> Response {
    if !allowed(&shared, &query) {
        return refused();
    }
    answer(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_owned())
}

async fn cluster(
    State(shared): State<Arc<Shared>>,
    query: Query<HashMap<String, String>>,
) -> Response {
    if !allowed(&shared, &query) {
        return refused();
    }
    let node = shared.node.clone();
    let gathered = tokio::task::spawn_blocking(move || report::gather(&node)).await;
    match gathered {
        Ok(Ok(report)) => match serde_json::to_string(&report) {
            Ok(json) => answer(StatusCode::OK, "application/json", json),
            Err(e) => unavailable(e.to_string()),
        },
        Ok(Err(e)) => unavailable(e.to_string()),
        Err(e) => unavailable(e.to_string()),
    }
}

async fn timeline(
    State(shared): State<Arc<Shared>>,
    query: Query<HashMap<String, String>>,
) -> Response {
    if !allowed(&shared, &query) {
        return refused();
    }
    let node = shared.node.clone();
    let gathered = tokio::task::spawn_blocking(move || crate::timeline::gather(&node)).await;
    match gathered {
        Ok(Ok((nodes, _unreachable))) => {
            let trace = crate::timeline::chrome_trace(&nodes).to_string();
            let mut r = answer(StatusCode::OK, "application/json", trace);
            r.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"oxray-timeline.json\""),
            );
            r
        }
        Ok(Err(e)) => unavailable(e.to_string()),
        Err(e) => unavailable(e.to_string()),
    }
}

fn unavailable(why: String) -> Response {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        format!("the node did not answer: {why}\n"),
    )
}

async fn not_found() -> Response {
    answer(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "no such page: the dashboard is at /, its data under /api/cluster and /api/timeline\n"
            .into(),
    )
}
