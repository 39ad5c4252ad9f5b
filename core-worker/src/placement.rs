//! Placement groups from the caller's side (Ray's `placement_group`): reserve bundles of
//! resources across the cluster at once, then schedule tasks and actors into them with
//! `options().placement_group(&pg, Some(i))`.
//!
//! The group is made by the node that manages groups (the head, or this node outside a
//! cluster; see `oxray_common::placement` for the two phases); `placement_group` returns at
//! once, and [`PlacementGroup::ready`] (or `wait`, or `ready_async`) waits until every bundle
//! is reserved. A group that cannot be placed waits, and its reason (for example
//! `infeasible: STRICT_SPREAD needs 4 distinct nodes; 3 alive nodes can hold its bundles`)
//! shows in [`PlacementGroup::info`], [`placement_group_table`] and `oxray status`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use oxray_common::placement::{
    resources_in_group, PlacementGroupId, PlacementGroupInfo, PlacementGroupSpec,
    PlacementGroupState, PlacementRequest, PlacementStrategy,
};
use oxray_common::protocol::{ErrorKind, FromRaylet, ToRaylet};
use oxray_common::resources::Resources;

use crate::core::{current, CoreWorker};
use crate::error::{Error, Result};

/// A placement group: its id and bundles. Cheap to clone; removing it is explicit
/// ([`PlacementGroup::remove`]) or happens when its creator's job ends (unless detached).
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementGroup {
    id: PlacementGroupId,
    bundles: Vec<Resources>,
}

/// A bundle of resources, e.g. `bundle(&[("CPU", 1.0), ("gpu", 1.0)])`.
pub fn bundle(pairs: &[(&str, f64)]) -> Resources {
    let mut r = Resources::new();
    for (name, amount) in pairs {
        r.set(name, *amount);
    }
    r
}

/// Options of a new placement group (`PlacementGroupOptions::new(bundles, strategy)
/// .name("ps").create()`).
#[derive(Debug, Clone)]
pub struct PlacementGroupOptions {
    bundles: Vec<Resources>,
    strategy: PlacementStrategy,
    name: String,
    namespace: Option<String>,
    detached: bool,
}

impl PlacementGroupOptions {
    /// A group of `bundles` spread by `strategy`.
    pub fn new(bundles: Vec<Resources>, strategy: PlacementStrategy) -> Self {
        PlacementGroupOptions {
            bundles,
            strategy,
            name: String::new(),
            namespace: None,
            detached: false,
        }
    }

    /// A name, unique among live groups of the namespace ([`get_placement_group`] finds it).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The namespace of the name (default: the job's).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Outlive the job that made it (removed only by `remove`).
    pub fn detached(mut self) -> Self {
        self.detached = true;
        self
    }

    /// Asks for the group; returns at once (see [`PlacementGroup::ready`]).
    pub fn create(self) -> Result<PlacementGroup> {
        let core = current()?;
        let spec = PlacementGroupSpec {
            id: PlacementGroupId::random(),
            bundles: self.bundles,
            strategy: self.strategy,
            name: self.name,
            namespace: self
                .namespace
                .unwrap_or_else(|| core.namespace().to_owned()),
            detached: self.detached,
            creator: (core.node_id(), core.job),
        };
        let info = one(ask(&core, PlacementRequest::Create(spec))?)?;
        Ok(PlacementGroup::from_info(&info))
    }
}

/// Makes a placement group of `bundles` spread by `strategy` (see [`PlacementGroupOptions`]
/// for a name or a detached lifetime). It returns at once; [`PlacementGroup::ready`] waits
/// until every bundle is reserved.
pub fn placement_group(
    bundles: Vec<Resources>,
    strategy: PlacementStrategy,
) -> Result<PlacementGroup> {
    PlacementGroupOptions::new(bundles, strategy).create()
}

/// The live group named `name` in the job's namespace.
pub fn get_placement_group(name: &str) -> Result<PlacementGroup> {
    let core = current()?;
    let request = PlacementRequest::Get {
        namespace: core.namespace().to_owned(),
        name: name.to_owned(),
    };
    let info = one(ask(&core, request)?)?;
    Ok(PlacementGroup::from_info(&info))
}

/// Every placement group the cluster knows (removed ones it still remembers too).
pub fn placement_group_table() -> Result<Vec<PlacementGroupInfo>> {
    ask(&current()?, PlacementRequest::Table)
}

impl PlacementGroup {
    fn from_info(info: &PlacementGroupInfo) -> PlacementGroup {
        PlacementGroup {
            id: info.spec.id,
            bundles: info.spec.bundles.clone(),
        }
    }

    /// Its id.
    pub fn id(&self) -> PlacementGroupId {
        self.id
    }

