//! Placement-group bundles held by this node (the participant's side of the two phases; the
//! manager's side is `placement`): a prepared bundle's resources leave what the node may
//! lease; a committed one's come back as the group's resources (see `oxray_common::placement`);
//! a released one's return. The node's total (`NodeState::total`) is always its own resources
//! less every bundle held, plus the committed bundles' group resources.

use oxray_common::placement::{committed_resources, group_of_resource, BundleOp, PlacementGroupId};
use oxray_common::protocol::{ActorState, ErrorKind, FromRaylet};
use oxray_common::resources::Resources;

use super::state::NodeState;

/// A bundle held here.
#[derive(Debug, Clone)]
pub(crate) struct LocalBundle {
    /// What it reserves of the node's own resources.
    pub resources: Resources,
    /// Committed (its group resources exist), else only prepared.
    pub committed: bool,
}

impl NodeState {
    /// Carries out one of the manager's bundle requests (an event from the link); `Err` says
    /// why it cannot (a prepare that does not fit in what is free now).
    pub fn bundle_op(&mut self, op: BundleOp) -> Result<(), String> {
        let r = self.apply_bundle_op(op);
        self.schedule();
        r
    }

    /// [`NodeState::bundle_op`] without the scheduling pass after it (the manager calls it for
    /// this node's own bundles from inside one).
    pub(crate) fn apply_bundle_op(&mut self, op: BundleOp) -> Result<(), String> {
        match op {
            BundleOp::Prepare { group, bundles } => {
                let mut need = Resources::new();
                for (i, r) in &bundles {
                    if !self.bundles.contains_key(&(group, *i)) {
                        need.add(r);
                    }
                }
                let free = self.available();
                if !free.contains(&need) {
                    return Err(format!(
                        "node {} has {free} free, the bundles need {need}",
                        self.setup.id
                    ));
                }
                for (i, resources) in bundles {
                    self.bundles.entry((group, i)).or_insert(LocalBundle {
                        resources,
                        committed: false,
                    });
                }
            }
            BundleOp::Commit { group, indexes } => {
                for i in indexes {
                    match self.bundles.get_mut(&(group, i)) {
                        Some(b) => b.committed = true,
                        None => {
                            return Err(format!(
                                "bundle {i} of placement group {group} was not prepared here"
                            ))
                        }
                    }
                }
            }
            BundleOp::Release { group, indexes } => {
                for i in indexes {
                    self.bundles.remove(&(group, i));
                }
                self.stop_group_work(group);
            }
        }
        self.recount_total();
        Ok(())
    }

    /// The node's total from its own resources and the bundles it holds.
    pub(crate) fn recount_total(&mut self) {
        let mut total = self.setup.total.clone();
        for ((group, i), b) in &self.bundles {
            total.subtract(&b.resources);
            if b.committed {
                total.add(&committed_resources(*group, *i, &b.resources));
            }
        }
        self.total = total;
    }

    /// A group's bundles left this node: its leases' workers are killed and its actors here
    /// die (as in Ray, work of a removed group stops).
    fn stop_group_work(&mut self, group: PlacementGroupId) {
        let tag = group.to_string();
        let uses = |r: &Resources| r.iter().any(|(n, _)| group_of_resource(n) == Some(&tag));
        if self.bundles.keys().any(|(g, _)| *g == group) {
            // Some bundles of the group stay here: their work goes on.
            return;
        }
        let leased: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.holder != 0 && uses(&l.resources))
            .map(|(id, _)| *id)
            .collect();
        for lease in leased {
            if let Some(l) = self.leases.remove(&lease) {
                self.push(super::Effect::Kill { worker: l.worker });
            }
        }
        let actors: Vec<_> = self
            .actors
            .iter()
            .filter(|(_, a)| a.state != ActorState::Dead && uses(&a.spec.resources))
            .map(|(id, _)| *id)
            .collect();
        for id in actors {
            let death = format!("its placement group {group} was removed");
            self.actor_process_lost(id, Some(death), true);
        }
        let mut i = 0;
        while i < self.pending.len() {
            if !uses(&self.pending[i].resources) {
                i += 1;
                continue;
            }
            if let Some(r) = self.pending.remove(i) {
                let message = format!("its placement group {group} was removed");
                let kind = ErrorKind::Unschedulable;
                self.send(
                    r.conn,
                    FromRaylet::Error {
                        req: r.req,
                        kind,
                        message,
                    },
                );
            }
        }
    }
}
