//! The tutorial's workload on a multi-node cluster: one big array `put` once, then tasks on
//! every node read it in place. Each node pulls one copy (in chunks, over QUIC) the first time a
//! task there needs it; every later task on that node reads the same copy with no copying.
//!
//! ```sh
//! oxray up examples/cluster.toml                 # three local nodes; the head is "demo-head"
//! OXRAY_ADDRESS=unix:@demo-head cargo run --release --example cluster
//! oxray down examples/cluster.toml
//! ```
//!
//! (`oxray` is `cargo install --path api`, or `cargo run --release -p oxray --bin oxray --`.)
//! Without `OXRAY_ADDRESS` the example attaches to `unix:@demo-head`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use oxray::prelude::*;
use oxray::SchedulingStrategy;

/// Mean of the shared array, read in place on whichever node runs the task; says where.
#[oxray::remote]
fn mean_on_node(xs: ObjectView<Vec<f64>>, slice: u64, slices: u64) -> (String, f64) {
    let n = xs.len() as u64;
    let (from, to) = (n * slice / slices, n * (slice + 1) / slices);
    let sum: f64 = (from..to).map(|i| xs[i as usize].to_native()).sum();
    // Long enough that the work does not all fit on the head's two CPUs.
    std::thread::sleep(Duration::from_millis(200));
    (oxray::node_id().expect("node id"), sum / (to - from) as f64)
}

fn main() -> oxray::Result<()> {
    let address = std::env::var("OXRAY_ADDRESS").unwrap_or_else(|_| "unix:@demo-head".to_owned());
    let cluster = oxray::init_with(oxray::Config::new().address(address.clone()));
    let _cluster = match cluster {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cannot attach to {address}: {e}\nstart the cluster first: \
                 oxray up examples/cluster.toml"
            );
            std::process::exit(2);
        }
    };
    let nodes = oxray::nodes()?;
    let names: BTreeMap<String, String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let role = if n.is_head {
                "head".into()
            } else {
                format!("node{i}")
            };
            (n.id.clone(), format!("{role} {}", n.peer_address))
        })
        .collect();
    println!("{} nodes alive:", nodes.iter().filter(|n| n.alive).count());
    for n in &nodes {
        println!("  {:<28} {:?}", names[&n.id], n.resources);
    }

    // 80 MB, put once on the head.
    let n = 10_000_000;
    let data: Vec<f64> = (0..n).map(|i| (i % 1000) as f64).collect();
    let big = oxray::put(&data)?;
    let expected = data.iter().sum::<f64>() / n as f64;
    drop(data);

    let started = Instant::now();
    let slices = 24;
    // SPREAD: round-robin over the nodes, whatever room the head has.
    let refs: Vec<_> = (0..slices)
        .map(|s| {
            mean_on_node::options()
                .scheduling_strategy(SchedulingStrategy::Spread)
                .remote(&big, s, slices)
        })
        .collect::<oxray::Result<_>>()?;
    let results = oxray::get_all(&refs)?;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (node, _) in &results {
        *per_node
            .entry(names.get(node).cloned().unwrap_or_else(|| node.clone()))
            .or_default() += 1;
    }
    let mean = results.iter().map(|(_, m)| m).sum::<f64>() / slices as f64;
    println!(
        "{slices} tasks in {:.2?}; which node ran what:",
        started.elapsed()
    );
    for (node, count) in &per_node {
        println!("  {node:<28} {count} tasks");
    }
    println!("mean {mean:.3} (expected {expected:.3})");
    assert!((mean - expected).abs() < 1e-6);

    // Node affinity: one more slice on the last node, by its id.
    if let Some(last) = nodes.iter().rfind(|n| n.alive) {
        let node_id: oxray::NodeId = last.id.parse().map_err(|e| oxray::Error::Config {
            message: format!("bad node id {}: {e}", last.id),
        })?;
        let pinned = mean_on_node::options()
            .scheduling_strategy(SchedulingStrategy::NodeAffinity {
                node_id,
                soft: false,
            })
            .remote(&big, 0, slices)?;
        let (ran_on, _) = oxray::get(&pinned)?;
        println!("pinned to {}: ran on {}", names[&last.id], names[&ran_on]);
    }
    Ok(())
}
