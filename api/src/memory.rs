//! `memory_summary()`: what fills the node's object store, and what holds it (`ray memory`).

use oxray_core_worker::{current, Result};

/// One object of the node's store, with what holds it in this process.
#[derive(Debug, Clone)]
pub struct ObjectMemory {
    /// The object's id.
    pub id: String,
    /// The id of the process that owns it.
    pub owner: String,
    /// Payload bytes.
    pub size: u64,
    /// `memory`, `spilled` or `being written`.
    pub place: String,
    /// Readers pinning it in the store now (views, gets and task arguments in progress).
    pub pins: u32,
    /// Whether this is the owner's copy (else a copy pulled from another node).
    pub primary: bool,
    /// What holds it in this process, when this process owns or borrows it.
    pub holders: Option<Holders>,
}

/// What keeps an object alive in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holders {
    /// `ObjectRef`s in this process.
    pub local_refs: u32,
    /// Submitted tasks and calls that take it as an argument.
    pub task_args: u32,
    /// Other processes holding refs to it (this process owns it).
    pub borrowers: u32,
    /// Objects whose values contain a ref to it.
    pub contained_in: u32,
}

/// The node's objects, largest first, with totals.
#[derive(Debug, Clone)]
pub struct MemorySummary {
    /// Every object in the store or spilled from it.
    pub objects: Vec<ObjectMemory>,
    /// Bytes of the objects in memory.
    pub in_memory: u64,
    /// Bytes of the objects spilled to disk.
    pub spilled: u64,
}

/// What fills this node's object store, largest first: each object's size, owner, where it is
/// (memory or spilled), its readers' pins, and — for objects this process owns or borrows —
/// which refs, task arguments, borrowers and containing objects keep it alive. `oxray memory`
/// prints the node side of this from the command line.
pub fn memory_summary() -> Result<MemorySummary> {
    let core = current()?;
    let objects: Vec<ObjectMemory> = core
        .node_objects()?
        .into_iter()
        .map(|o| ObjectMemory {
            id: o.id.to_string(),
            owner: oxray_common::ids::owner_of(o.id).to_string(),
            size: o.size,
            holders: core
                .holders(o.id)
                .map(|(local_refs, task_args, borrowers, contained_in)| Holders {
                    local_refs,
                    task_args,
                    borrowers,
                    contained_in,
                }),
            place: o.place,
            pins: o.pins,
            primary: o.primary,
        })
        .collect();
    let sum = |place: &str| -> u64 {
        objects
            .iter()
            .filter(|o| o.place == place)
            .map(|o| o.size)
            .sum()
    };
    Ok(MemorySummary {
        in_memory: sum("memory"),
        spilled: sum("spilled"),
        objects,
    })
}

impl std::fmt::Display for MemorySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} objects: {:.1} MB in memory, {:.1} MB spilled",
            self.objects.len(),
            self.in_memory as f64 / 1e6,
            self.spilled as f64 / 1e6
        )?;
        for o in &self.objects {
            let held = match o.holders {
                Some(h) => format!(
                    "  refs {} task-args {} borrowers {} in-objects {}",
                    h.local_refs, h.task_args, h.borrowers, h.contained_in
                ),
                None => String::new(),
            };
            writeln!(
                f,
                "  {} {:>10.1} MB  {:<13} pins {}  {}  owner {}{held}",
                o.id,
                o.size as f64 / 1e6,
                o.place,
                o.pins,
                if o.primary { "primary" } else { "secondary" },
                o.owner
            )?;
        }
        Ok(())
    }
}
