//! p4p-tracker: a BitTorrent tracker (HTTP BEP 3/23/7/48, UDP BEP 15) that answers announces
//! with nearby peers, using the network's own map (P4P / ALTO, see `p4p-itracker`).
//!
//! Data flows through the modules in this order:
//! - [`protocol`]: pure wire codecs (bytes in, typed requests out; typed responses in, bytes out);
//! - [`types`]: the domain types every layer shares (info hash, peer address, announce);
//! - [`topology`]: the immutable network snapshot the announce path reads;
//! - [`swarm`]: the swarm store (peers bucketed by PID x family x seeder/leecher);
//! - [`selection`]: which peers an announce gets back (a pure function, RNG passed in);
//! - [`server`]: thin HTTP (actix-web) and UDP (tokio) front ends;
//! - [`cluster`]: several nodes replicating their swarms and sharing connection ids;
//! - [`config`], [`metrics`], [`clock`], [`access`]: operation.

pub mod access;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod selection;
pub mod server;
pub mod service;
pub mod swap;
pub mod swarm;
pub mod topology;
pub mod types;
