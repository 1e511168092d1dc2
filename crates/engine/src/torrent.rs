//! The download/seed driver of one torrent: a single task that owns the
//! picker, the choker and every peer's session core, fed by the socket
//! tasks and the hashing pool through bounded channels.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lodestone_core::{Bitfield, Metainfo, PeerId, PieceIndex};
use lodestone_peer::choker::{Choker, ChokerConfig, PeerStats};
use lodestone_peer::picker::{
    Block, BlockOutcome, PeerKey, PickerConfig, PiecePicker, Priority, BLOCK_SIZE,
};
use lodestone_peer::queue::QueueSizer;
use lodestone_peer::session::{Event, Session, SessionConfig, TorrentShape};
use lodestone_wire::extended::{
    ExtendedHandshake, OUR_UT_METADATA_ID, OUR_UT_PEX_ID, UT_METADATA, UT_PEX,
};
use lodestone_wire::BlockRequest;
use sha1::{Digest, Sha1};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::peer_io::{self, Connection, PeerInput, PeerSource};
use crate::resume::{self, DiskCheck, ResumeData};
use crate::storage::{Storage, StorageError};

/// A peer with requests out that sends nothing for this long is snubbed;
/// its requests go back to the pool.
const SNUB_AFTER: Duration = Duration::from_secs(15);
const RECHOKE_EVERY: Duration = Duration::from_secs(10);
const RESUME_EVERY: Duration = Duration::from_secs(2);
/// Seeding "forever" is at most this long (an `Instant` cannot go further).
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a stopping torrent waits for its writers to send what is queued.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Bad pieces a peer may be part of before it is banned.
const BAN_STRIKES: u32 = 2;
const TICK: Duration = Duration::from_millis(250);
/// Outgoing connections still being set up at once.
const MAX_HALF_OPEN: usize = 16;
/// Peer addresses remembered for dialling.
const MAX_KNOWN_PEERS: usize = 2000;
/// Bytes of complete pieces waiting to be hashed and written before we
/// stop asking for more: memory stays bounded when the disk or CPU lags.
const MAX_HASH_BACKLOG: u64 = 4 << 20;
/// Whole pieces kept in memory for serving requests.
const READ_CACHE_PIECES: usize = 4;
/// Evicted read-cache buffers kept for reuse (a peer's queue of unsent
/// blocks can span this many pieces).
const MAX_SPARE_READS: usize = 8;
/// A piece still incomplete after this long has its blocks copied out of
/// the read buffers they arrived in: a slow piece must not keep whole
/// 128 KiB read buffers alive for one 16 KiB block each.
const PIECE_COMPACT_AFTER: Duration = Duration::from_secs(3);

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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub have_pieces: u32,
    pub num_pieces: u32,
    pub wanted_bytes: u64,
    pub bytes_left: u64,
    /// Payload bytes this run.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes received that were not used (duplicates, unrequested, bad pieces).
    pub wasted: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub peers: usize,
    pub seeds: usize,
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

/// A simple rate: bytes in the current window, smoothed each tick.
#[derive(Debug, Default, Clone, Copy)]
struct Rate {
    window: u64,
    per_sec: f64,
}

impl Rate {
    fn add(&mut self, n: u64) {
        self.window += n;
    }

    fn tick(&mut self, dt: Duration) {
        let inst = self.window as f64 / dt.as_secs_f64().max(1e-3);
        // Fast to rise, smooth to fall.
        self.per_sec = if inst > self.per_sec {
            inst
        } else {
            self.per_sec * 0.7 + inst * 0.3
        };
        self.window = 0;
    }
}

struct Peer {
    addr: SocketAddr,
    source: PeerSource,
    session: Session,
    conn: Connection,
    /// Bytes the writer could not take yet.
    backlog: VecDeque<Bytes>,
    /// How many requests to keep outstanding with it (its measured
    /// bandwidth-delay product).
    queue: QueueSizer,
    /// Blocks the peer asked for, read and sent as the writer takes them
    /// (not all at once: a peer may queue 2000 requests).
    to_serve: VecDeque<BlockRequest>,
    established: bool,
    is_seed: bool,
    down: Rate,
    up: Rate,
    last_block: Instant,
    snubbed: bool,
    peer_reqq: usize,
    allowed_fast: Vec<PieceIndex>,
    /// The peer's listen port from its extension handshake.
    listen_port: Option<u16>,
    /// Peer exchange with this peer, when it speaks ut_pex.
    pex: Option<lodestone_peer::pex::PexState>,
}

impl Peer {
    /// Where others can reach this peer: the address we dialled, or its
    /// announced listen port for a peer that dialled us.
    fn connectable(&self) -> Option<SocketAddr> {
        match self.source {
            PeerSource::Incoming => self.listen_port.map(|p| SocketAddr::new(self.addr.ip(), p)),
            _ => Some(self.addr),
        }
    }
}

/// A piece being received: its blocks as slices of the buffers they were
/// read into (no copy into a piece buffer; they are hashed and written
/// with `pwritev` from there).
struct PieceBuf {
    /// Block `i` starts at `i * BLOCK_SIZE`; empty until it arrives.
    blocks: Vec<Bytes>,
    /// Who sent each block: (begin, len, peer address).
    sources: Vec<BlockSource>,
    /// When the first block came, and whether the blocks were since copied
    /// out of their read buffers (see [`PIECE_COMPACT_AFTER`]).
    started: Instant,
    compacted: bool,
}

impl PieceBuf {
    /// The block that starts at `begin` and is `len` long, if it is here.
    fn block(blocks: &[Bytes], begin: u32, len: u32) -> Option<&[u8]> {
        let b = blocks.get((begin / BLOCK_SIZE) as usize)?;
        (b.len() == len as usize).then_some(&b[..])
    }
}

#[derive(Debug, Clone, Copy)]
struct BlockSource {
    begin: u32,
    len: u32,
    ip: IpAddr,
}

/// A block of a piece that failed its hash, kept to find the liar once the
/// piece passes (libtorrent calls this "smart ban").
#[derive(Debug, Clone, Copy)]
struct Suspect {
    source: BlockSource,
    digest: [u8; 20],
}

enum DiskResult {
    Verified(PieceIndex, Vec<Bytes>),
    Failed(PieceIndex, Vec<Bytes>, Vec<BlockSource>),
    WriteError(PieceIndex, StorageError),
    /// A piece read for seeding.
    Read(PieceIndex, Result<Bytes, StorageError>),
}

