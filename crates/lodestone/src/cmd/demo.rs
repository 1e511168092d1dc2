//! `lodestone demo`: a self-contained swarm on this machine (127.0.0.1 only).
//!
//! It makes a payload and its torrent, starts a private DHT of Lodestone
//! nodes and two seeders that announce themselves there, then a leecher that
//! is told nothing but the torrent and one DHT node: it finds the seeders
//! through the DHT, downloads, and the bytes are compared.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lodestone_core::{Metainfo, PeerId};
use lodestone_dht::rng::Rng;
use lodestone_dht::{Config, NodeId};
use lodestone_engine::create::{create_torrent, CreateOptions, Progress};
use lodestone_engine::dht::Dht;
use lodestone_engine::magnet::FetchEvent;
use lodestone_engine::session;
use lodestone_engine::torrent::{self, TorrentConfig, TorrentEvent};
use tokio::sync::{mpsc, watch};

use crate::cli::DemoArgs;
use crate::{human, payload};

const DHT_NODES: usize = 6;
const SEEDERS: usize = 2;

pub fn run(a: &DemoArgs) -> anyhow::Result<ExitCode> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(swarm(&dir))
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

async fn swarm(dir: &Path) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let piece = 256 << 10;
    let total = 24 << 20;
    crate::outln!(
        "1. payload: {} in 5 files under {}",
        human::bytes(total),
        dir.display()
    );
    let src = dir.join("seed");
    payload::write_multi(&src, "demo", total, piece, "0").context("writing the payload")?;
    let opts = CreateOptions {
        piece_length: Some(piece),
        created_by: Some(format!("Lodestone {}", env!("CARGO_PKG_VERSION"))),
        ..CreateOptions::default()
    };
    let bytes = create_torrent(&src.join("demo"), &opts, &Progress::default())?;
    let meta = Arc::new(Metainfo::from_bytes(&bytes)?);
    let torrent_path = dir.join("demo.torrent");
    lodestone_engine::fsutil::write_atomic(&torrent_path, &bytes)?;
    let ih = meta.info_hashes.wire();
    crate::outln!("   torrent {} (info hash {ih})", torrent_path.display());

    // 2. A private DHT.
    let mut rng = Rng::from_u64(0xde30);
    let mut nodes: Vec<Dht> = Vec::new();
    for i in 0..DHT_NODES {
        let cfg = Config {
            bootstrap: nodes
                .first()
                .map(|n| vec![n.local_addr()])
                .unwrap_or_default(),
            ..Config::default()
        };
        let d = Dht::start(
            "127.0.0.1:0".parse()?,
            cfg,
            NodeId(rng.bytes20()),
            rng.bytes32(),
            &[],
        )
        .await?;
        if i > 0 {
            let mut boot = d.bootstrap(vec![nodes[0].local_addr()]).await;
            while boot.recv().await.is_some() {}
        }
        nodes.push(d);
    }
    let router = nodes[0].local_addr();
    crate::outln!("2. private DHT: {DHT_NODES} Lodestone nodes, router {router}");

    // 3. Seeders, each with its own DHT node, announcing their port.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut seeders = Vec::new();
    for s in 0..SEEDERS {
        let (listen, dht) = peer_node(router, &mut rng).await?;
        let mut cfg = TorrentConfig::new(
            src.clone(),
            PeerId::generate(rng.bytes16()[..12].try_into()?),
            rng.next_u64(),
        );
        cfg.listen = Some(listen);
        cfg.recheck = true;
        cfg.seed_time = None;
        cfg.dht = Some(dht);
        let (etx, mut erx) = mpsc::channel(256);
        tokio::spawn(async move { while erx.recv().await.is_some() {} });
        // Each peer of the swarm is a session of its own, as a separate
        // client would be.
        let start = torrent::Start::Torrent(meta.clone());
        seeders.push(tokio::spawn(session::run_one(
            start,
            cfg,
            etx,
            stop_rx.clone(),
        )));
        crate::outln!(
            "3. seeder {} listening on {listen}, announcing into the DHT",
            s + 1
        );
    }
    // Give the announces a moment to land.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 4. The leecher: a bare magnet (the info hash, nothing else) and one
    // DHT node; no .torrent, no peer address, no tracker.
    let out = dir.join("download");
    let (listen, dht) = peer_node(router, &mut rng).await?;
    let mut cfg = TorrentConfig::new(
        out.clone(),
        PeerId::generate(rng.bytes16()[..12].try_into()?),
        rng.next_u64(),
    );
    cfg.listen = Some(listen);
    cfg.dht = Some(dht);
    let magnet = format!("magnet:?xt=urn:btih:{}", meta.info_hashes.wire().to_hex());
    crate::outln!("4. leecher on {listen}: {magnet}");
    crate::outln!("   (knows the DHT router, no .torrent, no peers, no trackers)");
    let (etx, mut erx) = mpsc::channel(1024);
    let leech_started = Instant::now();
    let start = torrent::Start::Magnet(torrent::MagnetStart {
        info_hashes: meta.info_hashes,
        trackers: Vec::new(),
        max_metadata_size: 1 << 20,
        torrent_file: None,
    });
    let leecher = tokio::spawn(session::run_one(start, cfg, etx, stop_rx.clone()));
    let mut last_progress = Instant::now();
    let mut times = Milestones::default();
    let mut rows = Vec::new();
    let at = || leech_started.elapsed();
    while let Some(e) = erx.recv().await {
        match e {
            TorrentEvent::Metadata(FetchEvent::PeersFound { source, new }, t) => {
                times.first_peer_found.get_or_insert(t);
                crate::outln!(
                    "   {:>6.3} s  {new} peer address(es) from {}",
                    t.as_secs_f64(),
                    source.name()
                );
            }
            TorrentEvent::Metadata(FetchEvent::PeerConnected { addr, source, .. }, t) => {
                times.first_connect.get_or_insert(t);
                crate::outln!(
                    "   {:>6.3} s  connected to {addr} (found via {})",
                    t.as_secs_f64(),
                    source.name()
                );
            }
            TorrentEvent::MetadataReady { meta, after, .. } => {
                times.metadata = Some(after);
                crate::outln!(
                    "   {:>6.3} s  metadata: {} ({} pieces), verified against the info hash",
                    after.as_secs_f64(),
                    meta.info.name,
                    meta.info.num_pieces()
                );
            }
            TorrentEvent::PeerConnected {
                addr,
                client,
                source,
                ..
            } => {
                crate::outln!(
                    "   {:>6.3} s  peer {addr} ({client}, {}) on the same connection",
                    at().as_secs_f64(),
                    source.name()
                );
            }
            TorrentEvent::Progress(s) if last_progress.elapsed() >= Duration::from_millis(500) => {
                last_progress = Instant::now();
                crate::outln!(
                    "   {:>6.3} s  {}/{} pieces, {}/s from {} peers",
                    at().as_secs_f64(),
                    s.have_pieces,
                    s.num_pieces,
                    human::bytes(s.download_rate as u64),
                    s.peers
                );
            }
            TorrentEvent::Sources(r) => rows = r,
            TorrentEvent::Completed { after } => {
                times.complete = Some(after);
                crate::outln!("   {:>6.3} s  complete", after.as_secs_f64());
            }
            TorrentEvent::Paused { reason } => bail!("leecher paused: {reason}"),
            _ => {}
        }
    }
    let summary = leecher.await.context("leecher task")??;
    let _ = stop_tx.send(true);
    for s in seeders {
        let _ = s.await;
    }
    if !summary.complete {
        bail!("the leecher did not complete");
    }
    let same = same_tree(&src.join("demo"), &out.join("demo"))?;
    crate::outln!("5. where the peers came from (the leecher's sources table)");
    let rows: Vec<_> = rows.iter().map(crate::words::describe).collect();
    for line in crate::words::render(&rows) {
        crate::outln!("   {line}");
    }
    crate::outln!("6. summary");
    crate::outln!(
        "   {} downloaded, peers by source: {:?}",
        human::bytes(summary.stats.downloaded),
        summary.peers_by_source
    );
    let first_byte = summary.time_to_first_byte;
    crate::outln!("   where the time went, from the bare magnet:");
    let span = |from: Option<Duration>, to: Option<Duration>| match (from, to) {
        (Some(a), Some(b)) => format!("{:>8.1} ms", b.saturating_sub(a).as_secs_f64() * 1e3),
        _ => "       -   ".to_owned(),
    };
    let zero = Some(Duration::ZERO);
    crate::outln!(
        "     DHT lookup to the first peer  {}",
        span(zero, times.first_peer_found)
    );
    crate::outln!(
        "     connect and handshake         {}",
        span(times.first_peer_found, times.first_connect)
    );
    crate::outln!(
        "     metadata (BEP 9)              {}",
        span(times.first_connect, times.metadata)
    );
    crate::outln!(
        "     to the first byte of content  {}",
        span(times.metadata, first_byte)
    );
    crate::outln!(
        "     download                      {}",
        span(first_byte, times.complete)
    );
    crate::outln!(
        "     total                         {}",
        span(zero, times.complete)
    );
    crate::outln!(
        "   content identical to the seeders': {}",
        if same { "yes" } else { "NO" }
    );
    crate::outln!("   whole demo: {:.2} s", t0.elapsed().as_secs_f64());
    Ok(if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// When the leecher reached each step, since it started.
#[derive(Default)]
struct Milestones {
    first_peer_found: Option<Duration>,
    first_connect: Option<Duration>,
    metadata: Option<Duration>,
    complete: Option<Duration>,
}

/// A TCP port for a peer and a DHT node on the same port, joined to `router`.
async fn peer_node(router: SocketAddr, rng: &mut Rng) -> anyhow::Result<(SocketAddr, Dht)> {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let cfg = Config {
        bootstrap: vec![router],
        ..Config::default()
    };
    let dht = Dht::start(listen, cfg, NodeId(rng.bytes20()), rng.bytes32(), &[]).await?;
    let mut boot = dht.bootstrap(vec![router]).await;
    while boot.recv().await.is_some() {}
    Ok((listen, dht))
}

fn same_tree(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(a.join(&rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                stack.push(r);
            } else if std::fs::read(a.join(&r))? != std::fs::read(b.join(&r)).unwrap_or_default() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A temporary directory removed on drop (no extra dependency for one use).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let p = std::env::temp_dir().join(format!("lodestone-demo-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
