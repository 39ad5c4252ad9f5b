// A borrowed parameter: the value comes from another process.
#[oxray::remote]
fn total(xs: &[f64]) -> f64 {
    xs.iter().sum()
}

fn main() {}
