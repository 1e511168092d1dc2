//! The core driven by hand: fake time, in-memory disks, and connections
//! that deliver at once. Each node is a `TorrentCore`; `World` plays every
//! driver.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lodestone_core::{Bitfield, Metainfo, PeerId};
use sha1::{Digest, Sha1};

use crate::magnet::MetadataEvent;
use crate::*;

const PIECE: u32 = 32 * 1024;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn torrent(len: usize) -> (Arc<Metainfo>, Vec<u8>) {
    let data = payload(len);
    let info = lodestone_core::metainfo::single_file_info("t", PIECE, &data);
    (Arc::new(Metainfo::from_info_bytes(&info).unwrap()), data)
}

/// A v1 torrent of several files (no padding) of these sizes.
fn torrent_of(sizes: &[usize]) -> (Arc<Metainfo>, Vec<u8>) {
    let data = payload(sizes.iter().sum());
    let mut pieces = Vec::new();
    for chunk in data.chunks(PIECE as usize) {
        pieces.extend_from_slice(&Sha1::digest(chunk));
    }
    // Bencoded by hand (keys in order): this crate has no encoder.
    let mut info = b"d5:filesl".to_vec();
    for (i, len) in sizes.iter().enumerate() {
        let name = format!("f{i}");
        let file = format!("d6:lengthi{len}e4:pathl{}:{name}ee", name.len());
        info.extend_from_slice(file.as_bytes());
    }
    let tail = format!(
        "e4:name1:t12:piece lengthi{PIECE}e6:pieces{}:",
        pieces.len()
    );
    info.extend_from_slice(tail.as_bytes());
    info.extend_from_slice(&pieces);
    info.push(b'e');
    (Arc::new(Metainfo::from_info_bytes(&info).unwrap()), data)
}

/// One direction of a connection as it is read off the wire.
#[derive(Default)]
struct Stream {
    past_handshake: bool,
    buf: Vec<u8>,
}

struct Node {
    phase: Phase,
    addr: SocketAddr,
    disk: Vec<u8>,
    /// Flip every byte of each 16 KiB block it sends.
    liar: bool,
    fail_writes: bool,
    fail_reads: bool,
    /// Behind NAT: dials to it fail.
    nat: bool,
    events: Vec<Event>,
    metadata_events: Vec<MetadataEvent>,
    saves: usize,
    /// Connections it opened, and took.
    dialled: usize,
    accepted: usize,
}

impl Node {
    fn core(&self) -> &TorrentCore {
        self.phase.ready().expect("the metadata is known")
    }

    fn core_mut(&mut self) -> &mut TorrentCore {
        self.phase.ready_mut().expect("the metadata is known")
    }
}

/// One end of a connection: node index and its key there.
type End = (usize, PeerKey);

struct World {
    meta: Arc<Metainfo>,
    nodes: Vec<Node>,
    conns: Vec<(End, End)>,
    now: Instant,
    /// Bytes on their way: (to node, its key, bytes).
    wire: VecDeque<(usize, PeerKey, Bytes)>,
    dials_refused: usize,
    /// What each end has sent, and the block requests in it in order:
    /// (from node, piece).
    streams: HashMap<End, Stream>,
    requests: Vec<(usize, u32)>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 6881))
}

impl World {
    fn new(len: usize) -> (Self, Vec<u8>) {
        Self::of(torrent(len))
    }

    /// A world sharing a torrent of several files.
    fn with_files(sizes: &[usize]) -> (Self, Vec<u8>) {
        Self::of(torrent_of(sizes))
    }

    fn of((meta, data): (Arc<Metainfo>, Vec<u8>)) -> (Self, Vec<u8>) {
        let w = World {
            meta,
            nodes: Vec::new(),
            conns: Vec::new(),
            now: Instant::now(),
            wire: VecDeque::new(),
            dials_refused: 0,
            streams: HashMap::new(),
            requests: Vec::new(),
        };
        (w, data)
    }

    /// A node; `data` is what it holds already (all zeros: nothing).
    fn add(&mut self, data: Option<&[u8]>, tweak: impl FnOnce(&mut CoreConfig)) -> usize {
        let n = self.meta.info.num_pieces();
        match data {
            Some(d) => self.add_holding(d, Bitfield::full(n), tweak),
            None => {
                let zeros = vec![0; self.meta.info.total_length() as usize];
                self.add_holding(&zeros, Bitfield::new(n), tweak)
            }
        }
    }

    /// A node with `disk` whose verified pieces are `have`.
    fn add_holding(
        &mut self,
        disk: &[u8],
        have: Bitfield,
        tweak: impl FnOnce(&mut CoreConfig),
    ) -> usize {
        let i = self.nodes.len();
        let mut cfg = CoreConfig::new(PeerId([i as u8 + 1; 20]), i as u64 + 7);
        cfg.listen = Some(addr(i));
        tweak(&mut cfg);
        let core = TorrentCore::new(self.meta.clone(), cfg, &have, false, self.now);
        self.push(Phase::Ready(Box::new(core)), disk.to_vec())
    }

    /// Note the block requests in what `from` sent: the 68-byte
    /// handshake, then length-prefixed messages (id 6 is a request).
    fn read_requests(&mut self, from: End, bytes: &[u8]) {
        let s = self.streams.entry(from).or_default();
        s.buf.extend_from_slice(bytes);
        if !s.past_handshake {
            if s.buf.len() < 68 {
                return;
            }
            s.buf.drain(..68);
            s.past_handshake = true;
        }
        let mut at = 0;
        while let Some(head) = s.buf.get(at..at + 4) {
            let len = u32::from_be_bytes(head.try_into().unwrap()) as usize;
            let Some(msg) = s.buf.get(at + 4..at + 4 + len) else {
                break;
            };
            if msg.len() == 13 && msg[0] == 6 {
                let piece = u32::from_be_bytes(msg[1..5].try_into().unwrap());
                self.requests.push((from.0, piece));
            }
            at += 4 + len;
        }
        s.buf.drain(..at);
    }

