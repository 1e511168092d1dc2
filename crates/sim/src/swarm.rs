//! A swarm of [`TorrentCore`]s on [`StreamNet`]: one torrent, many peers,
//! one virtual clock. The same [`SwarmConfig`] and peers give the same run:
//! no wall clock (except to report how long the run took), no threads, and
//! every map is ordered.
//!
//! Each peer is a host with its own uplink and downlink (and NAT), a core
//! listening on its own address, and an in-memory disk: a [`Bitfield`] of
//! verified pieces over one payload shared by the whole swarm (generated
//! from the seed). A piece the core asks to check is hashed with SHA-1
//! against the metainfo and, when it passes, compared with the payload; a
//! read is a slice of the payload. A liar flips every byte of the 16 KiB
//! blocks it sends.
//!
//! The driver loop: jump to the earliest of the network's next event, a
//! core's deadline and a scheduled join, leave or announce; feed what is
//! due to the cores; carry out their actions at once. A connection's output
//! is pulled from its core only while less than
//! [`SwarmConfig::queue_cap`] bytes of it are queued in the network, and
//! pulled again as deliveries drain it.
//!
//! Peer discovery is a tracker: a peer that joins (and, with
//! [`SwarmConfig::reannounce`], every so often after) is given up to
//! [`SwarmConfig::tracker_peers`] random addresses of the peers present;
//! the cores' own PEX does the rest. With [`SwarmConfig::dht`] the peers
//! also announce on a simulated DHT and look each other up there.
//!
//! A leecher with [`PeerSpec::magnet`] starts from a bare magnet: a
//! [`Phase::Metadata`] that knows only the info hash and fetches the info
//! dictionary from its peers (BEP 9). Once it is in, the driver parses it,
//! checks it is the swarm's torrent, and switches the peer to a
//! [`Phase::Ready`] core that takes the same connections over
//! ([`TorrentCore::from_magnet`]).

mod report;

pub use report::{percentile, Outcome, PeerReport, Report, STAGES};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lodestone_core::{Bitfield, Metainfo, PeerId, PieceIndex};
use lodestone_dht::rng::Rng;
use lodestone_dht::LookupId;
use lodestone_torrent::{
    Action, Checked, CoreConfig, Event, MagnetCore, MetadataEvent, PeerKey, PeerSource, Phase,
    TorrentCore,
};
use sha1::{Digest, Sha1};

use crate::dht::{DhtSim, SimConfig};
use crate::net::NetModel;
use crate::stream::{ConnId, HostConfig, HostId, NetEvent, StreamNet};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// See [`SwarmConfig::strict_deadlines`]: a core's housekeeping tick
/// while it has peers, so bytes cannot make its deadline earlier than this
/// except by a dial, which the core starts at once anyway.
pub const LAZY_DEADLINE: Duration = Duration::from_millis(250);

/// The size of a block a liar corrupts (what the cores request).
const BLOCK: usize = 16 * 1024;

/// The largest info dictionary a magnet leecher accepts.
const MAX_METADATA: u32 = 16 << 20;

/// The torrent and the world around it.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Seeds the payload, the latencies, the loss, the tracker and every
    /// core.
    pub seed: u64,
    /// Payload bytes.
    pub size: u64,
    pub piece_length: u32,
    pub median_rtt: Duration,
    /// Spread of the log-normal round-trip times.
    pub rtt_sigma: f64,
    /// Probability a segment is "lost" (arrives one RTT late).
    pub loss: f64,
    /// Addresses the tracker gives a peer on each announce (at most).
    pub tracker_peers: usize,
    /// Peers that are not done announce again this often.
    pub reannounce: Option<Duration>,
    /// A connection's output is pulled from its core only while fewer
    /// bytes than this are queued in the network.
    pub queue_cap: u64,
    /// Peers also find each other through a simulated DHT (the
    /// [`DhtSim`] model), as announcers and lookers-up.
    pub dht: Option<DhtOptions>,
    /// Ask a core for its deadline after every input, bytes included.
    /// Off (the default), a core that took bytes and already has a
    /// deadline within [`LAZY_DEADLINE`] keeps it: `poll_timeout` scans
    /// the core's whole peer table, and at 1,000 peers that scan after
    /// every 16 KiB segment took 70% of the run (see the bench).
    pub strict_deadlines: bool,
    /// The run stops at this much virtual time...
    pub max_time: Duration,
    /// ...or after this many events (network events, core deadlines,
    /// joins, leaves and announces).
    pub max_events: u64,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            size: 4 * MIB,
            piece_length: 64 * 1024,
            median_rtt: Duration::from_millis(80),
            rtt_sigma: 0.6,
            loss: 0.0,
            tracker_peers: 30,
            reannounce: None,
            dht: None,
            strict_deadlines: false,
            queue_cap: 256 * KIB,
            max_time: Duration::from_secs(3600),
            max_events: 200_000_000,
        }
    }
}

