//! The Lodestone runtime: the parts that touch files, threads and (later)
//! sockets, driving the sans-IO cores of `lodestone-core` and friends.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod bandwidth;
pub mod create;

/// A cookie for our LPD announces (so we can ignore our own): from the peer id.
pub fn lpd_cookie(peer_id: &lodestone_core::PeerId) -> String {
    lodestone_core::encoding::to_hex(&peer_id.0[8..16])
}
pub mod dht;
pub mod fsutil;
pub mod http;
pub mod lpd;
pub mod magnet;
pub mod peer_io;
pub mod pool;
pub mod resume;
pub mod session;
pub mod state_dir;
pub mod storage;
pub mod torrent;
pub mod tracker;
pub mod utp;
