//! One session per process, holding many torrents: one peer listener that
//! routes each incoming handshake to its torrent by info hash, one hashing
//! and disk pool shared by all, the DHT node the caller gives every
//! torrent, and (optionally) one state directory where the torrent list and
//! each torrent's resume data survive a restart. Each running torrent is its
//! own driver task around its sans-IO core; what they do comes back on one
//! event stream, tagged with the torrent.
//!
//! A torrent stays in the session while it is paused or after its run
//! ended; only [`Session::remove`] takes it out.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use lodestone_core::{InfoHash, InfoHashes, Magnet, Metainfo};
use lodestone_torrent::FilePriority;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::bandwidth::RateGauge;
use crate::peer_io::{self, PeerInput};
use crate::pool::Pool;
use crate::state_dir::{StateDir, StateDirError, TorrentEntry, TorrentSource};
use crate::torrent::{
    self, AbortOnDrop, MagnetStart, Shared, Summary, TorrentConfig, TorrentEvent,
};

/// How long an incoming peer waits for a busy torrent to take it.
const ROUTE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Progress events a reader may fall behind by before the oldest are
/// dropped (state changes are never dropped).
const PROGRESS_QUEUE: usize = 1024;

#[derive(Debug)]
pub struct SessionConfig {
    /// Where every torrent's peers reach us.
    pub listen: Option<SocketAddr>,
    /// Hashing and disk threads, shared by all torrents.
    pub threads: usize,
    /// Seeds the listener's MSE keys.
    pub seed: u64,
    /// Keep the torrent list and resume data here (see [`Session::restore`]).
    pub state: Option<StateDir>,
    /// Peer connections open at once across all torrents (each torrent
    /// has its own `max_peers` too).
    pub max_connections: usize,
    /// Accept uTP connections on this socket too (for every torrent).
    pub utp: Option<crate::utp::UtpSocket>,
    /// Accept TCP connections on `listen` (`--no-tcp`: uTP only).
    pub tcp: bool,
}

/// qBittorrent's default global connection limit (Transmission's global
/// peer limit is 200).
pub const DEFAULT_MAX_CONNECTIONS: usize = 500;

/// A torrent's handle in the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TorrentId(pub u64);

/// What to add: a torrent, or a magnet whose metadata comes first.
pub use crate::torrent::Start as Add;

/// How to add.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// Keep it in the session without starting it.
    pub paused: bool,
    /// Who added it and how ("cli", "api"...), kept in the state directory.
    pub source: String,
}

#[derive(Debug)]
pub enum SessionEvent {
    Torrent {
        id: TorrentId,
        info_hash: InfoHash,
        event: TorrentEvent,
    },
    /// The torrent's run ended (done, paused, stopped, or failed).
    Ended {
        id: TorrentId,
        info_hash: InfoHash,
        result: Result<Summary, torrent::EngineError>,
    },
    /// Taken out of the session (and its state directory).
    Removed { id: TorrentId, info_hash: InfoHash },
    /// Something the session could not do for a torrent, that the torrent
    /// goes on without (its metadata could not be kept in the state
    /// directory, say).
    Warning { id: TorrentId, message: String },
}

/// The session's events: state changes never lost, progress coalesced
/// (dropped while the reader lags; a snapshot has the latest).
pub struct SessionEvents {
    state: mpsc::UnboundedReceiver<SessionEvent>,
    progress: mpsc::Receiver<SessionEvent>,
}

impl SessionEvents {
    /// The next event; `None` once the session is gone. State changes
    /// come first: a progress event may come after a state change that
    /// followed it.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        tokio::select! {
            biased;
            Some(e) = self.state.recv() => Some(e),
            Some(e) = self.progress.recv() => Some(e),
            else => None,
        }
    }

    /// An event already waiting, if any (state changes first).
    pub fn try_recv(&mut self) -> Option<SessionEvent> {
        self.state
            .try_recv()
            .or_else(|_| self.progress.try_recv())
            .ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("no torrent {0:?} in the session")]
    Unknown(TorrentId),
    #[error("torrent {0:?} is not running")]
    NotRunning(TorrentId),
    #[error("the session has no state directory")]
    NoStateDir,
    #[error(transparent)]
    State(#[from] StateDirError),
    #[error("{given} file priorities for a torrent of {files} files")]
    Priorities { files: usize, given: usize },
    #[error("the torrent's metadata is not here yet: its files are unknown")]
    NoMetadata,
    #[error("cannot {op} {path}: {error}")]
    Files {
        op: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub id: TorrentId,
    /// False: the torrent was there already; the peers given were passed
    /// to it, as other clients merge a duplicate add.
    pub new: bool,
}

/// Where a torrent is in its life, as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Checking, fetching metadata, downloading or seeding (its events
    /// and snapshot say which).
    Running,
    /// Paused: no connections, no announces; kept until resumed.
    Paused,
    /// Its run ended by itself: `why` is one of the `STOP_*` reasons of
    /// [`torrent`] (complete, seed goal met, paused by a disk error).
    Ended { complete: bool, why: String },
    /// Its run failed (the files could not be opened, say).
    Failed(String),
}

