//! Spilling: a node whose store is smaller than the data its driver holds.

use oxray::prelude::*;

use crate::node_core::say;

/// Bytes of each object: 4 MiB, so 24 of them are three times a 32 MiB store.
const LEN: usize = 4 << 20;
/// Objects put, and results made by tasks.
const COUNT: usize = 24;

/// The bytes of object number `seed` (different for every object, and within one).
fn pattern(seed: u8) -> Vec<u8> {
    (0..LEN)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 13) as u8))
        .collect()
}

fn sum(bytes: &[u8]) -> u64 {
    bytes.iter().map(|b| u64::from(*b)).sum()
}

/// Reads its argument in place (restored into the store first if it was spilled).
#[oxray::remote]
fn checksum(xs: ObjectView<Vec<u8>>) -> u64 {
    xs.iter().map(|b| u64::from(*b)).sum()
}

/// A task whose 4 MiB result goes to the store.
#[oxray::remote]
fn make(seed: u8) -> Vec<u8> {
    pattern(seed)
}

fn files_in(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// `spill`: a 32 MiB store, three times that put while every ref is held, then read back.
/// Prints how many came back bit-exact (`exact`, `views`), whether a task read a spilled
/// argument right (`task-sum-ok`), how many task results totalling three times the store came
/// back (`made`), the spill counters, the spill files left after the refs drop
/// (`files-after-drop`), and whether the spill directory outlived `shutdown`.
pub fn spill() -> oxray::Result<()> {
    let cluster = oxray::init_with(
        oxray::Config::new()
            .num_cpus(2.0)
            .object_store_memory(32 << 20),
    )?;
    let refs: Vec<ObjectRef<Vec<u8>>> = (0..COUNT)
        .map(|i| oxray::put(&pattern(i as u8)))
        .collect::<oxray::Result<_>>()?;
    let s = oxray::status()?;
    say(format!("spilled-after-puts {}", s.spilled_objects));
    let dir = s.spill_dir.clone();
    let mut exact = 0;
    for (i, r) in refs.iter().enumerate() {
        if oxray::get(r)? == pattern(i as u8) {
            exact += 1;
        }
    }
    say(format!("exact {exact}"));
    let mut views = 0;
    for (i, r) in refs.iter().enumerate() {
        let view = oxray::get_view(r)?;
        let want = pattern(i as u8);
        if view.len() == LEN && view.iter().zip(&want).all(|(a, b)| a == b) {
            views += 1;
        }
    }
    say(format!("views {views}"));
    let got = oxray::get(&checksum::remote(&refs[0])?)?;
    say(format!("task-sum-ok {}", got == sum(&pattern(0))));
    let made: Vec<ObjectRef<Vec<u8>>> = (0..COUNT)
        .map(|i| make::remote(100 + i as u8))
        .collect::<oxray::Result<_>>()?;
    let mut made_ok = 0;
    for (i, r) in made.iter().enumerate() {
        if oxray::get(r)? == pattern(100 + i as u8) {
            made_ok += 1;
        }
    }
    say(format!("made {made_ok}"));
    let s = oxray::status()?;
    say(format!("spilled-total {}", s.spilled_total));
    say(format!("restored-total {}", s.restored_total));
    say(format!("files-while-held {}", files_in(&s.spill_dir)));
    drop(refs);
    drop(made);
    // The deletes went out on the same connection before this request: answered after them.
    let s = oxray::status()?;
    say(format!("spilled-after-drop {}", s.spilled_objects));
    say(format!("files-after-drop {}", files_in(&s.spill_dir)));
    let dir = if s.spill_dir.is_empty() {
        dir
    } else {
        s.spill_dir
    };
    drop(cluster);
    say(format!(
        "dir-after-shutdown {}",
        std::path::Path::new(&dir).exists()
    ));
    Ok(())
}

/// `spill-off`: the same store with spilling off and a 2.5 s wait for room: puts beyond it
/// fail with a typed error (`full-wait-ms`: how long the failing put waited), and so does a
/// task whose result does not fit.
pub fn spill_off() -> oxray::Result<()> {
    let _cluster = oxray::init_with(
        oxray::Config::new()
            .num_cpus(1.0)
            .object_store_memory(32 << 20)
            .spilling(false)
            .store_full_wait(std::time::Duration::from_millis(2500)),
    )?;
    let mut held = Vec::new();
    for i in 0..COUNT {
        let started = std::time::Instant::now();
        match oxray::put(&pattern(i as u8)) {
            Ok(r) => held.push(r),
            Err(oxray::Error::ObjectStoreFull { message }) => {
                say(format!("full-wait-ms {}", started.elapsed().as_millis()));
                say(format!("full-after {}", held.len()));
                say(format!("message {message}"));
                // A task's result that cannot be stored either: the same typed error at `get`.
                match oxray::get(&make::remote(7)?) {
                    Err(oxray::Error::ObjectStoreFull { message }) => {
                        say(format!("task-full {message}"))
                    }
                    other => say(format!("task-full no: {other:?}")),
                }
                // Larger than the whole store: refused at once, with the setting to change.
                let started = std::time::Instant::now();
                match oxray::put(&vec![0u8; (32 << 20) + 1]) {
                    Err(oxray::Error::ObjectStoreFull { message }) => {
                        say(format!("too-large-ms {}", started.elapsed().as_millis()));
                        say(format!("too-large {message}"));
                    }
                    other => say(format!("too-large no: {other:?}")),
                }
                // Nothing acknowledged was lost to the failed creates.
                let intact = held
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| {
                        oxray::get_view(r).is_ok_and(|v| v[..] == pattern(*i as u8)[..])
                    })
                    .count();
                say(format!("intact {intact} of {}", held.len()));
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    say("full-after never");
    Ok(())
}

fn shmem_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Mappings of object-store arenas in this process, and its resident shared memory in kB.
fn arena_maps_and_rss_shmem() -> (usize, u64) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let arenas = maps
        .lines()
        .filter(|l| l.contains("oxray-object-store"))
        .count();
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssShmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (arenas, rss)
}

/// `cycles N`: N rounds of `init`, a 200 MB put that is read and freed, and `shutdown`, in
/// one process; prints the machine's Shmem before and after each round (`shmem-kib`), and
/// this process's arena mappings and resident shared memory after each (`arenas`,
/// `rss-shmem-kib`).
pub fn cycles(n: usize) -> oxray::Result<()> {
    let mut line = vec![shmem_kib().to_string()];
    let (mut arenas, mut rss) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let cluster = oxray::init_with(
            oxray::Config::new()
                .num_cpus(1.0)
                .object_store_memory(512 << 20),
        )?;
        let data = vec![7u8; 200 << 20];
        let r = oxray::put(&data)?;
        drop(data);
        assert_eq!(oxray::get_view(&r)?.len(), 200 << 20);
        drop(r);
        drop(cluster);
        line.push(shmem_kib().to_string());
        let (a, r) = arena_maps_and_rss_shmem();
        arenas.push(a.to_string());
        rss.push(r.to_string());
        if std::env::var_os("OXRAY_CYCLE_TRACE").is_some() {
            let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                        .map(|c| c.trim().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            eprintln!("threads after shutdown: {names:?}");
        }
    }
    say(format!("shmem-kib {}", line.join(" ")));
    say(format!("arenas {}", arenas.join(" ")));
    say(format!("rss-shmem-kib {}", rss.join(" ")));
    Ok(())
}

/// `memory`: ten 4 MiB objects in a 32 MiB store (some spilled), one of them viewed; prints
/// what `memory_summary` and the node's own listing (what `oxray memory` prints) say.
pub fn memory() -> oxray::Result<()> {
    let cluster = oxray::init_with(
        oxray::Config::new()
            .num_cpus(1.0)
            .object_store_memory(32 << 20),
    )?;
    let refs: Vec<ObjectRef<Vec<u8>>> = (0..10)
        .map(|i| oxray::put(&pattern(i as u8)))
        .collect::<oxray::Result<_>>()?;
    let view = oxray::get_view(&refs[0])?;
    let summary = oxray::memory_summary()?;
    println!("{summary}");
    say(format!("objects {}", summary.objects.len()));
    say(format!(
        "spilled {}",
        summary
            .objects
            .iter()
            .filter(|o| o.place == "spilled")
            .count()
    ));
    say(format!(
        "in-memory {}",
        summary
            .objects
            .iter()
            .filter(|o| o.place == "memory")
            .count()
    ));
    let first = refs[0].id().to_string();
    let entry = summary.objects.iter().find(|o| o.id == first);
    say(format!("first-pins {}", entry.map_or(0, |o| o.pins)));
    say(format!(
        "first-refs {}",
        entry.and_then(|o| o.holders).map_or(0, |h| h.local_refs)
    ));
    say(format!(
        "sizes-ok {}",
        summary.objects.iter().all(|o| o.size >= LEN as u64)
    ));
    let listed =
        oxray_raylet::tool::memory(cluster.address()).map_err(|e| oxray::Error::Config {
            message: e.to_string(),
        })?;
    say(format!("listed {}", listed.len()));
    drop(view);
    Ok(())
}

/// Sums the numbers of a vector read in place (from the store, or mapped from a file).
#[oxray::remote]
fn total(xs: ObjectView<Vec<f64>>) -> f64 {
    xs.as_slice().iter().sum()
}

/// A task whose result (`mib` MiB) is larger than the whole store.
#[oxray::remote]
fn make_big(mib: usize, seed: u8) -> Vec<u8> {
    (0..mib << 20)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) ^ ((i >> 17) as u8))
        .collect()
}

