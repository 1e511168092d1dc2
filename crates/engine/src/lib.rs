//! The Lodestone runtime: the parts that touch files, threads and (later)
//! sockets, driving the sans-IO cores of `lodestone-core` and friends.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod create;
pub mod dht;
pub mod fsutil;
pub mod lpd;
pub mod magnet;
pub mod peer_io;
pub mod pool;
pub mod resume;
pub mod sources;
pub mod storage;
pub mod torrent;
