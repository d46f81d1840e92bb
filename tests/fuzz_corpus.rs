//! Replays the fuzz targets' checked-in corpus (`fuzz/corpus/TARGET/`) through the code the
//! fuzzers run (`fuzz/src/lib.rs`, included here by path): every seed, and every input a
//! fuzzer once crashed on (added to the corpus with the fix), passes on every `cargo test`.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, run) in harness::TARGETS {
        let dir = corpus.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{target}: empty corpus");
        for input in inputs {
            let bytes = std::fs::read(&input).unwrap();
            if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                panic!("{target} fails on {}", input.display());
            }
        }
    }
}
