//! Lineage: what this process needs to make one of its stored task results again when the
//! node holding it dies (Ray's object reconstruction, for the common case).
//!
//! A result is rebuildable when it was stored on some node (small results travel inline and
//! live with their owner) and every argument of its task was a small value: the task can then
//! be re-run from what this table keeps, with no object to chase. Tasks with object arguments
//! are not recorded: re-running them would need those objects kept (or rebuilt) too, which Ray
//! does by pinning lineage recursively; a lost result of such a task is `ObjectLost`. Each
//! rebuild spends one of the task's `max_retries`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use oxray_common::resources::Resources;
use oxray_common::ObjectId;

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

    /// Whether a stored result of `task` can be rebuilt from a recipe (values only, and a retry
    /// left to spend).
    pub fn rebuildable(task: &Task) -> bool {
        task.retries_left > 0
            && task
                .args
                .iter()
                .all(|a| matches!(a, ArgSpec::Value { contained, .. } if contained.is_empty()))
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

    /// The result is no longer referenced.
    pub fn forget(&self, id: ObjectId) {
        self.lock().remove(&id);
    }

    /// What it needs to run again, without taking the recipe.
    pub fn resources(&self, id: ObjectId) -> Option<Resources> {
        self.lock()
            .get(&id)
            .filter(|r| r.retries_left > 0)
            .map(|r| r.resources.clone())
    }

    /// The task to run again for `id`, spending one retry (`None`: no recipe, or no retry left).
    pub fn rerun(&self, id: ObjectId) -> Option<Task> {
        let mut recipes = self.lock();
        let r = recipes.get_mut(&id).filter(|r| r.retries_left > 0)?;
        r.retries_left -= 1;
        r.attempt += 1;
        Some(Task {
            id,
            function: r.function.clone(),
            args: r.args.clone(),
            resources: r.resources.clone(),
            retries_left: r.retries_left,
            retry_exceptions: false,
            attempt: r.attempt,
        })
    }
}
