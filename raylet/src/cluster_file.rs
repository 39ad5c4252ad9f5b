//! The cluster config file: one TOML file describes a whole cluster, for `oxray up` / `down`.
//!
//! ```toml
//! cluster_name = "demo"                  # required: up to 100 letters, digits, '-', '_', '.'
//! secret = "at-least-16-characters"      # exactly one of `secret` and `secret_file`
//! # secret_file = "cluster.secret"       # read from a file (relative to this file), trimmed;
//!                                        #   it must be yours and not readable by others
//!                                        #   (`chmod 600 FILE`)
//! ssh = "ssh -o BatchMode=yes {address}" # optional: how to reach nodes on other machines
//! health_check_period_ms = 1000          # optional (1000): how often the head checks that
//!                                        #   each node sent a heartbeat (nodes send one, with
//!                                        #   their load, every 100 ms or every period if shorter)
//! health_check_failure_threshold = 5     # optional (5, at least 2): checks in a row a node may
//!                                        #   miss before the head marks it dead
//! health_check_timeout_ms = 10000        # optional (10000, above the period): how long a node
//!                                        #   waits for the head's answer to one heartbeat
//!
//! [head]                                 # the head node (it is also a worker node)
//! address = "127.0.0.1"                  # required: the host name or IP others reach it at
//! port = 6390                            # required for the head: its UDP port for QUIC
//! num_cpus = 2                           # optional (the machine's CPUs)
//! resources = { gpu = 1 }                # optional custom resources: name = amount
//! object_store_memory = 200_000_000      # optional bytes (30% of RAM)
//! spill_dir = "/scratch/oxray"           # optional: where objects spill when the store is full
//!                                        #   (the node's session directory); `spilling = false`
//!                                        #   turns spilling off
//! session = "demo-head"                  # optional ("<cluster_name>-head", "<cluster_name>-node<i>";
//!                                        #   the same characters as cluster_name)
//! ssh = "ssh admin@{address}"            # optional: overrides the top-level template
//!
//! [[node]]                               # zero or more; the same fields as [head]
//! address = "127.0.0.1"
//! port = 6391                            # optional for these (0: any free port)
//! ```
//!
//! Nodes whose address is a loopback address or this machine's host name are started directly;
//! others with the `ssh` template, `{address}` replaced by the node's address. Unknown fields, bad
//! syntax and inconsistent values are rejected with the line and what to change.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{RayletError, Result};

/// A parsed, checked cluster config file.
#[derive(Debug, Clone)]
pub struct ClusterFile {
    /// The file, as given.
    pub path: String,
    /// The cluster's name.
    pub cluster_name: String,
    /// The shared secret (from `secret` or the content of `secret_file`).
    pub secret: Vec<u8>,
    /// The default ssh template for nodes on other machines.
    pub ssh: Option<String>,
    /// How often nodes send the head a heartbeat, and how often the head checks for one.
    pub health_check_period: Duration,
    /// How long a node waits for the head's answer to one heartbeat.
    pub health_check_timeout: Duration,
    /// Checks in a row a node may miss before the head marks it dead.
    pub health_check_failure_threshold: u32,
    /// The head node.
    pub head: NodeSpec,
    /// The other nodes.
    pub nodes: Vec<NodeSpec>,
}

/// One node of the file.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Host name or IP the other nodes reach it at.
    pub address: String,
    /// UDP port for QUIC (0: any free port; never 0 for the head).
    pub port: u16,
    /// CPUs to offer (`None`: the machine's).
    pub num_cpus: Option<f64>,
    /// Custom resources, sorted by name.
    pub resources: Vec<(String, f64)>,
    /// Store size in bytes (`None`: 30% of RAM).
    pub object_store_memory: Option<u64>,
    /// Session name, unique in the cluster.
    pub session: String,
    /// The ssh template for this node, overriding the file's.
    pub ssh: Option<String>,
    /// Where objects spill (`None`: the node's session directory).
    pub spill_dir: Option<String>,
    /// Whether the node spills objects when its store is full (default: yes).
    pub spilling: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cluster_name: Option<Spanned<String>>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    ssh: Option<String>,
    health_check_period_ms: Option<Spanned<u64>>,
    health_check_timeout_ms: Option<Spanned<u64>>,
    health_check_failure_threshold: Option<Spanned<u64>>,
    head: Option<Spanned<RawNode>>,
    #[serde(default)]
    node: Vec<Spanned<RawNode>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    address: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    num_cpus: Option<Spanned<f64>>,
    resources: Option<Spanned<std::collections::BTreeMap<String, f64>>>,
    object_store_memory: Option<Spanned<u64>>,
    session: Option<Spanned<String>>,
    ssh: Option<String>,
    spill_dir: Option<Spanned<String>>,
    spilling: Option<bool>,
}