    /// Pieces node `i` asked for after the first `mark` requests of the
    /// log (its length at some point).
    fn requested_after(&self, i: usize, mark: usize) -> Vec<u32> {
        self.requests[mark..]
            .iter()
            .filter(|(from, _)| *from == i)
            .map(|(_, piece)| *piece)
            .collect()
    }

    /// A node that knows only the info hash (and, in `cfg`, some peers).
    fn add_magnet(&mut self, tweak: impl FnOnce(&mut CoreConfig)) -> usize {
        let i = self.nodes.len();
        let mut cfg = CoreConfig::new(PeerId([i as u8 + 1; 20]), i as u64 + 7);
        cfg.listen = Some(addr(i));
        tweak(&mut cfg);
        let m = MagnetCore::new(self.meta.info_hashes, cfg, 1 << 20, self.now);
        let disk = vec![0; self.meta.info.total_length() as usize];
        self.push(Phase::Metadata(Box::new(m)), disk)
    }

    fn push(&mut self, phase: Phase, disk: Vec<u8>) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Node {
            phase,
            addr: addr(i),
            disk,
            liar: false,
            fail_writes: false,
            fail_reads: false,
            nat: false,
            events: Vec::new(),
            metadata_events: Vec::new(),
            saves: 0,
            dialled: 0,
            accepted: 0,
        });
        i
    }

    fn peer_of(&self, me: End) -> Option<End> {
        self.conns.iter().find_map(|(a, b)| {
            if *a == me {
                Some(*b)
            } else if *b == me {
                Some(*a)
            } else {
                None
            }
        })
    }

    /// Carry out every action of every node until all are quiet.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while let Some(a) = self.nodes[i].phase.poll_action() {
                    busy = true;
                    self.act(i, a);
                }
                let n = &mut self.nodes[i];
                match &mut n.phase {
                    Phase::Ready(t) => n.events.extend(std::iter::from_fn(|| t.poll_event())),
                    Phase::Metadata(m) => n
                        .metadata_events
                        .extend(std::iter::from_fn(|| m.poll_event())),
                }
                busy |= self.metadata_in(i);
            }
            while let Some((to, key, bytes)) = self.wire.pop_front() {
                busy = true;
                let now = self.now;
                self.nodes[to]
                    .phase
                    .handle_data(now, key, BytesMut::from(&bytes[..]));
            }
            if !busy {
                return;
            }
        }
        panic!("the world never settled");
    }

    /// A magnet node whose metadata is in becomes a torrent (nothing on
    /// its disk yet). True when it did.
    fn metadata_in(&mut self, i: usize) -> bool {
        let Phase::Metadata(m) = &self.nodes[i].phase else {
            return false;
        };
        let Some(info) = m.metadata() else {
            return false;
        };
        assert_eq!(info, &self.meta.info_bytes[..]);
        let have = Bitfield::new(self.meta.info.num_pieces());
        let placeholder = Phase::Metadata(Box::new(MagnetCore::new(
            self.meta.info_hashes,
            CoreConfig::new(PeerId([0; 20]), 0),
            0,
            self.now,
        )));
        let Phase::Metadata(m) = std::mem::replace(&mut self.nodes[i].phase, placeholder) else {
            return false;
        };
        let t = TorrentCore::from_magnet(*m, self.meta.clone(), &have, false, self.now);
        self.nodes[i].phase = Phase::Ready(Box::new(t));
        true
    }

    fn act(&mut self, i: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Dial { addr, source, .. } => {
                let Some(j) = self.nodes.iter().position(|n| n.addr == addr && !n.nat) else {
                    self.dials_refused += 1;
                    self.nodes[i].phase.handle_connect_failed(now, addr);
                    return;
                };
                // The acceptor sees the dialler's address (its own port: a
                // simulated stack, one address per node).
                let from = self.nodes[i].addr;
                let kj = self.nodes[j].phase.handle_connected(
                    now,
                    from,
                    PeerSource::Incoming,
                    false,
                    false,
                );
                let ki = self.nodes[i]
                    .phase
                    .handle_connected(now, addr, source, false, false);
                self.nodes[i].dialled += 1;
                self.nodes[j].accepted += 1;
                match (ki, kj) {
                    (Some(ki), Some(kj)) => self.conns.push(((i, ki), (j, kj))),
                    (Some(ki), None) => {
                        self.nodes[i].phase.handle_closed(now, ki, "refused".into())
                    }
                    (None, Some(kj)) => self.nodes[j].phase.handle_closed(now, kj, "closed".into()),
                    (None, None) => {}
                }
            }
            Action::Transmit(k) => {
                let Some((j, kj)) = self.peer_of((i, k)) else {
                    return;
                };
                while let Some(mut b) = self.nodes[i].phase.poll_transmit(now, k) {
                    self.read_requests((i, k), &b);
                    if self.nodes[i].liar && b.len() == 16384 {
                        b = b.iter().map(|x| !x).collect::<Vec<u8>>().into();
                    }
                    self.wire.push_back((j, kj, b));
                }
            }
            Action::Close(k) => {
                if let Some((j, kj)) = self.peer_of((i, k)) {
                    self.conns.retain(|(a, b)| *a != (i, k) && *b != (i, k));
                    self.nodes[j]
                        .phase
                        .handle_closed(now, kj, "closed by peer".into());
                }
            }
            Action::Check { piece, blocks } => {
                let n = &mut self.nodes[i];
                let mut h = Sha1::new();
                for b in &blocks {
                    h.update(b);
                }
                let good = self.meta.info.piece_hash(piece) == Some(h.finalize().into());
                let result = if !good {
                    Checked::Bad(blocks)
                } else if n.fail_writes {
                    Checked::WriteFailed("No space left on device".into())
                } else {
                    let mut at = (piece.0 * PIECE) as usize;
                    for b in &blocks {
                        n.disk[at..at + b.len()].copy_from_slice(b);
                        at += b.len();
                    }
                    Checked::Good(blocks)
                };
                n.core_mut().handle_checked(now, piece, result);
            }
            Action::Read { piece, len, .. } => {
                let n = &mut self.nodes[i];
                let at = (piece.0 * PIECE) as usize;
                let result = if n.fail_reads {
                    Err("file vanished".to_owned())
                } else {
                    Ok(Bytes::copy_from_slice(&n.disk[at..at + len as usize]))
                };
                n.core_mut().handle_read(piece, result);
            }
            Action::SaveResume { .. } => {
                self.nodes[i].saves += 1;
                self.nodes[i]
                    .core_mut()
                    .handle_resume_saved(now, true, false);
            }
            Action::Progress(_) => {}
        }
    }

    /// Advance to the earliest timeout (at most `max`) and fire it.
    fn step(&mut self, max: Duration) {
        let next = self
            .nodes
            .iter()
            .map(|n| n.phase.poll_timeout())
            .min()
            .unwrap_or(self.now + max);
        self.now = next.clamp(self.now, self.now + max);
        for i in 0..self.nodes.len() {
            let now = self.now;
            self.nodes[i].phase.handle_timeout(now);
        }
        self.settle();
    }

    /// Run until `done` or `limit` of fake time passes; the time it took.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&World) -> bool) -> Option<Duration> {
        let start = self.now;
        self.settle();
        // A core that asks to be woken in the past for ever would spin here.
        for _ in 0..1_000_000 {
            if done(self) {
                return Some(self.now - start);
            }
            if self.now - start >= limit {
                return None;
            }
            self.step(Duration::from_millis(250));
        }
        panic!("time stopped at {:?}", self.now - start);
    }

    fn complete(&self, i: usize) -> bool {
        self.nodes[i].phase.ready().is_some_and(|t| t.is_complete())
    }
}

