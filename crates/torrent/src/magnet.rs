//! [`MagnetCore`]: a torrent known only by its info hash. It finds and
//! dials peers like a [`crate::TorrentCore`], fetches the info dictionary
//! from every peer that speaks ut_metadata (BEP 9), verifies it, bans the
//! liars, and remembers what each peer said it has. When the metadata is
//! in, [`crate::TorrentCore::from_magnet`] takes its peers over, on the
//! same connections.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lodestone_core::InfoHashes;
use lodestone_peer::metadata::{MetadataAssembler, Outcome};
use lodestone_peer::picker::PeerKey;
use lodestone_peer::session::{Event as PeerEvent, Session, SessionConfig};
use lodestone_wire::extended::{ExtendedHandshake, OUR_UT_METADATA_ID, UT_METADATA};
use lodestone_wire::metadata::MetadataMessage;

use crate::config::CoreConfig;
use crate::io::{Action, Outbox};
use crate::peer_table::PeerTable;
use crate::source::{DhtRound, PeerSource, PerSource, Source, SourcesInput, TrackerStatus};

/// Metadata pieces asked of a lone peer at a time (one each when several
/// peers can serve, so the pieces come in parallel).
const PER_PEER: usize = 4;
/// Peers connected or being dialled at once while the metadata is missing.
pub const MAX_METADATA_PEERS: usize = 40;
const MAX_HALF_OPEN: usize = 16;
const TICK: Duration = Duration::from_millis(200);
/// While stuck, say why this often.
const STUCK_REPORT: Duration = Duration::from_secs(5);
/// The sources table is said about this often while peers are about
/// (as the torrent phase does)...
const SOURCES_BUSY_EVERY: Duration = Duration::from_secs(1);
/// ...and when idle, when a source reported something or this often.
const SOURCES_EVERY: Duration = Duration::from_secs(30);
/// `have` messages remembered per peer before the piece count is known
/// (more than this and the peer is asked for nothing it did not list).
const MAX_EARLY_HAVES: usize = 1 << 16;

/// What happened while fetching the metadata.
#[derive(Debug, Clone)]
pub enum MetadataEvent {
    PeerConnected {
        addr: SocketAddr,
        source: PeerSource,
        ut_metadata: bool,
        metadata_size: Option<u64>,
    },
    PeerRefused {
        addr: SocketAddr,
        reason: String,
    },
    Piece {
        done: usize,
        total: usize,
        from: SocketAddr,
    },
    /// A source named `new` peer addresses not known before.
    PeersFound {
        source: PeerSource,
        new: usize,
    },
    Banned {
        addr: SocketAddr,
        reason: String,
    },
    Mismatch,
    /// No metadata yet: what we know (every few seconds).
    Stuck {
        after: Duration,
        status: MetadataStatus,
    },
}

/// Everything the fetch has seen, for whoever explains why it waits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataStatus {
    pub dht_enabled: bool,
    pub dht: Option<DhtRound>,
    /// Peer addresses known.
    pub found: usize,
    pub attempts: usize,
    pub failed: usize,
    /// Peers (not connections) that completed a BitTorrent handshake.
    pub handshaken: usize,
    pub with_ut_metadata: usize,
    /// Peers that speak ut_metadata but were refused for their size.
    pub refused_size: usize,
    pub banned: usize,
    /// The metadata's size, once a peer told it.
    pub size: Option<u32>,
    pub pieces_done: usize,
    pub pieces: usize,
}

/// A peer connected while the metadata is missing.
pub(crate) struct MagnetPeer {
    pub addr: SocketAddr,
    pub source: PeerSource,
    pub session: Session,
    pub encrypted: bool,
    pub utp: bool,
    /// From its peer id.
    pub client: String,
    pub established: bool,
    pub ext: Option<ExtendedHandshake>,
    /// What it said it has, kept until the piece count is known.
    pub has_all: bool,
    pub bitfield: Option<Bytes>,
    pub haves: Vec<u32>,
}

impl MagnetPeer {
    /// It said it has every piece: have-all, BEP 21's upload-only, or a
    /// bitfield of set bits only (valid only when it is full: spare bits
    /// are clear). Without the piece count nothing else tells.
    fn known_seed(&self) -> bool {
        self.has_all
            || self.ext.as_ref().is_some_and(|h| h.upload_only)
            || self
                .bitfield
                .as_ref()
                .is_some_and(|b| !b.is_empty() && b.iter().all(|x| *x == 0xff))
    }
}