/// A task whose result (`n` f64, more than the whole store) is written in place: in a file.
#[oxray::remote]
fn make_big_in_place(n: usize) -> oxray::VecInPlace<f64> {
    oxray::VecInPlace::new(n, |s| {
        for (i, x) in s.iter_mut().enumerate() {
            *x = (i % 777) as f64;
        }
    })
}

/// `larger`: objects a 32 MiB store cannot hold at all. An 80 MiB vector built in place
/// (`put_with_len`), read back through a view, by a task and in `memory_summary` (`in a
/// file`); a 48 MiB task result; and, with every byte of the store pinned by views, a 6 MiB
/// put that fits the store's size but not its free room. Prints whether each came back exact
/// and the files left after the refs drop.
pub fn larger() -> oxray::Result<()> {
    let cluster = oxray::init_with(
        oxray::Config::new()
            .num_cpus(2.0)
            .object_store_memory(32 << 20),
    )?;
    let n = 10 << 20; // 80 MiB of f64
    let big = oxray::put_with_len::<f64>(n, |s| {
        for (i, x) in s.iter_mut().enumerate() {
            *x = (i % 1000) as f64;
        }
    })?;
    let want: f64 = (0..n).map(|i| (i % 1000) as f64).sum();
    {
        let view = oxray::get_view(&big)?;
        let s = view.as_slice();
        let exact = s.len() == n && s.iter().enumerate().all(|(i, x)| *x == (i % 1000) as f64);
        say(format!("put-exact {exact}"));
    }
    let got = oxray::get(&total::remote(&big)?)?;
    say(format!("task-sum-ok {}", got == want));
    let summary = oxray::memory_summary()?;
    let place = summary
        .objects
        .iter()
        .find(|o| o.id == big.id().to_string())
        .map_or("none".to_owned(), |o| o.place.clone());
    say(format!("place {}", place.replace(' ', "-")));

    let made = make_big::remote(48, 3)?;
    let bytes = oxray::get(&made)?;
    let exact = bytes.len() == 48 << 20
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i as u8).wrapping_mul(7).wrapping_add(3) ^ ((i >> 17) as u8));
    say(format!("task-result-exact {exact}"));
    drop(bytes);
    let in_place = make_big_in_place::remote(6 << 20)?; // 48 MiB
    let view = oxray::get_view(&in_place)?;
    let s = view.as_slice();
    let exact = s.len() == 6 << 20 && s.iter().enumerate().all(|(i, x)| *x == (i % 777) as f64);
    say(format!("in-place-result-exact {exact}"));
    drop(view);
    drop(in_place);

    // Every byte of the store pinned by views: nothing can be spilled, yet a put still lands.
    let held: Vec<ObjectRef<Vec<u8>>> = (0..7)
        .map(|i| oxray::put(&pattern(i as u8)))
        .collect::<oxray::Result<_>>()?;
    let views: Vec<_> = held
        .iter()
        .map(oxray::get_view)
        .collect::<oxray::Result<_>>()?;
    let extra = oxray::put(&pattern(9))?;
    say(format!(
        "pinned-full-put-exact {}",
        oxray::get(&extra)? == pattern(9)
    ));
    let s = oxray::status()?;
    say(format!("files-while-held {}", files_in(&s.spill_dir)));
    drop(views);
    drop((big, made, held, extra));
    let s = oxray::status()?;
    say(format!("spilled-after-drop {}", s.spilled_objects));
    say(format!("files-after-drop {}", files_in(&s.spill_dir)));
    drop(cluster);
    Ok(())
}
