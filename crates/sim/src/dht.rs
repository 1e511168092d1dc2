//! Many DHT nodes on one virtual network.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use lodestone_dht::items::Item;
use lodestone_dht::rng::Rng;
use lodestone_dht::{Config, Event, LookupId, Node, NodeId};

use crate::net::NetModel;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    pub median_rtt: Duration,
    pub rtt_sigma: f64,
    pub loss: f64,
    /// Fraction of nodes that never answer (firewalled, gone).
    pub unresponsive: f64,
    /// Fraction of nodes behind NAT: they can send and get answers, but
    /// unsolicited datagrams to them are dropped.
    pub natted: f64,
    pub node: Config,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 1000,
            seed: 1,
            median_rtt: Duration::from_millis(80),
            rtt_sigma: 0.6,
            loss: 0.01,
            unresponsive: 0.0,
            natted: 0.0,
            node: Config::default(),
        }
    }
}

struct SimNode {
    node: Node,
    addr: SocketAddr,
    alive: bool,
    responsive: bool,
    natted: bool,
    /// Peers this node recently sent to (a NAT lets their answers in).
    contacted: std::collections::BTreeSet<SocketAddr>,
    timer: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Deliver {
        to: usize,
        from: usize,
        payload: Vec<u8>,
    },
    Timer {
        node: usize,
    },
}

/// What one lookup did, as the simulator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupRecord {
    pub node: usize,
    pub started: Instant,
    /// When the peer we looked for first appeared.
    pub found_at: Option<Instant>,
    pub done_at: Option<Instant>,
    pub queries: u32,
    pub responses: u32,
    pub hops: u32,
    pub peers: Vec<SocketAddr>,
    pub announce_acks: Option<(u32, u32)>,
    /// BEP 44 get: the verified items, in the order they arrived.
    pub items: Vec<Item>,
    /// BEP 44 put: nodes asked, nodes that stored it, and the refusals.
    pub put_acks: Option<(u32, u32, Vec<i64>)>,
}

pub struct DhtSim {
    base: Instant,
    now: Instant,
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    seq: u64,
    rng: Rng,
    net: NetModel,
    /// Lookups being watched: (node, lookup) → record, and who to look for.
    records: BTreeMap<(usize, LookupId), (LookupRecord, Option<SocketAddr>)>,
    pub messages: u64,
    pub dropped: u64,
}

pub fn addr_of(i: usize) -> SocketAddr {
    let n = i as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
        6881,
    ))
}

