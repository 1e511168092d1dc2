//! uTP endpoints (`lodestone-utp`) on a dumbbell network with one
//! bottleneck in each direction, on a virtual clock.
//!
//! The model:
//! - Hosts sit on the left or the right. A datagram between two hosts on
//!   the same side is delivered after [`LAN_DELAY`]; one that crosses goes
//!   through the side's outgoing [`Link`]: left to right through
//!   `forward`, right to left through `reverse`.
//! - A link is a FIFO queue of limited bytes in front of a serializer of
//!   fixed rate (bytes/s): a datagram that does not fit in the queue is
//!   dropped (drop-tail); one that fits leaves `len / rate` after the one
//!   before it, then travels the propagation delay plus a uniform draw from
//!   `0..jitter` (which reorders datagrams closer together than the jitter),
//!   and is lost with probability `loss` (after it used the link's time).
//! - Datagrams to an address that is no host cross the link like any other
//!   and are then counted as undeliverable (a RESET to a spoofed source).
//! - Flows: a host connects to another and sends a deterministic byte
//!   pattern (a fixed length, then FIN; or forever); the receiver checks
//!   every byte against the pattern as it reads, so corruption, loss and
//!   reordering of the stream are caught without keeping the bytes.
//! - Raw hosts have no endpoint: the test reads what reaches them and sends
//!   what it likes, from any source address (a hostile peer, a spoofer).
//!
//! Determinism: one heap ordered by (time, sequence number), hosts and
//! flows in vectors, loss and jitter from one generator seeded by the
//! caller. Nothing reads the wall clock except [`UtpSim::new`]'s origin.
//!
//! Driving: [`UtpSim::run_until`] steps to each delivery or endpoint
//! deadline (never sleeping) and stops at the given virtual time; every
//! run is bounded by a step budget and panics with the seed past it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_dht::rng::Rng;
use lodestone_utp::packet::{Header, Packet};
use lodestone_utp::{CloseReason, Config, ConnectionId, ConnectionStats, Endpoint, Event};

/// The most a flow hands its endpoint in one write.
const WRITE_CHUNK: usize = 64 * 1024;

/// One-way delay between two hosts on the same side.
pub const LAN_DELAY: Duration = Duration::from_micros(200);

/// What a bottleneck link does to the datagrams that enter it.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Bytes per second leaving the queue; 0 = unlimited (no queue).
    pub rate: u64,
    /// The queue's capacity in bytes, the datagram being sent included;
    /// a datagram that would overflow it is dropped.
    pub buffer: usize,
    /// Propagation delay after the queue.
    pub delay: Duration,
    /// Each datagram gets an extra delay drawn uniformly from `0..jitter`.
    pub jitter: Duration,
    /// Probability that a datagram is lost after it left the queue.
    pub loss: f64,
}

impl LinkConfig {
    /// A link without a queue or loss: only the propagation delay.
    pub fn wire(delay: Duration) -> Self {
        LinkConfig {
            rate: 0,
            buffer: usize::MAX,
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }
}

/// What a link did so far (wire bytes: uTP headers included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub offered: u64,
    pub offered_bytes: u64,
    /// Turned away by a full queue.
    pub dropped: u64,
    /// Lost at random after the queue.
    pub lost: u64,
    /// Bytes that finished leaving the queue, up to the last
    /// [`Link::advance`].
    pub sent_bytes: u64,
}

/// A rate-limited FIFO queue with drop-tail, then a delay line.
#[derive(Debug)]
pub struct Link {
    cfg: LinkConfig,
    /// (time the datagram has left the serializer, its length), oldest first.
    queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    busy_until: Instant,
    stats: LinkStats,
}

impl Link {
    fn new(cfg: LinkConfig, now: Instant) -> Self {
        Link {
            cfg,
            queue: VecDeque::new(),
            queued_bytes: 0,
            busy_until: now,
            stats: LinkStats::default(),
        }
    }

    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Forgets what has left the queue by `now`.
    pub fn advance(&mut self, now: Instant) {
        while let Some(&(left, len)) = self.queue.front() {
            if left > now {
                break;
            }
            self.queue.pop_front();
            self.queued_bytes -= len;
            self.stats.sent_bytes += len as u64;
        }
    }

