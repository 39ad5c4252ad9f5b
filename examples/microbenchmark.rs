//! oxray's version of `ray microbenchmark`: the same row names and units, so the two can be read
//! side by side on one machine.
//!
//! `cargo run --release --example microbenchmark` (add `-- --quick` for shorter trials, or
//! `-- --filter put` to run the rows whose name contains "put").
//!
//! Each row runs a warm-up and then 3 trials of about a second, and prints the mean and standard
//! deviation of the rate, like Ray's `timeit`.

use std::future::Future;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

#[oxray::remote]
fn small_value() -> Vec<u8> {
    b"ok".to_vec()
}

#[oxray::remote]
fn create_object_containing_ref() -> Vec<oxray::ObjectRef<i64>> {
    (0..10_000)
        .map(|_| oxray::put(&1i64).expect("put"))
        .collect()
}

#[oxray::remote]
fn do_put_small() {
    for _ in 0..100 {
        black_box(oxray::put(&0i64).expect("put"));
    }
}

#[oxray::remote]
fn do_put() {
    let data: Vec<i64> = (0..10 * 1024 * 1024).collect();
    for _ in 0..10 {
        black_box(oxray::put(&data).expect("put"));
    }
}

/// The actor of Ray's actor rows: returns a small value.
#[oxray::actor]
pub struct Server;

#[oxray::actor]
impl Server {
    fn new() -> Self {
        Server
    }

    fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }

    fn small_value_arg(&self, x: i64) -> Vec<u8> {
        black_box(x);
        b"ok".to_vec()
    }
}

/// A streaming task of `n` small items (the `streaming items` row).
#[oxray::remote]
fn many_items(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

/// An async actor (Ray's `async def` methods): its calls run interleaved on an event loop.
#[oxray::actor]
pub struct AsyncServer;

#[oxray::actor]
impl AsyncServer {
    fn new() -> Self {
        AsyncServer
    }

    async fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }

    async fn small_value_with_arg(&self, x: i64) -> i64 {
        x
    }
}

/// An actor that calls other actors (Ray's `Client`).
#[oxray::actor]
pub struct Client {
    servers: Vec<oxray::ActorHandle<Server>>,
}

#[oxray::actor]
impl Client {
    fn new(servers: Vec<oxray::ActorHandle<Server>>) -> Self {
        Client { servers }
    }

    fn small_value_batch(&self, n: u32) {
        let refs: Vec<_> = self
            .servers
            .iter()
            .flat_map(|s| (0..n).map(move |_| s.small_value().expect("call")))
            .collect();
        oxray::get_all(&refs).expect("get");
    }

    fn small_value_batch_arg(&self, n: u32) {
        let x = oxray::put(&0i64).expect("put");
        let refs: Vec<_> = self
            .servers
            .iter()
            .flat_map(|s| (0..n).map(|_| s.small_value_arg(&x).expect("call")))
            .collect();
        oxray::get_all(&refs).expect("get");
    }
}

/// Calls `n` async-actor methods spread over `servers` and waits (the n:n async-actor row).
#[oxray::remote]
fn call_async_actors(servers: Vec<oxray::ActorHandle<AsyncServer>>, n: u32) {
    let refs: Vec<_> = (0..n as usize)
        .map(|i| servers[i % servers.len()].small_value().expect("call"))
        .collect();
    oxray::get_all(&refs).expect("get");
}

/// Submits `n` small tasks and waits for them (one client of `multi client tasks async`).
#[oxray::remote]
fn submit_tasks(n: u32) {
    let refs: Vec<_> = (0..n)
        .map(|_| small_value::remote().expect("submit"))
        .collect();
    oxray::get_all(&refs).expect("get");
}

/// A task calling actors round robin (Ray's `work` in "n:n actor calls async").
#[oxray::remote]
fn call_actors(servers: Vec<oxray::ActorHandle<Server>>, n: u32) {
    let refs: Vec<_> = (0..n as usize)
        .map(|i| servers[i % servers.len()].small_value().expect("call"))
        .collect();
    oxray::get_all(&refs).expect("get");
}

