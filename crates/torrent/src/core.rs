//! [`TorrentCore`]: one torrent with its metadata, from the first dial to
//! seeding, as a state machine. Bytes, results and time go in through
//! `handle_*`; what to do comes out of `poll_action`, what happened out of
//! `poll_event`, and when to call again out of `poll_timeout`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lodestone_core::{Bitfield, Metainfo, PieceIndex};
use lodestone_peer::choker::{Choker, ChokerConfig, PeerStats};
use lodestone_peer::picker::{
    Block, BlockOutcome, PeerKey, PickerConfig, PiecePicker, Priority, BLOCK_SIZE,
};
use lodestone_peer::queue::QueueSizer;
use lodestone_peer::session::{Event as PeerEvent, Session, SessionConfig, TorrentShape};
use lodestone_wire::extended::{
    ExtendedHandshake, OUR_UT_METADATA_ID, OUR_UT_PEX_ID, UT_METADATA, UT_PEX,
};
use lodestone_wire::BlockRequest;

use crate::config::CoreConfig;
use crate::io::{
    Action, Checked, Event, FileInfo, FilePriority, Outbox, PeerInfo, PieceInfo, PieceState,
    PriorityError, Progress, Stats,
};
use crate::magnet::{MagnetCore, MagnetPeer};
use crate::peer_table::PeerTable;
use crate::pieces::{self, BlockSource, PieceBuf, Suspect};
use crate::rate::{Budget, Rate};
use crate::source::{DhtRound, PeerSource, PerSource, Source, SourcesInput, TrackerStatus};

/// A peer with requests out that sends nothing for this long is snubbed;
/// its requests go back to the pool.
const SNUB_AFTER: Duration = Duration::from_secs(15);
const RECHOKE_EVERY: Duration = Duration::from_secs(10);
const RESUME_EVERY: Duration = Duration::from_secs(2);
/// Seeding "forever" is at most this long (an `Instant` cannot go further).
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
/// Bad pieces a peer may be part of before it is banned.
const BAN_STRIKES: u32 = 2;
/// Housekeeping (rates, snubs, budgets) while peers are connected.
const TICK: Duration = Duration::from_millis(250);
/// And while none is: an idle torrent of a session holding thousands
/// sleeps. What must happen sooner wakes it anyway (a dial, the end of its
/// seed time, a resume save, news for the sources table).
const IDLE_TICK: Duration = Duration::from_secs(30);
/// An idle torrent's sources table is said again at least this often.
const SOURCES_EVERY: Duration = Duration::from_secs(30);
/// Outgoing connections still being set up at once.
const MAX_HALF_OPEN: usize = 16;
/// Bytes of complete pieces waiting to be hashed and written before we
/// stop asking for more: memory stays bounded when the disk or CPU lags.
const MAX_HASH_BACKLOG: u64 = 4 << 20;
/// Whole pieces kept in memory for serving requests.
const READ_CACHE_PIECES: usize = 4;
/// Evicted read-cache buffers kept for reuse (a peer's queue of unsent
/// blocks can span this many pieces).
const MAX_SPARE_READS: usize = 8;
/// A piece still incomplete after this long has its blocks copied out of
/// the read buffers they arrived in.
const PIECE_COMPACT_AFTER: Duration = Duration::from_secs(3);
/// Requests from one peer we queue to serve (the session caps its own
/// queue too; this bounds ours).
const MAX_TO_SERVE: usize = 2048;
/// A peer that rejects our requests while unchoking us (it lost a piece,
/// say) is not asked again for this long: asking at once would loop at
/// network speed.
const REJECT_PAUSE: Duration = Duration::from_secs(2);

struct Peer {
    addr: SocketAddr,
    source: PeerSource,
    session: Session,
    encrypted: bool,
    /// Over uTP rather than TCP.
    utp: bool,
    client: String,
    /// How many requests to keep outstanding with it (its measured
    /// bandwidth-delay product).
    queue: QueueSizer,
    /// Blocks the peer asked for, served as its socket takes them (not all
    /// at once: a peer may queue 2000 requests).
    to_serve: VecDeque<BlockRequest>,
    established: bool,
    is_seed: bool,
    pieces: u32,
    down: Rate,
    up: Rate,
    last_block: Instant,
    snubbed: bool,
    peer_reqq: usize,
    allowed_fast: Vec<PieceIndex>,
    /// See [`REJECT_PAUSE`].
    no_requests_until: Option<Instant>,
    /// The peer's listen port from its extension handshake.
    listen_port: Option<u16>,
    pex: Option<lodestone_peer::pex::PexState>,
}

impl Peer {
    fn new(
        addr: SocketAddr,
        source: PeerSource,
        session: Session,
        encrypted: bool,
        utp: bool,
        now: Instant,
    ) -> Self {
        Self {
            addr,
            source,
            session,
            encrypted,
            utp,
            client: String::new(),
            to_serve: VecDeque::new(),
            queue: QueueSizer::new(),
            established: false,
            is_seed: false,
            pieces: 0,
            down: Rate::default(),
            up: Rate::default(),
            last_block: now,
            snubbed: false,
            peer_reqq: 250,
            allowed_fast: Vec::new(),
            no_requests_until: None,
            listen_port: None,
            pex: None,
        }
    }

    /// Where others can reach this peer: the address we dialled, or its
    /// announced listen port for a peer that dialled us.
    fn connectable(&self) -> Option<SocketAddr> {
        match self.source {
            PeerSource::Incoming => self.listen_port.map(|p| SocketAddr::new(self.addr.ip(), p)),
            _ => Some(self.addr),
        }
    }
}

/// The picker has no class below Normal: `Low` downloads like `Normal`.
fn picker_priority(p: FilePriority) -> Priority {
    match p {
        FilePriority::Skip => Priority::Skip,
        FilePriority::Low | FilePriority::Normal => Priority::Normal,
        FilePriority::High => Priority::High,
    }
}

/// Why a torrent stopped by itself (or was asked to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Asked,
    /// Downloading stopped (e.g. disk full); see `paused()`.
    Paused,
    SeedRatio,
    SeedTime,
    /// Complete, with no seeding asked for.
    Done,
}

