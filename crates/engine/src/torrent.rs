//! The driver of one torrent: a single task that feeds a sans-IO
//! [`TorrentCore`] with what the sockets, the disk pool and the clock bring,
//! and carries out what it asks (dial, send, close, hash, read, save).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lodestone_core::{Bitfield, Metainfo, PeerId, PieceIndex};
use lodestone_peer::picker::PeerKey;
use lodestone_torrent::{Action, Checked, CoreConfig, Event, StopReason, TorrentCore};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::peer_io::{self, Connection, PeerInput, PeerSource};
use crate::resume::{self, DiskCheck, ResumeData};
use crate::storage::{Storage, StorageError};

pub use lodestone_torrent::Stats;

/// How long a stopping torrent waits for its writers to send what is queued.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct TorrentConfig {
    pub output_dir: PathBuf,
    /// Accept incoming connections here.
    pub listen: Option<SocketAddr>,
    /// Peers to dial (and redial while we are not done).
    pub peers: Vec<SocketAddr>,
    /// After completing, keep seeding this long; `None` = until stopped.
    pub seed_time: Option<Duration>,
    /// Ignore resume data and hash what is on disk.
    pub recheck: bool,
    /// Download only these file indices.
    pub only_files: Option<Vec<usize>>,
    pub sequential: bool,
    pub max_peers: usize,
    pub upload_slots: usize,
    pub peer_id: PeerId,
    /// Seeds the picker's and choker's randomness.
    pub seed: u64,
    /// Hashing/recheck threads.
    pub threads: usize,
    /// Cap on the download rate, bytes per second.
    pub download_rate_limit: Option<u64>,
    /// Cap on the upload rate (blocks served), bytes per second.
    pub upload_rate_limit: Option<u64>,
    /// Stop seeding once this run has uploaded this many times what we
    /// hold (whichever comes first with `seed_time`).
    pub seed_ratio: Option<f64>,
    /// Find peers through this DHT node (and announce `listen`'s port there).
    pub dht: Option<crate::dht::Dht>,
    /// Announce on the LAN and listen for others (BEP 14); needs `listen`.
    pub lpd: bool,
    /// Announce to the torrent's trackers.
    pub trackers: bool,
    /// For HTTP(S) trackers.
    pub http: crate::http::HttpClient,
    /// Peer exchange (BEP 11) with peers that speak it (never for a
    /// private torrent, whatever this says).
    pub pex: bool,
}