#[test]
fn a_leecher_gets_every_byte_from_a_seeder() {
    let (mut w, data) = World::new(1 << 20);
    let seed = w.add(Some(&data), |_| {});
    let leech = w.add(None, |c| c.peers = vec![addr(0)]);
    let took = w.run_until(Duration::from_secs(60), |w| w.complete(leech));
    assert!(took.is_some(), "not complete after 60 s of fake time");
    assert_eq!(w.nodes[leech].disk, data);
    let st = w.nodes[seed].core().stats();
    assert_eq!(st.uploaded, data.len() as u64);
    assert_eq!(w.nodes[leech].core().stats().downloaded, data.len() as u64);
    assert!(w.nodes[leech]
        .events
        .iter()
        .any(|e| matches!(e, Event::Completed { .. })));
    // The leecher saved its resume data on completion.
    assert!(w.nodes[leech].saves >= 1);
    let files = w.nodes[leech].core().files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].done, data.len() as u64);
}

#[test]
fn the_peers_view_names_the_source_and_the_seed() {
    let (mut w, data) = World::new(256 << 10);
    w.add(Some(&data), |c| c.seed_time = None);
    // Held to a block a second: still downloading when we look.
    let leech = w.add(None, |c| {
        c.peers = vec![addr(0)];
        c.download_rate_limit = Some(16 * 1024);
    });
    w.run_until(Duration::from_secs(2), |_| false);
    let peers = w.nodes[leech].core().peers();
    assert_eq!(peers.len(), 1, "{peers:?}");
    let p = &peers[0];
    assert_eq!(p.addr, addr(0));
    assert_eq!(p.source, PeerSource::Manual);
    assert!(p.found_by.contains(PeerSource::Manual));
    assert!(p.established && p.seed);
    assert!(p.client.starts_with("Lodestone"), "{}", p.client);
    assert_eq!(p.pieces, w.meta.info.num_pieces());
}

