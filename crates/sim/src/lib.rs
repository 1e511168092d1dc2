//! A deterministic simulator: many sans-IO DHT nodes in one process on a
//! virtual clock, with a seeded network (per-pair log-normal round-trip
//! times, packet loss, unresponsive nodes, churn). The same seed gives the
//! same run, byte for byte: nothing here reads the wall clock or the OS's
//! randomness, and every map is ordered.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod dht;
mod net;
pub mod stream;
pub mod swarm;
pub mod utp;

pub use dht::{DhtSim, LookupRecord, SimConfig};
pub use net::NetModel;
