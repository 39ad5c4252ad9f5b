//! A parameter server: one actor holds the model's weights; worker tasks pull the weights, compute
//! gradients on their shard of a data set that was put into the store once (read with zero
//! copies), and push the gradients back. The model is a linear regression, so the example needs
//! nothing but oxray and its loss visibly falls towards the noise floor.
//!
//! It runs the two schemes of Ray's parameter-server tutorial: synchronous (the driver gathers
//! every worker's gradient, then applies them in one step) and asynchronous (each worker pushes
//! and pulls on its own, the actor serialising the updates).
//!
//! `cargo run --release --example parameter_server [-- ROWS WORKERS]` (default 200 000 rows, 4
//! workers).

use std::ops::Range;

use oxray::prelude::*;
use oxray::rkyv::Archived;

const FEATURES: usize = 16;
const NOISE: f64 = 0.1;

/// Holds the weights and applies gradients in the order they arrive.
#[oxray::actor]
pub struct ParameterServer {
    weights: Vec<f64>,
    learning_rate: f64,
    updates: u64,
}

#[oxray::actor]
impl ParameterServer {
    fn new(features: u32, learning_rate: f64) -> Self {
        ParameterServer {
            weights: vec![0.0; features as usize],
            learning_rate,
            updates: 0,
        }
    }

    /// Applies the mean of `gradients` and returns the new weights.
    fn apply_gradients(&mut self, gradients: Vec<Vec<f64>>) -> Vec<f64> {
        let scale = self.learning_rate / gradients.len().max(1) as f64;
        for g in &gradients {
            for (w, gi) in self.weights.iter_mut().zip(g) {
                *w -= scale * gi;
            }
        }
        self.updates += 1;
        self.weights.clone()
    }

    fn get_weights(&self) -> Vec<f64> {
        self.weights.clone()
    }

    fn updates(&self) -> u64 {
        self.updates
    }
}

/// The rows of shard `shard` of `shards`.
fn shard_rows(rows: usize, shard: u32, shards: u32) -> Range<usize> {
    let (s, n) = (shard as usize, shards as usize);
    rows * s / n..rows * (s + 1) / n
}

/// Gradient of the mean squared error over `rows`, reading `x` (row-major) and `y` in place.
fn gradient(x: &[Archived<f64>], y: &[Archived<f64>], w: &[f64], rows: Range<usize>) -> Vec<f64> {
    let mut g = vec![0.0; w.len()];
    let n = rows.len().max(1) as f64;
    for r in rows {
        let row = &x[r * w.len()..(r + 1) * w.len()];
        let err = row
            .iter()
            .zip(w)
            .map(|(a, b)| a.to_native() * b)
            .sum::<f64>()
            - y[r].to_native();
        for (gi, a) in g.iter_mut().zip(row) {
            *gi += 2.0 * err * a.to_native() / n;
        }
    }
    g
}

/// Synchronous scheme: one gradient of this worker's shard for the given weights.
#[oxray::remote]
fn compute_gradient(
    x: ObjectView<Vec<f64>>,
    y: ObjectView<Vec<f64>>,
    weights: Vec<f64>,
    shard: u32,
    shards: u32,
) -> Vec<f64> {
    gradient(&x, &y, &weights, shard_rows(y.len(), shard, shards))
}

/// Asynchronous scheme: `steps` rounds of pull weights, compute a gradient on one batch of this
/// worker's shard, push it. Returns how many updates this worker pushed.
#[oxray::remote]
fn async_worker(
    ps: ActorHandle<ParameterServer>,
    x: ObjectView<Vec<f64>>,
    y: ObjectView<Vec<f64>>,
    shard: u32,
    shards: u32,
    steps: u32,
) -> u32 {
    let rows = shard_rows(y.len(), shard, shards);
    let batch = (rows.len() / steps as usize).max(1);
    let mut weights = oxray::get(&ps.get_weights().expect("call")).expect("weights");
    for step in 0..steps as usize {
        let lo = rows.start + (step * batch) % rows.len().max(1);
        let hi = (lo + batch).min(rows.end);
        let g = gradient(&x, &y, &weights, lo..hi);
        weights = oxray::get(&ps.apply_gradients(vec![g]).expect("call")).expect("weights");
    }
    steps
}

