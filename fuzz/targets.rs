//! The fuzz targets' bodies, shared by `cargo fuzz` (fuzz/fuzz_targets/) and the regression test
//! that replays every file of `fuzz/corpus/<target>/` under `cargo test`
//! (`tests/store/fuzz_corpus.rs`). Each must return for any input: no panic, no allocation
//! beyond what the input's bytes allow, no endless loop.

// Each fuzz target binary uses one of these functions.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use oxray_common::frame::{self, HEADER};
use oxray_common::peer::{PeerReply, PeerRequest};
use oxray_common::protocol::{FromRaylet, FromWorker, ToRaylet, ToWorker};
use oxray_object_store::rkyv::util::AlignedVec;
use oxray_object_store::{
    fingerprint, Arena, ArenaOptions, HeapBytes, ObjectBytes, ObjectId, ObjectView,
};

/// The target names, as the folders of `fuzz/corpus/`.
pub const TARGETS: [&str; 4] = [
    "local_frames",
    "peer_messages",
    "cluster_file",
    "typed_views",
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "local_frames" => local_frames(data),
        "peer_messages" => peer_messages(data),
        "cluster_file" => cluster_file(data),
        "typed_views" => typed_views(data),
        "object_headers" => object_headers(data),
        _ => {}
    }
}

/// A stream of local frames (what a client or worker sends a raylet, and the other way), each
/// payload decoded as every local message type.
pub fn local_frames(data: &[u8]) {
    let mut input = data;
    let mut buf = AlignedVec::new();
    // Each round consumes at least a header, so this ends.
    while input.len() >= HEADER {
        if frame::read_payload(&mut input, &mut buf).is_err() {
            break;
        }
        let _ = frame::decode::<ToRaylet>(&buf);
        let _ = frame::decode::<FromRaylet>(&buf);
        let _ = frame::decode::<ToWorker>(&buf);
        let _ = frame::decode::<FromWorker>(&buf);
    }
}

/// What a peer sends on a QUIC stream: a first frame under the pre-authentication cap, then
/// frames of any size, as peer requests and replies.
pub fn peer_messages(data: &[u8]) {
    let mut input = data;
    let mut buf = AlignedVec::new();
    if frame::read_payload_limited(&mut input, &mut buf, 4 << 10).is_ok() {
        let _ = frame::decode::<PeerRequest>(&buf);
    }
    while input.len() >= HEADER {
        if frame::read_payload(&mut input, &mut buf).is_err() {
            break;
        }
        let _ = frame::decode::<PeerRequest>(&buf);
        let _ = frame::decode::<PeerReply>(&buf);
    }
}

/// A cluster config file (`oxray up FILE`).
pub fn cluster_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = oxray_raylet::cluster_file::ClusterFile::parse(
            "fuzz.toml",
            text,
            Path::new("/nonexistent-oxray-fuzz"),
        );
    }
}

/// Stored bytes read as typed objects: the fingerprint matches, the bytes are anything.
pub fn typed_views(data: &[u8]) {
    view_as::<Vec<f64>>(data);
    view_as::<String>(data);
    view_as::<Vec<String>>(data);
    view_as::<(i64, Vec<u8>, Option<String>)>(data);
}

fn view_as<T>(data: &[u8])
where
    T: oxray_object_store::Object,
{
    let mut bytes = HeapBytes::new();
    bytes.extend_from_slice(data);
    let bytes = ObjectBytes::from_heap(ObjectId::default(), fingerprint::<T>(), bytes.into());
    if let Ok(view) = ObjectView::<T>::new(bytes) {
        let _ = view.deserialize();
    }
}

/// Bytes of the arena `object_headers` writes into (the input is cut to this).
const ARENA: u64 = 64 << 10;

/// Arena bytes (headers and payloads as another process could have left them) read as objects:
/// every 64-byte block is tried as the start of object 1 and of the object id the bytes there
/// name, then read as a `Vec<u8>`. Wrong headers must be `BadLocation`, never a read outside
/// the arena.
pub fn object_headers(data: &[u8]) {
    thread_local! {
        static MAPPED: Option<Arc<Arena>> = {
            let mut opts = ArenaOptions::new(ARENA);
            opts.memfd = true;
            Arena::create(&opts).ok().map(Arc::new)
        };
    }
    MAPPED.with(|arena| {
        let Some(arena) = arena else { return };
        let len = data.len().min(ARENA as usize);
        if arena.reserve_upto(ARENA).is_err() {
            return;
        }
        // SAFETY: this thread owns the arena (a private memfd of this thread); no view into it
        // is alive while it is written (every view below is dropped before the next call).
        let Some(mem) = (unsafe { arena.payload_mut(0, ARENA) }) else {
            return;
        };
        mem.fill(0);
        mem[..len].copy_from_slice(&data[..len]);
        let named = |block: usize| {
            let raw: [u8; 16] = data.get(block + 8..block + 24)?.try_into().ok()?;
            Some(ObjectId(raw))
        };
        for block in (0..len).step_by(64) {
            for id in [Some(ObjectId([1; 16])), named(block)]
                .into_iter()
                .flatten()
            {
                let Ok(bytes) =
                    ObjectBytes::from_arena(arena.clone(), block as u64, id, Box::new(()))
                else {
                    continue;
                };
                if let Ok(view) = ObjectView::<Vec<u8>>::new(bytes) {
                    let _ = view.deserialize();
                }
            }
        }
    });
}