/// The DHT the peers use: peer `i` is the `i`-th live DHT node (node 0,
/// the bootstrap router, is the first peer; with no dead nodes peer `i`
/// is node `i`); the other nodes are plain DHT nodes. Every node joins
/// before the swarm starts.
#[derive(Debug, Clone)]
pub struct DhtOptions {
    /// DHT nodes in all (at least as many as peers).
    pub nodes: usize,
    /// Loss of DHT datagrams.
    pub loss: f64,
    /// A peer announces (and so looks up) at its start and, until it
    /// is complete, this often.
    pub every: Duration,
    /// How often found peers are handed to the cores while lookups run.
    pub poll: Duration,
    /// Share of the DHT nodes that never answer (dead or firewalled).
    /// The peers' own nodes are always live: peer `i` is the `i`-th live
    /// node, at that node's address.
    pub dead: f64,
    /// Nodes join one after the other this far apart (virtual time,
    /// before the swarm starts).
    pub join_apart: Duration,
}

impl Default for DhtOptions {
    fn default() -> Self {
        Self {
            nodes: 0,
            loss: 0.01,
            every: Duration::from_secs(15),
            poll: Duration::from_millis(50),
            dead: 0.0,
            join_apart: Duration::from_millis(5),
        }
    }
}

/// When a peer leaves (goes offline; its core is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// This long after the swarm started.
    At(Duration),
    /// Once its core has uploaded this many payload bytes.
    AfterUpload(u64),
}

/// One peer.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// When it starts, after the swarm's start.
    pub join_at: Duration,
    /// It starts with every piece.
    pub complete: bool,
    /// Bytes/s, 0 = unlimited.
    pub up_rate: u64,
    pub down_rate: u64,
    /// No incoming connections.
    pub nat: bool,
    /// Flips every byte of each 16 KiB block it sends.
    pub liar: bool,
    pub leave: Option<Leave>,
    /// After completing, seed this long and leave; `None`: until the end.
    pub seed_time: Option<Duration>,
    /// A leecher that starts from a bare magnet: only the info hash.
    pub magnet: bool,
}

impl PeerSpec {
    /// Complete, 10 MiB/s both ways.
    pub fn seeder() -> Self {
        Self {
            join_at: Duration::ZERO,
            complete: true,
            up_rate: 10 * MIB,
            down_rate: 10 * MIB,
            nat: false,
            liar: false,
            leave: None,
            seed_time: None,
            magnet: false,
        }
    }

    /// Nothing yet; 2 MiB/s up, 10 MiB/s down; seeds once done.
    pub fn leecher() -> Self {
        Self {
            complete: false,
            up_rate: 2 * MIB,
            ..Self::seeder()
        }
    }

    pub fn at(mut self, join_at: Duration) -> Self {
        self.join_at = join_at;
        self
    }

    /// Starts from a bare magnet (a leecher only: a seeder has the
    /// metadata).
    pub fn magnet(mut self) -> Self {
        self.magnet = true;
        self
    }

    fn starts_from_magnet(&self) -> bool {
        self.magnet && self.role() == Role::Leecher
    }

    pub fn behind_nat(mut self) -> Self {
        self.nat = true;
        self
    }

    pub fn liar(mut self) -> Self {
        self.liar = true;
        self
    }

    pub fn leaving(mut self, leave: Leave) -> Self {
        self.leave = Some(leave);
        self
    }

    pub fn rates(mut self, up: u64, down: u64) -> Self {
        self.up_rate = up;
        self.down_rate = down;
        self
    }

    fn role(&self) -> Role {
        match (self.liar, self.complete) {
            (true, _) => Role::Liar,
            (false, true) => Role::Seeder,
            (false, false) => Role::Leecher,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Starts complete, honest.
    Seeder,
    /// Starts empty, honest: its finish time counts.
    Leecher,
    Liar,
}

/// One end of a connection with a core key.
#[derive(Debug, Clone, Copy)]
struct End {
    key: PeerKey,
    /// The address its core knows the other end by.
    addr: SocketAddr,
    /// Its core has output we did not pull (the queue was full).
    blocked: bool,
}

#[derive(Debug, Clone, Copy)]
struct Dial {
    peer: usize,
    addr: SocketAddr,
    source: PeerSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sched {
    Join,
    Leave,
    Announce,
    DhtAnnounce,
    DhtPoll,
}

/// The DHT side of a swarm.
struct Dht {
    sim: DhtSim,
    /// The DHT's clock at the swarm's start.
    offset: Instant,
    /// Peer `i`'s DHT node.
    node_of: Vec<usize>,
    /// A DHT node's address → its peer.
    peer_at: BTreeMap<SocketAddr, usize>,
    /// Lookups running: (peer, lookup, peers already handed over).
    lookups: Vec<(usize, LookupId, usize)>,
    started: u64,
    found: u64,
    polling: bool,
    opts: DhtOptions,
}

struct SimPeer {
    spec: PeerSpec,
    addr: SocketAddr,
    core: Option<Phase>,
    /// Its core's keys and their connections.
    conns: BTreeMap<PeerKey, ConnId>,
    disk: Bitfield,
    /// The deadline registered in the timer heap.
    deadline: Option<Instant>,
    joined: Option<Instant>,
    left: Option<Instant>,
    leaving: bool,
    finished: Option<Duration>,
    uploaded: u64,
    content_errors: u32,
    hash_failures: u32,
    first_peer: Option<Instant>,
    connected: Option<Instant>,
    metadata: Option<Instant>,
    first_byte: Option<Duration>,
    /// Addresses a metadata piece came from.
    metadata_from: BTreeSet<SocketAddr>,
    /// Connections taken over from the metadata phase: did a metadata
    /// piece come over it, and the bytes it brought in after the switch.
    adopted: BTreeMap<ConnId, (bool, u64)>,
}

/// The address of peer `i`: one IP each (bans are per IP), port 6881.
pub fn peer_addr(i: usize) -> SocketAddr {
    let n = u32::try_from(i + 1).unwrap_or(u32::MAX) & 0x00ff_ffff;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 | n), 6881))
}