/// One torrent in [`Session::list`].
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: TorrentId,
    pub info_hash: InfoHash,
    /// The torrent's name (a magnet's `dn` until its metadata arrives).
    pub name: Option<String>,
    /// False while a magnet's metadata is missing.
    pub has_metadata: bool,
    pub download_dir: PathBuf,
    pub state: RunState,
    /// Seconds since the Unix epoch.
    pub added_at: i64,
}

/// Where a running torrent's peers go.
struct Route {
    generation: u64,
    input: mpsc::Sender<PeerInput>,
}

type Routes = Arc<Mutex<HashMap<InfoHash, Route>>>;

/// What a torrent is started from; a magnet becomes a torrent once its
/// metadata arrives, so that the next start does not fetch it again.
#[derive(Debug, Clone)]
enum What {
    Torrent(Arc<Metainfo>),
    Magnet {
        info_hashes: InfoHashes,
        name: Option<String>,
        trackers: Vec<String>,
        max_metadata_size: u32,
    },
}

/// Rate limits (down, up), bytes per second; `None`: no limit.
type Limits = (Option<u64>, Option<u64>);

/// A run of a torrent: from a start (or resume) to its end.
struct Run {
    generation: u64,
    stop: watch::Sender<bool>,
    /// Turns true once the run's task has ended.
    ended: watch::Receiver<bool>,
    /// Its recent rates, as its driver last said them.
    rates: Arc<RateGauge>,
    /// Its share of the session's global limits (down, up), as last given.
    share: Limits,
}

struct Managed {
    info_hash: InfoHash,
    what: What,
    /// The next run's configuration (its rate limits are the user's own
    /// for this torrent; the global limits' share is in its `Run`).
    cfg: TorrentConfig,
    entry: TorrentEntry,
    run: Option<Run>,
    state: RunState,
}

#[derive(Default)]
struct Torrents {
    next_id: u64,
    next_generation: u64,
    /// Boxed: a B-tree node holds room for eleven, mostly empty.
    by_id: BTreeMap<TorrentId, Box<Managed>>,
    by_hash: HashMap<InfoHash, TorrentId>,
}

/// What the session's tasks share with it.
#[derive(Clone)]
struct Core {
    listen: Option<SocketAddr>,
    torrents: Arc<Mutex<Torrents>>,
    routes: Routes,
    state: Option<Arc<Mutex<StateDir>>>,
    pool: Arc<Pool>,
    connections: torrent::ConnectionCap,
    /// The session's global rate limits (down, up), bytes per second.
    global_limits: Arc<Mutex<Limits>>,
    /// One Local Peer Discovery service for every torrent that uses it,
    /// started with the first (it announces our listening port).
    lpd: Arc<Mutex<Option<crate::lpd::Service>>>,
    /// Torrents checking their files at once: one per hashing thread (each
    /// check hashes on every core already, and most starts only read a
    /// resume file).
    checks: Arc<tokio::sync::Semaphore>,
    state_tx: mpsc::UnboundedSender<SessionEvent>,
    progress_tx: mpsc::Sender<SessionEvent>,
}

