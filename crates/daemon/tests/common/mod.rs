//! A daemon over a session in the test's process (no listener, no state
//! directory), for the daemon crate's integration tests.
#![allow(dead_code)] // each test binary uses its part

use std::path::Path;
use std::sync::Arc;

use lodestone_daemon::daemon::{Daemon, Settings};
use lodestone_engine::session::{Session, SessionConfig};
use lodestone_engine::torrent::TorrentConfig;

/// Settings with no limits, downloads in `dir`, one category `tv`.
pub fn settings(dir: &Path) -> Settings {
    Settings {
        download_dir: dir.to_owned(),
        incomplete_dir: None,
        start_added_torrents: true,
        speed_limit_down: None,
        speed_limit_up: None,
        alt_speed_down: None,
        alt_speed_up: None,
        alt_speed_enabled: false,
        seed_ratio_limit: None,
        idle_seeding_limit: None,
        peer_limit_global: 100,
        peer_limit_per_torrent: 50,
        peer_port: 0,
        dht_enabled: false,
        pex_enabled: false,
        lpd_enabled: false,
        alt_schedule: lodestone_daemon::schedule::Schedule::DEFAULT,
        alt_schedule_enabled: false,
        categories: [("tv".to_owned(), dir.join("tv"))].into(),
    }
}

/// The configuration new torrents start from: content in `dir`.
pub fn template(dir: &Path, seed: u64) -> TorrentConfig {
    TorrentConfig::new(
        dir.to_owned(),
        lodestone_core::PeerId::generate([seed as u8; 12]),
        seed,
    )
}

/// A daemon over a new session, its events pumped into its book.
pub async fn daemon(dir: &Path, template: TorrentConfig) -> Arc<Daemon> {
    let (session, events) = Session::start(SessionConfig {
        listen: None,
        threads: 1,
        seed: template.seed,
        state: None,
        max_connections: 100,
    })
    .await
    .unwrap();
    let daemon = Daemon::new(session, template, settings(dir), None).unwrap();
    tokio::spawn(daemon.clone().pump(events));
    daemon
}