/// Mean squared error of `weights` over the whole data set.
#[oxray::remote]
fn loss(x: ObjectView<Vec<f64>>, y: ObjectView<Vec<f64>>, weights: Vec<f64>) -> f64 {
    let d = weights.len();
    let n = y.len();
    (0..n)
        .map(|r| {
            let p: f64 = x[r * d..(r + 1) * d]
                .iter()
                .zip(&weights)
                .map(|(a, b)| a.to_native() * b)
                .sum();
            (p - y[r].to_native()).powi(2)
        })
        .sum::<f64>()
        / n as f64
}

/// splitmix64: a seeded stream, so every run makes the same data.
struct Stream(u64);

impl Stream {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (-1, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn main() -> oxray::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(200_000);
    let workers = args.get(1).copied().unwrap_or(4) as u32;

    let _cluster = oxray::init()?;

    // y = x · w* + noise, with w* = (1, -1, 2, -2, ...).
    let truth: Vec<f64> = (0..FEATURES)
        .map(|i| (1 + i / 2) as f64 * if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let mut rng = Stream(7);
    let x: Vec<f64> = (0..rows * FEATURES).map(|_| rng.uniform()).collect();
    let y: Vec<f64> = (0..rows)
        .map(|r| {
            let row = &x[r * FEATURES..(r + 1) * FEATURES];
            row.iter().zip(&truth).map(|(a, b)| a * b).sum::<f64>() + NOISE * rng.uniform()
        })
        .collect();
    // Put once; every task reads the same copy in shared memory.
    let (x, y) = (oxray::put(&x)?, oxray::put(&y)?);
    println!(
        "data: {rows} rows x {FEATURES} features ({:.0} MB in the store), {workers} workers",
        (rows * (FEATURES + 1) * 8) as f64 / 1e6
    );

    // Synchronous: gather every worker's gradient for the same weights, apply them together.
    let ps = ParameterServer::remote(FEATURES as u32, 0.3)?;
    let mut weights = oxray::get(&ps.get_weights()?)?;
    let first = oxray::get(&loss::remote(&x, &y, weights.clone())?)?;
    println!("sync:  start loss {first:.4}");
    for round in 1..=20 {
        let grads: Vec<ObjectRef<Vec<f64>>> = (0..workers)
            .map(|w| compute_gradient::remote(&x, &y, weights.clone(), w, workers))
            .collect::<Result<_>>()?;
        weights = oxray::get(&ps.apply_gradients(oxray::get_all(&grads)?)?)?;
        if round % 5 == 0 {
            let l = oxray::get(&loss::remote(&x, &y, weights.clone())?)?;
            println!("sync:  round {round:2} loss {l:.4}");
        }
    }
    oxray::kill(&ps)?;

    // Asynchronous: workers push and pull on their own; the actor applies updates one at a time.
    let ps = ParameterServer::remote(FEATURES as u32, 0.1)?;
    let steps = 50;
    let done: Vec<ObjectRef<u32>> = (0..workers)
        .map(|w| async_worker::remote(ps.clone(), &x, &y, w, workers, steps))
        .collect::<Result<_>>()?;
    let pushed: u32 = oxray::get_all(&done)?.iter().sum();
    let weights = oxray::get(&ps.get_weights()?)?;
    let l = oxray::get(&loss::remote(&x, &y, weights.clone())?)?;
    println!(
        "async: {pushed} updates pushed, {} applied, loss {l:.4}",
        oxray::get(&ps.updates()?)?
    );
    let error = weights
        .iter()
        .zip(&truth)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("largest weight error vs. the true model: {error:.4}");
    println!("(noise floor: loss {:.4})", NOISE * NOISE / 3.0);
    oxray::kill(&ps)?;
    Ok(())
}