pub struct Torrent {
    meta: Arc<Metainfo>,
    cfg: TorrentConfig,
    storage: Arc<Storage>,
    picker: PiecePicker,
    choker: Choker,
    shape: TorrentShape,
    peers: HashMap<PeerKey, Peer>,
    next_key: u64,
    input_tx: mpsc::Sender<PeerInput>,
    disk_tx: mpsc::Sender<DiskResult>,
    hashers: crate::pool::Pool,
    read_buffers: Arc<peer_io::ReadBuffers>,
    /// Piece buffers evicted from the seeding read cache, reused for the
    /// next reads once the blocks sliced from them are sent.
    spare_reads: Vec<Bytes>,
    /// Bytes handed to the hashers and not yet back.
    hashing: u64,
    events: mpsc::Sender<TorrentEvent>,
    pieces: HashMap<u32, PieceBuf>,
    strikes: HashMap<IpAddr, u32>,
    suspects: HashMap<u32, Vec<Suspect>>,
    banned: HashSet<IpAddr>,
    /// Known peer addresses and when to dial them next.
    dial: HashMap<SocketAddr, (Instant, Duration)>,
    /// Where each known address came from.
    sources: HashMap<SocketAddr, PeerSource>,
    /// The last word from each tracker, and when.
    tracker_status: HashMap<String, (crate::tracker::TrackerStatus, Instant)>,
    /// What trackers are told about our progress.
    progress_tx: watch::Sender<crate::tracker::Progress>,
    /// Status lines reported by discovery tasks (LPD), and when.
    source_status: HashMap<PeerSource, (String, Instant, Option<Duration>)>,
    /// Peers that closed our plain connection before answering: the next
    /// dial to them uses MSE/PE (and a failed MSE dial goes back to plain).
    wants_mse: HashSet<SocketAddr>,
    rng: lodestone_dht::rng::Rng,
    /// Addresses of peers that had everything: a seed does not dial them.
    known_seeds: HashSet<SocketAddr>,
    /// The last DHT round, and when it ended.
    dht_round: Option<(crate::sources::DhtRound, Instant)>,
    ticks: u64,
    connecting: HashSet<SocketAddr>,
    stats: Stats,
    down: Rate,
    up: Rate,
    started: Instant,
    completed_at: Option<Instant>,
    first_byte_at: Option<Instant>,
    seed_until: Option<Instant>,
    /// Bytes to upload before `seed_ratio` is reached (set on completion).
    upload_goal: Option<f64>,
    resume_dirty: bool,
    last_resume: Instant,
    last_rechoke: Option<Instant>,
    peers_by_source: BTreeMap<&'static str, usize>,
    paused: Option<String>,
    scratch: Vec<Block>,
    /// Bytes we may still request under the rate limit (refilled each tick).
    request_budget: f64,
    /// Bytes we may still serve under `upload_rate_limit`.
    upload_budget: f64,
    /// Recently read pieces, most recent last.
    read_cache: Vec<(PieceIndex, Bytes)>,
    /// Pieces being read for seeding.
    reading: HashSet<u32>,
    /// Pieces whose read failed: not offered again.
    unreadable: HashSet<u32>,
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

    let mut picker = PiecePicker::new(
        &meta.info.layout,
        &have,
        PickerConfig {
            sequential: cfg.sequential,
            ..PickerConfig::default()
        },
        cfg.seed,
    );
    if let Some(only) = &cfg.only_files {
        let prio: Vec<Priority> = (0..meta.info.files.len())
            .map(|i| {
                if only.contains(&i) {
                    Priority::Normal
                } else {
                    Priority::Skip
                }
            })
            .collect();
        picker.set_file_priorities(&meta.info.layout, &prio);
    }

