//! TCP-like byte streams between simulated hosts, for swarms of sans-IO
//! torrent cores: connect, accept, ordered bytes, close, churn.
//!
//! The model, all on the virtual clock the driver passes in:
//! - Latency: the fixed one-way delay of [`NetModel::one_way`] for the pair
//!   of host indices.
//! - Handshake: a dial reaches the acceptor after one one-way delay
//!   ([`NetEvent::Accepted`]) and the dialer learns of it one more later
//!   ([`NetEvent::Connected`]). A host behind NAT rejects the dial and the
//!   dialer sees [`NetEvent::Refused`] one RTT after dialing; an offline
//!   host does not answer, and the dialer sees `Refused` after
//!   [`CONNECT_TIMEOUT`].
//! - Bandwidth: every host has an uplink and a downlink (bytes/s, 0 =
//!   unlimited). A send is cut into segments of at most [`SEGMENT`] bytes
//!   (never joined: small sends stay small). A segment occupies the
//!   sender's uplink for `len / up_rate`, travels one way, then occupies
//!   the receiver's downlink for `len / down_rate`. Each link serves one
//!   segment at a time, round-robin over the connections with data waiting
//!   for it, so no connection starves another on either end.
//! - Loss: TCP hides it, so nothing is lost; a segment "lost" with
//!   probability [`NetModel::loss`] arrives one RTT late, and everything
//!   behind it on its connection waits for it (head-of-line blocking).
//! - Order: the bytes of one direction of one connection arrive in order,
//!   never before earlier ones.
//! - Close: [`StreamNet::close`] is graceful for what the closer already
//!   sent (it is still delivered, then the other end sees `Closed`); data
//!   still on its way to the closer is dropped, and so is anything sent to
//!   a closed end or by one. A host going offline is abrupt: its unsent
//!   data is dropped and the other end sees `Closed` one one-way delay
//!   later (what had arrived before that is delivered).
//!
//! Memory is what is queued: a connection is forgotten once both ends are
//! closed, and events still in flight for it are dropped when due.
//!
//! Determinism: events are kept in one heap ordered by (time, sequence
//! number), maps are ordered, and the loss draws come from a generator
//! seeded from the model (see [`StreamNet::new`]).
//!
//! Drivers: advance `now` no further than [`StreamNet::poll_timeout`] (or a
//! core's own deadline), drain [`StreamNet::poll_event`], feed the events
//! to the cores and their output back with the same `now`. A command given
//! at a later time than a pending event makes that event happen late
//! rather than in the past.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lodestone_dht::rng::Rng;

use crate::net::NetModel;

/// The largest piece a send is cut into, and the unit of round-robin
/// between connections sharing a link.
pub const SEGMENT: usize = 16 * 1024;

/// How long a dial to an offline host waits before it is refused.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Uplink in bytes/s, 0 = unlimited.
    pub up_rate: u64,
    /// Downlink in bytes/s, 0 = unlimited.
    pub down_rate: u64,
    /// Accepts no incoming connection (dials to it are refused); its own
    /// dials work.
    pub behind_nat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A dial reached a listening host: `host` is the acceptor.
    Accepted {
        conn: ConnId,
        host: HostId,
        from: HostId,
    },
    /// Our dial succeeded (one RTT after connect).
    Connected { conn: ConnId, host: HostId },
    /// Our dial failed: we were offline or dialed ourselves (at once), the
    /// other host is behind NAT (one RTT), or it is offline
    /// ([`CONNECT_TIMEOUT`]).
    Refused { conn: ConnId, host: HostId },
    /// Bytes for `host`, the receiver, in order.
    Data {
        conn: ConnId,
        host: HostId,
        bytes: Bytes,
    },
    /// The other end closed or went offline; `host` can forget `conn`.
    Closed { conn: ConnId, host: HostId },
}

/// What one host did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Bytes accepted by [`StreamNet::send`] from this host.
    pub sent: u64,
    /// Of those, bytes delivered to the other end.
    pub uploaded: u64,
    /// Bytes delivered to this host.
    pub received: u64,
    /// Connections it dialed.
    pub dialed: u64,
    /// Connections it accepted.
    pub accepted: u64,
    /// Its dials that were refused.
    pub refused: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Indexed by [`HostId`].
    pub hosts: Vec<HostStats>,
    /// Dials that reached an acceptor.
    pub connections: u64,
    /// Dials refused.
    pub refused: u64,
    /// Connections not yet closed at both ends.
    pub open: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Data(Bytes),
    Fin,
}

impl Seg {
    fn len(&self) -> u64 {
        match self {
            Seg::Data(b) => b.len() as u64,
            Seg::Fin => 0,
        }
    }
}

/// One end of a connection, as its host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Connecting,
    Open,
    Closed,
}

/// One direction of a connection: `dirs[d]` carries bytes from `ends[d]`
/// to `ends[1 - d]`.
#[derive(Debug, Default)]
struct Dir {
    /// Sent, not yet on the sender's uplink.
    pending: VecDeque<Bytes>,
    /// A FIN follows `pending`.
    fin: bool,
    /// At the receiver, waiting for its downlink.
    arrived: VecDeque<Seg>,
    /// Sent and neither delivered nor dropped.
    queued: u64,
    /// When the last segment reached the receiver (in-order arrival).
    last_arrival: Option<Instant>,
    /// In the sender's uplink ring, or on the uplink.
    in_up_ring: bool,
    /// In the receiver's downlink ring, or on the downlink.
    in_down_ring: bool,
    /// The sender went offline: what is on its uplink never leaves.
    aborted: bool,
}

