//! A Mainline DHT node as a state machine: datagrams and the current time
//! in, datagrams and events out. No sockets, clocks or global randomness:
//! the driver (a tokio socket, or the simulator) owns those.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;

use crate::id::NodeId;
use crate::items::{self, Item, ItemLimits, ItemStore, MutableItem};
use crate::krpc::{
    error_code, query_transaction_id, Body, CompactNode, CompactNode6, KrpcError, Message,
    MutablePut, Query, Response, Token, TransactionId, Version, Want,
};
use crate::lookup::{Lookup, LookupId, LookupKind, LookupStats};
use crate::rng::Rng;
use crate::routing_table::{Heard, Inserted, NodeState, RoutingTable};
use crate::store::{PeerStore, StoreLimits};
use crate::tokens::Tokens;

#[derive(Debug, Clone)]
pub struct Config {
    /// Queries a lookup keeps in flight (before their soft timeout).
    pub alpha: usize,
    /// Bucket size, and how many closest nodes a lookup converges on.
    pub k: usize,
    /// After this, a query no longer holds a lookup slot.
    pub soft_timeout: Duration,
    /// After this, a query has failed.
    pub hard_timeout: Duration,
    /// BEP 43: answer no queries and ask others not to store us.
    pub read_only: bool,
    /// Where to start when the table is empty (and to return to when every
    /// node has gone silent).
    pub bootstrap: Vec<SocketAddr>,
    /// Queries per second accepted from one IP (loopback is exempt).
    pub rate_limit: u32,
    pub store: StoreLimits,
    /// BEP 44 items kept for others.
    pub items: ItemLimits,
    /// BEP 42: take into the routing table only nodes whose id is valid
    /// for their IP (local addresses are exempt either way).
    pub enforce_node_id: bool,
    /// BEP 42: once the nodes we ask agree on our external IP, make our id
    /// a valid one for it (the routing table is rebuilt around the new id).
    pub secure_id: bool,
    /// Our BEP 20 client version in every message.
    pub version: [u8; 4],
}

impl Default for Config {
    fn default() -> Self {
        Self {
            alpha: 4,
            k: 8,
            soft_timeout: Duration::from_millis(400),
            hard_timeout: Duration::from_secs(2),
            read_only: false,
            bootstrap: Vec::new(),
            rate_limit: 200,
            store: StoreLimits::default(),
            items: ItemLimits::default(),
            enforce_node_id: false,
            secure_id: true,
            version: *b"LS\x00\x01",
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New peers for a get_peers or announce lookup.
    Peers {
        lookup: LookupId,
        info_hash: InfoHash,
        peers: Vec<SocketAddr>,
    },
    /// One answer in a lookup (for `--trace`).
    Hop {
        lookup: LookupId,
        node: NodeId,
        addr: SocketAddr,
        rtt: Duration,
        /// Leading bits the node's id shares with the target.
        common_bits: usize,
        nodes: usize,
        values: usize,
    },
    LookupDone {
        lookup: LookupId,
        target: NodeId,
        stats: LookupStats,
        closest: Vec<(NodeId, SocketAddr)>,
        duration: Duration,
    },
    /// The announce phase ended: `acked` of `sent` nodes confirmed.
    Announced {
        lookup: LookupId,
        info_hash: InfoHash,
        sent: u32,
        acked: u32,
    },
    Pong {
        addr: SocketAddr,
        id: NodeId,
        rtt: Duration,
    },
    PingFailed {
        addr: SocketAddr,
    },
    /// Someone announced a peer to us.
    IncomingAnnounce {
        info_hash: InfoHash,
        peer: SocketAddr,
    },
    /// A BEP 44 get found a value that passed its checks (hash, or key,
    /// salt and signature). For a mutable item, each newer `seq` is
    /// reported once; an immutable get ends with its first value.
    Item {
        lookup: LookupId,
        item: Item,
        from: SocketAddr,
    },
    /// BEP 42: the nodes we ask agree that we are at `ip`; if our id was
    /// not valid for it, it is now `id`.
    ExternalIp {
        ip: IpAddr,
        id: NodeId,
    },
    /// A node's answer to `sample_infohashes` (BEP 51).
    Samples {
        lookup: LookupId,
        from: SocketAddr,
        node: NodeId,
        samples: Vec<InfoHash>,
        /// Info hashes the node says it stores.
        num: Option<i64>,
        /// Seconds before that node should be asked again.
        interval: Option<i64>,
    },
    /// The put phase of a BEP 44 put ended: `acked` of `sent` nodes stored
    /// the item; `errors` are the refusals (node, BEP 44 code, message).
    ItemStored {
        lookup: LookupId,
        target: NodeId,
        sent: u32,
        acked: u32,
        errors: Vec<(SocketAddr, i64, String)>,
    },
}

/// Counters for health output and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub sent: u64,
    /// Queries from other nodes that we answered.
    pub queries_answered: u64,
    pub malformed: u64,
    pub rate_limited: u64,
    pub unexpected_responses: u64,
    pub timeouts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Lookup(LookupId),
    /// announce_peer or put, at the end of a lookup.
    Store(LookupId),
    Ping,
}

#[derive(Debug, Clone)]
struct Pending {
    to: SocketAddr,
    id: Option<NodeId>,
    purpose: Purpose,
    sent: Instant,
    soft_fired: bool,
}

/// How often background upkeep runs (refresh, rotation, re-bootstrap).
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);
/// Values returned per get_peers answer: fits one UDP packet.
const MAX_VALUES_PER_REPLY: usize = 50;
/// BEP 42: voters remembered, and votes needed to trust an external IP.
const MAX_IP_VOTERS: usize = 64;
const MIN_IP_VOTES: usize = 3;
/// Remembered IPs for rate limiting.
const RATE_TABLE: usize = 4096;
/// Wait at least this long between re-bootstrap attempts.
/// First wait before bootstrapping again when the table is empty; doubles
/// up to `REBOOTSTRAP_MAX` while it keeps failing.
const REBOOTSTRAP_FIRST: Duration = Duration::from_secs(5);
const REBOOTSTRAP_MAX: Duration = Duration::from_secs(120);