impl TorrentConfig {
    pub fn new(output_dir: PathBuf, peer_id: PeerId, seed: u64) -> Self {
        Self {
            output_dir,
            listen: None,
            peers: Vec::new(),
            seed_time: Some(Duration::ZERO),
            recheck: false,
            only_files: None,
            sequential: false,
            max_peers: 60,
            upload_slots: 8,
            peer_id,
            seed,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            download_rate_limit: None,
            upload_rate_limit: None,
            seed_ratio: None,
            dht: None,
            lpd: false,
            trackers: true,
            http: crate::http::HttpClient::default(),
            pex: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("torrent has no v1 piece hashes (v2-only torrents are not downloadable yet)")]
    V2Only,
}

/// How the torrent knew what was already on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartState {
    Fresh,
    /// From resume data; the pieces of files modified since it was
    /// written were hashed again.
    Resumed {
        changed_files: usize,
    },
    Rechecked {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub enum TorrentEvent {
    Started {
        state: StartState,
        have: u32,
        num_pieces: u32,
    },
    PeerConnected {
        addr: SocketAddr,
        client: String,
        source: PeerSource,
    },
    PeerDisconnected {
        addr: SocketAddr,
        reason: String,
    },
    HashFailed {
        piece: u32,
        peers: Vec<SocketAddr>,
    },
    PeerBanned {
        addr: SocketAddr,
        reason: String,
    },
    Progress(Stats),
    Completed {
        after: Duration,
    },
    /// The torrent stopped downloading (e.g. disk full); resume data is saved.
    Paused {
        reason: String,
    },
    /// A piece we have could not be read to seed it (file gone or
    /// unreadable): its requests are rejected from now on.
    ReadFailed {
        piece: u32,
        reason: String,
    },
    /// Where peers come from (emitted about once a second).
    Sources(Vec<crate::sources::SourceRow>),
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub complete: bool,
    pub stats: Stats,
    pub time_to_complete: Option<Duration>,
    /// When the first block of payload arrived (none was downloaded: `None`).
    pub time_to_first_byte: Option<Duration>,
    pub peers_by_source: BTreeMap<&'static str, usize>,
    pub paused: Option<String>,
    /// Why the run ended: [`STOP_ASKED`], [`STOP_PAUSED`],
    /// [`STOP_SEED_RATIO`], [`STOP_SEED_TIME`] or [`STOP_DONE`].
    pub stopped: &'static str,
}

/// The run was told to stop (Ctrl-C).
pub const STOP_ASKED: &str = "asked to stop";
/// Downloading stopped (e.g. disk full); see `paused`.
pub const STOP_PAUSED: &str = "paused";
/// This run uploaded the seed ratio's bytes.
pub const STOP_SEED_RATIO: &str = "seed ratio reached";
/// The seed time after completion ran out.
pub const STOP_SEED_TIME: &str = "seed time over";
/// Complete, with no seeding asked for.
pub const STOP_DONE: &str = "complete";

/// What the disk pool hands back.
enum DiskResult {
    Checked(PieceIndex, Checked),
    /// A piece read for seeding.
    Read(PieceIndex, Result<Bytes, String>),
}

/// One connection's socket tasks, and the chunk its writer could not take yet.
struct Conn {
    conn: Connection,
    pending: Option<Bytes>,
}

/// Carries out the core's actions.
struct Driver {
    core: TorrentCore,
    storage: Arc<Storage>,
    conns: HashMap<PeerKey, Conn>,
    input_tx: mpsc::Sender<PeerInput>,
    disk_tx: mpsc::Sender<DiskResult>,
    hashers: crate::pool::Pool,
    read_buffers: Arc<peer_io::ReadBuffers>,
    events: mpsc::Sender<TorrentEvent>,
    /// What trackers are told about our progress.
    progress_tx: watch::Sender<crate::tracker::Progress>,
    output_dir: PathBuf,
    listen: Option<SocketAddr>,
    /// From the start of `run` to the core's creation (the initial check):
    /// the times the core reports count from its creation.
    core_offset: Duration,
}

/// Run a torrent until it is done (complete and seed time over), stopped
/// through `shutdown`, or paused by a disk error.
pub async fn run(
    meta: Arc<Metainfo>,
    cfg: TorrentConfig,
    events: mpsc::Sender<TorrentEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Summary, EngineError> {
    if meta.info.pieces.is_empty() && meta.info.num_pieces() > 0 {
        return Err(EngineError::V2Only);
    }
    let started = Instant::now();
    // Listen first: peers that arrive during the initial check wait in the backlog.
    // Small: a slow actor then slows the readers (TCP backpressure) instead
    // of buffering megabytes of reads.
    let (input_tx, mut input_rx) = mpsc::channel(32);
    let _listener = match cfg.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|error| EngineError::Listen { addr, error })?;
            Some(peer_io::listen(
                l,
                input_tx.clone(),
                vec![meta.info_hashes.wire()],
                cfg.seed,
            ))
        }
        None => None,
    };
    let storage = Arc::new(Storage::new(&cfg.output_dir, &meta.info)?);
    let _dht_task = cfg
        .dht
        .clone()
        .map(|dht| spawn_dht_discovery(dht, meta.info_hashes.wire(), cfg.listen, input_tx.clone()));
    let _lpd_task = match (cfg.lpd, cfg.listen) {
        (true, Some(listen)) if !meta.info.private => {
            let cookie = format!("{:016x}", cfg.seed);
            Some(AbortOnDrop(tokio::spawn(crate::lpd::run(
                meta.info_hashes.wire(),
                listen.port(),
                cookie,
                input_tx.clone(),
            ))))
        }
        _ => None,
    };
    let (have, state) = initial_have(&meta, &cfg, &storage).await;
    // What was hashed goes into a resume file soon: the next start (of a
    // seed, say) then need not hash it again.
    let resume_stale = !matches!(
        state,
        StartState::Fresh | StartState::Resumed { changed_files: 0 }
    );
    let _ = events
        .send(TorrentEvent::Started {
            state,
            have: have.count(),
            num_pieces: have.len(),
        })
        .await;