impl Dir {
    fn has_outgoing(&self) -> bool {
        !self.pending.is_empty() || self.fin
    }

    fn take_segment(&mut self) -> Option<Seg> {
        if let Some(front) = self.pending.front_mut() {
            if front.len() > SEGMENT {
                return Some(Seg::Data(front.split_to(SEGMENT)));
            }
            return self.pending.pop_front().map(Seg::Data);
        }
        if self.fin {
            self.fin = false;
            return Some(Seg::Fin);
        }
        None
    }

    fn drop_pending(&mut self) {
        let n: u64 = self.pending.iter().map(|b| b.len() as u64).sum();
        self.pending.clear();
        self.fin = false;
        self.queued -= n;
    }

    fn drop_arrived(&mut self) {
        let n: u64 = self.arrived.iter().map(Seg::len).sum();
        self.arrived.clear();
        self.queued -= n;
    }
}

#[derive(Debug)]
struct Conn {
    /// `ends[0]` dialed `ends[1]`.
    ends: [usize; 2],
    sides: [Side; 2],
    dirs: [Dir; 2],
    dialed_at: Instant,
}

impl Conn {
    fn side_of(&self, host: HostId) -> usize {
        if self.ends[0] == host.0 {
            0
        } else {
            assert_eq!(self.ends[1], host.0, "host {host:?} is not an end");
            1
        }
    }
}

/// An uplink or a downlink: one segment at a time, round-robin over the
/// connection directions waiting for it.
#[derive(Debug)]
struct Link {
    rate: u64,
    busy: bool,
    ring: VecDeque<(u64, usize)>,
}

