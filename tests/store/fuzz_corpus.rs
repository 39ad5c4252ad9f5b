//! Replays every input of the fuzz corpus (`fuzz/corpus/<target>/`, seeds plus what `cargo fuzz`
//! found) through the same target bodies as the fuzzer (`fuzz/targets.rs`): a decoder that
//! panics, loops or allocates without bound on one of them fails here, under `cargo test`.

#[path = "../../fuzz/targets.rs"]
mod targets;

#[test]
fn the_fuzz_corpus_replays_cleanly() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = 0;
    for target in targets::TARGETS {
        let dir = corpus.join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the corpus of {target} at {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("read a corpus file");
            targets::run(target, &data);
            replayed += 1;
        }
    }
    assert!(
        replayed >= targets::TARGETS.len(),
        "every target has inputs"
    );
}