/// Turns byte offsets into line numbers and errors.
struct Source<'a> {
    path: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn error(&self, span: Option<Range<usize>>, reason: impl Into<String>) -> RayletError {
        RayletError::ClusterFile {
            path: self.path.to_owned(),
            line: span.map(|s| self.line(s.start)),
            reason: reason.into(),
        }
    }
}

impl ClusterFile {
    /// Reads and checks the file at `path`; `secret_file` is relative to its directory.
    pub fn load(path: &Path) -> Result<ClusterFile> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RayletError::ClusterFile {
            path: shown.clone(),
            line: None,
            reason: format!("cannot read the file: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        ClusterFile::parse(&shown, &text, base)
    }

    /// Parses and checks `text` (named `path` in errors); `secret_file` is relative to `base_dir`.
    pub fn parse(path: &str, text: &str, base_dir: &Path) -> Result<ClusterFile> {
        let src = Source { path, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let reason = e.message().trim().replace('\n', " ");
            src.error(e.span(), reason)
        })?;
        let name = raw
            .cluster_name
            .ok_or_else(|| src.error(None, "missing `cluster_name = \"...\"` at the top"))?;
        crate::files::check_name("cluster_name", name.get_ref())
            .map_err(|reason| src.error(Some(name.span()), reason))?;
        let cluster_name = name.into_inner();
        let secret =
            match (raw.secret, raw.secret_file) {
                (Some(_), Some(f)) => {
                    return Err(src.error(
                        Some(f.span()),
                        "give either `secret` or `secret_file`, not both",
                    ))
                }
                (None, None) => return Err(src.error(
                    None,
                    "missing the cluster secret: add `secret = \"...\"` or `secret_file = \"...\"`",
                )),
                (Some(s), None) => check_secret(&src, s.span(), s.get_ref().trim().as_bytes())?,
                (None, Some(f)) => {
                    let file = base_dir.join(f.get_ref());
                    let text = crate::files::read_secret_file(&file)
                        .map_err(|reason| src.error(Some(f.span()), reason))?;
                    check_secret(&src, f.span(), text.as_bytes())?
                }
            };
        let default_period = crate::cluster::DEFAULT_HEALTH_CHECK_PERIOD.as_millis() as u64;
        let period = raw.health_check_period_ms.map_or(Ok(default_period), |p| {
            positive(&src, &p, "health_check_period_ms").map(|_| *p.get_ref())
        })?;
        let timeout = match raw.health_check_timeout_ms {
            Some(t) => {
                positive(&src, &t, "health_check_timeout_ms")?;
                if *t.get_ref() <= period {
                    return Err(src.error(
                        Some(t.span()),
                        format!(
                            "health_check_timeout_ms must be longer than health_check_period_ms \
                             ({period})"
                        ),
                    ));
                }
                *t.get_ref()
            }
            None => (crate::cluster::DEFAULT_HEALTH_CHECK_TIMEOUT.as_millis() as u64)
                .max(period.saturating_mul(2)),
        };
        let threshold = match raw.health_check_failure_threshold {
            Some(t) => match u32::try_from(*t.get_ref()) {
                Ok(n) if n >= 2 => n,
                _ => {
                    return Err(src.error(
                        Some(t.span()),
                        format!(
                            "health_check_failure_threshold must be a whole number from 2 to \
                             {}, not {} (one period can pass without a heartbeat through timer \
                             jitter alone)",
                            u32::MAX,
                            t.get_ref()
                        ),
                    ))
                }
            },
            None => crate::cluster::DEFAULT_HEALTH_CHECK_FAILURE_THRESHOLD,
        };
        let head = raw
            .head
            .ok_or_else(|| src.error(None, "missing the `[head]` table"))?;
        let head = node(&src, head, true, format!("{cluster_name}-head"))?;
        let nodes = raw
            .node
            .into_iter()
            .enumerate()
            .map(|(i, n)| node(&src, n, false, format!("{cluster_name}-node{}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        let file = ClusterFile {
            path: path.to_owned(),
            cluster_name,
            secret,
            ssh: raw.ssh,
            health_check_period: Duration::from_millis(period),
            health_check_timeout: Duration::from_millis(timeout),
            health_check_failure_threshold: threshold,
            head,
            nodes,
        };
        file.check_unique()?;
        Ok(file)
    }

    fn check_unique(&self) -> Result<()> {
        let all: Vec<&NodeSpec> = self.all_nodes().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[..i] {
                let reason = if a.session == b.session {
                    format!(
                        "two nodes use the session {:?}: sessions must differ",
                        a.session
                    )
                } else if a.port != 0 && a.port == b.port && a.address == b.address {
                    format!(
                        "two nodes listen on {}:{}: give them different ports",
                        a.address, a.port
                    )
                } else {
                    continue;
                };
                return Err(RayletError::ClusterFile {
                    path: self.path.clone(),
                    line: None,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// The head's `address:port`.
    pub fn head_address(&self) -> String {
        format!("{}:{}", self.head.address, self.head.port)
    }

    /// Every node, the head first.
    pub fn all_nodes(&self) -> impl Iterator<Item = &NodeSpec> {
        std::iter::once(&self.head).chain(self.nodes.iter())
    }
}

fn check_secret(src: &Source<'_>, span: Range<usize>, secret: &[u8]) -> Result<Vec<u8>> {
    if secret.len() < 16 {
        return Err(src.error(
            Some(span),
            format!(
                "the secret has {} bytes; use at least 16 random characters, e.g. `openssl rand \
                 -hex 16`",
                secret.len()
            ),
        ));
    }
    Ok(secret.to_vec())
}

fn positive(src: &Source<'_>, v: &Spanned<u64>, name: &str) -> Result<()> {
    if *v.get_ref() == 0 {
        return Err(src.error(Some(v.span()), format!("{name} must be above 0")));
    }
    Ok(())
}

fn node(
    src: &Source<'_>,
    raw: Spanned<RawNode>,
    is_head: bool,
    session: String,
) -> Result<NodeSpec> {
    let span = raw.span();
    let raw = raw.into_inner();
    let what = if is_head { "[head]" } else { "[[node]]" };
    let address = raw.address.ok_or_else(|| {
        src.error(
            Some(span.clone()),
            format!("{what} needs `address = \"...\"`"),
        )
    })?;
    if address.get_ref().trim().is_empty() {
        return Err(src.error(Some(address.span()), "address must not be empty"));
    }
    let port = match raw.port {
        Some(p) if is_head && *p.get_ref() == 0 => {
            return Err(src.error(
                Some(p.span()),
                "the head needs a fixed port (other nodes must know where to join)",
            ))
        }
        Some(p) => *p.get_ref(),
        None if is_head => {
            return Err(src.error(Some(span), "[head] needs `port = ...` (e.g. 6390)"))
        }
        None => 0,
    };
    let num_cpus = match raw.num_cpus {
        Some(n) if !n.get_ref().is_finite() || *n.get_ref() < 0.0 => {
            return Err(src.error(
                Some(n.span()),
                format!(
                    "num_cpus must be a number of 0 or more, not {}",
                    n.get_ref()
                ),
            ))
        }
        Some(n) => Some(*n.get_ref()),
        None => None,
    };
    let (rspan, given) = match raw.resources {
        Some(r) => (r.span(), r.into_inner()),
        None => (0..0, Default::default()),
    };
    let mut resources = Vec::new();
    for (name, amount) in given {
        if name.is_empty() || name == "CPU" {
            return Err(src.error(
                Some(rspan.clone()),
                format!("resource name {name:?} is not allowed (CPUs go in num_cpus)"),
            ));
        }
        if !amount.is_finite() || amount < 0.0 {
            return Err(src.error(
                Some(rspan.clone()),
                format!("resource {name} must be 0 or more, not {amount}"),
            ));
        }
        resources.push((name, amount));
    }
    let session = match raw.session {
        Some(s) => {
            crate::files::check_name("session", s.get_ref())
                .map_err(|reason| src.error(Some(s.span()), reason))?;
            s.into_inner()
        }
        None => session,
    };
    let spill_dir = match raw.spill_dir {
        Some(d) if d.get_ref().trim().is_empty() => {
            return Err(src.error(
                Some(d.span()),
                "spill_dir is empty: name a directory, or leave it out".to_owned(),
            ))
        }
        Some(d) => Some(d.into_inner()),
        None => None,
    };
    Ok(NodeSpec {
        address: address.into_inner().trim().to_owned(),
        port,
        num_cpus,
        resources,
        object_store_memory: raw.object_store_memory.map(Spanned::into_inner),
        session,
        ssh: raw.ssh,
        spill_dir,
        spilling: raw.spilling.unwrap_or(true),
    })
}

impl NodeSpec {
    /// Whether the node is on this machine: a loopback address or this host's name.
    pub fn is_local(&self) -> bool {
        let a = self.address.as_str();
        if a == "localhost" || a == "::1" || a.starts_with("127.") {
            return true;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        !host.trim().is_empty() && host.trim() == a
    }

    /// The command prefix that reaches this node (`{address}` replaced), if any template is set.
    pub fn ssh_command(&self, file: &ClusterFile) -> Option<String> {
        let template = self.ssh.as_ref().or(file.ssh.as_ref())?;
        Some(template.replace("{address}", &self.address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterFile> {
        ClusterFile::parse("test.toml", text, Path::new("."))
    }

    fn line_of(text: &str) -> (Option<usize>, String) {
        match parse(text) {
            Err(RayletError::ClusterFile { line, reason, .. }) => (line, reason),
            other => panic!("expected a ClusterFile error, got {other:?}"),
        }
    }

    const HEAD: &str = "[head]\naddress = \"127.0.0.1\"\nport = 7000\n";

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../examples/cluster.toml");
        let f = parse(text).expect("the example parses");
        assert_eq!(f.cluster_name, "demo");
        assert_eq!(f.head.port, 6390);
        assert_eq!(f.nodes.len(), 2);
        assert!(f.all_nodes().all(NodeSpec::is_local));
        assert_eq!(f.nodes[1].resources, vec![("gpu".to_owned(), 1.0)]);
        assert_eq!(f.head_address(), "127.0.0.1:6390");
        assert_eq!(f.head.session, "demo-head");
        assert_eq!(f.nodes[0].session, "demo-node1");
    }

    #[test]
    fn spill_settings_per_node() {
        let top = "cluster_name = \"c\"\nsecret = \"0123456789abcdef\"\n";
        let f = parse(&format!(
            "{top}{HEAD}spill_dir = \"/scratch/oxray\"\n[[node]]\naddress = \"127.0.0.1\"\nspilling = false\n"
        ))
        .expect("parses");
        assert_eq!(f.head.spill_dir.as_deref(), Some("/scratch/oxray"));
        assert!(f.head.spilling);
        assert!(!f.nodes[0].spilling);
        assert_eq!(f.nodes[0].spill_dir, None);
    }

    #[test]
    fn errors_name_their_line() {
        let top = "cluster_name = \"c\"\nsecret = \"0123456789abcdef\"\n";
        let (line, reason) = line_of(&format!("{top}{HEAD}num_cpu = 2\n"));
        assert_eq!(line, Some(6), "{reason}");
        assert!(reason.contains("num_cpu"), "{reason}");
        let (line, _) = line_of(&format!("{top}{HEAD}num_cpus = = 2\n"));
        assert_eq!(line, Some(6));
        let (line, reason) = line_of(&format!("{top}{HEAD}num_cpus = -1\n"));
        assert_eq!(line, Some(6));
        assert!(reason.contains("num_cpus"), "{reason}");
        let (line, reason) = line_of(&format!("{top}{HEAD}port = \"x\"\n"));
        assert!(line.is_some(), "{reason}");
        let (line, reason) = line_of(&format!("cluster_name = \"c\"\nsecret = \"short\"\n{HEAD}"));
        assert_eq!(line, Some(2));
        assert!(reason.contains("at least 16"), "{reason}");
        let (_, reason) = line_of(&format!("cluster_name = \"c\"\n{HEAD}"));
        assert!(reason.contains("secret"), "{reason}");
        let (line, reason) = line_of(&format!(
            "cluster_name = \"c\"\nsecret = \"0123456789abcdef\"\nsecret_file = \"s\"\n{HEAD}"
        ));
        assert_eq!(line, Some(3));
        assert!(reason.contains("not both"), "{reason}");
        let (line, reason) = line_of(&format!(
            "cluster_name = \"a b\"\nsecret = \"0123456789abcdef\"\n{HEAD}"
        ));
        assert_eq!(line, Some(1));
        assert!(reason.contains("cluster_name"), "{reason}");
        let (_, reason) = line_of(&format!("{top}[head]\naddress = \"127.0.0.1\"\nport = 0\n"));
        assert!(reason.contains("fixed port"), "{reason}");
        let (_, reason) = line_of(&format!("{top}{HEAD}resources = {{ CPU = 2 }}\n"));
        assert!(reason.contains("num_cpus"), "{reason}");
        let (_, reason) = line_of(&format!("{top}{HEAD}resources = {{ gpu = -1 }}\n"));
        assert!(reason.contains("0 or more"), "{reason}");
        let (_, reason) = line_of(&format!(
            "{top}{HEAD}[[node]]\naddress = \"127.0.0.1\"\nsession = \"c-head\"\n"
        ));
        assert!(reason.contains("session"), "{reason}");
        let (line, reason) = line_of(&format!(
            "{top}{HEAD}[[node]]\naddress = \"127.0.0.1\"\nsession = \"../../tmp/evil\"\n"
        ));
        assert_eq!(line, Some(8), "{reason}");
        assert!(reason.contains("is not allowed"), "{reason}");
        let (_, reason) = line_of(&format!(
            "{top}{HEAD}[[node]]\naddress = \"127.0.0.1\"\nport = 7000\n"
        ));
        assert!(reason.contains("different ports"), "{reason}");
        let (_, reason) = line_of(&format!(
            "{top}health_check_period_ms = 500\nhealth_check_timeout_ms = 400\n{HEAD}"
        ));
        assert!(reason.contains("longer"), "{reason}");
        let (_, reason) = line_of(top);
        assert!(reason.contains("[head]"), "{reason}");
        let (_, reason) = line_of(&format!("{top}{HEAD}spill_dir = \" \"\n"));
        assert!(reason.contains("spill_dir is empty"), "{reason}");
    }

    #[test]
    fn secret_files_are_read_relative_to_the_config() {
        let dir = std::env::temp_dir().join(format!("oxray-cf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("s.secret"), "  0123456789abcdef0123\n").expect("write");
        let text = format!("cluster_name = \"c\"\nsecret_file = \"s.secret\"\n{HEAD}");
        // Readable by others: refused, with the fix.
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::Permissions::from_mode(m);
        std::fs::set_permissions(dir.join("s.secret"), mode(0o644)).expect("chmod");
        match ClusterFile::parse("x.toml", &text, &dir) {
            Err(RayletError::ClusterFile { line, reason, .. }) => {
                assert_eq!(line, Some(2));
                assert!(reason.contains("chmod 600"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(dir.join("s.secret"), mode(0o600)).expect("chmod");
        let f = ClusterFile::parse("x.toml", &text, &dir).expect("parse");
        assert_eq!(f.secret, b"0123456789abcdef0123");
        let text = format!("cluster_name = \"c\"\nsecret_file = \"missing\"\n{HEAD}");
        match ClusterFile::parse("x.toml", &text, &dir) {
            Err(RayletError::ClusterFile { line, reason, .. }) => {
                assert_eq!(line, Some(2));
                assert!(reason.contains("missing"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn locality_and_ssh_templates() {
        let top =
            "cluster_name = \"c\"\nsecret = \"0123456789abcdef\"\nssh = \"ssh -p 22 {address}\"\n";
        let f = parse(&format!(
            "{top}{HEAD}[[node]]\naddress = \"10.1.2.3\"\n[[node]]\naddress = \"::1\"\nssh = \"jump {{address}}\"\n"
        ))
        .expect("parse");
        assert!(f.head.is_local());
        assert!(!f.nodes[0].is_local());
        assert!(f.nodes[1].is_local());
        assert_eq!(
            f.nodes[0].ssh_command(&f).as_deref(),
            Some("ssh -p 22 10.1.2.3")
        );
        assert_eq!(f.nodes[1].ssh_command(&f).as_deref(), Some("jump ::1"));
        assert_eq!(f.health_check_period, Duration::from_millis(1000));
        assert_eq!(f.health_check_timeout, Duration::from_millis(10000));
        assert_eq!(f.health_check_failure_threshold, 5);
    }

    #[test]
    fn health_check_settings() {
        let top = "cluster_name = \"c\"\nsecret = \"0123456789abcdef\"\n";
        let f = parse(&format!(
            "{top}health_check_period_ms = 50\nhealth_check_failure_threshold = 12\n{HEAD}"
        ))
        .expect("parse");
        assert_eq!(f.health_check_period, Duration::from_millis(50));
        assert_eq!(f.health_check_failure_threshold, 12);
        assert_eq!(f.health_check_timeout, Duration::from_millis(10000));
        // A long period: the default timeout stays above it.
        let f = parse(&format!("{top}health_check_period_ms = 8000\n{HEAD}")).expect("parse");
        assert_eq!(f.health_check_timeout, Duration::from_millis(16000));
        for bad in ["0", "1", "-3", "4294967296", "2.5", "\"5\""] {
            let (line, reason) = line_of(&format!(
                "{top}health_check_period_ms = 50\nhealth_check_failure_threshold = {bad}\n{HEAD}"
            ));
            assert_eq!(line, Some(4), "{bad}: {reason}");
            if ["0", "1", "4294967296"].contains(&bad) {
                assert!(reason.contains("from 2"), "{bad}: {reason}");
            }
        }
        let (line, reason) = line_of(&format!("{top}health_check_period_ms = 0\n{HEAD}"));
        assert_eq!(line, Some(3));
        assert!(reason.contains("above 0"), "{reason}");
    }
}