struct Bench {
    trial: Duration,
    filter: Option<String>,
}

impl Bench {
    /// Whether the row named `row` runs (its name contains the `--filter` text, if any).
    fn wants(&self, row: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| row.contains(f.as_str()))
    }

    /// Runs `f` (which does `multiplier` units of work per call) and prints the rate.
    fn timeit(&self, name: &str, multiplier: f64, mut f: impl FnMut()) {
        if !self.wants(name) {
            return;
        }
        let warm = Instant::now();
        while warm.elapsed() < self.trial / 5 {
            f();
        }
        let mut rates = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < self.trial {
                f();
                n += 1;
            }
            rates.push(n as f64 * multiplier / start.elapsed().as_secs_f64());
        }
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let sd =
            (rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64).sqrt();
        println!("{name} per second {mean:.2} +- {sd:.2}");
    }
}

fn main() -> oxray::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--cold-start-child") {
        return cold_start_child();
    }
    let quick = args.iter().any(|a| a == "--quick");
    let filter = args
        .iter()
        .position(|a| a == "--filter")
        .and_then(|i| args.get(i + 1).cloned());
    let bench = Bench {
        trial: Duration::from_millis(if quick { 300 } else { 1000 }),
        filter,
    };

    cold_start(&bench);

    let _cluster = oxray::init()?;

    let value = oxray::put(&0i64)?;
    bench.timeit("single client get calls (Plasma Store)", 1.0, || {
        black_box(oxray::get(&value).expect("get"));
    });
    // The async path of the same read: `(&value).await` on a ready ref, polled once.
    bench.timeit("await of a ready ref", 1.0, || {
        let mut get = std::pin::pin!(std::future::IntoFuture::into_future(&value));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match get.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => {
                black_box(v.expect("get"));
            }
            std::task::Poll::Pending => panic!("a ready ref was pending"),
        }
    });
    bench.timeit("streaming items", 100_000.0, || {
        let stream = many_items::remote(100_000).expect("submit");
        let mut n = 0u64;
        for item in stream {
            black_box(item.expect("item"));
            n += 1;
        }
        assert_eq!(n, 100_000);
    });
    bench.timeit("single client put calls (Plasma Store)", 1.0, || {
        black_box(oxray::put(&0i64).expect("put"));
    });
    bench.timeit("multi client put calls (Plasma Store)", 1000.0, || {
        let refs: Vec<_> = (0..10)
            .map(|_| do_put_small::remote().expect("submit"))
            .collect();
        oxray::get_all(&refs).expect("get");
    });
    // Real data, not calloc's untouched zero pages (which read faster than memory).
    let arr: Vec<i64> = (0..100 * 1024 * 1024).collect();
    let arr_gb = (arr.len() * 8) as f64 / 1e9;
    bench.timeit("single client put gigabytes", arr_gb, || {
        black_box(oxray::put(&arr).expect("put"));
    });
    let mut dst = vec![0i64; arr.len()];
    bench.timeit("memcpy gigabytes", arr_gb, || {
        black_box(&mut dst).copy_from_slice(black_box(&arr));
    });
    drop(dst);
    let n = arr.len();
    bench.timeit("put_with_len gigabytes", arr_gb, || {
        let r = oxray::put_with_len::<i64>(n, |s| {
            for (i, x) in s.iter_mut().enumerate() {
                *x = i as i64;
            }
        })
        .expect("put_with_len");
        black_box(r);
    });
    bench.timeit("single client tasks and get batch", 1.0, || {
        let refs: Vec<_> = (0..1000)
            .map(|_| small_value::remote().expect("submit"))
            .collect();
        oxray::get_all(&refs).expect("get");
    });
    bench.timeit(
        "multi client put gigabytes",
        (10u64 * 10 * 10 * 1024 * 1024 * 8) as f64 / 1e9,
        || {
            let refs: Vec<_> = (0..10).map(|_| do_put::remote().expect("submit")).collect();
            oxray::get_all(&refs).expect("get");
        },
    );
    let obj_containing_ref = create_object_containing_ref::remote()?;
    bench.timeit("single client get object containing 10k refs", 1.0, || {
        black_box(oxray::get(&obj_containing_ref).expect("get"));
    });
    bench.timeit("single client wait 1k refs", 1.0, || {
        let mut not_ready: Vec<_> = (0..1000)
            .map(|_| small_value::remote().expect("submit"))
            .collect();
        while !not_ready.is_empty() {
            let (_ready, rest) = oxray::wait(&not_ready, 1, None).expect("wait");
            not_ready = rest;
        }
    });
    bench.timeit("single client tasks sync", 1.0, || {
        oxray::get(&small_value::remote().expect("submit")).expect("get");
    });
    bench.timeit("single client tasks async", 1000.0, || {
        let refs: Vec<_> = (0..1000)
            .map(|_| small_value::remote().expect("submit"))
            .collect();
        oxray::get_all(&refs).expect("get");
    });

    // Ray's: several clients each submitting tasks and waiting for them.
    bench.timeit("multi client tasks async", 4.0 * 1000.0, || {
        let refs: Vec<_> = (0..4)
            .map(|_| submit_tasks::remote(1000).expect("submit"))
            .collect();
        oxray::get_all(&refs).expect("get");
    });

    // Ray's row: create a one-bundle group, wait until it is placed, remove it.
    bench.timeit("placement group create/removal", 1.0, placement_group_round);

    actor_rows(&bench)?;

    if bench.wants("zero-copy get_view of a 1 GiB object") {
        let big = oxray::put(&vec![0u8; 1 << 30])?;
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            let v = oxray::get_view(&big)?;
            black_box(v.len());
            best = best.min(t.elapsed().as_secs_f64() * 1e6);
        }
        println!("zero-copy get_view of a 1 GiB object (best of 20) {best:.1} µs");
    }
    drop(_cluster);
    spill_rows(&bench)?;
    cross_node_rows(&bench)
}

