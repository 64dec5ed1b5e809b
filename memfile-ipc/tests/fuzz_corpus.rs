//! Replays the cargo-fuzz corpora as ordinary tests, on the stable toolchain: every input
//! under `fuzz/seeds/<target>/` (committed: valid packets and the `regress-*` inputs of
//! issue 10) and `fuzz/corpus/<target>/` (libFuzzer's own, when a local fuzzing run left
//! one) goes through the fuzz targets' own harness (`fuzz/src/lib.rs`, included as a
//! module), which asserts a message or a per-message error, no fd leak and nothing left
//! queued. Each regression input must also have its documented outcome.

use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code, unreachable_pub)]
mod harness;

/// The fuzz directory of the workspace.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file of `dir` (none if it does not exist), sorted by name.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// A fuzz target's entry point.
type Run = fn(&[u8]) -> Option<Result<harness::Msg, memfile_ipc::Error>>;

/// One test for both targets: the harness counts this process's fds, which a test running
/// in parallel would disturb.
#[test]
fn fuzz_corpora_replay() {
    let start = Instant::now();
    let targets: [(&str, Run); 2] = [
        ("packet", harness::run_packet),
        ("typed_fds", harness::run_typed),
    ];
    for (target, run) in targets {
        let mut count = 0;
        for dir in ["seeds", "corpus"] {
            for file in inputs(&fuzz_dir().join(dir).join(target)) {
                let data = std::fs::read(&file).unwrap();
                // The harness panics when the receiver's contract is broken.
                let _ = run(&data);
                count += 1;
            }
        }
        println!("{target}: {count} inputs replayed");
        assert!(
            count >= 5,
            "{target}: the seed corpus is missing ({count} inputs)"
        );
    }
    // The regression inputs are in the committed corpus, and each has its outcome.
    for r in harness::regressions() {
        let file = fuzz_dir().join("seeds").join(r.target).join(r.name);
        let stored = std::fs::read(&file).unwrap_or_default();
        assert!(
            stored == r.input,
            "{} is missing or stale: run `cargo run --manifest-path fuzz/Cargo.toml --bin \
             seed_corpus`",
            file.display()
        );
        let run: Run = if r.target == "packet" {
            harness::run_packet
        } else {
            harness::run_typed
        };
        let result = run(&r.input).expect("a regression input can be sent");
        assert!(
            r.expect.matches(&result),
            "{}: expected {:?}, got {:?}",
            r.name,
            r.expect,
            result.as_ref().map(|_| "a message")
        );
        println!("{}: {:?}", r.name, result.as_ref().map(|_| "a message"));
    }
    println!("replayed in {:?}", start.elapsed());
}