pub struct Session {
    core: Core,
    _listener: Option<tokio::task::JoinHandle<()>>,
    /// Routes incoming peers to their torrents; with the uTP listener.
    _router: Option<(AbortOnDrop, Option<AbortOnDrop>)>,
    /// Shares the global rate limits out, once a second.
    _sharer: AbortOnDrop,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Session {
    pub async fn start(cfg: SessionConfig) -> Result<(Self, SessionEvents), SessionError> {
        let routes: Routes = Arc::default();
        let (listener, router) = match cfg.listen {
            None => (None, None),
            Some(addr) => {
                let l = match cfg.tcp {
                    true => Some(
                        TcpListener::bind(addr)
                            .await
                            .map_err(|error| SessionError::Listen { addr, error })?,
                    ),
                    false => None,
                };
                let (tx, rx) = mpsc::channel(64);
                let known = routes.clone();
                let hashes: peer_io::InfoHashes =
                    Arc::new(move || lock(&known).keys().copied().collect());
                let utp = cfg.utp.as_ref().map(|u| {
                    AbortOnDrop(peer_io::listen_utp(u, tx.clone(), hashes.clone(), cfg.seed))
                });
                let listener = l.map(|l| peer_io::listen(l, tx, hashes, cfg.seed));
                let router = AbortOnDrop::spawn(route(rx, routes.clone()));
                (listener, Some((router, utp)))
            }
        };
        let (state_tx, state) = mpsc::unbounded_channel();
        let (progress_tx, progress) = mpsc::channel(PROGRESS_QUEUE);
        let core = Core {
            listen: cfg.listen,
            torrents: Arc::default(),
            routes,
            state: cfg.state.map(|s| Arc::new(Mutex::new(s))),
            pool: Arc::new(Pool::new("hash", cfg.threads)),
            connections: torrent::ConnectionCap::new(cfg.max_connections),
            global_limits: Arc::default(),
            lpd: Arc::default(),
            checks: Arc::new(tokio::sync::Semaphore::new(cfg.threads.max(1))),
            state_tx,
            progress_tx,
        };
        let sharer = AbortOnDrop::spawn(share_bandwidth(core.clone()));
        let session = Self {
            core,
            _listener: listener,
            _router: router,
            _sharer: sharer,
        };
        Ok((session, SessionEvents { state, progress }))
    }

    /// Add a torrent; it starts at once. `cfg.listen` is replaced by the
    /// session's (the address peers reach it on). With a state directory,
    /// the torrent is saved there first (and its resume data kept there).
    pub fn add(&self, what: Add, cfg: TorrentConfig) -> Result<Added, SessionError> {
        self.add_with(what, cfg, AddOptions::default())
    }

    pub fn add_with(
        &self,
        what: Add,
        mut cfg: TorrentConfig,
        options: AddOptions,
    ) -> Result<Added, SessionError> {
        let info_hash = what.info_hash();
        {
            let t = lock(&self.core.torrents);
            if let Some(&id) = t.by_hash.get(&info_hash) {
                if !cfg.peers.is_empty() {
                    if let Some(r) = lock(&self.core.routes).get(&info_hash) {
                        let _ = r.input.try_send(PeerInput::Discovered {
                            addrs: cfg.peers,
                            source: crate::peer_io::PeerSource::Manual,
                        });
                    }
                }
                return Ok(Added { id, new: false });
            }
        }
        let (what, magnet) = match what {
            Add::Torrent(meta) => (What::Torrent(meta), None),
            Add::Magnet(m) => {
                let w = What::Magnet {
                    info_hashes: m.info_hashes,
                    name: None,
                    trackers: m.trackers.clone(),
                    max_metadata_size: m.max_metadata_size,
                };
                (w, Some(m))
            }
        };
        let mut entry = TorrentEntry::new(cfg.output_dir.clone(), now_secs());
        entry.paused = options.paused;
        entry.source = options.source;
        entry.download_limit = cfg.download_rate_limit;
        entry.upload_limit = cfg.upload_rate_limit;
        entry.max_peers = u32::try_from(cfg.max_peers).ok();
        entry.file_priorities = cfg
            .file_priorities
            .iter()
            .map(|&p| priority_code(p))
            .collect();
        if let Some(state) = &self.core.state {
            let mut sd = lock(state);
            match &what {
                What::Torrent(meta) => {
                    sd.save_metainfo(info_hash, &crate::state_dir::torrent_file(meta))?
                }
                What::Magnet {
                    info_hashes,
                    trackers,
                    ..
                } => {
                    let mut m = Magnet::from_info_hashes(*info_hashes);
                    m.trackers = trackers.clone();
                    sd.save_magnet(info_hash, &m.to_string())?
                }
            }
            sd.save_entry(info_hash, &entry)?;
            cfg.resume_file
                .get_or_insert_with(|| sd.resume_path(info_hash));
        }
        Ok(self.insert(info_hash, what, magnet, cfg, entry))
    }

    /// Put a torrent in the table and start it unless its entry says paused.
    fn insert(
        &self,
        info_hash: InfoHash,
        what: What,
        magnet: Option<MagnetStart>,
        cfg: TorrentConfig,
        entry: TorrentEntry,
    ) -> Added {
        let mut t = lock(&self.core.torrents);
        // Ids start at 1, as Transmission's do (its clients take 0 for none).
        t.next_id += 1;
        let id = TorrentId(t.next_id);
        t.by_hash.insert(info_hash, id);
        let paused = entry.paused;
        t.by_id.insert(
            id,
            Box::new(Managed {
                info_hash,
                what,
                cfg,
                entry,
                run: None,
                state: RunState::Paused,
            }),
        );
        if !paused {
            self.core.launch(&mut t, id, magnet, false);
        }
        Added { id, new: true }
    }

    /// Bring back every torrent of the state directory, each in the state
    /// it was saved in (paused ones stay paused), with `template` for what
    /// the state directory does not keep (peer id, DHT, trackers...).
    /// Returns what could not be loaded, with the reason; the rest loads.
    pub fn restore(
        &self,
        template: &TorrentConfig,
    ) -> Result<Vec<(PathBuf, String)>, SessionError> {
        let state = self.core.state.as_ref().ok_or(SessionError::NoStateDir)?;
        let report = lock(state).load_all();
        for (i, loaded) in report.torrents.into_iter().enumerate() {
            if lock(&self.core.torrents)
                .by_hash
                .contains_key(&loaded.info_hash)
            {
                continue;
            }
            let mut cfg = template.clone();
            cfg.seed = template.seed.wrapping_add(i as u64);
            cfg.output_dir = loaded.entry.download_dir.clone();
            cfg.download_rate_limit = loaded.entry.download_limit;
            cfg.upload_rate_limit = loaded.entry.upload_limit;
            if let Some(n) = loaded.entry.max_peers {
                cfg.max_peers = n as usize;
            }
            cfg.file_priorities = loaded
                .entry
                .file_priorities
                .iter()
                .map(|&c| priority_of(c))
                .collect();
            cfg.resume_file = Some(lock(state).resume_path(loaded.info_hash));
            let what = match loaded.source {
                TorrentSource::Metainfo(m) => What::Torrent(Arc::new(*m)),
                TorrentSource::Magnet(m) => What::Magnet {
                    info_hashes: m.info_hashes,
                    name: m.name.clone(),
                    trackers: m.trackers.clone(),
                    max_metadata_size: crate::magnet::DEFAULT_MAX_METADATA,
                },
            };
            self.insert(loaded.info_hash, what, None, cfg, loaded.entry);
        }
        Ok(report.problems)
    }

    /// Stop a torrent and keep it, paused (also across a restart).
    pub async fn pause(&self, id: TorrentId) -> Result<(), SessionError> {
        let ended = {
            let mut t = lock(&self.core.torrents);
            let m = t.by_id.get_mut(&id).ok_or(SessionError::Unknown(id))?;
            m.entry.paused = true;
            m.state = RunState::Paused;
            self.core.save_entry(m)?;
            m.run.as_ref().map(|r| {
                let _ = r.stop.send(true);
                r.ended.clone()
            })
        };
        wait_ended(ended).await;
        Ok(())
    }

    /// Start a paused (or ended) torrent again; a running one is left alone.
    pub async fn resume(&self, id: TorrentId) -> Result<(), SessionError> {
        self.restart(id, false).await
    }

    /// Hash everything on disk again (resume data ignored), then go on.
    pub async fn recheck(&self, id: TorrentId) -> Result<(), SessionError> {
        self.restart(id, true).await
    }

    async fn restart(&self, id: TorrentId, recheck: bool) -> Result<(), SessionError> {
        let ended = {
            let mut t = lock(&self.core.torrents);
            let m = t.by_id.get_mut(&id).ok_or(SessionError::Unknown(id))?;
            match &m.run {
                Some(r) if !recheck && !*r.stop.borrow() => return Ok(()),
                Some(r) => {
                    let _ = r.stop.send(true);
                    Some(r.ended.clone())
                }
                None => None,
            }
        };
        // The old run saves its resume data on the way out; the new one
        // reads it.
        wait_ended(ended).await;
        let mut t = lock(&self.core.torrents);
        let m = t.by_id.get_mut(&id).ok_or(SessionError::Unknown(id))?;
        if m.run.is_some() {
            return Ok(()); // another caller started it meanwhile
        }
        m.entry.paused = false;
        self.core.save_entry(m)?;
        self.core.launch(&mut t, id, None, recheck);
        Ok(())
    }

    /// Take a torrent out of the session and its state directory; with
    /// `delete_data`, delete its files too (and the folders they leave empty).
    pub async fn remove(&self, id: TorrentId, delete_data: bool) -> Result<(), SessionError> {
        let ended = {
            let t = lock(&self.core.torrents);
            let m = t.by_id.get(&id).ok_or(SessionError::Unknown(id))?;
            m.run.as_ref().map(|r| {
                let _ = r.stop.send(true);
                r.ended.clone()
            })
        };
        wait_ended(ended).await;
        let m = {
            let mut t = lock(&self.core.torrents);
            let m = t.by_id.remove(&id).ok_or(SessionError::Unknown(id))?;
            t.by_hash.remove(&m.info_hash);
            m
        };
        if let Some(state) = &self.core.state {
            lock(state).remove(m.info_hash)?;
        }
        if delete_data {
            if let What::Torrent(meta) = &m.what {
                delete_files(&m.cfg.output_dir, meta)?;
            }
            if m.cfg.resume_file.is_none() {
                let p = crate::resume::path_for(&m.cfg.output_dir, &m.info_hash);
                let _ = std::fs::remove_file(p);
            }
        }
        let _ = self.core.state_tx.send(SessionEvent::Removed {
            id,
            info_hash: m.info_hash,
        });
        Ok(())
    }

    /// Cap a torrent's rates, bytes per second (`None`: no cap); at once
    /// if it runs, and kept for its next runs.
    pub async fn set_limits(
        &self,
        id: TorrentId,
        download: Option<u64>,
        upload: Option<u64>,
    ) -> Result<(), SessionError> {
        let input = {
            let mut t = lock(&self.core.torrents);
            let m = t.by_id.get_mut(&id).ok_or(SessionError::Unknown(id))?;
            m.cfg.download_rate_limit = download;
            m.cfg.upload_rate_limit = upload;
            m.entry.download_limit = download;
            m.entry.upload_limit = upload;
            self.core.save_entry(m)?;
            self.core.input_of(m).map(|i| (i, effective_limits(m)))
        };
        if let Some((input, (down, up))) = input {
            let _ = input
                .send(PeerInput::Command(torrent::Command::SetLimits(down, up)))
                .await;
        }
        Ok(())
    }

    /// Cap the rates of all torrents together, bytes per second (`None`:
    /// no cap). Each torrent gets a share, given again every second by
    /// what it used (and never more than its own limit).
    pub fn set_global_limits(&self, download: Option<u64>, upload: Option<u64>) {
        *lock(&self.core.global_limits) = (download, upload);
        self.core.share_now();
    }

    /// The global limits (down, up).
    pub fn global_limits(&self) -> Limits {
        *lock(&self.core.global_limits)
    }

    /// Ask a running torrent's trackers for peers now, each as soon as its
    /// `min interval` allows (an announce under way counts), and the DHT
    /// unless the torrent is private; a magnet fetching its metadata too.
    pub async fn reannounce(&self, id: TorrentId) -> Result<(), SessionError> {
        let input = {
            let t = lock(&self.core.torrents);
            let m = t.by_id.get(&id).ok_or(SessionError::Unknown(id))?;
            self.core.input_of(m).ok_or(SessionError::NotRunning(id))?
        };
        input
            .send(PeerInput::Command(torrent::Command::Reannounce))
            .await
            .map_err(|_| SessionError::NotRunning(id))
    }

    /// Set each file's priority (one per file, in the torrent's order):
    /// skipped files are not downloaded; at once if it runs, and kept.
    pub async fn set_file_priorities(
        &self,
        id: TorrentId,
        priorities: Vec<FilePriority>,
    ) -> Result<(), SessionError> {
        let input = {
            let mut t = lock(&self.core.torrents);
            let m = t.by_id.get_mut(&id).ok_or(SessionError::Unknown(id))?;
            let What::Torrent(meta) = &m.what else {
                return Err(SessionError::NoMetadata);
            };
            let files = meta.info.files.len();
            if priorities.len() != files {
                return Err(SessionError::Priorities {
                    files,
                    given: priorities.len(),
                });
            }
            m.entry.file_priorities = priorities.iter().map(|&p| priority_code(p)).collect();
            m.cfg.file_priorities.clone_from(&priorities);
            self.core.save_entry(m)?;
            self.core.input_of(m)
        };
        if let Some(input) = input {
            let ask = torrent::Command::SetFilePriorities(priorities);
            let _ = input.send(PeerInput::Command(ask)).await;
        }
        Ok(())
    }

    /// Move a torrent's files to `dir` (renamed where they can be, copied
    /// across file systems) and go on from there.
    pub async fn move_storage(&self, id: TorrentId, dir: PathBuf) -> Result<(), SessionError> {
        let (ended, was_running) = {
            let t = lock(&self.core.torrents);
            let m = t.by_id.get(&id).ok_or(SessionError::Unknown(id))?;
            let running = m.run.as_ref().is_some_and(|r| !*r.stop.borrow());
            let ended = m.run.as_ref().map(|r| {
                let _ = r.stop.send(true);
                r.ended.clone()
            });
            (ended, running)
        };
        wait_ended(ended).await;
        let (from, what) = {
            let t = lock(&self.core.torrents);
            let m = t.by_id.get(&id).ok_or(SessionError::Unknown(id))?;
            (m.cfg.output_dir.clone(), m.what.clone())
        };
        if let What::Torrent(meta) = &what {
            let to = dir.clone();
            let meta = meta.clone();
            tokio::task::spawn_blocking(move || move_files(&from, &to, &meta))
                .await
                .map_err(|e| SessionError::Files {
                    op: "move files to",
                    path: dir.clone(),
                    error: std::io::Error::other(e.to_string()),
                })??;
        }
        let mut t = lock(&self.core.torrents);
        let m = t.by_id.get_mut(&id).ok_or(SessionError::Unknown(id))?;
        m.cfg.output_dir = dir.clone();
        m.entry.download_dir = dir;
        self.core.save_entry(m)?;
        if was_running && m.run.is_none() {
            self.core.launch(&mut t, id, None, false);
        }
        Ok(())
    }

    /// Ask a torrent to stop (it saves its resume data and ends); it
    /// stays in the session, and starts again on [`Session::resume`].
    pub fn stop(&self, id: TorrentId) -> Result<(), SessionError> {
        let t = lock(&self.core.torrents);
        let m = t.by_id.get(&id).ok_or(SessionError::Unknown(id))?;
        if let Some(r) = &m.run {
            let _ = r.stop.send(true);
        }
        Ok(())
    }

    /// Ask every torrent to stop.
    pub fn stop_all(&self) {
        for m in lock(&self.core.torrents).by_id.values() {
            if let Some(r) = &m.run {
                let _ = r.stop.send(true);
            }
        }
    }

    /// Every torrent, in the order they were added.
    pub fn list(&self) -> Vec<Listed> {
        lock(&self.core.torrents)
            .by_id
            .iter()
            .map(|(&id, m)| listed(id, m))
            .collect()
    }

    /// One torrent, as [`Session::list`] shows it.
    pub fn get(&self, id: TorrentId) -> Option<Listed> {
        lock(&self.core.torrents)
            .by_id
            .get(&id)
            .map(|m| listed(id, m))
    }

    /// A torrent's metainfo, once known (a magnet's comes with its metadata).
    pub fn metainfo(&self, id: TorrentId) -> Option<Arc<Metainfo>> {
        match &lock(&self.core.torrents).by_id.get(&id)?.what {
            What::Torrent(meta) => Some(meta.clone()),
            What::Magnet { .. } => None,
        }
    }

    /// A torrent's id.
    pub fn find(&self, info_hash: InfoHash) -> Option<TorrentId> {
        lock(&self.core.torrents).by_hash.get(&info_hash).copied()
    }

    /// A running torrent's state now (`None`: not running, or it did not
    /// answer within a second).
    pub async fn snapshot(&self, id: TorrentId) -> Option<torrent::TorrentSnapshot> {
        let input = {
            let t = lock(&self.core.torrents);
            let ih = t.by_id.get(&id)?.info_hash;
            drop(t);
            lock(&self.core.routes).get(&ih)?.input.clone()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ask = PeerInput::Command(torrent::Command::Snapshot(tx));
        input.send(ask).await.ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(1), rx)
            .await
            .ok()?
            .ok()
    }

    /// Peer connections open now, across all torrents.
    pub fn connections(&self) -> usize {
        self.core.connections.open()
    }

    /// Torrents running.
    pub fn running(&self) -> usize {
        lock(&self.core.torrents)
            .by_id
            .values()
            .filter(|m| m.run.is_some())
            .count()
    }

    /// Torrents in the session, running or not.
    pub fn len(&self) -> usize {
        lock(&self.core.torrents).by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn listed(id: TorrentId, m: &Managed) -> Listed {
    let (name, has_metadata) = match &m.what {
        What::Torrent(meta) => (Some(meta.info.name.clone()), true),
        What::Magnet { name, .. } => (name.clone(), false),
    };
    Listed {
        id,
        info_hash: m.info_hash,
        name,
        has_metadata,
        download_dir: m.cfg.output_dir.clone(),
        state: m.state.clone(),
        added_at: m.entry.added_at,
    }
}

/// How a file priority is kept in the state directory.
fn priority_code(p: FilePriority) -> u8 {
    match p {
        FilePriority::Skip => 0,
        FilePriority::Low => 1,
        FilePriority::Normal => 2,
        FilePriority::High => 3,
    }
}

fn priority_of(code: u8) -> FilePriority {
    match code {
        0 => FilePriority::Skip,
        1 => FilePriority::Low,
        3.. => FilePriority::High,
        2 => FilePriority::Normal,
    }
}

impl Core {
    /// A running torrent's input.
    fn input_of(&self, m: &Managed) -> Option<mpsc::Sender<PeerInput>> {
        m.run.as_ref()?;
        lock(&self.routes)
            .get(&m.info_hash)
            .map(|r| r.input.clone())
    }

    fn save_entry(&self, m: &Managed) -> Result<(), SessionError> {
        if let Some(state) = &self.state {
            lock(state).save_entry(m.info_hash, &m.entry)?;
        }
        Ok(())
    }

    /// Start a run of torrent `id` (`t` is the locked table). `magnet`:
    /// the caller's own start of a magnet (with its `.torrent` URL race);
    /// otherwise one is made from what the session knows.
    fn launch(&self, t: &mut Torrents, id: TorrentId, magnet: Option<MagnetStart>, recheck: bool) {
        let generation = t.next_generation;
        t.next_generation += 1;
        // Under global limits it starts with an even share (the sharer
        // gives it its own from the next second).
        let (down, up) = *lock(&self.global_limits);
        let runs = t.by_id.values().filter(|m| m.run.is_some()).count() as u64 + 1;
        let even = |l: u64| (l / runs).max(crate::bandwidth::MIN_SHARE);
        let share = (down.map(even), up.map(even));
        let Some(m) = t.by_id.get_mut(&id) else {
            return;
        };
        let info_hash = m.info_hash;
        let (mut shared, input) = Shared::new(self.pool.clone(), self.checks.clone());
        shared.connections = Some(self.connections.clone());
        if let (true, Some(listen)) = (m.cfg.lpd, self.listen) {
            let mut lpd = lock(&self.lpd);
            let service = lpd.get_or_insert_with(|| {
                crate::lpd::Service::start(
                    crate::lpd::Links::of_this_host(),
                    listen.port(),
                    crate::lpd_cookie(&m.cfg.peer_id),
                )
            });
            shared.lpd = Some(service.clone());
        }
        if matches!(m.what, What::Magnet { .. }) {
            let core = self.clone();
            shared.on_metadata = Some(Arc::new(move |meta: &Arc<Metainfo>| {
                core.metadata_arrived(id, meta.clone());
            }));
        }
        let mut cfg = m.cfg.clone();
        let rates_gauge = shared.rates.clone();
        cfg.shared = Some(shared);
        cfg.listen = self.listen;
        cfg.recheck |= recheck;
        let add = match (&m.what, magnet) {
            (What::Torrent(meta), _) => Add::Torrent(meta.clone()),
            (What::Magnet { .. }, Some(start)) => Add::Magnet(start),
            (
                What::Magnet {
                    info_hashes,
                    trackers,
                    max_metadata_size,
                    ..
                },
                None,
            ) => Add::Magnet(MagnetStart {
                info_hashes: *info_hashes,
                trackers: trackers.clone(),
                max_metadata_size: *max_metadata_size,
                torrent_file: None,
            }),
        };
        let (stop, stop_rx) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(false);
        let rates = rates_gauge;
        m.run = Some(Run {
            generation,
            stop,
            ended,
            rates,
            share,
        });
        (cfg.download_rate_limit, cfg.upload_rate_limit) = effective_limits(m);
        m.state = RunState::Running;
        lock(&self.routes).insert(info_hash, Route { generation, input });
        let sink = torrent::EventSink::Session(Arc::new(TorrentSink {
            state: self.state_tx.clone(),
            progress: self.progress_tx.clone(),
            id,
            info_hash,
        }));
        let core = self.clone();
        // Made here, so that the task holds the run, not its arguments too.
        let run = torrent::run_in_session(add, cfg, sink, stop_rx);
        tokio::spawn(async move {
            let result = run.await;
            core.run_ended(id, info_hash, generation, result);
            let _ = ended_tx.send(true);
        });
    }

    /// A run's task ended: the torrent stays, not running.
    fn run_ended(
        &self,
        id: TorrentId,
        info_hash: InfoHash,
        generation: u64,
        result: Result<Summary, torrent::EngineError>,
    ) {
        {
            let mut routes = lock(&self.routes);
            if routes.get(&info_hash).map(|r| r.generation) == Some(generation) {
                routes.remove(&info_hash);
            }
        }
        {
            let mut t = lock(&self.torrents);
            if let Some(m) = t.by_id.get_mut(&id) {
                if m.run.as_ref().map(|r| r.generation) == Some(generation) {
                    m.run = None;
                    if m.state == RunState::Running {
                        m.state = match &result {
                            Ok(s) if s.stopped == torrent::STOP_ASKED => RunState::Paused,
                            Ok(s) => RunState::Ended {
                                complete: s.complete,
                                why: s.stopped.to_owned(),
                            },
                            Err(e) => RunState::Failed(e.to_string()),
                        };
                    }
                }
            }
        }
        let _ = self.state_tx.send(SessionEvent::Ended {
            id,
            info_hash,
            result,
        });
    }

    /// A magnet's metadata arrived: keep it (in the state directory too),
    /// so that the next start of the torrent begins from it.
    fn metadata_arrived(&self, id: TorrentId, meta: Arc<Metainfo>) {
        let info_hash = {
            let mut t = lock(&self.torrents);
            let Some(m) = t.by_id.get_mut(&id) else {
                return;
            };
            m.what = What::Torrent(meta.clone());
            m.info_hash
        };
        if let Some(state) = self.state.clone() {
            let events = self.state_tx.clone();
            // fsyncs: off the driver's thread.
            tokio::task::spawn_blocking(move || {
                let bytes = crate::state_dir::torrent_file(&meta);
                if let Err(e) = lock(&state).save_metainfo(info_hash, &bytes) {
                    let message = format!("cannot keep its metadata in the state directory: {e}");
                    let _ = events.send(SessionEvent::Warning { id, message });
                }
            });
        }
    }
}

/// Where one torrent's events join the session's stream.
struct TorrentSink {
    state: mpsc::UnboundedSender<SessionEvent>,
    progress: mpsc::Sender<SessionEvent>,
    id: TorrentId,
    info_hash: InfoHash,
}

impl TorrentSink {
    fn tagged(&self, event: TorrentEvent) -> SessionEvent {
        SessionEvent::Torrent {
            id: self.id,
            info_hash: self.info_hash,
            event,
        }
    }
}

impl torrent::SessionSink for TorrentSink {
    fn state(&self, event: TorrentEvent) {
        let _ = self.state.send(self.tagged(event));
    }

    fn progress(&self, event: TorrentEvent) {
        let _ = self.progress.try_send(self.tagged(event));
    }
}

/// Run one torrent in a session of its own until it ends: what `get` and
/// `seed` of a single torrent do. Its events come on `events` (none lost
/// while the caller keeps up); `stop` ends it as Ctrl-C does.
pub async fn run_one(
    start: Add,
    cfg: TorrentConfig,
    events: mpsc::Sender<TorrentEvent>,
    mut stop: watch::Receiver<bool>,
) -> Result<Summary, torrent::EngineError> {
    let (session, mut rx) = Session::start(SessionConfig {
        listen: cfg.listen,
        threads: cfg.threads,
        seed: cfg.seed,
        state: None,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        utp: cfg.transports.utp.clone(),
        tcp: cfg.transports.tcp,
    })
    .await
    .map_err(|e| match e {
        SessionError::Listen { addr, error } => torrent::EngineError::Listen { addr, error },
        other => torrent::EngineError::Session(other.to_string()),
    })?;
    let id = session
        .add(start, cfg)
        .map_err(|e| torrent::EngineError::Session(e.to_string()))?
        .id;
    loop {
        tokio::select! {
            e = rx.recv() => match e {
                Some(SessionEvent::Torrent { event, .. }) => {
                    let _ = events.send(event).await;
                }
                Some(SessionEvent::Ended { result, .. }) => {
                    // What the torrent said before it ended and is still
                    // queued (its last progress and sources table).
                    while let Some(e) = rx.try_recv() {
                        if let SessionEvent::Torrent { event, .. } = e {
                            let _ = events.send(event).await;
                        }
                    }
                    return result;
                }
                Some(SessionEvent::Removed { .. } | SessionEvent::Warning { .. }) => {}
                None => return Err(torrent::EngineError::Stopped),
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = session.stop(id);
                }
            }
        }
    }
}

/// A torrent's limits now: its own, capped by its share of the global ones.
fn effective_limits(m: &Managed) -> Limits {
    let min = |own: Option<u64>, share: Option<u64>| match (own, share) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let share = m.run.as_ref().map_or((None, None), |r| r.share);
    (
        min(m.cfg.download_rate_limit, share.0),
        min(m.cfg.upload_rate_limit, share.1),
    )
}

/// Give each running torrent its share of the global limits, every second.
async fn share_bandwidth(core: Core) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // Without global limits there is nothing to share (lifting them
        // gave every torrent its own limits back at once).
        if *lock(&core.global_limits) != (None, None) {
            core.share_now();
        }
    }
}