/// Spilling and restoring 1 GiB through a 256 MiB store, beside the disk's own sequential
/// write and read of the same bytes in the same directory (the bound spilling works against).
fn spill_rows(bench: &Bench) -> oxray::Result<()> {
    const ROWS: [&str; 3] = [
        "spill gigabytes",
        "restore gigabytes",
        "sequential disk write/read gigabytes",
    ];
    if !ROWS.iter().any(|row| bench.wants(row)) {
        return Ok(());
    }
    let cluster = oxray::init_with(oxray::Config::new().object_store_memory(256 << 20))?;
    let chunk: Vec<u8> = (0..(200usize << 20)).map(|i| (i % 251) as u8).collect();
    let gb = |bytes: u64| bytes as f64 / 1e9;
    // The disk first: the same bytes written to and read from one file in the spill directory,
    // in the same sizes, then flushed, so the spill starts from the same clean page cache.
    let mut held = vec![oxray::put(&chunk)?];
    held.push(oxray::put(&chunk)?); // spills the first: the spill directory exists now
    let dir = std::path::PathBuf::from(oxray::status()?.spill_dir);
    let file = dir.join("disk-reference");
    let config_error = |e: std::io::Error| oxray::Error::Config {
        message: format!("disk reference file {}: {e}", file.display()),
    };
    let t = Instant::now();
    let mut f = std::fs::File::create(&file).map_err(config_error)?;
    for _ in 0..5 {
        std::io::Write::write_all(&mut f, &chunk).map_err(config_error)?;
    }
    let write_secs = t.elapsed().as_secs_f64();
    f.sync_all().map_err(config_error)?;
    drop(f);
    let mut back = vec![0u8; chunk.len()];
    let t = Instant::now();
    let mut f = std::fs::File::open(&file).map_err(config_error)?;
    for _ in 0..5 {
        std::io::Read::read_exact(&mut f, &mut back).map_err(config_error)?;
    }
    let read_secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    let disk = gb(5 * chunk.len() as u64);
    let before = oxray::status()?.spilled_total;
    let t = Instant::now();
    for _ in 0..5 {
        held.push(oxray::put(&chunk)?);
    }
    let spilled = oxray::status()?.spilled_total - before;
    let spill_secs = t.elapsed().as_secs_f64();
    let before = oxray::status()?.restored_total;
    let t = Instant::now();
    for r in &held {
        black_box(oxray::get_view(r)?.len());
    }
    let restored = oxray::status()?.restored_total - before;
    let restore_secs = t.elapsed().as_secs_f64();
    drop(held);
    println!(
        "spill gigabytes per second {:.2} ({:.2} GB spilled while putting 1 GB through a 256 MiB store)",
        gb(spilled) / spill_secs,
        gb(spilled)
    );
    println!(
        "restore gigabytes per second {:.2} ({:.2} GB read back by get_view)",
        gb(restored) / restore_secs,
        gb(restored)
    );
    println!(
        "sequential disk write/read gigabytes per second {:.2} / {:.2} (same directory, 200 MiB writes)",
        disk / write_secs,
        disk / read_secs
    );
    drop(cluster);
    Ok(())
}

