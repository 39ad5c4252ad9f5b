// An actor constructor must return the actor (or `Result<Self, E>`).
#[oxray::actor]
pub struct Gauge {
    level: i64,
}

#[oxray::actor]
impl Gauge {
    fn new(level: i64) -> Option<Self> {
        Some(Gauge { level })
    }

    fn level(&self) -> i64 {
        self.level
    }
}

fn main() {}