impl Core {
    /// Work out each running torrent's share of the global limits and tell
    /// those whose limits changed.
    fn share_now(&self) {
        let (down, up) = *lock(&self.global_limits);
        let mut t = lock(&self.torrents);
        let running: Vec<TorrentId> = t
            .by_id
            .iter()
            .filter(|(_, m)| m.run.is_some())
            .map(|(&id, _)| id)
            .collect();
        let used: Vec<(u64, u64)> = running
            .iter()
            .map(|id| t.by_id[id].run.as_ref().map_or((0, 0), |r| r.rates.get()))
            .collect();
        let old: Vec<Limits> = running
            .iter()
            .map(|id| t.by_id[id].run.as_ref().map_or((None, None), |r| r.share))
            .collect();
        let split =
            |limit: Option<u64>, pick: fn(&(u64, u64)) -> u64, last: fn(&Limits) -> Option<u64>| {
                limit.map(|l| {
                    let demands: Vec<Option<u64>> = used
                        .iter()
                        .zip(&old)
                        .map(|(u, o)| crate::bandwidth::demand(pick(u), last(o)))
                        .collect();
                    crate::bandwidth::split(l, &demands)
                })
            };
        let downs = split(down, |u| u.0, |o| o.0);
        let ups = split(up, |u| u.1, |o| o.1);
        for (i, id) in running.iter().enumerate() {
            let Some(m) = t.by_id.get_mut(id) else {
                continue;
            };
            let before = effective_limits(m);
            let share = (downs.as_ref().map(|s| s[i]), ups.as_ref().map(|s| s[i]));
            let last = m.run.as_ref().map_or((None, None), |r| r.share);
            if let Some(r) = &mut m.run {
                r.share = share;
            }
            let now = effective_limits(m);
            if now == before {
                continue;
            }
            let told = self.input_of(m).is_some_and(|input| {
                let ask = torrent::Command::SetLimits(now.0, now.1);
                // Never wait on a busy torrent: the next second tries again.
                input.try_send(PeerInput::Command(ask)).is_ok()
            });
            if !told {
                if let Some(r) = &mut m.run {
                    r.share = last;
                }
            }
        }
    }
}

