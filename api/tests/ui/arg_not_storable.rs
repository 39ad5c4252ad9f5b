// A parameter type without the rkyv derives.
struct Point {
    x: f64,
}

#[oxray::remote]
fn norm(p: Point) -> f64 {
    p.x
}

fn main() {}