#[test]
fn a_liar_is_banned_and_the_download_still_completes() {
    let (mut w, data) = World::new(1 << 20);
    let honest = w.add(Some(&data), |c| c.seed_time = None);
    let liar = w.add(Some(&data), |c| c.seed_time = None);
    w.nodes[liar].liar = true;
    let leech = w.add(None, |c| c.peers = vec![addr(honest), addr(liar)]);
    let took = w.run_until(Duration::from_secs(120), |w| w.complete(leech));
    assert!(took.is_some(), "not complete");
    assert_eq!(w.nodes[leech].disk, data);
    let banned: Vec<SocketAddr> = w.nodes[leech]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PeerBanned { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect();
    assert_eq!(banned, vec![addr(liar)]);
}

#[test]
fn a_failed_write_pauses_with_the_reason() {
    let (mut w, data) = World::new(256 << 10);
    w.add(Some(&data), |c| c.seed_time = None);
    let leech = w.add(None, |c| c.peers = vec![addr(0)]);
    w.nodes[leech].fail_writes = true;
    w.run_until(Duration::from_secs(30), |w| {
        w.nodes[leech].core().paused().is_some()
    });
    let core = w.nodes[leech].core();
    assert_eq!(core.paused(), Some("No space left on device"));
    assert_eq!(core.stop_reason(w.now), Some(StopReason::Paused));
    assert_eq!(core.stats().have_pieces, 0);
}

#[test]
fn an_unreadable_piece_is_rejected_not_served() {
    let (mut w, data) = World::new(256 << 10);
    let seed = w.add(Some(&data), |c| c.seed_time = None);
    w.nodes[seed].fail_reads = true;
    let leech = w.add(None, |c| {
        c.peers = vec![addr(0)];
        c.seed_time = None;
    });
    w.run_until(Duration::from_secs(10), |_| false);
    assert!(w.nodes[seed]
        .events
        .iter()
        .any(|e| matches!(e, Event::ReadFailed { .. })));
    assert_eq!(w.nodes[seed].core().stats().uploaded, 0);
    assert!(!w.complete(leech));
}

#[test]
fn an_upload_limit_holds_in_fake_time() {
    let (mut w, data) = World::new(4 << 20);
    let limit = 256 * 1024;
    let seed = w.add(Some(&data), |c| {
        c.seed_time = None;
        c.upload_rate_limit = Some(limit);
    });
    w.add(None, |c| c.peers = vec![addr(0)]);
    w.run_until(Duration::from_secs(10), |_| false);
    let up = w.nodes[seed].core().stats().uploaded;
    // Ten seconds at the limit, plus one second of burst at most.
    assert!(up <= 11 * limit, "uploaded {up}");
    assert!(up >= 8 * limit, "uploaded {up}");
}

#[test]
fn failed_dials_back_off_and_the_core_sleeps_until_the_next() {
    let (mut w, _) = World::new(64 << 10);
    let nobody = SocketAddr::from(([10, 9, 9, 9], 1));
    let leech = w.add(None, |c| c.peers = vec![nobody]);
    w.settle();
    assert_eq!(w.dials_refused, 1);
    // No peer: the core sleeps until the redial (1 s), not on 250 ms ticks.
    let t0 = w.now;
    assert_eq!(
        w.nodes[leech].phase.poll_timeout(),
        t0 + Duration::from_secs(1)
    );
    w.run_until(Duration::from_secs(16), |_| false);
    // 1 + 2 + 4 + 8 s: dials at 0, 1, 3, 7, 15.
    assert_eq!(w.dials_refused, 5);
}

#[test]
fn two_seeds_drop_each_other() {
    let (mut w, data) = World::new(128 << 10);
    w.add(Some(&data), |c| c.seed_time = None);
    let b = w.add(Some(&data), |c| {
        c.seed_time = None;
        c.peers = vec![addr(0)];
    });
    w.run_until(Duration::from_secs(2), |_| false);
    assert!(w.conns.is_empty());
    assert!(w.nodes[b].core().peers().is_empty());
}

#[test]
fn pex_introduces_a_leecher_to_a_peer_it_did_not_know() {
    let (mut w, data) = World::new(2 << 20);
    let seed = w.add(Some(&data), |c| c.seed_time = None);
    // Slow enough that `a` still talks to the seed when PEX first runs.
    let a = w.add(None, |c| {
        c.peers = vec![addr(0)];
        c.seed_time = None;
        c.download_rate_limit = Some(32 * 1024);
    });
    // `b` knows only `a`; `a` tells it about the seed. Behind NAT, so the
    // seed (which hears of `b` from `a` too) cannot dial it first.
    let b = w.add(None, |c| {
        c.peers = vec![addr(1)];
        c.seed_time = None;
        c.download_rate_limit = Some(32 * 1024);
    });
    w.nodes[b].nat = true;
    let took = w.run_until(Duration::from_secs(200), |w| w.complete(b) && w.complete(a));
    assert!(took.is_some());
    assert!(w.nodes[b].events.iter().any(|e| matches!(
        e,
        Event::PeerConnected { addr: x, source: PeerSource::Pex, .. } if *x == addr(seed)
    )));
    let pex = w.nodes[b]
        .core()
        .sources(w.now)
        .into_iter()
        .find(|s| s.kind == SourceKind::Pex)
        .unwrap();
    assert!(pex.peers >= 1, "{pex:?}");
    assert_eq!(w.nodes[b].disk, data);
}

#[test]
fn an_idle_torrent_says_little_and_sleeps_long() {
    let (mut w, _) = World::new(64 << 10);
    let n = w.add(None, |_| {});
    w.settle();
    let t0 = w.now;
    w.run_until(Duration::from_secs(65), |_| false);
    let count = |f: fn(&Event) -> bool| w.nodes[n].events.iter().filter(|e| f(e)).count();
    // The table at the start, then every 30 s while nothing changes.
    assert_eq!(count(|e| matches!(e, Event::Sources(_))), 3);
    // Progress only when it changed: once, with the first figures.
    assert_eq!(count(|e| matches!(e, Event::Progress(_))), 1);
    // No peer, nothing to dial: it wakes every 30 s, not every 250 ms.
    let next = w.nodes[n].phase.poll_timeout() - t0;
    assert_eq!(next, Duration::from_secs(90), "{next:?}");
}

#[test]
fn a_magnet_gets_metadata_and_content_over_one_connection() {
    let (mut w, data) = World::new(1 << 20);
    let seed = w.add(Some(&data), |c| c.seed_time = None);
    let leech = w.add_magnet(|c| c.peers = vec![addr(0)]);
    let took = w.run_until(Duration::from_secs(60), |w| w.complete(leech));
    assert!(took.is_some(), "{:?}", w.nodes[leech].metadata_events);
    assert_eq!(w.nodes[leech].disk, data);
    // One connection carried both: one dial, one accept, none redialled.
    assert_eq!((w.nodes[leech].dialled, w.nodes[seed].accepted), (1, 1));
    assert!(w.nodes[leech]
        .metadata_events
        .iter()
        .any(|e| matches!(e, MetadataEvent::Piece { done, total, .. } if done == total)));
    // The seed's connection shows in the torrent phase, under its source.
    assert!(w.nodes[leech].events.iter().any(|e| matches!(
        e,
        Event::PeerConnected { addr: a, source: PeerSource::Manual, .. } if *a == addr(seed)
    )));
    assert_eq!(w.nodes[seed].core().stats().uploaded, data.len() as u64);
}

#[test]
fn a_magnet_takes_a_peer_that_dials_it_before_the_metadata() {
    let (mut w, data) = World::new(512 << 10);
    // The magnet knows nobody; the seeder knows the magnet's address.
    let leech = w.add_magnet(|_| {});
    let seed = w.add(Some(&data), |c| {
        c.seed_time = None;
        c.peers = vec![addr(0)];
    });
    let took = w.run_until(Duration::from_secs(60), |w| w.complete(leech));
    assert!(took.is_some(), "{:?}", w.nodes[leech].metadata_events);
    assert_eq!(w.nodes[leech].disk, data);
    assert_eq!((w.nodes[seed].dialled, w.nodes[leech].accepted), (1, 1));
    assert_eq!(w.nodes[leech].dialled, 0);
}

/// Three files of eight pieces each: pieces 0-7, 8-15 and 16-23.
const FILE: usize = 8 * PIECE as usize;

fn completions(w: &World, i: usize) -> usize {
    w.nodes[i]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Completed { .. }))
        .count()
}