pub struct MagnetCore {
    pub(crate) hashes: InfoHashes,
    pub(crate) cfg: CoreConfig,
    asm: MetadataAssembler,
    pub(crate) peers: BTreeMap<PeerKey, MagnetPeer>,
    pub(crate) next_key: u64,
    pub(crate) table: PeerTable,
    pub(crate) rng: lodestone_dht::rng::Rng,
    pub(crate) dht_round: Option<(DhtRound, Instant)>,
    pub(crate) tracker_status: HashMap<String, (TrackerStatus, Instant)>,
    pub(crate) lpd_status: Option<(String, Instant, Option<Duration>)>,
    pub(crate) peers_by_source: BTreeMap<&'static str, usize>,
    pub(crate) started: Instant,
    /// The magnet's trackers, for the sources table.
    trackers: Vec<String>,
    /// The last sources table not polled yet, and when one was last made
    /// (and whether peers were about then).
    sources_out: Option<Vec<Source>>,
    reported_sources: Option<(Instant, bool)>,
    /// A source reported since the table was last said.
    sources_news: bool,
    last_tick: Instant,
    next_report: Instant,
    status: MetadataStatus,
    handshaken: HashSet<SocketAddr>,
    with_ut_metadata: HashSet<SocketAddr>,
    refused_size: HashSet<SocketAddr>,
    info: Option<Vec<u8>>,
    out: Outbox,
    events: VecDeque<MetadataEvent>,
}

impl MagnetCore {
    /// `max_size` caps the info dictionary a peer may announce.
    pub fn new(hashes: InfoHashes, cfg: CoreConfig, max_size: u32, now: Instant) -> Self {
        let mut table = PeerTable::new(cfg.listen);
        for a in &cfg.peers {
            table.add(now, *a, PeerSource::Manual);
        }
        let mut m = Self {
            hashes,
            asm: MetadataAssembler::new(hashes, max_size),
            peers: BTreeMap::new(),
            next_key: 0,
            status: MetadataStatus {
                dht_enabled: cfg.dht,
                found: table.len(),
                ..MetadataStatus::default()
            },
            table,
            rng: lodestone_dht::rng::Rng::from_u64(cfg.seed ^ 0x6d5e),
            dht_round: None,
            tracker_status: HashMap::new(),
            lpd_status: None,
            peers_by_source: BTreeMap::new(),
            started: now,
            trackers: Vec::new(),
            sources_out: None,
            reported_sources: None,
            sources_news: false,
            last_tick: now,
            next_report: now + STUCK_REPORT,
            handshaken: HashSet::new(),
            with_ut_metadata: HashSet::new(),
            refused_size: HashSet::new(),
            info: None,
            out: Outbox::default(),
            events: VecDeque::new(),
            cfg,
        };
        m.report_sources(now);
        m.dial_due(now);
        m
    }

    /// The magnet's trackers (`tr`), each a row of the sources table.
    pub fn set_trackers(&mut self, now: Instant, urls: impl IntoIterator<Item = String>) {
        for u in urls {
            if !self.trackers.contains(&u) {
                self.trackers.push(u);
            }
        }
        self.report_sources(now);
    }

    /// The sources table, as the torrent phase makes it: every source's
    /// last word, the addresses each named, the seeds among the peers.
    pub fn sources(&self, now: Instant) -> Vec<Source> {
        let mut seeds = PerSource::default();
        let mut connected = PerSource::default();
        for p in self.peers.values() {
            connected.add(p.source);
            if p.established && p.known_seed() {
                seeds.add(p.source);
            }
        }
        // Trackers that reported without being listed are shown too.
        let mut extra: Vec<&str> = self
            .tracker_status
            .keys()
            .map(String::as_str)
            .filter(|u| !self.trackers.iter().any(|t| t == u))
            .collect();
        extra.sort_unstable();
        let mut trackers: Vec<&str> = self.trackers.iter().map(String::as_str).collect();
        trackers.extend(extra);
        SourcesInput {
            cfg: &self.cfg,
            // BEP 27's flag is in the info dictionary we do not have.
            private: false,
            found: self.table.found_per_source(),
            dht_round: self.dht_round.as_ref(),
            lpd_status: self.lpd_status.as_ref(),
            tracker_status: &self.tracker_status,
            trackers,
            seeds,
            connected,
            // Peer exchange starts with the metadata.
            pex_peers: 0,
            next_pex: None,
        }
        .rows(now)
    }

