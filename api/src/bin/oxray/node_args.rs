//! The options of one node, shared by `oxray start`, the node process it starts in the
//! background, and `oxray up` (which starts each node of a cluster file with them).

use std::path::{Path, PathBuf};

use clap::Args;
use oxray_raylet::cluster::ClusterConfig;
use oxray_raylet::{files, RayletConfig};

/// The cluster name when none is given.
pub const DEFAULT_CLUSTER: &str = "oxray";

/// What to start and how big it is.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Start a single node, or with --port a cluster's head.
    #[arg(long, conflicts_with = "address")]
    pub head: bool,
    /// Join the cluster whose head listens at HOST:PORT (its --port).
    #[arg(long, value_name = "HEAD_HOST:PORT", value_parser = head_address)]
    pub address: Option<String>,
    /// UDP port other nodes reach this one on (a head's is the one they join; 0: any).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// CPUs this node offers [default: this machine's]
    #[arg(long, value_name = "N", value_parser = non_negative)]
    pub num_cpus: Option<f64>,
    /// Bytes of shared memory for the object store.
    #[arg(long, value_name = "BYTES", value_parser = bytes)]
    pub object_store_memory: Option<u64>,
    /// Custom resources this node offers, as name=amount,...
    #[arg(long, value_name = "NAME=AMOUNT,..", value_parser = resources)]
    pub resources: Option<Resources>,
    /// The node's session name (its local address is unix:@SESSION).
    #[arg(long, value_name = "NAME", value_parser = session_name)]
    pub session: Option<String>,
    /// The address other nodes reach this one at [default: the one packets to the head leave from]
    #[arg(long, value_name = "HOST")]
    pub node_ip_address: Option<String>,
    /// The cluster's name; nodes of another name are refused.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER, value_parser = cluster_name)]
    pub cluster_name: String,
    /// A file (mode 600) holding the cluster secret [or the OXRAY_CLUSTER_SECRET variable]
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// How often the head checks each member, in milliseconds [default: 1000]
    #[arg(long, value_name = "MS")]
    pub health_check_period_ms: Option<u64>,
    /// Missed checks after which a member is declared dead [default: 5]
    #[arg(long, value_name = "N")]
    pub health_check_failure_threshold: Option<u32>,
    /// How long one check may take, in milliseconds [default: 10000]
    #[arg(long, value_name = "MS")]
    pub health_check_timeout_ms: Option<u64>,
    /// Where objects are spilled when the store is full [default: the node's session directory]
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Do not spill: a create that does not fit fails with ObjectStoreFull.
    #[arg(long, conflicts_with = "spill_dir")]
    pub no_spilling: bool,
    /// How long a create waits for room in a full store (spilling off) before it fails with
    /// ObjectStoreFull, in milliseconds [default: 1000]
    #[arg(long, value_name = "MS")]
    pub store_full_wait_ms: Option<u64>,
    /// The dashboard's port on 127.0.0.1, served by the head (0: any free port) [default: 8265]
    #[arg(long, value_name = "PORT", conflicts_with_all = ["no_dashboard", "address"])]
    pub dashboard_port: Option<u16>,
    /// Serve no dashboard.
    #[arg(long)]
    pub no_dashboard: bool,
}

/// Custom resources from `--resources`.
#[derive(Debug, Clone, Default)]
pub struct Resources(pub Vec<(String, f64)>);

fn non_negative(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(n) if n >= 0.0 => Ok(n),
        _ => Err(format!("`{v}` is not a number of CPUs (zero or more)")),
    }
}

fn bytes(v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("`{v}` is not a number of bytes"))
}

fn resources(v: &str) -> Result<Resources, String> {
    let mut out = Vec::new();
    for kv in v.split(',').filter(|s| !s.is_empty()) {
        let (k, amount) = kv
            .split_once('=')
            .ok_or_else(|| format!("`{kv}` is not name=amount"))?;
        let amount: f64 = amount
            .parse()
            .ok()
            .filter(|a: &f64| a.is_finite() && *a >= 0.0)
            .ok_or_else(|| format!("`{amount}` is not an amount (zero or more)"))?;
        out.push((k.to_owned(), amount));
    }
    Ok(Resources(out))
}

fn head_address(v: &str) -> Result<String, String> {
    if !v.contains(':') || v.starts_with("unix:") {
        return Err(format!(
            "`{v}` is not a head's HOST:PORT (the head's --port)"
        ));
    }
    Ok(v.to_owned())
}

fn session_name(v: &str) -> Result<String, String> {
    files::check_name("--session", v)?;
    Ok(v.to_owned())
}

fn cluster_name(v: &str) -> Result<String, String> {
    files::check_name("--cluster-name", v)?;
    Ok(v.to_owned())
}