    // Trackers start once the files are checked, so that the first
    // announce says how much is really left (a seeder says 0).
    let (progress_tx, progress_rx) = watch::channel(crate::tracker::Progress {
        left: picker.bytes_left(),
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
    let shape = TorrentShape::new(meta.info.piece_length, meta.info.total_length());
    let now = Instant::now();
    let mut t = Torrent {
        dial: cfg
            .peers
            .iter()
            .map(|a| (*a, (now, Duration::from_secs(1))))
            .collect(),
        choker: Choker::new(
            ChokerConfig {
                upload_slots: cfg.upload_slots,
                ..ChokerConfig::default()
            },
            cfg.seed ^ 0x9e37_79b9,
        ),
        meta,
        storage,
        picker,
        shape,
        peers: HashMap::new(),
        next_key: 0,
        input_tx,
        disk_tx,
        hashers: crate::pool::Pool::new("hash", cfg.threads),
        read_buffers: Arc::default(),
        spare_reads: Vec::new(),
        hashing: 0,
        events,
        pieces: HashMap::new(),
        strikes: HashMap::new(),
        suspects: HashMap::new(),
        banned: HashSet::new(),
        connecting: HashSet::new(),
        sources: HashMap::new(),
        dht_round: None,
        known_seeds: HashSet::new(),
        wants_mse: HashSet::new(),
        rng: lodestone_dht::rng::Rng::from_u64(cfg.seed ^ 0x6d5e),
        source_status: HashMap::new(),
        tracker_status: HashMap::new(),
        progress_tx,
        ticks: 0,
        stats: Stats::default(),
        down: Rate::default(),
        up: Rate::default(),
        started,
        completed_at: None,
        first_byte_at: None,
        seed_until: None,
        upload_goal: None,
        resume_dirty: resume_stale,
        last_resume: now,
        last_rechoke: None,
        peers_by_source: BTreeMap::new(),
        paused: None,
        scratch: Vec::new(),
        request_budget: 0.0,
        upload_budget: 0.0,
        read_cache: Vec::new(),
        reading: HashSet::new(),
        unreadable: HashSet::new(),
        cfg,
    };
    t.check_complete().await;
    t.dial_due(now);

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    let mut asked_to_stop = false;
    loop {
        if t.finished() {
            break;
        }
        tokio::select! {
            Some(input) = input_rx.recv() => {
                t.on_input(input).await;
                // Drain what else is ready before other work: fewer wakeups.
                for _ in 0..256 {
                    match input_rx.try_recv() {
                        Ok(i) => t.on_input(i).await,
                        Err(_) => break,
                    }
                }
            }
            Some(result) = disk_rx.recv() => t.on_disk(result).await,
            _ = tick.tick() => {
                let now = Instant::now();
                t.on_tick(now, now - last_tick).await;
                last_tick = now;
            }
            _ = shutdown.changed() => {
                asked_to_stop = true;
                break;
            }
        }
    }
    let stopped = t.stop_reason(asked_to_stop);
    // Nobody reads the inputs any more: a writer must not wait to report.
    input_rx.close();
    t.close_connections().await;
    t.save_resume();
    let _ = t.storage.sync();
    t.refresh_stats();
    let rows = t.sources_table(Instant::now());
    t.emit(TorrentEvent::Sources(rows)).await;
    Ok(Summary {
        complete: t.picker.is_complete(),
        stats: t.stats.clone(),
        time_to_complete: t.completed_at.map(|c| c - t.started),
        time_to_first_byte: t.first_byte_at.map(|f| f - t.started),
        peers_by_source: t.peers_by_source.clone(),
        paused: t.paused.clone(),
        stopped,
    })
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

impl Torrent {
    fn finished(&self) -> bool {
        if self.paused.is_some() {
            return true;
        }
        if self.completed_at.is_none() {
            return false;
        }
        let time_up = match self.cfg.seed_time {
            Some(d) if d.is_zero() => true,
            Some(_) => self.seed_until.is_some_and(|t| Instant::now() >= t),
            None => false,
        };
        time_up || self.seed_ratio_reached()
    }

    /// On the way out: hand each peer what is already queued for it and
    /// give the writers a moment to send it (the last blocks of a seed
    /// that reached its ratio, say), never more than [`CLOSE_GRACE`].
    async fn close_connections(&mut self) {
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
        // Output beyond a writer's queue goes in as the writer makes room.
        loop {
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            let mut done = true;
            for k in keys {
                let alive = self.peers.get(&k).is_some_and(|p| !p.conn.tx.is_closed());
                done &= !alive || self.drain_to_writer(k);
            }
            if done || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let writers: Vec<_> = self
            .peers
            .drain()
            .filter_map(|(_, p)| p.conn.close())
            .collect();
        let _ = tokio::time::timeout_at(deadline, async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await;
    }

    /// Under an upload limit: the tick's budget goes one block per waiting
    /// peer in turn, from a different peer each tick, so the first peer in
    /// the map cannot take all of it (and keep the best choker rank too).
    fn serve_in_turn(&mut self) {
        let mut keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.to_serve.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if keys.is_empty() {
            return;
        }
        keys.sort_unstable();
        let n = keys.len();
        keys.rotate_left(self.ticks as usize % n);
        let mut served = true;
        while served {
            served = false;
            for &k in &keys {
                // Each success takes a request off a queue: this ends.
                served |= self.drain_to_writer(k) && self.serve_next(k);
            }
        }
    }

    /// Why the run loop ended, for the summary (read before the peers
    /// are closed: the ratio is judged on what was uploaded by then).
    fn stop_reason(&self, asked: bool) -> &'static str {
        if asked {
            STOP_ASKED
        } else if self.paused.is_some() {
            STOP_PAUSED
        } else if self.seed_ratio_reached() {
            STOP_SEED_RATIO
        } else if self.cfg.seed_time.is_some_and(|d| d.is_zero()) {
            STOP_DONE
        } else {
            STOP_SEED_TIME
        }
    }

    fn seed_ratio_reached(&self) -> bool {
        self.upload_goal
            .is_some_and(|goal| goal > 0.0 && self.stats.uploaded as f64 >= goal)
    }

    async fn emit(&self, e: TorrentEvent) {
        let _ = self.events.send(e).await;
    }

    fn dial_due(&mut self, now: Instant) {
        let connected: HashSet<SocketAddr> = self.peers.values().map(|p| p.addr).collect();
        let due: Vec<SocketAddr> = self
            .dial
            .iter()
            .filter(|(a, (t, _))| {
                *t <= now && !connected.contains(a) && !self.connecting.contains(a)
            })
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            let seed_to_seed = self.picker.have().is_full() && self.known_seeds.contains(&addr);
            if self.peers.len() + self.connecting.len() >= self.cfg.max_peers
                || self.connecting.len() >= MAX_HALF_OPEN
                || self.banned.contains(&addr.ip())
                || seed_to_seed
            {
                continue;
            }
            self.connecting.insert(addr);
            if let Some((t, backoff)) = self.dial.get_mut(&addr) {
                *t = now + *backoff;
                *backoff = (*backoff * 2).min(Duration::from_secs(60));
            }
            let source = self
                .sources
                .get(&addr)
                .copied()
                .unwrap_or(PeerSource::Manual);
            // A peer that hung up on our plain handshake gets an encrypted one.
            let obfuscate = self.wants_mse.contains(&addr).then(|| peer_io::Obfuscate {
                info_hash: self.meta.info_hashes.wire(),
                private_key: self.rng.bytes20(),
                pad: vec![0u8; self.rng.below(64) as usize],
            });
            peer_io::connect(
                addr,
                self.cfg.listen,
                source,
                self.input_tx.clone(),
                obfuscate,
            );
        }
    }

    /// Remember addresses a source gave us and dial the new ones.
    fn discovered(&mut self, addrs: Vec<SocketAddr>, source: PeerSource) {
        let now = Instant::now();
        for addr in addrs {
            if Some(addr) == self.cfg.listen || addr.port() == 0 || self.banned.contains(&addr.ip())
            {
                continue;
            }
            // Peer exchange may not flood us: it fills at most a quarter.
            let from_pex = self
                .sources
                .values()
                .filter(|s| **s == PeerSource::Pex)
                .count();
            if source == PeerSource::Pex && from_pex >= MAX_KNOWN_PEERS / 4 {
                break;
            }
            if !self.dial.contains_key(&addr) && self.dial.len() < MAX_KNOWN_PEERS {
                self.dial.insert(addr, (now, Duration::from_secs(1)));
                self.sources.insert(addr, source);
            }
        }
        self.dial_due(now);
    }

    async fn on_input(&mut self, input: PeerInput) {
        match input {
            PeerInput::Connected {
                stream,
                addr,
                source,
                initial,
                cipher,
            } => {
                self.connecting.remove(&addr);
                if self.banned.contains(&addr.ip()) || self.peers.len() >= self.cfg.max_peers {
                    return;
                }
                let key = PeerKey(self.next_key);
                self.next_key += 1;
                let now = Instant::now();
                let session = Session::new(
                    SessionConfig::new(
                        self.meta.info_hashes.wire(),
                        self.cfg.peer_id,
                        Some(self.shape),
                    ),
                    now,
                );
                let conn = Connection::spawn(
                    key,
                    stream,
                    self.input_tx.clone(),
                    cipher,
                    self.read_buffers.clone(),
                );
                self.peers.insert(
                    key,
                    Peer {
                        addr,
                        source,
                        session,
                        conn,
                        backlog: VecDeque::new(),
                        to_serve: VecDeque::new(),
                        queue: QueueSizer::new(),
                        established: false,
                        is_seed: false,
                        down: Rate::default(),
                        up: Rate::default(),
                        last_block: now,
                        snubbed: false,
                        peer_reqq: 250,
                        allowed_fast: Vec::new(),
                        listen_port: None,
                        pex: None,
                    },
                );
                self.flush(key);
                if !initial.is_empty() {
                    self.receive(key, initial[..].into()).await;
                }
            }
            PeerInput::ConnectFailed { addr, .. } => {
                self.connecting.remove(&addr);
                // Alternate: plain next time if encryption failed too.
                self.wants_mse.remove(&addr);
            }
            PeerInput::Discovered { addrs, source } => self.discovered(addrs, source),
            PeerInput::DhtRound(r) => self.dht_round = Some((r, Instant::now())),
            PeerInput::TrackerStatus(s) => {
                self.tracker_status
                    .insert(s.url.clone(), (s, Instant::now()));
            }
            PeerInput::SourceStatus {
                source,
                status,
                next_in,
            } => {
                self.source_status
                    .insert(source, (status, Instant::now(), next_in));
            }
            PeerInput::Data { key, bytes } => self.receive(key, bytes).await,
            PeerInput::Writable { key } => self.flush(key),
            PeerInput::Closed { key, reason } => self.disconnect(key, reason).await,
        }
    }

    /// Bytes from a peer's socket.
    async fn receive(&mut self, key: PeerKey, bytes: bytes::BytesMut) {
        let now = Instant::now();
        let result = match self.peers.get_mut(&key) {
            Some(p) => p.session.handle_chunk(now, bytes),
            None => return,
        };
        if let Err(e) = result {
            self.drain_events(key).await;
            self.disconnect(key, e.to_string()).await;
            return;
        }
        self.drain_events(key).await;
        self.service(key).await;
    }

    async fn drain_events(&mut self, key: PeerKey) {
        loop {
            let Some(ev) = self
                .peers
                .get_mut(&key)
                .and_then(|p| p.session.poll_event())
            else {
                return;
            };
            self.on_event(key, ev).await;
            if !self.peers.contains_key(&key) {
                return;
            }
        }
    }

    async fn on_event(&mut self, key: PeerKey, ev: Event) {
        match ev {
            Event::Connected { peer_id, .. } => {
                // Two sources (say, a tracker on both sides) can connect the
                // same pair twice: keep one connection.
                let twin = self.peers.iter().any(|(k, p)| {
                    *k != key
                        && p.established
                        && p.session
                            .peer_handshake()
                            .is_some_and(|h| h.peer_id == peer_id)
                });
                if twin {
                    self.disconnect(key, "already connected to this peer".into())
                        .await;
                    return;
                }
                let have = self.picker.have().clone();
                let ext = self.our_extended_handshake(key);
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                p.established = true;
                p.session.send_have_set(&have);
                p.session.send_extended_handshake(&ext);
                let (addr, source) = (p.addr, p.source);
                *self.peers_by_source.entry(source.name()).or_default() += 1;
                self.emit(TorrentEvent::PeerConnected {
                    addr,
                    client: peer_id.client_hint(),
                    source,
                })
                .await;
            }
            Event::Bitfield(raw) => {
                if let Ok(bits) = Bitfield::from_bytes(&raw, self.shape.num_pieces) {
                    self.picker.peer_bitfield(key, &bits);
                    if let Some(p) = self.peers.get_mut(&key) {
                        p.is_seed = bits.is_full();
                    }
                }
                self.update_interest(key);
                self.drop_if_both_seeds(key).await;
            }
            Event::HaveAll => {
                self.picker.peer_has_all(key);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.is_seed = true;
                }
                self.update_interest(key);
                self.drop_if_both_seeds(key).await;
            }
            Event::HaveNone => {}
            Event::Have(piece) => {
                self.picker.peer_has(key, piece);
                self.update_interest(key);
            }
            Event::Choked => {
                self.picker.on_choked(key);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.queue.on_all_lost();
                }
            }
            Event::Unchoked => {}
            Event::Interested | Event::NotInterested => {
                // Answer quickly when there is a free slot, rather than at the next rechoke.
                if self.unchoked_count() < self.cfg.upload_slots {
                    self.rechoke(Instant::now());
                }
            }
            Event::Block { piece, begin, data } => self.on_block(key, piece, begin, data).await,
            Event::Request(r) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.to_serve.push_back(r);
                }
            }
            Event::Cancel(r) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if let Some(i) = p.to_serve.iter().position(|q| *q == r) {
                        p.to_serve.remove(i);
                    }
                }
            }
            Event::Rejected(r) => {
                let block = Block {
                    piece: r.piece,
                    begin: r.begin,
                    len: r.len,
                };
                self.picker.on_request_failed(key, block);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.queue.on_request_lost(block);
                }
            }
            Event::AllowedFast(piece) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.allowed_fast.len() < 64 && !p.allowed_fast.contains(&piece) {
                        p.allowed_fast.push(piece);
                    }
                }
            }
            Event::Metadata(lodestone_wire::metadata::MetadataMessage::Request { piece }) => {
                // BEP 9: serve our info dictionary to magnet users.
                let total_size = self.meta.info_bytes.len() as u64;
                let reply = match crate::magnet::metadata_piece(&self.meta.info_bytes, piece) {
                    Some(data) => lodestone_wire::metadata::MetadataMessage::Data {
                        piece,
                        total_size,
                        data,
                    },
                    None => lodestone_wire::metadata::MetadataMessage::Reject { piece },
                };
                if let Some(p) = self.peers.get_mut(&key) {
                    p.session.send_extension(UT_METADATA, reply.encode());
                }
            }
            Event::Pex(m) if self.pex_on() => {
                let addrs = m.added.into_iter().map(|(a, _)| a).collect();
                self.discovered(addrs, PeerSource::Pex);
            }
            Event::Suggest(_) | Event::DhtPort(_) | Event::Metadata(_) | Event::Pex(_) => {}
            Event::ExtendedHandshake(h) => {
                let pex_on = self.pex_on();
                if let Some(p) = self.peers.get_mut(&key) {
                    p.listen_port = h.listen_port;
                    if h.id_of(UT_PEX).is_some() && pex_on && p.pex.is_none() {
                        p.pex = Some(lodestone_peer::pex::PexState::new(Instant::now()));
                    }
                    if let Some(q) = h.request_queue {
                        p.peer_reqq = (q as usize).clamp(1, QueueSizer::FAR_MAX_BLOCKS);
                    }
                    if h.upload_only {
                        p.is_seed = true;
                    }
                }
            }
        }
    }

    fn our_extended_handshake(&self, key: PeerKey) -> ExtendedHandshake {
        let mut h = ExtendedHandshake {
            listen_port: self.cfg.listen.map(|a| a.port()),
            client: Some(format!("Lodestone {}", env!("CARGO_PKG_VERSION"))),
            your_ip: self.peers.get(&key).map(|p| p.addr.ip()),
            request_queue: Some(lodestone_peer::session::MAX_PEER_REQUESTS as u32),
            metadata_size: Some(self.meta.info_bytes.len() as u64),
            upload_only: self.picker.is_complete(),
            ..Default::default()
        };
        h.extensions.insert(UT_METADATA.into(), OUR_UT_METADATA_ID);
        // BEP 27: no peer exchange for private torrents; none if turned off.
        if self.pex_on() {
            h.extensions.insert(UT_PEX.into(), OUR_UT_PEX_ID);
        }
        h
    }

    fn pex_on(&self) -> bool {
        self.cfg.pex && !self.meta.info.private
    }

    /// Two seeds have nothing to trade: free the connection slot.
    async fn drop_if_both_seeds(&mut self, key: PeerKey) {
        let peer_is_seed = self.peers.get(&key).is_some_and(|p| p.is_seed);
        if peer_is_seed && self.picker.have().is_full() {
            self.disconnect(key, "both seeding".into()).await;
        }
    }

    fn update_interest(&mut self, key: PeerKey) {
        let want = self.picker.is_interesting(key);
        if let Some(p) = self.peers.get_mut(&key) {
            p.session.set_interested(want);
        }
    }

    async fn on_block(&mut self, key: PeerKey, piece: PieceIndex, begin: u32, data: Bytes) {
        let len = data.len() as u32;
        self.down.add(u64::from(len));
        self.stats.downloaded += u64::from(len);
        self.first_byte_at.get_or_insert_with(Instant::now);
        let block = Block { piece, begin, len };
        if let Some(p) = self.peers.get_mut(&key) {
            p.down.add(u64::from(len));
            p.last_block = Instant::now();
            p.snubbed = false;
            p.queue.on_block(block, p.last_block);
        }
        match self.picker.on_block(key, block) {
            BlockOutcome::Unrequested => self.stats.wasted += u64::from(len),
            BlockOutcome::Accepted {
                piece_complete,
                cancel,
            } => {
                for (other, b) in cancel {
                    if let Some(p) = self.peers.get_mut(&other) {
                        p.queue.on_request_lost(b);
                        p.session.cancel(BlockRequest {
                            piece: b.piece,
                            begin: b.begin,
                            len: b.len,
                        });
                        self.flush(other);
                    }
                }
                let piece_len = self.picker.piece_len(piece);
                let buf = self.pieces.entry(piece.0).or_insert_with(|| PieceBuf {
                    blocks: vec![Bytes::new(); piece_len.div_ceil(BLOCK_SIZE) as usize],
                    sources: Vec::new(),
                    started: Instant::now(),
                    compacted: false,
                });
                // The picker only accepts blocks it laid out, so this fits.
                if let Some(slot) = buf.blocks.get_mut((begin / BLOCK_SIZE) as usize) {
                    *slot = if buf.compacted {
                        Bytes::copy_from_slice(&data)
                    } else {
                        data
                    };
                }
                if let Some(ip) = self.peers.get(&key).map(|p| p.addr.ip()) {
                    buf.sources.push(BlockSource { begin, len, ip });
                }
                if piece_complete {
                    if let Some(buf) = self.pieces.remove(&piece.0) {
                        self.hash_and_write(piece, buf);
                    }
                }
            }
        }
    }

    fn hash_and_write(&mut self, piece: PieceIndex, buf: PieceBuf) {
        let storage = self.storage.clone();
        let tx = self.disk_tx.clone();
        self.hashing += u64::from(self.picker.piece_len(piece));
        self.hashers.run(move || {
            let PieceBuf {
                blocks, sources, ..
            } = buf;
            let result = if !storage.check_blocks(piece, &blocks) {
                DiskResult::Failed(piece, blocks, sources)
            } else {
                match storage.write_blocks(piece, &blocks) {
                    Ok(()) => DiskResult::Verified(piece, blocks),
                    Err(e) => DiskResult::WriteError(piece, e),
                }
            };
            let _ = tx.blocking_send(result);
        });
    }

    async fn on_disk(&mut self, result: DiskResult) {
        let len = match result {
            DiskResult::Verified(p, _)
            | DiskResult::Failed(p, ..)
            | DiskResult::WriteError(p, _) => self.picker.piece_len(p),
            DiskResult::Read(piece, result) => return self.on_read(piece, result).await,
        };
        let was_full = self.hashing >= MAX_HASH_BACKLOG;
        self.hashing = self.hashing.saturating_sub(u64::from(len));
        if was_full {
            // Requests were held back: resume them.
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for k in keys {
                self.service(k).await;
            }
        }
        match result {
            DiskResult::Verified(piece, buf) => {
                if let Some(suspects) = self.suspects.remove(&piece.0) {
                    self.convict(piece, &buf, suspects).await;
                }
                drop(buf);
                self.picker.piece_verified(piece);
                self.resume_dirty = true;
                let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
                for k in keys {
                    if let Some(p) = self.peers.get_mut(&k) {
                        if p.established {
                            p.session.send_have(piece);
                        }
                    }
                    self.flush(k);
                }
                self.check_complete().await;
            }
            DiskResult::Failed(piece, buf, sources) => {
                self.stats.wasted += u64::from(self.picker.piece_len(piece));
                self.picker.piece_failed(piece);
                let mut ips: Vec<IpAddr> = sources.iter().map(|s| s.ip).collect();
                ips.sort();
                ips.dedup();
                let addrs: Vec<SocketAddr> = self
                    .peers
                    .values()
                    .filter(|p| ips.contains(&p.addr.ip()))
                    .map(|p| p.addr)
                    .collect();
                self.emit(TorrentEvent::HashFailed {
                    piece: piece.0,
                    peers: addrs,
                })
                .await;
                if let [only] = ips[..] {
                    // One sender: it alone is to blame.
                    let s = self.strikes.entry(only).or_default();
                    *s += 1;
                    if *s >= BAN_STRIKES {
                        self.ban(only, format!("sent bad data for {BAN_STRIKES} pieces"))
                            .await;
                    }
                } else {
                    // Several senders: remember each block's digest; when the
                    // piece passes, the blocks that differ name the liar.
                    let suspects = sources
                        .iter()
                        .filter_map(|s| {
                            let block = PieceBuf::block(&buf, s.begin, s.len)?;
                            Some(Suspect {
                                source: *s,
                                digest: Sha1::digest(block).into(),
                            })
                        })
                        .collect();
                    self.suspects.insert(piece.0, suspects);
                }
                drop(buf);
            }
            // Returned to on_read before the hashing accounting above.
            DiskResult::Read(..) => {}
            DiskResult::WriteError(piece, e) => {
                // Not verified on disk: it stays missing in the picker and
                // in the resume data. Stop downloading; keep what we have.
                let _ = piece;
                let reason = e.to_string();
                self.paused = Some(reason.clone());
                self.emit(TorrentEvent::Paused { reason }).await;
            }
        }
    }

    /// The piece now passed: any peer whose earlier block differs from the
    /// good one sent bad data.
    async fn convict(&mut self, piece: PieceIndex, good: &[Bytes], suspects: Vec<Suspect>) {
        let mut liars: Vec<IpAddr> = suspects
            .iter()
            .filter(|s| {
                PieceBuf::block(good, s.source.begin, s.source.len)
                    .is_some_and(|b| <[u8; 20]>::from(Sha1::digest(b)) != s.digest)
            })
            .map(|s| s.source.ip)
            .collect();
        liars.sort();
        liars.dedup();
        for ip in liars {
            self.ban(ip, format!("sent bad data for piece {piece}"))
                .await;
        }
    }

    async fn ban(&mut self, ip: IpAddr, reason: String) {
        self.banned.insert(ip);
        let keys: Vec<(PeerKey, SocketAddr)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.addr.ip() == ip)
            .map(|(k, p)| (*k, p.addr))
            .collect();
        for (k, addr) in keys {
            self.emit(TorrentEvent::PeerBanned {
                addr,
                reason: reason.clone(),
            })
            .await;
            self.disconnect(k, reason.clone()).await;
        }
    }

    async fn check_complete(&mut self) {
        if self.completed_at.is_some() || !self.picker.is_complete() {
            return;
        }
        let now = Instant::now();
        self.completed_at = Some(now);
        // A seed time too large to add is forever.
        self.seed_until = self
            .cfg
            .seed_time
            .map(|d| now.checked_add(d).unwrap_or(now + YEAR));
        // Counted once here: finished() asks on every event.
        self.upload_goal = self
            .cfg
            .seed_ratio
            .map(|r| r * self.verified_wanted_bytes() as f64);
        let _ = self.storage.sync();
        self.save_resume();
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            if let Some(p) = self.peers.get_mut(&k) {
                p.session.set_interested(false);
            }
            self.flush(k);
        }
        if self.picker.have().is_full() {
            let seeds: Vec<PeerKey> = self
                .peers
                .iter()
                .filter(|(_, p)| p.is_seed)
                .map(|(k, _)| *k)
                .collect();
            for k in seeds {
                self.disconnect(k, "both seeding".into()).await;
            }
        }
        self.emit(TorrentEvent::Completed {
            after: now - self.started,
        })
        .await;
    }

    /// Answer the request at the front of the peer's queue from the read
    /// cache. False when its piece is not in memory: a read is started on
    /// the disk pool (never on the network thread: a slow disk must not
    /// stall every peer) and the queue waits for it.
    fn serve_next(&mut self, key: PeerKey) -> bool {
        let Some(p) = self.peers.get_mut(&key) else {
            return false;
        };
        let Some(&r) = p.to_serve.front() else {
            return false;
        };
        let have = self.picker.have().get(r.piece) && !self.unreadable.contains(&r.piece.0);
        if !have || p.session.am_choking() {
            p.to_serve.pop_front();
            p.session.reject(r);
            return true;
        }
        // Over the upload limit: the queue waits for the next tick's refill.
        if self.cfg.upload_rate_limit.is_some() && self.upload_budget < f64::from(r.len) {
            return false;
        }
        // Peers ask for a piece's blocks in a row: read the whole piece once
        // and hand out slices of it (no copy, one read per piece).
        let Some(i) = self.read_cache.iter().position(|(i, _)| *i == r.piece) else {
            self.start_read(r.piece);
            return false;
        };
        let entry = self.read_cache.remove(i);
        let data = entry.1.clone();
        self.read_cache.push(entry);
        p.to_serve.pop_front();
        let range = r.begin as usize..(r.begin as usize + r.len as usize);
        if range.end > data.len() {
            p.session.reject(r);
            return true;
        }
        p.up.add(u64::from(r.len));
        self.up.add(u64::from(r.len));
        self.upload_budget -= f64::from(r.len);
        self.stats.uploaded += u64::from(r.len);
        p.session.send_block(r.piece, r.begin, data.slice(range));
        true
    }

    /// Read a whole piece for seeding on the disk pool.
    fn start_read(&mut self, piece: PieceIndex) {
        if !self.reading.insert(piece.0) {
            return;
        }
        let len = self.picker.piece_len(piece);
        // A buffer of an evicted piece that no queued block points into any
        // more: no fresh pages to fault in and zero.
        let reusable = self.spare_reads.iter().position(Bytes::is_unique);
        let mut buf = reusable
            .and_then(|i| self.spare_reads.swap_remove(i).try_into_mut().ok())
            .map(Vec::from)
            .unwrap_or_default();
        let storage = self.storage.clone();
        let tx = self.disk_tx.clone();
        self.hashers.run(move || {
            let result = storage
                .read(piece, 0, len, &mut buf)
                .map(|()| Bytes::from(buf));
            let _ = tx.blocking_send(DiskResult::Read(piece, result));
        });
    }

    /// A piece read for seeding came back: cache it and serve the peers
    /// waiting for it (or reject what they asked of it, if it failed).
    async fn on_read(&mut self, piece: PieceIndex, result: Result<Bytes, StorageError>) {
        self.reading.remove(&piece.0);
        match result {
            Ok(data) => {
                if self.read_cache.len() >= READ_CACHE_PIECES {
                    let (_, old) = self.read_cache.remove(0);
                    if self.spare_reads.len() < MAX_SPARE_READS {
                        self.spare_reads.push(old);
                    }
                }
                self.read_cache.push((piece, data));
            }
            Err(e) => {
                self.unreadable.insert(piece.0);
                self.emit(TorrentEvent::ReadFailed {
                    piece: piece.0,
                    reason: e.to_string(),
                })
                .await;
                for p in self.peers.values_mut() {
                    let (bad, keep) = std::mem::take(&mut p.to_serve)
                        .into_iter()
                        .partition(|r| r.piece == piece);
                    p.to_serve = keep;
                    for r in bad {
                        p.session.reject(r);
                    }
                }
            }
        }
        let waiting: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.to_serve.is_empty() || !p.backlog.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for k in waiting {
            self.flush(k);
        }
    }

    /// Keep the peer's request pipeline full and its output flowing.
    async fn service(&mut self, key: PeerKey) {
        self.request_more(key);
        self.flush(key);
    }

    fn request_more(&mut self, key: PeerKey) {
        if self.paused.is_some() || self.picker.is_complete() || self.hashing >= MAX_HASH_BACKLOG {
            return;
        }
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if !p.established || !p.session.am_interested() {
            return;
        }
        let target = p.queue.target(p.down.per_sec, p.peer_reqq);
        let inflight = self.picker.in_flight(key);
        if inflight >= target {
            return;
        }
        let mut room = target - inflight;
        if self.cfg.download_rate_limit.is_some() {
            let blocks =
                (self.request_budget / f64::from(lodestone_peer::picker::BLOCK_SIZE)) as usize;
            room = room.min(blocks);
            if room == 0 {
                return;
            }
        }
        let choked = p.session.peer_choking();
        if choked && p.allowed_fast.is_empty() {
            return;
        }
        let allowed = if choked {
            Some(p.allowed_fast.clone())
        } else {
            None
        };
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        self.picker.pick(key, room, allowed.as_deref(), &mut out);
        self.request_budget -= out.iter().map(|b| f64::from(b.len)).sum::<f64>();
        if let Some(p) = self.peers.get_mut(&key) {
            let now = Instant::now();
            for (i, b) in out.iter().enumerate() {
                p.queue.on_request(*b, inflight + i, now);
                p.session.request(BlockRequest {
                    piece: b.piece,
                    begin: b.begin,
                    len: b.len,
                });
            }
        }
        self.scratch = out;
    }

    /// Hand the peer's output to its writer and, while the writer has room,
    /// serve the blocks it asked for.
    fn flush(&mut self, key: PeerKey) {
        while self.drain_to_writer(key) && self.serve_next(key) {}
    }

    /// Move the session's output to the writer; true when all of it went.
    fn drain_to_writer(&mut self, key: PeerKey) -> bool {
        let Some(p) = self.peers.get_mut(&key) else {
            return false;
        };
        let now = Instant::now();
        loop {
            let next = match p.backlog.pop_front() {
                Some(b) => b,
                None => match p.session.poll_transmit(now) {
                    Some(b) => b,
                    None => return true,
                },
            };
            match p.conn.tx.try_send(next) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(b)) => {
                    p.backlog.push_front(b);
                    p.conn.want_writable.store(true, Ordering::Release);
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
    }

    fn unchoked_count(&self) -> usize {
        self.peers
            .values()
            .filter(|p| !p.session.am_choking())
            .count()
    }

    fn rechoke(&mut self, now: Instant) {
        self.last_rechoke = Some(now);
        let stats: Vec<PeerStats> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established)
            .map(|(k, p)| PeerStats {
                key: *k,
                interested: p.session.peer_interested(),
                download_rate: p.down.per_sec,
                upload_rate: p.up.per_sec,
                snubbed: p.snubbed,
            })
            .collect();
        let seeding = self.picker.is_complete();
        let unchoke: HashSet<PeerKey> = self
            .choker
            .rechoke(now, seeding, &stats)
            .into_iter()
            .collect();
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            if let Some(p) = self.peers.get_mut(&k) {
                if !p.established {
                    continue;
                }
                if unchoke.contains(&k) {
                    p.session.unchoke();
                } else {
                    p.session.choke();
                    // What it asked for is dropped (and rejected, with BEP 6).
                    for r in std::mem::take(&mut p.to_serve) {
                        p.session.reject(r);
                    }
                }
            }
            self.flush(k);
        }
    }

    async fn on_tick(&mut self, now: Instant, dt: Duration) {
        // At most one second of burst, and at least room for one block
        // (else a limit under a block per second would never allow one).
        let refill = |budget: f64, limit: u64, largest: u32| {
            let limit = limit as f64;
            (budget + limit * dt.as_secs_f64()).min(limit.max(f64::from(largest)))
        };
        if let Some(limit) = self.cfg.download_rate_limit {
            let block = lodestone_peer::picker::BLOCK_SIZE;
            self.request_budget = refill(self.request_budget, limit, block);
        }
        if let Some(limit) = self.cfg.upload_rate_limit {
            let largest = lodestone_peer::session::MAX_REQUEST_LEN;
            self.upload_budget = refill(self.upload_budget, limit, largest);
            self.serve_in_turn();
        }
        self.down.tick(dt);
        self.up.tick(dt);
        for buf in self.pieces.values_mut() {
            if !buf.compacted && now.duration_since(buf.started) >= PIECE_COMPACT_AFTER {
                for b in buf.blocks.iter_mut().filter(|b| !b.is_empty()) {
                    *b = Bytes::copy_from_slice(b);
                }
                buf.compacted = true;
            }
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            let mut closed = None;
            if let Some(p) = self.peers.get_mut(&k) {
                p.down.tick(dt);
                p.up.tick(dt);
                if let Err(e) = p.session.handle_timeout(now) {
                    closed = Some(e.to_string());
                }
            }
            if let Some(reason) = closed {
                self.disconnect(k, reason).await;
                continue;
            }
            // A peer that holds our requests and sends nothing is snubbed:
            // its requests go to others.
            let inflight = self.picker.in_flight(k);
            if let Some(p) = self.peers.get_mut(&k) {
                if inflight > 0 && now.duration_since(p.last_block) > SNUB_AFTER {
                    p.snubbed = true;
                    p.last_block = now;
                    self.picker.on_choked(k);
                }
            }
            self.update_interest(k);
            self.service(k).await;
        }
        if self
            .last_rechoke
            .is_none_or(|t| now.duration_since(t) >= RECHOKE_EVERY)
        {
            self.rechoke(now);
        }
        if self.resume_dirty && now.duration_since(self.last_resume) >= RESUME_EVERY {
            self.save_resume();
        }
        self.send_pex(now);
        self.dial_due(now);
        self.refresh_stats();
        self.report_progress();
        self.emit(TorrentEvent::Progress(self.stats.clone())).await;
        self.ticks += 1;
        if self.ticks % 4 == 1 {
            let rows = self.sources_table(now);
            self.emit(TorrentEvent::Sources(rows)).await;
        }
    }

    /// BEP 11: tell each ut_pex peer about the others, once a minute.
    fn send_pex(&mut self, now: Instant) {
        use lodestone_wire::pex::PexFlags;
        let everyone: Vec<(PeerKey, SocketAddr, PexFlags)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established)
            .filter_map(|(k, p)| {
                let mut f = 0;
                if p.is_seed {
                    f |= PexFlags::SEED;
                }
                if p.source != PeerSource::Incoming {
                    f |= PexFlags::REACHABLE;
                }
                p.connectable().map(|a| (*k, a, PexFlags(f)))
            })
            .collect();
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            let Some(p) = self.peers.get_mut(&k) else {
                continue;
            };
            let Some(state) = p.pex.as_mut() else {
                continue;
            };
            if now < state.next_due() {
                continue;
            }
            // Everyone but the recipient itself.
            let others: Vec<(SocketAddr, PexFlags)> = everyone
                .iter()
                .filter(|(other, _, _)| *other != k)
                .map(|(_, a, f)| (*a, *f))
                .collect();
            if let Some(msg) = state.poll(now, &others) {
                p.session.send_extension(UT_PEX, msg.encode());
                self.flush(k);
            }
        }
    }

    /// The rows of the sources table.
    pub fn sources_table(&self, now: Instant) -> Vec<crate::sources::SourceRow> {
        use crate::sources::SourceRow;
        let found = |s: PeerSource| self.sources.values().filter(|x| **x == s).count();
        let seeds = |s: PeerSource| {
            self.peers
                .values()
                .filter(|p| p.established && p.is_seed && p.source == s)
                .count()
        };
        let mut rows = Vec::new();
        let private = self.meta.info.private;
        let (dht_status, dht_next) = match (&self.cfg.dht, &self.dht_round) {
            _ if private => ("disabled: private torrent".to_owned(), None),
            (None, _) => ("disabled (no --bootstrap or --dht)".to_owned(), None),
            (Some(_), None) => ("searching...".to_owned(), None),
            (Some(_), Some((r, at))) => (
                r.status(),
                Some((*at + r.next_in).saturating_duration_since(now)),
            ),
        };
        rows.push(SourceRow {
            name: "[DHT]".into(),
            status: dht_status,
            next_update: dht_next,
            seeds: seeds(PeerSource::Dht),
            peers: found(PeerSource::Dht),
        });
        let pex_peers = self.peers.values().filter(|p| p.pex.is_some()).count();
        let next_pex = self
            .peers
            .values()
            .filter_map(|p| p.pex.as_ref().map(|s| s.next_due()))
            .min();
        rows.push(SourceRow {
            name: "[Peer Exchange]".into(),
            status: if private {
                "disabled: private torrent".into()
            } else if !self.cfg.pex {
                "disabled (--no-pex)".into()
            } else if pex_peers == 0 {
                "waiting: no connected peer speaks ut_pex".into()
            } else {
                format!("working: exchanging with {pex_peers} peers")
            },
            next_update: next_pex.map(|t| t.saturating_duration_since(now)),
            seeds: seeds(PeerSource::Pex),
            peers: found(PeerSource::Pex),
        });
        let (lpd_status, lpd_next) = match self.source_status.get(&PeerSource::Lpd) {
            _ if private => ("disabled: private torrent".to_owned(), None),
            Some((s, at, next)) => (
                s.clone(),
                next.map(|n| (*at + n).saturating_duration_since(now)),
            ),
            None if self.cfg.lpd && self.cfg.listen.is_none() => {
                ("disabled: needs --listen".to_owned(), None)
            }
            None if self.cfg.lpd => ("starting...".to_owned(), None),
            None => ("disabled (no --lpd)".to_owned(), None),
        };
        rows.push(SourceRow {
            name: "[Local Peer Discovery]".into(),
            status: lpd_status,
            next_update: lpd_next,
            seeds: seeds(PeerSource::Lpd),
            peers: found(PeerSource::Lpd),
        });
        if !self.cfg.peers.is_empty() {
            rows.push(SourceRow {
                name: "[Given peers]".into(),
                status: format!("{} given (--peer or x.pe)", self.cfg.peers.len()),
                next_update: None,
                seeds: seeds(PeerSource::Manual),
                peers: self.cfg.peers.len(),
            });
        }
        if let Some(l) = self.cfg.listen {
            rows.push(SourceRow {
                name: "[Incoming]".into(),
                status: format!("listening on {l}"),
                next_update: None,
                seeds: seeds(PeerSource::Incoming),
                peers: self
                    .peers
                    .values()
                    .filter(|p| p.source == PeerSource::Incoming)
                    .count(),
            });
        }
        for url in self.meta.trackers.iter().flatten() {
            let blank = |status: &str| SourceRow {
                name: url.clone(),
                status: status.to_owned(),
                next_update: None,
                seeds: 0,
                peers: 0,
            };
            let row = match self.tracker_status.get(url) {
                _ if !self.cfg.trackers => blank("disabled (--no-trackers)"),
                None => blank("not contacted yet"),
                Some((s, at)) => SourceRow {
                    name: url.clone(),
                    status: s.status.clone(),
                    next_update: s.next_in.map(|n| (*at + n).saturating_duration_since(now)),
                    seeds: s.seeders.map_or(0, |x| x as usize),
                    peers: s.leechers.map_or(s.peers, |x| x as usize),
                },
            };
            rows.push(row);
        }
        rows
    }

    fn report_progress(&self) {
        let p = crate::tracker::Progress {
            uploaded: self.stats.uploaded,
            downloaded: self.stats.downloaded,
            left: self.picker.bytes_left(),
        };
        self.progress_tx.send_if_modified(|old| {
            let changed = *old != p;
            *old = p;
            changed
        });
    }

    fn refresh_stats(&mut self) {
        let have = self.picker.have();
        self.stats.have_pieces = have.count();
        self.stats.num_pieces = have.len();
        self.stats.bytes_left = self.picker.bytes_left();
        self.stats.download_rate = self.down.per_sec;
        self.stats.upload_rate = self.up.per_sec;
        self.stats.peers = self.peers.values().filter(|p| p.established).count();
        self.stats.seeds = self
            .peers
            .values()
            .filter(|p| p.established && p.is_seed)
            .count();
        if self.stats.wanted_bytes == 0 {
            self.stats.wanted_bytes = self.picker.bytes_left() + self.verified_wanted_bytes();
        }
    }

    fn verified_wanted_bytes(&self) -> u64 {
        self.picker
            .have()
            .iter_set()
            .map(|p| u64::from(self.picker.piece_len(p)))
            .sum()
    }

    fn save_resume(&mut self) {
        // Data first, then the claim that it is there.
        if self.storage.sync().is_err() {
            return;
        }
        let now = std::time::SystemTime::now();
        let files: Vec<_> = self
            .storage
            .file_stamps()
            .into_iter()
            .map(|f| f.vouched_at(now))
            .collect();
        // A file too freshly written to vouch for: save again later, once
        // its time can be trusted (if we are still running then).
        let unvouched = files.iter().any(|f| f.size > 0 && f.mtime_ns.is_none());
        let r = ResumeData {
            info_hash: self.meta.info_hashes.wire(),
            have: self.picker.have().clone(),
            files,
        };
        if r.save(&resume::path_for(&self.cfg.output_dir, &r.info_hash))
            .is_ok()
        {
            self.resume_dirty = unvouched;
            self.last_resume = Instant::now();
        }
    }

    async fn disconnect(&mut self, key: PeerKey, reason: String) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        // Dropped before its handshake on a plain dial: try MSE next time.
        if !p.established
            && p.source != PeerSource::Incoming
            && p.session.peer_handshake().is_none()
            && !self.wants_mse.insert(p.addr)
        {
            self.wants_mse.remove(&p.addr);
        }
        if p.is_seed {
            if let Some(a) = p.connectable() {
                self.known_seeds.insert(a);
            }
        }
        self.picker.peer_gone(key);
        if p.established {
            self.emit(TorrentEvent::PeerDisconnected {
                addr: p.addr,
                reason,
            })
            .await;
        }
        // Buffers of pieces only this peer was filling stay; the picker
        // re-requests their missing blocks from others.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_announce_is_recognised() {
        let listen: SocketAddr = "10.78.0.1:27100".parse().unwrap();
        let ext: IpAddr = "198.51.100.7".parse().unwrap();
        let me = |a: &str| is_self(&a.parse().unwrap(), Some(listen), Some(ext));
        assert!(me("10.78.0.1:27100"));
        assert!(me("127.0.0.1:27100"));
        assert!(me("198.51.100.7:27100"));
        assert!(!me("10.78.0.2:27100"));
        assert!(!me("10.78.0.1:27101"));
        assert!(!is_self(&listen, None, None));
    }
}
