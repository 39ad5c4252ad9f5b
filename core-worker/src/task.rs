//! Submitting a call of a remote function: options and the entry point the macros call.

use std::sync::Arc;

use oxray_common::protocol::Strategy;
use oxray_common::resources::{Resources, CPU};
use oxray_object_store::ObjectId;

use crate::args::ArgSpec;
use crate::core::{current, CoreWorker};
use crate::error::{Error, Result};
use crate::object_ref::ObjectRef;
use crate::refs::ObjState;
use crate::submitter::Task;

/// Options of one task call (`f::options().num_cpus(2.0).max_retries(0).remote(..)`).
#[derive(Debug, Clone)]
pub struct TaskOptions {
    function: &'static str,
    resources: Resources,
    max_retries: u32,
    retry_exceptions: bool,
    name: Option<String>,
    stream_window: u64,
    strategy: Strategy,
    group: Option<(crate::placement::PlacementGroup, Option<usize>)>,
}

impl TaskOptions {
    /// Defaults for `function`: 1 CPU, 3 retries on worker death, no retry of errors.
    pub fn new(function: &'static str) -> Self {
        TaskOptions {
            function,
            resources: Resources::cpus(1.0),
            max_retries: 3,
            retry_exceptions: false,
            name: None,
            stream_window: 0,
            strategy: Strategy::Default,
            group: None,
        }
    }

    /// CPUs the task holds while it runs (fractions allowed; 0 for none).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.resources.set(CPU, n);
        self
    }

    /// A custom resource the task needs, e.g. `("gpu", 1.0)`.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.set(name, amount);
        self
    }

    /// Custom resources the task needs.
    pub fn resources<'a>(mut self, rs: impl IntoIterator<Item = (&'a str, f64)>) -> Self {
        for (n, a) in rs {
            self.resources.set(n, a);
        }
        self
    }

    /// How many times the task is retried when its worker dies (default 3).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Also retry when the task panics or returns `Err` (default false).
    pub fn retry_exceptions(mut self, yes: bool) -> Self {
        self.retry_exceptions = yes;
        self
    }

    /// For a streaming task: make at most `n` items ahead of those the caller has taken,
    /// then wait (default 0: no bound).
    pub fn stream_window(mut self, n: u64) -> Self {
        self.stream_window = n;
        self
    }

    /// Where the task may run: `SchedulingStrategy::Spread` round-robins over the nodes,
    /// `NodeAffinity { node_id, soft }` pins it to one (default: near its arguments, else
    /// here, else the node with most room).
    pub fn scheduling_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Runs the task in placement group `pg`: in bundle `bundle`, or (`None`) in any of its
    /// bundles. Its resources are taken from the bundle (submitting fails if they can never
    /// fit there).
    pub fn placement_group(
        mut self,
        pg: &crate::placement::PlacementGroup,
        bundle: Option<usize>,
    ) -> Self {
        self.group = Some((pg.clone(), bundle));
        self
    }

    /// A name for the task: its errors say `task "NAME" (function) failed ...`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The window of a streaming task (see [`TaskOptions::stream_window`]).
    pub(crate) fn window(&self) -> u64 {
        self.stream_window
    }

    /// The registered function name.
    pub fn function(&self) -> &'static str {
        self.function
    }
}

/// Gathers the arguments of a call; on any error, releases the ones already made.
pub(crate) fn collect_args(
    core: &Arc<CoreWorker>,
    args: Vec<Result<ArgSpec>>,
) -> Result<Vec<ArgSpec>> {
    let mut specs = Vec::with_capacity(args.len());
    let mut first_err = None;
    for a in args {
        match a {
            Ok(s) => specs.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => {
            release_args(core, &specs);
            Err(e)
        }
        None => Ok(specs),
    }
}

/// Submits a task (called by the code `#[oxray::remote]` generates).
pub fn submit_task<R>(opts: TaskOptions, args: Vec<Result<ArgSpec>>) -> Result<ObjectRef<R>> {
    submit_task_with(opts, args, |_, _| {})
}

/// Submits a task, calling `before(core, id)` with its id before it can start.
pub(crate) fn submit_task_with<R>(
    opts: TaskOptions,
    args: Vec<Result<ArgSpec>>,
    before: impl FnOnce(&Arc<CoreWorker>, ObjectId),
) -> Result<ObjectRef<R>> {
    let core = current()?;
    let specs = collect_args(&core, args)?;
    let resources = if opts.resources.get(CPU) < 0.0 {
        Err(Error::Config {
            message: "num_cpus must not be negative".into(),
        })
    } else {
        match &opts.group {
            Some((pg, bundle)) => pg.resources_for(*bundle, &opts.resources),
            None => Ok(opts.resources.clone()),
        }
    };
    let resources = match resources {
        Ok(r) => r,
        Err(e) => {
            // Nothing was submitted: the arguments' holds go.
            release_args(&core, &specs);
            return Err(e);
        }
    };
    let id = core.new_object_id();
    core.refs.insert(id, ObjState::Pending);
    let task = Task {
        id,
        function: opts.function.to_string(),
        args: specs,
        resources,
        retries_left: opts.max_retries,
        retry_exceptions: opts.retry_exceptions,
        strategy: opts.strategy,
        attempt: 0,
    };
    let r = ObjectRef::adopt(id, core.clone());
    before(&core, id);
    // Submitted from inside a task: a recursive cancel of that task cancels this one.
    if let Some(parent) = crate::context::current_task() {
        core.submitter.add_child(parent, id);
    }
    if let Some(name) = opts.name {
        core.submitter.name_task(id, name);
    }
    core.submitter.submit(&core, task);
    Ok(r)
}

pub(crate) fn release_args(core: &Arc<CoreWorker>, specs: &[ArgSpec]) {
    for s in specs {
        match s {
            ArgSpec::Ref(id) => core.release_task_ref(*id),
            ArgSpec::Value { contained, .. } => {
                for c in contained {
                    core.release_reservation(*c);
                }
            }
        }
    }
}