impl NodeArgs {
    /// The flags that give these options again (for the background node process and `up`).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_owned());
            args.push(value);
        };
        if let Some(a) = &self.address {
            push("--address", a.clone());
        }
        if let Some(p) = self.port {
            push("--port", p.to_string());
        }
        if let Some(n) = self.num_cpus {
            push("--num-cpus", n.to_string());
        }
        if let Some(m) = self.object_store_memory {
            push("--object-store-memory", m.to_string());
        }
        if let Some(Resources(rs)) = &self.resources {
            let list: Vec<String> = rs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            push("--resources", list.join(","));
        }
        if let Some(s) = &self.session {
            push("--session", s.clone());
        }
        if let Some(h) = &self.node_ip_address {
            push("--node-ip-address", h.clone());
        }
        push("--cluster-name", self.cluster_name.clone());
        if let Some(f) = &self.secret_file {
            push("--secret-file", f.display().to_string());
        }
        if let Some(ms) = self.health_check_period_ms {
            push("--health-check-period-ms", ms.to_string());
        }
        if let Some(n) = self.health_check_failure_threshold {
            push("--health-check-failure-threshold", n.to_string());
        }
        if let Some(ms) = self.health_check_timeout_ms {
            push("--health-check-timeout-ms", ms.to_string());
        }
        if let Some(d) = &self.spill_dir {
            push("--spill-dir", d.display().to_string());
        }
        if let Some(ms) = self.store_full_wait_ms {
            push("--store-full-wait-ms", ms.to_string());
        }
        if let Some(p) = self.dashboard_port {
            push("--dashboard-port", p.to_string());
        }
        if self.no_spilling {
            args.push("--no-spilling".to_owned());
        }
        if self.no_dashboard {
            args.push("--no-dashboard".to_owned());
        }
        if self.head {
            args.push("--head".to_owned());
        }
        args
    }

    /// The session name the node will have.
    pub fn session(&self) -> String {
        self.session
            .clone()
            .unwrap_or_else(|| RayletConfig::default().session)
    }

    /// The secret from `--secret-file` or `OXRAY_CLUSTER_SECRET`, if given.
    pub fn secret(&self) -> Result<Option<Vec<u8>>, String> {
        secret(self.secret_file.as_deref())
    }

    /// The raylet's configuration.
    pub fn config(&self) -> Result<RayletConfig, String> {
        let mut config = RayletConfig {
            prestart_workers: 0,
            ..RayletConfig::default()
        };
        if let Some(n) = self.num_cpus {
            config.num_cpus = n;
        }
        if let Some(m) = self.object_store_memory {
            config.object_store_memory = m;
        }
        if let Some(Resources(rs)) = &self.resources {
            config.resources.extend(rs.iter().cloned());
        }
        config.session = self.session();
        config.spilling = !self.no_spilling;
        config.spill_dir = self.spill_dir.clone();
        if let Some(ms) = self.store_full_wait_ms {
            config.store_full_wait = std::time::Duration::from_millis(ms);
        }
        // The head (or a node on its own) serves the dashboard; members joining it do not.
        config.dashboard_port = (!self.no_dashboard && self.address.is_none()).then(|| {
            self.dashboard_port
                .unwrap_or(oxray_raylet::dashboard::DEFAULT_PORT)
        });
        config.cluster = self.cluster_config()?;
        Ok(config)
    }

    /// Cluster membership: `--head --port P` makes a head, `--address H:P` a member.
    fn cluster_config(&self) -> Result<Option<ClusterConfig>, String> {
        let name = self.cluster_name.as_str();
        let host = match (&self.node_ip_address, &self.address) {
            (Some(h), _) => h.clone(),
            (None, Some(head)) => route_ip(head).unwrap_or_else(|| "127.0.0.1".into()),
            (None, None) => "127.0.0.1".into(),
        };
        let millis = std::time::Duration::from_millis;
        let with_health = |mut c: ClusterConfig| {
            if let Some(p) = self.health_check_period_ms {
                c.health_check_period = millis(p);
            }
            if let Some(t) = self.health_check_timeout_ms {
                c.health_check_timeout = millis(t);
            }
            if let Some(n) = self.health_check_failure_threshold {
                c.health_check_failure_threshold = n;
            }
            Some(c)
        };
        match (self.head, &self.address, self.port) {
            (true, Some(_), _) => Err("--head and --address exclude each other".into()),
            (true, None, None) => Ok(None),
            (true, None, Some(port)) => {
                let secret = self.secret()?.ok_or(
                    "a cluster head needs a secret: --secret-file PATH or OXRAY_CLUSTER_SECRET",
                )?;
                Ok(with_health(ClusterConfig::head(name, secret, &host, port)))
            }
            (false, Some(head), port) => {
                let secret = self.secret()?.ok_or(
                    "joining a cluster needs its secret: --secret-file PATH or OXRAY_CLUSTER_SECRET",
                )?;
                Ok(with_health(ClusterConfig::member(
                    name,
                    secret,
                    &host,
                    port.unwrap_or(0),
                    head,
                )))
            }
            (false, None, _) => Err(
                "say what to start: `oxray start --head` (a single node or, with --port, a \
                 cluster's head) or `oxray start --address HEAD_HOST:PORT` (join a cluster)"
                    .into(),
            ),
        }
    }
}

/// The secret from the file at `path` (which must be mode 600) or `OXRAY_CLUSTER_SECRET`.
pub fn secret(path: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    if let Some(path) = path {
        let text = files::read_secret_file(path).map_err(|e| format!("--secret-file: {e}"))?;
        return Ok(Some(text.into_bytes()));
    }
    Ok(std::env::var("OXRAY_CLUSTER_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().as_bytes().to_vec()))
}

/// The local IP address packets to `head` (`host:port`) leave from: what a member advertises
/// when not told (Ray does the same), so other nodes reach it on the network the head is on.
fn route_ip(head: &str) -> Option<String> {
    use std::net::{ToSocketAddrs, UdpSocket};
    let target = head.to_socket_addrs().ok()?.next()?;
    let any = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(any).ok()?;
    // A UDP connect sends nothing; it only picks the route and so the source address.
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}
