//! Magnet metadata against hostile peers: a peer that sends metadata that
//! does not match the info hash is banned and the metadata comes from an
//! honest peer; a peer claiming a 4 GiB info dictionary is refused before
//! anything is allocated for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lodestone_core::{Metainfo, PeerId};
use lodestone_engine::create::{create_torrent, CreateOptions, Progress};
use lodestone_engine::magnet::{fetch_metadata, FetchConfig, FetchEvent};
use lodestone_engine::torrent::{self, TorrentConfig};
use lodestone_wire::extended::{ExtendedHandshake, OUR_UT_METADATA_ID};
use lodestone_wire::metadata::MetadataMessage;
use lodestone_wire::{decode, Handshake, Limits, Message, Reserved};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

fn fixture(dir: &std::path::Path) -> Arc<Metainfo> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("t")).unwrap();
    // Many files make a multi-piece info dictionary (> 16 KiB).
    for i in 0..400 {
        std::fs::write(
            src.join("t")
                .join(format!("file-with-a-long-name-{i:04}.bin")),
            vec![i as u8; 100],
        )
        .unwrap();
    }
    let bytes = create_torrent(
        &src.join("t"),
        &CreateOptions::default(),
        &Progress::default(),
    )
    .unwrap();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert!(m.info_bytes.len() > 16384, "metadata spans pieces");
    Arc::new(m)
}

