//! Lineage: what this process needs to make one of its stored task results again when the
//! node holding it dies (Ray's object reconstruction, for the common case).
//!
//! A result is rebuildable when it was stored on some node (small results travel inline and
//! live with their owner) and every argument of its task was a small value or an object this
//! process owns. The recipe keeps its task's hold (a task reference) on those objects, so they
//! stay alive while the result may need rebuilding (Ray's lineage pinning, keeping the values
//! rather than only their own recipes: simpler, at the price of memory, which spilling bounds).
//! When a rebuild finds an argument lost too (stored on the same dead node), that argument is
//! rebuilt first, recursively; the re-run waits for it like any task for its arguments.
//! Arguments borrowed from other processes are not followed (their owner would have to rebuild
//! them): such tasks are not recorded, and their lost results are `ObjectLost`. Each rebuild
//! spends one of the task's `max_retries`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use oxray_common::ids::owner_of;
use oxray_common::resources::Resources;
use oxray_common::{ObjectId, WorkerId};

use crate::args::ArgSpec;
use crate::submitter::Task;

/// How to run a finished task again.
struct Recipe {
    function: String,
    args: Vec<ArgSpec>,
    resources: Resources,
    retries_left: u32,
    attempt: u32,
}

/// Recipes of this process's rebuildable results, by result id, while the result is referenced.
#[derive(Default)]
pub(crate) struct Lineage {
    recipes: Mutex<HashMap<ObjectId, Recipe>>,
}

impl Lineage {
    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectId, Recipe>> {
        self.recipes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a stored result of `task` can be rebuilt from a recipe (values and objects `me`
    /// owns, and a retry left to spend).
    pub fn rebuildable(task: &Task, me: WorkerId) -> bool {
        task.retries_left > 0
            && task.args.iter().all(|a| match a {
                ArgSpec::Value { contained, .. } => contained.is_empty(),
                ArgSpec::Ref(dep) => owner_of(*dep) == me,
            })
    }

    /// Keeps the recipe of `task`, whose result is now stored (see [`Lineage::rebuildable`]).
    pub fn record(&self, task: Task) {
        let recipe = Recipe {
            function: task.function,
            args: task.args,
            resources: task.resources,
            retries_left: task.retries_left,
            attempt: task.attempt,
        };
        self.lock().insert(task.id, recipe);
    }

    /// The result is no longer referenced: its recipe goes, and the caller releases the task
    /// references the recipe held on the objects returned.
    #[must_use = "the recipe's holds on its argument objects must be released"]
    pub fn forget(&self, id: ObjectId) -> Vec<ObjectId> {
        self.lock()
            .remove(&id)
            .map_or_else(Vec::new, |r| ref_args(&r.args))
    }

    /// The objects the recipe of `id` takes as arguments (`None`: no recipe).
    pub fn ref_args(&self, id: ObjectId) -> Option<Vec<ObjectId>> {
        self.lock().get(&id).map(|r| ref_args(&r.args))
    }

    /// What it needs to run again, without taking the recipe.
    pub fn resources(&self, id: ObjectId) -> Option<Resources> {
        self.lock()
            .get(&id)
            .filter(|r| r.retries_left > 0)
            .map(|r| r.resources.clone())
    }

    /// The task to run again for `id`, spending one retry (`None`: no recipe, or no retry left).
    /// The recipe leaves the table with it (its holds on argument objects pass to the task,
    /// which records the recipe again when it finishes, or releases them).
    pub fn rerun(&self, id: ObjectId) -> Option<Task> {
        let mut recipes = self.lock();
        if recipes.get(&id).is_none_or(|r| r.retries_left == 0) {
            return None;
        }
        let r = recipes.remove(&id)?;
        Some(Task {
            id,
            function: r.function,
            args: r.args,
            resources: r.resources,
            retries_left: r.retries_left - 1,
            retry_exceptions: false,
            strategy: oxray_common::protocol::Strategy::Default,
            attempt: r.attempt + 1,
        })
    }
}

fn ref_args(args: &[ArgSpec]) -> Vec<ObjectId> {
    args.iter()
        .filter_map(|a| match a {
            ArgSpec::Ref(id) => Some(*id),
            ArgSpec::Value { .. } => None,
        })
        .collect()
}
