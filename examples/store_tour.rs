//! A tour of the object store on its own (no runtime).
//!
//! Today this shows the part of oxray that exists: the node's shared-memory object store. It
//! creates an arena in `/dev/shm`, stores a large array and a user type once, reads them back
//! with zero copies, shows that a wrong-type read is an error, and fills an object in place.
//! Remote tasks and actors (`oxray::init`, `#[oxray::remote]`) come with the runtime.
//!
//! Run it with `cargo run --release --example store_tour`.

use std::time::Instant;

use oxray::rkyv::{Archive, Deserialize, Serialize};
use oxray::store::{ArenaOptions, CreateOptions, ObjectId, Store};

/// A user type: deriving rkyv's traits is all it takes to store it.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
#[rkyv(crate = oxray::rkyv)]
struct Setting {
    name: String,
    n: u64,
    sd: f64,
}

fn main() -> Result<(), oxray::store::StoreError> {
    // 1. A 1 GiB arena in /dev/shm, private to this user, removed when `store` drops.
    let store = Store::new(&ArenaOptions::new(1 << 30))?;
    println!("object store: {}", store.arena_path().display());

    // 2. Put a 400 MB array once: rkyv encodes it straight into shared memory.
    let n = 50_000_000;
    let data: Vec<f64> = (0..n).map(|i| (i % 1000) as f64 / 1000.0).collect();
    let big = ObjectId::from_u128(1);
    let t = Instant::now();
    store.put(big, &data, false)?;
    let put_s = t.elapsed().as_secs_f64();
    println!(
        "put {} MB in {:.1} ms ({:.1} GB/s, including the first touch of fresh shm pages)",
        n * 8 / 1_000_000,
        put_s * 1e3,
        (n * 8) as f64 / put_s / 1e9
    );
    drop(data);

    // 3. Read it with zero copies: the view points into the arena.
    let t = Instant::now();
    let view = store.get_view::<Vec<f64>>(big)?;
    let open_us = t.elapsed().as_secs_f64() * 1e6;
    let mean = view.iter().map(|x| x.to_native()).sum::<f64>() / view.len() as f64;
    println!(
        "zero-copy view of {} values opened in {open_us:.1} µs; mean = {mean:.4}",
        view.len()
    );

    // 4. User types work the same way.
    let setting = ObjectId::from_u128(2);
    store.put(
        setting,
        &Setting {
            name: "baseline".into(),
            n: 1_000_000,
            sd: 1.5,
        },
        false,
    )?;
    let s = store.get_view::<Setting>(setting)?;
    println!(
        "setting {:?}: n = {}, sd = {}",
        s.name.as_str(),
        s.n.to_native(),
        s.sd.to_native()
    );

    // 5. Reading with the wrong type is an error, not undefined behaviour.
    match store.get_view::<Vec<u32>>(big) {
        Err(e) => println!("wrong-type read refused: {e}"),
        Ok(_) => unreachable!("the store checks the type fingerprint"),
    }

    // 6. Fill a buffer in place (zero copies), then seal it.
    let raw = ObjectId::from_u128(3);
    let mut writer = store.create(raw, 4096, CreateOptions::default())?;
    for (i, b) in writer.as_mut_slice().iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    writer.seal()?;
    let bytes = store.get(raw)?;
    println!(
        "raw object: {} bytes, byte 300 = {}",
        bytes.len(),
        bytes[300]
    );

    let stats = store.stats();
    println!(
        "store: {} objects, {} MB used of {} MB, {} MB pinned by open views",
        stats.objects,
        stats.used / 1_000_000,
        stats.capacity / 1_000_000,
        stats.pinned / 1_000_000
    );
    Ok(())
}
