//! The fuzz targets' bodies, one function per target, so that the same
//! code runs under libFuzzer (`fuzz_targets/<name>.rs`, nightly) and in the
//! corpus replay (`tests/replay.rs`, stable, no libFuzzer).
#![forbid(unsafe_code)]

mod bencode;
pub mod encode;
mod krpc;
mod lpd;
mod magnet;
mod metainfo;
mod mse;
mod peer_extension;
mod peer_session;
mod qbittorrent_params;
pub mod seeds;
mod tracker_http;
mod tracker_udp;
mod transmission_rpc;
mod utp_endpoint;
mod utp_packet;

pub use bencode::bencode;
pub use krpc::krpc;
pub use lpd::lpd;
pub use magnet::magnet;
pub use metainfo::metainfo;
pub use mse::mse;
pub use peer_extension::peer_extension;
pub use peer_session::peer_session;
pub use qbittorrent_params::qbittorrent_params;
pub use tracker_http::tracker_http;
pub use tracker_udp::tracker_udp;
pub use transmission_rpc::transmission_rpc;
pub use utp_endpoint::utp_endpoint;
pub use utp_packet::utp_packet;

/// A target's body: one input, a panic on anything wrong.
pub type Target = fn(&[u8]);

/// Every target by name, as its file in `fuzz_targets/` is named.
pub const TARGETS: &[(&str, Target)] = &[
    ("bencode", bencode),
    ("krpc", krpc),
    ("lpd", lpd),
    ("magnet", magnet),
    ("metainfo", metainfo),
    ("mse", mse),
    ("peer_extension", peer_extension),
    ("peer_session", peer_session),
    ("qbittorrent_params", qbittorrent_params),
    ("tracker_http", tracker_http),
    ("tracker_udp", tracker_udp),
    ("transmission_rpc", transmission_rpc),
    ("utp_endpoint", utp_endpoint),
    ("utp_packet", utp_packet),
];
