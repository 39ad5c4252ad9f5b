// `num_returns = 2` on a function whose value cannot be split in two.
#[oxray::remote(num_returns = 2)]
fn pair() -> u64 {
    1
}

fn main() {}