/// The payload every honest peer holds: `size` bytes from `seed`.
pub fn payload(seed: u64, size: u64) -> Vec<u8> {
    let mut rng = Rng::from_u64(seed ^ 0x0070_6179_6c6f_6164);
    let mut out = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    rng.fill(&mut out);
    out
}

/// A swarm: add peers, then [`Swarm::run`].
pub struct Swarm {
    cfg: SwarmConfig,
    meta: Arc<Metainfo>,
    payload: Bytes,
    net: StreamNet,
    start: Instant,
    now: Instant,
    rng: Rng,
    peers: Vec<SimPeer>,
    by_addr: BTreeMap<SocketAddr, usize>,
    /// Peers the tracker knows (joined, not left), in join order.
    tracker: Vec<usize>,
    ends: BTreeMap<(ConnId, usize), End>,
    dials: BTreeMap<ConnId, Dial>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    schedule: BinaryHeap<Reverse<(Instant, u64, usize, Sched)>>,
    seq: u64,
    /// Leechers neither finished nor gone.
    unfinished: usize,
    dht: Option<Dht>,
    bans: Vec<(usize, usize)>,
    events: u64,
    net_events: u64,
    timeouts: u64,
    actions: u64,
    dht_setup_wall: Duration,
}

impl Swarm {
    pub fn new(cfg: SwarmConfig) -> Self {
        let data = payload(cfg.seed, cfg.size);
        let info = lodestone_core::metainfo::single_file_info("swarm", cfg.piece_length, &data);
        let meta = Arc::new(
            Metainfo::from_info_bytes(&info).expect("single_file_info builds a valid info dict"),
        );
        // `Instant` has no constant: the origin is read once, and every
        // time after it is an offset on the virtual clock.
        let start = Instant::now();
        let model = NetModel::new(cfg.median_rtt, cfg.rtt_sigma, cfg.loss, cfg.seed);
        Self {
            meta,
            payload: Bytes::from(data),
            net: StreamNet::new(model, start),
            start,
            now: start,
            rng: Rng::from_u64(cfg.seed ^ 0x0074_7261_636b_6572),
            peers: Vec::new(),
            by_addr: BTreeMap::new(),
            tracker: Vec::new(),
            ends: BTreeMap::new(),
            dials: BTreeMap::new(),
            timers: BinaryHeap::new(),
            schedule: BinaryHeap::new(),
            seq: 0,
            unfinished: 0,
            dht: None,
            bans: Vec::new(),
            events: 0,
            net_events: 0,
            timeouts: 0,
            actions: 0,
            dht_setup_wall: Duration::ZERO,
            cfg,
        }
    }

    pub fn metainfo(&self) -> &Arc<Metainfo> {
        &self.meta
    }

    /// A peer (its index is its position): its host exists at once, its
    /// core from `spec.join_at`.
    pub fn add_peer(&mut self, spec: PeerSpec) -> usize {
        let i = self.peers.len();
        let host = self.net.add_host(HostConfig {
            up_rate: spec.up_rate,
            down_rate: spec.down_rate,
            behind_nat: spec.nat,
        });
        debug_assert_eq!(host.0, i, "one host per peer, in order");
        let addr = peer_addr(i);
        self.by_addr.insert(addr, i);
        let n = self.meta.info.num_pieces();
        if spec.role() == Role::Leecher {
            self.unfinished += 1;
        }
        self.push_sched(self.start + spec.join_at, i, Sched::Join);
        if let Some(Leave::At(d)) = spec.leave {
            self.push_sched(self.start + d, i, Sched::Leave);
        }
        self.peers.push(SimPeer {
            disk: if spec.complete {
                Bitfield::full(n)
            } else {
                Bitfield::new(n)
            },
            spec,
            addr,
            core: None,
            conns: BTreeMap::new(),
            deadline: None,
            joined: None,
            left: None,
            leaving: false,
            finished: None,
            uploaded: 0,
            content_errors: 0,
            hash_failures: 0,
            first_peer: None,
            connected: None,
            metadata: None,
            first_byte: None,
            metadata_from: BTreeSet::new(),
            adopted: BTreeMap::new(),
        });
        i
    }