#[test]
fn lifting_a_download_limit_lets_the_rest_come_at_once() {
    let (mut w, data) = World::new(4 << 20);
    w.add(Some(&data), |c| c.seed_time = None);
    let limit = 32 * 1024;
    let leech = w.add(None, |c| {
        c.peers = vec![addr(0)];
        c.download_rate_limit = Some(limit);
    });
    w.run_until(Duration::from_secs(4), |_| false);
    let before = w.nodes[leech].core().stats().downloaded;
    // Four seconds at the limit, plus one second of burst at most.
    assert!(before <= 5 * limit, "downloaded {before}");
    let now = w.now;
    let core = w.nodes[leech].core_mut();
    core.set_rate_limits(now, None, None);
    assert_eq!(core.rate_limits(), (None, None));
    // No time passes: what the budget held back goes out now, not at a tick.
    w.settle();
    let after = w.nodes[leech].core().stats().downloaded;
    assert!(after >= before + 4 * limit, "{before} then {after}");
    // The rest would take two minutes at the old limit.
    let took = w.run_until(Duration::from_secs(5), |w| w.complete(leech));
    assert!(took.is_some(), "not complete 5 s after lifting the limit");
    assert_eq!(w.nodes[leech].disk, data);
}

#[test]
fn tightening_an_upload_limit_holds_the_new_rate() {
    let (mut w, data) = World::new(8 << 20);
    let seed = w.add(Some(&data), |c| {
        c.seed_time = None;
        c.upload_rate_limit = Some(1 << 20);
    });
    // It asks for half what the seed may send: the seed's budget stays
    // full, a whole second of the old limit.
    w.add(None, |c| {
        c.peers = vec![addr(0)];
        c.download_rate_limit = Some(512 << 10);
    });
    w.run_until(Duration::from_secs(3), |_| false);
    let before = w.nodes[seed].core().stats().uploaded;
    assert!(before >= 1 << 20, "uploaded {before}");
    let tight = 64 * 1024;
    let now = w.now;
    let core = w.nodes[seed].core_mut();
    core.set_rate_limits(now, None, Some(tight));
    assert_eq!(core.rate_limits(), (None, Some(tight)));
    w.run_until(Duration::from_secs(10), |_| false);
    let sent = w.nodes[seed].core().stats().uploaded - before;
    // Ten seconds at the new limit plus one second of burst at most.
    assert!(sent <= 11 * tight, "sent {sent}");
    assert!(sent >= 8 * tight, "sent {sent}");
}

#[test]
fn a_file_skipped_mid_download_is_never_asked_for_and_unskipping_fetches_it() {
    use FilePriority::{High, Normal, Skip};
    let (mut w, data) = World::with_files(&[FILE; 3]);
    // Four blocks a second: the leech's requests wait at the seed.
    w.add(Some(&data), |c| {
        c.seed_time = None;
        c.upload_rate_limit = Some(64 * 1024);
    });
    let leech = w.add(None, |c| c.peers = vec![addr(0)]);
    let now = w.now;
    let core = w.nodes[leech].core_mut();
    core.set_file_priorities(now, &[Normal, High, Normal])
        .unwrap();
    w.run_until(Duration::from_secs(2), |_| false);
    let middle = |w: &World| {
        let have = w.nodes[leech].core().have();
        (8..16)
            .filter(|p| have.get(lodestone_core::PieceIndex(*p)))
            .count()
    };
    // Mid-file: the middle file came first, and more of it is asked for.
    let had = middle(&w);
    assert!((1..8).contains(&had), "{had} of the middle file's pieces");
    let mark = w.requests.len();
    assert!(w
        .requested_after(leech, 0)
        .iter()
        .any(|p| (8..16).contains(p)));
    let now = w.now;
    let core = w.nodes[leech].core_mut();
    core.set_file_priorities(now, &[Normal, Skip, Normal])
        .unwrap();
    let st = core.stats();
    assert_eq!(st.wanted_bytes, 2 * FILE as u64);
    assert!(
        st.bytes_left > 0 && st.bytes_left <= 2 * FILE as u64,
        "{st:?}"
    );
    let took = w.run_until(Duration::from_secs(60), |w| w.complete(leech));
    assert!(took.is_some(), "the wanted files never completed");
    let asked = w.requested_after(leech, mark);
    assert!(!asked.is_empty());
    assert!(
        asked.iter().all(|p| !(8..16).contains(p)),
        "skipped pieces asked for: {asked:?}"
    );
    // Nothing more of it came in: the requests out for it were cancelled.
    assert_eq!(middle(&w), had);
    // Finished downloading: done, with its wanted files on disk.
    let now = w.now;
    let core = w.nodes[leech].core();
    assert_eq!(core.stop_reason(now), Some(StopReason::Done));
    assert_eq!(core.stats().bytes_left, 0);
    assert!(!core.have().is_full());
    assert_eq!(completions(&w, leech), 1);
    let disk = &w.nodes[leech].disk;
    assert_eq!(disk[..FILE], data[..FILE]);
    assert_eq!(disk[2 * FILE..], data[2 * FILE..]);
    assert_ne!(disk[FILE..2 * FILE], data[FILE..2 * FILE]);

    // Wanted again: downloading again, at once.
    let unskipped_at = w.now;
    let mark = w.requests.len();
    let core = w.nodes[leech].core_mut();
    core.set_file_priorities(unskipped_at, &[Normal; 3])
        .unwrap();
    assert!(!core.is_complete());
    assert_eq!(core.stop_reason(unskipped_at), None);
    assert_eq!(core.stats().wanted_bytes, 3 * FILE as u64);
    assert!(core.stats().bytes_left > 0);
    w.settle();
    assert!(w.nodes[leech].core().peers()[0].am_interested);
    let took = w.run_until(Duration::from_secs(60), |w| w.complete(leech));
    assert!(took.is_some(), "the unskipped file never completed");
    assert_eq!(w.nodes[leech].disk, data);
    assert!(w
        .requested_after(leech, mark)
        .iter()
        .any(|p| (8..16).contains(p)));
    assert_eq!(completions(&w, leech), 2);
    let now = w.now;
    assert_eq!(
        w.nodes[leech].core().stop_reason(now),
        Some(StopReason::Done)
    );
}

