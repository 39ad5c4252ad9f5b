//! Placement groups (Ray's): sets of resource *bundles* reserved together across the cluster,
//! so that a gang of tasks and actors starts whole or not at all.
//!
//! A group is placed by one manager (the head's raylet, or a lone node's) in two phases: every
//! node chosen *prepares* its bundles (takes their resources out of what it can lease), then
//! every one *commits* them; if any prepare fails, the ones that succeeded are *released*, and
//! the group waits to be tried again. A committed bundle `i` of group `g` with `{CPU: 2}` shows
//! on its node as the resources `CPU_group_i_g: 2` and `CPU_group_g: 2` (plus
//! `bundle_group_i_g` and `bundle_group_g`, 1000 each): work scheduled into the group asks for
//! those names instead of `CPU` ([`resources_in_group`]), so the ordinary lease scheduler routes
//! it to the bundle's node and bounds it by the bundle, as Ray does.

// rkyv derives an undocumented `Archived*` twin of every type here.
#![allow(missing_docs)]

use rkyv::{Archive, Deserialize, Serialize};

use crate::ids::{JobId, NodeId};
use crate::resources::Resources;

/// A placement group's id (random, so unique in the cluster).
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Debug,
    Default,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct PlacementGroupId(pub u64);

impl std::fmt::Display for PlacementGroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl PlacementGroupId {
    /// A fresh random id.
    pub fn random() -> PlacementGroupId {
        PlacementGroupId(crate::ids::NodeId::random().0)
    }
}

/// How a group's bundles are spread over nodes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PlacementStrategy {
    /// On as few nodes as possible (one if it fits), else spread over others.
    #[default]
    Pack,
    /// On distinct nodes where possible, else some share one.
    Spread,
    /// All on one node, or the group waits.
    StrictPack,
    /// Each on a node of its own, or the group waits.
    StrictSpread,
}

/// The life of a group.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementGroupState {
    /// Not placed yet: waiting for resources, or infeasible (see the reason).
    Pending,
    /// Every bundle is reserved on its node.
    Created,
    /// A node holding some of its bundles died; those are being placed again.
    Rescheduling,
    /// Removed: its bundles are free again, its work was stopped.
    Removed,
}

/// What a client asks for when it makes a group.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PlacementGroupSpec {
    /// The group.
    pub id: PlacementGroupId,
    /// Its bundles, in order (bundle `i` is `bundles[i]`).
    pub bundles: Vec<Resources>,
    /// How they are spread.
    pub strategy: PlacementStrategy,
    /// A name, unique in its namespace among live groups ("" for none).
    pub name: String,
    /// The namespace of the name.
    pub namespace: String,
    /// Outlives its creator's job (else removed when that job ends).
    pub detached: bool,
    /// The node and job that made it.
    pub creator: (NodeId, JobId),
}

/// A group as the manager knows it (`oxray::placement_group_table`, `oxray status`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PlacementGroupInfo {
    /// What it was made with.
    pub spec: PlacementGroupSpec,
    /// Where it is in its life.
    pub state: PlacementGroupState,
    /// The node holding each bundle (`None`: not placed now).
    pub nodes: Vec<Option<NodeId>>,
    /// Why it waits, when it does ("" otherwise).
    pub reason: String,
}

/// What a client asks the placement-group manager (through its raylet, which passes it on to
/// the head in a cluster).
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum PlacementRequest {
    /// Make a group (answered at once; `Wait` for it to be placed).
    Create(PlacementGroupSpec),
    /// Answered once the group is placed (`Created`) or removed.
    Wait(PlacementGroupId),
    /// Remove a group: its bundles are released, its tasks and actors stopped.
    Remove(PlacementGroupId),
    /// The live group named so in the namespace.
    Get {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// Every group the manager knows (the removed ones it still remembers too).
    Table,
    /// A job ended on node `.0`: its groups that are not detached go.
    JobEnded(NodeId, JobId),
}

/// What the manager asks of one node for one group.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum BundleOp {
    /// Phase one: take these bundles' resources out of what the node may lease, if it has them.
    Prepare {
        /// The group.
        group: PlacementGroupId,
        /// (bundle index, its resources).
        bundles: Vec<(u32, Resources)>,
    },
    /// Phase two: the prepared bundles become the group's resources.
    Commit {
        /// The group.
        group: PlacementGroupId,
        /// The bundles.
        indexes: Vec<u32>,
    },
    /// Give the bundles back (a rollback, or the group was removed); work using them stops.
    Release {
        /// The group.
        group: PlacementGroupId,
        /// The bundles.
        indexes: Vec<u32>,
    },
}

/// The amount of `bundle_group_*` a committed bundle adds (as Ray).
pub const BUNDLE_UNITS: f64 = 1000.0;
/// What a task asks of `bundle_group_*`, so work needing no other resource still goes to the
/// bundle's node.
pub const BUNDLE_ASK: f64 = 0.001;

/// The resources a committed bundle `index` of `group` adds to its node.
pub fn committed_resources(group: PlacementGroupId, index: u32, bundle: &Resources) -> Resources {
    let mut r = Resources::new();
    for (name, amount) in bundle.iter() {
        r.set(&format!("{name}_group_{index}_{group}"), amount);
        r.set(&format!("{name}_group_{group}"), amount);
    }
    r.set(&format!("bundle_group_{index}_{group}"), BUNDLE_UNITS);
    r.set(&format!("bundle_group_{group}"), BUNDLE_UNITS);
    r
}

/// What work needing `need` asks for inside `group`: in bundle `index`, or (`None`) in any
/// bundle of the group.
pub fn resources_in_group(
    group: PlacementGroupId,
    index: Option<u32>,
    need: &Resources,
) -> Resources {
    let mut r = Resources::new();
    for (name, amount) in need.iter() {
        if let Some(i) = index {
            r.set(&format!("{name}_group_{i}_{group}"), amount);
        }
        r.set(&format!("{name}_group_{group}"), amount);
    }
    match index {
        Some(i) => r.set(&format!("bundle_group_{i}_{group}"), BUNDLE_ASK),
        None => r.set(&format!("bundle_group_{group}"), BUNDLE_ASK),
    }
    r
}

/// The group a resource name belongs to, if it is one of a group's.
pub fn group_of_resource(name: &str) -> Option<&str> {
    let (_, tail) = name.split_once("_group_")?;
    Some(tail.rsplit('_').next().unwrap_or(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_in_a_bundle_fits_exactly_what_the_bundle_commits() {
        let g = PlacementGroupId(0xab);
        let mut bundle = Resources::cpus(2.0);
        bundle.set("gpu", 1.0);
        let node = committed_resources(g, 1, &bundle);
        let ask = resources_in_group(g, Some(1), &Resources::cpus(2.0));
        assert!(node.contains(&ask));
        assert!(!node.contains(&resources_in_group(g, Some(1), &Resources::cpus(3.0))));
        assert!(!node.contains(&resources_in_group(g, Some(0), &Resources::cpus(1.0))));
        assert!(node.contains(&resources_in_group(g, None, &Resources::new())));
        assert_eq!(
            group_of_resource("CPU_group_1_00000000000000ab"),
            Some("00000000000000ab")
        );
        assert_eq!(group_of_resource("CPU"), None);
    }
}