    /// Peer `i`'s torrent core, while it is in the swarm and has the
    /// metadata.
    pub fn core(&self, i: usize) -> Option<&TorrentCore> {
        self.phase(i).and_then(Phase::ready)
    }

    /// Peer `i`'s core in either phase, while it is in the swarm.
    pub fn phase(&self, i: usize) -> Option<&Phase> {
        self.peers.get(i).and_then(|p| p.core.as_ref())
    }

    /// Run until every leecher finished (or left), or a cap.
    pub fn run(&mut self) -> Report {
        let setup = std::time::Instant::now();
        self.start_dht();
        self.dht_setup_wall = setup.elapsed();
        let wall = std::time::Instant::now();
        let end = self.start + self.cfg.max_time;
        let outcome = loop {
            if self.unfinished == 0 {
                break Outcome::AllFinished;
            }
            if self.events >= self.cfg.max_events {
                break Outcome::EventCap;
            }
            let next = [
                self.net.poll_timeout(),
                self.timers.peek().map(|Reverse((t, _))| *t),
                self.schedule.peek().map(|Reverse((t, ..))| *t),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                break Outcome::Stalled;
            };
            if next > end {
                self.now = self.now.max(end);
                break Outcome::TimeCap;
            }
            self.now = self.now.max(next);
            self.step();
        };
        self.report(outcome, wall.elapsed())
    }

    /// Everything due at `self.now`.
    fn step(&mut self) {
        let now = self.now;
        while let Some(&Reverse((at, _, p, what))) = self.schedule.peek() {
            if at > now {
                break;
            }
            self.schedule.pop();
            self.events += 1;
            match what {
                Sched::Join => self.join(p),
                Sched::Leave => self.leave(p),
                Sched::Announce => self.announce(p),
                Sched::DhtAnnounce => self.dht_announce(p),
                Sched::DhtPoll => self.dht_poll(),
            }
        }
        while let Some(ev) = self.net.poll_event(now) {
            self.events += 1;
            self.net_events += 1;
            self.on_net(ev);
        }
        while let Some(&Reverse((at, p))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.peers[p].deadline != Some(at) {
                continue;
            }
            self.peers[p].deadline = None;
            let Some(core) = self.peers[p].core.as_mut() else {
                continue;
            };
            self.events += 1;
            self.timeouts += 1;
            core.handle_timeout(now);
            self.drain(p);
            if self.events >= self.cfg.max_events {
                return;
            }
        }
    }

    fn push_sched(&mut self, at: Instant, peer: usize, what: Sched) {
        self.seq += 1;
        self.schedule.push(Reverse((at, self.seq, peer, what)));
    }

    fn join(&mut self, p: usize) {
        let now = self.now;
        let peer = &self.peers[p];
        if peer.joined.is_some() || peer.left.is_some() {
            return;
        }
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-LS0100-");
        id[8..].copy_from_slice(format!("{p:012}").as_bytes());
        let seed = self.cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (p as u64 + 1);
        let mut cfg = CoreConfig::new(PeerId(id), seed);
        cfg.listen = Some(peer.addr);
        cfg.seed_time = peer.spec.seed_time;
        cfg.dht = self.cfg.dht.is_some();
        cfg.trackers = self.cfg.tracker_peers > 0;
        let core = if peer.spec.starts_from_magnet() {
            let m = MagnetCore::new(self.meta.info_hashes, cfg, MAX_METADATA, now);
            Phase::Metadata(Box::new(m))
        } else {
            let t = TorrentCore::new(self.meta.clone(), cfg, &peer.disk, false, now);
            Phase::Ready(Box::new(t))
        };
        self.peers[p].core = Some(core);
        self.peers[p].joined = Some(now);
        if self.cfg.tracker_peers > 0 {
            self.announce(p);
        }
        self.tracker.push(p);
        self.dht_announce(p);
        self.drain(p);
    }