pub struct Node {
    cfg: Config,
    table: RoutingTable,
    store: PeerStore,
    items: ItemStore,
    tokens: Tokens,
    rng: Rng,
    pending: BTreeMap<u16, Pending>,
    lookups: BTreeMap<LookupId, Lookup>,
    next_lookup: u64,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    rate: BTreeMap<IpAddr, (f64, Instant)>,
    /// BEP 42: the address each answering node says we have (voter → ip).
    ip_votes: BTreeMap<IpAddr, IpAddr>,
    external_ip: Option<IpAddr>,
    /// BEP 51: nodes that asked not to be sampled again before a time.
    sample_backoff: BTreeMap<SocketAddr, Instant>,
    next_maintenance: Instant,
    last_bootstrap: Option<Instant>,
    rebootstrap_wait: Duration,
    /// Routers given to `bootstrap`, kept to start over from.
    routers: Vec<SocketAddr>,
    counters: Counters,
}

fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback(),
    }
}

impl Node {
    pub fn new(cfg: Config, id: NodeId, seed: [u8; 32], now: Instant) -> Self {
        let mut rng = Rng::new(seed);
        let secret = rng.bytes16();
        Self {
            table: RoutingTable::new(id, now),
            store: PeerStore::new(cfg.store),
            items: ItemStore::new(cfg.items),
            tokens: Tokens::new(secret, now),
            rng,
            pending: BTreeMap::new(),
            lookups: BTreeMap::new(),
            next_lookup: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            rate: BTreeMap::new(),
            sample_backoff: BTreeMap::new(),
            ip_votes: BTreeMap::new(),
            external_ip: None,
            next_maintenance: now + MAINTENANCE_EVERY,
            last_bootstrap: None,
            rebootstrap_wait: REBOOTSTRAP_FIRST,
            routers: Vec::new(),
            counters: Counters::default(),
            cfg,
        }
    }