    /// The verified info dictionary, once it is here.
    pub fn metadata(&self) -> Option<&[u8]> {
        self.info.as_deref()
    }

    pub fn info_hashes(&self) -> InfoHashes {
        self.hashes
    }

    pub fn status(&self) -> MetadataStatus {
        let mut s = self.status.clone();
        s.dht = self.dht_round.map(|(r, _)| r);
        s.found = self.table.len();
        s.handshaken = self.handshaken.len();
        s.with_ut_metadata = self.with_ut_metadata.len();
        s.refused_size = self.refused_size.len();
        s.size = self.asm.size();
        s.pieces_done = self.asm.pieces_done();
        s.pieces = self.asm.num_pieces();
        s
    }

    pub fn connected_peers(&self) -> usize {
        self.peers.values().filter(|p| p.established).count()
    }

    // ---- input ----

    pub fn handle_discovered(&mut self, now: Instant, addrs: &[SocketAddr], source: PeerSource) {
        let before = self.table.len();
        for a in addrs {
            self.table.add(now, *a, source);
        }
        let new = self.table.len() - before;
        if new > 0 {
            self.events
                .push_back(MetadataEvent::PeersFound { source, new });
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

    pub fn handle_lpd_status(&mut self, now: Instant, status: String, next_in: Option<Duration>) {
        self.lpd_status = Some((status, now, next_in));
        self.sources_news = true;
    }

    /// A connection is up; `None`: not wanted, close it.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        source: PeerSource,
        encrypted: bool,
        utp: bool,
    ) -> Option<PeerKey> {
        self.table.connected(addr);
        // Dials are counted before they start; peers that dial us are
        // held to the same cap here.
        let full = self.peers.len() + self.table.half_open() >= MAX_METADATA_PEERS;
        if self.table.is_banned(&addr.ip()) || (source == PeerSource::Incoming && full) {
            self.table.disconnected(addr);
            return None;
        }
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        let session = Session::new(
            SessionConfig::new(self.hashes.wire(), self.cfg.peer_id, None),
            now,
        );
        self.peers.insert(
            key,
            MagnetPeer {
                addr,
                source,
                session,
                encrypted,
                utp,
                client: String::new(),
                established: false,
                ext: None,
                has_all: false,
                bitfield: None,
                haves: Vec::new(),
            },
        );
        self.transmit(key);
        Some(key)
    }

    pub fn handle_connect_failed(&mut self, now: Instant, addr: SocketAddr) {
        self.status.failed += 1;
        self.table.dial_failed(addr);
        self.dial_due(now);
    }

    pub fn handle_data(&mut self, now: Instant, key: PeerKey, bytes: BytesMut) {
        let result = match self.peers.get_mut(&key) {
            Some(p) => p.session.handle_chunk(now, bytes),
            None => return,
        };
        if let Err(e) = result {
            self.drop_peer(key, e.to_string());
            return;
        }
        self.drain_peer_events(now, key);
        self.request(now, key);
    }

    pub fn handle_closed(&mut self, now: Instant, key: PeerKey, _reason: String) {
        if let Some(p) = self.peers.remove(&key) {
            self.asm.peer_gone(key);
            self.table.disconnected(p.addr);
            if !p.established && p.source != PeerSource::Incoming {
                self.table.closed_before_handshake(p.addr, p.utp);
            }
        }
        self.dial_due(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.last_tick + TICK {
            self.last_tick = now;
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for k in keys {
                let timed_out = self
                    .peers
                    .get_mut(&k)
                    .and_then(|p| p.session.handle_timeout(now).err());
                match timed_out {
                    Some(e) => self.drop_peer(k, e.to_string()),
                    None => self.request(now, k),
                }
            }
            if now >= self.next_report && self.info.is_none() {
                self.next_report = now + STUCK_REPORT;
                self.events.push_back(MetadataEvent::Stuck {
                    after: now - self.started,
                    status: self.status(),
                });
            }
            if self.sources_due(now) {
                self.report_sources(now);
            }
        }
        self.dial_due(now);
    }

    // ---- output ----

    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop()
    }

    pub fn poll_event(&mut self) -> Option<MetadataEvent> {
        self.events.pop_front()
    }

    /// The sources table, when it is time to say it again (the newest
    /// only: one not polled is replaced).
    pub fn poll_sources(&mut self) -> Option<Vec<Source>> {
        self.sources_out.take()
    }

    pub fn poll_timeout(&self) -> Instant {
        let tick = self.last_tick + TICK;
        let dial = self
            .wants_more_peers()
            .then(|| self.table.next_dial(false))
            .flatten()
            .unwrap_or(tick);
        tick.min(dial).max(self.last_tick)
    }

    pub fn poll_transmit(&mut self, now: Instant, key: PeerKey) -> Option<Bytes> {
        self.peers.get_mut(&key)?.session.poll_transmit(now)
    }

    // ---- inside ----

    fn transmit(&mut self, key: PeerKey) {
        self.out.transmit(key);
    }

    fn wants_more_peers(&self) -> bool {
        self.dial_room() > 0
    }

    /// Peers connected or being dialled.
    fn busy(&self) -> bool {
        !self.peers.is_empty() || self.table.half_open() > 0
    }

    /// The torrent phase's rule: about once a second while peers are
    /// about; when idle, once more after the last left, then when a source
    /// said something (its countdowns aside) or every [`SOURCES_EVERY`].
    fn sources_due(&self, now: Instant) -> bool {
        let Some((at, was_busy)) = self.reported_sources else {
            return true;
        };
        let since = now.saturating_duration_since(at);
        if self.busy() {
            since >= SOURCES_BUSY_EVERY
        } else {
            was_busy || self.sources_news || since >= SOURCES_EVERY
        }
    }

    fn report_sources(&mut self, now: Instant) {
        self.sources_out = Some(self.sources(now));
        self.reported_sources = Some((now, self.busy()));
        self.sources_news = false;
    }

    /// Dials that may start now (none once the metadata is in).
    fn dial_room(&self) -> usize {
        if self.info.is_some() {
            return 0;
        }
        let half = self.table.half_open();
        MAX_METADATA_PEERS
            .saturating_sub(self.peers.len() + half)
            .min(MAX_HALF_OPEN.saturating_sub(half))
    }

    fn dial_due(&mut self, now: Instant) {
        let room = self.dial_room();
        for a in self.table.dial_due(now, false, room, &mut self.rng) {
            self.status.attempts += 1;
            self.out.push(a);
        }
    }

    fn drop_peer(&mut self, key: PeerKey, reason: String) {
        if let Some(p) = self.peers.remove(&key) {
            self.asm.peer_gone(key);
            self.table.disconnected(p.addr);
            self.out.push(Action::Close(key));
            self.events.push_back(MetadataEvent::PeerRefused {
                addr: p.addr,
                reason,
            });
        }
    }

    fn ban(&mut self, liars: &[PeerKey]) {
        for k in liars {
            if let Some(p) = self.peers.remove(k) {
                self.table.ban(p.addr.ip());
                self.table.disconnected(p.addr);
                self.asm.peer_gone(*k);
                self.status.banned += 1;
                self.out.push(Action::Close(*k));
                self.events.push_back(MetadataEvent::Banned {
                    addr: p.addr,
                    reason: "sent metadata that does not match the info hash".to_owned(),
                });
            }
        }
    }

    /// Ask the peer for metadata pieces: spread over the peers that have
    /// them, several at once from a lone peer.
    fn request(&mut self, now: Instant, key: PeerKey) {
        if self.info.is_some() {
            return;
        }
        let cap = if self.asm.usable_peers() > 1 {
            1
        } else {
            PER_PEER
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.ext.as_ref().and_then(|e| e.id_of(UT_METADATA)).is_none() {
            return;
        }
        while self.asm.in_flight(key) < cap {
            let Some(piece) = self.asm.next_request(key, now) else {
                break;
            };
            p.session
                .send_extension(UT_METADATA, MetadataMessage::Request { piece }.encode());
        }
        self.transmit(key);
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

    fn on_peer_event(&mut self, _now: Instant, key: PeerKey, ev: PeerEvent) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        match ev {
            PeerEvent::Connected { peer_id, .. } => {
                self.handshaken.insert(p.addr);
                // The same peer twice (two sources, or both dialling): keep one.
                let twin = self.peers.iter().any(|(k, q)| {
                    *k != key
                        && q.established
                        && q.session
                            .peer_handshake()
                            .is_some_and(|h| h.peer_id == peer_id)
                });
                if twin {
                    self.drop_peer(key, "already connected to this peer".into());
                    return;
                }
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                p.established = true;
                p.client = peer_id.client_hint();
                *self.peers_by_source.entry(p.source.name()).or_default() += 1;
                // We have nothing yet: say so where the fast extension lets
                // us (a bitfield needs the piece count we do not know).
                p.session.send_have_none_if_fast();
                let mut h = ExtendedHandshake {
                    client: Some(format!("Lodestone {}", env!("CARGO_PKG_VERSION"))),
                    listen_port: self.cfg.listen.map(|a| a.port()),
                    your_ip: Some(p.addr.ip()),
                    ..Default::default()
                };
                h.extensions.insert(UT_METADATA.into(), OUR_UT_METADATA_ID);
                p.session.send_extended_handshake(&h);
                self.transmit(key);
            }
            PeerEvent::ExtendedHandshake(h) => {
                let ut_metadata = h.id_of(UT_METADATA).is_some();
                let size = h.metadata_size;
                p.ext = Some(*h);
                let (addr, source) = (p.addr, p.source);
                if ut_metadata {
                    self.with_ut_metadata.insert(addr);
                }
                self.events.push_back(MetadataEvent::PeerConnected {
                    addr,
                    source,
                    ut_metadata,
                    metadata_size: size,
                });
                if let (true, Some(size)) = (ut_metadata, size) {
                    if let Err(e) = self.asm.peer_size(key, size) {
                        self.refused_size.insert(addr);
                        self.drop_peer(key, e.to_string());
                    }
                }
            }
            PeerEvent::Bitfield(raw) => p.bitfield = Some(raw),
            PeerEvent::HaveAll => p.has_all = true,
            PeerEvent::Have(i) => {
                if p.haves.len() < MAX_EARLY_HAVES {
                    p.haves.push(i.0);
                }
            }
            PeerEvent::Metadata(MetadataMessage::Data {
                piece,
                total_size,
                data,
            }) => {
                let from = p.addr;
                match self.asm.on_data(key, piece, total_size, &data) {
                    Outcome::Stored => self.events.push_back(MetadataEvent::Piece {
                        done: self.asm.pieces_done(),
                        total: self.asm.num_pieces(),
                        from,
                    }),
                    Outcome::Ignored => {}
                    Outcome::Mismatch { liars } => {
                        self.events.push_back(MetadataEvent::Mismatch);
                        self.ban(&liars);
                    }
                    Outcome::Complete { info, liars } => {
                        let total = self.asm.num_pieces();
                        self.events.push_back(MetadataEvent::Piece {
                            done: total,
                            total,
                            from,
                        });
                        self.ban(&liars);
                        self.info = Some(info);
                    }
                }
            }
            PeerEvent::Metadata(MetadataMessage::Reject { piece }) => {
                self.asm.on_reject(key, piece)
            }
            PeerEvent::Metadata(MetadataMessage::Request { piece }) => {
                // Nothing to give yet.
                let reject = MetadataMessage::Reject { piece }.encode();
                p.session.send_extension(UT_METADATA, reject);
                self.transmit(key);
            }
            PeerEvent::Request(r) => {
                // Nothing to serve: the session rejects (BEP 6) or drops it.
                p.session.reject(r);
                self.transmit(key);
            }
            PeerEvent::HaveNone
            | PeerEvent::Choked
            | PeerEvent::Unchoked
            | PeerEvent::Interested
            | PeerEvent::NotInterested
            | PeerEvent::Block { .. }
            | PeerEvent::Cancel(_)
            | PeerEvent::Rejected(_)
            | PeerEvent::AllowedFast(_)
            | PeerEvent::Suggest(_)
            | PeerEvent::DhtPort(_)
            | PeerEvent::Pex(_) => {}
        }
    }
}
