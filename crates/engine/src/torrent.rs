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
use lodestone_core::{Bitfield, InfoHashes, Metainfo, PeerId, PieceIndex};
use lodestone_peer::picker::PeerKey;
use lodestone_torrent::{
    Action, Checked, CoreConfig, Event, MagnetCore, Phase, StopReason, TorrentCore,
};
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
    /// One per file (empty: all normal); applied after `only_files`.
    pub file_priorities: Vec<lodestone_torrent::FilePriority>,
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
    /// Keep the resume data here instead of `<output_dir>/.lodestone/`
    /// (a state directory: the content's folder may be read-only).
    pub resume_file: Option<PathBuf>,
    /// Run inside a session: its listener routes our peers to us and its
    /// pool hashes for us (`listen` is then only the address we announce).
    pub shared: Option<Shared>,
    /// TCP, uTP (on the UDP socket the DHT shares) or both, and in which
    /// order peers are dialled.
    pub transports: peer_io::Transports,
}

type Inputs = (mpsc::Sender<PeerInput>, mpsc::Receiver<PeerInput>);

/// Told a magnet's metadata once it is verified.
pub type OnMetadata = Arc<dyn Fn(&Arc<Metainfo>) + Send + Sync>;

/// The session's cap on peer connections, counted across its torrents.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    open: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

impl ConnectionCap {
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::default(),
            max,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn is_full(&self) -> bool {
        self.open() >= self.max
    }

    /// Count one more connection until the slot is dropped.
    fn take(&self) -> ConnectionSlot {
        self.open.fetch_add(1, Ordering::Relaxed);
        ConnectionSlot(self.open.clone())
    }
}

/// One open connection of a [`ConnectionCap`].
struct ConnectionSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a session shares with each of its torrents.
#[derive(Clone)]
pub struct Shared {
    pub pool: Arc<crate::pool::Pool>,
    /// Every torrent's connections count against it.
    pub connections: Option<ConnectionCap>,
    /// Where the torrent says its rates (for the session's global limits).
    pub rates: Arc<crate::bandwidth::RateGauge>,
    /// The session's Local Peer Discovery, when it has one.
    pub lpd: Option<crate::lpd::Service>,
    /// Initial checks of files running at once.
    pub checks: Arc<tokio::sync::Semaphore>,
    /// The torrent's input channel, made by the session so that its
    /// router can feed it; taken once, when the torrent starts.
    inputs: Arc<std::sync::Mutex<Option<Inputs>>>,
    /// Told a magnet's metadata when it arrives (the session keeps it, so
    /// that a restart does not fetch it again).
    pub on_metadata: Option<OnMetadata>,
}

impl Shared {
    /// A torrent's share; `input` is where the session routes its peers.
    pub fn new(
        pool: Arc<crate::pool::Pool>,
        checks: Arc<tokio::sync::Semaphore>,
    ) -> (Self, mpsc::Sender<PeerInput>) {
        let (tx, rx) = mpsc::channel(32);
        let shared = Self {
            pool,
            checks,
            inputs: Arc::new(std::sync::Mutex::new(Some((tx.clone(), rx)))),
            on_metadata: None,
            connections: None,
            rates: Arc::default(),
            lpd: None,
        };
        (shared, tx)
    }

