//! How one torrent behaves: what a driver tells a [`crate::TorrentCore`]
//! or [`crate::MagnetCore`] when it makes one.

use std::net::SocketAddr;
use std::time::Duration;

use lodestone_core::PeerId;

/// How one torrent behaves. The driver's own settings (where files go,
/// threads) stay with the driver.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Where we accept connections (told to peers; never dialled).
    pub listen: Option<SocketAddr>,
    /// Peers to dial (and redial while we are not done).
    pub peers: Vec<SocketAddr>,
    /// After completing, keep seeding this long; `None` = until stopped.
    pub seed_time: Option<Duration>,
    /// Stop seeding once this run uploaded this many times what we hold.
    pub seed_ratio: Option<f64>,
    /// Download only these file indices.
    pub only_files: Option<Vec<usize>>,
    pub sequential: bool,
    pub max_peers: usize,
    pub upload_slots: usize,
    pub peer_id: PeerId,
    /// Seeds every random choice (picker, choker, MSE keys).
    pub seed: u64,
    /// Bytes per second.
    pub download_rate_limit: Option<u64>,
    pub upload_rate_limit: Option<u64>,
    /// Which discovery the driver runs (for the sources table).
    pub dht: bool,
    pub lpd: bool,
    pub trackers: bool,
    /// Peer exchange with peers that speak it (never for a private torrent).
    pub pex: bool,
}

impl CoreConfig {
    pub fn new(peer_id: PeerId, seed: u64) -> Self {
        Self {
            listen: None,
            peers: Vec::new(),
            seed_time: Some(Duration::ZERO),
            seed_ratio: None,
            only_files: None,
            sequential: false,
            max_peers: 60,
            upload_slots: 8,
            peer_id,
            seed,
            download_rate_limit: None,
            upload_rate_limit: None,
            dht: false,
            lpd: false,
            trackers: true,
            pex: true,
        }
    }
}