    /// Every DHT node joins (on the DHT's own clock, before the swarm).
    fn start_dht(&mut self) {
        let Some(opts) = self.cfg.dht.clone() else {
            return;
        };
        if self.dht.is_some() {
            return;
        }
        let mut sim = DhtSim::new(&SimConfig {
            nodes: opts.nodes.max(self.peers.len()),
            seed: self.cfg.seed ^ 0x0064_6874,
            median_rtt: self.cfg.median_rtt,
            rtt_sigma: self.cfg.rtt_sigma,
            loss: opts.loss,
            unresponsive: opts.dead,
            natted: 0.0,
            ..SimConfig::default()
        });
        let node_of: Vec<usize> = (0..sim.len())
            .filter(|&n| sim.is_responsive(n))
            .take(self.peers.len())
            .collect();
        assert_eq!(
            node_of.len(),
            self.peers.len(),
            "seed {}: {} DHT nodes with {:.0}% dead are too few for {} peers",
            self.cfg.seed,
            sim.len(),
            opts.dead * 100.0,
            self.peers.len()
        );
        let peer_at = node_of
            .iter()
            .enumerate()
            .map(|(p, &n)| (sim.addr(n), p))
            .collect();
        sim.join_all(
            opts.join_apart,
            Duration::from_secs(30),
            self.cfg.max_events,
        );
        self.dht = Some(Dht {
            offset: sim.now(),
            node_of,
            peer_at,
            sim,
            lookups: Vec::new(),
            started: 0,
            found: 0,
            polling: false,
            opts,
        });
    }

    /// Peer `p` announces itself on the DHT (a lookup that also finds
    /// peers), and again later while it is not complete.
    fn dht_announce(&mut self, p: usize) {
        let now = self.now;
        let peer = &self.peers[p];
        if peer.core.is_none() || peer.finished.is_some() && peer.spec.role() != Role::Seeder {
            return;
        }
        let complete = peer.disk.is_full();
        let ih = self.meta.info_hashes.wire();
        let Some(dht) = self.dht.as_mut() else {
            return;
        };
        dht.sim
            .run_until(dht.offset + (now - self.start), self.cfg.max_events);
        let lookup = dht.sim.announce(dht.node_of[p], ih);
        dht.lookups.push((p, lookup, 0));
        dht.started += 1;
        let every = dht.opts.every;
        let poll = !std::mem::replace(&mut dht.polling, true);
        if !complete {
            self.push_sched(now + every, p, Sched::DhtAnnounce);
        }
        if poll {
            self.dht_poll();
        }
    }

    /// Bring the DHT to our time; hand new peers to the cores.
    fn dht_poll(&mut self) {
        let now = self.now;
        let Some(dht) = self.dht.as_mut() else {
            return;
        };
        dht.sim
            .run_until(dht.offset + (now - self.start), self.cfg.max_events);
        let mut found: Vec<(usize, Vec<usize>)> = Vec::new();
        let (sim, node_of, peer_at) = (&dht.sim, &dht.node_of, &dht.peer_at);
        dht.lookups.retain_mut(|(p, lookup, seen)| {
            let Some(r) = sim.record_of(node_of[*p], *lookup) else {
                return false;
            };
            if r.peers.len() > *seen {
                // Only peers announce: each address found is a peer's node.
                let peers = r.peers[*seen..].iter().filter_map(|a| peer_at.get(a));
                found.push((*p, peers.copied().collect()));
                *seen = r.peers.len();
            }
            r.done_at.is_none()
        });
        dht.found += found.iter().map(|(_, a)| a.len() as u64).sum::<u64>();
        let again = !dht.lookups.is_empty();
        dht.polling = again;
        let every = dht.opts.poll;
        for (p, found) in found {
            let addrs: Vec<SocketAddr> = found
                .into_iter()
                .filter(|&j| j != p)
                .map(|j| self.peers[j].addr)
                .collect();
            let peer = &mut self.peers[p];
            if let Some(core) = peer.core.as_mut() {
                if !addrs.is_empty() {
                    peer.first_peer.get_or_insert(now);
                }
                core.handle_discovered(now, &addrs, PeerSource::Dht);
                self.drain(p);
            }
        }
        if again {
            self.push_sched(now + every, 0, Sched::DhtPoll);
        }
    }

    /// The tracker: up to `tracker_peers` random peers present, not `p`.
    fn announce(&mut self, p: usize) {
        let now = self.now;
        let peer = &self.peers[p];
        if peer.core.is_none() || peer.finished.is_some() && peer.spec.role() == Role::Leecher {
            return;
        }
        let mut pool: Vec<usize> = self.tracker.iter().copied().filter(|&j| j != p).collect();
        let k = self.cfg.tracker_peers.min(pool.len());
        for i in 0..k {
            let j = i + self.rng.below((pool.len() - i) as u64) as usize;
            pool.swap(i, j);
        }
        let addrs: Vec<SocketAddr> = pool[..k].iter().map(|&j| self.peers[j].addr).collect();
        let peer = &mut self.peers[p];
        if let Some(core) = peer.core.as_mut() {
            if !addrs.is_empty() {
                peer.first_peer.get_or_insert(now);
            }
            core.handle_discovered(now, &addrs, PeerSource::Tracker);
        }
        if let Some(every) = self.cfg.reannounce {
            self.push_sched(now + every, p, Sched::Announce);
        }
        self.drain(p);
    }

