//! A magnet still fetching its metadata shows its sources table: in the
//! session's snapshot and as events, its tracker with what the tracker
//! driver said, as the torrent phase does.

mod common;

use std::time::Duration;

use common::free_addr;
use lodestone_core::{InfoHash, InfoHashes, PeerId};
use lodestone_engine::session::{Add, Session, SessionConfig, SessionEvent};
use lodestone_engine::torrent::{MagnetStart, TorrentConfig, TorrentEvent};
use lodestone_torrent::{SourceKind, SourceState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magnet_without_peers_shows_its_sources() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let (session, mut events) = Session::start(SessionConfig {
        listen: Some(listen),
        threads: 1,
        seed: 9,
        state: None,
        max_connections: lodestone_engine::session::DEFAULT_MAX_CONNECTIONS,
        utp: None,
        tcp: true,
    })
    .await
    .unwrap();
    // A tracker nobody answers at: its row says what the driver saw.
    let tracker = format!("http://{}/announce", free_addr());
    let magnet = MagnetStart {
        info_hashes: InfoHashes::V1(InfoHash([0x3c; 20])),
        trackers: vec![tracker.clone()],
        max_metadata_size: 1 << 20,
        torrent_file: None,
    };
    let cfg = TorrentConfig::new(dir.path().join("dl"), PeerId::generate([5; 12]), 9);
    let id = session.add(Add::Magnet(magnet), cfg).unwrap().id;

    let snap = session.snapshot(id).await.expect("a snapshot");
    assert!(snap.metadata.is_some());
    let kinds: Vec<SourceKind> = snap.sources.iter().map(|s| s.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            SourceKind::Dht,
            SourceKind::Pex,
            SourceKind::Lpd,
            SourceKind::Incoming,
            SourceKind::Tracker(tracker.clone()),
        ]
    );
    let incoming = snap
        .sources
        .iter()
        .find(|s| s.kind == SourceKind::Incoming)
        .unwrap();
    assert_eq!(incoming.state, SourceState::Listening(listen));

    // The table comes as events too, while the metadata is missing, and
    // the tracker's row gets the driver's words.
    let reported = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.recv().await {
            if let SessionEvent::Torrent {
                event: TorrentEvent::Sources(rows),
                ..
            } = e
            {
                let t = rows
                    .iter()
                    .find(|s| s.kind == SourceKind::Tracker(tracker.clone()));
                if let Some(s) = t.filter(|s| matches!(s.state, SourceState::Tracker(_))) {
                    return s.clone();
                }
            }
        }
        panic!("the session's events ended");
    })
    .await
    .expect("the tracker's status in a sources event");
    let SourceState::Tracker(status) = &reported.state else {
        unreachable!()
    };
    assert_eq!(status.url, tracker);
    let snap = session.snapshot(id).await.expect("a snapshot");
    assert!(snap.metadata.is_some(), "still fetching");
    assert!(snap
        .sources
        .iter()
        .any(|s| s.kind == SourceKind::Tracker(tracker.clone())
            && matches!(s.state, SourceState::Tracker(_))));
    session.stop_all();
}
