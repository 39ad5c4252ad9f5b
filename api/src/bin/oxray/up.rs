//! `oxray up FILE` and `oxray down FILE`: every node of a cluster config file at once.
//!
//! Local nodes (loopback addresses or this host's name) are started directly with
//! `oxray start`; others through the file's ssh template, running `oxray start` on that machine
//! (which must have `oxray` on its PATH). The secret never appears on a command line: local
//! nodes get it in their environment, remote ones read it from ssh's stdin.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use oxray_raylet::cluster_file::{ClusterFile, NodeSpec};

use crate::node_args::{NodeArgs, Resources};

/// The `oxray start` arguments for one node of the file.
fn start_args(file: &ClusterFile, node: &NodeSpec, is_head: bool) -> Vec<String> {
    let args = NodeArgs {
        head: is_head,
        address: (!is_head).then(|| file.head_address()),
        port: Some(node.port),
        num_cpus: node.num_cpus,
        object_store_memory: node.object_store_memory,
        resources: (!node.resources.is_empty()).then(|| Resources(node.resources.clone())),
        session: Some(node.session.clone()),
        node_ip_address: Some(node.address.clone()),
        cluster_name: file.cluster_name.clone(),
        secret_file: None,
        health_check_period_ms: Some(file.health_check_period.as_millis() as u64),
        health_check_failure_threshold: Some(file.health_check_failure_threshold),
        health_check_timeout_ms: Some(file.health_check_timeout.as_millis() as u64),
        spill_dir: node.spill_dir.as_ref().map(std::path::PathBuf::from),
        no_spilling: !node.spilling,
        store_full_wait_ms: None,
        dashboard_port: None,
        no_dashboard: false,
    };
    let mut all = vec!["start".to_owned()];
    all.extend(args.to_args());
    all
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
pub fn up(path: &Path) -> Result<(), String> {
    let file = ClusterFile::load(path).map_err(|e| e.to_string())?;
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
                     `oxray down {}` stops them)",
                    node.address,
                    path.display()
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
pub fn down(path: &Path) -> Result<(), String> {
    let file = ClusterFile::load(path).map_err(|e| e.to_string())?;
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
pub fn head_of(path: &Path) -> Result<(String, String, Vec<u8>), String> {
    let file = ClusterFile::load(path).map_err(|e| e.to_string())?;
    Ok((
        file.head_address(),
        file.cluster_name.clone(),
        file.secret.clone(),
    ))
}
