//! # oxray-macros
//!
//! Procedural macros for oxray: `#[oxray::remote]`, `#[oxray::actor]` and `#[oxray::main]`.
//! Users reach them through the `oxray` crate, never directly.
//!
//! Status: not written yet (issue "Single-node runtime").
