//! `lodestone get` and `lodestone seed`: run the engine on one torrent and
//! show what it does.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use lodestone_core::{Metainfo, PeerId};
use lodestone_engine::torrent::{self, StartState, Stats, Summary, TorrentConfig, TorrentEvent};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::cli::{GetArgs, SeedArgs};
use crate::human;

fn load(path: &Path) -> anyhow::Result<Metainfo> {
    match super::info::load(&path.to_string_lossy())? {
        super::info::Input::Torrent(m) => Ok(*m),
        super::info::Input::Magnet(_) => {
            bail!("magnet links need the DHT and metadata exchange, which are not built yet; give a .torrent file")
        }
    }
}

/// Fresh randomness per run for the peer id and the engine's seeded choices.
fn run_seed_value() -> u64 {
    RandomState::new().hash_one(SystemTime::now())
}

fn peer_id(seed: u64) -> PeerId {
    let mut r = [0u8; 12];
    let mut x = seed | 1;
    for b in &mut r {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    PeerId::generate(r)
}

pub fn run_get(a: &GetArgs) -> anyhow::Result<ExitCode> {
    let meta = load(&a.torrent)?;
    for &i in &a.only {
        if i >= meta.info.files.len() {
            bail!(
                "--only {i}: the torrent has {} files (0..{})",
                meta.info.files.len(),
                meta.info.files.len().saturating_sub(1)
            );
        }
    }
    let seed = run_seed_value();
    let mut cfg = TorrentConfig::new(a.output.clone(), peer_id(seed), seed);
    cfg.listen = a.listen;
    cfg.peers = a.peers.clone();
    cfg.seed_time = Some(Duration::from_secs(a.seed_time));
    cfg.recheck = a.recheck;
    cfg.only_files = (!a.only.is_empty()).then(|| a.only.clone());
    cfg.sequential = a.sequential;
    cfg.download_rate_limit = a.download_limit;
    drive(meta, cfg, a.json)
}

pub fn run_seed(a: &SeedArgs) -> anyhow::Result<ExitCode> {
    let meta = load(&a.torrent)?;
    let dir = content_dir(&a.path, &meta.info.name)?;
    let seed = run_seed_value();
    let mut cfg = TorrentConfig::new(dir, peer_id(seed), seed);
    cfg.listen = Some(a.listen);
    cfg.peers = a.peers.clone();
    cfg.seed_time = a.seed_time.map(Duration::from_secs).or(Some(Duration::MAX));
    // Seeding what is there: never fetch; the recheck tells what we have.
    cfg.recheck = true;
    drive(meta, cfg, a.json)
}

/// The folder the torrent's content lives in, given it or the content.
fn content_dir(path: &Path, name: &str) -> anyhow::Result<PathBuf> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    if path.file_name().is_some_and(|n| n == name) {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return Ok(parent.to_owned());
    }
    if path.is_dir() {
        return Ok(path.to_owned());
    }
    bail!(
        "{} is neither the content ({name}) nor a folder holding it",
        path.display()
    )
}