/// Reads a byte array where the task runs (pulling it there first if it lives elsewhere).
#[oxray::remote]
fn byte_len(xs: oxray::ObjectView<Vec<u8>>) -> u64 {
    xs.len() as u64
}

/// One round of Ray's placement-group row: make a one-bundle group, wait until it is placed,
/// remove it.
fn placement_group_round() {
    let pg = oxray::placement_group(
        vec![oxray::bundle(&[("CPU", 0.01)])],
        oxray::PlacementStrategy::Pack,
    )
    .expect("create");
    pg.ready().expect("ready");
    pg.remove().expect("remove");
}

/// The rows again across two nodes on this machine (two raylets joined over QUIC): the driver
/// attaches to a head with no CPUs, so every task and actor runs on the other node.
fn cross_node_rows(bench: &Bench) -> oxray::Result<()> {
    const ROWS: [&str; 8] = [
        "same-node socket echo round trips",
        "cross-node tunnel echo round trips",
        "cross-node tasks sync",
        "cross-node tasks async",
        "cross-node placement group create/removal",
        "cross-node 1:1 actor calls sync",
        "cross-node 1:1 actor calls async",
        "cross-node object transfer gigabytes",
    ];
    if !ROWS.iter().any(|row| bench.wants(row)) {
        return Ok(());
    }
    use oxray_raylet::cluster::ClusterConfig;
    use oxray_raylet::{Raylet, RayletConfig};
    let bad = |e: oxray_raylet::RayletError| oxray::Error::Config {
        message: e.to_string(),
    };
    let secret = b"microbenchmark-secret-0123456789".to_vec();
    let node = |session: &str, cpus: f64, cluster: ClusterConfig| RayletConfig {
        num_cpus: cpus,
        object_store_memory: 3 << 30,
        session: format!("{session}-{}", std::process::id()),
        prestart_workers: 0,
        cluster: Some(cluster),
        ..RayletConfig::default()
    };
    let head = Raylet::start(node(
        "bench-head",
        0.0,
        ClusterConfig::head("bench", secret.clone(), "127.0.0.1", 0),
    ))
    .map_err(bad)?;
    let head_peer = head.peer_address().unwrap_or_default().to_owned();
    let other = Raylet::start(node(
        "bench-other",
        2.0,
        ClusterConfig::member("bench", secret, "127.0.0.1", 0, &head_peer),
    ))
    .map_err(bad)?;
    let _cluster = oxray::init_with(oxray::Config::new().address(head.address()))?;
    echo_rows(
        bench,
        head.address(),
        // Named like a worker socket of the other node (its session, then `-w`).
        &format!("{}-wecho", other.address().trim_start_matches("unix:@")),
        other.peer_address().unwrap_or_default(),
    );

    bench.timeit("cross-node tasks sync", 1.0, || {
        oxray::get(&small_value::remote().expect("submit")).expect("get");
    });
    bench.timeit("cross-node tasks async", 1000.0, || {
        let refs: Vec<_> = (0..1000)
            .map(|_| small_value::remote().expect("submit"))
            .collect();
        oxray::get_all(&refs).expect("get");
    });
    // The head has no CPU: every group goes to the other node in two phases over QUIC.
    bench.timeit(
        "cross-node placement group create/removal",
        1.0,
        placement_group_round,
    );
    let server = Server::options().num_cpus(1.0).remote()?;
    oxray::get(&server.small_value()?)?;
    bench.timeit("cross-node 1:1 actor calls sync", 1.0, || {
        oxray::get(&server.small_value().expect("call")).expect("get");
    });
    bench.timeit("cross-node 1:1 actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000)
            .map(|_| server.small_value().expect("call"))
            .collect();
        oxray::get_all(&refs).expect("get");
    });
    oxray::kill(&server)?;
    for (label, size, rounds) in [("100 MiB", 100usize << 20, 10), ("1 GiB", 1 << 30, 3)] {
        if !bench.wants("cross-node object transfer gigabytes") {
            continue;
        }
        let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut seconds = Vec::new();
        for _ in 0..rounds {
            // A fresh object each round, so each read pulls it across.
            let obj = oxray::put(&data)?;
            let t = Instant::now();
            let n = oxray::get(&byte_len::remote(&obj)?)?;
            seconds.push(t.elapsed().as_secs_f64());
            assert_eq!(n as usize, size);
        }
        seconds.sort_by(f64::total_cmp);
        let median = seconds[seconds.len() / 2];
        println!(
            "cross-node object transfer gigabytes ({label}, median of {rounds}) per second {:.2}",
            size as f64 / 1e9 / median
        );
    }
    Ok(())
}

