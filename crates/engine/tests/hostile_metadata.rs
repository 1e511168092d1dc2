//! Magnet metadata against hostile peers: a peer that sends metadata that
//! does not match the info hash is banned and the metadata comes from an
//! honest peer; a peer claiming a 4 GiB info dictionary is refused before
//! anything is allocated for it.
//!
//! What arrives is checked against sources the fetcher never saw: the info
//! dictionary cut out of the .torrent file's bytes by hand, and its SHA-1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lodestone_core::{Metainfo, PeerId};
use lodestone_engine::create::{create_torrent, CreateOptions, Progress};
use lodestone_engine::magnet::{fetch_metadata, FetchConfig, FetchEvent};
use lodestone_engine::torrent::{self, TorrentConfig, TorrentEvent};
use lodestone_wire::extended::{ExtendedHandshake, OUR_UT_METADATA_ID};
use lodestone_wire::metadata::MetadataMessage;
use lodestone_wire::{decode, Handshake, Limits, Message, Reserved};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// A torrent and its info dictionary, as cut out of the .torrent's bytes
/// (not by our parser): the top-level keys are sorted, so `info` is the
/// last one and its value runs to the byte before the final `e`.
struct Fixture {
    meta: Arc<Metainfo>,
    info_dict: Vec<u8>,
}

fn fixture_from(bytes: &[u8]) -> Fixture {
    let key = b"4:infod";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("an info key");
    assert_eq!(bytes.last(), Some(&b'e'));
    let info_dict = bytes[at + 6..bytes.len() - 1].to_vec();
    let meta = Arc::new(Metainfo::from_bytes(bytes).unwrap());
    Fixture { meta, info_dict }
}

/// The metadata fetched is the torrent's info dictionary, byte for byte,
/// and its SHA-1 is the info hash we asked for.
fn assert_metadata(got: &Metainfo, f: &Fixture) {
    use sha1::{Digest, Sha1};
    let want = f.meta.info_hashes.v1().expect("a v1 torrent");
    assert_eq!(
        <[u8; 20]>::from(Sha1::digest(&f.info_dict)),
        want.0,
        "the fixture's own info dictionary hashes to its info hash"
    );
    assert!(
        got.info_bytes == f.info_dict,
        "fetched {} bytes that are not the torrent's info dictionary ({} bytes)",
        got.info_bytes.len(),
        f.info_dict.len()
    );
    assert_eq!(<[u8; 20]>::from(Sha1::digest(&got.info_bytes)), want.0);
    assert_eq!(got.info.files.len(), f.meta.info.files.len());
}

fn fixture(dir: &std::path::Path) -> Fixture {
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
    let f = fixture_from(&bytes);
    assert!(f.info_dict.len() > 16384, "metadata spans pieces");
    f
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
/// with garbage of the right length. The flag turns true once the fetcher
/// has hung up on it.
fn liar(meta: &Arc<Metainfo>, size: u64) -> (SocketAddr, watch::Receiver<bool>) {
    let addr = free("127.0.0.2");
    let ih = meta.info_hashes.wire();
    let (hung_up_tx, hung_up) = watch::channel(false);
    let hung_up_tx = Arc::new(hung_up_tx);
    tokio::spawn(async move {
        let l = TcpListener::bind(addr).await.unwrap();
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            let hung_up_tx = hung_up_tx.clone();
            tokio::spawn(async move {
                liar_conn(s, ih, size).await;
                let _ = hung_up_tx.send(true);
            });
        }
    });
    (addr, hung_up)
}

async fn liar_conn(mut s: TcpStream, ih: lodestone_core::InfoHash, size: u64) {
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
                if let Ok(MetadataMessage::Request { piece }) = MetadataMessage::decode(&payload) {
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
}

/// A proxy to `target` that holds every connection until `open` turns
/// true: the fetcher cannot get the metadata from the honest peer before
/// the liar has had its say.
fn gate(target: SocketAddr, open: watch::Receiver<bool>) -> SocketAddr {
    let addr = free("127.0.0.1");
    tokio::spawn(async move {
        let l = TcpListener::bind(addr).await.unwrap();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut open = open.clone();
            tokio::spawn(async move {
                if open.wait_for(|o| *o).await.is_err() {
                    return;
                }
                if let Ok(mut t) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
                }
            });
        }
    });
    addr
}

