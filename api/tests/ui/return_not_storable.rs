// A task returning a type without the rkyv derives.
struct Point {
    x: f64,
}

#[oxray::remote]
fn make() -> Point {
    Point { x: 1.0 }
}

fn main() {}