    /// Bytes in the queue at `now` (the one being sent included).
    pub fn queued_bytes(&mut self, now: Instant) -> usize {
        self.advance(now);
        self.queued_bytes
    }

    /// How long a datagram entering now waits before its first byte goes
    /// out: the queue's delay.
    pub fn queue_delay(&mut self, now: Instant) -> Duration {
        self.advance(now);
        self.busy_until.saturating_duration_since(now)
    }

    /// A datagram of `len` bytes enters at `now`: when it arrives at the far
    /// end, or `None` if dropped or lost.
    fn enter(&mut self, now: Instant, len: usize, rng: &mut Rng) -> Option<Instant> {
        self.advance(now);
        self.stats.offered += 1;
        self.stats.offered_bytes += len as u64;
        let left = if self.cfg.rate == 0 {
            self.stats.sent_bytes += len as u64;
            now
        } else {
            if self.queued_bytes + len > self.cfg.buffer {
                self.stats.dropped += 1;
                return None;
            }
            let start = self.busy_until.max(now);
            let left = start + Duration::from_secs_f64(len as f64 / self.cfg.rate as f64);
            self.busy_until = left;
            self.queue.push_back((left, len));
            self.queued_bytes += len;
            left
        };
        let jitter = if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(rng.below(self.cfg.jitter.as_nanos() as u64))
        };
        if self.cfg.loss > 0.0 && rng.unit() < self.cfg.loss {
            self.stats.lost += 1;
            return None;
        }
        Some(left + self.cfg.delay + jitter)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Left,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub usize);

struct Host {
    addr: SocketAddr,
    side: Side,
    /// `None` for a raw host, driven by the test.
    endpoint: Option<Endpoint>,
    /// What reached a raw host: (when, from, bytes).
    inbox: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
}

/// A one-way transfer from `from` to `to`, checked byte by byte.
#[derive(Debug, Clone)]
pub struct Flow {
    pub from: HostId,
    pub to: HostId,
    /// Bytes to send then close; `None` sends forever.
    pub len: Option<u64>,
    pub started: Instant,
    pub tx: Option<ConnectionId>,
    pub rx: Option<ConnectionId>,
    pub written: u64,
    /// Bytes read, in order, each equal to the pattern.
    pub received: u64,
    /// The first offset whose byte differed from the pattern.
    pub corrupt_at: Option<u64>,
    /// The receiver read the end of the stream.
    pub finished: Option<Instant>,
    pub tx_closed: Option<CloseReason>,
    pub rx_closed: Option<CloseReason>,
    sender_released: bool,
}

impl Flow {
    /// The byte at `offset` of flow `id`'s stream.
    pub fn pattern(id: FlowId, offset: u64) -> u8 {
        (offset.wrapping_mul(7) ^ (offset >> 8) ^ (id.0 as u64).wrapping_mul(0x9d)) as u8
    }
}

/// Datagrams on their way: (arrival, order, to, from, bytes).
type Transit = (Instant, u64, SocketAddr, SocketAddr, Vec<u8>);

pub struct UtpSim {
    seed: u64,
    now: Instant,
    start: Instant,
    rng: Rng,
    hosts: Vec<Host>,
    by_addr: BTreeMap<SocketAddr, HostId>,
    pub forward: Link,
    pub reverse: Link,
    wire: BinaryHeap<Reverse<Transit>>,
    order: u64,
    flows: Vec<Flow>,
    /// Connections nobody asked for (a peer that connected on its own):
    /// read and discarded, as an application that accepts them would.
    others: Vec<(HostId, ConnectionId)>,
    /// The last uTP header seen from one address to another, as a peer on
    /// the same link could observe.
    observed: BTreeMap<(SocketAddr, SocketAddr), Header>,
    /// Datagrams to no host.
    pub undeliverable: u64,
    steps: u64,
    max_steps: u64,
    buf: Vec<u8>,
    read_buf: Vec<u8>,
}

