//! Load generators and helpers shared by the benchmarks.
