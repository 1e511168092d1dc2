//! Transmission's `torrent-reannounce` asks a running torrent's tracker
//! now (its interval is half an hour); for a stopped torrent it succeeds
//! and does nothing, as Transmission does.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use lodestone_daemon::daemon::Daemon;
use lodestone_engine::create::{create_torrent, CreateOptions, Progress};
use lodestone_engine::session::{RunState, TorrentId};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// An HTTP tracker on 127.0.0.1 answering every announce with no peers and
/// an interval of 1800 s; each announce's request target comes out of the
/// receiver.
async fn tracker() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 2048];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req);
                let _ = tx.send(head.split_whitespace().nth(1).unwrap_or("").to_owned());
                let body = "d8:intervali1800e5:peers0:e";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/announce"), rx)
}

async fn rpc(daemon: &Arc<Daemon>, method: &str, arguments: Value) -> Value {
    let body = json!({"method": method, "arguments": arguments}).to_string();
    let answer = lodestone_daemon::transmission::handle(daemon, body.as_bytes(), "sid").await;
    serde_json::from_slice(&answer).expect("the answer is JSON")
}

async fn next_announce(
    rx: &mut mpsc::UnboundedReceiver<String>,
    within: Duration,
) -> Option<String> {
    timeout(within, rx.recv()).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torrent_reannounce_asks_the_tracker_now() {
    let dir = tempfile::tempdir().unwrap();
    let (url, mut announces) = tracker().await;
    let daemon = common::daemon(dir.path(), common::template(dir.path(), 8)).await;

    let src = dir.path().join("src/r.bin");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    let opts = CreateOptions {
        piece_length: Some(16384),
        trackers: vec![url],
        ..Default::default()
    };
    let bytes = create_torrent(&src, &opts, &Progress::default()).unwrap();
    let metainfo = base64::engine::general_purpose::STANDARD.encode(bytes);
    let added = rpc(&daemon, "torrent-add", json!({"metainfo": metainfo})).await;
    assert_eq!(added["result"], "success", "{added}");
    let id = added["arguments"]["torrent-added"]["id"].as_u64().unwrap();

    next_announce(&mut announces, Duration::from_secs(20))
        .await
        .expect("the first announce");
    // Its answer reaches the torrent; then ask.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = rpc(&daemon, "torrent-reannounce", json!({"ids": [id]})).await;
    assert_eq!(r["result"], "success", "{r}");
    next_announce(&mut announces, Duration::from_secs(2))
        .await
        .expect("a second announce within 2 s of torrent-reannounce");

    // Stopped: success, and nothing is asked.
    let r = rpc(&daemon, "torrent-stop", json!({"ids": [id]})).await;
    assert_eq!(r["result"], "success", "{r}");
    timeout(Duration::from_secs(20), async {
        while daemon.session.get(TorrentId(id)).unwrap().state == RunState::Running {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the torrent stops");
    while announces.try_recv().is_ok() {}
    let r = rpc(&daemon, "torrent-reannounce", json!({"ids": [id]})).await;
    assert_eq!(r["result"], "success", "{r}");
    assert!(next_announce(&mut announces, Duration::from_secs(1))
        .await
        .is_none());
}