    /// Its bundles, in order.
    pub fn bundles(&self) -> &[Resources] {
        &self.bundles
    }

    /// Waits until every bundle is reserved. `Err` if the group is removed first.
    pub fn ready(&self) -> Result<()> {
        let info = one(ask(&current()?, PlacementRequest::Wait(self.id))?)?;
        created(&info)
    }

    /// Waits up to `timeout` for the group to be placed: whether it is.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let core = current()?;
        let request = PlacementRequest::Wait(self.id);
        let reply = core
            .raylet
            .request_timeout(|req| ToRaylet::Placement { req, request }, timeout)?;
        match reply {
            None => Ok(false),
            Some(reply) => created(&one(answer(reply)?)?).map(|()| true),
        }
    }

    /// [`PlacementGroup::ready`] as a future (the wait runs on a thread of its own; dropping
    /// the future leaves that thread to end with the wait).
    pub fn ready_async(&self) -> ReadyFuture {
        let shared = Arc::new(Mutex::new(ReadyState::default()));
        let pg = self.clone();
        let state = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("oxray-pg-ready".into())
            .spawn(move || {
                let result = pg.ready();
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.result = Some(result);
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
            });
        if let Err(e) = spawned {
            shared.lock().unwrap_or_else(|p| p.into_inner()).result =
                Some(Err(Error::io("starting a thread", e)));
        }
        ReadyFuture(shared)
    }

    /// What the manager knows of the group now (state, nodes, why it waits).
    pub fn info(&self) -> Result<PlacementGroupInfo> {
        placement_group_table()?
            .into_iter()
            .find(|g| g.spec.id == self.id)
            .ok_or_else(|| Error::PlacementGroup {
                message: format!("no placement group {}", self.id),
            })
    }

    /// Removes the group: its bundles are freed, the tasks and actors in it stopped.
    pub fn remove(&self) -> Result<()> {
        ask(&current()?, PlacementRequest::Remove(self.id)).map(|_| ())
    }

    /// What work needing `need` asks for in bundle `index` (`None`: any bundle); an error if
    /// it can never fit there.
    pub(crate) fn resources_for(
        &self,
        index: Option<usize>,
        need: &Resources,
    ) -> Result<Resources> {
        let fits = match index {
            Some(i) => match self.bundles.get(i) {
                Some(b) => b.contains(need),
                None => {
                    return Err(Error::Config {
                        message: format!(
                            "placement group {} has {} bundles; there is no bundle {i}",
                            self.id,
                            self.bundles.len()
                        ),
                    })
                }
            },
            None => self.bundles.iter().any(|b| b.contains(need)),
        };
        if !fits {
            let place = index.map_or("any bundle".to_owned(), |i| format!("bundle {i}"));
            return Err(Error::Config {
                message: format!(
                    "the work needs {need}, more than {place} of placement group {} holds \
                     ({}); ask for less (e.g. num_cpus) or make bigger bundles",
                    self.id,
                    self.bundles
                        .iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(resources_in_group(self.id, index.map(|i| i as u32), need))
    }
}

#[derive(Default)]
struct ReadyState {
    result: Option<Result<()>>,
    waker: Option<Waker>,
}

/// The future of [`PlacementGroup::ready_async`].
pub struct ReadyFuture(Arc<Mutex<ReadyState>>);

impl Future for ReadyFuture {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match st.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl std::fmt::Debug for ReadyFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadyFuture")
    }
}

/// Asks the manager (through this node's raylet).
fn ask(core: &Arc<CoreWorker>, request: PlacementRequest) -> Result<Vec<PlacementGroupInfo>> {
    answer(
        core.raylet
            .request(|req| ToRaylet::Placement { req, request })?,
    )
}

fn answer(reply: FromRaylet) -> Result<Vec<PlacementGroupInfo>> {
    match reply {
        FromRaylet::PlacementGroups { groups, .. } => Ok(groups),
        FromRaylet::Error {
            kind: ErrorKind::NameTaken,
            message,
            ..
        } => Err(Error::NameTaken { message }),
        FromRaylet::Error { message, .. } => Err(Error::PlacementGroup { message }),
        other => Err(Error::RayletDied {
            message: format!("unexpected reply {other:?}"),
        }),
    }
}

fn one(groups: Vec<PlacementGroupInfo>) -> Result<PlacementGroupInfo> {
    groups
        .into_iter()
        .next()
        .ok_or_else(|| Error::PlacementGroup {
            message: "the manager answered with no group".into(),
        })
}

fn created(info: &PlacementGroupInfo) -> Result<()> {
    match info.state {
        PlacementGroupState::Created => Ok(()),
        state => Err(Error::PlacementGroup {
            message: format!("placement group {} is {state:?}, not placed", info.spec.id),
        }),
    }
}