impl UtpSim {
    /// `forward` carries left → right, `reverse` right → left. `max_steps`
    /// bounds the whole simulation's event loop.
    pub fn new(seed: u64, forward: LinkConfig, reverse: LinkConfig, max_steps: u64) -> Self {
        let now = Instant::now();
        UtpSim {
            seed,
            now,
            start: now,
            rng: Rng::from_u64(seed),
            hosts: Vec::new(),
            by_addr: BTreeMap::new(),
            forward: Link::new(forward, now),
            reverse: Link::new(reverse, now),
            wire: BinaryHeap::new(),
            order: 0,
            flows: Vec::new(),
            others: Vec::new(),
            observed: BTreeMap::new(),
            undeliverable: 0,
            steps: 0,
            max_steps,
            buf: Vec::with_capacity(64 * 1024),
            read_buf: vec![0; 64 * 1024],
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn next_addr(&self, side: Side) -> SocketAddr {
        let n = self.hosts.len() as u8 + 1;
        let net = match side {
            Side::Left => 1,
            Side::Right => 2,
        };
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, net, 0, n)), 6881)
    }

    /// A host running a uTP endpoint with `cfg`.
    pub fn add_host(&mut self, side: Side, cfg: Config) -> HostId {
        let seed = self.rng.next_u64();
        let endpoint = Endpoint::new(cfg, seed, self.now);
        self.push_host(side, Some(endpoint))
    }

    /// A host without an endpoint: [`UtpSim::take_inbox`] and
    /// [`UtpSim::send_raw`] are its socket.
    pub fn add_raw_host(&mut self, side: Side) -> HostId {
        self.push_host(side, None)
    }

    fn push_host(&mut self, side: Side, endpoint: Option<Endpoint>) -> HostId {
        let id = HostId(self.hosts.len());
        let addr = self.next_addr(side);
        self.hosts.push(Host {
            addr,
            side,
            endpoint,
            inbox: VecDeque::new(),
        });
        self.by_addr.insert(addr, id);
        id
    }

    pub fn addr(&self, h: HostId) -> SocketAddr {
        self.hosts[h.0].addr
    }

    pub fn endpoint(&self, h: HostId) -> &Endpoint {
        self.hosts[h.0].endpoint.as_ref().expect("not a raw host")
    }

    pub fn endpoint_mut(&mut self, h: HostId) -> &mut Endpoint {
        self.hosts[h.0].endpoint.as_mut().expect("not a raw host")
    }

    pub fn take_inbox(&mut self, h: HostId) -> Vec<(Instant, SocketAddr, Vec<u8>)> {
        self.hosts[h.0].inbox.drain(..).collect()
    }

    /// The last uTP header an endpoint at `from` sent to `to` (what a peer
    /// on the path sees; raw datagrams are not recorded).
    pub fn observed(&self, from: SocketAddr, to: SocketAddr) -> Option<Header> {
        self.observed.get(&(from, to)).copied()
    }

    /// Starts a flow of `len` bytes (`None`: forever) from `from` to `to`.
    pub fn start_flow(&mut self, from: HostId, to: HostId, len: Option<u64>) -> FlowId {
        let to_addr = self.addr(to);
        let now = self.now;
        let tx = self
            .endpoint_mut(from)
            .connect(now, to_addr)
            .expect("the sender has room for a connection");
        let id = FlowId(self.flows.len());
        self.flows.push(Flow {
            from,
            to,
            len,
            started: now,
            tx: Some(tx),
            rx: None,
            written: 0,
            received: 0,
            corrupt_at: None,
            finished: None,
            tx_closed: None,
            rx_closed: None,
            sender_released: false,
        });
        id
    }

    pub fn flow(&self, f: FlowId) -> &Flow {
        &self.flows[f.0]
    }

    /// The sender's view of a flow's connection.
    pub fn flow_stats(&self, f: FlowId) -> Option<ConnectionStats> {
        let flow = &self.flows[f.0];
        self.endpoint(flow.from).stats(flow.tx?)
    }

    /// Sends `bytes` as `from` (any address: spoofing is allowed) from a
    /// host on `side`, through that side's link like any datagram.
    pub fn send_raw(&mut self, side: Side, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.route(side, from, to, bytes);
    }

    fn route(&mut self, side: Side, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let dest_side = self.by_addr.get(&to).map(|h| self.hosts[h.0].side);
        let at = if dest_side == Some(side) {
            Some(self.now + LAN_DELAY)
        } else {
            let link = match side {
                Side::Left => &mut self.forward,
                Side::Right => &mut self.reverse,
            };
            link.enter(self.now, bytes.len(), &mut self.rng)
        };
        if let Some(at) = at {
            self.order += 1;
            self.wire.push(Reverse((at, self.order, to, from, bytes)));
        }
    }

    /// Every endpoint's datagrams onto the network.
    fn flush(&mut self) {
        for i in 0..self.hosts.len() {
            let (from, side) = (self.hosts[i].addr, self.hosts[i].side);
            while let Some(to) = self.hosts[i]
                .endpoint
                .as_mut()
                .and_then(|ep| ep.poll_transmit(self.now, &mut self.buf))
                .map(|t| t.destination)
            {
                if let Ok(p) = Packet::parse(&self.buf) {
                    self.observed.insert((from, to), p.header);
                }
                let bytes = self.buf.clone();
                self.route(side, from, to, bytes);
            }
        }
    }

    /// The applications: events, then every flow writes what fits and
    /// reads what arrived.
    fn pump(&mut self) {
        let now = self.now;
        let mut events = Vec::new();
        for (h, host) in self.hosts.iter_mut().enumerate() {
            if let Some(ep) = host.endpoint.as_mut() {
                events.extend(std::iter::from_fn(|| ep.poll_event()).map(|e| (HostId(h), e)));
            }
        }
        for (h, e) in events {
            match e {
                Event::Incoming(id, from) => {
                    let hosts = &self.hosts;
                    let flow = self
                        .flows
                        .iter_mut()
                        .find(|f| f.to == h && f.rx.is_none() && hosts[f.from.0].addr == from);
                    match flow {
                        Some(f) => f.rx = Some(id),
                        None => self.others.push((h, id)),
                    }
                }
                Event::Closed(id, reason) => {
                    for f in &mut self.flows {
                        if f.from == h && f.tx == Some(id) {
                            f.tx_closed = Some(reason);
                        }
                        if f.to == h && f.rx == Some(id) {
                            f.rx_closed = Some(reason);
                        }
                    }
                }
                Event::Connected(_) | Event::Readable(_) | Event::Writable(_) => {}
            }
        }
        for fi in 0..self.flows.len() {
            let f = &mut self.flows[fi];
            let (from, to) = (f.from.0, f.to.0);
            if let (Some(tx), false) = (f.tx, f.sender_released) {
                let ep = self.hosts[from].endpoint.as_mut().expect("a flow's sender");
                let end = f.len.unwrap_or(u64::MAX);
                while f.written < end {
                    let n = (end - f.written).min(WRITE_CHUNK as u64) as usize;
                    self.buf.clear();
                    self.buf
                        .extend((0..n as u64).map(|i| Flow::pattern(FlowId(fi), f.written + i)));
                    match ep.write(tx, &self.buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => f.written += n as u64,
                    }
                }
                if f.written == end {
                    ep.close(tx);
                    f.sender_released = true;
                }
            }
            if let (Some(rx), None) = (f.rx, f.finished) {
                let ep = self.hosts[to].endpoint.as_mut().expect("a flow's receiver");
                loop {
                    match ep.read(rx, &mut self.read_buf) {
                        Ok(Some(0)) => {
                            f.finished = Some(now);
                            ep.close(rx);
                            break;
                        }
                        Ok(Some(n)) => {
                            for (i, &b) in self.read_buf[..n].iter().enumerate() {
                                let at = f.received + i as u64;
                                if f.corrupt_at.is_none() && b != Flow::pattern(FlowId(fi), at) {
                                    f.corrupt_at = Some(at);
                                }
                            }
                            f.received += n as u64;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        let mut i = 0;
        while i < self.others.len() {
            let (h, id) = self.others[i];
            let ep = self.hosts[h.0].endpoint.as_mut().expect("an endpoint");
            let done = loop {
                match ep.read(id, &mut self.read_buf) {
                    Ok(Some(0)) | Err(_) => break true,
                    Ok(Some(_)) => {}
                    Ok(None) => break false,
                }
            };
            if done {
                ep.close(id);
                self.others.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Runs until virtual time `until` (or until nothing is left to
    /// happen). Panics with the seed if the step budget runs out.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            self.pump();
            self.flush();
            let next_wire = self.wire.peek().map(|Reverse(d)| d.0);
            let next_timer = self
                .hosts
                .iter()
                .filter_map(|h| h.endpoint.as_ref()?.poll_timeout())
                .min();
            let Some(next) = [next_wire, next_timer].into_iter().flatten().min() else {
                self.now = self.now.max(until);
                return;
            };
            if next > until {
                self.now = self.now.max(until);
                return;
            }
            self.steps += 1;
            assert!(
                self.steps <= self.max_steps,
                "seed {}: {} steps by {:?} of virtual time",
                self.seed,
                self.steps,
                self.elapsed()
            );
            self.now = self.now.max(next);
            while let Some(Reverse(d)) = self.wire.peek() {
                if d.0 > self.now {
                    break;
                }
                let Some(Reverse((_, _, to, from, bytes))) = self.wire.pop() else {
                    break;
                };
                match self.by_addr.get(&to) {
                    Some(h) => {
                        let host = &mut self.hosts[h.0];
                        match host.endpoint.as_mut() {
                            Some(ep) => ep.handle_datagram(self.now, from, &bytes),
                            None => host.inbox.push_back((self.now, from, bytes)),
                        }
                    }
                    None => self.undeliverable += 1,
                }
            }
            for h in &mut self.hosts {
                if let Some(ep) = h.endpoint.as_mut() {
                    if ep.poll_timeout().is_some_and(|t| t <= self.now) {
                        ep.handle_timeout(self.now);
                    }
                }
            }
        }
    }

    /// Runs in steps of `every`, calling `sample` after each, until `until`.
    pub fn run_sampled(
        &mut self,
        until: Instant,
        every: Duration,
        mut sample: impl FnMut(&mut UtpSim),
    ) {
        while self.now < until {
            let next = (self.now + every).min(until);
            self.run_until(next);
            sample(self);
        }
    }

    /// Runs until every flow that has a length finished (or `limit` of
    /// virtual time passed); true if they all did.
    pub fn run_flows(&mut self, limit: Duration) -> bool {
        let until = self.start + limit;
        let done = |s: &UtpSim| {
            s.flows
                .iter()
                .all(|f| f.len.is_none() || f.finished.is_some())
        };
        while !done(self) && self.now < until {
            let next = (self.now + Duration::from_millis(50)).min(until);
            self.run_until(next);
        }
        done(self)
    }
}

/// The `p`-th percentile (0..=100) of `v`, sorted in place.
pub fn percentile(v: &mut [Duration], p: f64) -> Duration {
    assert!(!v.is_empty(), "no samples");
    v.sort();
    let i = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
    v[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_serializes_drops_tail_and_delays() {
        let t0 = Instant::now();
        let mut rng = Rng::from_u64(1);
        let mut l = Link::new(
            LinkConfig {
                rate: 1000,
                buffer: 250,
                delay: Duration::from_millis(10),
                jitter: Duration::ZERO,
                loss: 0.0,
            },
            t0,
        );
        // 100 bytes at 1,000 B/s: 100 ms each, back to back.
        assert_eq!(
            l.enter(t0, 100, &mut rng),
            Some(t0 + Duration::from_millis(110))
        );
        assert_eq!(
            l.enter(t0, 100, &mut rng),
            Some(t0 + Duration::from_millis(210))
        );
        assert_eq!(l.enter(t0, 100, &mut rng), None, "250 bytes of queue");
        assert_eq!(l.stats().dropped, 1);
        assert_eq!(l.queue_delay(t0), Duration::from_millis(200));
        let t1 = t0 + Duration::from_millis(150);
        assert_eq!(l.queued_bytes(t1), 100);
        assert_eq!(l.stats().sent_bytes, 100);
        assert_eq!(
            l.enter(t1, 100, &mut rng),
            Some(t0 + Duration::from_millis(310))
        );
    }
}