impl Link {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            busy: false,
            ring: VecDeque::new(),
        }
    }

    fn time(&self, len: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let nanos = (u128::from(len) * 1_000_000_000).div_ceil(u128::from(self.rate));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[derive(Debug)]
struct Host {
    cfg: HostConfig,
    online: bool,
    up: Link,
    down: Link,
    /// Connections it dialed or accepted and has not closed.
    conns: BTreeSet<u64>,
    stats: HostStats,
}

#[derive(Debug)]
enum Ev {
    /// The dial reaches the acceptor.
    Syn { conn: u64 },
    /// The acceptor's answer reaches the dialer.
    SynAck { conn: u64 },
    /// The dial fails.
    Refuse { conn: u64 },
    /// A segment left `host`'s uplink.
    Sent {
        host: usize,
        conn: u64,
        dir: usize,
        seg: Seg,
    },
    /// A segment reached the receiver's downlink.
    Arrive { conn: u64, dir: usize, seg: Seg },
    /// A segment passed `host`'s downlink: deliver it.
    Received {
        host: usize,
        conn: u64,
        dir: usize,
        seg: Seg,
    },
    /// The other end of `side` went away abruptly.
    Reset { conn: u64, side: usize },
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Hosts joined by TCP-like streams on a virtual clock. See the module
/// documentation for the model.
#[derive(Debug)]
pub struct StreamNet {
    model: NetModel,
    rng: Rng,
    now: Instant,
    hosts: Vec<Host>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<Scheduled>>,
    connections: u64,
    refused: u64,
}

/// FNV-1a, to seed the loss draws from the model's fields.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl StreamNet {
    /// The loss draws are seeded from `model` (its fields, seed included),
    /// so the same model gives the same run.
    pub fn new(model: NetModel, start: Instant) -> Self {
        let seed = fnv(format!("{model:?}").as_bytes());
        Self {
            model,
            rng: Rng::from_u64(seed),
            now: start,
            hosts: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            connections: 0,
            refused: 0,
        }
    }

    /// A new host, online. Its index is its position for
    /// [`NetModel::one_way`].
    pub fn add_host(&mut self, cfg: HostConfig) -> HostId {
        self.hosts.push(Host {
            cfg,
            online: true,
            up: Link::new(cfg.up_rate),
            down: Link::new(cfg.down_rate),
            conns: BTreeSet::new(),
            stats: HostStats::default(),
        });
        HostId(self.hosts.len() - 1)
    }

    pub fn is_online(&self, host: HostId) -> bool {
        self.hosts[host.0].online
    }

    /// Dial `to` from `from`. The answer is an event for `from`:
    /// `Connected` or `Refused` (at once if `from` is offline or dials
    /// itself).
    pub fn connect(&mut self, now: Instant, from: HostId, to: HostId) -> ConnId {
        let now = self.advance(now);
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                ends: [from.0, to.0],
                sides: [Side::Connecting, Side::Connecting],
                dirs: [Dir::default(), Dir::default()],
                dialed_at: now,
            },
        );
        let host = &mut self.hosts[from.0];
        host.stats.dialed += 1;
        host.conns.insert(id);
        if host.online && from != to {
            let at = now + self.model.one_way(from.0, to.0);
            self.schedule(at, Ev::Syn { conn: id });
        } else {
            self.schedule(now, Ev::Refuse { conn: id });
        }
        ConnId(id)
    }

    /// Queue `bytes` from `from` on `conn`. A dialer may send before
    /// `Connected`: the bytes wait for it. Sends on a closed or unknown
    /// connection are dropped. Panics if `from` is not an end of a known
    /// `conn` (a driver bug), as do `close` and `queued_bytes`.
    pub fn send(&mut self, now: Instant, conn: ConnId, from: HostId, bytes: Bytes) {
        let now = self.advance(now);
        if bytes.is_empty() {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn.0) else {
            return;
        };
        let s = c.side_of(from);
        if c.sides[s] == Side::Closed {
            return;
        }
        let len = bytes.len() as u64;
        self.hosts[from.0].stats.sent += len;
        let dir = &mut c.dirs[s];
        dir.pending.push_back(bytes);
        dir.queued += len;
        if c.sides[s] == Side::Open && !dir.in_up_ring {
            dir.in_up_ring = true;
            self.hosts[from.0].up.ring.push_back((conn.0, s));
            self.pump_up(now, from.0);
        }
    }

    /// Close `conn` at `by`'s end. What `by` already sent is still
    /// delivered, then the other end sees `Closed`; nothing more reaches
    /// `by` about `conn`. Closing a dial in progress aborts it.
    pub fn close(&mut self, now: Instant, conn: ConnId, by: HostId) {
        let now = self.advance(now);
        let Some(c) = self.conns.get_mut(&conn.0) else {
            return;
        };
        let s = c.side_of(by);
        let o = 1 - s;
        match c.sides[s] {
            Side::Closed => return,
            Side::Connecting => {
                self.abort_side(now, conn.0, s);
                return;
            }
            Side::Open => {}
        }
        c.sides[s] = Side::Closed;
        self.hosts[by.0].conns.remove(&conn.0);
        c.dirs[o].drop_arrived();
        if c.sides[o] == Side::Closed {
            c.dirs[s].drop_pending();
            self.forget_if_closed(conn.0);
            return;
        }
        let dir = &mut c.dirs[s];
        dir.fin = true;
        if !dir.in_up_ring {
            dir.in_up_ring = true;
            self.hosts[by.0].up.ring.push_back((conn.0, s));
            self.pump_up(now, by.0);
        }
    }

    /// Churn. Going offline closes every connection of `host` abruptly:
    /// its unsent data is dropped, `host` hears nothing more about them,
    /// and each other end sees `Closed` one one-way delay later. While
    /// offline, dials to it are refused after [`CONNECT_TIMEOUT`] and its
    /// own dials at once.
    pub fn set_online(&mut self, now: Instant, host: HostId, online: bool) {
        let now = self.advance(now);
        let h = &mut self.hosts[host.0];
        if h.online == online {
            return;
        }
        h.online = online;
        if online {
            return;
        }
        let conns = std::mem::take(&mut h.conns);
        h.up.ring.clear();
        h.down.ring.clear();
        for id in conns {
            if let Some(c) = self.conns.get(&id) {
                let s = c.side_of(host);
                self.abort_side(now, id, s);
            }
        }
    }

    /// Bytes `from` sent on `conn` that are neither delivered nor dropped
    /// yet: a driver can hold back while this is large.
    pub fn queued_bytes(&self, conn: ConnId, from: HostId) -> u64 {
        self.conns
            .get(&conn.0)
            .map_or(0, |c| c.dirs[c.side_of(from)].queued)
    }

    /// When the next event is due. `poll_event` at that time may return
    /// nothing (a segment moving from link to link) and still be needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(s)| s.at)
    }

    /// The next event due at or before `now`, in time order (ties in the
    /// order they were scheduled).
    pub fn poll_event(&mut self, now: Instant) -> Option<NetEvent> {
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.at > now {
                return None;
            }
            let Some(Reverse(s)) = self.heap.pop() else {
                break;
            };
            let at = self.advance(s.at);
            if let Some(ev) = self.handle(at, s.ev) {
                return Some(ev);
            }
        }
        None
    }

    pub fn stats(&self) -> NetStats {
        NetStats {
            hosts: self.hosts.iter().map(|h| h.stats.clone()).collect(),
            connections: self.connections,
            refused: self.refused,
            open: self.conns.len(),
        }
    }

    /// The virtual clock never runs backwards: a late command or event
    /// happens at the latest time seen.
    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn one_way(&self, c: &Conn) -> Duration {
        self.model.one_way(c.ends[0], c.ends[1])
    }

    fn handle(&mut self, now: Instant, ev: Ev) -> Option<NetEvent> {
        match ev {
            Ev::Syn { conn } => self.on_syn(now, conn),
            Ev::SynAck { conn } => self.on_syn_ack(now, conn),
            Ev::Refuse { conn } => {
                let c = self.conns.get_mut(&conn)?;
                let host = c.ends[0];
                let was = c.sides[0];
                c.sides = [Side::Closed; 2];
                c.dirs[0].drop_pending();
                self.hosts[host].conns.remove(&conn);
                self.forget_if_closed(conn);
                if was != Side::Connecting {
                    return None;
                }
                self.refused += 1;
                self.hosts[host].stats.refused += 1;
                Some(NetEvent::Refused {
                    conn: ConnId(conn),
                    host: HostId(host),
                })
            }
            Ev::Sent {
                host,
                conn,
                dir,
                seg,
            } => {
                self.hosts[host].up.busy = false;
                if let Some(c) = self.conns.get_mut(&conn) {
                    let dir_state = &mut c.dirs[dir];
                    if dir_state.has_outgoing() {
                        self.hosts[host].up.ring.push_back((conn, dir));
                    } else {
                        dir_state.in_up_ring = false;
                    }
                }
                self.depart(now, conn, dir, seg);
                self.pump_up(now, host);
                None
            }
            Ev::Arrive { conn, dir, seg } => self.on_arrive(now, conn, dir, seg),
            Ev::Received {
                host,
                conn,
                dir,
                seg,
            } => {
                self.hosts[host].down.busy = false;
                if let Some(c) = self.conns.get_mut(&conn) {
                    let dir_state = &mut c.dirs[dir];
                    if dir_state.arrived.is_empty() {
                        dir_state.in_down_ring = false;
                    } else {
                        self.hosts[host].down.ring.push_back((conn, dir));
                    }
                }
                self.pump_down(now, host);
                self.deliver(conn, dir, seg)
            }
            Ev::Reset { conn, side } => {
                let c = self.conns.get_mut(&conn)?;
                let was = c.sides[side];
                let host = c.ends[side];
                if was == Side::Closed {
                    return None;
                }
                c.sides[side] = Side::Closed;
                c.dirs[side].drop_pending();
                c.dirs[1 - side].drop_arrived();
                self.hosts[host].conns.remove(&conn);
                self.forget_if_closed(conn);
                match (was, side) {
                    (Side::Open, _) => Some(NetEvent::Closed {
                        conn: ConnId(conn),
                        host: HostId(host),
                    }),
                    (_, 0) => {
                        self.refused += 1;
                        self.hosts[host].stats.refused += 1;
                        Some(NetEvent::Refused {
                            conn: ConnId(conn),
                            host: HostId(host),
                        })
                    }
                    _ => None,
                }
            }
        }
    }

    fn on_syn(&mut self, now: Instant, conn: u64) -> Option<NetEvent> {
        let c = self.conns.get_mut(&conn)?;
        let [from, to] = c.ends;
        if c.sides[0] != Side::Connecting || c.sides[1] != Side::Connecting {
            // The dialer gave up (closed or went offline) on the way.
            c.sides[1] = Side::Closed;
            self.forget_if_closed(conn);
            return None;
        }
        let dialed_at = c.dialed_at;
        let ow = self.model.one_way(from, to);
        let acceptor = &self.hosts[to];
        if !acceptor.online {
            c.sides[1] = Side::Closed;
            let at = now.max(dialed_at + CONNECT_TIMEOUT);
            self.schedule(at, Ev::Refuse { conn });
            return None;
        }
        if acceptor.cfg.behind_nat {
            c.sides[1] = Side::Closed;
            self.schedule(now + ow, Ev::Refuse { conn });
            return None;
        }
        c.sides[1] = Side::Open;
        let acceptor = &mut self.hosts[to];
        acceptor.conns.insert(conn);
        acceptor.stats.accepted += 1;
        self.connections += 1;
        self.schedule(now + ow, Ev::SynAck { conn });
        Some(NetEvent::Accepted {
            conn: ConnId(conn),
            host: HostId(to),
            from: HostId(from),
        })
    }

    fn on_syn_ack(&mut self, now: Instant, conn: u64) -> Option<NetEvent> {
        let c = self.conns.get_mut(&conn)?;
        if c.sides[0] != Side::Connecting {
            return None;
        }
        c.sides[0] = Side::Open;
        let host = c.ends[0];
        let dir = &mut c.dirs[0];
        if dir.has_outgoing() && !dir.in_up_ring {
            dir.in_up_ring = true;
            self.hosts[host].up.ring.push_back((conn, 0));
            self.pump_up(now, host);
        }
        Some(NetEvent::Connected {
            conn: ConnId(conn),
            host: HostId(host),
        })
    }

    /// Put segments on `host`'s uplink until it is busy or idle.
    fn pump_up(&mut self, now: Instant, host: usize) {
        loop {
            let link = &mut self.hosts[host].up;
            if link.busy {
                return;
            }
            let Some((id, d)) = link.ring.pop_front() else {
                return;
            };
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let dir = &mut c.dirs[d];
            let Some(seg) = dir.take_segment() else {
                dir.in_up_ring = false;
                continue;
            };
            if link.rate == 0 {
                if dir.has_outgoing() {
                    link.ring.push_back((id, d));
                } else {
                    dir.in_up_ring = false;
                }
                self.depart(now, id, d, seg);
            } else {
                // On the link; back in the ring (behind whoever came
                // meanwhile) when this segment is through.
                link.busy = true;
                let at = now + link.time(seg.len());
                self.schedule(
                    at,
                    Ev::Sent {
                        host,
                        conn: id,
                        dir: d,
                        seg,
                    },
                );
            }
        }
    }

    /// A segment leaves the sender: it reaches the receiver one way later
    /// (one RTT more if "lost"), never before the one ahead of it.
    fn depart(&mut self, now: Instant, conn: u64, d: usize, seg: Seg) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let ow = self.one_way(c);
        let lost = matches!(seg, Seg::Data(_)) && self.model.lost(&mut self.rng);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let dir = &mut c.dirs[d];
        if dir.aborted || c.sides[1 - d] == Side::Closed {
            dir.queued -= seg.len();
            return;
        }
        let mut at = now + ow;
        if lost {
            at += ow * 2;
        }
        if let Some(last) = dir.last_arrival {
            at = at.max(last);
        }
        dir.last_arrival = Some(at);
        self.schedule(at, Ev::Arrive { conn, dir: d, seg });
    }

    fn on_arrive(&mut self, now: Instant, conn: u64, d: usize, seg: Seg) -> Option<NetEvent> {
        let c = self.conns.get_mut(&conn)?;
        let host = c.ends[1 - d];
        if c.sides[1 - d] != Side::Open {
            c.dirs[d].queued -= seg.len();
            return None;
        }
        if self.hosts[host].down.rate == 0 {
            return self.deliver(conn, d, seg);
        }
        let dir = &mut c.dirs[d];
        dir.arrived.push_back(seg);
        if !dir.in_down_ring {
            dir.in_down_ring = true;
            self.hosts[host].down.ring.push_back((conn, d));
        }
        self.pump_down(now, host);
        None
    }

    /// Start the next segment on `host`'s downlink, if it is idle.
    fn pump_down(&mut self, now: Instant, host: usize) {
        loop {
            let link = &mut self.hosts[host].down;
            if link.busy {
                return;
            }
            let Some((id, d)) = link.ring.pop_front() else {
                return;
            };
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let dir = &mut c.dirs[d];
            let Some(seg) = dir.arrived.pop_front() else {
                dir.in_down_ring = false;
                continue;
            };
            // On the link; back in the ring when this segment is through.
            link.busy = true;
            let at = now + link.time(seg.len());
            self.schedule(
                at,
                Ev::Received {
                    host,
                    conn: id,
                    dir: d,
                    seg,
                },
            );
            return;
        }
    }

    fn deliver(&mut self, conn: u64, d: usize, seg: Seg) -> Option<NetEvent> {
        let c = self.conns.get_mut(&conn)?;
        let r = 1 - d;
        let [sender, receiver] = [c.ends[d], c.ends[r]];
        c.dirs[d].queued -= seg.len();
        if c.sides[r] != Side::Open {
            return None;
        }
        match seg {
            Seg::Data(bytes) => {
                let len = bytes.len() as u64;
                self.hosts[sender].stats.uploaded += len;
                self.hosts[receiver].stats.received += len;
                Some(NetEvent::Data {
                    conn: ConnId(conn),
                    host: HostId(receiver),
                    bytes,
                })
            }
            Seg::Fin => {
                c.sides[r] = Side::Closed;
                c.dirs[r].drop_pending();
                self.hosts[receiver].conns.remove(&conn);
                self.forget_if_closed(conn);
                Some(NetEvent::Closed {
                    conn: ConnId(conn),
                    host: HostId(receiver),
                })
            }
        }
    }

    /// End `s` of `conn` goes away without a goodbye (offline, or a dial
    /// given up): its unsent data is dropped and the other end, if it knows
    /// of the connection, hears of it one way later.
    fn abort_side(&mut self, now: Instant, conn: u64, s: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.sides[s] == Side::Closed {
            return;
        }
        c.sides[s] = Side::Closed;
        let host = c.ends[s];
        c.dirs[s].drop_pending();
        c.dirs[s].aborted = true;
        c.dirs[1 - s].drop_arrived();
        let other_open = c.sides[1 - s] != Side::Closed;
        self.hosts[host].conns.remove(&conn);
        if other_open {
            let at = now + self.model.one_way(c.ends[0], c.ends[1]);
            self.schedule(at, Ev::Reset { conn, side: 1 - s });
        }
        self.forget_if_closed(conn);
    }

    /// Forget a connection closed at both ends; events still in flight for
    /// it find nothing and are dropped.
    fn forget_if_closed(&mut self, conn: u64) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.sides != [Side::Closed; 2] {
            return;
        }
        let ends = c.ends;
        self.conns.remove(&conn);
        for h in ends {
            self.hosts[h].conns.remove(&conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// 100 ms RTT between every pair (sigma 0): 50 ms one way.
    fn flat(loss: f64, seed: u64) -> NetModel {
        NetModel::new(Duration::from_millis(100), 0.0, loss, seed)
    }

    const OW: Duration = Duration::from_millis(50);

    fn host(up: u64, down: u64) -> HostConfig {
        HostConfig {
            up_rate: up,
            down_rate: down,
            behind_nat: false,
        }
    }

    /// Every event due up to `until`, with its time; the clock ends at
    /// `until`. Bounded.
    fn run(net: &mut StreamNet, until: Instant) -> Vec<(Instant, NetEvent)> {
        let mut out = Vec::new();
        for _ in 0..1_000_000 {
            match net.poll_timeout() {
                Some(t) if t <= until => {
                    while let Some(ev) = net.poll_event(t) {
                        out.push((t, ev));
                    }
                }
                _ => return out,
            }
        }
        panic!("run did not settle");
    }

    /// Dial and run until connected; returns the connection.
    fn dial(net: &mut StreamNet, now: &mut Instant, a: HostId, b: HostId) -> ConnId {
        let conn = net.connect(*now, a, b);
        *now += OW * 2;
        let evs = run(net, *now);
        assert!(
            evs.iter()
                .any(|(_, e)| *e == NetEvent::Connected { conn, host: a }),
            "{evs:?}"
        );
        conn
    }

    fn data_for(evs: &[(Instant, NetEvent)], c: ConnId, h: HostId) -> Vec<(Instant, Bytes)> {
        evs.iter()
            .filter_map(|(t, e)| match e {
                NetEvent::Data { conn, host, bytes } if *conn == c && *host == h => {
                    Some((*t, bytes.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn total(data: &[(Instant, Bytes)]) -> u64 {
        data.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// `n` bytes that do not repeat with any period a segment size
    /// divides, so reordered segments are caught.
    fn pattern(n: usize, salt: u8) -> Bytes {
        (0..n as u64)
            .map(|i| ((i ^ u64::from(salt) << 40).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn handshake_latency_and_order() {
        let t0 = Instant::now();
        let mut net = StreamNet::new(flat(0.0, 1), t0);
        let a = net.add_host(host(0, 0));
        let b = net.add_host(host(0, 0));
        let conn = net.connect(t0, a, b);
        let evs = run(&mut net, t0 + Duration::from_secs(1));
        assert_eq!(
            evs,
            vec![
                (
                    t0 + OW,
                    NetEvent::Accepted {
                        conn,
                        host: b,
                        from: a
                    }
                ),
                (t0 + OW * 2, NetEvent::Connected { conn, host: a }),
            ]
        );

        let t1 = t0 + Duration::from_secs(1);
        let big = pattern(40_000, 3);
        net.send(t1, conn, a, Bytes::from_static(b"a"));
        net.send(t1, conn, a, Bytes::from_static(b"bc"));
        net.send(t1, conn, a, big.clone());
        net.send(t1, conn, b, Bytes::from_static(b"back"));
        assert_eq!(net.queued_bytes(conn, a), 40_003);
        let evs = run(&mut net, t1 + Duration::from_secs(1));
        let to_b = data_for(&evs, conn, b);
        // Cut into segments of at most 16 KiB, all one way later, in order.
        let lens: Vec<usize> = to_b.iter().map(|(_, b)| b.len()).collect();
        assert_eq!(lens, vec![1, 2, SEGMENT, SEGMENT, 40_000 - 2 * SEGMENT]);
        assert!(to_b.iter().all(|(t, _)| *t == t1 + OW));
        let joined: Vec<u8> = to_b.iter().flat_map(|(_, b)| b.to_vec()).collect();
        assert_eq!(&joined[..3], b"abc");
        assert_eq!(&joined[3..], &big[..]);
        assert_eq!(
            data_for(&evs, conn, a),
            vec![(t1 + OW, Bytes::from_static(b"back"))]
        );
        assert_eq!(net.queued_bytes(conn, a), 0);
        let s = net.stats();
        assert_eq!((s.hosts[a.0].sent, s.hosts[a.0].uploaded), (40_003, 40_003));
        assert_eq!(s.hosts[b.0].received, 40_003);
        assert_eq!(s.connections, 1);
    }

    #[test]
    fn loss_delays_but_keeps_order() {
        let t0 = Instant::now();
        let mut net = StreamNet::new(flat(0.3, 5), t0);
        let a = net.add_host(host(4 * MIB, 0));
        let b = net.add_host(host(0, 0));
        let mut now = t0;
        let conn = dial(&mut net, &mut now, a, b);
        let msg = pattern(200 * SEGMENT, 9);
        net.send(now, conn, a, msg.clone());
        let evs = run(&mut net, now + Duration::from_secs(10));
        let got = data_for(&evs, conn, b);
        let joined: Vec<u8> = got.iter().flat_map(|(_, b)| b.to_vec()).collect();
        assert_eq!(joined, msg.to_vec(), "bytes out of order or missing");
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0));
        // 30% of segments a RTT late: some segment waited.
        let unlost = now + Duration::from_secs_f64(200.0 * SEGMENT as f64 / (4 * MIB) as f64);
        assert!(got.last().is_some_and(|(t, _)| *t > unlost + OW));
    }

    #[test]
    fn rate_limit_and_bottleneck() {
        let t0 = Instant::now();
        let mut net = StreamNet::new(flat(0.0, 1), t0);
        let fast_up = net.add_host(host(MIB, 0));
        let sink = net.add_host(host(0, 0));
        let mut now = t0;
        let conn = dial(&mut net, &mut now, fast_up, sink);
        net.send(now, conn, fast_up, pattern(MIB as usize, 1));
        let evs = run(&mut net, now + Duration::from_secs(5));
        let got = data_for(&evs, conn, sink);
        assert_eq!(total(&got), MIB);
        let took = got.last().map(|(t, _)| *t - now).unwrap_or_default();
        // 1 MiB at 1 MiB/s up, plus one way.
        assert_eq!(took, Duration::from_secs(1) + OW);
        // Half of it after half a second.
        let half: u64 = got
            .iter()
            .filter(|(t, _)| *t <= now + OW + Duration::from_millis(500))
            .map(|(_, b)| b.len() as u64)
            .sum();
        assert_eq!(half, MIB / 2);

        // Up 8 MiB/s into a 1 MiB/s downlink: the downlink is the bottleneck.
        let up = net.add_host(host(8 * MIB, 0));
        let slow_down = net.add_host(host(0, MIB));
        let mut now = now + Duration::from_secs(5);
        let conn = dial(&mut net, &mut now, up, slow_down);
        net.send(now, conn, up, pattern(MIB as usize, 2));
        let evs = run(&mut net, now + Duration::from_secs(5));
        let got = data_for(&evs, conn, slow_down);
        assert_eq!(total(&got), MIB);
        let took = got.last().map(|(t, _)| *t - now).unwrap_or_default();
        // The first segment's uplink time (2 ms), one way, then 1 s down.
        let expect = Duration::from_secs(1) + OW + Duration::from_micros(1954);
        assert!(
            took >= Duration::from_secs(1) + OW && took <= expect,
            "took {took:?}"
        );
    }

    #[test]
    fn two_senders_share_a_downlink() {
        let t0 = Instant::now();
        let mut net = StreamNet::new(flat(0.0, 1), t0);
        let s1 = net.add_host(host(0, 0));
        let s2 = net.add_host(host(0, 0));
        let rx = net.add_host(host(0, MIB));
        let mut now = t0;
        let c1 = dial(&mut net, &mut now, s1, rx);
        let c2 = dial(&mut net, &mut now, s2, rx);
        net.send(now, c1, s1, pattern(MIB as usize, 1));
        net.send(now, c2, s2, pattern(MIB as usize, 2));
        let evs = run(&mut net, now + Duration::from_secs(5));
        let (g1, g2) = (data_for(&evs, c1, rx), data_for(&evs, c2, rx));
        assert_eq!((total(&g1), total(&g2)), (MIB, MIB));
        // Both need the whole 2 s of downlink, and each had half of the
        // first second.
        let end = |g: &[(Instant, Bytes)]| g.last().map(|(t, _)| *t - now).unwrap_or_default();
        assert!(end(&g1) >= Duration::from_millis(1990), "{:?}", end(&g1));
        assert!(end(&g2) >= Duration::from_millis(1990), "{:?}", end(&g2));
        let by = |g: &[(Instant, Bytes)], t: Instant| -> u64 {
            g.iter()
                .filter(|(at, _)| *at <= t)
                .map(|(_, b)| b.len() as u64)
                .sum()
        };
        let t = now + OW + Duration::from_secs(1);
        let (b1, b2) = (by(&g1, t), by(&g2, t));
        assert_eq!(b1 + b2, MIB);
        assert!(b1.abs_diff(b2) <= SEGMENT as u64, "{b1} vs {b2}");
    }

    #[test]
    fn one_uplink_round_robins_its_connections() {
        let t0 = Instant::now();
        let mut net = StreamNet::new(flat(0.0, 1), t0);
        let tx = net.add_host(host(MIB, 0));
        let r1 = net.add_host(host(0, 0));
        let r2 = net.add_host(host(0, 0));
        let mut now = t0;
        let c1 = dial(&mut net, &mut now, tx, r1);
        let c2 = dial(&mut net, &mut now, tx, r2);
        // The first connection's whole megabyte is queued before the second.
        net.send(now, c1, tx, pattern(MIB as usize, 1));
        net.send(now, c2, tx, pattern(MIB as usize, 2));
        let t = now + OW + Duration::from_secs(1);
        let evs = run(&mut net, t);
        let (b1, b2) = (
            total(&data_for(&evs, c1, r1)),
            total(&data_for(&evs, c2, r2)),
        );
        assert_eq!(b1 + b2, MIB);
        assert!(b1.abs_diff(b2) <= SEGMENT as u64, "{b1} vs {b2}");
        assert_eq!(net.queued_bytes(c1, tx), MIB - b1);
    }

    #[test]
    fn nat_refuses_incoming_but_dials_out() {
        let t0 = Instant::now();
        let mut net = StreamNet::new(flat(0.0, 1), t0);
        let open = net.add_host(host(0, 0));
        let natted = net.add_host(HostConfig {
            behind_nat: true,
            ..host(0, 0)
        });
        let inbound = net.connect(t0, open, natted);
        let outbound = net.connect(t0, natted, open);
        let evs = run(&mut net, t0 + Duration::from_secs(5));
        assert_eq!(
            evs,
            vec![
                (
                    t0 + OW,
                    NetEvent::Accepted {
                        conn: outbound,
                        host: open,
                        from: natted
                    }
                ),
                (
                    t0 + OW * 2,
                    NetEvent::Refused {
                        conn: inbound,
                        host: open
                    }
                ),
                (
                    t0 + OW * 2,
                    NetEvent::Connected {
                        conn: outbound,
                        host: natted
                    }
                ),
            ]
        );
        let s = net.stats();
        assert_eq!((s.connections, s.refused, s.open), (1, 1, 1));
    }

    #[test]
    fn offline_closes_both_sides_and_refuses_dials() {
        let t0 = Instant::now();
        let mut net = StreamNet::new(flat(0.0, 1), t0);
        let a = net.add_host(host(0, 0));
        let b = net.add_host(host(0, 0));
        let c = net.add_host(host(0, 0));
        let mut now = t0;
        let ab = dial(&mut net, &mut now, a, b);
        let ca = dial(&mut net, &mut now, c, a);
        net.send(now, ab, a, Bytes::from_static(b"before"));
        net.set_online(now, a, false);
        // Sent by the offline host, and to it: dropped.
        net.send(now, ab, a, Bytes::from_static(b"after"));
        net.send(now, ca, c, Bytes::from_static(b"to the void"));
        let dial_at = now;
        let late = net.connect(dial_at, b, a);
        let evs = run(&mut net, now + Duration::from_secs(10));
        assert_eq!(
            evs,
            vec![
                // Already on the wire when `a` left.
                (
                    now + OW,
                    NetEvent::Data {
                        conn: ab,
                        host: b,
                        bytes: Bytes::from_static(b"before")
                    }
                ),
                (now + OW, NetEvent::Closed { conn: ab, host: b }),
                (now + OW, NetEvent::Closed { conn: ca, host: c }),
                (
                    dial_at + CONNECT_TIMEOUT,
                    NetEvent::Refused {
                        conn: late,
                        host: b
                    }
                ),
            ]
        );
        assert_eq!(net.stats().open, 0);
        assert_eq!(net.stats().hosts[c.0].received, 0);

        // Back online, it accepts again.
        let mut now = now + Duration::from_secs(10);
        net.set_online(now, a, true);
        dial(&mut net, &mut now, b, a);
    }

    #[test]
    fn data_after_close_is_dropped() {
        let t0 = Instant::now();
        let mut net = StreamNet::new(flat(0.0, 1), t0);
        let a = net.add_host(host(MIB, 0));
        let b = net.add_host(host(0, 0));
        let mut now = t0;
        let conn = dial(&mut net, &mut now, a, b);
        // Graceful: what `a` sent before closing arrives, then Closed.
        net.send(now, conn, a, pattern(100_000, 1));
        net.close(now, conn, a);
        net.send(now, conn, a, Bytes::from_static(b"after close"));
        net.send(now, conn, b, Bytes::from_static(b"to a closed end"));
        let evs = run(&mut net, now + Duration::from_secs(5));
        let got = data_for(&evs, conn, b);
        assert_eq!(total(&got), 100_000);
        let closed_at = evs
            .iter()
            .find(|(_, e)| *e == NetEvent::Closed { conn, host: b })
            .map(|(t, _)| *t);
        assert!(
            closed_at.is_some_and(|t| t >= got[got.len() - 1].0),
            "{evs:?}"
        );
        assert!(data_for(&evs, conn, a).is_empty());
        assert!(!evs
            .iter()
            .any(|(_, e)| matches!(e, NetEvent::Closed { host, .. } if *host == a)));
        // And `b` can no longer send either.
        net.send(
            now + Duration::from_secs(5),
            conn,
            b,
            Bytes::from_static(b"x"),
        );
        assert!(run(&mut net, now + Duration::from_secs(10)).is_empty());
        assert_eq!(net.stats().hosts[a.0].received, 0);
        assert_eq!(net.stats().open, 0);
    }

    /// A busy little swarm: dials, sends, closes and churn from a seeded
    /// script, with loss and assorted rates.
    fn scenario(seed: u64) -> Vec<(Duration, NetEvent)> {
        let t0 = Instant::now();
        let model = NetModel::new(Duration::from_millis(80), 0.6, 0.05, seed);
        let mut net = StreamNet::new(model, t0);
        let mut rng = Rng::from_u64(seed);
        let hosts: Vec<HostId> = (0..12)
            .map(|_| {
                net.add_host(HostConfig {
                    up_rate: rng.below(4) * 256 * 1024,
                    down_rate: rng.below(4) * 512 * 1024,
                    behind_nat: rng.below(6) == 0,
                })
            })
            .collect();
        let mut conns: Vec<(ConnId, HostId, HostId)> = Vec::new();
        let mut out = Vec::new();
        let mut now = t0;
        for _ in 0..800 {
            now += Duration::from_millis(rng.below(50));
            let a = hosts[rng.below(12) as usize];
            let b = hosts[rng.below(12) as usize];
            // Mostly sends on recent connections; some dials, closes, churn.
            let recent = conns.len().saturating_sub(8);
            let pick =
                |rng: &mut Rng| conns[recent + rng.below((conns.len() - recent) as u64) as usize];
            match rng.below(100) {
                _ if conns.is_empty() => conns.push((net.connect(now, a, b), a, b)),
                0..=11 => conns.push((net.connect(now, a, b), a, b)),
                12..=91 => {
                    let (c, x, y) = pick(&mut rng);
                    let from = if rng.below(2) == 0 { x } else { y };
                    let n = 1 + rng.below(40_000) as usize;
                    net.send(now, c, from, pattern(n, rng.below(256) as u8));
                }
                92..=96 => {
                    let (c, x, _) = pick(&mut rng);
                    net.close(now, c, x);
                }
                _ => {
                    let online = !net.is_online(a);
                    net.set_online(now, a, online);
                }
            }
            out.extend(run(&mut net, now).into_iter().map(|(t, e)| (t - t0, e)));
        }
        out.extend(
            run(&mut net, now + Duration::from_secs(60))
                .into_iter()
                .map(|(t, e)| (t - t0, e)),
        );
        // Everything was delivered or dropped, and the books balance.
        assert_eq!(net.poll_timeout(), None);
        for &(c, x, y) in &conns {
            assert_eq!(net.queued_bytes(c, x) + net.queued_bytes(c, y), 0);
        }
        let s = net.stats();
        let sent: u64 = s.hosts.iter().map(|h| h.sent).sum();
        let uploaded: u64 = s.hosts.iter().map(|h| h.uploaded).sum();
        let received: u64 = s.hosts.iter().map(|h| h.received).sum();
        assert_eq!(uploaded, received);
        assert!(uploaded > 0 && uploaded < sent, "{uploaded} of {sent}");
        out
    }

    #[test]
    fn same_seed_same_run() {
        let first = scenario(7);
        let count = |f: fn(&NetEvent) -> bool| first.iter().filter(|(_, e)| f(e)).count();
        assert!(count(|e| matches!(e, NetEvent::Data { .. })) > 100);
        assert!(count(|e| matches!(e, NetEvent::Connected { .. })) > 20);
        assert!(count(|e| matches!(e, NetEvent::Refused { .. })) > 20);
        assert!(count(|e| matches!(e, NetEvent::Closed { .. })) > 20);
        assert_eq!(first, scenario(7));
        assert_ne!(first, scenario(8));
    }
}