pub struct TorrentCore {
    meta: Arc<Metainfo>,
    cfg: CoreConfig,
    picker: PiecePicker,
    /// One per file, as last set (the picker keeps only per-piece classes).
    file_priorities: Vec<FilePriority>,
    choker: Choker,
    shape: TorrentShape,
    // Ordered: the same inputs give the same outputs (the simulator replays).
    peers: BTreeMap<PeerKey, Peer>,
    next_key: u64,
    table: PeerTable,
    rng: lodestone_dht::rng::Rng,
    pieces: BTreeMap<u32, PieceBuf>,
    /// Senders of the pieces out for checking.
    checking: HashMap<u32, Vec<BlockSource>>,
    /// Bytes handed out for checking and not yet back.
    hashing: u64,
    strikes: HashMap<IpAddr, u32>,
    suspects: HashMap<u32, Vec<Suspect>>,
    dht_round: Option<(DhtRound, Instant)>,
    tracker_status: HashMap<String, (TrackerStatus, Instant)>,
    lpd_status: Option<(String, Instant, Option<Duration>)>,
    ticks: u64,
    last_tick: Instant,
    /// The last tick saw peers: one more tick comes soon after they left.
    was_active: bool,
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
    resume_saving: bool,
    last_resume: Instant,
    last_rechoke: Option<Instant>,
    peers_by_source: BTreeMap<&'static str, usize>,
    paused: Option<String>,
    scratch: Vec<Block>,
    download: Budget,
    upload: Budget,
    /// Recently read pieces, most recent last.
    read_cache: Vec<(PieceIndex, Bytes)>,
    /// Evicted read-cache buffers, reused once no queued block points
    /// into them.
    spare_reads: Vec<Bytes>,
    reading: HashSet<u32>,
    unreadable: HashSet<u32>,
    progress: Progress,
    /// What the last Progress and Sources events said.
    reported_stats: Option<Stats>,
    reported_sources: Option<Instant>,
    /// A source reported since the table was last said.
    sources_news: bool,
    out: Outbox,
    events: VecDeque<Event>,
}

impl TorrentCore {
    /// A torrent whose verified pieces are `have` (checked by the driver).
    /// `resume_stale`: what was found on disk is not in the resume data yet.
    pub fn new(
        meta: Arc<Metainfo>,
        cfg: CoreConfig,
        have: &Bitfield,
        resume_stale: bool,
        now: Instant,
    ) -> Self {
        let mut table = PeerTable::new(cfg.listen);
        for a in &cfg.peers {
            table.add(now, *a, PeerSource::Manual);
        }
        let mut t = Self::build(meta, cfg, have, resume_stale, table, now);
        t.refresh_stats();
        t.report_sources(now);
        t.check_complete(now);
        t.dial_due(now);
        t
    }

    /// The metadata of `magnet` is in (and `have` checked on disk): take
    /// its peers over on the same connections, with everything they said
    /// they have, its peer table and its sources' last words.
    pub fn from_magnet(
        magnet: MagnetCore,
        meta: Arc<Metainfo>,
        have: &Bitfield,
        resume_stale: bool,
        now: Instant,
    ) -> Self {
        let m = magnet;
        let mut t = Self::build(meta, m.cfg, have, resume_stale, m.table, now);
        t.next_key = m.next_key;
        t.rng = m.rng;
        t.dht_round = m.dht_round;
        t.tracker_status = m.tracker_status;
        t.lpd_status = m.lpd_status;
        t.peers_by_source = m.peers_by_source;
        t.started = m.started;
        t.refresh_stats();
        let n = t.shape.num_pieces;
        for (key, mp) in m.peers {
            t.adopt(now, key, mp, n);
        }
        t.report_sources(now);
        t.check_complete(now);
        t.dial_due(now);
        t
    }

    fn adopt(&mut self, now: Instant, key: PeerKey, mp: MagnetPeer, n: u32) {
        let mut session = mp.session;
        session.set_shape(self.shape);
        let mut p = Peer::new(mp.addr, mp.source, session, mp.encrypted, mp.utp, now);
        p.client = mp.client;
        p.established = mp.established;
        if let Some(h) = &mp.ext {
            p.listen_port = h.listen_port;
            if h.id_of(UT_PEX).is_some() && self.pex_on() {
                p.pex = Some(lodestone_peer::pex::PexState::new(now));
            }
            if let Some(q) = h.request_queue {
                p.peer_reqq = (q as usize).clamp(1, QueueSizer::FAR_MAX_BLOCKS);
            }
            p.is_seed = h.upload_only;
        }
        let (addr, source, client, established, utp) =
            (p.addr, p.source, p.client.clone(), p.established, p.utp);
        // Shown: its own name for itself, when it gave one.
        if let Some(v) = mp.ext.as_ref().and_then(|h| h.client.as_deref()) {
            if !v.is_empty() {
                p.client = v.chars().take(64).collect();
            }
        }
        self.peers.insert(key, p);
        // What it told us before we knew the piece count must fit it now.
        if mp.has_all {
            self.picker.peer_has_all(key);
            if let Some(p) = self.peers.get_mut(&key) {
                p.is_seed = true;
                p.pieces = n;
            }
        } else if let Some(raw) = mp.bitfield {
            match Bitfield::from_bytes(&raw, n) {
                Ok(bits) => {
                    self.picker.peer_bitfield(key, &bits);
                    if let Some(p) = self.peers.get_mut(&key) {
                        p.is_seed |= bits.is_full();
                        p.pieces = bits.count();
                    }
                }
                Err(e) => return self.disconnect(now, key, format!("bad bitfield: {e}")),
            }
        }
        for i in mp.haves {
            if i >= n {
                return self.disconnect(now, key, format!("have for piece {i} of {n}"));
            }
            self.picker.peer_has(key, PieceIndex(i));
        }
        if established {
            // Our first word (have-none, or nothing) is said: what we hold
            // goes as `have`s, and a second extension handshake (BEP 10
            // allows it) adds what needs the metadata (size, ut_pex).
            let have: Vec<PieceIndex> = self.picker.have().iter_set().collect();
            let ext = self.our_extended_handshake(key);
            if let Some(p) = self.peers.get_mut(&key) {
                for piece in have {
                    p.session.send_have(piece);
                }
                p.session.send_extended_handshake(&ext);
            }
            self.events.push_back(Event::PeerConnected {
                addr,
                client,
                source,
                utp,
            });
        }
        self.update_interest(key);
        self.drop_if_both_seeds(now, key);
        self.service(now, key);
    }

