//! .torrent files (BEP 3), with BEP 12 tiers, BEP 19 web seeds, BEP 47
//! attributes and pad files, and BEP 52 v2 / hybrid recognition.

mod parse;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use lodestone_bencode::DecodeError;

use crate::layout::{Layout, LayoutError};
use crate::sanitize::PathFix;
use crate::{InfoHashes, PieceIndex};

/// Largest .torrent we read. Real ones stay far below (a 100 000-file torrent
/// is ~10 MiB); this bounds the memory a hostile file can take.
pub const MAX_TORRENT_BYTES: usize = 64 << 20;
/// Largest piece we accept (libtorrent's limit is the same order).
pub const MAX_PIECE_LENGTH: u32 = 1 << 29;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    // The inner errors are part of the message, not a `source`, so that
    // printing the chain does not repeat them.
    #[error("not valid bencode: {0}")]
    Bencode(DecodeError),
    #[error("file is {0} bytes, more than the {MAX_TORRENT_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("missing key '{0}'")]
    MissingKey(&'static str),
    #[error("key '{key}' should be a {expected}, found a {found}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("invalid '{key}': {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("bad file layout: {0}")]
    Layout(LayoutError),
}

impl From<DecodeError> for MetainfoError {
    fn from(e: DecodeError) -> Self {
        Self::Bencode(e)
    }
}

impl From<LayoutError> for MetainfoError {
    fn from(e: LayoutError) -> Self {
        Self::Layout(e)
    }
}

impl MetainfoError {
    pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

/// Which BitTorrent versions the info dictionary serves (BEP 52).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TorrentVersion {
    V1,
    V2,
    Hybrid,
}

impl std::fmt::Display for TorrentVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::Hybrid => "hybrid (v1 + v2)",
        })
    }
}

/// BEP 47 file attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileAttributes {
    /// A pad file: zeros that align the next file; never written to disk.
    pub pad: bool,
    pub executable: bool,
    pub hidden: bool,
    pub symlink: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Sanitised components relative to the download directory; for a
    /// multi-file torrent the first is the torrent's name.
    pub path: Vec<String>,
    pub length: u64,
    pub attributes: FileAttributes,
    /// BEP 47 symlink target (sanitised), when `attributes.symlink`.
    pub symlink_target: Option<Vec<String>>,
    /// BEP 52 merkle root of the file, for v2 and hybrid torrents.
    pub pieces_root: Option<[u8; 32]>,
}

impl FileEntry {
    pub fn relative_path(&self) -> PathBuf {
        self.path.iter().collect()
    }

    pub fn display_path(&self) -> String {
        self.path.join("/")
    }
}

/// The info dictionary: what the infohash identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Sanitised name: the file name (single-file) or the top directory.
    pub name: String,
    pub piece_length: u32,
    /// Concatenated 20-byte SHA-1 piece hashes (empty for v2-only torrents).
    pub pieces: Vec<u8>,
    pub files: Vec<FileEntry>,
    pub private: bool,
    pub version: TorrentVersion,
    /// True if the torrent uses the multi-file form (a directory).
    pub multi_file: bool,
    pub layout: Layout,
}

impl Info {
    pub fn num_pieces(&self) -> u32 {
        self.layout.num_pieces()
    }

    pub fn total_length(&self) -> u64 {
        self.layout.total_length()
    }

    /// Bytes in files that are written (pad files excluded).
    pub fn content_length(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| !f.attributes.pad)
            .map(|f| f.length)
            .sum()
    }

    pub fn piece_hash(&self, piece: PieceIndex) -> Option<[u8; 20]> {
        let start = piece.as_usize().checked_mul(20)?;
        let h = self.pieces.get(start..start + 20)?;
        let mut out = [0u8; 20];
        out.copy_from_slice(h);
        Some(out)
    }
}

/// A parsed .torrent file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    pub info: Info,
    /// The info dictionary exactly as it appeared in the file.
    pub info_bytes: Vec<u8>,
    pub info_hashes: InfoHashes,
    /// Tracker tiers (BEP 12); a lone `announce` becomes one tier.
    pub trackers: Vec<Vec<String>>,
    /// Web seeds (BEP 19 `url-list`).
    pub web_seeds: Vec<String>,
    /// DHT nodes embedded for trackerless torrents (BEP 5 `nodes`).
    pub dht_nodes: Vec<(String, u16)>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    /// File names that were changed to be safe, and why.
    pub path_fixes: Vec<PathFix>,
}

impl Metainfo {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetainfoError> {
        parse::metainfo(bytes)
    }

    /// Parse a bare info dictionary (as fetched with BEP 9).
    pub fn from_info_bytes(info_bytes: &[u8]) -> Result<Self, MetainfoError> {
        parse::info_only(info_bytes)
    }
}

/// The v1 info dictionary of one file held in memory (for tests and
/// simulations, which have no files to hash): `name`, `piece_length`, and
/// the SHA-1 of each piece of `payload`.
pub fn single_file_info(name: &str, piece_length: u32, payload: &[u8]) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    let mut pieces = Vec::with_capacity(payload.len().div_ceil(piece_length.max(1) as usize) * 20);
    for chunk in payload.chunks(piece_length.max(1) as usize) {
        pieces.extend_from_slice(&Sha1::digest(chunk));
    }
    let mut out = Vec::new();
    lodestone_bencode::Encoder::new(&mut out)
        .begin_dict()
        .bytes(b"length")
        .int(payload.len() as i64)
        .bytes(b"name")
        .bytes(name.as_bytes())
        .bytes(b"piece length")
        .int(i64::from(piece_length))
        .bytes(b"pieces")
        .bytes(&pieces)
        .end();
    out
}
