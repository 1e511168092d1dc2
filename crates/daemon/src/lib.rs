//! `lodestone daemon`: one session driven over HTTP. Transmission's RPC
//! (what `transmission-remote`, Sonarr and friends speak), a native API
//! with an event stream, and Prometheus metrics, all from the session's
//! typed state.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod config;
pub mod schedule;
pub mod watch;
