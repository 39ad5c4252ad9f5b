//! Placement groups on one node: made, awaited, used by tasks and actors, found by name,
//! listed, and removed (their work stops); groups that cannot be placed wait with a reason.
//! Bundles take little CPU (these tests share a 2-CPU node with the others) and the node's
//! custom `slot` resource.

use std::time::Duration;

use oxray::prelude::*;
use oxray::{bundle, PlacementGroupOptions, PlacementGroupState, PlacementStrategy};

use crate::cluster;

#[oxray::remote]
fn square(x: u64) -> u64 {
    x * x
}

/// Says which resources its worker was leased with, through the node's view of them.
#[oxray::actor]
pub struct Holder {
    n: u64,
}

#[oxray::actor]
impl Holder {
    fn new(n: u64) -> Self {
        Holder { n }
    }

    fn get(&self) -> u64 {
        self.n
    }
}

fn small() -> oxray::Resources {
    bundle(&[("CPU", 0.1), ("slot", 1.0)])
}

#[test]
fn a_group_is_made_used_listed_and_removed() {
    cluster();
    let pg = PlacementGroupOptions::new(vec![small(), small()], PlacementStrategy::StrictPack)
        .name("pg-used")
        .create()
        .expect("a group");
    pg.ready().expect("placed");
    assert!(pg.wait(Duration::from_secs(5)).expect("wait"));
    let info = pg.info().expect("info");
    assert_eq!(info.state, PlacementGroupState::Created);
    assert_eq!(info.nodes.len(), 2);
    assert!(info.nodes.iter().all(|n| n.is_some()), "{info:?}");
    // Tasks in each bundle, and in any.
    let rs: Vec<ObjectRef<u64>> = [Some(0), Some(1), None]
        .into_iter()
        .map(|b| {
            square::options()
                .num_cpus(0.1)
                .placement_group(&pg, b)
                .remote(7)
        })
        .collect::<Result<_>>()
        .expect("submit");
    assert_eq!(oxray::get_all(&rs).expect("results"), vec![49, 49, 49]);
    // More than a bundle holds is refused at once, and so is a bundle that does not exist.
    match square::options()
        .num_cpus(1.0)
        .placement_group(&pg, Some(0))
        .remote(1)
    {
        Err(Error::Config { message }) => {
            assert!(message.contains("more than bundle 0"), "{message}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(matches!(
        square::options()
            .num_cpus(0.1)
            .placement_group(&pg, Some(5))
            .remote(1),
        Err(Error::Config { .. })
    ));
    // An actor in bundle 1; found by name; listed.
    let h = Holder::options()
        .placement_group(&pg, Some(1))
        .remote(5)
        .expect("an actor");
    assert_eq!(oxray::get(&h.get().expect("call")).expect("value"), 5);
    let found = oxray::get_placement_group("pg-used").expect("by name");
    assert_eq!(found.id(), pg.id());
    let table = oxray::placement_group_table().expect("table");
    assert!(table
        .iter()
        .any(|g| g.spec.id == pg.id() && g.spec.name == "pg-used"));
    // Removed: its actor dies, new work in it fails typed, the name is free.
    pg.remove().expect("remove");
    assert_eq!(pg.info().expect("info").state, PlacementGroupState::Removed);
    assert!(crate::eventually(Duration::from_secs(10), || matches!(
        h.get().and_then(|r| oxray::get(&r)),
        Err(Error::ActorDied { .. })
    )));
    match square::options()
        .num_cpus(0.1)
        .placement_group(&pg, Some(0))
        .remote(2)
        .and_then(|r| oxray::get(&r))
    {
        Err(Error::Unschedulable { message }) => assert!(message.contains("removed"), "{message}"),
        other => panic!("expected Unschedulable, got {other:?}"),
    }
    assert!(oxray::get_placement_group("pg-used").is_err());
    assert!(pg.ready().is_err(), "a removed group is never ready");
}

#[test]
fn a_group_that_cannot_be_placed_waits_with_its_reason() {
    cluster();
    // Two bundles on distinct nodes, on a one-node cluster: never.
    let pg = oxray::placement_group(vec![small(), small()], PlacementStrategy::StrictSpread)
        .expect("asked");
    assert!(!pg.wait(Duration::from_millis(300)).expect("wait"));
    let info = pg.info().expect("info");
    assert_eq!(info.state, PlacementGroupState::Pending);
    assert!(info.reason.contains("infeasible"), "{}", info.reason);
    // More slots than the node has: waits too.
    let big = oxray::placement_group(vec![bundle(&[("slot", 100.0)])], PlacementStrategy::Pack)
        .expect("asked");
    assert!(big.info().expect("info").reason.contains("infeasible"));
    // A bad group is refused at once.
    assert!(oxray::placement_group(vec![], PlacementStrategy::Pack).is_err());
    assert!(oxray::placement_group(vec![bundle(&[])], PlacementStrategy::Pack).is_err());
    match oxray::placement_group(vec![small(); 10_001], PlacementStrategy::Pack) {
        Err(Error::PlacementGroup { message }) => assert!(message.contains("at most"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    pg.remove().expect("remove");
    big.remove().expect("remove");
}

#[test]
fn a_group_is_awaited_from_async_code() {
    cluster();
    let pg = oxray::placement_group(vec![small()], PlacementStrategy::Pack).expect("asked");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        pg.ready_async().await.expect("placed");
        let r = square::options()
            .num_cpus(0.1)
            .placement_group(&pg, Some(0))
            .remote(3)
            .expect("submit");
        assert_eq!(r.await.expect("value"), 9);
    });
    pg.remove().expect("remove");
}
