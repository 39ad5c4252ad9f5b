//! The dashboard, as a person sees it: a node started with `oxray start`, the quickstart and
//! the actors example run against it, then the page the node serves is loaded in headless
//! Chromium and its rendered DOM checked; its JSON API and `oxray status --json` agree, and a
//! request without the token is refused.
//!
//! Chromium comes from the distribution (`.ci/run` installs Debian's `chromium` when missing).
//! Without it, the test says so and passes only outside CI (`CI` unset), so `cargo test` works
//! on a machine with only Rust; under CI a missing browser fails it.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{example, Scratch};

/// Stops the node at `address` on drop, so a failing test leaves no node behind.
struct Node<'a> {
    scratch: &'a Scratch,
    address: String,
}

impl Drop for Node<'_> {
    fn drop(&mut self) {
        let _ = self.scratch.oxray(&["stop", "--address", &self.address]);
    }
}

/// The browser: Debian's `chromium` (or another Chromium or Chrome on the path).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs `child` to its end, giving up (and killing it, by its pid) after `limit`; its stdout.
fn output_within(mut child: Child, limit: Duration) -> (bool, String) {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(());
        out
    });
    // The reader ends when the browser closes its stdout, i.e. when it exits.
    if rx.recv_timeout(limit).is_err() {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the browser");
    let out = reader.join().unwrap_or_default();
    (status.success(), out)
}

/// Loads `url` in headless Chromium with `extra` flags; what it printed.
fn browse(browser: &Path, profile: &Path, url: &str, extra: &[&str]) -> (bool, String) {
    let child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // Virtual time runs the page's script (its fetch and first render) before the dump.
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    output_within(child, Duration::from_secs(120))
}

/// A plain HTTP/1.1 GET of `path` on `127.0.0.1:port`: the status code and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// A live actor of this test's own, for the page to show beside the examples' dead ones.
#[oxray::actor]
pub struct Tally {
    n: u64,
}

#[oxray::actor]
impl Tally {
    fn new() -> Self {
        Tally { n: 0 }
    }

    fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

#[test]
fn the_dashboard_shows_nodes_tasks_actors_and_objects_in_a_browser() {
    let scratch = Scratch::new("dashboard");
    let session = format!("db{}", std::process::id());
    let started = scratch.oxray(&[
        "start",
        "--head",
        "--num-cpus",
        "2",
        "--session",
        &session,
        "--dashboard-port",
        "0",
    ]);
    assert!(started.ok, "{}{}", started.stdout, started.stderr);
    let err = started.stderr;
    let node = Node {
        scratch: &scratch,
        address: format!("unix:@{session}"),
    };
    let url = err
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no dashboard address in: {err}"))
        .to_owned();
    let port: u16 = url["http://127.0.0.1:".len()..]
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let token = url.split("token=").nth(1).expect("a token");
    assert_eq!(token.len(), 32, "{url}");

    // Work for the page to show: 10,011 tasks, then actors (called from the driver and tasks).
    for name in ["quickstart", "actors"] {
        let run = Command::new(example(name))
            .env("TMPDIR", &scratch.0)
            .env("OXRAY_ADDRESS", &node.address)
            .output()
            .expect("run the example");
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }

    // A program handed to the node with `oxray job submit`.
    let echo = scratch.oxray(&[
        "job",
        "submit",
        "--address",
        &node.address,
        "--",
        "/bin/echo",
        "dashboard says hi",
    ]);
    assert!(echo.ok, "{}", echo.stderr);
    assert!(echo.stdout.contains("dashboard says hi"), "{}", echo.stdout);

    // This test is a driver too, while the page is looked at: a live job, a live named actor
    // and a 6 MB object in the store.
    let cluster = oxray::init_with(
        oxray::Config::new()
            .address(node.address.clone())
            .namespace("dash"),
    )
    .expect("attach to the node");
    let tally = Tally::options().name("tally").remote().expect("an actor");
    for i in 0..5 {
        oxray::get(&tally.add(i).expect("call")).expect("a sum");
    }
    let big = oxray::put(&vec![1u8; 6_000_000]).expect("put");

    // Without the token (or with a wrong one) nothing is served.
    assert_eq!(http_get(port, "/").0, 401);
    assert_eq!(http_get(port, "/api/cluster?token=00").0, 401);
    let wrong = format!("/api/cluster?token={}", "0".repeat(32));
    assert_eq!(http_get(port, &wrong).0, 401);

    // The JSON API and `oxray status --json` give the same report.
    let (code, body) = http_get(port, &format!("/api/cluster?token={token}"));
    assert_eq!(code, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let status = scratch.oxray(&["status", "--json", "--address", &node.address]);
    assert!(status.ok, "{}", status.stderr);
    let cli: serde_json::Value =
        serde_json::from_str(&status.stdout).expect("JSON from status --json");
    for report in [&api, &cli] {
        assert_eq!(
            report["nodes"].as_array().map(Vec::len),
            Some(1),
            "{report}"
        );
        let functions = report["tasks"]["by_function"]
            .as_array()
            .expect("functions");
        let runs = |name: &str| {
            functions
                .iter()
                .find(|f| f["function"] == name)
                .map(|f| f["finished"].as_u64().unwrap_or(0) + f["failed"].as_u64().unwrap_or(0))
        };
        assert_eq!(runs("quickstart::square"), Some(10_005), "{report}");
        assert_eq!(runs("quickstart::checked_sqrt"), Some(1));
        assert!(
            runs("actors::Counter::incr").is_some_and(|n| n >= 2000),
            "{report}"
        );
        assert_eq!(runs("dashboard::Tally::add"), Some(5), "{report}");
        let actors = report["actors"].as_array().expect("actors");
        let actor = |name: &str| actors.iter().find(|a| a["name"] == name);
        assert!(
            actor("global").is_some_and(|a| a["class"] == "actors::Counter"
                && a["state"] == "dead"
                && a["death"] != ""),
            "{report}"
        );
        assert!(
            actor("tally").is_some_and(|a| a["state"] == "alive" && a["pid"] != 0),
            "{report}"
        );
        let jobs = report["jobs"].as_array().expect("jobs");
        assert!(
            jobs.iter()
                .any(|j| j["driver"] == true && j["namespace"] == "dash"),
            "{report}"
        );
        let objects = report["objects"]["largest"].as_array().expect("objects");
        assert!(
            objects
                .iter()
                .any(|o| o["size"].as_u64() >= Some(6_000_000)),
            "{report}"
        );
    }
    assert_eq!(api["nodes"][0]["id"], cli["nodes"][0]["id"]);
    assert_eq!(api["submitted"][0]["command"], "echo dashboard says hi");
    assert_eq!(api["submitted"][0]["state"], "succeeded");

    // The timeline link serves Chrome trace JSON.
    let (code, trace) = http_get(port, &format!("/api/timeline?token={token}"));
    assert_eq!(code, 200);
    let trace: serde_json::Value = serde_json::from_str(&trace).expect("trace JSON");
    assert!(trace["traceEvents"]
        .as_array()
        .is_some_and(|e| e.len() > 10_011));

    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no chromium on the path: .ci/run installs Debian's `chromium` package"
        );
        eprintln!("skipping the browser half: no chromium on the path (apt install chromium)");
        return;
    };
    let profile = scratch.0.join("chromium-profile");
    let (ok, dom) = browse(&browser, &profile, &url, &["--dump-dom"]);
    assert!(ok, "chromium failed: {dom}");
    assert!(dom.contains(r#"data-state="ready""#), "{dom}");
    let node_id = api["nodes"][0]["id"].as_str().expect("node id");
    let short: String = node_id.chars().take(12).collect();
    for shown in [
        short.as_str(),
        "(head)",
        "quickstart::square",
        "<td class=\"num\">10005</td>",
        "actors::Counter::incr",
        "actor method",
        "demo/global",
        "its owner exited",
        "dash/tally",
        "dashboard::Tally",
        "<span class=\"state-alive\">alive</span>",
        "6.0 MB",
        "running",
        "echo dashboard says hi",
        "<span class=\"state-succeeded\">succeeded</span>",
    ] {
        assert!(
            dom.contains(shown),
            "the page does not show {shown:?}: {dom}"
        );
    }
    // The cards add up: 10,011 task runs and the actors' calls; one failed task (checked_sqrt).
    let finished = api["tasks"]["finished"].as_u64().expect("finished");
    assert!(
        dom.contains(&format!(
            "<div class=\"n\">{finished}</div><div class=\"l\">runs finished"
        )),
        "{dom}"
    );

    // A screenshot, kept where OXRAY_DASHBOARD_SCREENSHOT says (for a person to look at).
    let shot = scratch.0.join("dashboard.png");
    let (ok, out) = browse(
        &browser,
        &profile,
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1600",
        ],
    );
    assert!(ok, "chromium failed: {out}");
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );
    if let Some(keep) = std::env::var_os("OXRAY_DASHBOARD_SCREENSHOT") {
        std::fs::write(keep, &png).expect("keep the screenshot");
    }
    drop(big);
    drop(tally);
    drop(cluster);
    drop(node);
}
