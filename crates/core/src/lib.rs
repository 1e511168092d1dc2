//! BitTorrent domain types with no I/O: info hashes, metainfo (.torrent
//! files), magnet links, and the arithmetic that maps pieces onto files.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod bitfield;
pub mod encoding;
mod hash;
pub mod layout;
pub mod magnet;
pub mod metainfo;
mod peer_id;
mod piece;
pub mod sanitize;

pub use bitfield::{Bitfield, BitfieldError};
pub use hash::{InfoHash, InfoHashV2, InfoHashes, ParseHashError};
pub use layout::{FileSlice, Layout};
pub use magnet::{Magnet, MagnetError};
pub use metainfo::{FileAttributes, FileEntry, Info, Metainfo, MetainfoError, TorrentVersion};
pub use peer_id::PeerId;
pub use piece::PieceIndex;