    let now = Instant::now();
    let core = TorrentCore::new(meta.clone(), core_config(&cfg), &have, resume_stale, now);
    // Trackers start once the files are checked, so that the first
    // announce says how much is really left (a seeder says 0).
    let (progress_tx, progress_rx) = watch::channel(crate::tracker::Progress {
        left: core.stats().bytes_left,
        ..Default::default()
    });
    let _tracker_tasks: Vec<AbortOnDrop> = if cfg.trackers {
        let base = lodestone_wire::tracker::AnnounceRequest {
            info_hash: meta.info_hashes.wire(),
            peer_id: cfg.peer_id,
            port: cfg.listen.map_or(0, |a| a.port()),
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: lodestone_wire::tracker::AnnounceEvent::Started,
            num_want: 50,
            key: cfg.seed as u32,
        };
        meta.trackers
            .iter()
            .map(|tier| {
                AbortOnDrop(tokio::spawn(crate::tracker::run_tier(
                    tier.clone(),
                    base.clone(),
                    progress_rx.clone(),
                    input_tx.clone(),
                    cfg.http.clone(),
                )))
            })
            .collect()
    } else {
        Vec::new()
    };

    let (disk_tx, mut disk_rx) = mpsc::channel(64);
    let mut d = Driver {
        core,
        storage,
        conns: HashMap::new(),
        input_tx,
        disk_tx,
        hashers: crate::pool::Pool::new("hash", cfg.threads),
        read_buffers: Arc::default(),
        events,
        progress_tx,
        output_dir: cfg.output_dir.clone(),
        listen: cfg.listen,
        core_offset: now - started,
    };
    d.drain().await;

    let mut asked_to_stop = false;
    loop {
        if d.core.is_finished(Instant::now()) {
            break;
        }
        let deadline = tokio::time::Instant::from_std(d.core.poll_timeout());
        tokio::select! {
            Some(input) = input_rx.recv() => {
                d.on_input(input);
                // Take what else is ready before carrying out the actions:
                // fewer wakeups, one flush per peer.
                for _ in 0..256 {
                    match input_rx.try_recv() {
                        Ok(i) => d.on_input(i),
                        Err(_) => break,
                    }
                }
            }
            Some(result) = disk_rx.recv() => d.on_disk(result),
            _ = tokio::time::sleep_until(deadline) => d.core.handle_timeout(Instant::now()),
            _ = shutdown.changed() => {
                asked_to_stop = true;
                break;
            }
        }
        d.drain().await;
    }
    // Read before the peers are closed: the ratio is judged on what was
    // uploaded by then.
    let stopped = if asked_to_stop {
        STOP_ASKED
    } else {
        match d.core.stop_reason(Instant::now()) {
            Some(StopReason::Paused) => STOP_PAUSED,
            Some(StopReason::SeedRatio) => STOP_SEED_RATIO,
            Some(StopReason::Done) => STOP_DONE,
            Some(StopReason::SeedTime) | Some(StopReason::Asked) | None => STOP_SEED_TIME,
        }
    };
    // Nobody reads the inputs any more: a writer must not wait to report.
    input_rx.close();
    d.close_connections().await;
    d.core.stop(Instant::now());
    d.drain().await;
    let _ = d.storage.sync();
    let offset = d.core_offset;
    Ok(Summary {
        complete: d.core.is_complete(),
        stats: d.core.stats(),
        time_to_complete: d.core.completed_after().map(|t| t + offset),
        time_to_first_byte: d.core.first_byte_after().map(|t| t + offset),
        peers_by_source: d.core.peers_by_source().clone(),
        paused: d.core.paused().map(str::to_owned),
        stopped,
    })
}

fn core_config(cfg: &TorrentConfig) -> CoreConfig {
    CoreConfig {
        listen: cfg.listen,
        peers: cfg.peers.clone(),
        seed_time: cfg.seed_time,
        seed_ratio: cfg.seed_ratio,
        only_files: cfg.only_files.clone(),
        sequential: cfg.sequential,
        max_peers: cfg.max_peers,
        upload_slots: cfg.upload_slots,
        peer_id: cfg.peer_id,
        seed: cfg.seed,
        download_rate_limit: cfg.download_rate_limit,
        upload_rate_limit: cfg.upload_rate_limit,
        dht: cfg.dht.is_some(),
        lpd: cfg.lpd,
        trackers: cfg.trackers,
        pex: cfg.pex,
    }
}