#[test]
fn skipping_the_only_file_a_peer_has_ends_interest_in_it() {
    use FilePriority::{Normal, Skip};
    let (mut w, data) = World::with_files(&[FILE; 3]);
    let mut middle = Bitfield::new(w.meta.info.num_pieces());
    for p in 8..16 {
        middle.set(lodestone_core::PieceIndex(p));
    }
    let partial = w.add_holding(&data, middle, |c| c.seed_time = None);
    let leech = w.add(None, |c| {
        c.peers = vec![addr(0)];
        c.download_rate_limit = Some(16 * 1024);
    });
    w.run_until(Duration::from_secs(1), |_| false);
    let interest = |w: &World| {
        (
            w.nodes[leech].core().peers()[0].am_interested,
            w.nodes[partial].core().peers()[0].peer_interested,
        )
    };
    assert_eq!(interest(&w), (true, true));
    let now = w.now;
    let core = w.nodes[leech].core_mut();
    core.set_file_priorities(now, &[Normal, Skip, Normal])
        .unwrap();
    // Said at once (no time passes), and heard by the peer.
    w.settle();
    assert_eq!(interest(&w), (false, false));
    let core = w.nodes[leech].core_mut();
    core.set_file_priorities(now, &[Normal; 3]).unwrap();
    w.settle();
    assert_eq!(interest(&w), (true, true));
}

#[test]
fn priorities_of_the_wrong_length_are_refused() {
    use FilePriority::{High, Skip};
    let (mut w, _) = World::with_files(&[FILE; 3]);
    let n = w.add(None, |_| {});
    let now = w.now;
    let core = w.nodes[n].core_mut();
    for given in [vec![Skip; 2], vec![High; 4], vec![]] {
        assert_eq!(
            core.set_file_priorities(now, &given),
            Err(PriorityError::WrongLength {
                files: 3,
                given: given.len()
            })
        );
    }
    // Nothing changed.
    assert!(core
        .files()
        .iter()
        .all(|f| f.priority == FilePriority::Normal && f.wanted));
    assert_eq!(core.stats().wanted_bytes, 3 * FILE as u64);
}

#[test]
fn files_and_pieces_show_the_priorities() {
    use FilePriority::{High, Low, Normal, Skip};
    let (mut w, _) = World::with_files(&[FILE; 3]);
    // Set at construction: only the middle file.
    let n = w.add(None, |c| c.only_files = Some(vec![1]));
    let show = |w: &World| {
        let core = w.nodes[n].core();
        let files: Vec<(FilePriority, bool)> = core
            .files()
            .iter()
            .map(|f| (f.priority, f.wanted))
            .collect();
        let pieces: Vec<FilePriority> = core.pieces().iter().map(|p| p.priority).collect();
        (files, pieces, core.stats().wanted_bytes)
    };
    let (files, pieces, wanted) = show(&w);
    assert_eq!(files, [(Skip, false), (Normal, true), (Skip, false)]);
    assert_eq!(pieces, [[Skip; 8], [Normal; 8], [Skip; 8]].concat());
    assert_eq!(wanted, FILE as u64);
    let now = w.now;
    w.nodes[n]
        .core_mut()
        .set_file_priorities(now, &[High, Skip, Low])
        .unwrap();
    let (files, pieces, wanted) = show(&w);
    assert_eq!(files, [(High, true), (Skip, false), (Low, true)]);
    assert_eq!(pieces, [[High; 8], [Skip; 8], [Low; 8]].concat());
    assert_eq!(wanted, 2 * FILE as u64);
}

#[test]
fn pieces_agree_with_have_mid_download() {
    let (mut w, data) = World::with_files(&[FILE; 3]);
    // The seed sends two blocks a second: requests stay out.
    w.add(Some(&data), |c| {
        c.seed_time = None;
        c.upload_rate_limit = Some(32 * 1024);
    });
    let leech = w.add(None, |c| c.peers = vec![addr(0)]);
    w.run_until(Duration::from_secs(3), |_| false);
    let core = w.nodes[leech].core();
    let pieces = core.pieces();
    let have = core.have();
    assert_eq!(pieces.len() as u32, have.len());
    for (i, p) in pieces.iter().enumerate() {
        let i = lodestone_core::PieceIndex(i as u32);
        assert_eq!(p.state == PieceState::Have, have.get(i), "piece {i}");
    }
    let count = |s: PieceState| pieces.iter().filter(|p| p.state == s).count();
    assert_eq!(count(PieceState::Have) as u32, have.count());
    assert!(count(PieceState::Have) > 0);
    assert!(count(PieceState::Missing) > 0);
    // Each block out belongs to a piece shown as being fetched (two
    // blocks a piece).
    let out = core.peers()[0].requests_out;
    assert!(out > 0);
    assert!(2 * count(PieceState::Downloading) >= out, "{out} out");
}