    fn build(
        meta: Arc<Metainfo>,
        cfg: CoreConfig,
        have: &Bitfield,
        resume_stale: bool,
        table: PeerTable,
        now: Instant,
    ) -> Self {
        let picker = PiecePicker::new(
            &meta.info.layout,
            have,
            PickerConfig {
                sequential: cfg.sequential,
                ..PickerConfig::default()
            },
            cfg.seed,
        );
        let num_files = meta.info.layout.num_files();
        let priorities: Vec<FilePriority> = (0..num_files)
            .map(|i| match &cfg.only_files {
                Some(only) if !only.contains(&i) => FilePriority::Skip,
                _ => FilePriority::Normal,
            })
            .collect();
        let mut t = Self {
            choker: Choker::new(
                ChokerConfig {
                    upload_slots: cfg.upload_slots,
                    ..ChokerConfig::default()
                },
                cfg.seed ^ 0x9e37_79b9,
            ),
            shape: TorrentShape::new(meta.info.piece_length, meta.info.total_length()),
            progress: Progress::default(),
            picker,
            file_priorities: vec![FilePriority::Normal; num_files],
            meta,
            peers: BTreeMap::new(),
            next_key: 0,
            table,
            rng: lodestone_dht::rng::Rng::from_u64(cfg.seed ^ 0x6d5e),
            pieces: BTreeMap::new(),
            checking: HashMap::new(),
            hashing: 0,
            strikes: HashMap::new(),
            suspects: HashMap::new(),
            dht_round: None,
            tracker_status: HashMap::new(),
            lpd_status: None,
            ticks: 0,
            last_tick: now,
            was_active: false,
            stats: Stats::default(),
            down: Rate::default(),
            up: Rate::default(),
            started: now,
            completed_at: None,
            first_byte_at: None,
            seed_until: None,
            upload_goal: None,
            resume_dirty: resume_stale,
            resume_saving: false,
            last_resume: now,
            last_rechoke: None,
            peers_by_source: BTreeMap::new(),
            paused: None,
            scratch: Vec::new(),
            download: Budget::new(cfg.download_rate_limit),
            upload: Budget::new(cfg.upload_rate_limit),
            read_cache: Vec::new(),
            spare_reads: Vec::new(),
            reading: HashSet::new(),
            unreadable: HashSet::new(),
            reported_stats: None,
            reported_sources: None,
            sources_news: false,
            out: Outbox::default(),
            events: VecDeque::new(),
            cfg,
        };
        // The same path as a priority change at run time.
        t.apply_file_priorities(priorities);
        t.progress.left = t.picker.bytes_left();
        t
    }

    // ---- input ----

    /// Addresses a source gave us.
    pub fn handle_discovered(&mut self, now: Instant, addrs: &[SocketAddr], source: PeerSource) {
        if source == PeerSource::Pex && !self.pex_on() {
            return;
        }
        for a in addrs {
            self.table.add(now, *a, source);
        }
        self.sources_news = true;
        self.dial_due(now);
    }

    pub fn handle_dht_round(&mut self, now: Instant, round: DhtRound) {
        self.dht_round = Some((round, now));
        self.sources_news = true;
    }

    pub fn handle_tracker_status(&mut self, now: Instant, status: TrackerStatus) {
        self.tracker_status
            .insert(status.url.clone(), (status, now));
        self.sources_news = true;
    }

    /// LPD's own status line, and when it announces next.
    pub fn handle_lpd_status(&mut self, now: Instant, status: String, next_in: Option<Duration>) {
        self.lpd_status = Some((status, now, next_in));
        self.sources_news = true;
    }

