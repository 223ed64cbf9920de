//! Shared helpers for the integration tests (servers on loopback, raw clients).
