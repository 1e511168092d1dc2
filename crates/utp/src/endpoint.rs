//! The endpoint: every uTP connection on one UDP socket. It routes each
//! datagram to its connection by (address, connection id), accepts SYNs
//! within limits, answers strays with RESET (rate-limited), and hands out
//! datagrams round-robin so one busy connection cannot starve the rest.
//! Like quinn-proto's `Endpoint`: no socket, no clock; the driver feeds it.

use crate::connection::{Changes, CloseReason, Connection, ConnectionConfig, ConnectionStats};
use crate::mtu::{ethernet_ceiling, floor_for, MtuSearch};
use crate::packet::{Header, Kind, Packet};
use crate::seq::Seq;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Config {
    pub connection: ConnectionConfig,
    /// Connections of every kind, ours and the peers'.
    pub max_connections: usize,
    /// Incoming SYNs not yet confirmed by the initiator's next packet: a
    /// SYN flood (spoofed or not) costs at most this many entries.
    pub max_half_open: usize,
    /// RESETs per second for datagrams that match no connection.
    pub resets_per_second: u32,
    /// Accept incoming connections at all.
    pub accept: bool,
    /// The largest UDP payload probed toward a loopback peer that said it
    /// reads that much (our max-datagram extension); other peers get
    /// Ethernet's 1,500-byte frame. The loopback link carries 64 KiB, but a
    /// peer's receive buffer may not: libtorrent 2.0 reads each datagram
    /// into 1,500 bytes (`udp_socket`'s `receive_buffer`), libutp
    /// (Transmission) into 4,096, and both take a truncated DATA packet as
    /// whole (it is acked, so the probe "succeeds", and the stream loses
    /// the tail).
    pub loopback_ceiling: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connection: ConnectionConfig::default(),
            max_connections: 4096,
            max_half_open: 64,
            resets_per_second: 64,
            accept: true,
            loopback_ceiling: 16 * 1024,
        }
    }
}

/// A connection's handle; never reused within an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer connected to us (its first packet after the SYN arrived).
    Incoming(ConnectionId, SocketAddr),
    /// Our connect was answered.
    Connected(ConnectionId),
    Readable(ConnectionId),
    Writable(ConnectionId),
    Closed(ConnectionId, CloseReason),
}

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    #[error("{0} uTP connections already open")]
    TooMany(usize),
}

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    #[error("no such uTP connection")]
    Unknown,
    #[error("uTP connection closed: {0:?}")]
    Closed(CloseReason),
}

/// What the endpoint saw, for metrics and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams: u64,
    pub malformed: u64,
    /// Datagrams for no connection we have.
    pub strays: u64,
    pub resets_sent: u64,
    /// SYNs turned away (limits, or accepting is off).
    pub syns_refused: u64,
    pub accepted: u64,
}

#[derive(Debug)]
struct Slot {
    conn: Connection,
    incoming: bool,
    /// An incoming connection the initiator has not confirmed yet.
    half_open: bool,
    /// The application let go (closed or dropped its handle).
    released: bool,
    /// In the round-robin send queue.
    queued: bool,
}

/// Where a datagram from [`Endpoint::poll_transmit`] goes, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    /// An MTU probe's first try: send it with Don't Fragment (and alone),
    /// every other datagram without, so a resent probe still gets through
    /// a path that turned out too small for it.
    pub path_mtu_probe: bool,
}

/// Packets one connection sends in a row before the next one's turn.
const BURST: usize = 64;

pub struct Endpoint {
    cfg: Config,
    epoch: Instant,
    rng: u64,
    slots: HashMap<ConnectionId, Slot>,
    by_key: HashMap<(SocketAddr, u16), ConnectionId>,
    next_id: u64,
    ready: VecDeque<ConnectionId>,
    /// Packets the connection at the front of `ready` sent in a row.
    burst: usize,
    resets: VecDeque<(SocketAddr, Header)>,
    reset_tokens: f64,
    reset_refill: Instant,
    events: VecDeque<Event>,
    half_open: usize,
    counters: Counters,
}