/// Where the time of a cross-node call goes: 64-byte echoes from this thread to a thread
/// serving a socket named like a worker's on the other node, once straight over the Unix socket
/// (what a same-node call pays per round trip for transport) and once through the tunnel a
/// cross-node call takes (local raylet → QUIC → the other raylet → the socket).
fn echo_rows(bench: &Bench, raylet: &str, name: &str, other_peer: &str) {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let listener = SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|addr| UnixListener::bind_addr(&addr))
        .expect("binding the echo socket");
    // One connection per row that runs; each ends when the row drops its stream.
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 64];
            while stream.read_exact(&mut buf).is_ok() && stream.write_all(&buf).is_ok() {}
        }
    });
    let local = format!("unix:@{name}");
    let far = format!("peer://{other_peer}/unix:@{name}");
    for (row, address) in [
        ("same-node socket echo round trips", &local),
        ("cross-node tunnel echo round trips", &far),
    ] {
        if !bench.wants(row) {
            continue;
        }
        let mut stream = oxray_raylet::server::connect_anywhere(raylet, address)
            .expect("connecting to the echo socket");
        let mut buf = [7u8; 64];
        bench.timeit(row, 1.0, || {
            stream.write_all(&buf).expect("echo write");
            stream.read_exact(&mut buf).expect("echo read");
        });
    }
}