    /// Offline at once: its connections break, its core is dropped.
    fn leave(&mut self, p: usize) {
        let now = self.now;
        let peer = &mut self.peers[p];
        if peer.left.is_some() {
            return;
        }
        peer.left = Some(now);
        peer.deadline = None;
        if let Some(Phase::Ready(core)) = peer.core.take() {
            peer.uploaded = core.stats().uploaded;
        }
        let keys = std::mem::take(&mut peer.conns);
        if peer.spec.role() == Role::Leecher && peer.finished.is_none() {
            self.unfinished -= 1;
        }
        for conn in keys.into_values() {
            self.ends.remove(&(conn, p));
        }
        self.dials.retain(|_, d| d.peer != p);
        self.tracker.retain(|&j| j != p);
        self.net.set_online(now, HostId(p), false);
        if let Some(dht) = self.dht.as_mut() {
            dht.sim.kill(dht.node_of[p]);
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        let now = self.now;
        match ev {
            NetEvent::Accepted { conn, host, from } => {
                let p = host.0;
                let addr = self.peers[from.0].addr;
                self.connected(p, conn, addr, PeerSource::Incoming);
                let _ = now;
            }
            NetEvent::Connected { conn, host } => {
                let Some(d) = self.dials.remove(&conn) else {
                    self.net.close(now, conn, host);
                    return;
                };
                self.connected(d.peer, conn, d.addr, d.source);
            }
            NetEvent::Refused { conn, .. } => {
                let Some(d) = self.dials.remove(&conn) else {
                    return;
                };
                if let Some(core) = self.peers[d.peer].core.as_mut() {
                    core.handle_connect_failed(now, d.addr);
                    self.drain(d.peer);
                }
            }
            NetEvent::Data { conn, host, bytes } => {
                let r = host.0;
                // The sender's queue shrank: pull more of its output.
                if let Some(s) = self.other_end(conn, r) {
                    self.pump(s, conn);
                }
                let Some(end) = self.ends.get(&(conn, r)) else {
                    return;
                };
                let key = end.key;
                let peer = &mut self.peers[r];
                if let Some((_, n)) = peer.adopted.get_mut(&conn) {
                    *n += bytes.len() as u64;
                }
                if let Some(core) = peer.core.as_mut() {
                    core.handle_data(now, key, BytesMut::from(bytes));
                    self.drain_after(r, true);
                }
            }
            NetEvent::Closed { conn, host } => {
                let p = host.0;
                let Some(end) = self.ends.remove(&(conn, p)) else {
                    return;
                };
                self.peers[p].conns.remove(&end.key);
                if let Some(core) = self.peers[p].core.as_mut() {
                    core.handle_closed(now, end.key, "closed by peer".into());
                    self.drain(p);
                }
            }
        }
    }

    /// The end of `conn` that is not `me`, if it has a core key.
    fn other_end(&self, conn: ConnId, me: usize) -> Option<usize> {
        self.ends
            .range((conn, 0)..=(conn, usize::MAX))
            .map(|((_, p), _)| *p)
            .find(|&p| p != me)
    }

    fn connected(&mut self, p: usize, conn: ConnId, addr: SocketAddr, source: PeerSource) {
        let now = self.now;
        let peer = &mut self.peers[p];
        let Some(core) = peer.core.as_mut() else {
            self.net.close(now, conn, HostId(p));
            return;
        };
        if source == PeerSource::Incoming {
            peer.first_peer.get_or_insert(now);
        }
        match core.handle_connected(now, addr, source, false, false) {
            Some(key) => {
                self.ends.insert(
                    (conn, p),
                    End {
                        key,
                        addr,
                        blocked: false,
                    },
                );
                self.peers[p].conns.insert(key, conn);
            }
            None => self.net.close(now, conn, HostId(p)),
        }
        self.drain(p);
    }

    /// Pull `p`'s output for `conn` while the network takes it.
    fn pump(&mut self, p: usize, conn: ConnId) {
        let now = self.now;
        let Some(end) = self.ends.get_mut(&(conn, p)) else {
            return;
        };
        let key = end.key;
        let peer = &mut self.peers[p];
        let Some(core) = peer.core.as_mut() else {
            return;
        };
        let mut blocked = false;
        loop {
            if self.net.queued_bytes(conn, HostId(p)) >= self.cfg.queue_cap {
                blocked = true;
                break;
            }
            let Some(mut b) = core.poll_transmit(now, key) else {
                break;
            };
            if peer.spec.liar && b.len() == BLOCK {
                b = b.iter().map(|x| !x).collect::<Vec<u8>>().into();
            }
            self.net.send(now, conn, HostId(p), b);
        }
        end.blocked = blocked;
    }

    /// Carry out `p`'s actions, note its events, register its deadline.
    fn drain(&mut self, p: usize) {
        self.drain_after(p, false);
    }

    /// `data`: the input was bytes (see [`SwarmConfig::strict_deadlines`]).
    fn drain_after(&mut self, p: usize, data: bool) {
        let now = self.now;
        loop {
            while let Some(a) = self.peers[p].core.as_mut().and_then(Phase::poll_action) {
                self.actions += 1;
                self.act(p, a);
            }
            // The magnet's actions are carried out before it switches.
            if !self.metadata_phase(p) {
                break;
            }
        }
        let registered = self.peers[p].deadline;
        let keep = data
            && !self.cfg.strict_deadlines
            && registered.is_some_and(|d| d <= now + LAZY_DEADLINE);
        let core = match self.peers[p].core.as_mut() {
            None => return,
            Some(Phase::Ready(core)) => core,
            Some(Phase::Metadata(m)) => {
                let deadline = match registered {
                    Some(d) if keep => d,
                    _ => m.poll_timeout(),
                };
                self.set_deadline(p, deadline);
                return;
            }
        };
        let mut finished = None;
        let mut banned = Vec::new();
        let mut failed = 0;
        let mut connected = false;
        while let Some(e) = core.poll_event() {
            match e {
                Event::Completed { after } => finished = Some(after),
                Event::PeerBanned { addr, .. } => banned.push(addr),
                Event::HashFailed { .. } => failed += 1,
                Event::PeerConnected { .. } => connected = true,
                _ => {}
            }
        }
        let uploaded = core.stats().uploaded;
        let first_byte = core.first_byte_after();
        let done = core.is_finished(now);
        let deadline = match registered {
            Some(d) if keep => d,
            _ => core.poll_timeout(),
        };
        let peer = &mut self.peers[p];
        peer.uploaded = uploaded;
        if connected {
            peer.connected.get_or_insert(now);
        }
        if peer.first_byte.is_none() {
            peer.first_byte = first_byte;
        }
        peer.hash_failures += failed;
        if let Some(after) = finished {
            if peer.finished.is_none() {
                peer.finished = Some(after);
                if peer.spec.role() == Role::Leecher {
                    self.unfinished -= 1;
                }
            }
        }
        for addr in banned {
            if let Some(&j) = self.by_addr.get(&addr) {
                self.bans.push((p, j));
            }
        }
        self.set_deadline(p, deadline);
        let peer = &mut self.peers[p];
        let upload_goal = matches!(peer.spec.leave, Some(Leave::AfterUpload(n)) if uploaded >= n);
        if (done || upload_goal) && !peer.leaving {
            peer.leaving = true;
            self.push_sched(now, p, Sched::Leave);
        }
    }

    fn set_deadline(&mut self, p: usize, deadline: Instant) {
        let peer = &mut self.peers[p];
        if peer.deadline != Some(deadline) {
            peer.deadline = Some(deadline);
            self.timers.push(Reverse((deadline, p)));
        }
    }

    /// While `p` fetches the metadata: note its magnet's events, and once
    /// the metadata is in, switch it to a torrent core on the same
    /// connections. True if it switched (its new core may have actions).
    fn metadata_phase(&mut self, p: usize) -> bool {
        let now = self.now;
        let peer = &mut self.peers[p];
        let Some(Phase::Metadata(m)) = peer.core.as_mut() else {
            return false;
        };
        while let Some(e) = m.poll_event() {
            match e {
                MetadataEvent::PeerConnected { .. } => {
                    peer.connected.get_or_insert(now);
                }
                MetadataEvent::Piece { from, .. } => {
                    peer.metadata_from.insert(from);
                }
                MetadataEvent::Banned { addr, .. } => {
                    if let Some(&j) = self.by_addr.get(&addr) {
                        self.bans.push((p, j));
                    }
                }
                _ => {}
            }
        }
        if m.metadata().is_none() {
            return false;
        }
        let Some(Phase::Metadata(m)) = peer.core.take() else {
            return false;
        };
        let info = m.metadata().unwrap_or_default();
        let meta = match Metainfo::from_info_bytes(info) {
            Ok(meta) => meta,
            Err(e) => panic!("seed {}: peer {p}: bad metadata: {e}", self.cfg.seed),
        };
        assert_eq!(
            meta, *self.meta,
            "seed {}: peer {p}: the metadata is not the swarm's torrent",
            self.cfg.seed
        );
        peer.metadata = Some(now);
        for conn in peer.conns.values() {
            let from = self.ends.get(&(*conn, p)).map(|e| e.addr);
            let metadata = from.is_some_and(|a| peer.metadata_from.contains(&a));
            peer.adopted.insert(*conn, (metadata, 0));
        }
        let core = TorrentCore::from_magnet(*m, Arc::new(meta), &peer.disk, false, now);
        peer.core = Some(Phase::Ready(Box::new(core)));
        true
    }

    fn act(&mut self, p: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Dial { addr, source, .. } => match self.by_addr.get(&addr) {
                Some(&j) => {
                    let conn = self.net.connect(now, HostId(p), HostId(j));
                    self.dials.insert(
                        conn,
                        Dial {
                            peer: p,
                            addr,
                            source,
                        },
                    );
                }
                None => {
                    if let Some(core) = self.peers[p].core.as_mut() {
                        core.handle_connect_failed(now, addr);
                    }
                }
            },
            Action::Transmit(key) => {
                if let Some(&conn) = self.peers[p].conns.get(&key) {
                    self.pump(p, conn);
                }
            }
            Action::Close(key) => {
                if let Some(conn) = self.peers[p].conns.remove(&key) {
                    self.ends.remove(&(conn, p));
                    self.net.close(now, conn, HostId(p));
                }
            }
            Action::Check { piece, blocks } => {
                let result = self.check(p, piece, blocks);
                if let Some(core) = self.peers[p].core.as_mut().and_then(Phase::ready_mut) {
                    core.handle_checked(now, piece, result);
                }
            }
            Action::Read { piece, len, .. } => {
                let result = if self.peers[p].disk.get(piece) {
                    let at = u64::from(piece.0) * u64::from(self.cfg.piece_length);
                    let at = usize::try_from(at).unwrap_or(usize::MAX);
                    let end = at.saturating_add(len as usize);
                    if end <= self.payload.len() {
                        Ok(self.payload.slice(at..end))
                    } else {
                        Err("read past the end".to_owned())
                    }
                } else {
                    Err("piece not on disk".to_owned())
                };
                if let Some(core) = self.peers[p].core.as_mut().and_then(Phase::ready_mut) {
                    core.handle_read(piece, result);
                }
            }
            Action::SaveResume { .. } => {
                if let Some(core) = self.peers[p].core.as_mut().and_then(Phase::ready_mut) {
                    core.handle_resume_saved(now, true, false);
                }
            }
            Action::Progress(_) => {}
        }
    }

