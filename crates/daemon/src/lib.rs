//! `lodestone daemon`: one session driven over HTTP. Transmission's RPC
//! (what `transmission-remote`, Sonarr and friends speak), a native API
//! with an event stream, and Prometheus metrics, all from the session's
//! typed state; qBittorrent's Web API v2 for the tools that speak it; and
//! the web page.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
// `session-get` answers some sixty keys in one `json!`.
#![recursion_limit = "256"]

pub mod api;
pub mod background;
pub mod book;
pub mod config;
pub mod daemon;
mod fs;
pub mod json;
pub mod metrics;
pub mod progress;
pub mod qbittorrent;
pub mod schedule;
pub mod server;
pub mod systemd;
pub mod transmission;
pub mod watch;
pub mod web;