/// Ray's actor rows, with its sizes: `n` calls per batch, half the cores as servers.
fn actor_rows(bench: &Bench) -> oxray::Result<()> {
    let n_servers = (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(1);
    let a = Server::remote()?;
    bench.timeit("1:1 actor calls sync", 1.0, || {
        oxray::get(&a.small_value().expect("call")).expect("get");
    });
    bench.timeit("1:1 actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| a.small_value().expect("call")).collect();
        oxray::get_all(&refs).expect("get");
    });
    oxray::kill(&a)?;
    let a = Server::options().max_concurrency(16).remote()?;
    bench.timeit("1:1 actor calls concurrent", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| a.small_value().expect("call")).collect();
        oxray::get_all(&refs).expect("get");
    });
    oxray::kill(&a)?;
    let a = AsyncServer::remote()?;
    bench.timeit("1:1 async-actor calls sync", 1.0, || {
        oxray::get(&a.small_value().expect("call")).expect("get");
    });
    bench.timeit("1:1 async-actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| a.small_value().expect("call")).collect();
        oxray::get_all(&refs).expect("get");
    });
    bench.timeit("1:1 async-actor calls with args async", 1000.0, || {
        let refs: Vec<_> = (0..1000)
            .map(|i| a.small_value_with_arg(i).expect("call"))
            .collect();
        oxray::get_all(&refs).expect("get");
    });
    oxray::kill(&a)?;
    let async_servers: Vec<_> = (0..n_servers)
        .map(|_| AsyncServer::remote())
        .collect::<oxray::Result<_>>()?;
    bench.timeit("1:n async-actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000)
            .map(|i| {
                async_servers[i % async_servers.len()]
                    .small_value()
                    .expect("call")
            })
            .collect();
        oxray::get_all(&refs).expect("get");
    });
    bench.timeit("n:n async-actor calls async", 4.0 * 1000.0, || {
        let refs: Vec<_> = (0..4)
            .map(|_| call_async_actors::remote(async_servers.clone(), 1000).expect("submit"))
            .collect();
        oxray::get_all(&refs).expect("get");
    });
    for s in &async_servers {
        oxray::kill(s)?;
    }

    let n = 5000;
    let servers: Vec<_> = (0..n_servers)
        .map(|_| Server::remote())
        .collect::<oxray::Result<_>>()?;
    let client = Client::remote(servers.clone())?;
    bench.timeit(
        "1:n actor calls async",
        f64::from(n) * n_servers as f64,
        || {
            oxray::get(&client.small_value_batch(n).expect("call")).expect("get");
        },
    );
    let m = 4;
    bench.timeit("n:n actor calls async", f64::from(m * n), || {
        let refs: Vec<_> = (0..m)
            .map(|_| call_actors::remote(servers.clone(), n).expect("submit"))
            .collect();
        oxray::get_all(&refs).expect("get");
    });
    oxray::kill(&client)?;
    for s in &servers {
        oxray::kill(s)?;
    }

    let n = 1000;
    let servers: Vec<_> = (0..n_servers)
        .map(|_| Server::remote())
        .collect::<oxray::Result<_>>()?;
    let clients: Vec<_> = servers
        .iter()
        .map(|s| Client::remote(vec![s.clone()]))
        .collect::<oxray::Result<_>>()?;
    bench.timeit(
        "n:n actor calls with arg async",
        f64::from(n) * clients.len() as f64,
        || {
            let refs: Vec<_> = clients
                .iter()
                .map(|c| c.small_value_batch_arg(n).expect("call"))
                .collect();
            oxray::get_all(&refs).expect("get");
        },
    );
    for c in &clients {
        oxray::kill(c)?;
    }
    for s in &servers {
        oxray::kill(s)?;
    }
    Ok(())
}

/// Time from `init()` to the first task result in a fresh process.
fn cold_start(bench: &Bench) {
    if !bench.wants("cold start: init() to first task result") {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut times = Vec::new();
    for _ in 0..5 {
        let Ok(out) = Command::new(&exe).arg("--cold-start-child").output() else {
            return;
        };
        if let Some(ms) = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("cold-start-ms ")?.trim().parse::<f64>().ok())
        {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    if let Some(median) = times.get(times.len() / 2) {
        println!(
            "cold start: init() to first task result, fresh process (median of 5) {median:.1} ms"
        );
    }
}

fn cold_start_child() -> oxray::Result<()> {
    let t = Instant::now();
    let _cluster = oxray::init()?;
    oxray::get(&small_value::remote()?)?;
    println!("cold-start-ms {:.3}", t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
