//! The link-time function registry.
//!
//! `#[oxray::remote]` adds a [`RemoteFunction`] to the [`REMOTE_FUNCTIONS`] slice (with `linkme`)
//! under the name `module_path!()::fn_name`. Every process of a session runs the same
//! executable, so a worker finds the function a driver named without any registration call at
//! run time. The lookup table is built once, on first use.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::args::TaskArgs;
use crate::value::ReturnValue;

/// Why a task's function did not produce a value.
#[derive(Debug)]
pub enum TaskError {
    /// The function returned `Err` (the error's text).
    App(String),
    /// An argument could not be decoded as the parameter's type.
    BadArgument(String),
}

/// The signature of a registered function's type-erased entry point.
pub type Invoke = fn(&TaskArgs<'_>) -> Result<Box<dyn ReturnValue>, TaskError>;

/// A function registered by `#[oxray::remote]`.
pub struct RemoteFunction {
    /// `module_path!()::name`.
    pub name: &'static str,
    /// Decodes the arguments, calls the function and returns its value.
    pub invoke: Invoke,
}

/// Every remote function linked into this executable.
#[linkme::distributed_slice]
pub static REMOTE_FUNCTIONS: [RemoteFunction];

struct Table {
    by_name: HashMap<&'static str, Invoke>,
    duplicates: Vec<&'static str>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut by_name = HashMap::new();
        let mut duplicates = Vec::new();
        for f in REMOTE_FUNCTIONS.iter() {
            if by_name.insert(f.name, f.invoke).is_some() {
                duplicates.push(f.name);
            }
        }
        Table {
            by_name,
            duplicates,
        }
    })
}

/// Looks a function up by name.
pub fn lookup(name: &str) -> Option<Invoke> {
    table().by_name.get(name).copied()
}

/// Names registered more than once (a build problem worth reporting).
pub fn duplicates() -> &'static [&'static str] {
    &table().duplicates
}

/// How many functions are registered.
pub fn len() -> usize {
    table().by_name.len()
}