    pub fn id(&self) -> NodeId {
        self.table.own_id()
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn store(&self) -> &PeerStore {
        &self.store
    }

    pub fn items(&self) -> &ItemStore {
        &self.items
    }

    /// BEP 42: our external IP, once the nodes we ask agree on it.
    pub fn external_ip(&self) -> Option<IpAddr> {
        self.external_ip
    }

    pub fn active_lookups(&self) -> usize {
        self.lookups.len()
    }

    // ---- output ----

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next moment `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_maintenance;
        for p in self.pending.values() {
            let due = if p.soft_fired {
                p.sent + self.cfg.hard_timeout
            } else {
                p.sent + self.cfg.soft_timeout
            };
            t = t.min(due);
        }
        Some(t)
    }

    // ---- commands ----

    /// Join the DHT through `nodes` (and what the table already holds).
    pub fn bootstrap(&mut self, now: Instant, nodes: &[SocketAddr]) -> LookupId {
        self.last_bootstrap = Some(now);
        for n in nodes {
            if !self.routers.contains(n) && self.routers.len() < 16 {
                self.routers.push(*n);
            }
        }
        let own = self.id();
        let lid = self.start_lookup(own, LookupKind::FindNode, now, nodes);
        self.drive(lid, now);
        lid
    }

    pub fn get_peers(&mut self, now: Instant, info_hash: InfoHash) -> LookupId {
        let lid = self.start_lookup(NodeId(info_hash.0), LookupKind::GetPeers, now, &[]);
        self.drive(lid, now);
        lid
    }

    /// Find the closest nodes, then announce our port (`None`: the port we
    /// send from, BEP 5 `implied_port`).
    pub fn announce(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        port: Option<u16>,
        seed: bool,
    ) -> LookupId {
        let lid = self.start_lookup(
            NodeId(info_hash.0),
            LookupKind::Announce { port, seed },
            now,
            &[],
        );
        self.drive(lid, now);
        lid
    }

    /// BEP 44: look up an immutable item by its hash.
    pub fn get_immutable(&mut self, now: Instant, target: NodeId) -> LookupId {
        let kind = LookupKind::GetItem {
            salt: None,
            seq: None,
        };
        let lid = self.start_lookup(target, kind, now, &[]);
        self.drive(lid, now);
        lid
    }

    /// BEP 44: look up the mutable item of `key` and `salt`; with `seq`,
    /// only versions newer than it are returned.
    pub fn get_mutable(
        &mut self,
        now: Instant,
        key: &[u8; 32],
        salt: &[u8],
        seq: Option<i64>,
    ) -> LookupId {
        let target = items::mutable_target(key, salt);
        let kind = LookupKind::GetItem {
            salt: Some(salt.to_vec()),
            seq,
        };
        let lid = self.start_lookup(target, kind, now, &[]);
        self.drive(lid, now);
        lid
    }

    /// BEP 44: find the nodes closest to the item's target and store it
    /// there. A mutable item must already be signed.
    pub fn put(&mut self, now: Instant, item: Item) -> LookupId {
        let target = item.target();
        let kind = LookupKind::PutItem {
            item: Box::new(item),
        };
        let lid = self.start_lookup(target, kind, now, &[]);
        self.drive(lid, now);
        lid
    }

    /// BEP 51: walk towards `target`, asking each node on the way for a
    /// sample of its info hashes (nodes still in their `interval` are
    /// only asked for nodes).
    pub fn sample(&mut self, now: Instant, target: NodeId) -> LookupId {
        let lid = self.start_lookup(target, LookupKind::Sample, now, &[]);
        self.drive(lid, now);
        lid
    }

    pub fn find_node(&mut self, now: Instant, target: NodeId) -> LookupId {
        let lid = self.start_lookup(target, LookupKind::FindNode, now, &[]);
        self.drive(lid, now);
        lid
    }

    pub fn ping(&mut self, now: Instant, addr: SocketAddr) {
        let q = Query::Ping { id: self.id() };
        self.send_query(now, addr, None, q, Purpose::Ping);
    }

    /// Add a node we know of (from a saved table) without verifying it.
    pub fn add_node(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        self.table.insert(id, addr, Heard::Query, now);
    }

    fn start_lookup(
        &mut self,
        target: NodeId,
        kind: LookupKind,
        now: Instant,
        extra: &[SocketAddr],
    ) -> LookupId {
        let lid = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let mut l = Lookup::new(lid, target, kind, now);
        let own = self.id();
        l.add_candidates(&own, self.table.closest(&target, self.cfg.k * 2, now));
        // Bootstrap nodes have unknown ids; they are asked first.
        let fallback: &[SocketAddr] = if self.table.is_empty() {
            &self.cfg.bootstrap
        } else {
            &[]
        };
        l.add_unknown(extra.iter().chain(fallback).copied());
        self.lookups.insert(lid, l);
        lid
    }

    // ---- input ----

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.counters.received += 1;
        if from.port() == 0 {
            self.counters.malformed += 1;
            return;
        }
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.counters.malformed += 1;
                // A malformed query gets a reason (BEP 5 203, BEP 44 205
                // and 207); a malformed response or error gets nothing.
                let tid = match &e {
                    KrpcError::UnknownMethod { transaction_id, .. } => Some(*transaction_id),
                    _ => query_transaction_id(bytes),
                };
                if let Some(tid) = tid {
                    if !self.cfg.read_only && self.allow(from.ip(), now) {
                        let code = match e {
                            KrpcError::BadLength { key: "v", .. } => error_code::MESSAGE_TOO_BIG,
                            KrpcError::BadLength { key: "salt", .. } => error_code::SALT_TOO_BIG,
                            _ => e.error_code(),
                        };
                        self.reply_error(from, tid, code, &e.to_string());
                    }
                }
                return;
            }
        };
        match msg.body {
            Body::Query(q) => self.on_query(now, from, msg.transaction_id, q, msg.read_only),
            Body::Response(r) => {
                let answered = self.on_response(now, from, &msg.transaction_id, Ok(r));
                if answered {
                    if let Some(ip) = msg.your_ip {
                        self.vote_external_ip(now, from.ip(), ip.ip());
                    }
                }
            }
            Body::Error { code, message } => {
                self.on_response(now, from, &msg.transaction_id, Err((code, message)));
            }
        }
    }

    /// Per-IP token bucket; loopback is exempt (tests put many nodes there).
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if is_local(ip) {
            return true;
        }
        let limit = f64::from(self.cfg.rate_limit.max(1));
        if !self.rate.contains_key(&ip) && self.rate.len() >= RATE_TABLE {
            // Forget the IP seen longest ago.
            if let Some(oldest) = self
                .rate
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            {
                self.rate.remove(&oldest);
            }
        }
        let (tokens, last) = self.rate.entry(ip).or_insert((limit, now));
        *tokens =
            (*tokens + now.saturating_duration_since(*last).as_secs_f64() * limit).min(limit * 2.0);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            self.counters.rate_limited += 1;
            false
        }
    }

    fn on_query(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tid: TransactionId,
        q: Query,
        read_only: bool,
    ) {
        let sender = q.id();
        if sender == self.id() {
            return;
        }
        if self.cfg.read_only || !self.allow(from.ip(), now) {
            return;
        }
        // BEP 43: read-only nodes are not added to routing tables.
        if !read_only {
            self.learn(now, sender, from, Heard::Query);
        }
        let own = self.id();
        let mut r = Response::new(own);
        match q {
            Query::Ping { .. } => {}
            Query::FindNode { target, want, .. } => {
                (r.nodes, r.nodes6) = self.nodes_for(&target, want, from, now);
            }
            Query::GetPeers {
                info_hash,
                want,
                scrape,
                ..
            } => {
                r.token = Token::new(&self.tokens.token_for(from.ip()));
                let start = self.rng.next_u64() as usize;
                r.values =
                    self.store
                        .peers(&info_hash, MAX_VALUES_PER_REPLY, from.is_ipv6(), now, start);
                (r.nodes, r.nodes6) = self.nodes_for(&NodeId(info_hash.0), want, from, now);
                if scrape {
                    if let Some((seeds, peers)) = self.store.scrape(&info_hash, now) {
                        r.bf_seeds = Some(Box::new(seeds));
                        r.bf_peers = Some(Box::new(peers));
                    }
                }
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                seed,
                ..
            } => {
                if !self.tokens.verify(from.ip(), token.as_bytes()) {
                    self.reply_error(from, tid, error_code::PROTOCOL, "bad token");
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                if port == 0 {
                    self.reply_error(from, tid, error_code::PROTOCOL, "port 0");
                    return;
                }
                let peer = SocketAddr::new(from.ip(), port);
                self.store.announce(info_hash, peer, seed, now);
                self.events
                    .push_back(Event::IncomingAnnounce { info_hash, peer });
            }
            Query::SampleInfohashes { target, .. } => {
                (r.nodes, r.nodes6) = self.nodes_for(&target, Want::NONE, from, now);
                let start = self.rng.next_u64() as usize;
                r.samples = Some(self.store.sample(20, start));
                r.num = Some(self.store.num_torrents() as i64);
                r.interval = Some(60);
            }
            Query::Get { target, seq, .. } => {
                r.token = Token::new(&self.tokens.token_for(from.ip()));
                (r.nodes, r.nodes6) = self.nodes_for(&target, Want::NONE, from, now);
                match self.items.get(&target, now) {
                    Some(Item::Immutable(v)) => r.v = Some(v.clone()),
                    Some(Item::Mutable(m)) => {
                        r.seq = Some(m.seq);
                        // BEP 44: with `seq`, only a newer version is sent.
                        if seq.is_none_or(|s| m.seq > s) {
                            r.k = Some(m.key);
                            r.sig = Some(m.signature);
                            r.v = Some(m.value.clone());
                        }
                    }
                    None => {}
                }
            }
            Query::Put {
                token,
                value,
                mutable,
                ..
            } => {
                if !self.tokens.verify(from.ip(), token.as_bytes()) {
                    self.reply_error(from, tid, error_code::PROTOCOL, "bad token");
                    return;
                }
                match mutable {
                    None => {
                        self.items.put_immutable(value, now);
                    }
                    Some(MutablePut {
                        key,
                        signature,
                        seq,
                        salt,
                        cas,
                    }) => {
                        let item = MutableItem {
                            key,
                            salt,
                            seq,
                            value,
                            signature,
                        };
                        if let Err(e) = self.items.put_mutable(item, cas, now) {
                            self.reply_error(from, tid, e.code(), &e.to_string());
                            return;
                        }
                    }
                }
            }
        }
        self.counters.queries_answered += 1;
        let mut msg = Message::response(tid, r);
        msg.your_ip = Some(from);
        self.send(from, &msg);
    }

    /// The `k` closest nodes of each family asked for (BEP 32): those in
    /// `want`, or without it the family the query came over.
    fn nodes_for(
        &self,
        target: &NodeId,
        want: Want,
        from: SocketAddr,
        now: Instant,
    ) -> (Vec<CompactNode>, Vec<CompactNode6>) {
        let want = if want.is_given() {
            want
        } else {
            Want {
                v4: from.is_ipv4(),
                v6: from.is_ipv6(),
            }
        };
        let k = self.cfg.k;
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        // Both families share the table; ask for enough to fill each.
        for (id, addr) in self.table.closest(target, k * 4, now) {
            match addr {
                SocketAddr::V4(a) if want.v4 && v4.len() < k => {
                    v4.push(CompactNode { id, addr: a })
                }
                SocketAddr::V6(a) if want.v6 && v6.len() < k => {
                    v6.push(CompactNode6 { id, addr: a })
                }
                _ => {}
            }
        }
        (v4, v6)
    }

    fn learn(&mut self, now: Instant, id: NodeId, addr: SocketAddr, heard: Heard) {
        if self.cfg.enforce_node_id && !crate::secure_id::is_valid(&id, addr.ip()) {
            return;
        }
        if let Inserted::Cached {
            ping: Some((victim, vaddr)),
        } = self.table.insert(id, addr, heard, now)
        {
            // Is the stalest node of the full bucket still there?
            let already = self.pending.values().any(|p| p.to == vaddr);
            if !already {
                let q = Query::Ping { id: self.id() };
                self.send_query(now, vaddr, Some(victim), q, Purpose::Ping);
            }
        }
    }

    fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tid: &TransactionId,
        r: Result<Response, (i64, String)>,
    ) -> bool {
        let Some(key) = tid.as_u16() else {
            self.counters.unexpected_responses += 1;
            return false;
        };
        // Only the address we asked may answer.
        match self.pending.get(&key) {
            Some(p) if p.to == from => {}
            _ => {
                self.counters.unexpected_responses += 1;
                return false;
            }
        }
        let Some(p) = self.pending.remove(&key) else {
            return false;
        };
        let rtt = now.saturating_duration_since(p.sent);
        let r = match r {
            Ok(r) => r,
            Err(error) => {
                // A KRPC error: the node is alive but gave nothing.
                match p.purpose {
                    Purpose::Lookup(lid) => {
                        if let Some(l) = self.lookups.get_mut(&lid) {
                            l.on_failure(from);
                        }
                        self.drive(lid, now);
                    }
                    Purpose::Store(lid) => self.store_reply(lid, from, Err(error), now),
                    Purpose::Ping => {}
                }
                return true;
            }
        };
        if r.id == self.id() {
            return false;
        }
        self.learn(now, r.id, from, Heard::Response);
        match p.purpose {
            Purpose::Ping => self.events.push_back(Event::Pong {
                addr: from,
                id: r.id,
                rtt,
            }),
            Purpose::Store(lid) => self.store_reply(lid, from, Ok(()), now),
            Purpose::Lookup(lid) => {
                let own = self.id();
                if let Some(l) = self.lookups.get_mut(&lid) {
                    l.on_response(from, r.token, now, r.id);
                    let common = l.target.common_prefix_len(&r.id);
                    self.events.push_back(Event::Hop {
                        lookup: lid,
                        node: r.id,
                        addr: from,
                        rtt,
                        common_bits: common,
                        nodes: r.nodes.len() + r.nodes6.len(),
                        values: r.values.len(),
                    });
                    // Only nodes we can reach: of the family this answer came over.
                    if from.is_ipv4() {
                        l.add_candidates(
                            &own,
                            r.nodes.iter().map(|n| (n.id, SocketAddr::V4(n.addr))),
                        );
                    } else {
                        l.add_candidates(
                            &own,
                            r.nodes6.iter().map(|n| (n.id, SocketAddr::V6(n.addr))),
                        );
                    }
                    if matches!(l.kind, LookupKind::GetPeers | LookupKind::Announce { .. }) {
                        let fresh: Vec<SocketAddr> = r
                            .values
                            .iter()
                            .copied()
                            .filter(|v| v.port() != 0 && l.peers.insert(*v))
                            .collect();
                        if !fresh.is_empty() {
                            l.stats.peers += fresh.len() as u32;
                            self.events.push_back(Event::Peers {
                                lookup: lid,
                                info_hash: InfoHash(l.target.0),
                                peers: fresh,
                            });
                        }
                    }
                    if l.kind == LookupKind::Sample {
                        if let Some(samples) = r.samples.clone() {
                            // BEP 51 allows up to 6 hours.
                            let wait = r.interval.unwrap_or(0).clamp(0, 21_600) as u64;
                            if wait > 0 {
                                if self.sample_backoff.len() >= RATE_TABLE {
                                    self.sample_backoff.retain(|_, until| *until > now);
                                }
                                if self.sample_backoff.len() < RATE_TABLE {
                                    self.sample_backoff
                                        .insert(from, now + Duration::from_secs(wait));
                                }
                            }
                            self.events.push_back(Event::Samples {
                                lookup: lid,
                                from,
                                node: r.id,
                                samples,
                                num: r.num,
                                interval: r.interval,
                            });
                        }
                    }
                    if let LookupKind::GetItem { salt, .. } = &l.kind {
                        if let Some(item) = checked_item(&l.target, salt.as_deref(), &r) {
                            let newer = match (item.seq(), l.best_seq) {
                                (_, None) => true,
                                (Some(s), Some(best)) => s > best,
                                (None, Some(_)) => false,
                            };
                            if newer {
                                l.best_seq = Some(item.seq().unwrap_or(0));
                                let immutable = item.seq().is_none();
                                self.events.push_back(Event::Item {
                                    lookup: lid,
                                    item,
                                    from,
                                });
                                if immutable {
                                    // Its hash proves it: nothing better to find.
                                    self.finish(lid, now);
                                    return true;
                                }
                            }
                        } else if r.v.is_some() {
                            l.stats.bad_items += 1;
                        }
                    }
                }
                self.drive(lid, now);
            }
        }
        true
    }

    /// BEP 42: count what answering nodes say our IP is (one vote per
    /// voter IP, local addresses ignored); a clear winner becomes our
    /// external IP, and our id is made valid for it.
    fn vote_external_ip(&mut self, now: Instant, voter: IpAddr, ours: IpAddr) {
        if !self.cfg.secure_id || crate::secure_id::is_exempt(ours) {
            return;
        }
        if self.ip_votes.get(&voter) == Some(&ours) {
            // The same vote again: the tally, and so the verdict, stand.
            return;
        }
        if !self.ip_votes.contains_key(&voter) && self.ip_votes.len() >= MAX_IP_VOTERS {
            if let Some(first) = self.ip_votes.keys().next().copied() {
                self.ip_votes.remove(&first);
            }
        }
        self.ip_votes.insert(voter, ours);
        let mut tally: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for ip in self.ip_votes.values() {
            *tally.entry(*ip).or_default() += 1;
        }
        let mut ranked: Vec<(usize, IpAddr)> = tally.into_iter().map(|(ip, n)| (n, ip)).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&(votes, ip)) = ranked.first() else {
            return;
        };
        let runner_up = ranked.get(1).map_or(0, |r| r.0);
        if votes < MIN_IP_VOTES || votes < 2 * runner_up || self.external_ip == Some(ip) {
            return;
        }
        self.external_ip = Some(ip);
        let mut id = self.id();
        if !crate::secure_id::is_valid(&id, ip) {
            id = crate::secure_id::secure_id(ip, self.rng.bytes20());
            self.table.set_own_id(id, now);
        }
        self.events.push_back(Event::ExternalIp { ip, id });
    }

    fn store_reply(
        &mut self,
        lid: LookupId,
        from: SocketAddr,
        result: Result<(), (i64, String)>,
        now: Instant,
    ) {
        let k = self.cfg.k;
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        match result {
            Ok(()) => {
                if let Some((_, acked)) = l.announcing.as_mut() {
                    *acked += 1;
                }
            }
            Err((code, message)) if l.store_errors.len() < k => {
                l.store_errors.push((from, code, message));
            }
            Err(_) => {}
        }
        let still = self
            .pending
            .values()
            .any(|p| p.purpose == Purpose::Store(lid));
        if !still {
            self.finish(lid, now);
        }
    }

    /// Advance a lookup: send what it wants, or finish it.
    fn drive(&mut self, lid: LookupId, now: Instant) {
        let (alpha, k) = (self.cfg.alpha, self.cfg.k);
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        if l.finished || l.announcing.is_some() {
            return;
        }
        let queries = l.next_queries(alpha, k, now);
        let target = l.target;
        let kind = l.kind.clone();
        let converged = queries.is_empty() && (l.is_converged(k) || !l.in_flight());
        for (id, addr) in queries {
            let own = self.id();
            let q = match kind {
                LookupKind::FindNode => Query::FindNode {
                    id: own,
                    target,
                    want: Want::NONE,
                },
                LookupKind::GetPeers | LookupKind::Announce { .. } => Query::GetPeers {
                    id: own,
                    info_hash: InfoHash(target.0),
                    want: Want::NONE,
                    scrape: false,
                    no_seed: false,
                },
                LookupKind::GetItem { seq, .. } => Query::Get {
                    id: own,
                    target,
                    seq,
                },
                LookupKind::PutItem { .. } => Query::Get {
                    id: own,
                    target,
                    seq: None,
                },
                LookupKind::Sample
                    if self
                        .sample_backoff
                        .get(&addr)
                        .is_some_and(|until| *until > now) =>
                {
                    Query::FindNode {
                        id: own,
                        target,
                        want: Want::NONE,
                    }
                }
                LookupKind::Sample => Query::SampleInfohashes { id: own, target },
            };
            self.send_query(now, addr, id, q, Purpose::Lookup(lid));
        }
        if !converged {
            return;
        }
        if !kind.stores() {
            self.finish(lid, now);
            return;
        }
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        let targets = l.closest_responded(k);
        l.announcing = Some((0, 0));
        let own = self.id();
        let mut sent = 0;
        for (id, addr, token) in targets {
            let Some(token) = token else { continue };
            let q = match &kind {
                LookupKind::Announce { port, seed } => Query::AnnouncePeer {
                    id: own,
                    info_hash: InfoHash(target.0),
                    port: port.unwrap_or(0),
                    implied_port: port.is_none(),
                    token,
                    seed: *seed,
                },
                LookupKind::PutItem { item } => put_query(own, token, item),
                _ => continue,
            };
            self.send_query(now, addr, Some(id), q, Purpose::Store(lid));
            sent += 1;
        }
        if let Some(l) = self.lookups.get_mut(&lid) {
            l.announcing = Some((sent, 0));
        }
        if sent == 0 {
            self.finish(lid, now);
        }
    }

    fn finish(&mut self, lid: LookupId, now: Instant) {
        let Some(mut l) = self.lookups.remove(&lid) else {
            return;
        };
        l.finished = true;
        match (&l.kind, l.announcing) {
            (LookupKind::Announce { .. }, Some((sent, acked))) => {
                self.events.push_back(Event::Announced {
                    lookup: lid,
                    info_hash: InfoHash(l.target.0),
                    sent,
                    acked,
                });
            }
            (LookupKind::PutItem { .. }, Some((sent, acked))) => {
                self.events.push_back(Event::ItemStored {
                    lookup: lid,
                    target: l.target,
                    sent,
                    acked,
                    errors: std::mem::take(&mut l.store_errors),
                });
            }
            _ => {}
        }
        let closest = l
            .closest_responded(self.cfg.k)
            .into_iter()
            .map(|(id, addr, _)| (id, addr))
            .collect();
        self.events.push_back(Event::LookupDone {
            lookup: lid,
            target: l.target,
            stats: l.stats.clone(),
            closest,
            duration: now.saturating_duration_since(l.started),
        });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let (soft, hard) = (self.cfg.soft_timeout, self.cfg.hard_timeout);
        let mut touched = Vec::new();
        let keys: Vec<u16> = self.pending.keys().copied().collect();
        for key in keys {
            let Some(p) = self.pending.get_mut(&key) else {
                continue;
            };
            if now >= p.sent + hard {
                let Some(p) = self.pending.remove(&key) else {
                    continue;
                };
                self.counters.timeouts += 1;
                if let Some(id) = p.id {
                    self.table.failed(&id, now);
                }
                match p.purpose {
                    Purpose::Lookup(lid) => {
                        if let Some(l) = self.lookups.get_mut(&lid) {
                            l.on_failure(p.to);
                        }
                        touched.push(lid);
                    }
                    Purpose::Store(lid) => {
                        let timeout = (error_code::GENERIC, "timed out".to_owned());
                        self.store_reply(lid, p.to, Err(timeout), now)
                    }
                    Purpose::Ping => self.events.push_back(Event::PingFailed { addr: p.to }),
                }
            } else if !p.soft_fired && now >= p.sent + soft {
                p.soft_fired = true;
                if let Purpose::Lookup(lid) = p.purpose {
                    let to = p.to;
                    if let Some(l) = self.lookups.get_mut(&lid) {
                        l.on_soft_timeout(to);
                    }
                    touched.push(lid);
                }
            }
        }
        touched.sort();
        touched.dedup();
        for lid in touched {
            self.drive(lid, now);
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + MAINTENANCE_EVERY;
            self.maintain(now);
        }
    }

    fn maintain(&mut self, now: Instant) {
        let fresh = self.rng.bytes16();
        self.tokens.maybe_rotate(now, fresh);
        self.store.expire(now);
        self.items.expire(now);
        self.sample_backoff.retain(|_, until| *until > now);
        // Start over when no node has answered us lately: every node went
        // silent (sleep, network change), or the first bootstrap failed and
        // all we know are nodes that queried us (a node that only hears
        // others never walks the network, and looks up in a corner).
        let alive = self.table.count(NodeState::Good, now);
        if alive > 0 {
            self.rebootstrap_wait = REBOOTSTRAP_FIRST;
        }
        let can_retry = self
            .last_bootstrap
            .is_none_or(|t| now.saturating_duration_since(t) >= self.rebootstrap_wait);
        let mut routers = self.cfg.bootstrap.clone();
        routers.extend(self.routers.iter().copied());
        if alive == 0 && self.lookups.is_empty() && can_retry && !routers.is_empty() {
            self.rebootstrap_wait = (self.rebootstrap_wait * 2).min(REBOOTSTRAP_MAX);
            self.bootstrap(now, &routers);
            return;
        }
        // Refresh one stale bucket per pass.
        if let Some(bi) = self.table.stale_buckets(now).first().copied() {
            if !self.table.is_empty() {
                let target = self.table.random_id_in_bucket(bi, self.rng.bytes20());
                self.table.touch_bucket(bi, now);
                self.find_node(now, target);
            }
        }
    }

    // ---- sending ----

    fn next_tid(&mut self) -> u16 {
        loop {
            let t = self.rng.next_u64() as u16;
            if !self.pending.contains_key(&t) {
                return t;
            }
        }
    }

    fn send_query(
        &mut self,
        now: Instant,
        to: SocketAddr,
        id: Option<NodeId>,
        q: Query,
        purpose: Purpose,
    ) {
        let t = self.next_tid();
        let msg = Message::query(TransactionId::from_u16(t), q);
        self.pending.insert(
            t,
            Pending {
                to,
                id,
                purpose,
                sent: now,
                soft_fired: false,
            },
        );
        self.send(to, &msg);
    }

    fn reply_error(&mut self, to: SocketAddr, tid: TransactionId, code: i64, text: &str) {
        let msg = Message::error(tid, code, text);
        self.send(to, &msg);
    }

    fn send(&mut self, to: SocketAddr, msg: &Message) {
        let mut msg = msg.clone();
        msg.version = Version::new(&self.cfg.version);
        msg.read_only = self.cfg.read_only;
        let mut payload = Vec::with_capacity(256);
        msg.encode(&mut payload);
        self.counters.sent += 1;
        self.out.push_back(Transmit { to, payload });
    }
}

/// The `put` that stores `item` with `token`.
fn put_query(id: NodeId, token: Token, item: &Item) -> Query {
    match item {
        Item::Immutable(v) => Query::Put {
            id,
            token,
            value: v.clone(),
            mutable: None,
        },
        Item::Mutable(m) => Query::Put {
            id,
            token,
            value: m.value.clone(),
            mutable: Some(MutablePut {
                key: m.key,
                signature: m.signature,
                seq: m.seq,
                salt: m.salt.clone(),
                cas: None,
            }),
        },
    }
}

/// The item in a `get` answer, if it is the one looked up: an immutable
/// value must hash to the target; a mutable one must carry a key that,
/// with our salt, hashes to the target, and a valid signature.
fn checked_item(target: &NodeId, salt: Option<&[u8]>, r: &Response) -> Option<Item> {
    let v = r.v.clone()?;
    match salt {
        None => (items::immutable_target(&v) == *target).then_some(Item::Immutable(v)),
        Some(salt) => {
            let m = MutableItem {
                key: r.k?,
                salt: salt.to_vec(),
                seq: r.seq?,
                value: v,
                signature: r.sig?,
            };
            (m.target() == *target && m.verify().is_ok()).then_some(Item::Mutable(m))
        }
    }
}