    /// Hash the blocks against the metainfo; "write" a good piece.
    fn check(&mut self, p: usize, piece: PieceIndex, blocks: Vec<Bytes>) -> Checked {
        let mut h = Sha1::new();
        for b in &blocks {
            h.update(b);
        }
        let digest: [u8; 20] = h.finalize().into();
        if self.meta.info.piece_hash(piece) != Some(digest) {
            return Checked::Bad(blocks);
        }
        // The hash matched: the bytes should be the payload's.
        let at = usize::try_from(u64::from(piece.0) * u64::from(self.cfg.piece_length))
            .unwrap_or(usize::MAX);
        let mut same = true;
        let mut off = at;
        for b in &blocks {
            same &= self.payload.get(off..off + b.len()) == Some(&b[..]);
            off += b.len();
        }
        let peer = &mut self.peers[p];
        if !same {
            peer.content_errors += 1;
        }
        peer.disk.set(piece);
        Checked::Good(blocks)
    }

    fn report(&mut self, outcome: Outcome, wall: Duration) -> Report {
        let since = |t: Option<Instant>, start: Instant| t.map(|t| t - start);
        let stats = self.net.stats();
        let peers = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let h = &stats.hosts[i];
                let joined = p.joined.unwrap_or(self.start);
                let count =
                    |f: fn(&(bool, u64)) -> bool| p.adopted.values().filter(|c| f(c)).count();
                PeerReport {
                    addr: p.addr,
                    role: p.spec.role(),
                    nat: p.spec.nat,
                    joined_at: since(p.joined, self.start),
                    finished_after: p.finished,
                    left_at: since(p.left, self.start),
                    uploaded: p
                        .core
                        .as_ref()
                        .and_then(Phase::ready)
                        .map_or(p.uploaded, |c| c.stats().uploaded),
                    verified_pieces: p.disk.count(),
                    complete: p.disk.is_full(),
                    content_errors: p.content_errors,
                    hash_failures: p.hash_failures,
                    dialed: h.dialed,
                    accepted: h.accepted,
                    refused: h.refused,
                    magnet: p.spec.starts_from_magnet(),
                    first_peer_after: since(p.first_peer, joined),
                    connected_after: since(p.connected, joined),
                    metadata_after: since(p.metadata, joined),
                    first_byte_after: p.first_byte,
                    adopted: p.adopted.len(),
                    adopted_with_content: count(|(_, n)| *n >= BLOCK as u64),
                    metadata_conns: count(|(m, _)| *m),
                    metadata_conns_with_content: count(|(m, n)| *m && *n >= BLOCK as u64),
                }
            })
            .collect();
        Report {
            seed: self.cfg.seed,
            outcome,
            size: self.cfg.size,
            peers,
            bans: self.bans.clone(),
            sim_time: self.now - self.start,
            wall,
            events: self.events,
            net_events: self.net_events,
            timeouts: self.timeouts,
            actions: self.actions,
            net_bytes: stats.hosts.iter().map(|h| h.received).sum(),
            dht_lookups: self.dht.as_ref().map_or(0, |d| d.started),
            dht_found: self.dht.as_ref().map_or(0, |d| d.found),
            dht_nodes: self.dht.as_ref().map_or(0, |d| d.sim.len()),
            dht_setup_wall: self.dht_setup_wall,
        }
    }
}
