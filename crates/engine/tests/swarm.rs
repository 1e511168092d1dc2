//! One seeder and eight Lodestone leechers starting together on loopback:
//! everyone finishes with the right bytes, and the leechers trade among
//! themselves, so the seeder uploads well under 8 copies.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{free_addr, torrent_of, write_data};
use lodestone_core::{Metainfo, PeerId};
use lodestone_engine::torrent::{self, TorrentConfig};
use tokio::sync::{mpsc, watch};

const LEECHERS: usize = 8;

fn fixture(dir: &Path) -> Arc<Metainfo> {
    let src = dir.join("src/swarm.bin");
    write_data(&src, 16 << 20, |i| (i.wrapping_mul(2654435761) >> 13) as u8);
    torrent_of(&src, 64 * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seeder_eight_leechers() {
    let dir = tempfile::tempdir().unwrap();
    let meta = fixture(dir.path());
    let size = meta.info.total_length();
    let seeder_addr = free_addr();
    let leecher_addrs: Vec<SocketAddr> = (0..LEECHERS).map(|_| free_addr()).collect();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut seed_cfg = TorrentConfig::new(dir.path().join("src"), PeerId::generate([0; 12]), 1000);
    seed_cfg.listen = Some(seeder_addr);
    seed_cfg.recheck = true;
    seed_cfg.seed_time = None;
    seed_cfg.upload_slots = 4;
    let (etx, mut erx) = mpsc::channel(1024);
    tokio::spawn(async move { while erx.recv().await.is_some() {} });
    let seeder = tokio::spawn(torrent::run(meta.clone(), seed_cfg, etx, stop_rx.clone()));

    let mut leechers = Vec::new();
    for (i, addr) in leecher_addrs.iter().enumerate() {
        let mut cfg = TorrentConfig::new(
            dir.path().join(format!("l{i}")),
            PeerId::generate([i as u8 + 1; 12]),
            i as u64,
        );
        cfg.listen = Some(*addr);
        // Everyone knows the seeder and the leechers listed before it, so
        // each pair gets connected from one side.
        cfg.peers = std::iter::once(seeder_addr)
            .chain(leecher_addrs[..i].iter().copied())
            .collect();
        cfg.seed_time = Some(Duration::from_secs(3));
        cfg.threads = 1;
        let (etx, mut erx) = mpsc::channel(1024);
        tokio::spawn(async move { while erx.recv().await.is_some() {} });
        leechers.push(tokio::spawn(torrent::run(
            meta.clone(),
            cfg,
            etx,
            stop_rx.clone(),
        )));
    }

    let mut total_from_peers = 0u64;
    for (i, l) in leechers.into_iter().enumerate() {
        let s = tokio::time::timeout(Duration::from_secs(120), l)
            .await
            .expect("leecher in time")
            .unwrap()
            .unwrap();
        assert!(s.complete, "leecher {i}");
        let got = std::fs::read(dir.path().join(format!("l{i}/swarm.bin"))).unwrap();
        assert!(
            got == std::fs::read(dir.path().join("src/swarm.bin")).unwrap(),
            "leecher {i} content"
        );
        total_from_peers += s.stats.uploaded;
    }
    stop_tx.send(true).unwrap();
    let seed = seeder.await.unwrap().unwrap();
    let copies = seed.stats.uploaded as f64 / size as f64;
    eprintln!(
        "seeder uploaded {:.2} copies; leechers uploaded {:.2} copies to each other",
        copies,
        total_from_peers as f64 / size as f64
    );
    assert!(
        copies < 5.0,
        "seeder uploaded {copies:.2} copies of the content"
    );
    assert!(total_from_peers > size, "leechers traded among themselves");
}
