//! The engine against peers that misbehave, written as scripted test peers
//! on loopback. A real Lodestone seeder (the same engine) sits on 127.0.0.1;
//! hostile peers sit on 127.0.0.2 so a ban of one never hits the other.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use lodestone_core::{Bitfield, InfoHash, Metainfo, PeerId, PieceIndex};
use lodestone_engine::create::{create_torrent, CreateOptions, Progress};
use lodestone_engine::torrent::{self, Summary, TorrentConfig, TorrentEvent};
use lodestone_wire::{decode, BlockRequest, Handshake, Limits, Message, Reserved};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const PIECE: u64 = 32 * 1024;

fn fixture(dir: &Path) -> Arc<Metainfo> {
    let src = dir.join("src/data.bin");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    let data: Vec<u8> = (0..(40 * PIECE + 1000))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    std::fs::write(&src, data).unwrap();
    let opts = CreateOptions {
        piece_length: Some(PIECE),
        ..Default::default()
    };
    let bytes = create_torrent(&src, &opts, &Progress::default()).unwrap();
    Arc::new(Metainfo::from_bytes(&bytes).unwrap())
}

fn free_port(ip: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    l.local_addr().unwrap()
}

fn config(dir: &Path, id: u8) -> TorrentConfig {
    let mut c = TorrentConfig::new(dir.to_owned(), PeerId::generate([id; 12]), u64::from(id));
    c.threads = 1;
    c
}

