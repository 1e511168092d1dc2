//! Getting the info dictionary of a magnet link (BEP 9). The fetch itself is
//! [`lodestone_torrent::MagnetCore`], driven by [`crate::torrent`]: the
//! same connections then carry the content.

use std::net::SocketAddr;

use lodestone_core::{InfoHashes, Metainfo, PeerId};
use tokio::sync::{mpsc, watch};

/// Largest info dictionary taken from a magnet's peers unless told
/// otherwise (the CLI's `--max-metadata-size` default).
pub const DEFAULT_MAX_METADATA: u32 = 32 << 20;

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub info_hashes: InfoHashes,
    pub peers: Vec<SocketAddr>,
    pub dht: Option<crate::dht::Dht>,
    pub peer_id: PeerId,
    pub max_size: u32,
    pub listen: Option<SocketAddr>,
    /// Trackers from the magnet (`tr`), each its own tier.
    pub trackers: Vec<String>,
    /// Local Peer Discovery (needs `listen`).
    pub lpd: bool,
    /// For HTTP(S) trackers.
    pub http: crate::http::HttpClient,
}

/// What happened while fetching the metadata (the core's own events).
pub use lodestone_torrent::MetadataEvent as FetchEvent;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("stopped before the metadata arrived")]
    Stopped,
    #[error("the metadata matched the info hash but does not parse: {0}")]
    Invalid(lodestone_core::MetainfoError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// Fetch and verify the metadata only, then stop. Returns the torrent
/// (info dict only; the caller adds trackers and the like from the
/// magnet). With `listen`, peers that dial us are taken too.
pub async fn fetch_metadata(
    cfg: FetchConfig,
    events: mpsc::Sender<FetchEvent>,
    shutdown: watch::Receiver<bool>,
) -> Result<Metainfo, FetchError> {
    let seed = u64::from_le_bytes(cfg.peer_id.0[12..20].try_into().unwrap_or([0; 8]));
    let mut tc = crate::torrent::TorrentConfig::new(std::path::PathBuf::new(), cfg.peer_id, seed);
    tc.listen = cfg.listen;
    tc.peers = cfg.peers;
    tc.dht = cfg.dht;
    tc.lpd = cfg.lpd;
    tc.http = cfg.http;
    tc.trackers = !cfg.trackers.is_empty();
    let start = crate::torrent::MagnetStart {
        info_hashes: cfg.info_hashes,
        trackers: cfg.trackers,
        max_metadata_size: cfg.max_size,
        torrent_file: None,
    };
    crate::torrent::fetch_only(start, tc, events, shutdown).await
}

/// Largest .torrent accepted from an `xs`/`as` URL.
pub const MAX_TORRENT_DOWNLOAD: usize = 16 << 20;

/// Try the magnet's `.torrent` URLs (`xs`, then `as`) in order; the first
/// that parses and has the magnet's info hash wins. Returns every failure
/// when none does.
pub async fn fetch_torrent_file(
    urls: &[String],
    hashes: InfoHashes,
    http: &crate::http::HttpClient,
) -> Result<Metainfo, Vec<String>> {
    let mut errors = Vec::new();
    for url in urls {
        match http.get(url, MAX_TORRENT_DOWNLOAD).await {
            Err(e) => errors.push(format!("{url}: {e}")),
            Ok(body) => match Metainfo::from_bytes(&body) {
                Err(e) => errors.push(format!("{url}: not a valid .torrent: {e}")),
                Ok(m) if m.info_hashes.wire() != hashes.wire() => errors.push(format!(
                    "{url}: a torrent for another info hash ({})",
                    m.info_hashes.wire()
                )),
                Ok(m) => return Ok(m),
            },
        }
    }
    Err(errors)
}