impl Endpoint {
    pub fn new(cfg: Config, seed: u64, now: Instant) -> Self {
        Endpoint {
            reset_tokens: cfg.resets_per_second as f64,
            cfg,
            epoch: now,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            slots: HashMap::new(),
            by_key: HashMap::new(),
            next_id: 0,
            ready: VecDeque::new(),
            burst: 0,
            resets: VecDeque::new(),
            reset_refill: now,
            events: VecDeque::new(),
            half_open: 0,
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn connection_count(&self) -> usize {
        self.slots.len()
    }

    fn random(&mut self) -> u64 {
        // splitmix64: enough for connection ids and sequence numbers.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn micros(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_micros() as u32
    }

    /// The MTU search toward `peer` (up to Ethernet's frame), and the
    /// ceiling its path allows if the peer says it reads larger datagrams.
    fn mtu_for(&self, peer: SocketAddr) -> (MtuSearch, u16) {
        let ethernet = ethernet_ceiling(peer);
        let path = if peer.ip().is_loopback() {
            self.cfg.loopback_ceiling.max(ethernet)
        } else {
            ethernet
        };
        (MtuSearch::new(floor_for(peer), ethernet), path)
    }

    /// Opens a connection to `peer`; its SYN goes out on the next poll.
    pub fn connect(
        &mut self,
        now: Instant,
        peer: SocketAddr,
    ) -> Result<ConnectionId, ConnectError> {
        if self.slots.len() >= self.cfg.max_connections {
            return Err(ConnectError::TooMany(self.slots.len()));
        }
        let recv_id = loop {
            let id = self.random() as u16;
            if !self.by_key.contains_key(&(peer, id)) {
                break id;
            }
        };
        let (mtu, path) = self.mtu_for(peer);
        let conn = Connection::connect(now, self.cfg.connection.clone(), peer, recv_id, mtu, path);
        Ok(self.insert(conn, false))
    }

    fn insert(&mut self, conn: Connection, incoming: bool) -> ConnectionId {
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        self.by_key.insert((conn.peer(), conn.recv_id()), id);
        self.slots.insert(
            id,
            Slot {
                conn,
                incoming,
                half_open: incoming,
                released: false,
                queued: true,
            },
        );
        self.ready.push_back(id);
        id
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.counters.datagrams += 1;
        let Ok(packet) = Packet::parse(datagram) else {
            self.counters.malformed += 1;
            return;
        };
        let h = packet.header;
        let id = match h.kind {
            Kind::Syn => self.by_key.get(&(from, h.conn_id.wrapping_add(1))).copied(),
            Kind::Reset => self.find_for_reset(from, h.conn_id),
            _ => self.by_key.get(&(from, h.conn_id)).copied(),
        };
        let now_us = self.micros(now);
        let Some(id) = id else {
            self.stray(now, from, &packet, now_us);
            return;
        };
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.conn.handle_packet(now, now_us, &packet);
        }
        self.after(id);
    }

    /// A RESET names the id its sender receives on or sends with; match
    /// either of our ids for that address.
    fn find_for_reset(&self, from: SocketAddr, conn_id: u16) -> Option<ConnectionId> {
        [conn_id, conn_id.wrapping_add(1), conn_id.wrapping_sub(1)]
            .into_iter()
            .find_map(|k| self.by_key.get(&(from, k)).copied())
    }

    fn stray(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>, now_us: u32) {
        let h = &packet.header;
        if h.kind == Kind::Syn {
            let half_open_full = self.half_open >= self.cfg.max_half_open;
            if !self.cfg.accept || self.slots.len() >= self.cfg.max_connections || half_open_full {
                // Silently: a reply to a spoofed SYN would reflect at a victim.
                self.counters.syns_refused += 1;
                return;
            }
            let seq = Seq(self.random() as u16);
            let (mtu, path) = self.mtu_for(from);
            let conn = Connection::accept(
                now,
                self.cfg.connection.clone(),
                from,
                packet,
                seq,
                now_us,
                mtu,
                path,
            );
            self.half_open += 1;
            let id = self.insert(conn, true);
            self.after(id);
            return;
        }
        self.counters.strays += 1;
        if h.kind == Kind::Reset {
            return;
        }
        let elapsed = now
            .saturating_duration_since(self.reset_refill)
            .as_secs_f64();
        self.reset_refill = now;
        let cap = self.cfg.resets_per_second as f64;
        self.reset_tokens = (self.reset_tokens + elapsed * cap).min(cap);
        if self.reset_tokens >= 1.0 && self.resets.len() < 64 {
            self.reset_tokens -= 1.0;
            let reset = Header {
                kind: Kind::Reset,
                conn_id: h.conn_id,
                timestamp_us: now_us,
                timestamp_diff_us: 0,
                wnd_size: 0,
                seq_nr: Seq(self.random() as u16),
                ack_nr: h.seq_nr,
            };
            self.resets.push_back((from, reset));
        }
    }

    /// Turns a connection's changes into events, queues it to send, and
    /// forgets it once finished and released.
    fn after(&mut self, id: ConnectionId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Changes {
            connected,
            readable,
            writable,
            closed,
        } = slot.conn.take_changes();
        if slot.half_open && (connected || closed.is_some()) {
            slot.half_open = false;
            self.half_open -= 1;
            if !connected {
                // Never handed out: nobody will release it.
                slot.released = true;
            }
        }
        if connected && !slot.released {
            if slot.incoming {
                self.counters.accepted += 1;
                self.events.push_back(Event::Incoming(id, slot.conn.peer()));
            } else {
                self.events.push_back(Event::Connected(id));
            }
        }
        if readable && !slot.released {
            self.events.push_back(Event::Readable(id));
        }
        if writable && !slot.released {
            self.events.push_back(Event::Writable(id));
        }
        if let Some(reason) = closed {
            if !slot.released {
                self.events.push_back(Event::Closed(id, reason));
            }
        }
        if slot.released && slot.conn.is_finished() {
            let key = (slot.conn.peer(), slot.conn.recv_id());
            self.slots.remove(&id);
            self.by_key.remove(&key);
            return;
        }
        if !slot.queued {
            slot.queued = true;
            self.ready.push_back(id);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter_map(|s| s.conn.poll_timeout())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<ConnectionId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.conn.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        // In id order, not the map's: the same inputs replay the same
        // datagrams in the same order.
        due.sort_unstable();
        for id in due {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.conn.handle_timeout(now);
            }
            self.after(id);
        }
    }

    /// Writes the next datagram into `out` (cleared first) and returns
    /// where it goes; `None` when nothing is due.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Transmit> {
        if let Some((to, reset)) = self.resets.pop_front() {
            self.counters.resets_sent += 1;
            reset.encode(None, out);
            return Some(Transmit {
                destination: to,
                path_mtu_probe: false,
            });
        }
        let now_us = self.micros(now);
        while let Some(id) = self.ready.pop_front() {
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            out.clear();
            if slot.conn.poll_transmit(now, now_us, out) {
                // Runs of packets to one peer let the driver hand them to
                // the kernel as one segmented send; others get their turn
                // after [`BURST`].
                self.burst += 1;
                if self.burst < BURST {
                    self.ready.push_front(id);
                } else {
                    self.burst = 0;
                    self.ready.push_back(id);
                }
                return Some(Transmit {
                    destination: slot.conn.peer(),
                    path_mtu_probe: slot.conn.probing_mtu(),
                });
            }
            self.burst = 0;
            slot.queued = false;
        }
        None
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Copies received bytes: `Ok(None)` when there are none yet,
    /// `Ok(Some(0))` at the end of the stream.
    pub fn read(&mut self, id: ConnectionId, buf: &mut [u8]) -> Result<Option<usize>, StreamError> {
        let slot = self.slots.get_mut(&id).ok_or(StreamError::Unknown)?;
        let r = slot.conn.read(buf).map_err(StreamError::Closed);
        self.after(id);
        r
    }

    /// Bytes ready for [`Self::read`].
    pub fn readable(&self, id: ConnectionId) -> usize {
        self.slots.get(&id).map_or(0, |s| s.conn.readable())
    }

    /// Queues bytes; returns how many fit (0: wait for `Writable`).
    pub fn write(&mut self, id: ConnectionId, data: &[u8]) -> Result<usize, StreamError> {
        let slot = self.slots.get_mut(&id).ok_or(StreamError::Unknown)?;
        let n = slot.conn.write(data).map_err(StreamError::Closed)?;
        self.after(id);
        Ok(n)
    }

    /// Ends our direction: a FIN follows the queued bytes; reading goes on.
    pub fn shutdown(&mut self, id: ConnectionId) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.conn.close();
        }
        self.after(id);
    }

    /// The application is done with the connection: queued bytes and a FIN
    /// still go out, then the endpoint forgets it.
    pub fn close(&mut self, id: ConnectionId) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.conn.close();
            slot.released = true;
        }
        self.after(id);
    }

    pub fn stats(&self, id: ConnectionId) -> Option<ConnectionStats> {
        self.slots.get(&id).map(|s| s.conn.stats())
    }

    pub fn peer(&self, id: ConnectionId) -> Option<SocketAddr> {
        self.slots.get(&id).map(|s| s.conn.peer())
    }
}