fn drive(meta: Metainfo, cfg: TorrentConfig, json: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let meta = Arc::new(meta);
    let seeding_forever = cfg.seed_time == Some(Duration::MAX);
    let mut cfg = cfg;
    if seeding_forever {
        cfg.seed_time = None;
    }
    rt.block_on(async move {
        let (events_tx, mut events_rx) = mpsc::channel(256);
        let (stop_tx, stop_rx) = watch::channel(false);
        let engine = tokio::spawn(torrent::run(meta.clone(), cfg, events_tx, stop_rx));
        let mut ui = Ui::new(&meta, json);
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        let mut stopping = false;
        loop {
            tokio::select! {
                ev = events_rx.recv() => match ev {
                    Some(ev) => ui.event(&ev),
                    None => break,
                },
                _ = &mut ctrl_c, if !stopping => {
                    stopping = true;
                    ui.note("stopping: saving resume data");
                    let _ = stop_tx.send(true);
                }
            }
        }
        let summary = engine.await.context("engine task")??;
        ui.finish(&summary);
        Ok(if summary.complete && summary.paused.is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// Progress for people (a bar on a terminal, lines otherwise) or NDJSON.
struct Ui {
    json: bool,
    bar: Option<indicatif::ProgressBar>,
    info_hash: String,
    total: u64,
    started: Instant,
    /// Everything was on disk at the start: we are only seeding.
    seeding_only: bool,
}

impl Ui {
    fn new(meta: &Metainfo, json: bool) -> Self {
        let total = meta.info.content_length();
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Self {
            json,
            bar,
            info_hash: meta.info_hashes.wire().to_hex(),
            total,
            started: Instant::now(),
            seeding_only: false,
        }
    }

    fn note(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None if !self.json => eprintln!("{text}"),
            None => {}
        }
    }

    fn line(&self, v: serde_json::Value) {
        crate::outln!("{v}");
    }

    fn event(&mut self, ev: &TorrentEvent) {
        let t = self.started.elapsed().as_secs_f64();
        if self.json {
            let v = match ev {
                TorrentEvent::Started {
                    state,
                    have,
                    num_pieces,
                } => json!({
                    "event": "started", "t": t, "have_pieces": have, "num_pieces": num_pieces,
                    "resume": match state { StartState::Fresh => "fresh".to_owned(), StartState::Resumed => "resumed".to_owned(), StartState::Rechecked { reason } => format!("rechecked: {reason}") },
                }),
                TorrentEvent::PeerConnected {
                    addr,
                    client,
                    source,
                } => {
                    json!({"event": "peer_connected", "t": t, "addr": addr.to_string(), "client": client, "source": source.name()})
                }
                TorrentEvent::PeerDisconnected { addr, reason } => {
                    json!({"event": "peer_disconnected", "t": t, "addr": addr.to_string(), "reason": reason})
                }
                TorrentEvent::HashFailed { piece, peers } => {
                    json!({"event": "hash_failed", "t": t, "piece": piece, "peers": peers.iter().map(|p| p.to_string()).collect::<Vec<_>>()})
                }
                TorrentEvent::PeerBanned { addr, reason } => {
                    json!({"event": "peer_banned", "t": t, "addr": addr.to_string(), "reason": reason})
                }
                TorrentEvent::Progress(s) => progress_json(t, s),
                TorrentEvent::Completed { after } => {
                    json!({"event": "completed", "t": t, "after_s": after.as_secs_f64()})
                }
                TorrentEvent::Paused { reason } => {
                    json!({"event": "paused", "t": t, "reason": reason})
                }
            };
            self.line(v);
            return;
        }
        match ev {
            TorrentEvent::Started {
                state,
                have,
                num_pieces,
            } => {
                let how = match state {
                    StartState::Fresh => "new download".to_owned(),
                    StartState::Resumed => "resumed".to_owned(),
                    StartState::Rechecked { reason } => format!("checked files on disk ({reason})"),
                };
                self.note(&format!("{how}: {have}/{num_pieces} pieces present"));
                self.seeding_only = have == num_pieces;
            }
            TorrentEvent::PeerConnected {
                addr,
                client,
                source,
            } => self.note(&format!(
                "peer {addr} connected ({client}, {})",
                source.name()
            )),
            TorrentEvent::PeerDisconnected { addr, reason } => {
                self.note(&format!("peer {addr} disconnected: {reason}"))
            }
            TorrentEvent::HashFailed { piece, peers } => self.note(&format!(
                "piece {piece} failed its hash check (from {peers:?}); fetching it again"
            )),
            TorrentEvent::PeerBanned { addr, reason } => {
                self.note(&format!("banned {addr}: {reason}"))
            }
            TorrentEvent::Progress(s) => {
                if let Some(b) = &self.bar {
                    b.set_length(s.wanted_bytes.max(1));
                    b.set_position(s.wanted_bytes - s.bytes_left);
                    b.set_message(format!(
                        "{} peers ({} seeds) ↑{}/s",
                        s.peers,
                        s.seeds,
                        human::bytes(s.upload_rate as u64)
                    ));
                }
            }
            TorrentEvent::Completed { .. } if self.seeding_only => {
                self.note("seeding: every piece is verified")
            }
            TorrentEvent::Completed { after } => self.note(&format!(
                "download complete in {:.2} s",
                after.as_secs_f64()
            )),
            TorrentEvent::Paused { reason } => self.note(&format!(
                "paused: {reason}. What was verified is kept; run again to resume."
            )),
        }
    }

    fn finish(&mut self, s: &Summary) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.json {
            self.line(json!({
                "event": "summary",
                "infohash": self.info_hash,
                "bytes": self.total,
                "complete": s.complete,
                "time_to_complete_s": s.time_to_complete.map(|d| d.as_secs_f64()),
                "downloaded_bytes": s.stats.downloaded,
                "uploaded_bytes": s.stats.uploaded,
                "wasted_bytes": s.stats.wasted,
                "peers_by_source": s.peers_by_source,
                "paused": s.paused,
            }));
        } else {
            let done = if s.complete { "complete" } else { "incomplete" };
            crate::outln!(
                "{done}: {} downloaded, {} uploaded{}",
                human::bytes(s.stats.downloaded),
                human::bytes(s.stats.uploaded),
                s.time_to_complete
                    .map(|d| format!(", finished after {:.2} s", d.as_secs_f64()))
                    .unwrap_or_default()
            );
        }
    }
}

fn progress_json(t: f64, s: &Stats) -> serde_json::Value {
    json!({
        "event": "progress", "t": t,
        "have_pieces": s.have_pieces, "num_pieces": s.num_pieces,
        "bytes_left": s.bytes_left, "downloaded_bytes": s.downloaded, "uploaded_bytes": s.uploaded,
        "download_rate": s.download_rate, "upload_rate": s.upload_rate,
        "peers": s.peers, "seeds": s.seeds,
    })
}
