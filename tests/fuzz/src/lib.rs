//! Fuzz targets of the P4P tracker and iTracker parsers. The bodies live in [`targets`], which
//! the corpus replay test (`tests/tests/fuzz_corpus.rs`) includes too.

pub mod targets;