/// A Lodestone seeder, returned once it has checked its files and serves
/// (its `Started` event; it listens from before that).
async fn honest_seeder(meta: &Arc<Metainfo>, dir: &std::path::Path) -> SocketAddr {
    let addr = free("127.0.0.1");
    // Each seeder its own peer id: one id twice is one peer connected twice.
    let mut id = [1u8; 12];
    id[..2].copy_from_slice(&addr.port().to_be_bytes());
    let mut cfg = TorrentConfig::new(dir.join("src"), PeerId::generate(id), 1);
    cfg.listen = Some(addr);
    cfg.recheck = true;
    cfg.seed_time = None;
    let (tx, mut rx) = mpsc::channel(256);
    let (_stop, stop_rx) = watch::channel(false);
    let meta = meta.clone();
    tokio::spawn(async move {
        let _keep = _stop;
        let _ = torrent::run(meta, cfg, tx, stop_rx).await;
    });
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rx.recv().await {
                Some(TorrentEvent::Started {
                    have, num_pieces, ..
                }) => {
                    return have == num_pieces;
                }
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(
        started,
        Ok(true),
        "the seeder at {addr} did not start with every piece within 30 s"
    );
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    addr
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

/// The address of every `Piece` event, in order.
fn piece_senders(events: &[FetchEvent]) -> Vec<SocketAddr> {
    events
        .iter()
        .filter_map(|e| match e {
            FetchEvent::Piece { from, .. } => Some(*from),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_metadata_bans_the_liar_and_comes_from_the_honest_peer() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let meta = &f.meta;
    let (bad, liar_hung_up) = liar(meta, meta.info_bytes.len() as u64);
    // The honest seeder is reachable only once the fetcher hung up on the
    // liar, so the liar's pieces are the first ones tried.
    let honest = gate(honest_seeder(meta, dir.path()).await, liar_hung_up);
    let (r, events) = fetch(meta, vec![bad, honest]).await;
    let got = r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
    assert_metadata(&got, &f);
    // The liar sent every piece, the whole failed the hash, it alone was
    // banned for it; then every piece came again from the honest peer.
    let banned: Vec<(SocketAddr, &str)> = events
        .iter()
        .filter_map(|e| match e {
            FetchEvent::Banned { addr, reason } => Some((*addr, reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        banned,
        [(bad, "sent metadata that does not match the info hash")],
        "{events:?}"
    );
    let at = |want: fn(&FetchEvent) -> bool| events.iter().position(want);
    let mismatch = at(|e| matches!(e, FetchEvent::Mismatch)).expect("a mismatch");
    let ban = at(|e| matches!(e, FetchEvent::Banned { .. })).unwrap();
    assert!(mismatch < ban, "{events:?}");
    let pieces = meta.info_bytes.len().div_ceil(16384);
    let (before, after) = events.split_at(ban);
    // (The piece that completes a whole may be reported by the mismatch or
    // the result instead of a `Piece` event.)
    let (before, after) = (piece_senders(before), piece_senders(after));
    assert!(
        before.len() >= pieces - 1 && before.iter().all(|a| *a == bad),
        "the liar's pieces first: {events:?}"
    );
    assert!(
        after.len() >= pieces - 1 && after.iter().all(|a| *a == honest),
        "then every piece again from the honest peer: {events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, FetchEvent::PeerRefused { addr, .. } if *addr == honest)),
        "the honest peer was refused: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_gib_metadata_claim_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let meta = &f.meta;
    let honest = honest_seeder(meta, dir.path()).await;
    let (huge, _) = liar(meta, 4 << 30);
    let (r, events) = fetch(meta, vec![huge, honest]).await;
    let got = r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
    assert_metadata(&got, &f);
    let refused: Vec<(SocketAddr, &str)> = events
        .iter()
        .filter_map(|e| match e {
            FetchEvent::PeerRefused { addr, reason } => Some((*addr, reason.as_str())),
            _ => None,
        })
        .collect();
    let [(addr, reason)] = refused[..] else {
        panic!("not one refusal: {events:?}");
    };
    assert_eq!(addr, huge, "{events:?}");
    assert!(reason.contains("4294967296 bytes, more than"), "{reason}");
    assert!(
        piece_senders(&events).iter().all(|a| *a == honest),
        "{events:?}"
    );
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
    let f = fixture_from(&bytes);
    let meta = &f.meta;
    let pieces = meta.info_bytes.len().div_ceil(16384);
    assert!(pieces >= 4, "{pieces} metadata pieces");
    // Each seeder has checked its files and serves before the fetch starts.
    let mut seeders = Vec::new();
    for _ in 0..3 {
        seeders.push(honest_seeder(meta, dir.path()).await);
    }
    let (r, events) = fetch(meta, seeders.clone()).await;
    let got = r.unwrap_or_else(|e| panic!("{e}: {events:?}"));
    assert_metadata(&got, &f);
    let senders = piece_senders(&events);
    assert_eq!(senders.len(), pieces, "each piece once: {events:?}");
    assert!(senders.iter().all(|a| seeders.contains(a)), "{events:?}");
    let distinct: std::collections::HashSet<SocketAddr> = senders.into_iter().collect();
    assert!(
        distinct.len() > 1,
        "all {pieces} pieces came from one peer: {events:?}"
    );
}