impl DhtSim {
    pub fn new(cfg: &SimConfig) -> Self {
        let base = Instant::now();
        let mut rng = Rng::from_u64(cfg.seed);
        let net = NetModel::new(cfg.median_rtt, cfg.rtt_sigma, cfg.loss, cfg.seed ^ 0x5eed);
        let mut nodes = Vec::with_capacity(cfg.nodes);
        let mut by_addr = BTreeMap::new();
        for i in 0..cfg.nodes {
            let addr = addr_of(i);
            let id = NodeId(rng.bytes20());
            let node = Node::new(cfg.node.clone(), id, rng.bytes32(), base);
            // Node 0 is the bootstrap router: always there.
            let responsive = i == 0 || rng.unit() >= cfg.unresponsive;
            let natted = i != 0 && responsive && rng.unit() < cfg.natted;
            nodes.push(SimNode {
                node,
                addr,
                alive: true,
                responsive,
                natted,
                contacted: Default::default(),
                timer: None,
            });
            by_addr.insert(addr, i);
        }
        Self {
            base,
            now: base,
            nodes,
            by_addr,
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            net,
            records: BTreeMap::new(),
            messages: 0,
            dropped: 0,
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    pub fn is_responsive(&self, i: usize) -> bool {
        self.nodes[i].alive && self.nodes[i].responsive
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    /// Send what node `i` has queued, record its events, re-arm its timer.
    fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].node.poll_transmit() {
            self.messages += 1;
            let Some(&to) = self.by_addr.get(&t.to) else {
                self.dropped += 1;
                continue;
            };
            if self.nodes[i].natted {
                self.nodes[i].contacted.insert(t.to);
            }
            if self.net.lost(&mut self.rng) {
                self.dropped += 1;
                continue;
            }
            let at = self.now + self.net.one_way(i, to);
            self.push(
                at,
                Ev::Deliver {
                    to,
                    from: i,
                    payload: t.payload,
                },
            );
        }
        while let Some(e) = self.nodes[i].node.poll_event() {
            self.record(i, e);
        }
        if let Some(t) = self.nodes[i].node.poll_timeout() {
            if self.nodes[i]
                .timer
                .is_none_or(|old| t < old || old <= self.now)
            {
                self.nodes[i].timer = Some(t);
                self.push(t, Ev::Timer { node: i });
            }
        }
    }

    fn record(&mut self, i: usize, e: Event) {
        let now = self.now;
        match e {
            Event::Peers { lookup, peers, .. } => {
                if let Some((r, want)) = self.records.get_mut(&(i, lookup)) {
                    if r.found_at.is_none() && want.is_some_and(|w| peers.contains(&w)) {
                        r.found_at = Some(now);
                    }
                    r.peers.extend(peers);
                }
            }
            Event::Hop { lookup, .. } => {
                if let Some((r, _)) = self.records.get_mut(&(i, lookup)) {
                    r.hops += 1;
                }
            }
            Event::LookupDone { lookup, stats, .. } => {
                if let Some((r, _)) = self.records.get_mut(&(i, lookup)) {
                    r.done_at = Some(now);
                    r.queries = stats.queries;
                    r.responses = stats.responses;
                }
            }
            Event::Announced {
                lookup,
                sent,
                acked,
                ..
            } => {
                if let Some((r, _)) = self.records.get_mut(&(i, lookup)) {
                    r.announce_acks = Some((sent, acked));
                }
            }
            Event::Item { lookup, item, .. } => {
                if let Some((r, _)) = self.records.get_mut(&(i, lookup)) {
                    if r.found_at.is_none() {
                        r.found_at = Some(now);
                    }
                    r.items.push(item);
                }
            }
            Event::ItemStored {
                lookup,
                sent,
                acked,
                errors,
                ..
            } => {
                if let Some((r, _)) = self.records.get_mut(&(i, lookup)) {
                    let codes = errors.iter().map(|(_, c, _)| *c).collect();
                    r.put_acks = Some((sent, acked, codes));
                }
            }
            _ => {}
        }
    }

    fn watch(&mut self, i: usize, lookup: LookupId, want: Option<SocketAddr>) {
        let r = LookupRecord {
            node: i,
            started: self.now,
            found_at: None,
            done_at: None,
            queries: 0,
            responses: 0,
            hops: 0,
            peers: Vec::new(),
            announce_acks: None,
            items: Vec::new(),
            put_acks: None,
        };
        self.records.insert((i, lookup), (r, want));
    }

    pub fn record_of(&self, i: usize, lookup: LookupId) -> Option<&LookupRecord> {
        self.records.get(&(i, lookup)).map(|(r, _)| r)
    }

    // ---- commands ----

    pub fn bootstrap(&mut self, i: usize, via: &[usize]) -> LookupId {
        let addrs: Vec<SocketAddr> = via.iter().map(|&v| self.nodes[v].addr).collect();
        let now = self.now;
        let l = self.nodes[i].node.bootstrap(now, &addrs);
        self.watch(i, l, None);
        self.drain(i);
        l
    }

    pub fn announce(&mut self, i: usize, ih: InfoHash) -> LookupId {
        let now = self.now;
        let l = self.nodes[i].node.announce(now, ih, None, true);
        self.watch(i, l, None);
        self.drain(i);
        l
    }

    /// Look for `ih`; the record notes when `want` turned up.
    pub fn get_peers(&mut self, i: usize, ih: InfoHash, want: Option<SocketAddr>) -> LookupId {
        let now = self.now;
        let l = self.nodes[i].node.get_peers(now, ih);
        self.watch(i, l, want);
        self.drain(i);
        l
    }

    /// Every node but the router (node 0) joins, `apart` after the one
    /// before, through the router and (once there are some) one earlier
    /// node picked by the seeded generator; then the network settles for
    /// `settle`. Each step is bounded by `max_events`.
    pub fn join_all(&mut self, apart: Duration, settle: Duration, max_events: u64) {
        for i in 1..self.len() {
            let mut via = vec![0];
            if i > 10 {
                via.push(1 + self.rng().below(i as u64 - 1) as usize);
            }
            self.bootstrap(i, &via);
            self.run_for(apart, max_events);
        }
        self.run_for(settle, max_events);
    }

    /// BEP 44: store `item` from node `i`.
    pub fn put(&mut self, i: usize, item: Item) -> LookupId {
        let now = self.now;
        let l = self.nodes[i].node.put(now, item);
        self.watch(i, l, None);
        self.drain(i);
        l
    }

    /// BEP 44: look up an immutable item from node `i`.
    pub fn get_immutable(&mut self, i: usize, target: NodeId) -> LookupId {
        let now = self.now;
        let l = self.nodes[i].node.get_immutable(now, target);
        self.watch(i, l, None);
        self.drain(i);
        l
    }

    /// BEP 44: look up the mutable item of `key` and `salt` from node `i`.
    pub fn get_mutable(&mut self, i: usize, key: &[u8; 32], salt: &[u8]) -> LookupId {
        let now = self.now;
        let l = self.nodes[i].node.get_mutable(now, key, salt, None);
        self.watch(i, l, None);
        self.drain(i);
        l
    }

    /// The node leaves: it stops sending and receiving.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// Run the network until virtual time `until` (bounded by an event count).
    pub fn run_until(&mut self, until: Instant, max_events: u64) -> u64 {
        let mut n = 0;
        while n < max_events {
            let Some(Reverse((at, _, _))) = self.queue.peek() else {
                break;
            };
            if *at > until {
                break;
            }
            let Some(Reverse((at, _, ev))) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            n += 1;
            match ev {
                Ev::Deliver { to, from, payload } => {
                    let target = &self.nodes[to];
                    let from_addr = self.nodes[from].addr;
                    let blocked = !target.alive
                        || !target.responsive
                        || (target.natted && !target.contacted.contains(&from_addr));
                    if blocked {
                        self.dropped += 1;
                        continue;
                    }
                    let now = self.now;
                    self.nodes[to]
                        .node
                        .handle_datagram(now, from_addr, &payload);
                    self.drain(to);
                }
                Ev::Timer { node } => {
                    if !self.nodes[node].alive || self.nodes[node].timer != Some(at) {
                        continue; // superseded
                    }
                    self.nodes[node].timer = None;
                    let now = self.now;
                    self.nodes[node].node.handle_timeout(now);
                    self.drain(node);
                }
            }
        }
        if self
            .queue
            .peek()
            .is_none_or(|Reverse((at, _, _))| *at > until)
        {
            self.now = self.now.max(until);
        }
        n
    }

    pub fn run_for(&mut self, d: Duration, max_events: u64) -> u64 {
        let until = self.now + d;
        self.run_until(until, max_events)
    }

    /// Sizes of the routing tables of live, responsive nodes (a node that
    /// never gets a packet cannot learn anyone).
    pub fn table_sizes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.alive && n.responsive)
            .map(|n| n.node.table().len())
            .collect()
    }
}
