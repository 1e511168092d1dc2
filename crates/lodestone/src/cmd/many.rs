//! `lodestone seed A.torrent B.torrent ... DIR`: many torrents in one
//! session (one listener, one DHT node, one hashing pool), shown one line
//! per torrent and what they are doing together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lodestone_core::InfoHash;
use lodestone_engine::session::{Add, Session, SessionConfig, SessionEvent};
use lodestone_engine::torrent::TorrentEvent;
use serde_json::json;

use super::get::{
    load, local_only, open_state, peer_id, public_dht, run_seed_value, runtime, seed_config,
    start_dht,
};
use crate::cli::SeedArgs;

pub fn seed_many(a: &SeedArgs, torrents: &[PathBuf], dir: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let seed = run_seed_value();
    let mut adds = Vec::new();
    let mut names = BTreeMap::new();
    // The session keeps the torrents and their resume data in it.
    let state = open_state(&a.sources)?;
    for (i, path) in torrents.iter().enumerate() {
        let meta = load(path).with_context(|| path.display().to_string())?;
        let mut cfg = seed_config(a, &meta, dir, seed.wrapping_add(i as u64))?;
        // One identity for the whole process, as other clients have.
        cfg.peer_id = peer_id(seed);
        if cfg.seed_time == Some(Duration::MAX) {
            cfg.seed_time = None;
        }
        let ih = meta.info_hashes.wire();
        if names.insert(ih, meta.info.name.clone()).is_some() {
            eprintln!("{}: the same torrent twice; seeded once", path.display());
            continue;
        }
        adds.push((Arc::new(meta), cfg));
    }
    let public = public_dht(
        a.sources.dht,
        a.sources.no_dht,
        &a.sources.bootstrap,
        local_only(),
    )?;
    let json = a.json;
    runtime()?.block_on(async move {
        let dht = start_dht(&a.sources.bootstrap, public, Some(a.listen), seed).await?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (session, mut rx) = Session::start(SessionConfig {
            listen: Some(a.listen),
            threads,
            seed,
            state,
        })
        .await?;
        let total = adds.len();
        for (meta, mut cfg) in adds {
            cfg.dht = dht.clone();
            session.add(Add::Torrent(meta), cfg)?;
        }
        let t = || started.elapsed().as_secs_f64();
        let mut seeding: BTreeSet<InfoHash> = BTreeSet::new();
        // How each found its files: fresh, resumed, rechecked.
        let mut starts: BTreeMap<InfoHash, String> = BTreeMap::new();
        let mut failed = 0usize;
        let mut running = total;
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        let mut stopping = false;
        if !json {
            eprintln!("seeding {total} torrents on {}", a.listen);
        }
        while running > 0 {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        SessionEvent::Torrent { info_hash, event, .. } => {
                            if let TorrentEvent::Started { state, .. } = &event {
                                starts.insert(info_hash, start_word(state).to_owned());
                            }
                            match event {
                            TorrentEvent::Completed { .. } if seeding.insert(info_hash) => {
                                if json {
                                    let how = starts.get(&info_hash).map_or("?", String::as_str);
                                    crate::outln!("{}", json!({"event": "seeding", "infohash": info_hash.to_hex(), "resume": how, "t": t()}));
                                }
                                if seeding.len() == total {
                                    if json {
                                        crate::outln!("{}", json!({"event": "all_seeding", "torrents": total, "t": t()}));
                                    } else {
                                        eprintln!("all {total} torrents seeding after {:.2} s", t());
                                    }
                                }
                            }
                            TorrentEvent::Paused { reason } => {
                                let name = names.get(&info_hash).map_or("?", String::as_str);
                                if json {
                                    crate::outln!("{}", json!({"event": "paused", "infohash": info_hash.to_hex(), "reason": reason, "t": t()}));
                                } else {
                                    eprintln!("{name}: paused: {reason}");
                                }
                            }
                            TorrentEvent::Started { have, num_pieces, .. } if have < num_pieces => {
                                let name = names.get(&info_hash).map_or("?", String::as_str);
                                if json {
                                    crate::outln!("{}", json!({"event": "incomplete", "infohash": info_hash.to_hex(), "have_pieces": have, "num_pieces": num_pieces, "t": t()}));
                                } else {
                                    eprintln!("{name}: {have}/{num_pieces} pieces on disk: seeding what is there");
                                }
                            }
                            _ => {}
                        }
                        }
                        SessionEvent::Warning { id, message } => {
                            if json {
                                crate::outln!("{}", json!({"event": "warning", "torrent": id.0, "message": message, "t": t()}));
                            } else {
                                eprintln!("warning: {message}");
                            }
                        }
                        SessionEvent::Removed { .. } => {}
                        SessionEvent::Ended { info_hash, result, .. } => {
                            running -= 1;
                            if let Err(e) = result {
                                failed += 1;
                                let name = names.get(&info_hash).map_or("?", String::as_str);
                                if json {
                                    crate::outln!("{}", json!({"event": "error", "infohash": info_hash.to_hex(), "error": e, "t": t()}));
                                } else {
                                    eprintln!("{name}: {e}");
                                }
                            }
                        }
                    }
                }
                _ = &mut ctrl_c, if !stopping => {
                    stopping = true;
                    if !json {
                        eprintln!("stopping: saving resume data");
                    }
                    session.stop_all();
                }
            }
        }
        if json {
            crate::outln!(
                "{}",
                json!({"event": "summary", "torrents": total, "seeding": seeding.len(), "failed": failed, "t": t()})
            );
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn start_word(s: &lodestone_engine::torrent::StartState) -> &'static str {
    use lodestone_engine::torrent::StartState;
    match s {
        StartState::Fresh => "fresh",
        StartState::Resumed { .. } => "resumed",
        StartState::Rechecked { .. } => "rechecked",
    }
}
