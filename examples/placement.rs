//! Placement groups and scheduling strategies on a three-node cluster: a parameter server and
//! three workers reserved together as a gang spread over every node (STRICT_SPREAD: one bundle
//! per node), and a two-stage pipeline packed on one node (PACK) so its stages share that
//! node's object store. Prints where each landed.
//!
//! ```sh
//! oxray up examples/cluster.toml                 # three local nodes; the head is "demo-head"
//! OXRAY_ADDRESS=unix:@demo-head cargo run --release --example placement
//! oxray status                                   # lists the placement groups
//! oxray down examples/cluster.toml
//! ```
//!
//! Without `OXRAY_ADDRESS` it attaches to `unix:@demo-head`; on a lone node (`oxray start`)
//! the gang waits as infeasible and the example says so.

use std::collections::BTreeMap;
use std::time::Duration;

use oxray::prelude::*;
use oxray::{bundle, PlacementGroupOptions, PlacementStrategy};

/// Holds the model; workers push gradients to it.
#[oxray::actor]
pub struct Server {
    weights: Vec<f64>,
}

#[oxray::actor]
impl Server {
    fn new(n: usize) -> Self {
        Server {
            weights: vec![0.0; n],
        }
    }

    fn push(&mut self, grad: Vec<f64>) -> f64 {
        for (w, g) in self.weights.iter_mut().zip(&grad) {
            *w -= 0.1 * g;
        }
        self.weights.iter().sum()
    }

    fn node(&self) -> String {
        oxray::node_id().expect("node id")
    }
}

/// Computes gradients where it lives.
#[oxray::actor]
pub struct Worker {
    seed: u64,
}

#[oxray::actor]
impl Worker {
    fn new(seed: u64) -> Self {
        Worker { seed }
    }

    fn gradient(&self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i as u64 ^ self.seed) % 7) as f64)
            .collect()
    }

    fn node(&self) -> String {
        oxray::node_id().expect("node id")
    }
}

/// A pipeline stage: makes a block, or sums one made by the stage before it.
#[oxray::remote]
fn make_block(n: usize) -> (Vec<f64>, String) {
    (vec![1.5; n], oxray::node_id().expect("node id"))
}

#[oxray::remote]
fn sum_block(block: ObjectRef<(Vec<f64>, String)>) -> (f64, String) {
    let (xs, _) = oxray::get(&block).expect("the block");
    (xs.iter().sum(), oxray::node_id().expect("node id"))
}

fn main() -> oxray::Result<()> {
    let address = std::env::var("OXRAY_ADDRESS").unwrap_or_else(|_| "unix:@demo-head".to_owned());
    let Ok(_cluster) = oxray::init_with(oxray::Config::new().address(address.clone())) else {
        eprintln!(
            "cannot attach to {address}; start the cluster first: oxray up examples/cluster.toml"
        );
        std::process::exit(2);
    };
    let names: BTreeMap<String, String> = oxray::nodes()?
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), format!("node {i} ({})", n.peer_address)))
        .collect();
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_owned());

    // The gang: one bundle per node, all reserved or none.
    let cpu = || bundle(&[("CPU", 1.0)]);
    let gang =
        PlacementGroupOptions::new(vec![cpu(), cpu(), cpu()], PlacementStrategy::StrictSpread)
            .name("training")
            .create()?;
    if !gang.wait(Duration::from_secs(10))? {
        println!("the gang waits: {}", gang.info()?.reason);
        gang.remove()?;
        return Ok(());
    }
    // The server and the first worker share bundle 0 (half a CPU each); the others get one
    // bundle each.
    let server = Server::options()
        .num_cpus(0.5)
        .placement_group(&gang, Some(0))
        .remote(8)?;
    let workers: Vec<ActorHandle<Worker>> = [0, 1, 2]
        .into_iter()
        .map(|b| {
            Worker::options()
                .num_cpus(if b == 0 { 0.5 } else { 1.0 })
                .placement_group(&gang, Some(b))
                .remote(b as u64)
        })
        .collect::<oxray::Result<_>>()?;
    println!("gang (STRICT_SPREAD):");
    println!("  server   on {}", name(&oxray::get(&server.node()?)?));
    for (i, w) in workers.iter().enumerate() {
        println!("  worker {i} on {}", name(&oxray::get(&w.node()?)?));
    }
    let mut total = 0.0;
    for w in &workers {
        let grad = w.gradient(8)?;
        total = oxray::get(&server.push(&grad)?)?;
    }
    println!("  weights sum after one round: {total:.1}");

    // The pipeline: both stages packed on one node (half a CPU each: every node has one CPU
    // left beside the gang's bundle, so PACK finds a node for both).
    let half = || bundle(&[("CPU", 0.5)]);
    let pipeline = oxray::placement_group(vec![half(), half()], PlacementStrategy::Pack)?;
    pipeline.ready()?;
    let block = make_block::options()
        .num_cpus(0.5)
        .placement_group(&pipeline, Some(0))
        .remote(1_000_000)?;
    let summed = sum_block::options()
        .num_cpus(0.5)
        .placement_group(&pipeline, Some(1))
        .remote(block.clone())?;
    let (_, made_on) = oxray::get(&block)?;
    let (sum, summed_on) = oxray::get(&summed)?;
    println!(
        "pipeline (PACK): made on {}, summed ({sum}) on {}",
        name(&made_on),
        name(&summed_on)
    );

    gang.remove()?;
    pipeline.remove()?;
    Ok(())
}