impl Driver {
    fn on_input(&mut self, input: PeerInput) {
        let now = Instant::now();
        match input {
            PeerInput::Connected {
                stream,
                addr,
                source,
                initial,
                cipher,
            } => {
                let Some(key) = self
                    .core
                    .handle_connected(now, addr, source, cipher.is_some())
                else {
                    return;
                };
                let conn = Connection::spawn(
                    key,
                    stream,
                    self.input_tx.clone(),
                    cipher,
                    self.read_buffers.clone(),
                );
                self.conns.insert(
                    key,
                    Conn {
                        conn,
                        pending: None,
                    },
                );
                if !initial.is_empty() {
                    self.core.handle_data(now, key, initial[..].into());
                }
            }
            PeerInput::ConnectFailed { addr, .. } => self.core.handle_connect_failed(now, addr),
            PeerInput::Discovered { addrs, source } => {
                self.core.handle_discovered(now, &addrs, source)
            }
            PeerInput::DhtRound(r) => self.core.handle_dht_round(now, r),
            PeerInput::TrackerStatus(s) => self.core.handle_tracker_status(now, s),
            PeerInput::SourceStatus {
                source: PeerSource::Lpd,
                status,
                next_in,
            } => self.core.handle_lpd_status(now, status, next_in),
            PeerInput::SourceStatus { .. } => {}
            PeerInput::Data { key, bytes } => self.core.handle_data(now, key, bytes),
            PeerInput::Writable { key } => {
                self.flush(now, key);
            }
            PeerInput::Closed { key, reason } => {
                self.conns.remove(&key);
                self.core.handle_closed(now, key, reason);
            }
        }
    }

    fn on_disk(&mut self, result: DiskResult) {
        let now = Instant::now();
        match result {
            DiskResult::Checked(piece, checked) => self.core.handle_checked(now, piece, checked),
            DiskResult::Read(piece, result) => self.core.handle_read(piece, result),
        }
    }

    /// Carry out every action and report every event, until the core has
    /// nothing more to say.
    async fn drain(&mut self) {
        loop {
            let mut idle = true;
            while let Some(a) = self.core.poll_action() {
                idle = false;
                self.act(a);
            }
            while let Some(e) = self.core.poll_event() {
                idle = false;
                self.emit(e).await;
            }
            if idle {
                return;
            }
        }
    }

    fn act(&mut self, action: Action) {
        let now = Instant::now();
        match action {
            Action::Dial {
                addr,
                source,
                encrypt,
            } => {
                let info_hash = self.core.metainfo().info_hashes.wire();
                let obfuscate = encrypt.map(|k| peer_io::Obfuscate {
                    info_hash,
                    private_key: k.private_key,
                    pad: k.pad,
                });
                peer_io::connect(addr, self.listen, source, self.input_tx.clone(), obfuscate);
            }
            Action::Transmit(key) => {
                self.flush(now, key);
            }
            // Dropping the connection stops its reader; its writer sends
            // what it was given, then closes.
            Action::Close(key) => {
                self.conns.remove(&key);
            }
            Action::Check { piece, blocks } => {
                let storage = self.storage.clone();
                let tx = self.disk_tx.clone();
                self.hashers.run(move || {
                    let result = if !storage.check_blocks(piece, &blocks) {
                        Checked::Bad(blocks)
                    } else {
                        match storage.write_blocks(piece, &blocks) {
                            Ok(()) => Checked::Good(blocks),
                            Err(e) => Checked::WriteFailed(e.to_string()),
                        }
                    };
                    let _ = tx.blocking_send(DiskResult::Checked(piece, result));
                });
            }
            Action::Read { piece, len, buf } => {
                let mut buf = buf;
                let storage = self.storage.clone();
                let tx = self.disk_tx.clone();
                self.hashers.run(move || {
                    let result = storage
                        .read(piece, 0, len, &mut buf)
                        .map(|()| Bytes::from(buf))
                        .map_err(|e| e.to_string());
                    let _ = tx.blocking_send(DiskResult::Read(piece, result));
                });
            }
            Action::SaveResume { have } => {
                let (saved, unvouched) = self.save_resume(have);
                self.core.handle_resume_saved(now, saved, unvouched);
            }
            Action::Progress(p) => {
                self.progress_tx.send_if_modified(|old| {
                    let changed = *old != p;
                    *old = p;
                    changed
                });
            }
        }
    }

