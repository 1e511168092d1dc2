//! Codecs for the BitTorrent peer wire protocol: the handshake and
//! messages of BEP 3, the fast extension (BEP 6), the DHT port (BEP 5), the
//! extension protocol (BEP 10) and its ut_metadata (BEP 9) and ut_pex
//! (BEP 11) messages. Codecs only: no state, no I/O.
//!
//! Every length read from the network is checked against a named limit
//! before anything is allocated for it.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod extended;
mod handshake;
pub mod lpd;
mod message;
pub mod metadata;
pub mod mse;
pub mod pex;
pub mod tracker;

pub use handshake::{Handshake, Reserved, HANDSHAKE_LEN};
pub use message::{
    decode, encode_piece_header, BlockRequest, Limits, Message, WireError, MAX_BLOCK_LEN,
};