/// A peer that stops wanting data frees its upload slot at once: with one
/// slot, three leechers (each wanting a different file) are served one
/// after the other without waiting for the 10 s rechoke.
#[test]
fn a_slot_freed_by_a_peer_that_is_done_goes_to_the_next_at_once() {
    let (mut w, data) = World::with_files(&[FILE; 3]);
    w.add(Some(&data), |c| {
        c.seed_time = None;
        c.upload_slots = 1;
        c.pex = false;
    });
    let leeches: Vec<usize> = (0..3)
        .map(|i| {
            w.add(None, |c| {
                c.peers = vec![addr(0)];
                c.only_files = Some(vec![i]);
                c.pex = false;
            })
        })
        .collect();
    let took = w.run_until(Duration::from_secs(60), |w| {
        leeches.iter().all(|&l| w.complete(l))
    });
    let took = took.expect("every leecher finished");
    // One rechoke period (10 s) would pass between two of them otherwise.
    assert!(took < Duration::from_secs(8), "{took:?}");
}

// ---- the metadata phase's sources table ----

fn kinds(rows: &[Source]) -> Vec<SourceKind> {
    rows.iter().map(|r| r.kind.clone()).collect()
}

fn row<'a>(rows: &'a [Source], kind: &SourceKind) -> &'a Source {
    rows.iter()
        .find(|r| r.kind == *kind)
        .unwrap_or_else(|| panic!("no {kind:?} row in {rows:?}"))
}

const TRACKER_A: &str = "http://tracker.example/announce";
const TRACKER_B: &str = "udp://tracker.example:6969/announce";

/// A magnet with every source on, two `x.pe` peers and two trackers.
fn magnet_with_sources(w: &World) -> MagnetCore {
    let mut cfg = CoreConfig::new(PeerId([1; 20]), 1);
    cfg.listen = Some(addr(0));
    cfg.dht = true;
    cfg.lpd = true;
    cfg.peers = vec![addr(1), addr(2)];
    let mut m = MagnetCore::new(w.meta.info_hashes, cfg, 1 << 20, w.now);
    m.set_trackers(w.now, [TRACKER_A.to_owned(), TRACKER_B.to_owned()]);
    m
}

#[test]
fn a_magnet_lists_every_source_before_the_metadata() {
    let (w, _) = World::new(64 << 10);
    let mut m = magnet_with_sources(&w);
    let rows = m.sources(w.now);
    assert_eq!(
        kinds(&rows),
        vec![
            SourceKind::Dht,
            SourceKind::Pex,
            SourceKind::Lpd,
            SourceKind::Given,
            SourceKind::Incoming,
            SourceKind::Tracker(TRACKER_A.into()),
            SourceKind::Tracker(TRACKER_B.into()),
        ]
    );
    assert_eq!(row(&rows, &SourceKind::Dht).state, SourceState::Starting);
    assert_eq!(row(&rows, &SourceKind::Pex).state, SourceState::NoPexPeer);
    assert_eq!(row(&rows, &SourceKind::Lpd).state, SourceState::Starting);
    let given = row(&rows, &SourceKind::Given);
    assert_eq!((&given.state, given.peers), (&SourceState::Given(2), 2));
    assert_eq!(
        row(&rows, &SourceKind::Incoming).state,
        SourceState::Listening(addr(0))
    );
    for t in [TRACKER_A, TRACKER_B] {
        let r = row(&rows, &SourceKind::Tracker(t.into()));
        assert_eq!(
            (&r.state, r.peers, r.seeds),
            (&SourceState::NotContacted, 0, 0)
        );
    }
    // Said at once, as the torrent phase does.
    assert_eq!(m.poll_sources(), Some(rows));
}

#[test]
fn a_magnet_shows_each_sources_last_word_and_what_it_found() {
    let (w, _) = World::new(64 << 10);
    let mut m = magnet_with_sources(&w);
    let t = w.now + Duration::from_secs(1);
    let round = DhtRound {
        queries: 40,
        responses: 31,
        peers: 3,
        announced: Some((8, 7)),
        next_in: Duration::from_secs(300),
    };
    m.handle_dht_round(t, round);
    m.handle_discovered(t, &[addr(3), addr(4), addr(5)], PeerSource::Dht);
    // One address from both: counted under each.
    m.handle_discovered(t, &[addr(5), addr(6)], PeerSource::Tracker);
    let status = TrackerStatus {
        url: TRACKER_A.into(),
        status: "ok".into(),
        next_in: Some(Duration::from_secs(1800)),
        seeders: Some(4),
        leechers: Some(9),
        peers: 2,
    };
    m.handle_tracker_status(t, status.clone());
    m.handle_lpd_status(t, "announced".into(), Some(Duration::from_secs(300)));
    let rows = m.sources(t + Duration::from_secs(10));
    let dht = row(&rows, &SourceKind::Dht);
    assert_eq!(dht.state, SourceState::DhtRound(round));
    assert_eq!(dht.next_update, Some(Duration::from_secs(290)));
    assert_eq!(dht.peers, 3);
    let a = row(&rows, &SourceKind::Tracker(TRACKER_A.into()));
    assert_eq!(a.state, SourceState::Tracker(status));
    assert_eq!(a.next_update, Some(Duration::from_secs(1790)));
    assert_eq!((a.seeds, a.peers), (4, 9));
    let b = row(&rows, &SourceKind::Tracker(TRACKER_B.into()));
    assert_eq!(b.state, SourceState::NotContacted);
    let lpd = row(&rows, &SourceKind::Lpd);
    assert_eq!(lpd.state, SourceState::Reported("announced".into()));
    assert_eq!(lpd.next_update, Some(Duration::from_secs(290)));
    assert_eq!(row(&rows, &SourceKind::Given).peers, 2);
    assert_eq!(row(&rows, &SourceKind::Pex).peers, 0);
    // A tracker the driver reports without it being listed still shows.
    let other = "http://other.example/announce";
    m.handle_tracker_status(
        t,
        TrackerStatus {
            url: other.into(),
            status: "connection refused".into(),
            next_in: None,
            seeders: None,
            leechers: None,
            peers: 0,
        },
    );
    let rows = m.sources(t);
    assert_eq!(
        rows.last().map(|r| &r.kind),
        Some(&SourceKind::Tracker(other.into()))
    );
}