    /// Hand the peer's output to its writer while the writer has room;
    /// true when all of it went.
    fn flush(&mut self, now: Instant, key: PeerKey) -> bool {
        let Some(c) = self.conns.get_mut(&key) else {
            return false;
        };
        loop {
            let next = match c.pending.take() {
                Some(b) => b,
                None => match self.core.poll_transmit(now, key) {
                    Some(b) => b,
                    None => return true,
                },
            };
            match c.conn.tx.try_send(next) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(b)) => {
                    c.pending = Some(b);
                    c.conn.want_writable.store(true, Ordering::Release);
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
    }

    /// Events that only report progress are dropped when the reader lags
    /// (the next one says the same, newer); the others wait for it.
    async fn emit(&mut self, e: Event) {
        let offset = self.core_offset;
        let e = match e {
            Event::PeerConnected {
                addr,
                client,
                source,
            } => TorrentEvent::PeerConnected {
                addr,
                client,
                source,
            },
            Event::PeerDisconnected { addr, reason } => {
                TorrentEvent::PeerDisconnected { addr, reason }
            }
            Event::HashFailed { piece, peers } => TorrentEvent::HashFailed { piece, peers },
            Event::PeerBanned { addr, reason } => TorrentEvent::PeerBanned { addr, reason },
            Event::Completed { after } => TorrentEvent::Completed {
                after: after + offset,
            },
            Event::Paused { reason } => TorrentEvent::Paused { reason },
            Event::ReadFailed { piece, reason } => TorrentEvent::ReadFailed { piece, reason },
            Event::Progress(stats) => {
                let _ = self.events.try_send(TorrentEvent::Progress(stats));
                return;
            }
            Event::Sources(rows) => {
                let rows = rows.iter().map(crate::sources::describe).collect();
                let _ = self.events.try_send(TorrentEvent::Sources(rows));
                return;
            }
        };
        let _ = self.events.send(e).await;
    }

    /// Flush the files, then record what is verified on them. Returns
    /// (saved, a file too freshly written to vouch for).
    fn save_resume(&self, have: Bitfield) -> (bool, bool) {
        // Data first, then the claim that it is there.
        if self.storage.sync().is_err() {
            return (false, false);
        }
        let now = std::time::SystemTime::now();
        let files: Vec<_> = self
            .storage
            .file_stamps()
            .into_iter()
            .map(|f| f.vouched_at(now))
            .collect();
        let unvouched = files.iter().any(|f| f.size > 0 && f.mtime_ns.is_none());
        let r = ResumeData {
            info_hash: self.core.metainfo().info_hashes.wire(),
            have,
            files,
        };
        let saved = r
            .save(&resume::path_for(&self.output_dir, &r.info_hash))
            .is_ok();
        (saved, unvouched)
    }

    /// On the way out: hand each peer what is already queued for it and
    /// give the writers a moment to send it (the last blocks of a seed
    /// that reached its ratio, say), never more than [`CLOSE_GRACE`].
    async fn close_connections(&mut self) {
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
        loop {
            let keys: Vec<PeerKey> = self.conns.keys().copied().collect();
            let mut done = true;
            for k in keys {
                let alive = self.conns.get(&k).is_some_and(|c| !c.conn.tx.is_closed());
                done &= !alive || self.flush(Instant::now(), k);
            }
            if done || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let writers: Vec<_> = self
            .conns
            .drain()
            .filter_map(|(_, c)| c.conn.close())
            .collect();
        let _ = tokio::time::timeout_at(deadline, async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await;
    }
}

/// Ends a task when its owner stops.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    pub fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(f))
    }
}

/// Run DHT peer discovery for `info_hash` until the handle is dropped.
pub fn spawn_dht_discovery(
    dht: crate::dht::Dht,
    info_hash: lodestone_core::InfoHash,
    listen: Option<SocketAddr>,
    input: mpsc::Sender<PeerInput>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(dht_discovery(dht, info_hash, listen, input)))
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ask the DHT for peers (announcing our port when we listen), soon again
/// at first and then every few minutes, feeding what it finds to the
/// torrent; when, is [`lodestone_dht::reannounce::Schedule`]'s rule.
async fn dht_discovery(
    dht: crate::dht::Dht,
    info_hash: lodestone_core::InfoHash,
    listen: Option<SocketAddr>,
    input: mpsc::Sender<PeerInput>,
) {
    use crate::dht::LookupUpdate;
    let port = listen.map(|a| a.port());
    let mut schedule = lodestone_dht::reannounce::Schedule::new();
    loop {
        let external_ip = dht.health().await.external_ip;
        let mut rx = match port {
            Some(p) => dht.announce(info_hash, Some(p)).await,
            None => dht.get_peers(info_hash).await,
        };
        let wait = schedule.start_round();
        let mut report = crate::sources::DhtRound {
            next_in: wait,
            ..Default::default()
        };
        while let Some(u) = rx.recv().await {
            let msg = match u {
                LookupUpdate::Peers(addrs) => {
                    report.peers += addrs.len() as u32;
                    // Our own announce coming back is not a swarm.
                    schedule.found_peers(
                        addrs
                            .iter()
                            .filter(|a| !is_self(a, listen, external_ip))
                            .count() as u64,
                    );
                    PeerInput::Discovered {
                        addrs,
                        source: PeerSource::Dht,
                    }
                }
                LookupUpdate::Announced { sent, acked } => {
                    report.announced = Some((sent, acked));
                    continue;
                }
                LookupUpdate::Done {
                    queries, responses, ..
                } => {
                    report.queries = queries;
                    report.responses = responses;
                    PeerInput::DhtRound(report)
                }
                LookupUpdate::Hop { .. }
                | LookupUpdate::Item { .. }
                | LookupUpdate::Samples { .. }
                | LookupUpdate::Stored { .. } => continue,
            };
            if input.send(msg).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(wait).await;
    }
}

/// Is `addr` our own listener as a DHT hands it back: the address we
/// listen on, or our port on a loopback address or on our external IP?
fn is_self(
    addr: &SocketAddr,
    listen: Option<SocketAddr>,
    external_ip: Option<std::net::IpAddr>,
) -> bool {
    let Some(listen) = listen else {
        return false;
    };
    listen.port() == addr.port()
        && (listen.ip() == addr.ip() || addr.ip().is_loopback() || Some(addr.ip()) == external_ip)
}

/// What is on disk already: from resume data if it can be trusted,
/// otherwise by hashing the files.
async fn initial_have(
    meta: &Metainfo,
    cfg: &TorrentConfig,
    storage: &Arc<Storage>,
) -> (Bitfield, StartState) {
    let ih = meta.info_hashes.wire();
    let path = resume::path_for(&cfg.output_dir, &ih);
    let n = meta.info.num_pieces();
    let stamps = storage.file_stamps();
    let reason = if cfg.recheck {
        "--recheck".to_owned()
    } else {
        match std::fs::read(&path) {
            Err(_) if stamps.iter().all(|f| f.size == 0) => {
                return (Bitfield::new(n), StartState::Fresh)
            }
            Err(_) => "files exist but there is no resume data".to_owned(),
            Ok(bytes) => match ResumeData::decode(&bytes, &ih, n, storage.num_files()) {
                Ok(r) => match r.check_disk(&stamps) {
                    DiskCheck::Trusted { changed } => {
                        // Files modified since the save (written after it
                        // before a crash, or edited by someone) are hashed
                        // again, with every piece the resume file lacks:
                        // those verified after the last save are on disk too.
                        let mut known = r.have.clone();
                        for &i in &changed {
                            for p in storage.layout().file_pieces(i) {
                                known.clear(PieceIndex(p));
                            }
                        }
                        let s = storage.clone();
                        let threads = cfg.threads;
                        let have =
                            tokio::task::spawn_blocking(move || s.recheck_missing(&known, threads))
                                .await
                                .unwrap_or_else(|_| Bitfield::new(n));
                        return (
                            have,
                            StartState::Resumed {
                                changed_files: changed.len(),
                            },
                        );
                    }
                    DiskCheck::Untrusted => {
                        "files on disk changed since the resume data was written".to_owned()
                    }
                },
                Err(e) => e.to_string(),
            },
        }
    };
    let s = storage.clone();
    let threads = cfg.threads;
    let have = tokio::task::spawn_blocking(move || s.recheck(threads))
        .await
        .unwrap_or_else(|_| Bitfield::new(n));
    (have, StartState::Rechecked { reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_announce_is_recognised() {
        let listen: SocketAddr = "10.78.0.1:27100".parse().unwrap();
        let ext: std::net::IpAddr = "198.51.100.7".parse().unwrap();
        let me = |a: &str| is_self(&a.parse().unwrap(), Some(listen), Some(ext));
        assert!(me("10.78.0.1:27100"));
        assert!(me("127.0.0.1:27100"));
        assert!(me("198.51.100.7:27100"));
        assert!(!me("10.78.0.2:27100"));
        assert!(!me("10.78.0.1:27101"));
        assert!(!is_self(&listen, None, None));
    }
}
