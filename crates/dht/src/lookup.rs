//! An iterative lookup (find_node, get_peers or a BEP 44 get) as plain data
//! owned by the node: candidates sorted by XOR distance, `alpha` queries in flight, a
//! soft timeout that frees a slot early and a hard one that drops the node.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::NodeId;
use crate::items::Item;
use crate::krpc::Token;

/// Candidates kept per lookup (closest first); farther ones are dropped.
const MAX_CANDIDATES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupKind {
    FindNode,
    GetPeers,
    /// get_peers, then announce_peer to the closest nodes that gave a token.
    Announce {
        port: Option<u16>,
        seed: bool,
    },
    /// BEP 44 `get`. `salt` is `Some` for a mutable item (whose target is
    /// SHA-1 of the key and this salt), `None` for an immutable one; `seq`
    /// asks only for versions newer than it.
    GetItem {
        salt: Option<Vec<u8>>,
        seq: Option<i64>,
    },
    /// BEP 44 `get` to find the closest nodes and their tokens, then `put`.
    PutItem {
        item: Box<Item>,
    },
    /// BEP 51: walk towards the target asking each node for a sample of
    /// the info hashes it stores.
    Sample,
}

impl LookupKind {
    /// Lookups that end by storing something on the closest nodes.
    pub fn stores(&self) -> bool {
        matches!(self, Self::Announce { .. } | Self::PutItem { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateState {
    Fresh,
    /// Query in flight; `slow` once its soft timeout passed.
    Querying {
        slow: bool,
    },
    Responded,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub distance: [u8; 20],
    pub state: CandidateState,
    pub token: Option<Token>,
    pub sent_at: Option<Instant>,
    /// A bootstrap address whose id we do not know yet.
    pub placeholder: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupStats {
    pub queries: u32,
    pub responses: u32,
    pub timeouts: u32,
    pub peers: u32,
    /// BEP 44 values that failed their hash or signature check.
    pub bad_items: u32,
}

#[derive(Debug, Clone)]
pub struct Lookup {
    pub id: LookupId,
    pub target: NodeId,
    pub kind: LookupKind,
    pub started: Instant,
    candidates: Vec<Candidate>,
    seen: HashSet<SocketAddr>,
    pub peers: HashSet<SocketAddr>,
    pub stats: LookupStats,
    /// Store phase (announce_peer or put): queries sent and answered.
    pub announcing: Option<(u32, u32)>,
    /// Store phase: the nodes that refused, with their error.
    pub store_errors: Vec<(SocketAddr, i64, String)>,
    /// BEP 44 get: the newest valid sequence number seen (mutable), or
    /// `Some(0)` once an immutable value was found.
    pub best_seq: Option<i64>,
    pub finished: bool,
}

fn xor(a: &NodeId, b: &NodeId) -> [u8; 20] {
    let mut d = [0u8; 20];
    for (i, o) in d.iter_mut().enumerate() {
        *o = a.0[i] ^ b.0[i];
    }
    d
}

impl Lookup {
    pub fn new(id: LookupId, target: NodeId, kind: LookupKind, now: Instant) -> Self {
        Self {
            id,
            target,
            kind,
            started: now,
            candidates: Vec::new(),
            seen: HashSet::new(),
            peers: HashSet::new(),
            stats: LookupStats::default(),
            announcing: None,
            store_errors: Vec::new(),
            best_seq: None,
            finished: false,
        }
    }

    /// Offer nodes (from the table or from a response). Duplicates by
    /// address and our own id are ignored.
    pub fn add_candidates(
        &mut self,
        own: &NodeId,
        nodes: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) {
        for (id, addr) in nodes {
            if id == *own || addr.port() == 0 || !self.seen.insert(addr) {
                continue;
            }
            let distance = xor(&id, &self.target);
            let pos = self.candidates.partition_point(|c| c.distance <= distance);
            if pos >= MAX_CANDIDATES {
                continue;
            }
            self.candidates.insert(
                pos,
                Candidate {
                    id,
                    addr,
                    distance,
                    state: CandidateState::Fresh,
                    token: None,
                    sent_at: None,
                    placeholder: false,
                },
            );
            self.candidates.truncate(MAX_CANDIDATES);
        }
    }

    /// Addresses with unknown ids (bootstrap routers): asked first; their
    /// answer reveals the id and puts them in their place.
    pub fn add_unknown(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        for addr in addrs {
            if addr.port() == 0 || !self.seen.insert(addr) {
                continue;
            }
            self.candidates.insert(
                0,
                Candidate {
                    id: self.target,
                    addr,
                    distance: [0; 20],
                    state: CandidateState::Fresh,
                    token: None,
                    sent_at: None,
                    placeholder: true,
                },
            );
        }
        self.candidates.truncate(MAX_CANDIDATES);
    }

    /// Queries counting against `alpha` (not yet past their soft timeout).
    fn active(&self) -> usize {
        self.candidates
            .iter()
            .filter(|c| c.state == CandidateState::Querying { slow: false })
            .count()
    }

    /// The next nodes to query: the closest fresh ones, while fewer than
    /// `alpha` queries are active, and only among the `k` closest live
    /// candidates (farther ones cannot improve the result).
    pub fn next_queries(
        &mut self,
        alpha: usize,
        k: usize,
        now: Instant,
    ) -> Vec<(Option<NodeId>, SocketAddr)> {
        let mut out = Vec::new();
        let mut active = self.active();
        let mut live_seen = 0;
        for c in self.candidates.iter_mut() {
            if active >= alpha || live_seen >= k {
                break;
            }
            match c.state {
                CandidateState::Failed => continue,
                CandidateState::Fresh => {
                    c.state = CandidateState::Querying { slow: false };
                    c.sent_at = Some(now);
                    active += 1;
                    out.push(((!c.placeholder).then_some(c.id), c.addr));
                }
                _ => {}
            }
            live_seen += 1;
        }
        self.stats.queries += out.len() as u32;
        out
    }

    /// `addr` answered as `real_id`. Returns the round-trip time when it
    /// was being queried. A stand-in id (a bootstrap node) is replaced by
    /// the real one, and the candidate moves to its place.
    pub fn on_response(
        &mut self,
        addr: SocketAddr,
        token: Option<Token>,
        now: Instant,
        real_id: NodeId,
    ) -> Option<Duration> {
        let pos = self.candidates.iter().position(|c| c.addr == addr)?;
        if !matches!(self.candidates[pos].state, CandidateState::Querying { .. }) {
            return None;
        }
        let mut c = self.candidates.remove(pos);
        c.state = CandidateState::Responded;
        c.token = token;
        if c.placeholder || c.id != real_id {
            c.id = real_id;
            c.distance = xor(&real_id, &self.target);
            c.placeholder = false;
        }
        let rtt = c
            .sent_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let at = self
            .candidates
            .partition_point(|x| x.distance <= c.distance);
        self.candidates.insert(at, c);
        self.stats.responses += 1;
        Some(rtt)
    }

    pub fn on_soft_timeout(&mut self, addr: SocketAddr) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            if c.state == (CandidateState::Querying { slow: false }) {
                c.state = CandidateState::Querying { slow: true };
            }
        }
    }

    pub fn on_failure(&mut self, addr: SocketAddr) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            if matches!(c.state, CandidateState::Querying { .. }) {
                c.state = CandidateState::Failed;
                self.stats.timeouts += 1;
            }
        }
    }

    /// Done when the `k` closest live candidates have all answered, or
    /// nothing is left to ask and nothing is in flight.
    pub fn is_converged(&self, k: usize) -> bool {
        let mut live = 0;
        for c in &self.candidates {
            match c.state {
                CandidateState::Failed => continue,
                CandidateState::Responded => live += 1,
                CandidateState::Fresh | CandidateState::Querying { .. } => return false,
            }
            if live >= k {
                return true;
            }
        }
        true
    }

    /// Any query still outstanding (fast or slow)?
    pub fn in_flight(&self) -> bool {
        self.candidates
            .iter()
            .any(|c| matches!(c.state, CandidateState::Querying { .. }))
    }

    /// The `k` closest nodes that answered, with their tokens.
    pub fn closest_responded(&self, k: usize) -> Vec<(NodeId, SocketAddr, Option<Token>)> {
        self.candidates
            .iter()
            .filter(|c| c.state == CandidateState::Responded)
            .take(k)
            .map(|c| (c.id, c.addr, c.token))
            .collect()
    }

    pub fn candidate(&self, addr: SocketAddr) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.addr == addr)
    }
}
