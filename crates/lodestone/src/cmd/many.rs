//! Many torrents in one session (one listener, one DHT node, one hashing
//! pool): `lodestone seed A.torrent B.torrent ... DIR` and
//! `lodestone get A B ... [--state-dir DIR]`, shown one line per event and
//! what they are doing together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lodestone_core::InfoHash;
use lodestone_engine::session::{Add, Session, SessionConfig, SessionEvent};
use lodestone_engine::state_dir::StateDir;
use lodestone_engine::torrent::{MagnetStart, TorrentConfig, TorrentEvent};
use serde_json::json;

use super::get::{
    load, open_state, peer_id, run_seed_value, runtime, seed_config, sources_public_dht,
    torrent_config,
};
use crate::cli::{GetArgs, SeedArgs};

pub fn seed_many(a: &SeedArgs, torrents: &[PathBuf], dir: &Path) -> anyhow::Result<ExitCode> {
    let seed = run_seed_value();
    let mut adds = Vec::new();
    let mut seen = BTreeSet::new();
    let http = super::get::http_client(a.sources.ca_file.as_deref())?;
    for (i, path) in torrents.iter().enumerate() {
        let meta = load(path).with_context(|| path.display().to_string())?;
        let mut cfg = seed_config(a, &meta, dir, seed.wrapping_add(i as u64), &http)?;
        // One identity for the whole process, as other clients have.
        cfg.peer_id = peer_id(seed);
        if cfg.seed_time == Some(Duration::MAX) {
            cfg.seed_time = None;
        }
        if !seen.insert(meta.info_hashes.wire()) {
            eprintln!("{}: the same torrent twice; seeded once", path.display());
            continue;
        }
        adds.push((Add::Torrent(Arc::new(meta)), cfg));
    }
    let public = sources_public_dht(&a.sources)?;
    let state = open_state(&a.sources)?;
    runtime()?.block_on(async move {
        let net = super::get::open_net(&a.sources, Some(a.listen), seed).await?;
        for (_, cfg) in adds.iter_mut() {
            cfg.listen = net.listen;
            cfg.transports = net.transports();
        }
        let run = Run::new(net.listen, state, None, a.json, seed, &net);
        let known = if a.sources.no_dht {
            Vec::new()
        } else {
            run.saved_dht_nodes()
        };
        let dht = net.dht(&a.sources, public, seed, &known).await?;
        run.drive(adds, dht).await
    })
}

