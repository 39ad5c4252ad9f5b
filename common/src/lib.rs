//! # oxray-common
//!
//! What both sides of oxray's local IPC need: ids ([`ids`]), the wire messages exchanged between
//! core-workers and the raylet and between a submitter and a leased worker ([`protocol`]), and the
//! length-prefixed framing that carries them ([`frame`]). Decoding never panics: a malformed
//! frame is a [`frame::FrameError`], and the reader drops that connection.

pub mod address;
pub mod event_loop;
pub mod frame;
pub mod frame_reader;
pub mod ids;
pub mod job_control;
pub mod peer;
pub mod placement;
pub mod protocol;
pub mod resources;

pub use ids::{ActorId, JobId, NodeId, WorkerId};
pub use oxray_object_store::ObjectId;
