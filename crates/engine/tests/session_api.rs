//! A session's torrents seen from outside as typed data: a seeding torrent
//! of a session serves a leecher that dials the session's one listener, and
//! its snapshot shows that peer (where it came from, its rates), the file
//! complete, and its sources table.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{free_addr, torrent_of, write_data};
use lodestone_core::{Metainfo, PeerId};
use lodestone_engine::session::{Add, Session, SessionConfig, SessionEvent};
use lodestone_engine::torrent::{self, TorrentConfig, TorrentEvent};
use lodestone_torrent::{PeerSource, SourceKind};
use tokio::sync::{mpsc, watch};

fn fixture(dir: &Path) -> Arc<Metainfo> {
    let src = dir.join("src/one.bin");
    write_data(&src, 4 << 20, |i| (i * 7 % 251) as u8);
    torrent_of(&src, 64 * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_torrent_shows_its_peers_files_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    let meta = fixture(dir.path());
    let listen = free_addr();
    let (session, mut events) = Session::start(SessionConfig {
        listen: Some(listen),
        threads: 1,
        seed: 7,
        state: None,
        max_connections: lodestone_engine::session::DEFAULT_MAX_CONNECTIONS,
        utp: None,
        tcp: true,
    })
    .await
    .unwrap();
    let mut cfg = TorrentConfig::new(dir.path().join("src"), PeerId::generate([3; 12]), 7);
    cfg.seed_time = None;
    cfg.trackers = false;
    let added = session.add(Add::Torrent(meta.clone()), cfg).unwrap();
    assert!(added.new);
    // Seeding once its check is done.
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.recv().await {
            if matches!(
                e,
                SessionEvent::Torrent {
                    event: TorrentEvent::Completed { .. },
                    ..
                }
            ) {
                return;
            }
        }
    })
    .await
    .expect("the torrent seeds");

    // A leecher held to 256 KiB/s dials the session's listener.
    let (_stop, stop_rx) = watch::channel(false);
    let mut lcfg = TorrentConfig::new(dir.path().join("dl"), PeerId::generate([4; 12]), 8);
    lcfg.peers = vec![listen];
    lcfg.download_rate_limit = Some(256 * 1024);
    lcfg.trackers = false;
    let (ltx, mut lrx) = mpsc::channel(1024);
    tokio::spawn(async move { while lrx.recv().await.is_some() {} });
    let leecher = tokio::spawn(torrent::run(meta.clone(), lcfg, ltx, stop_rx));

    let snap = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let s = session.snapshot(added.id).await.expect("a snapshot");
            if s.stats.as_ref().is_some_and(|st| st.uploaded > 0) && !s.peers.is_empty() {
                return s;
            }
        }
    })
    .await
    .expect("the leecher is served");
    assert_eq!(snap.info_hash, meta.info_hashes.wire());
    assert!(snap.metadata.is_none());
    let peer = &snap.peers[0];
    assert_eq!(peer.source, PeerSource::Incoming);
    assert!(peer.established && !peer.am_choking, "{peer:?}");
    assert_eq!(snap.files.len(), 1);
    assert_eq!(snap.files[0].done, meta.info.total_length());
    assert!(snap
        .sources
        .iter()
        .any(|s| s.kind == SourceKind::Incoming && s.peers == 1));
    // A duplicate add is the same torrent.
    let again = session
        .add(
            Add::Torrent(meta.clone()),
            TorrentConfig::new(dir.path().join("src"), PeerId::generate([3; 12]), 7),
        )
        .unwrap();
    assert_eq!((again.id, again.new), (added.id, false));
    leecher.abort();
    session.stop_all();
}
