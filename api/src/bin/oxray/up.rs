//! `oxray up FILE` and `oxray down FILE`: every node of a cluster config file at once.
//!
//! Local nodes (loopback addresses or this host's name) are started directly with
//! `oxray start`; others through the file's ssh template, running `oxray start` on that machine
//! (which must have `oxray` on its PATH). The secret never appears on a command line: local
//! nodes get it in their environment, remote ones read it from ssh's stdin.

use std::io::Write;
use std::process::{Command, Stdio};

use oxray_raylet::cluster_file::{ClusterFile, NodeSpec};

/// The `oxray start` arguments for one node of the file.
fn start_args(file: &ClusterFile, node: &NodeSpec, is_head: bool) -> Vec<String> {
    let mut args = vec!["start".to_owned()];
    if is_head {
        args.push("--head".into());
    } else {
        args.extend(["--address".into(), file.head_address()]);
    }
    args.extend([
        "--port".into(),
        node.port.to_string(),
        "--node-ip-address".into(),
        node.address.clone(),
        "--cluster-name".into(),
        file.cluster_name.clone(),
        "--session".into(),
        node.session.clone(),
        "--health-check-period-ms".into(),
        file.health_check_period.as_millis().to_string(),
        "--health-check-timeout-ms".into(),
        file.health_check_timeout.as_millis().to_string(),
        "--health-check-failure-threshold".into(),
        file.health_check_failure_threshold.to_string(),
    ]);
    if let Some(n) = node.num_cpus {
        args.extend(["--num-cpus".into(), n.to_string()]);
    }
    if let Some(m) = node.object_store_memory {
        args.extend(["--object-store-memory".into(), m.to_string()]);
    }
    if !node.resources.is_empty() {
        let rs: Vec<String> = node
            .resources
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        args.extend(["--resources".into(), rs.join(",")]);
    }
    args
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `oxray ARGS` for `node`, locally or over ssh; returns what it printed.
fn run_on(file: &ClusterFile, node: &NodeSpec, args: &[String]) -> Result<String, String> {
    let secret = String::from_utf8_lossy(&file.secret).into_owned();
    let output = if node.is_local() {
        let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
        Command::new(exe)
            .args(args)
            .env("OXRAY_CLUSTER_SECRET", &secret)
            .env_remove("OXRAY_ADDRESS")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running oxray: {e}"))?
    } else {
        let ssh = node.ssh_command(file).ok_or_else(|| {
            format!(
                "node {} is not on this machine and the file has no `ssh` template to reach it",
                node.address
            )
        })?;
        let remote: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        let line = format!(
            "{ssh} {}",
            shell_quote(&format!(
                "OXRAY_CLUSTER_SECRET=\"$(cat)\" oxray {}",
                remote.join(" ")
            ))
        );
        let mut child = Command::new("sh")
            .args(["-c", &line])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running `{ssh}`: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(secret.as_bytes());
        }
        child
            .wait_with_output()
            .map_err(|e| format!("running `{ssh}`: {e}"))?
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(text)
    } else {
        Err(text.trim().to_owned())
    }
}

/// `oxray up FILE`: starts the head, then every other node; returns once all are registered.
pub fn up(path: &str) -> Result<(), String> {
    let file = ClusterFile::load(std::path::Path::new(path)).map_err(|e| e.to_string())?;
    for (i, node) in file.all_nodes().enumerate() {
        let is_head = i == 0;
        let args = start_args(&file, node, is_head);
        let what = if is_head { "head" } else { "node" };
        match run_on(&file, node, &args) {
            Ok(_) => println!(
                "started {what} {}{} (session {}; drivers on that machine attach with \
                 OXRAY_ADDRESS=unix:@{})",
                node.address,
                if node.port == 0 {
                    String::new()
                } else {
                    format!(":{}", node.port)
                },
                node.session,
                node.session
            ),
            Err(e) => {
                return Err(format!(
                    "starting the {what} at {}: {e}\n(nodes started so far keep running; \
                     `oxray down {path}` stops them)",
                    node.address
                ))
            }
        }
    }
    println!(
        "cluster {:?} is up: {} nodes, head at {}",
        file.cluster_name,
        file.nodes.len() + 1,
        file.head_address()
    );
    Ok(())
}

/// `oxray down FILE`: stops every node of the file (members first, then the head).
pub fn down(path: &str) -> Result<(), String> {
    let file = ClusterFile::load(std::path::Path::new(path)).map_err(|e| e.to_string())?;
    let nodes: Vec<&NodeSpec> = file.all_nodes().collect();
    let mut failed = Vec::new();
    for node in nodes.iter().rev() {
        let address = format!("unix:@{}", node.session);
        let args = ["stop".to_owned(), "--address".to_owned(), address];
        match run_on(&file, node, &args) {
            Ok(_) => println!("stopped {} (session {})", node.address, node.session),
            Err(e) if e.contains("cannot reach") => {
                println!(
                    "{} (session {}) was not running",
                    node.address, node.session
                )
            }
            Err(e) => failed.push(format!("{}: {e}", node.session)),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("could not stop: {}", failed.join("; ")))
    }
}

/// The head's peer address, cluster name and secret from a file (for `oxray status --file`).
pub fn head_of(path: &str) -> Result<(String, String, Vec<u8>), String> {
    let file = ClusterFile::load(std::path::Path::new(path)).map_err(|e| e.to_string())?;
    Ok((
        file.head_address(),
        file.cluster_name.clone(),
        file.secret.clone(),
    ))
}