/// A well-behaved Lodestone seeder; returns its address.
fn spawn_seeder(meta: &Arc<Metainfo>, dir: &Path) -> (SocketAddr, watch::Sender<bool>) {
    let addr = free_port("127.0.0.1");
    let mut cfg = config(dir, 1);
    cfg.listen = Some(addr);
    cfg.recheck = true;
    cfg.seed_time = None;
    let (tx, _rx) = mpsc::channel(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let meta = meta.clone();
    tokio::spawn(async move {
        let mut drain_rx = _rx;
        tokio::spawn(async move { while drain_rx.recv().await.is_some() {} });
        let _ = torrent::run(meta, cfg, tx, stop_rx).await;
    });
    (addr, stop_tx)
}

/// Run a leecher to the end, collecting its events.
async fn leech(
    meta: &Arc<Metainfo>,
    dir: &Path,
    peers: Vec<SocketAddr>,
) -> (Summary, Vec<TorrentEvent>) {
    let mut cfg = config(dir, 2);
    cfg.peers = peers;
    let (tx, mut rx) = mpsc::channel(4096);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let run = tokio::spawn(torrent::run(meta.clone(), cfg, tx, stop_rx));
    let mut events = Vec::new();
    let collect = async {
        while let Some(e) = rx.recv().await {
            if !matches!(e, TorrentEvent::Progress(_) | TorrentEvent::Sources(_)) {
                events.push(e);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .is_err()
    {
        panic!("the leecher did not finish within 60 s; its events: {events:?}");
    }
    let summary = run.await.unwrap().unwrap();
    (summary, events)
}

/// The download is the source file, and every piece has the SHA-1 the
/// torrent names (an independent check: the source could be wrong too).
fn assert_content(meta: &Metainfo, dir: &Path, src: &Path) {
    use sha1::{Digest, Sha1};
    let a = std::fs::read(src.join("src/data.bin")).unwrap();
    let b = std::fs::read(dir.join("data.bin")).unwrap();
    assert_eq!(
        b.len() as u64,
        meta.info.total_length(),
        "downloaded length"
    );
    for (i, chunk) in b.chunks(PIECE as usize).enumerate() {
        let want = meta.info.piece_hash(PieceIndex(i as u32)).unwrap();
        assert!(
            <[u8; 20]>::from(Sha1::digest(chunk)) == want,
            "piece {i} does not match the torrent's hash"
        );
    }
    assert!(a == b, "downloaded content differs");
}

/// The honest seeder (behind `good`) was never banned.
fn assert_honest_not_banned(events: &[TorrentEvent], good: SocketAddr) {
    for e in events {
        if let TorrentEvent::PeerBanned { addr, reason } = e {
            assert!(*addr != good, "the honest seeder was banned: {reason}");
        }
    }
}

/// How a scripted peer behaves once the handshake is done.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Script {
    /// Has everything, answers every request with wrong bytes.
    BadData,
    /// Has everything, unchokes, never answers.
    Stall,
    /// Sends a message whose length prefix is 2^31.
    HugeLength,
    /// Sends a bitfield with the spare bits set.
    SpareBits,
    /// Sends a bitfield one byte too short.
    ShortBitfield,
    /// Has everything, sends blocks nobody asked for (while it still
    /// chokes us, so no request can have crossed them), unchokes, then
    /// never answers.
    Unrequested,
}

async fn read_handshake(s: &mut TcpStream) -> Handshake {
    let mut buf = [0u8; 68];
    s.read_exact(&mut buf).await.unwrap();
    Handshake::decode(&buf).unwrap().unwrap()
}

async fn send(s: &mut TcpStream, m: Message) -> std::io::Result<()> {
    let mut b = BytesMut::new();
    m.encode(&mut b);
    s.write_all(&b).await
}

/// How far a scripted connection has got.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
enum Stage {
    Waiting,
    /// Its scripted opening (the bad message, the unrequested blocks) is sent.
    Opened,
    /// The leecher hung up on it.
    Ended,
}

/// Serve one scripted connection per accept, forever; also returns the
/// stage its latest connection has reached.
fn spawn_hostile_watched(
    meta: &Arc<Metainfo>,
    script: Script,
) -> (SocketAddr, watch::Receiver<Stage>) {
    let addr = free_port("127.0.0.2");
    let info_hash = meta.info_hashes.wire();
    let n = meta.info.num_pieces();
    let (stage_tx, stage) = watch::channel(Stage::Waiting);
    let stage_tx = Arc::new(stage_tx);
    tokio::spawn(async move {
        let l = TcpListener::bind(addr).await.unwrap();
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let stage_tx = stage_tx.clone();
            tokio::spawn(async move {
                let _ = hostile_conn(s, info_hash, n, script, &stage_tx).await;
                let _ = stage_tx.send(Stage::Ended);
            });
        }
    });
    (addr, stage)
}

/// A proxy to `target` that holds every connection until the hostile
/// peer has reached `stage`: the leecher cannot finish from the honest
/// seeder before the hostile one has had its say (a fast download did).
fn gate(target: SocketAddr, hostile: watch::Receiver<Stage>, stage: Stage) -> SocketAddr {
    let addr = free_port("127.0.0.1");
    tokio::spawn(async move {
        let l = TcpListener::bind(addr).await.unwrap();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut hostile = hostile.clone();
            tokio::spawn(async move {
                if hostile.wait_for(|s| *s >= stage).await.is_err() {
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

async fn hostile_conn(
    mut s: TcpStream,
    info_hash: InfoHash,
    n: u32,
    script: Script,
    stage: &watch::Sender<Stage>,
) -> std::io::Result<()> {
    let _theirs = read_handshake(&mut s).await;
    let hs = Handshake {
        reserved: Reserved::ours(),
        info_hash,
        peer_id: PeerId(*b"-XX0001-hostilepeer!"),
    };
    s.write_all(&hs.encode()).await?;
    match script {
        Script::HugeLength => {
            s.write_all(&[0x80, 0, 0, 0]).await?;
        }
        Script::SpareBits => {
            let mut bits = Bitfield::full(n).as_bytes().to_vec();
            if let Some(last) = bits.last_mut() {
                *last = 0xff;
            }
            send(&mut s, Message::Bitfield(bits.into())).await?;
        }
        Script::ShortBitfield => {
            let bits = Bitfield::full(n).as_bytes()[1..].to_vec();
            send(&mut s, Message::Bitfield(bits.into())).await?;
        }
        Script::Unrequested => {
            send(&mut s, Message::HaveAll).await?;
            for p in 0..n.min(8) {
                let data = vec![0xee; 16384];
                send(
                    &mut s,
                    Message::Piece {
                        piece: PieceIndex(p),
                        begin: 0,
                        data: data.into(),
                    },
                )
                .await?;
            }
            send(&mut s, Message::Unchoke).await?;
        }
        Script::BadData | Script::Stall => {
            send(&mut s, Message::HaveAll).await?;
            send(&mut s, Message::Unchoke).await?;
        }
    }
    let _ = stage.send(Stage::Opened);
    // Then answer requests according to the script, until the peer hangs up.
    let limits = Limits::for_pieces(n);
    let mut buf = BytesMut::new();
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        while let Ok(Some(m)) = decode(&mut buf, &limits) {
            if let (Message::Request(BlockRequest { piece, begin, len }), Script::BadData) =
                (m, script)
            {
                let data = vec![0xab; len as usize];
                send(
                    &mut s,
                    Message::Piece {
                        piece,
                        begin,
                        data: data.into(),
                    },
                )
                .await?;
            }
        }
        buf.reserve(1);
        let _ = buf.remaining();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_is_refetched_and_the_sender_banned() {
    let dir = tempfile::tempdir().unwrap();
    let meta = fixture(dir.path());
    let (good, _stop) = spawn_seeder(&meta, &dir.path().join("src"));
    let (bad, stage) = spawn_hostile_watched(&meta, Script::BadData);
    // The honest seeder opens once the leecher has hung up on the liar: until
    // then every block comes from the liar (ungated, a fast honest seeder
    // could serve the whole file before the liar's first piece failed).
    let good = gate(good, stage, Stage::Ended);
    let out = dir.path().join("dl");
    let (summary, events) = leech(&meta, &out, vec![bad, good]).await;
    assert!(summary.complete, "{events:?}");
    assert_content(&meta, &out, dir.path());
    // Two bad pieces, each sent by the liar alone, then the ban. (Pieces
    // the liar had already sent, whole or in part, fail after it; by then
    // it is gone, so they name nobody or the honest seeder that finished
    // them, which is not banned for it.)
    let banned_at = events
        .iter()
        .position(|e| matches!(e, TorrentEvent::PeerBanned { .. }))
        .unwrap_or_else(|| panic!("nobody was banned: {events:?}"));
    let strikes: Vec<&Vec<SocketAddr>> = events[..banned_at]
        .iter()
        .filter_map(|e| match e {
            TorrentEvent::HashFailed { peers, .. } => Some(peers),
            _ => None,
        })
        .collect();
    assert_eq!(strikes.len(), 2, "two strikes before the ban: {events:?}");
    for peers in &strikes {
        assert_eq!(peers[..], [bad], "a bad piece names the liar alone");
    }
    let bans: Vec<(SocketAddr, &str)> = events
        .iter()
        .filter_map(|e| match e {
            TorrentEvent::PeerBanned { addr, reason } => Some((*addr, reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(bans, [(bad, "sent bad data for 2 pieces")], "{events:?}");
    let dropped = events.iter().any(|e| {
        matches!(e, TorrentEvent::PeerDisconnected { addr, reason }
            if *addr == bad && reason == "sent bad data for 2 pieces")
    });
    assert!(dropped, "the liar's connection is closed: {events:?}");
    assert!(
        summary.stats.wasted >= 2 * PIECE,
        "two bad pieces are waste: {}",
        summary.stats.wasted
    );
    assert_honest_not_banned(&events, good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_disconnect_and_the_download_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let meta = fixture(dir.path());
    let (good, _stop) = spawn_seeder(&meta, &dir.path().join("src"));
    for script in [Script::HugeLength, Script::SpareBits, Script::ShortBitfield] {
        let (bad, stage) = spawn_hostile_watched(&meta, script);
        let good = gate(good, stage, Stage::Ended);
        let out = dir.path().join(format!("dl-{script:?}"));
        let (summary, events) = leech(&meta, &out, vec![bad, good]).await;
        assert!(summary.complete, "{script:?}");
        assert_content(&meta, &out, dir.path());
        assert_honest_not_banned(&events, good);
        let reason = events
            .iter()
            .find_map(|e| match e {
                TorrentEvent::PeerDisconnected { addr, reason } if *addr == bad => {
                    Some(reason.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{script:?}: hostile peer was not disconnected: {events:?}"));
        let want = match script {
            Script::HugeLength => "longer than",
            Script::SpareBits => "past the last piece",
            _ => "bitfield is",
        };
        assert!(reason.contains(want), "{script:?}: {reason}");
        // A broken message is a disconnect, not a ban, and nothing it sent
        // was kept.
        assert!(
            !events.iter().any(|e| matches!(
                e,
                TorrentEvent::PeerBanned { .. } | TorrentEvent::HashFailed { .. }
            )),
            "{script:?}: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_blocks_are_ignored_and_stalls_are_routed_around() {
    let dir = tempfile::tempdir().unwrap();
    let meta = fixture(dir.path());
    let (good, _stop) = spawn_seeder(&meta, &dir.path().join("src"));
    for script in [Script::Unrequested, Script::Stall] {
        let (bad, stage) = spawn_hostile_watched(&meta, script);
        // The unrequested blocks are sent before the honest seeder opens.
        let good = gate(good, stage, Stage::Opened);
        let out = dir.path().join(format!("dl-{script:?}"));
        let (summary, events) = leech(&meta, &out, vec![bad, good]).await;
        assert!(summary.complete, "{script:?}");
        assert_content(&meta, &out, dir.path());
        // Ignored, not stored: no piece failed, nobody was banned.
        assert!(
            !events.iter().any(|e| matches!(
                e,
                TorrentEvent::PeerBanned { .. } | TorrentEvent::HashFailed { .. }
            )),
            "{script:?}: {events:?}"
        );
        if script == Script::Unrequested {
            assert!(
                summary.stats.wasted >= 8 * 16384,
                "unrequested blocks counted as waste: {}",
                summary.stats.wasted
            );
        }
    }
}

/// A raw connection to our seeder, handshake done and interest shown.
async fn connect(seeder: SocketAddr, ih: InfoHash) -> TcpStream {
    // The seeder rechecks before it serves; retry the handshake until it answers.
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(seeder).await {
            let hs = Handshake {
                reserved: Reserved::ours(),
                info_hash: ih,
                peer_id: PeerId([9; 20]),
            };
            s.write_all(&hs.encode()).await.unwrap();
            let _ = read_handshake(&mut s).await;
            send(&mut s, Message::Interested).await.unwrap();
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("seeder never accepted");
}

/// The next message from the seeder; None once it hangs up.
async fn next_msg(s: &mut TcpStream, buf: &mut BytesMut, limits: &Limits) -> Option<Message> {
    loop {
        if let Some(m) = decode(buf, limits).unwrap() {
            return Some(m);
        }
        match tokio::time::timeout(Duration::from_secs(15), s.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
            Err(_) => panic!("seeder went quiet"),
        }
    }
}

/// Our seeder against a leecher that asks for too much or for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_to_our_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let meta = fixture(dir.path());
    let (seeder, _stop) = spawn_seeder(&meta, &dir.path().join("src"));
    let n = meta.info.num_pieces();
    let limits = Limits::for_pieces(n);

    let ih = meta.info_hashes.wire();
    // Out of range: rejected (BEP 6), connection stays up.
    let mut s = connect(seeder, ih).await;
    let mut buf = BytesMut::new();
    loop {
        match next_msg(&mut s, &mut buf, &limits)
            .await
            .expect("seeder stays connected")
        {
            Message::Unchoke => break,
            _ => continue,
        }
    }
    let bad = BlockRequest {
        piece: PieceIndex(n),
        begin: 0,
        len: 16384,
    };
    send(&mut s, Message::Request(bad)).await.unwrap();
    let good = BlockRequest {
        piece: PieceIndex(0),
        begin: 0,
        len: 16384,
    };
    send(&mut s, Message::Request(good)).await.unwrap();
    let mut rejected = false;
    loop {
        match next_msg(&mut s, &mut buf, &limits)
            .await
            .expect("still connected")
        {
            Message::Reject(r) if r == bad => rejected = true,
            Message::Piece { piece, begin, data } => {
                assert_eq!((piece, begin, data.len()), (PieceIndex(0), 0, 16384));
                break;
            }
            _ => {}
        }
    }
    assert!(rejected, "out-of-range request was rejected");

    // Larger than 128 KiB: disconnected.
    let huge = BlockRequest {
        piece: PieceIndex(0),
        begin: 0,
        len: 128 * 1024 + 1,
    };
    send(&mut s, Message::Request(huge)).await.unwrap();
    while next_msg(&mut s, &mut buf, &limits).await.is_some() {}
}

/// The data of a piece vanishes behind the seeder's back (the file is cut
/// short): its requests are rejected, the seeder says why, and the pieces
/// still on disk are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_that_cannot_read_a_piece_refuses_it_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let meta = fixture(dir.path());
    let addr = free_port("127.0.0.1");
    let mut cfg = config(&dir.path().join("src"), 1);
    cfg.listen = Some(addr);
    cfg.recheck = true;
    cfg.seed_time = None;
    let (tx, mut events) = mpsc::channel(1024);
    let (_stop, stop_rx) = watch::channel(false);
    tokio::spawn(torrent::run(meta.clone(), cfg, tx, stop_rx));
    loop {
        match events.recv().await.expect("seeder runs") {
            TorrentEvent::Started { have, .. } => {
                assert_eq!(have, meta.info.num_pieces());
                break;
            }
            _ => continue,
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("src/data.bin"))
        .unwrap()
        .set_len(20 * PIECE)
        .unwrap();

    let limits = Limits::for_pieces(meta.info.num_pieces());
    let mut s = connect(addr, meta.info_hashes.wire()).await;
    let mut buf = BytesMut::new();
    while !matches!(
        next_msg(&mut s, &mut buf, &limits)
            .await
            .expect("connected"),
        Message::Unchoke
    ) {}
    let gone = BlockRequest {
        piece: PieceIndex(30),
        begin: 0,
        len: 16384,
    };
    let kept = BlockRequest {
        piece: PieceIndex(3),
        begin: 16384,
        len: 16384,
    };
    send(&mut s, Message::Request(gone)).await.unwrap();
    send(&mut s, Message::Request(kept)).await.unwrap();
    let (mut rejected, mut served) = (false, false);
    while !(rejected && served) {
        match next_msg(&mut s, &mut buf, &limits)
            .await
            .expect("still connected")
        {
            Message::Reject(r) if r == gone => rejected = true,
            Message::Piece { piece, begin, data } => {
                assert_eq!((piece, begin, data.len()), (kept.piece, kept.begin, 16384));
                served = true;
            }
            _ => {}
        }
    }
    let said = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let TorrentEvent::ReadFailed { piece, reason } = events.recv().await? {
                return Some((piece, reason));
            }
        }
    })
    .await
    .expect("the seeder reports the failed read");
    let (piece, reason) = said.expect("event");
    assert_eq!(piece, 30);
    assert!(reason.contains("data.bin"), "{reason}");
}
