//! "Ask the trackers now": a running torrent's trackers hear a second
//! announce at once, not after their interval (half an hour here), unless
//! the tracker's `min interval` has not passed since the last announce; a
//! magnet still fetching its metadata asks too; a stopped torrent cannot.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{free_addr, torrent_of, write_data};
use lodestone_core::{InfoHash, InfoHashes, PeerId};
use lodestone_engine::session::{Add, Session, SessionConfig, SessionError, SessionEvent};
use lodestone_engine::torrent::{MagnetStart, TorrentConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// An HTTP tracker on 127.0.0.1 that answers every announce with no peers,
/// an interval of 1800 s and `min_interval` if given; each announce's query
/// comes out of the receiver.
async fn tracker(min_interval: Option<u32>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let body = match min_interval {
        Some(m) => format!("d8:intervali1800e12:min intervali{m}e5:peers0:e"),
        None => "d8:intervali1800e5:peers0:e".to_owned(),
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 2048];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req);
                let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let _ = tx.send(target);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/announce"), rx)
}

async fn session(seed: u64) -> (Session, lodestone_engine::session::SessionEvents) {
    Session::start(SessionConfig {
        listen: Some(free_addr()),
        threads: 1,
        seed,
        state: None,
        max_connections: lodestone_engine::session::DEFAULT_MAX_CONNECTIONS,
        utp: None,
        tcp: true,
    })
    .await
    .unwrap()
}

/// A seeding torrent of `dir` announcing to `url` only.
fn add_seed(session: &Session, dir: &Path, url: &str) -> lodestone_engine::session::TorrentId {
    let src = dir.join("src/one.bin");
    write_data(&src, 256 * 1024, |i| (i * 13 % 251) as u8);
    let mut meta = (*torrent_of(&src, 64 * 1024)).clone();
    meta.trackers = vec![vec![url.to_owned()]];
    let mut cfg = TorrentConfig::new(dir.join("src"), PeerId::generate([6; 12]), 11);
    cfg.seed_time = None;
    cfg.lpd = false;
    session.add(Add::Torrent(meta.into()), cfg).unwrap().id
}

/// The tracker saw the request, its answer is on the way back: a
/// reannounce asked for before the tier has it is that announce's.
const SETTLE: Duration = Duration::from_millis(300);

async fn next_announce(
    rx: &mut mpsc::UnboundedReceiver<String>,
    within: Duration,
) -> Option<String> {
    timeout(within, rx.recv()).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reannounce_asks_the_tracker_now() {
    let dir = tempfile::tempdir().unwrap();
    let (url, mut announces) = tracker(None).await;
    let (session, _events) = session(11).await;
    let id = add_seed(&session, dir.path(), &url);
    let first = next_announce(&mut announces, Duration::from_secs(20))
        .await
        .expect("the first announce");
    assert!(first.contains("event=started"), "{first}");
    // Nothing more for the interval's half hour...
    assert!(next_announce(&mut announces, Duration::from_millis(500))
        .await
        .is_none());
    // ...but at once when asked.
    let asked = Instant::now();
    session.reannounce(id).await.unwrap();
    let second = next_announce(&mut announces, Duration::from_secs(2))
        .await
        .expect("a second announce within 2 s of the reannounce");
    assert!(!second.contains("event=started"), "{second}");
    assert!(asked.elapsed() < Duration::from_secs(2));
    // Asked again: again (this tracker sets no floor).
    tokio::time::sleep(SETTLE).await;
    session.reannounce(id).await.unwrap();
    next_announce(&mut announces, Duration::from_secs(2))
        .await
        .expect("a third announce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reannounce_waits_for_the_trackers_min_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (url, mut announces) = tracker(Some(3)).await;
    let (session, _events) = session(12).await;
    let id = add_seed(&session, dir.path(), &url);
    next_announce(&mut announces, Duration::from_secs(20))
        .await
        .expect("the first announce");
    let first_at = Instant::now();
    // Sooner than its min interval of 3 s: refused, as Transmission does.
    tokio::time::sleep(SETTLE).await;
    session.reannounce(id).await.unwrap();
    assert!(
        next_announce(&mut announces, Duration::from_millis(1500))
            .await
            .is_none(),
        "announced again before the tracker's min interval"
    );
    // Once it has passed: at once.
    tokio::time::sleep_until(first_at + Duration::from_millis(3500)).await;
    session.reannounce(id).await.unwrap();
    next_announce(&mut announces, Duration::from_secs(2))
        .await
        .expect("an announce once the min interval passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magnet_fetching_its_metadata_reannounces_too() {
    let dir = tempfile::tempdir().unwrap();
    let (url, mut announces) = tracker(None).await;
    let (session, _events) = session(13).await;
    let magnet = MagnetStart {
        info_hashes: InfoHashes::V1(InfoHash([0x4d; 20])),
        trackers: vec![url],
        max_metadata_size: 1 << 20,
        torrent_file: None,
    };
    let mut cfg = TorrentConfig::new(dir.path().join("dl"), PeerId::generate([7; 12]), 13);
    cfg.lpd = false;
    let id = session.add(Add::Magnet(magnet), cfg).unwrap().id;
    next_announce(&mut announces, Duration::from_secs(20))
        .await
        .expect("the first announce");
    tokio::time::sleep(SETTLE).await;
    session.reannounce(id).await.unwrap();
    next_announce(&mut announces, Duration::from_secs(2))
        .await
        .expect("a second announce within 2 s of the reannounce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_torrent_cannot_reannounce() {
    let dir = tempfile::tempdir().unwrap();
    let (url, mut announces) = tracker(None).await;
    let (session, mut events) = session(14).await;
    let id = add_seed(&session, dir.path(), &url);
    next_announce(&mut announces, Duration::from_secs(20))
        .await
        .expect("the first announce");
    session.stop(id).unwrap();
    timeout(Duration::from_secs(20), async {
        while let Some(e) = events.recv().await {
            if matches!(e, SessionEvent::Ended { id: i, .. } if i == id) {
                return;
            }
        }
    })
    .await
    .expect("the torrent stops");
    assert!(matches!(
        session.reannounce(id).await,
        Err(SessionError::NotRunning(i)) if i == id
    ));
    let unknown = lodestone_engine::session::TorrentId(id.0 + 100);
    assert!(matches!(
        session.reannounce(unknown).await,
        Err(SessionError::Unknown(_))
    ));
}
