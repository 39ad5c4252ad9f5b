//! The `oxray` command: run and inspect a standalone node.
//!
//! ```text
//! oxray start --head [--num-cpus N] [--object-store-memory BYTES] [--resources name=amount,..]
//! oxray status [--address ADDRESS]
//! oxray stop [--address ADDRESS]
//! ```
//!
//! `start` runs the node in the background and returns once it accepts clients, printing the
//! address; drivers attach with `OXRAY_ADDRESS=<address>`. `status` and `stop` use `--address`,
//! else `OXRAY_ADDRESS`, else the node this user started last.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use oxray_raylet::{tool, Raylet, RayletConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("start") => start(&args[1..]),
        Some("status") => status(&args[1..]),
        Some("stop") => stop(&args[1..]),
        Some("__node") => run_node(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    if let Err(e) = result {
        eprintln!("oxray: {e}");
        std::process::exit(2);
    }
}

const USAGE: &str = "usage:
  oxray start --head [--num-cpus N] [--object-store-memory BYTES] [--resources name=amount,..]
  oxray status [--address ADDRESS]
  oxray stop [--address ADDRESS]";

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn state_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("oxray-{uid}"))
}

fn node_config(args: &[String]) -> Result<RayletConfig, String> {
    let mut config = RayletConfig {
        prestart_workers: 0,
        ..RayletConfig::default()
    };
    if let Some(n) = flag(args, "--num-cpus") {
        config.num_cpus = n
            .parse()
            .map_err(|_| format!("--num-cpus: `{n}` is not a number"))?;
    }
    if let Some(m) = flag(args, "--object-store-memory") {
        config.object_store_memory = m
            .parse()
            .map_err(|_| format!("--object-store-memory: `{m}` is not a number of bytes"))?;
    }
    if let Some(rs) = flag(args, "--resources") {
        for kv in rs.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--resources: `{kv}` is not name=amount"))?;
            let v: f64 = v
                .parse()
                .map_err(|_| format!("--resources: `{v}` is not a number"))?;
            config.resources.push((k.to_owned(), v));
        }
    }
    if let Some(s) = flag(args, "--session") {
        config.session = s.to_owned();
    }
    Ok(config)
}

fn start(args: &[String]) -> Result<(), String> {
    if !args.iter().any(|a| a == "--head") {
        return Err(
            "only `oxray start --head` (a single node) is supported so far; multi-node clusters \
             are planned"
                .into(),
        );
    }
    let config = node_config(args)?;
    let dir = state_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let log_path = dir.join(format!("{}.log", config.session));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let mut child = Command::new(exe)
        .arg("__node")
        .args(args)
        .args(["--session", &config.session])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the node: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let address = line.trim();
    if address.is_empty() {
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(format!("the node did not start: {}", log.trim()));
    }
    let _ = std::fs::write(dir.join("address"), address);
    println!("{address}");
    eprintln!(
        "oxray node started (pid {}, log {}).\nAttach drivers with: export OXRAY_ADDRESS={address}",
        child.id(),
        log_path.display()
    );
    Ok(())
}

fn run_node(args: &[String]) -> Result<(), String> {
    let config = node_config(args)?;
    let mut node = Raylet::start(config).map_err(|e| e.to_string())?;
    println!("{}", node.address());
    node.wait();
    Ok(())
}

fn address(args: &[String]) -> Result<String, String> {
    if let Some(a) = flag(args, "--address") {
        return Ok(a.to_owned());
    }
    if let Ok(a) = std::env::var("OXRAY_ADDRESS") {
        if !a.is_empty() {
            return Ok(a);
        }
    }
    std::fs::read_to_string(state_dir().join("address"))
        .map(|s| s.trim().to_owned())
        .map_err(|_| {
            "no node address: pass --address, set OXRAY_ADDRESS, or `oxray start --head`".into()
        })
}

fn status(args: &[String]) -> Result<(), String> {
    let address = address(args)?;
    let s = tool::status(&address).map_err(|e| e.to_string())?;
    println!("node {} at {} (raylet pid {})", s.node, s.address, s.pid);
    println!("  resources: {} available of {}", s.available, s.total);
    println!(
        "  object store: {:.1} MB used of {:.1} MB, {} objects",
        s.store_used as f64 / 1e6,
        s.store_capacity as f64 / 1e6,
        s.store_objects
    );
    println!("  drivers: {}", s.drivers);
    println!("  workers: {}", s.workers.len());
    for w in &s.workers {
        println!("    pid {:>7}  {:<8}  job {}", w.pid, w.state, w.job);
    }
    println!("  actors: {}", s.actors.len());
    for a in &s.actors {
        let name = if a.name.is_empty() {
            String::new()
        } else {
            format!(" name {:?}/{:?}", a.namespace, a.name)
        };
        let death = if a.death.is_empty() {
            String::new()
        } else {
            format!(" ({})", a.death)
        };
        println!(
            "    {} {}{name} state {:?} pid {} restarts {}{death}",
            a.id, a.class, a.state, a.pid, a.restarts
        );
    }
    println!("  pending lease requests: {}", s.pending.len());
    for p in &s.pending {
        let why = if p.infeasible {
            "infeasible: no node has these resources"
        } else {
            "waiting for resources"
        };
        println!("    {}  ({why})", p.resources);
    }
    Ok(())
}

fn stop(args: &[String]) -> Result<(), String> {
    let address = address(args)?;
    tool::stop(&address).map_err(|e| e.to_string())?;
    println!("stopped the node at {address}");
    Ok(())
}