/// What a peer says first: its handshake (fast and extensions on), then
/// `then`.
fn peer_hello(w: &World, id: u8, then: lodestone_wire::Message) -> BytesMut {
    let hs = lodestone_wire::Handshake {
        reserved: lodestone_wire::Reserved::ours(),
        info_hash: w.meta.info_hashes.wire(),
        peer_id: PeerId([id; 20]),
    };
    let mut b = BytesMut::from(&hs.encode()[..]);
    then.encode(&mut b);
    b
}

#[test]
fn a_magnet_counts_the_seeds_its_peers_say_they_are() {
    let (w, _) = World::new(64 << 10);
    let mut m = magnet_with_sources(&w);
    let now = w.now;
    let mut connect = |a: SocketAddr, source, id, then| {
        let k = m.handle_connected(now, a, source, false, false).unwrap();
        m.handle_data(now, k, peer_hello(&w, id, then));
    };
    // Have-all from one that dialled us, a full bitfield from an x.pe
    // peer, a bitfield with a gap from another.
    connect(
        addr(9),
        PeerSource::Incoming,
        9,
        lodestone_wire::Message::HaveAll,
    );
    connect(
        addr(1),
        PeerSource::Manual,
        11,
        lodestone_wire::Message::Bitfield(Bytes::from_static(&[0xff, 0xff])),
    );
    connect(
        addr(2),
        PeerSource::Manual,
        12,
        lodestone_wire::Message::Bitfield(Bytes::from_static(&[0xff, 0x7f])),
    );
    assert_eq!(m.connected_peers(), 3);
    let rows = m.sources(now);
    let incoming = row(&rows, &SourceKind::Incoming);
    assert_eq!((incoming.seeds, incoming.peers), (1, 1));
    let given = row(&rows, &SourceKind::Given);
    assert_eq!((given.seeds, given.peers), (1, 2));
}

#[test]
fn a_busy_magnet_says_its_table_once_a_second_an_idle_one_when_it_changes() {
    let (w, _) = World::new(64 << 10);
    let t0 = w.now;
    // Dialling its x.pe peers (no answer yet): busy.
    let mut m = magnet_with_sources(&w);
    m.poll_sources().expect("the first table");
    let mut said = 0;
    for i in 1..=50 {
        m.handle_timeout(t0 + Duration::from_millis(200 * i));
        said += usize::from(m.poll_sources().is_some());
    }
    assert_eq!(said, 10);
    // Nobody to dial: idle, says it when a source speaks or every 30 s.
    let mut cfg = CoreConfig::new(PeerId([2; 20]), 2);
    cfg.dht = true;
    let mut m = MagnetCore::new(w.meta.info_hashes, cfg, 1 << 20, t0);
    m.poll_sources().expect("the first table");
    let mut tables = Vec::new();
    for i in 1..=400 {
        let now = t0 + Duration::from_millis(200 * i);
        if i == 100 {
            m.handle_dht_round(now, DhtRound::default());
        }
        m.handle_timeout(now);
        tables.extend(m.poll_sources().map(|t| (now - t0, t)));
    }
    let at: Vec<Duration> = tables.iter().map(|(t, _)| *t).collect();
    // The round at 20 s, then 30 s after each table.
    assert_eq!(at, [20, 50, 80].map(Duration::from_secs));
    assert!(matches!(tables[0].1[0].state, SourceState::DhtRound(_)));
}

#[test]
fn the_torrent_phase_takes_the_magnets_table_over() {
    let (mut w, data) = World::new(256 << 10);
    let seed = w.add(Some(&data), |c| c.seed_time = None);
    let leech = w.add_magnet(|c| {
        c.peers = vec![addr(0)];
        c.dht = true;
    });
    let round = DhtRound {
        queries: 10,
        responses: 8,
        peers: 2,
        announced: None,
        next_in: Duration::from_secs(600),
    };
    let now = w.now;
    let Phase::Metadata(m) = &mut w.nodes[leech].phase else {
        unreachable!()
    };
    m.handle_dht_round(now, round);
    m.handle_discovered(now, &[addr(7), addr(8)], PeerSource::Dht);
    let before = m.sources(now);
    assert_eq!(row(&before, &SourceKind::Dht).peers, 2);
    let took = w.run_until(Duration::from_secs(30), |w| w.complete(leech));
    assert!(took.is_some());
    // The torrent core's first table: the magnet's counts and last words,
    // and the seeder it was handed counted as a seed.
    let first = w.nodes[leech]
        .events
        .iter()
        .find_map(|e| match e {
            Event::Sources(rows) => Some(rows.clone()),
            _ => None,
        })
        .expect("a sources table");
    let dht = row(&first, &SourceKind::Dht);
    assert_eq!((&dht.state, dht.peers), (&SourceState::DhtRound(round), 2));
    let given = row(&first, &SourceKind::Given);
    assert_eq!((given.peers, given.seeds), (1, 1), "{first:?}");
    assert_eq!(kinds(&first), kinds(&before));
    assert!(w.nodes[seed].core().stats().uploaded > 0);
}