    /// A connection is up, either way (`source` is `Incoming` for one that
    /// dialled us). `None`: not wanted (banned or full), close it. Feed
    /// bytes already read to `handle_data`.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        source: PeerSource,
        encrypted: bool,
        utp: bool,
    ) -> Option<PeerKey> {
        self.table.connected(addr);
        if self.table.is_banned(&addr.ip()) || self.peers.len() >= self.cfg.max_peers {
            self.table.disconnected(addr);
            return None;
        }
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        let session = Session::new(
            SessionConfig::new(
                self.meta.info_hashes.wire(),
                self.cfg.peer_id,
                Some(self.shape),
            ),
            now,
        );
        self.peers
            .insert(key, Peer::new(addr, source, session, encrypted, utp, now));
        self.transmit(key);
        Some(key)
    }

    pub fn handle_connect_failed(&mut self, now: Instant, addr: SocketAddr) {
        self.table.dial_failed(addr);
        self.dial_due(now);
    }

    /// Bytes from a peer's socket.
    pub fn handle_data(&mut self, now: Instant, key: PeerKey, bytes: BytesMut) {
        let result = match self.peers.get_mut(&key) {
            Some(p) => p.session.handle_chunk(now, bytes),
            None => return,
        };
        self.drain_peer_events(now, key);
        match result {
            Err(e) => self.disconnect(now, key, e.to_string()),
            Ok(()) => self.service(now, key),
        }
    }

    /// The connection closed (or failed).
    pub fn handle_closed(&mut self, now: Instant, key: PeerKey, reason: String) {
        self.disconnect(now, key, reason);
        self.dial_due(now);
    }

    /// The answer to [`Action::Check`].
    pub fn handle_checked(&mut self, now: Instant, piece: PieceIndex, result: Checked) {
        let len = self.picker.piece_len(piece);
        let was_full = self.hashing >= MAX_HASH_BACKLOG;
        self.hashing = self.hashing.saturating_sub(u64::from(len));
        let sources = self.checking.remove(&piece.0).unwrap_or_default();
        if was_full {
            // Requests were held back: resume them.
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for k in keys {
                self.service(now, k);
            }
        }
        match result {
            Checked::Good(blocks) => {
                if let Some(suspects) = self.suspects.remove(&piece.0) {
                    for ip in pieces::liars(&blocks, &suspects) {
                        self.ban(now, ip, format!("sent bad data for piece {piece}"));
                    }
                }
                drop(blocks);
                self.picker.piece_verified(piece);
                self.resume_dirty = true;
                let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
                for k in keys {
                    if let Some(p) = self.peers.get_mut(&k) {
                        if p.established {
                            p.session.send_have(piece);
                        }
                    }
                    self.transmit(k);
                }
                self.check_complete(now);
            }
            Checked::Bad(blocks) => {
                self.stats.wasted += u64::from(len);
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
                self.events.push_back(Event::HashFailed {
                    piece: piece.0,
                    peers: addrs,
                });
                if let [only] = ips[..] {
                    // One sender: it alone is to blame.
                    let s = self.strikes.entry(only).or_default();
                    *s += 1;
                    if *s >= BAN_STRIKES {
                        self.ban(now, only, format!("sent bad data for {BAN_STRIKES} pieces"));
                    }
                } else {
                    // Several senders: when the piece passes, the blocks
                    // that differ from these name the liar.
                    self.suspects
                        .insert(piece.0, pieces::suspects(&blocks, &sources));
                }
            }
            Checked::WriteFailed(reason) => {
                // Not verified on disk: it stays missing in the picker and
                // in the resume data. Stop downloading; keep what we have.
                self.paused = Some(reason.clone());
                self.events.push_back(Event::Paused { reason });
            }
        }
    }

    /// The answer to [`Action::Read`]: cache the piece and serve the peers
    /// waiting for it (or reject what they asked of it, if it failed).
    pub fn handle_read(&mut self, piece: PieceIndex, result: Result<Bytes, String>) {
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
            Err(reason) => {
                self.unreadable.insert(piece.0);
                self.events.push_back(Event::ReadFailed {
                    piece: piece.0,
                    reason,
                });
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
        if self.upload.limited() {
            // Blocks go out in turns, within what the budget still allows.
            self.serve_in_turn();
            return;
        }
        let waiting: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.to_serve.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for k in waiting {
            self.transmit(k);
        }
    }

    /// The answer to [`Action::SaveResume`]. `unvouched`: a file was too
    /// freshly written to vouch for, so save again later.
    pub fn handle_resume_saved(&mut self, now: Instant, saved: bool, unvouched: bool) {
        self.resume_saving = false;
        if saved {
            self.resume_dirty = unvouched;
            self.last_resume = now;
        }
    }

    /// Time passed: rates, snubs, budgets, rechoke, PEX, dials, resume.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.tick_due() {
            self.tick(now);
        }
        self.dial_due(now);
    }

    // ---- settings ----

    /// New rate limits in bytes per second (`None`: unlimited), in force
    /// at once: requests and blocks the old budget held back go out now.
    pub fn set_rate_limits(&mut self, now: Instant, download: Option<u64>, upload: Option<u64>) {
        self.cfg.download_rate_limit = download;
        self.cfg.upload_rate_limit = upload;
        self.download.set_limit(download);
        self.upload.set_limit(upload);
        // Without an upload limit each peer's Transmit serves its queue;
        // with one, the budget left goes out in turns.
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.service(now, k);
        }
        if self.upload.limited() {
            self.serve_in_turn();
        }
    }

    /// (download, upload) in bytes per second; `None`: unlimited.
    pub fn rate_limits(&self) -> (Option<u64>, Option<u64>) {
        (self.cfg.download_rate_limit, self.cfg.upload_rate_limit)
    }

    /// One priority per file, in torrent order. Skipped pieces are no
    /// longer asked for (requests out for them are cancelled), interest
    /// in each peer is said again, and a torrent whose wanted pieces are
    /// all verified is complete: skipping the rest completes it, wanting
    /// more of a complete one makes it download again.
    pub fn set_file_priorities(
        &mut self,
        now: Instant,
        priorities: &[FilePriority],
    ) -> Result<(), PriorityError> {
        let files = self.meta.info.layout.num_files();
        if priorities.len() != files {
            return Err(PriorityError::WrongLength {
                files,
                given: priorities.len(),
            });
        }
        self.apply_file_priorities(priorities.to_vec());
        if self.picker.is_complete() {
            self.check_complete(now);
        } else if self.completed_at.take().is_some() {
            // Downloading again: seed time and ratio count from the next
            // completion, which is reported again.
            self.seed_until = None;
            self.upload_goal = None;
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.cancel_skipped(k);
            self.update_interest(k);
            self.service(now, k);
        }
        self.refresh_stats();
        self.dial_due(now);
        Ok(())
    }

    // ---- output ----

    pub fn poll_action(&mut self) -> Option<Action> {
        let a = self.out.pop();
        if a.is_none() && self.peers.is_empty() {
            // Idle: a session holds thousands of torrents like this one.
            self.out.release();
        }
        a
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() && self.peers.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        e
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Instant {
        let tick = self.tick_due();
        let dialling = self.wants_more_peers() && self.paused.is_none();
        let seeding = self.picker.have().is_full();
        let dial = dialling
            .then(|| self.table.next_dial(seeding))
            .flatten()
            .unwrap_or(tick);
        tick.min(dial).max(self.last_tick)
    }

    /// The next bytes for `key`'s socket: its session's output, then the
    /// blocks it asked for. Call while the socket takes more; `None` when
    /// there is nothing (more comes with a later [`Action::Transmit`]).
    pub fn poll_transmit(&mut self, now: Instant, key: PeerKey) -> Option<Bytes> {
        loop {
            let p = self.peers.get_mut(&key)?;
            if let Some(b) = p.session.poll_transmit(now) {
                return Some(b);
            }
            // Under an upload limit, blocks go out in turns at each tick.
            if self.upload.limited() || !self.serve_next(key) {
                return None;
            }
        }
    }

    // ---- state ----

    /// Done: paused by an error, or complete and the seeding is over.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.stop_reason(now).is_some()
    }

    /// Why it finished by itself, if it did.
    pub fn stop_reason(&self, now: Instant) -> Option<StopReason> {
        if self.paused.is_some() {
            return Some(StopReason::Paused);
        }
        self.completed_at?;
        if self.seed_ratio_reached() {
            return Some(StopReason::SeedRatio);
        }
        match self.cfg.seed_time {
            Some(d) if d.is_zero() => Some(StopReason::Done),
            Some(_) if self.seed_until.is_some_and(|t| now >= t) => Some(StopReason::SeedTime),
            _ => None,
        }
    }

    /// Stop: save resume data one last time (the driver closes the sockets).
    pub fn stop(&mut self, now: Instant) {
        self.refresh_stats();
        if !self.resume_saving {
            self.save_resume();
        }
        self.events.push_back(Event::Sources(self.sources(now)));
    }

    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    pub fn completed_after(&self) -> Option<Duration> {
        self.completed_at.map(|c| c - self.started)
    }

    pub fn first_byte_after(&self) -> Option<Duration> {
        self.first_byte_at.map(|f| f - self.started)
    }

    pub fn peers_by_source(&self) -> &BTreeMap<&'static str, usize> {
        &self.peers_by_source
    }

    pub fn paused(&self) -> Option<&str> {
        self.paused.as_deref()
    }

    pub fn have(&self) -> &Bitfield {
        self.picker.have()
    }

    pub fn metainfo(&self) -> &Arc<Metainfo> {
        &self.meta
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(k, p)| PeerInfo {
                addr: p.addr,
                client: p.client.clone(),
                source: p.source,
                found_by: self
                    .table
                    .get(&p.addr)
                    .map_or(crate::source::SourceSet::of(p.source), |c| c.sources),
                established: p.established,
                seed: p.is_seed,
                am_choking: p.session.am_choking(),
                am_interested: p.session.am_interested(),
                peer_choking: p.session.peer_choking(),
                peer_interested: p.session.peer_interested(),
                snubbed: p.snubbed,
                encrypted: p.encrypted,
                utp: p.utp,
                download_rate: p.down.per_sec(),
                upload_rate: p.up.per_sec(),
                pieces: p.pieces,
                requests_out: self.picker.in_flight(*k),
                requests_in: p.to_serve.len(),
            })
            .collect()
    }

    pub fn files(&self) -> Vec<FileInfo> {
        let layout = &self.meta.info.layout;
        let have = self.picker.have();
        (0..layout.num_files())
            .map(|i| {
                let range = layout.file_range(i).unwrap_or(0..0);
                let done = layout
                    .file_pieces(i)
                    .map(PieceIndex)
                    .filter(|p| have.get(*p))
                    .filter_map(|p| layout.piece_range(p))
                    .map(|r| {
                        r.end
                            .min(range.end)
                            .saturating_sub(r.start.max(range.start))
                    })
                    .sum();
                let priority = self.file_priorities.get(i).copied().unwrap_or_default();
                FileInfo {
                    index: i,
                    length: range.end - range.start,
                    done,
                    wanted: priority != FilePriority::Skip || range.is_empty(),
                    priority,
                }
            })
            .collect()
    }

    /// Every piece: verified, being fetched or missing, and its priority.
    pub fn pieces(&self) -> Vec<PieceInfo> {
        let have = self.picker.have();
        let mut fetching: HashSet<u32> = self.pieces.keys().copied().collect();
        fetching.extend(self.checking.keys().copied());
        for k in self.peers.keys() {
            fetching.extend(self.picker.requests_of(*k).iter().map(|b| b.piece.0));
        }
        self.piece_priorities()
            .into_iter()
            .enumerate()
            .map(|(i, priority)| {
                // i < num_pieces, a u32.
                let i = i as u32;
                let state = if have.get(PieceIndex(i)) {
                    PieceState::Have
                } else if fetching.contains(&i) {
                    PieceState::Downloading
                } else {
                    PieceState::Missing
                };
                PieceInfo { state, priority }
            })
            .collect()
    }

    /// The sources table.
    pub fn sources(&self, now: Instant) -> Vec<Source> {
        let mut seeds = PerSource::default();
        let mut connected = PerSource::default();
        for p in self.peers.values() {
            connected.add(p.source);
            if p.established && p.is_seed {
                seeds.add(p.source);
            }
        }
        SourcesInput {
            cfg: &self.cfg,
            private: self.meta.info.private,
            found: self.table.found_per_source(),
            dht_round: self.dht_round.as_ref(),
            lpd_status: self.lpd_status.as_ref(),
            tracker_status: &self.tracker_status,
            trackers: self
                .meta
                .trackers
                .iter()
                .flatten()
                .map(String::as_str)
                .collect(),
            seeds,
            connected,
            pex_peers: self.peers.values().filter(|p| p.pex.is_some()).count(),
            next_pex: self
                .peers
                .values()
                .filter_map(|p| p.pex.as_ref().map(|s| s.next_due()))
                .min(),
        }
        .rows(now)
    }

    // ---- inside ----

    /// The one way priorities are set, at construction and at run time.
    fn apply_file_priorities(&mut self, priorities: Vec<FilePriority>) {
        let classes: Vec<Priority> = priorities.iter().map(|p| picker_priority(*p)).collect();
        self.picker
            .set_file_priorities(&self.meta.info.layout, &classes);
        // Kept in step for whoever reads the config later.
        self.cfg.only_files = priorities.contains(&FilePriority::Skip).then(|| {
            (0..priorities.len())
                .filter(|i| priorities[*i] != FilePriority::Skip)
                .collect()
        });
        self.file_priorities = priorities;
        // Fixed between changes: a wanted piece moves from left to done.
        self.stats.wanted_bytes = (0..self.picker.num_pieces())
            .map(PieceIndex)
            .filter(|p| self.picker.piece_priority(*p) != Priority::Skip)
            .map(|p| u64::from(self.picker.piece_len(p)))
            .sum();
    }

    /// Each piece's priority: the highest of its files' (as the picker
    /// ranks them, but keeping `Low`). O(pieces + files).
    fn piece_priorities(&self) -> Vec<FilePriority> {
        let layout = &self.meta.info.layout;
        let mut best: Vec<Option<FilePriority>> = vec![None; self.picker.num_pieces() as usize];
        for (file, prio) in self.file_priorities.iter().enumerate() {
            for p in layout.file_pieces(file) {
                if let Some(slot) = best.get_mut(p as usize) {
                    *slot = Some(slot.map_or(*prio, |b| b.max(*prio)));
                }
            }
        }
        // A piece in no file is Normal, as in the picker.
        best.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// Withdraw the peer's requests for pieces now skipped (a block already
    /// on its way is counted as wasted).
    fn cancel_skipped(&mut self, key: PeerKey) {
        for b in self.picker.requests_of(key) {
            if self.picker.piece_priority(b.piece) != Priority::Skip {
                continue;
            }
            self.picker.on_request_failed(key, b);
            if let Some(p) = self.peers.get_mut(&key) {
                p.queue.on_request_lost(b);
                p.session.cancel(BlockRequest {
                    piece: b.piece,
                    begin: b.begin,
                    len: b.len,
                });
            }
        }
    }

    /// Peers connected or being dialled, or pieces in flight: keep ticking fast.
    fn active(&self) -> bool {
        !self.peers.is_empty() || self.table.half_open() > 0 || self.upload.limited()
    }

    /// When the next tick is due: soon while peers are about (and once
    /// more after the last leaves, to bring the rates to 0), else when
    /// something an idle torrent must do is due, at the latest `IDLE_TICK`.
    fn tick_due(&self) -> Instant {
        if self.active() || self.was_active || self.sources_news {
            return self.last_tick + TICK;
        }
        let mut due = self.last_tick + IDLE_TICK;
        if let Some(t) = self.seed_until {
            due = due.min(t);
        }
        if self.resume_dirty && !self.resume_saving {
            due = due.min(self.last_resume + RESUME_EVERY);
        }
        due
    }

    fn wants_more_peers(&self) -> bool {
        self.dial_room() > 0
    }

    /// Dials that may start now: under the peer cap and the half-open cap.
    fn dial_room(&self) -> usize {
        let open = self.peers.len() + self.table.half_open();
        let half = self.table.half_open();
        self.cfg
            .max_peers
            .saturating_sub(open)
            .min(MAX_HALF_OPEN.saturating_sub(half))
    }

    fn transmit(&mut self, key: PeerKey) {
        self.out.transmit(key);
    }

    fn seed_ratio_reached(&self) -> bool {
        self.upload_goal
            .is_some_and(|goal| goal > 0.0 && self.stats.uploaded as f64 >= goal)
    }

    fn dial_due(&mut self, now: Instant) {
        if !self.wants_more_peers() || self.paused.is_some() {
            return;
        }
        let seeding = self.picker.have().is_full();
        let room = self.dial_room();
        for a in self.table.dial_due(now, seeding, room, &mut self.rng) {
            self.out.push(a);
        }
    }

    fn drain_peer_events(&mut self, now: Instant, key: PeerKey) {
        while let Some(ev) = self
            .peers
            .get_mut(&key)
            .and_then(|p| p.session.poll_event())
        {
            self.on_peer_event(now, key, ev);
            if !self.peers.contains_key(&key) {
                return;
            }
        }
    }

    fn on_peer_event(&mut self, now: Instant, key: PeerKey, ev: PeerEvent) {
        match ev {
            PeerEvent::Connected { peer_id, .. } => {
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
                    self.disconnect(now, key, "already connected to this peer".into());
                    return;
                }
                let have = self.picker.have().clone();
                let ext = self.our_extended_handshake(key);
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                p.established = true;
                p.client = peer_id.client_hint();
                p.session.send_have_set(&have);
                p.session.send_extended_handshake(&ext);
                let (addr, source, client, utp) = (p.addr, p.source, p.client.clone(), p.utp);
                *self.peers_by_source.entry(source.name()).or_default() += 1;
                self.events.push_back(Event::PeerConnected {
                    addr,
                    client,
                    source,
                    utp,
                });
            }
            PeerEvent::Bitfield(raw) => {
                if let Ok(bits) = Bitfield::from_bytes(&raw, self.shape.num_pieces) {
                    self.picker.peer_bitfield(key, &bits);
                    if let Some(p) = self.peers.get_mut(&key) {
                        p.is_seed = bits.is_full();
                        p.pieces = bits.count();
                    }
                }
                self.update_interest(key);
                self.drop_if_both_seeds(now, key);
            }
            PeerEvent::HaveAll => {
                self.picker.peer_has_all(key);
                let n = self.shape.num_pieces;
                if let Some(p) = self.peers.get_mut(&key) {
                    p.is_seed = true;
                    p.pieces = n;
                }
                self.update_interest(key);
                self.drop_if_both_seeds(now, key);
            }
            PeerEvent::HaveNone => {}
            PeerEvent::Have(piece) => {
                let new = !self.picker.peer_has_piece(key, piece);
                self.picker.peer_has(key, piece);
                let n = self.shape.num_pieces;
                if let Some(p) = self.peers.get_mut(&key) {
                    if new {
                        p.pieces = (p.pieces + 1).min(n);
                    }
                }
                self.update_interest(key);
            }
            PeerEvent::Choked => {
                self.picker.on_choked(key);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.queue.on_all_lost();
                }
            }
            PeerEvent::Unchoked => {}
            PeerEvent::Interested | PeerEvent::NotInterested => {
                // Answer quickly when there is a free slot, rather than at the next rechoke.
                if self.unchoked_count() < self.cfg.upload_slots {
                    self.rechoke(now);
                }
            }
            PeerEvent::Block { piece, begin, data } => self.on_block(now, key, piece, begin, data),
            PeerEvent::Request(r) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.to_serve.len() < MAX_TO_SERVE {
                        p.to_serve.push_back(r);
                    } else {
                        p.session.reject(r);
                    }
                }
            }
            PeerEvent::Cancel(r) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if let Some(i) = p.to_serve.iter().position(|q| *q == r) {
                        p.to_serve.remove(i);
                    }
                }
            }
            PeerEvent::Rejected(r) => {
                let block = Block {
                    piece: r.piece,
                    begin: r.begin,
                    len: r.len,
                };
                self.picker.on_request_failed(key, block);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.queue.on_request_lost(block);
                    if !p.session.peer_choking() {
                        p.no_requests_until = Some(now + REJECT_PAUSE);
                    }
                }
            }
            PeerEvent::AllowedFast(piece) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.allowed_fast.len() < 64 && !p.allowed_fast.contains(&piece) {
                        p.allowed_fast.push(piece);
                    }
                }
            }
            PeerEvent::Metadata(lodestone_wire::metadata::MetadataMessage::Request { piece }) => {
                // BEP 9: serve our info dictionary to magnet users.
                use lodestone_wire::metadata::MetadataMessage;
                let info = &self.meta.info_bytes;
                let reply = match lodestone_peer::metadata::piece_of(info, piece) {
                    Some(data) => MetadataMessage::Data {
                        piece,
                        total_size: info.len() as u64,
                        data,
                    },
                    None => MetadataMessage::Reject { piece },
                };
                if let Some(p) = self.peers.get_mut(&key) {
                    p.session.send_extension(UT_METADATA, reply.encode());
                }
            }
            PeerEvent::Pex(m) if self.pex_on() => {
                let addrs: Vec<SocketAddr> = m.added.iter().map(|(a, _)| *a).collect();
                self.handle_discovered(now, &addrs, PeerSource::Pex);
                for (a, f) in &m.added {
                    if f.0 & lodestone_wire::pex::PexFlags::UTP != 0 {
                        self.table.mark_utp(*a);
                    }
                }
            }
            PeerEvent::Suggest(_)
            | PeerEvent::DhtPort(_)
            | PeerEvent::Metadata(_)
            | PeerEvent::Pex(_) => {}
            PeerEvent::ExtendedHandshake(h) => {
                let pex_on = self.pex_on();
                if let Some(p) = self.peers.get_mut(&key) {
                    p.listen_port = h.listen_port;
                    if let Some(c) = h.client.as_deref().filter(|c| !c.is_empty()) {
                        p.client = c.chars().take(64).collect();
                    }
                    if h.id_of(UT_PEX).is_some() && pex_on && p.pex.is_none() {
                        p.pex = Some(lodestone_peer::pex::PexState::new(now));
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
    fn drop_if_both_seeds(&mut self, now: Instant, key: PeerKey) {
        let peer_is_seed = self.peers.get(&key).is_some_and(|p| p.is_seed);
        if peer_is_seed && self.picker.have().is_full() {
            self.disconnect(now, key, "both seeding".into());
        }
    }

    fn update_interest(&mut self, key: PeerKey) {
        let want = self.picker.is_interesting(key);
        if let Some(p) = self.peers.get_mut(&key) {
            p.session.set_interested(want);
        }
    }

    fn on_block(&mut self, now: Instant, key: PeerKey, piece: PieceIndex, begin: u32, data: Bytes) {
        let len = data.len() as u32;
        self.down.add(u64::from(len));
        self.stats.downloaded += u64::from(len);
        self.first_byte_at.get_or_insert(now);
        let block = Block { piece, begin, len };
        let Some(ip) = self.peers.get_mut(&key).map(|p| {
            p.down.add(u64::from(len));
            p.last_block = now;
            p.snubbed = false;
            p.queue.on_block(block, now);
            p.addr.ip()
        }) else {
            return;
        };
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
                        self.transmit(other);
                    }
                }
                let piece_len = self.picker.piece_len(piece);
                self.pieces
                    .entry(piece.0)
                    .or_insert_with(|| PieceBuf::new(piece_len, now))
                    .put(begin, data, ip);
                if piece_complete {
                    if let Some(buf) = self.pieces.remove(&piece.0) {
                        self.hashing += u64::from(piece_len);
                        self.checking.insert(piece.0, buf.sources);
                        self.out.push(Action::Check {
                            piece,
                            blocks: buf.blocks,
                        });
                    }
                }
            }
        }
    }

    fn ban(&mut self, now: Instant, ip: IpAddr, reason: String) {
        self.table.ban(ip);
        let keys: Vec<(PeerKey, SocketAddr)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.addr.ip() == ip)
            .map(|(k, p)| (*k, p.addr))
            .collect();
        for (k, addr) in keys {
            self.events.push_back(Event::PeerBanned {
                addr,
                reason: reason.clone(),
            });
            self.disconnect(now, k, reason.clone());
        }
    }

    fn check_complete(&mut self, now: Instant) {
        if self.completed_at.is_some() || !self.picker.is_complete() {
            return;
        }
        self.completed_at = Some(now);
        // Stats agree with is_complete() at once, not at the next tick.
        self.refresh_stats();
        // A seed time too large to add is forever.
        self.seed_until = self
            .cfg
            .seed_time
            .map(|d| now.checked_add(d).unwrap_or(now + YEAR));
        self.upload_goal = self
            .cfg
            .seed_ratio
            .map(|r| r * self.verified_wanted_bytes() as f64);
        self.save_resume();
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            if let Some(p) = self.peers.get_mut(&k) {
                p.session.set_interested(false);
            }
            self.transmit(k);
        }
        if self.picker.have().is_full() {
            let seeds: Vec<PeerKey> = self
                .peers
                .iter()
                .filter(|(_, p)| p.is_seed)
                .map(|(k, _)| *k)
                .collect();
            for k in seeds {
                self.disconnect(now, k, "both seeding".into());
            }
        }
        self.events.push_back(Event::Completed {
            after: now - self.started,
        });
    }

    /// Answer the request at the front of the peer's queue from the read
    /// cache. False when its piece is not in memory (a read is asked for
    /// and the queue waits for it) or the upload budget is spent.
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
        if !self.upload.allows(r.len) {
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
        self.upload.spend(u64::from(r.len));
        self.stats.uploaded += u64::from(r.len);
        p.session.send_block(r.piece, r.begin, data.slice(range));
        true
    }

    fn start_read(&mut self, piece: PieceIndex) {
        if !self.reading.insert(piece.0) {
            return;
        }
        let len = self.picker.piece_len(piece);
        // A buffer of an evicted piece that no queued block points into any
        // more: no fresh pages to fault in and zero.
        let reusable = self.spare_reads.iter().position(Bytes::is_unique);
        let buf = reusable
            .and_then(|i| self.spare_reads.swap_remove(i).try_into_mut().ok())
            .map(Vec::from)
            .unwrap_or_default();
        self.out.push(Action::Read { piece, len, buf });
    }

    /// Keep the peer's request pipeline full and its output flowing.
    fn service(&mut self, now: Instant, key: PeerKey) {
        self.request_more(now, key);
        self.transmit(key);
    }

    fn request_more(&mut self, now: Instant, key: PeerKey) {
        if self.paused.is_some() || self.picker.is_complete() || self.hashing >= MAX_HASH_BACKLOG {
            return;
        }
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if !p.established
            || !p.session.am_interested()
            || p.no_requests_until.is_some_and(|t| now < t)
        {
            return;
        }
        let target = p.queue.target(p.down.per_sec(), p.peer_reqq);
        let inflight = self.picker.in_flight(key);
        if inflight >= target {
            return;
        }
        let room = (target - inflight).min(self.download.units(BLOCK_SIZE));
        if room == 0 {
            return;
        }
        let choked = p.session.peer_choking();
        if choked && p.allowed_fast.is_empty() {
            return;
        }
        let allowed = choked.then(|| p.allowed_fast.clone());
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        self.picker.pick(key, room, allowed.as_deref(), &mut out);
        self.download
            .spend(out.iter().map(|b| u64::from(b.len)).sum::<u64>());
        if let Some(p) = self.peers.get_mut(&key) {
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

    /// Upload slots in use: unchoked peers that still want data (one that
    /// said not-interested frees its slot at once).
    fn unchoked_count(&self) -> usize {
        self.peers
            .values()
            .filter(|p| !p.session.am_choking() && p.session.peer_interested())
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
                download_rate: p.down.per_sec(),
                upload_rate: p.up.per_sec(),
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
            self.transmit(k);
        }
    }

    /// Under an upload limit: the tick's budget goes one block per waiting
    /// peer in turn, from a different peer each tick, so the first peer
    /// cannot take all of it.
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
        let n = keys.len();
        keys.rotate_left(self.ticks as usize % n);
        let mut served = true;
        while served {
            served = false;
            for &k in &keys {
                // Each success takes a request off a queue: this ends.
                if self.serve_next(k) {
                    served = true;
                    self.transmit(k);
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        self.download.refill(dt, BLOCK_SIZE);
        if self.upload.limited() {
            self.upload
                .refill(dt, lodestone_peer::session::MAX_REQUEST_LEN);
            self.serve_in_turn();
        }
        self.down.tick(dt);
        self.up.tick(dt);
        if self.peers.is_empty() {
            // Nobody to move bytes with: no rate (the smoothing would
            // otherwise take a dozen ticks to say so).
            self.down = Rate::default();
            self.up = Rate::default();
        }
        self.was_active = self.active();
        for buf in self.pieces.values_mut() {
            if !buf.compacted && now.duration_since(buf.started) >= PIECE_COMPACT_AFTER {
                buf.compact();
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
                self.disconnect(now, k, reason);
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
            self.service(now, k);
        }
        if self
            .last_rechoke
            .is_none_or(|t| now.duration_since(t) >= RECHOKE_EVERY)
        {
            self.rechoke(now);
        }
        if self.resume_dirty
            && !self.resume_saving
            && now.duration_since(self.last_resume) >= RESUME_EVERY
        {
            self.save_resume();
        }
        self.send_pex(now);
        self.refresh_stats();
        let progress = Progress {
            uploaded: self.stats.uploaded,
            downloaded: self.stats.downloaded,
            left: self.picker.bytes_left(),
        };
        if progress != self.progress {
            self.progress = progress;
            self.out.push(Action::Progress(progress));
        }
        // Said when it changed: an idle torrent says nothing (a session
        // holds thousands), a busy one about four times a second.
        if self.reported_stats.as_ref() != Some(&self.stats) {
            self.reported_stats = Some(self.stats.clone());
            self.events.push_back(Event::Progress(self.stats.clone()));
        }
        self.ticks += 1;
        // About once a second while busy; when idle, when it changed (its
        // countdowns aside) or every few seconds.
        let busy = self.active();
        let stale = self
            .reported_sources
            .is_none_or(|at| now.duration_since(at) >= SOURCES_EVERY);
        if (busy && self.ticks % 4 == 1) || (!busy && (self.sources_news || stale)) {
            self.report_sources(now);
        }
    }

    fn report_sources(&mut self, now: Instant) {
        self.events.push_back(Event::Sources(self.sources(now)));
        self.reported_sources = Some(now);
        self.sources_news = false;
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
                if p.utp {
                    f |= PexFlags::UTP;
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
                self.transmit(k);
            }
        }
    }

    fn refresh_stats(&mut self) {
        let have = self.picker.have();
        self.stats.have_pieces = have.count();
        self.stats.num_pieces = have.len();
        self.stats.bytes_left = self.picker.bytes_left();
        self.stats.download_rate = self.down.per_sec();
        self.stats.upload_rate = self.up.per_sec();
        self.stats.peers = self.peers.values().filter(|p| p.established).count();
        self.stats.seeds = self
            .peers
            .values()
            .filter(|p| p.established && p.is_seed)
            .count();
    }

    fn verified_wanted_bytes(&self) -> u64 {
        self.picker
            .have()
            .iter_set()
            .map(|p| u64::from(self.picker.piece_len(p)))
            .sum()
    }

    fn save_resume(&mut self) {
        self.resume_saving = true;
        self.out.push(Action::SaveResume {
            have: self.picker.have().clone(),
        });
    }

    fn disconnect(&mut self, now: Instant, key: PeerKey, reason: String) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        self.out.push(Action::Close(key));
        self.table.disconnected(p.addr);
        // Dropped before its handshake on a dial: try the other handshake next time.
        if !p.established
            && p.source != PeerSource::Incoming
            && p.session.peer_handshake().is_none()
        {
            self.table.closed_before_handshake(p.addr, p.utp);
        }
        if p.is_seed {
            if let Some(a) = p.connectable() {
                self.table.mark_seed(now, a, p.source);
            }
        }
        self.picker.peer_gone(key);
        if p.established {
            self.events.push_back(Event::PeerDisconnected {
                addr: p.addr,
                reason,
            });
        }
        // Buffers of pieces only this peer was filling stay; the picker
        // re-requests their missing blocks from others.
    }
}

#[cfg(test)]
mod idle_tests {
    use super::*;

    #[test]
    fn a_core_without_peers_keeps_no_room_in_its_queues() {
        // A session holds thousands of idle seeding cores.
        let info = lodestone_core::metainfo::single_file_info("t", 16384, &[7; 40000]);
        let meta = Arc::new(Metainfo::from_info_bytes(&info).unwrap());
        let have = Bitfield::full(meta.info.num_pieces());
        let cfg = CoreConfig::new(lodestone_core::PeerId([1; 20]), 1);
        // Complete, with its resume data stale: a save and events queued.
        let mut t = TorrentCore::new(meta, cfg, &have, true, Instant::now());
        assert!(t.out.capacity() > 0 && t.events.capacity() > 0);
        let mut saves = 0;
        while let Some(a) = t.poll_action() {
            saves += usize::from(matches!(a, Action::SaveResume { .. }));
        }
        let mut completed = 0;
        while let Some(e) = t.poll_event() {
            completed += usize::from(matches!(e, Event::Completed { .. }));
        }
        assert_eq!((saves, completed), (1, 1));
        assert_eq!(t.out.capacity(), 0);
        assert_eq!(t.events.capacity(), 0);
    }
}