fn free(ip: &str) -> SocketAddr {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn send(s: &mut TcpStream, m: Message) {
    let mut b = BytesMut::new();
    m.encode(&mut b);
    let _ = s.write_all(&b).await;
}

/// A peer that speaks ut_metadata and claims `size`; it answers requests
/// with garbage of the right length.
fn liar(meta: &Arc<Metainfo>, size: u64) -> SocketAddr {
    let addr = free("127.0.0.2");
    let ih = meta.info_hashes.wire();
    tokio::spawn(async move {
        let l = TcpListener::bind(addr).await.unwrap();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut hs = [0u8; 68];
                if s.read_exact(&mut hs).await.is_err() {
                    return;
                }
                let ours = Handshake {
                    reserved: Reserved::ours(),
                    info_hash: ih,
                    peer_id: PeerId(*b"-XX0001-liarliarliar"),
                };
                let _ = s.write_all(&ours.encode()).await;
                let mut h = ExtendedHandshake {
                    metadata_size: Some(size),
                    ..Default::default()
                };
                h.extensions.insert("ut_metadata".into(), 7);
                send(
                    &mut s,
                    Message::Extended {
                        id: 0,
                        payload: Bytes::from(h.encode()),
                    },
                )
                .await;
                let mut buf = BytesMut::new();
                let limits = Limits::default();
                loop {
                    if s.read_buf(&mut buf).await.map(|n| n == 0).unwrap_or(true) {
                        return;
                    }
                    while let Ok(Some(m)) = decode(&mut buf, &limits) {
                        if let Message::Extended { id: 7, payload } = m {
                            if let Ok(MetadataMessage::Request { piece }) =
                                MetadataMessage::decode(&payload)
                            {
                                let len = (size as usize - piece as usize * 16384).min(16384);
                                let data = MetadataMessage::Data {
                                    piece,
                                    total_size: size,
                                    data: Bytes::from(vec![b'x'; len]),
                                };
                                send(
                                    &mut s,
                                    Message::Extended {
                                        id: OUR_UT_METADATA_ID,
                                        payload: Bytes::from(data.encode()),
                                    },
                                )
                                .await;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn honest_seeder(meta: &Arc<Metainfo>, dir: &std::path::Path) -> SocketAddr {
    let addr = free("127.0.0.1");
    honest_seeder_at(meta, dir, addr);
    addr
}

fn honest_seeder_at(meta: &Arc<Metainfo>, dir: &std::path::Path, addr: SocketAddr) {
    let mut cfg = TorrentConfig::new(dir.join("src"), PeerId::generate([1; 12]), 1);
    cfg.listen = Some(addr);
    cfg.recheck = true;
    cfg.seed_time = None;
    let (tx, mut rx) = mpsc::channel(256);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (_stop, stop_rx) = watch::channel(false);
    let meta = meta.clone();
    tokio::spawn(async move {
        let _keep = _stop;
        let _ = torrent::run(meta, cfg, tx, stop_rx).await;
    });
}

async fn fetch(
    meta: &Arc<Metainfo>,
    peers: Vec<SocketAddr>,
) -> (Result<Metainfo, String>, Vec<FetchEvent>) {
    let cfg = FetchConfig {
        info_hashes: meta.info_hashes,
        peers,
        dht: None,
        peer_id: PeerId::generate([2; 12]),
        max_size: 32 << 20,
        listen: None,
        trackers: Vec::new(),
        lpd: false,
        http: lodestone_engine::http::HttpClient::default(),
    };
    let (tx, mut rx) = mpsc::channel(256);
    let (_stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(fetch_metadata(cfg, tx, stop_rx));
    let mut events = Vec::new();
    let collect = async {
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), collect).await;
    let r = match tokio::time::timeout(Duration::from_secs(1), task).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        _ => Err("still running".into()),
    };
    (r, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_metadata_bans_the_liar_and_comes_from_the_honest_peer() {
    let dir = tempfile::tempdir().unwrap();
    let meta = fixture(dir.path());
    let bad = liar(&meta, meta.info_bytes.len() as u64);
    // The honest seeder comes up a little later (the fetcher redials it),
    // so the liar's pieces are the first ones tried.
    let honest = free("127.0.0.1");
    let (m2, d2) = (meta.clone(), dir.path().to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        honest_seeder_at(&m2, &d2, honest);
    });
    let (r, events) = fetch(&meta, vec![bad, honest]).await;
    let got = r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
    assert_eq!(got.info_bytes, meta.info_bytes);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FetchEvent::Banned { addr, .. } if *addr == bad)),
        "the liar is banned: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_gib_metadata_claim_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let meta = fixture(dir.path());
    let honest = honest_seeder(&meta, dir.path());
    let huge = liar(&meta, 4 << 30);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (r, events) = fetch(&meta, vec![huge, honest]).await;
    assert!(r.is_ok(), "{r:?}");
    let refused = events.iter().find_map(|e| match e {
        FetchEvent::PeerRefused { addr, reason } if *addr == huge => Some(reason.clone()),
        _ => None,
    });
    let reason = refused.unwrap_or_else(|| panic!("not refused: {events:?}"));
    assert!(reason.contains("4294967296 bytes, more than"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_pieces_come_from_several_seeders() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("t")).unwrap();
    for i in 0..1500 {
        std::fs::write(
            src.join("t")
                .join(format!("a-rather-long-file-name-number-{i:05}.bin")),
            [i as u8; 10],
        )
        .unwrap();
    }
    let bytes = create_torrent(
        &src.join("t"),
        &CreateOptions::default(),
        &Progress::default(),
    )
    .unwrap();
    let meta = Arc::new(Metainfo::from_bytes(&bytes).unwrap());
    let pieces = meta.info_bytes.len().div_ceil(16384);
    assert!(pieces >= 4, "{pieces} metadata pieces");
    let seeders: Vec<SocketAddr> = (0..3).map(|_| honest_seeder(&meta, dir.path())).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (r, events) = fetch(&meta, seeders).await;
    assert_eq!(r.unwrap().info_bytes, meta.info_bytes);
    let senders: std::collections::HashSet<SocketAddr> = events
        .iter()
        .filter_map(|e| match e {
            FetchEvent::Piece { from, .. } => Some(*from),
            _ => None,
        })
        .collect();
    assert!(
        senders.len() > 1,
        "all {pieces} pieces came from one peer: {events:?}"
    );
}