    fn take_inputs(&self) -> Option<Inputs> {
        self.inputs.lock().ok()?.take()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
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
            file_priorities: Vec::new(),
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
            resume_file: None,
            shared: None,
            transports: peer_io::Transports::default(),
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
    #[error(transparent)]
    Metadata(#[from] crate::magnet::FetchError),
    #[error("stopped before its files were checked")]
    Stopped,
    #[error("{0}")]
    Session(String),
}

/// A magnet to start from: the metadata comes from its peers, on the
/// connections that then carry the content.
#[derive(Debug)]
pub struct MagnetStart {
    pub info_hashes: InfoHashes,
    /// The magnet's trackers (`tr`), each its own tier.
    pub trackers: Vec<String>,
    pub max_metadata_size: u32,
    /// A .torrent found another way (the magnet's `xs`), taken if it
    /// comes before the peers' copy.
    pub torrent_file: Option<mpsc::Receiver<Metainfo>>,
}

/// What a torrent starts from.
#[derive(Debug)]
pub enum Start {
    Torrent(Arc<Metainfo>),
    /// Its metadata comes from its peers first.
    Magnet(MagnetStart),
}

impl Start {
    pub fn info_hash(&self) -> lodestone_core::InfoHash {
        match self {
            Start::Torrent(m) => m.info_hashes.wire(),
            Start::Magnet(m) => m.info_hashes.wire(),
        }
    }
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
    /// While a magnet's metadata is missing: what the fetch does, and
    /// when (since the run started).
    Metadata(crate::magnet::FetchEvent, Duration),
    /// The metadata is here (from peers, or from the magnet's `.torrent`
    /// URL when `from_file`); the files are checked next.
    MetadataReady {
        meta: Arc<Metainfo>,
        from_file: bool,
        /// Since the run started.
        after: Duration,
    },
    Started {
        state: StartState,
        have: u32,
        num_pieces: u32,
        /// Since the run started.
        after: Duration,
    },
    PeerConnected {
        addr: SocketAddr,
        client: String,
        source: PeerSource,
        /// Over uTP rather than TCP.
        utp: bool,
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
    Sources(Vec<lodestone_torrent::Source>),
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

/// What a session asks of one of its torrents.
#[derive(Debug)]
pub enum Command {
    /// Its state now, as typed data.
    Snapshot(tokio::sync::oneshot::Sender<TorrentSnapshot>),
    /// Bytes per second, down and up (`None`: no limit).
    SetLimits(Option<u64>, Option<u64>),
    /// One per file (a magnet still fetching its metadata keeps them for
    /// when it has it).
    SetFilePriorities(Vec<lodestone_torrent::FilePriority>),
    /// Ask the trackers (each as soon as its `min interval` allows) and,
    /// unless the torrent is private, the DHT for peers now.
    Reannounce,
}

/// One torrent's state, as a session shows it (words are the caller's).
#[derive(Debug, Clone)]
pub struct TorrentSnapshot {
    pub info_hash: lodestone_core::InfoHash,
    /// While a magnet's metadata is missing: what the fetch knows.
    pub metadata: Option<lodestone_torrent::MetadataStatus>,
    /// Once the metadata is known.
    pub stats: Option<Stats>,
    pub peers: Vec<lodestone_torrent::PeerInfo>,
    pub files: Vec<lodestone_torrent::FileInfo>,
    pub sources: Vec<lodestone_torrent::Source>,
    /// Each piece's state and priority (empty while the metadata is missing).
    pub pieces: Vec<lodestone_torrent::PieceInfo>,
}

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
    /// Its place under the session's connection cap.
    _slot: Option<ConnectionSlot>,
}

/// Carries out the core's actions.
struct Driver {
    core: Phase,
    /// Once the metadata is known.
    storage: Option<Arc<Storage>>,
    conns: HashMap<PeerKey, Conn>,
    input_tx: mpsc::Sender<PeerInput>,
    input_rx: mpsc::Receiver<PeerInput>,
    /// What the disk pool hands back; made with the first check or read
    /// (an idle torrent of a session of thousands has none).
    disk: Option<(mpsc::Sender<DiskResult>, mpsc::Receiver<DiskResult>)>,
    hashers: Arc<crate::pool::Pool>,
    /// Made with the first connection.
    read_buffers: Option<Arc<peer_io::ReadBuffers>>,
    events: EventSink,
    /// What trackers are told about our progress.
    progress: crate::tracker::Progress,
    /// Where they hear it: made with the first tracker.
    progress_tx: Option<watch::Sender<crate::tracker::Progress>>,
    /// Running tracker tiers, by their first URL.
    trackers: Vec<(Vec<String>, AbortOnDrop)>,
    /// Wakes the tracker tiers and the DHT discovery: announce now.
    announce_now: watch::Sender<()>,
    _listener: Option<tokio::task::JoinHandle<()>>,
    _utp_listener: Option<AbortOnDrop>,
    _dht: Option<AbortOnDrop>,
    _lpd: Option<Lpd>,
    cfg: TorrentConfig,
    started: Instant,
    /// From `started` to the core's creation: the times the core reports
    /// count from its creation.
    core_offset: Duration,
}

/// Where a torrent of a session says what it does (the session tags it
/// with the torrent and puts it on its one stream).
pub(crate) trait SessionSink: Send + Sync {
    /// A state change: never lost, and never waits (a slow reader must
    /// not stall the torrent; they are few).
    fn state(&self, event: TorrentEvent);
    /// Progress, sources, peers coming and going: dropped while the
    /// reader lags (the next is newer, and a snapshot has them all).
    fn progress(&self, event: TorrentEvent);
}

/// A torrent's Local Peer Discovery: its own task, or its place in its
/// session's service (either ends when dropped).
enum Lpd {
    Own { _task: AbortOnDrop },
    Session { _place: crate::lpd::Registration },
}

/// A state event waiting for room on its caller's channel.
type WaitForRoom = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Where a torrent's events go: its caller's channel, or its session.
#[derive(Clone)]
pub(crate) enum EventSink {
    Own(mpsc::Sender<TorrentEvent>),
    Session(Arc<dyn SessionSink>),
}

impl EventSink {
    /// State changes are never dropped (on its own channel, the driver
    /// waits for room).
    async fn send(&self, event: TorrentEvent) {
        match self {
            EventSink::Own(tx) => drop(tx.send(event).await),
            EventSink::Session(s) => s.state(event),
        }
    }

    /// A state change, without waiting: on its own channel, what waits
    /// for room is handed back to be awaited (boxed: the running driver's
    /// future keeps no room for it).
    fn send_now(&self, event: TorrentEvent) -> Option<WaitForRoom> {
        match self {
            EventSink::Own(tx) => match tx.try_send(event) {
                Err(mpsc::error::TrySendError::Full(event)) => {
                    let tx = tx.clone();
                    Some(Box::pin(async move {
                        let _ = tx.send(event).await;
                    }))
                }
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
            },
            EventSink::Session(s) => {
                s.state(event);
                None
            }
        }
    }

    /// Drop it if the reader lags (progress: the next one is newer).
    fn try_send(&self, event: TorrentEvent) {
        match self {
            EventSink::Own(tx) => drop(tx.try_send(event)),
            EventSink::Session(s) => s.progress(event),
        }
    }
}

/// Run a torrent until it is done (complete and seed time over), stopped
/// through `shutdown`, or paused by a disk error.
pub async fn run(
    meta: Arc<Metainfo>,
    cfg: TorrentConfig,
    events: mpsc::Sender<TorrentEvent>,
    shutdown: watch::Receiver<bool>,
) -> Result<Summary, EngineError> {
    let mut d = Driver::start(Start::Torrent(meta), cfg, EventSink::Own(events)).await?;
    d.run(shutdown).await
}

/// Run a magnet: fetch its metadata from the peers it finds, then
/// download on the same connections ([`TorrentEvent::MetadataReady`] in
/// between).
pub async fn run_magnet(
    magnet: MagnetStart,
    cfg: TorrentConfig,
    events: mpsc::Sender<TorrentEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Summary, EngineError> {
    let mut magnet = magnet;
    let mut file = magnet.torrent_file.take();
    let mut d = Driver::start(Start::Magnet(magnet), cfg, EventSink::Own(events)).await?;
    let (meta, from_file) = d.fetch(&mut file, &mut shutdown).await?;
    d.become_torrent(meta, from_file).await?;
    d.run(shutdown).await
}

/// A torrent of a session: [`run`] or [`run_magnet`], its events on the
/// session's stream.
///
/// The future lives as long as the torrent runs, and a session holds
/// thousands: what runs once (start, metadata, check) is boxed and freed
/// when done, and the driver is boxed, so that what stays is the running
/// driver's state (an async fn would keep room for its arguments and for
/// every phase, some kilobytes).
pub(crate) fn run_in_session(
    add: Start,
    cfg: TorrentConfig,
    events: EventSink,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = Result<Summary, EngineError>> {
    let start = Box::pin(start_in_session(add, cfg, events, shutdown));
    async move {
        let (mut d, shutdown) = start.await?;
        d.run(shutdown).await
    }
}

/// [`run_in_session`] up to the point where the torrent runs.
async fn start_in_session(
    add: Start,
    cfg: TorrentConfig,
    events: EventSink,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(Box<Driver>, watch::Receiver<bool>), EngineError> {
    // A stop while the files are checked (or wait their turn to be)
    // ends the check: a remove must not wait for a long hash.
    let stopped = |rx: &watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let on_metadata = cfg.shared.as_ref().and_then(|s| s.on_metadata.clone());
    let d = match add {
        Start::Torrent(meta) => {
            tokio::select! {
                d = Driver::start(Start::Torrent(meta), cfg, events) => d?,
                () = stopped(&shutdown) => return Err(EngineError::Stopped),
            }
        }
        Start::Magnet(mut magnet) => {
            let mut file = magnet.torrent_file.take();
            let mut d = Driver::start(Start::Magnet(magnet), cfg, events).await?;
            let (meta, from_file) = d.fetch(&mut file, &mut shutdown).await?;
            if let Some(f) = on_metadata {
                f(&meta);
            }
            tokio::select! {
                r = d.become_torrent(meta, from_file) => r?,
                () = stopped(&shutdown) => return Err(EngineError::Stopped),
            }
            d
        }
    };
    Ok((Box::new(d), shutdown))
}

/// Only the metadata phase of [`run_magnet`]: the metadata, then stop.
pub(crate) async fn fetch_only(
    magnet: MagnetStart,
    cfg: TorrentConfig,
    fetch_events: mpsc::Sender<crate::magnet::FetchEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Metainfo, crate::magnet::FetchError> {
    use crate::magnet::FetchError;
    let (tx, mut rx) = mpsc::channel(64);
    let forward = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let TorrentEvent::Metadata(f, _) = e {
                let _ = fetch_events.send(f).await;
            }
        }
    });
    let r = match Driver::start(Start::Magnet(magnet), cfg, EventSink::Own(tx)).await {
        Ok(mut d) => d.fetch(&mut None, &mut shutdown).await.map(|(m, _)| m),
        Err(e) => Err(e),
    };
    let _ = forward.await;
    r.map(|m| Arc::try_unwrap(m).unwrap_or_else(|m| (*m).clone()))
        .map_err(|e| match e {
            EngineError::Metadata(f) => f,
            EngineError::Listen { addr, error } => FetchError::Listen { addr, error },
            _ => FetchError::Stopped,
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
    /// Listen, start discovery and, for a torrent, check its files.
    async fn start(
        start: Start,
        cfg: TorrentConfig,
        events: EventSink,
    ) -> Result<Self, EngineError> {
        let started = Instant::now();
        let (info_hash, private) = match &start {
            Start::Torrent(meta) => {
                if meta.info.pieces.is_empty() && meta.info.num_pieces() > 0 {
                    return Err(EngineError::V2Only);
                }
                (meta.info_hashes.wire(), meta.info.private)
            }
            Start::Magnet(m) => (m.info_hashes.wire(), false),
        };
        // Listen first: peers that arrive during the initial check wait in
        // the backlog. Small: a slow driver then slows the readers (TCP
        // backpressure) instead of buffering megabytes of reads.
        let shared = cfg.shared.clone();
        let (input_tx, input_rx) = match shared.as_ref().and_then(|s| s.take_inputs()) {
            Some(pair) => pair,
            None => mpsc::channel(32),
        };
        let listener = match cfg.listen {
            // The session listens for every torrent.
            Some(_) if shared.is_some() => None,
            Some(addr) if cfg.transports.tcp => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|error| EngineError::Listen { addr, error })?;
                Some(peer_io::listen(
                    l,
                    input_tx.clone(),
                    Arc::new(move || vec![info_hash]),
                    cfg.seed,
                ))
            }
            _ => None,
        };
        // Incoming uTP arrives on the shared UDP socket (the session
        // accepts it for every torrent when there is one).
        let utp_listener = match (&cfg.transports.utp, shared.is_some()) {
            (Some(utp), false) => Some(AbortOnDrop(peer_io::listen_utp(
                utp,
                input_tx.clone(),
                Arc::new(move || vec![info_hash]),
                cfg.seed,
            ))),
            _ => None,
        };
        let announce_now = watch::channel(()).0;
        // Never for a private torrent (BEP 27): its peers come from its trackers.
        let dht = cfg.dht.clone().filter(|_| !private).map(|dht| {
            let now = announce_now.subscribe();
            spawn_dht_discovery(dht, info_hash, cfg.listen, input_tx.clone(), now)
        });
        let lpd = match (cfg.lpd, cfg.listen) {
            (true, Some(listen)) if !private => {
                Some(match shared.as_ref().and_then(|s| s.lpd.as_ref()) {
                    // The session's one service announces us with the others.
                    Some(service) => Lpd::Session {
                        _place: service.register(info_hash, input_tx.clone()),
                    },
                    None => Lpd::Own {
                        _task: AbortOnDrop(tokio::spawn(crate::lpd::run(
                            info_hash,
                            listen.port(),
                            crate::lpd_cookie(&cfg.peer_id),
                            input_tx.clone(),
                        ))),
                    },
                })
            }
            _ => None,
        };
        // A magnet does not know its size: it says 1 byte is left.
        let progress = crate::tracker::Progress {
            left: 1,
            ..Default::default()
        };
        let (core, storage, tiers) = match start {
            Start::Magnet(m) => {
                let mut core = MagnetCore::new(
                    m.info_hashes,
                    core_config(&cfg),
                    m.max_metadata_size,
                    Instant::now(),
                );
                // Its sources table lists them from the start.
                core.set_trackers(Instant::now(), m.trackers.iter().cloned());
                let tiers = m.trackers.into_iter().map(|t| vec![t]).collect();
                (Phase::Metadata(Box::new(core)), None, tiers)
            }
            Start::Torrent(meta) => {
                let (storage, core) = checked_core(&meta, &cfg, &events, started).await?;
                let tiers = meta.trackers.clone();
                (Phase::Ready(Box::new(core)), Some(storage), tiers)
            }
        };
        let core_offset = started.elapsed();
        let mut d = Driver {
            core,
            storage,
            conns: HashMap::new(),
            input_tx,
            input_rx,
            disk: None,
            hashers: match &shared {
                Some(s) => s.pool.clone(),
                None => Arc::new(crate::pool::Pool::new("hash", cfg.threads)),
            },
            read_buffers: None,
            events,
            progress,
            progress_tx: None,
            trackers: Vec::new(),
            announce_now,
            _listener: listener,
            _utp_listener: utp_listener,
            _dht: dht,
            _lpd: lpd,
            cfg,
            started,
            core_offset,
        };
        d.apply_file_priorities(Instant::now());
        if let Phase::Ready(t) = &d.core {
            // Trackers start once the files are checked, so that the first
            // announce says how much is really left (a seeder says 0).
            let left = t.stats().bytes_left;
            d.set_progress(crate::tracker::Progress { left, ..d.progress });
        }
        for tier in tiers {
            d.start_tracker(tier);
        }
        d.drain().await;
        Ok(d)
    }

    fn start_tracker(&mut self, tier: Vec<String>) {
        if !self.cfg.trackers || tier.is_empty() || self.trackers.iter().any(|(t, _)| *t == tier) {
            return;
        }
        let base = lodestone_wire::tracker::AnnounceRequest {
            info_hash: self.core.info_hash(),
            peer_id: self.cfg.peer_id,
            port: self.cfg.listen.map_or(0, |a| a.port()),
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: lodestone_wire::tracker::AnnounceEvent::Started,
            num_want: 50,
            key: self.cfg.seed as u32,
        };
        let task = AbortOnDrop(tokio::spawn(crate::tracker::run_tier(
            tier.clone(),
            base,
            self.progress_rx(),
            self.input_tx.clone(),
            self.cfg.http.clone(),
            self.announce_now.subscribe(),
        )));
        self.trackers.push((tier, task));
    }

    /// Where the disk pool hands its results back.
    fn disk_tx(&mut self) -> mpsc::Sender<DiskResult> {
        self.disk.get_or_insert_with(|| mpsc::channel(64)).0.clone()
    }

    /// Tell the trackers, if there are any and it changed.
    fn set_progress(&mut self, p: crate::tracker::Progress) {
        if p == self.progress {
            return;
        }
        self.progress = p;
        if let Some(tx) = &self.progress_tx {
            tx.send_replace(p);
        }
    }

    /// For one more tracker.
    fn progress_rx(&mut self) -> watch::Receiver<crate::tracker::Progress> {
        let now = self.progress;
        self.progress_tx
            .get_or_insert_with(|| watch::channel(now).0)
            .subscribe()
    }

    /// The metadata phase: until the peers gave a verified info
    /// dictionary (or `file` a .torrent), or `shutdown`.
    async fn fetch(
        &mut self,
        file: &mut Option<mpsc::Receiver<Metainfo>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(Arc<Metainfo>, bool), EngineError> {
        use crate::magnet::FetchError;
        loop {
            if let Phase::Metadata(m) = &self.core {
                if let Some(info) = m.metadata() {
                    let meta = Metainfo::from_info_bytes(info).map_err(FetchError::Invalid)?;
                    return Ok((Arc::new(meta), false));
                }
            }
            let deadline = tokio::time::Instant::from_std(self.core.poll_timeout());
            let from_file = async {
                match file.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(input) = self.input_rx.recv() => self.on_input(input),
                _ = tokio::time::sleep_until(deadline) => self.core.handle_timeout(Instant::now()),
                m = from_file => match m {
                    Some(m) => return Ok((Arc::new(m), true)),
                    None => *file = None,
                },
                _ = shutdown.changed() => return Err(FetchError::Stopped.into()),
            }
            self.drain().await;
        }
    }

    /// The metadata is in: merge the magnet's trackers, check the files,
    /// and hand the peers to a torrent core on the same connections.
    async fn become_torrent(
        &mut self,
        meta: Arc<Metainfo>,
        from_file: bool,
    ) -> Result<(), EngineError> {
        if !matches!(self.core, Phase::Metadata(_)) {
            return Ok(());
        }
        if meta.info.pieces.is_empty() && meta.info.num_pieces() > 0 {
            return Err(EngineError::V2Only);
        }
        let mut merged = (*meta).clone();
        for (tier, _) in &self.trackers {
            if !merged.trackers.iter().any(|t| t == tier) {
                merged.trackers.push(tier.clone());
            }
        }
        let meta = Arc::new(merged);
        if meta.info.private {
            // The magnet did not say; the DHT is not for it (BEP 27).
            self._dht = None;
        }
        self.events
            .send(TorrentEvent::MetadataReady {
                meta: meta.clone(),
                from_file,
                after: self.started.elapsed(),
            })
            .await;
        let started = self.started;
        let (storage, have, resume_stale) = {
            let (storage, have, state) = check_files(&meta, &self.cfg).await?;
            let stale = started_event(&self.events, state, &have, started).await;
            (storage, have, stale)
        };
        // A stand-in for the moment the magnet core is moved out.
        let idle = MagnetCore::new(
            meta.info_hashes,
            CoreConfig::new(self.cfg.peer_id, 0),
            0,
            Instant::now(),
        );
        let Phase::Metadata(m) = std::mem::replace(&mut self.core, Phase::Metadata(Box::new(idle)))
        else {
            return Ok(());
        };
        let mut core =
            TorrentCore::from_magnet(*m, meta.clone(), &have, resume_stale, Instant::now());
        // Limits set while the metadata was fetched.
        core.set_rate_limits(
            Instant::now(),
            self.cfg.download_rate_limit,
            self.cfg.upload_rate_limit,
        );
        if !self.cfg.file_priorities.is_empty() {
            let _ = core.set_file_priorities(Instant::now(), &self.cfg.file_priorities);
        }
        let left = core.stats().bytes_left;
        self.set_progress(crate::tracker::Progress {
            left,
            ..self.progress
        });
        self.core = Phase::Ready(Box::new(core));
        self.storage = Some(storage);
        for tier in meta.trackers.clone() {
            self.start_tracker(tier);
        }
        self.drain().await;
        Ok(())
    }

    /// The download and seeding, until done or `shutdown`.
    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<Summary, EngineError> {
        let mut asked_to_stop = false;
        while let Phase::Ready(t) = &self.core {
            if t.is_finished(Instant::now()) {
                break;
            }
            let deadline = tokio::time::Instant::from_std(t.poll_timeout());
            tokio::select! {
                Some(input) = self.input_rx.recv() => {
                    self.on_input(input);
                    // Take what else is ready before carrying out the
                    // actions: fewer wakeups, one flush per peer.
                    for _ in 0..256 {
                        match self.input_rx.try_recv() {
                            Ok(i) => self.on_input(i),
                            Err(_) => break,
                        }
                    }
                }
                Some(result) = recv_disk(&mut self.disk) => self.on_disk(result),
                _ = tokio::time::sleep_until(deadline) => self.core.handle_timeout(Instant::now()),
                _ = shutdown.changed() => {
                    asked_to_stop = true;
                    break;
                }
            }
            self.drain().await;
        }
        let Phase::Ready(t) = &mut self.core else {
            return Err(crate::magnet::FetchError::Stopped.into());
        };
        // Read before the peers are closed: the ratio is judged on what was
        // uploaded by then.
        let stopped = if asked_to_stop {
            STOP_ASKED
        } else {
            match t.stop_reason(Instant::now()) {
                Some(StopReason::Paused) => STOP_PAUSED,
                Some(StopReason::SeedRatio) => STOP_SEED_RATIO,
                Some(StopReason::Done) => STOP_DONE,
                Some(StopReason::SeedTime) | Some(StopReason::Asked) | None => STOP_SEED_TIME,
            }
        };
        // Nobody reads the inputs any more: a writer must not wait to report.
        self.input_rx.close();
        Box::pin(self.close_connections()).await;
        if let Phase::Ready(t) = &mut self.core {
            t.stop(Instant::now());
        }
        self.drain().await;
        if let Some(s) = &self.storage {
            let _ = s.sync();
        }
        let Phase::Ready(t) = &self.core else {
            return Err(crate::magnet::FetchError::Stopped.into());
        };
        let offset = self.core_offset;
        Ok(Summary {
            complete: t.is_complete(),
            stats: t.stats(),
            time_to_complete: t.completed_after().map(|x| x + offset),
            time_to_first_byte: t.first_byte_after().map(|x| x + offset),
            peers_by_source: t.peers_by_source().clone(),
            paused: t.paused().map(str::to_owned),
            stopped,
        })
    }

    fn on_input(&mut self, input: PeerInput) {
        let now = Instant::now();
        match input {
            PeerInput::Connected { peer, .. } => {
                let peer_io::NewPeer {
                    stream,
                    addr,
                    source,
                    initial,
                    cipher,
                } = *peer;
                let cap = self.cfg.shared.as_ref().and_then(|s| s.connections.clone());
                // At the session's cap, a peer that dialled us is turned
                // away (one we dialled was let through at the dial).
                if source == PeerSource::Incoming && cap.as_ref().is_some_and(|c| c.is_full()) {
                    return;
                }
                let Some(key) = self.core.handle_connected(
                    now,
                    addr,
                    source,
                    cipher.is_some(),
                    stream.is_utp(),
                ) else {
                    return;
                };
                let conn = Connection::spawn(
                    key,
                    stream,
                    self.input_tx.clone(),
                    cipher,
                    self.read_buffers.get_or_insert_with(Arc::default).clone(),
                );
                self.conns.insert(
                    key,
                    Conn {
                        conn,
                        pending: None,
                        _slot: cap.map(|c| c.take()),
                    },
                );
                if !initial.is_empty() {
                    self.core.handle_data(now, key, initial[..].into());
                }
            }
            PeerInput::Writable { key } => {
                self.flush(now, key);
            }
            PeerInput::Closed { key, reason } => {
                self.conns.remove(&key);
                self.core.handle_closed(now, key, reason);
            }
            PeerInput::ConnectFailed { addr, .. } => self.core.handle_connect_failed(now, addr),
            PeerInput::Discovered { addrs, source } => {
                self.core.handle_discovered(now, &addrs, source)
            }
            PeerInput::DhtRound(r) => self.core.handle_dht_round(now, r),
            PeerInput::TrackerStatus(s) => self.core.handle_tracker_status(now, *s),
            PeerInput::SourceStatus {
                source: PeerSource::Lpd,
                status,
                next_in,
            } => self.core.handle_lpd_status(now, status, next_in),
            PeerInput::SourceStatus { .. } => {}
            PeerInput::Data { key, bytes } => self.core.handle_data(now, key, bytes),
            PeerInput::Command(Command::Snapshot(tx)) => {
                let _ = tx.send(self.snapshot(now));
            }
            PeerInput::Command(Command::SetLimits(down, up)) => {
                self.cfg.download_rate_limit = down;
                self.cfg.upload_rate_limit = up;
                if let Phase::Ready(t) = &mut self.core {
                    t.set_rate_limits(now, down, up);
                }
            }
            PeerInput::Command(Command::SetFilePriorities(p)) => {
                self.cfg.file_priorities = p;
                self.apply_file_priorities(now);
            }
            PeerInput::Command(Command::Reannounce) => {
                self.announce_now.send_replace(());
            }
        }
    }

    /// The configured priorities, once there is a torrent to apply them to
    /// (a list of the wrong length was refused by the session already).
    fn apply_file_priorities(&mut self, now: Instant) {
        if let Phase::Ready(t) = &mut self.core {
            if !self.cfg.file_priorities.is_empty() {
                let _ = t.set_file_priorities(now, &self.cfg.file_priorities);
            }
        }
    }

    fn snapshot(&self, now: Instant) -> TorrentSnapshot {
        let info_hash = self.core.info_hash();
        match &self.core {
            Phase::Metadata(m) => TorrentSnapshot {
                info_hash,
                metadata: Some(m.status()),
                stats: None,
                peers: Vec::new(),
                files: Vec::new(),
                sources: m.sources(now),
                pieces: Vec::new(),
            },
            Phase::Ready(t) => TorrentSnapshot {
                info_hash,
                metadata: None,
                stats: Some(t.stats()),
                peers: t.peers(),
                files: t.files(),
                sources: t.sources(now),
                pieces: t.pieces(),
            },
        }
    }

    fn on_disk(&mut self, result: DiskResult) {
        let now = Instant::now();
        let Phase::Ready(t) = &mut self.core else {
            return;
        };
        match result {
            DiskResult::Checked(piece, checked) => t.handle_checked(now, piece, checked),
            DiskResult::Read(piece, result) => t.handle_read(piece, result),
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
            loop {
                let e = match &mut self.core {
                    Phase::Metadata(m) => m
                        .poll_event()
                        .map(|e| TorrentEvent::Metadata(e, self.started.elapsed()))
                        .or_else(|| m.poll_sources().map(TorrentEvent::Sources)),
                    Phase::Ready(t) => t.poll_event().map(|e| self_event(e, self.core_offset)),
                };
                let Some(e) = e else { break };
                idle = false;
                if let Some(wait) = self.emit(e) {
                    wait.await;
                }
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
                first,
            } => {
                let cap = self
                    .cfg
                    .shared
                    .as_ref()
                    .and_then(|s| s.connections.as_ref());
                if cap.is_some_and(|c| c.is_full()) {
                    // Not now: the core tries again after its backoff.
                    self.core.handle_connect_failed(now, addr);
                    return;
                }
                let info_hash = self.core.info_hash();
                let obfuscate = encrypt.map(|k| peer_io::Obfuscate {
                    info_hash,
                    private_key: k.private_key,
                    pad: k.pad,
                });
                peer_io::connect(
                    addr,
                    self.cfg.listen,
                    source,
                    self.input_tx.clone(),
                    obfuscate,
                    self.cfg.transports.clone(),
                    first,
                );
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
                let Some(storage) = self.storage.clone() else {
                    return;
                };
                let tx = self.disk_tx();
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
                let Some(storage) = self.storage.clone() else {
                    return;
                };
                let mut buf = buf;
                let tx = self.disk_tx();
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
                if let Phase::Ready(t) = &mut self.core {
                    t.handle_resume_saved(now, saved, unvouched);
                }
            }
            Action::Progress(p) => self.set_progress(p),
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
    /// (the next one says the same, newer); the others wait for it (what
    /// is handed back).
    #[must_use]
    fn emit(&mut self, e: TorrentEvent) -> Option<WaitForRoom> {
        match e {
            TorrentEvent::Progress(stats) => {
                if let Some(s) = &self.cfg.shared {
                    s.rates.set(stats.download_rate, stats.upload_rate);
                }
                self.events.try_send(TorrentEvent::Progress(stats));
                None
            }
            TorrentEvent::Sources(_) => {
                self.events.try_send(e);
                None
            }
            // In a session, peers come and go too often to be kept for a
            // slow reader; its snapshot lists them.
            TorrentEvent::PeerConnected { .. } | TorrentEvent::PeerDisconnected { .. }
                if matches!(self.events, EventSink::Session(_)) =>
            {
                self.events.try_send(e);
                None
            }
            e => self.events.send_now(e),
        }
    }

    /// Flush the files, then record what is verified on them. Returns
    /// (saved, a file too freshly written to vouch for).
    fn save_resume(&self, have: Bitfield) -> (bool, bool) {
        let Some(storage) = &self.storage else {
            return (false, false);
        };
        // Data first, then the claim that it is there.
        if storage.sync().is_err() {
            return (false, false);
        }
        let now = std::time::SystemTime::now();
        let files: Vec<_> = storage
            .file_stamps()
            .into_iter()
            .map(|f| f.vouched_at(now))
            .collect();
        let unvouched = files.iter().any(|f| f.size > 0 && f.mtime_ns.is_none());
        let r = ResumeData {
            info_hash: self.core.info_hash(),
            have,
            files,
        };
        let path = resume_path(&self.cfg, &r.info_hash);
        (r.save(&path).is_ok(), unvouched)
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

/// The next disk result; never, while there is no disk channel yet.
async fn recv_disk(
    disk: &mut Option<(mpsc::Sender<DiskResult>, mpsc::Receiver<DiskResult>)>,
) -> Option<DiskResult> {
    match disk {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Where the torrent's resume data lives.
fn resume_path(cfg: &TorrentConfig, info_hash: &lodestone_core::InfoHash) -> PathBuf {
    match &cfg.resume_file {
        Some(p) => p.clone(),
        None => resume::path_for(&cfg.output_dir, info_hash),
    }
}

/// Check what is on disk of `meta` (see [`initial_have`]).
async fn check_files(
    meta: &Arc<Metainfo>,
    cfg: &TorrentConfig,
) -> Result<(Arc<Storage>, Bitfield, StartState), EngineError> {
    // In a session, checks take turns: a thousand torrents starting at
    // once would otherwise each take a thread (and its memory) to hash.
    let _turn = match &cfg.shared {
        Some(s) => s.checks.clone().acquire_owned().await.ok(),
        None => None,
    };
    let storage = Arc::new(Storage::new(&cfg.output_dir, meta.clone())?);
    let (have, state) = initial_have(meta, cfg, &storage).await;
    Ok((storage, have, state))
}

/// Say how the torrent started; true when what was found on disk is not
/// in the resume data yet (it is saved soon, so the next start need not
/// hash it again).
async fn started_event(
    events: &EventSink,
    state: StartState,
    have: &Bitfield,
    started: Instant,
) -> bool {
    let stale = !matches!(
        state,
        StartState::Fresh | StartState::Resumed { changed_files: 0 }
    );
    events
        .send(TorrentEvent::Started {
            state,
            have: have.count(),
            num_pieces: have.len(),
            after: started.elapsed(),
        })
        .await;
    stale
}

/// A torrent core for `meta`, its files checked.
async fn checked_core(
    meta: &Arc<Metainfo>,
    cfg: &TorrentConfig,
    events: &EventSink,
    started: Instant,
) -> Result<(Arc<Storage>, TorrentCore), EngineError> {
    let (storage, have, state) = check_files(meta, cfg).await?;
    let stale = started_event(events, state, &have, started).await;
    let core = TorrentCore::new(meta.clone(), core_config(cfg), &have, stale, Instant::now());
    Ok((storage, core))
}

/// The core's event in the engine's words; its times count from the run's start.
fn self_event(e: Event, offset: Duration) -> TorrentEvent {
    match e {
        Event::PeerConnected {
            addr,
            client,
            source,
            utp,
        } => TorrentEvent::PeerConnected {
            addr,
            client,
            source,
            utp,
        },
        Event::PeerDisconnected { addr, reason } => TorrentEvent::PeerDisconnected { addr, reason },
        Event::HashFailed { piece, peers } => TorrentEvent::HashFailed { piece, peers },
        Event::PeerBanned { addr, reason } => TorrentEvent::PeerBanned { addr, reason },
        Event::Completed { after } => TorrentEvent::Completed {
            after: after + offset,
        },
        Event::Paused { reason } => TorrentEvent::Paused { reason },
        Event::ReadFailed { piece, reason } => TorrentEvent::ReadFailed { piece, reason },
        Event::Progress(stats) => TorrentEvent::Progress(stats),
        Event::Sources(rows) => TorrentEvent::Sources(rows),
    }
}

/// Ends a task when its owner stops.
pub struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    pub fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(f))
    }
}

/// Run DHT peer discovery for `info_hash` until the handle is dropped; a
/// change on `now` starts a lookup at once.
pub fn spawn_dht_discovery(
    dht: crate::dht::Dht,
    info_hash: lodestone_core::InfoHash,
    listen: Option<SocketAddr>,
    input: mpsc::Sender<PeerInput>,
    now: watch::Receiver<()>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(dht_discovery(
        dht, info_hash, listen, input, now,
    )))
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ask the DHT for peers (announcing our port when we listen), soon again
/// at first and then every few minutes, feeding what it finds to the
/// torrent; when, is [`lodestone_dht::reannounce::Schedule`]'s rule, or
/// at once when `now` changes (the user's "ask for more peers"; one asked
/// for during a round is that round).
///
/// The task lives as long as its torrent and mostly sleeps: what it awaits
/// now and then is boxed, and it is an async block (an async fn keeps its
/// arguments twice), so that it holds a few hundred bytes.
fn dht_discovery(
    dht: crate::dht::Dht,
    info_hash: lodestone_core::InfoHash,
    listen: Option<SocketAddr>,
    input: mpsc::Sender<PeerInput>,
    mut now: watch::Receiver<()>,
) -> impl std::future::Future<Output = ()> {
    use crate::dht::LookupUpdate;
    async move {
        let port = listen.map(|a| a.port());
        let mut schedule = lodestone_dht::reannounce::Schedule::new();
        loop {
            let external_ip = Box::pin(dht.health()).await.external_ip;
            let mut rx = match port {
                Some(p) => Box::pin(dht.announce(info_hash, Some(p))).await,
                None => Box::pin(dht.get_peers(info_hash)).await,
            };
            let wait = schedule.start_round();
            let mut report = lodestone_torrent::DhtRound {
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
                if Box::pin(input.send(msg)).await.is_err() {
                    return;
                }
            }
            now.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                asked = now.changed() => {
                    if asked.is_err() {
                        // Nobody can ask any more: keep the schedule.
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
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
    let path = resume_path(cfg, &ih);
    let n = meta.info.num_pieces();
    let stamps = storage.file_stamps();
    let reason = if cfg.recheck {
        "a recheck was asked for".to_owned()
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
                        let (stop, _stop_on_drop) = StopOnDrop::new();
                        let have = tokio::task::spawn_blocking(move || {
                            s.recheck_missing(&known, threads, &stop)
                        })
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
    let (stop, _stop_on_drop) = StopOnDrop::new();
    let all = Bitfield::new(n);
    let have = tokio::task::spawn_blocking(move || s.recheck_missing(&all, threads, &stop))
        .await
        .unwrap_or_else(|_| Bitfield::new(n));
    (have, StartState::Rechecked { reason })
}

/// Sets its flag when dropped: a check whose torrent is stopped (its
/// future dropped) stops hashing at the next piece.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl StopOnDrop {
    fn new() -> (Arc<std::sync::atomic::AtomicBool>, Self) {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (flag.clone(), Self(flag))
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_torrent_of_a_session_keeps_little() {
        // A session holds one of these futures per torrent for as long as
        // it runs: its start is boxed (freed once done), its driver too.
        let (_stop, shutdown) = watch::channel(false);
        let info = lodestone_core::metainfo::single_file_info("x", 16384, &[0; 40000]);
        let meta = Arc::new(Metainfo::from_info_bytes(&info).unwrap());
        let cfg = TorrentConfig::new(PathBuf::from("/nonexistent"), PeerId([0; 20]), 0);
        let events = EventSink::Own(mpsc::channel(1).0);
        let f = run_in_session(Start::Torrent(meta), cfg, events, shutdown);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 1024, "{size} bytes");
    }

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