/// `get` with several inputs, or with a state directory: every torrent
/// given, and every torrent the state directory holds, in one session.
pub fn get_many(a: &GetArgs) -> anyhow::Result<ExitCode> {
    let seed = run_seed_value();
    let public = sources_public_dht(&a.sources)?;
    let inputs = a
        .inputs
        .iter()
        .map(|i| super::info::load(i).with_context(|| i.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let state = open_state(&a.sources)?;
    let dht_file = state.as_ref().map(dht_file);
    runtime()?.block_on(async move {
        let known = dht_file
            .as_deref()
            .filter(|_| !a.sources.no_dht)
            .map(lodestone_engine::dht::load_nodes)
            .unwrap_or_default();
        let net = super::get::open_net(&a.sources, a.listen, seed).await?;
        let dht = net.dht(&a.sources, public, seed, &known).await?;
        let template = torrent_config(a, seed, dht.clone(), a.peers.clone(), &net)?;
        let mut adds = Vec::new();
        for (i, input) in inputs.into_iter().enumerate() {
            let mut cfg = template.clone();
            cfg.seed = seed.wrapping_add(i as u64);
            let add = match input {
                super::info::Input::Torrent(m) => Add::Torrent(Arc::new(*m)),
                super::info::Input::Magnet(m) => {
                    cfg.peers.extend(m.peers.iter().filter_map(|p| match p {
                        lodestone_core::magnet::PeerAddr::Ip(a) => Some(*a),
                        lodestone_core::magnet::PeerAddr::Host(..) => None,
                    }));
                    Add::Magnet(MagnetStart {
                        info_hashes: m.info_hashes,
                        trackers: m.trackers.clone(),
                        max_metadata_size: u32::try_from(a.max_metadata_size).unwrap_or(u32::MAX),
                        torrent_file: None,
                    })
                }
            };
            adds.push((add, cfg));
        }
        let restore = state.is_some().then(|| template.clone());
        let run = Run::new(net.listen, state, restore, a.json, seed, &net);
        run.drive(adds, dht).await
    })
}

/// Where a state directory keeps the DHT's routing table.
fn dht_file(state: &StateDir) -> PathBuf {
    state.path().join("dht.nodes")
}

/// How often the DHT's routing table is saved while the session runs.
const SAVE_DHT_EVERY: Duration = Duration::from_secs(300);

/// One session's run.
struct Run {
    listen: Option<std::net::SocketAddr>,
    state: Option<StateDir>,
    /// The state directory's copy of the DHT routing table.
    dht_file: Option<PathBuf>,
    /// Bring back the state directory's torrents, configured like this.
    restore: Option<TorrentConfig>,
    json: bool,
    seed: u64,
    /// The UDP socket the session accepts uTP on (and the DHT shares).
    utp: Option<lodestone_engine::utp::UtpSocket>,
    /// Accept TCP peers too.
    tcp: bool,
}

impl Run {
    fn new(
        listen: Option<std::net::SocketAddr>,
        state: Option<StateDir>,
        restore: Option<TorrentConfig>,
        json: bool,
        seed: u64,
        net: &super::get::Net,
    ) -> Self {
        Self {
            utp: net.utp.clone(),
            tcp: net.tcp,
            listen,
            dht_file: state.as_ref().map(dht_file),
            state,
            restore,
            json,
            seed,
        }
    }

    fn saved_dht_nodes(&self) -> Vec<(lodestone_dht::NodeId, std::net::SocketAddr)> {
        self.dht_file
            .as_deref()
            .map(lodestone_engine::dht::load_nodes)
            .unwrap_or_default()
    }

    /// Keep the DHT's routing table for the next start.
    async fn save_dht(&self, dht: &Option<lodestone_engine::dht::Dht>) {
        if let (Some(path), Some(dht)) = (&self.dht_file, dht) {
            if let Err(e) = lodestone_engine::dht::save_nodes(path, &dht.nodes().await) {
                eprintln!(
                    "warning: cannot save the DHT nodes in {}: {e}",
                    path.display()
                );
            }
        }
    }

    /// Add the torrents, then report until every running one ended (or
    /// Ctrl-C stopped them).
    async fn drive(
        mut self,
        adds: Vec<(Add, TorrentConfig)>,
        dht: Option<lodestone_engine::dht::Dht>,
    ) -> anyhow::Result<ExitCode> {
        let started = Instant::now();
        let json = self.json;
        let t = || started.elapsed().as_secs_f64();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (session, mut rx) = Session::start(SessionConfig {
            listen: self.listen,
            threads,
            seed: self.seed,
            state: self.state.take(),
            max_connections: lodestone_engine::session::DEFAULT_MAX_CONNECTIONS,
            utp: self.utp.clone(),
            tcp: self.tcp,
        })
        .await?;
        let mut save_dht =
            tokio::time::interval_at(tokio::time::Instant::now() + SAVE_DHT_EVERY, SAVE_DHT_EVERY);
        if let Some(template) = &self.restore {
            for (path, why) in session.restore(template)? {
                if json {
                    crate::outln!(
                        "{}",
                        json!({"event": "state_problem", "path": path, "problem": why})
                    );
                } else {
                    eprintln!("{}: {why}", path.display());
                }
            }
        }
        for (add, mut cfg) in adds {
            cfg.dht.clone_from(&dht);
            session.add(add, cfg)?;
        }
        let mut names: BTreeMap<InfoHash, String> = session
            .list()
            .into_iter()
            .map(|l| (l.info_hash, l.name.unwrap_or_else(|| l.info_hash.to_hex())))
            .collect();
        let total = session.running();
        let mut running = total;
        let mut complete: BTreeSet<InfoHash> = BTreeSet::new();
        // How each found its files: fresh, resumed, rechecked.
        let mut starts: BTreeMap<InfoHash, &'static str> = BTreeMap::new();
        let mut failed = 0usize;
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        let mut stopping = false;
        if !json {
            let on = self.listen.map(|l| format!(" on {l}")).unwrap_or_default();
            eprintln!("{total} torrents in one session{on}");
        }
        while running > 0 {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        SessionEvent::Torrent { info_hash, event, .. } => {
                            let name = names.get(&info_hash).cloned().unwrap_or_else(|| info_hash.to_hex());
                            match event {
                                TorrentEvent::MetadataReady { meta, .. } => {
                                    names.insert(info_hash, meta.info.name.clone());
                                    if json {
                                        crate::outln!("{}", json!({"event": "metadata", "infohash": info_hash.to_hex(), "name": meta.info.name, "t": t()}));
                                    } else {
                                        eprintln!("{}: metadata after {:.2} s", meta.info.name, t());
                                    }
                                }
                                TorrentEvent::Started { state, have, num_pieces, .. } => {
                                    starts.insert(info_hash, start_word(&state));
                                    if have < num_pieces {
                                        if json {
                                            crate::outln!("{}", json!({"event": "incomplete", "infohash": info_hash.to_hex(), "have_pieces": have, "num_pieces": num_pieces, "t": t()}));
                                        } else {
                                            eprintln!("{name}: {have}/{num_pieces} pieces on disk");
                                        }
                                    }
                                }
                                TorrentEvent::Completed { .. } if complete.insert(info_hash) => {
                                    if json {
                                        let how = starts.get(&info_hash).copied().unwrap_or("?");
                                        crate::outln!("{}", json!({"event": "seeding", "infohash": info_hash.to_hex(), "resume": how, "t": t()}));
                                    } else {
                                        eprintln!("{name}: complete after {:.2} s", t());
                                    }
                                    if complete.len() == total {
                                        if json {
                                            crate::outln!("{}", json!({"event": "all_seeding", "torrents": total, "t": t()}));
                                        } else {
                                            eprintln!("all {total} torrents complete after {:.2} s", t());
                                        }
                                    }
                                }
                                TorrentEvent::Paused { reason } => {
                                    if json {
                                        crate::outln!("{}", json!({"event": "paused", "infohash": info_hash.to_hex(), "reason": reason, "t": t()}));
                                    } else {
                                        eprintln!("{name}: paused: {reason}");
                                    }
                                }
                                _ => {}
                            }
                        }
                        SessionEvent::Warning { message, .. } => {
                            if json {
                                crate::outln!("{}", json!({"event": "warning", "message": message, "t": t()}));
                            } else {
                                eprintln!("warning: {message}");
                            }
                        }
                        SessionEvent::Removed { .. } => {}
                        SessionEvent::Ended { info_hash, result, .. } => {
                            running -= 1;
                            if let Err(e) = result {
                                failed += 1;
                                let name = names.get(&info_hash).cloned().unwrap_or_else(|| info_hash.to_hex());
                                if json {
                                    crate::outln!("{}", json!({"event": "error", "infohash": info_hash.to_hex(), "error": e.to_string(), "t": t()}));
                                } else {
                                    eprintln!("{name}: {e}");
                                }
                            }
                        }
                    }
                }
                _ = save_dht.tick() => self.save_dht(&dht).await,
                _ = &mut ctrl_c, if !stopping => {
                    stopping = true;
                    if !json {
                        eprintln!("stopping: saving resume data");
                    }
                    session.stop_all();
                }
            }
        }
        self.save_dht(&dht).await;
        if json {
            crate::outln!(
                "{}",
                json!({"event": "summary", "torrents": total, "seeding": complete.len(), "complete": complete.len(), "failed": failed, "t": t()})
            );
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

fn start_word(s: &lodestone_engine::torrent::StartState) -> &'static str {
    use lodestone_engine::torrent::StartState;
    match s {
        StartState::Fresh => "fresh",
        StartState::Resumed { .. } => "resumed",
        StartState::Rechecked { .. } => "rechecked",
    }
}