async fn wait_ended(ended: Option<watch::Receiver<bool>>) {
    if let Some(mut e) = ended {
        let _ = e.wait_for(|done| *done).await;
    }
}

/// The files of `meta` under `dir` (padding files are never written).
fn content_files<'a>(dir: &'a Path, meta: &'a Metainfo) -> impl Iterator<Item = PathBuf> + 'a {
    meta.info
        .files
        .iter()
        .filter(|f| !f.attributes.pad)
        .map(move |f| dir.join(f.relative_path()))
}

/// Delete a torrent's files, then the folders under `dir` they leave empty.
fn delete_files(dir: &Path, meta: &Metainfo) -> Result<(), SessionError> {
    for p in content_files(dir, meta) {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(SessionError::Files {
                    op: "delete",
                    path: p,
                    error,
                })
            }
        }
        remove_empty_parents(dir, &p);
    }
    Ok(())
}

/// Remove `file`'s folders up to (not including) `root` while empty.
fn remove_empty_parents(root: &Path, file: &Path) {
    let mut d = file.parent();
    while let Some(p) = d {
        if p == root || !p.starts_with(root) || std::fs::remove_dir(p).is_err() {
            break;
        }
        d = p.parent();
    }
}

/// Move a torrent's files from `from` to `to`: a rename where it can be,
/// else a copy and then the removal of the original.
fn move_files(from: &Path, to: &Path, meta: &Metainfo) -> Result<(), SessionError> {
    let err = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |error| SessionError::Files { op, path, error }
    };
    if from == to {
        return Ok(());
    }
    for (src, dst) in content_files(from, meta).zip(content_files(to, meta)) {
        if !src.exists() {
            continue;
        }
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(err("create", parent))?;
        }
        if std::fs::rename(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(err("copy to", &dst))?;
            std::fs::remove_file(&src).map_err(err("remove", &src))?;
        }
        remove_empty_parents(from, &src);
    }
    Ok(())
}

/// Hand each incoming connection to the torrent its handshake names.
async fn route(mut rx: mpsc::Receiver<PeerInput>, routes: Routes) {
    while let Some(input) = rx.recv().await {
        let PeerInput::Connected {
            info_hash: Some(ih),
            ..
        } = &input
        else {
            continue;
        };
        let target = lock(&routes).get(ih).map(|r| r.input.clone());
        // A busy torrent's input is full of its peers' data: the newcomer
        // waits its turn a while (not holding up the others' routing).
        if let Some(tx) = target {
            if let Err(mpsc::error::TrySendError::Full(input)) = tx.try_send(input) {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(ROUTE_WAIT, tx.send(input)).await;
                });
            }
        }
    }
}
