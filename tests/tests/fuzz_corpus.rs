//! Replays the committed fuzz corpora through the fuzz targets as ordinary tests (stable, no
//! fuzzer needed), so CI runs every input the fuzzer kept.
//!
//! - `tests/fuzz/corpus/<target>/`: the minimised corpus of each target (seeds plus what
//!   coverage-guided fuzzing kept); every input must pass.
//! - `tests/fuzz/regressions/<target>/`: inputs that once crashed a target. Every one must pass,
//!   except those listed in [`OPEN`] (crashes found and not fixed yet, none today): delete an
//!   entry once its fix lands.
//!
//! The target bodies are `tests/fuzz/src/targets.rs`, the very file the fuzz binaries call.

#[path = "../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Regression inputs whose crash is known and not fixed yet: (target, file name, what breaks).
const OPEN: &[(&str, &str, &str)] = &[];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> targets::Target {
    targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// The files of a directory, sorted (empty when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on each file; returns the files that panicked, with the message.
fn failures(target: targets::Target, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).expect("read corpus file");
            let outcome = catch_unwind(AssertUnwindSafe(|| target(&data)));
            outcome.err().map(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("{}: {message}", path.display())
            })
        })
        .collect()
}

fn is_open(target: &str, path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    OPEN.iter().any(|(t, f, _)| *t == target && *f == name)
}

fn replay_corpus(name: &str) {
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(!corpus.is_empty(), "no corpus for fuzz target {name}");
    let failed = failures(target(name), &corpus);
    assert!(
        failed.is_empty(),
        "{} of {} corpus inputs fail:\n{}",
        failed.len(),
        corpus.len(),
        failed.join("\n")
    );
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay_corpus(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_corpus_test() {
            let tested = [$(stringify!($name)),*];
            let targets: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
            assert_eq!(targets, tested);
        }
    };
}

corpus_tests!(
    udp_request,
    udp_response,
    http_query,
    bencode_answer,
    alto_client,
    alto_request,
    topology_toml,
    graphml,
    asn_db,
);

#[test]
fn corpus_and_regression_directories_name_targets() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for entry in entries {
            let name = entry.expect("entry").file_name();
            let name = name.to_str().expect("UTF-8 name");
            assert!(
                targets::TARGETS.iter().any(|(n, _)| *n == name),
                "{kind}/{name} names no fuzz target"
            );
        }
    }
    for (t, f, _) in OPEN {
        let path = fuzz_dir().join("regressions").join(t).join(f);
        assert!(
            path.is_file(),
            "OPEN lists {} which does not exist",
            path.display()
        );
    }
}

#[test]
fn fixed_regressions_pass() {
    let mut failed = Vec::new();
    for (name, f) in targets::TARGETS {
        let inputs: Vec<PathBuf> = files(&fuzz_dir().join("regressions").join(name))
            .into_iter()
            .filter(|p| !is_open(name, p))
            .collect();
        failed.extend(failures(*f, &inputs));
    }
    assert!(
        failed.is_empty(),
        "regressions fail:\n{}",
        failed.join("\n")
    );
}
