//! The Kademlia routing table of BEP 5: buckets of K nodes, split only
//! where our own id falls, node states good / questionable / bad, and a
//! replacement cache per bucket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::NodeId;

/// Nodes per bucket (BEP 5).
pub const K: usize = 8;
/// A node that answered within this time is good.
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// Consecutive failed queries after which a node is bad.
pub const MAX_FAILS: u32 = 2;
/// A bucket unchanged this long should be refreshed.
pub const REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Good,
    Questionable,
    Bad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: NodeId,
    pub addr: SocketAddr,
    /// Last time it answered one of our queries.
    pub last_response: Option<Instant>,
    /// Last time we heard anything from it.
    pub last_seen: Instant,
    pub fails: u32,
}

impl Entry {
    pub fn state(&self, now: Instant) -> NodeState {
        if self.fails >= MAX_FAILS {
            NodeState::Bad
        } else if self
            .last_response
            .is_some_and(|t| now.saturating_duration_since(t) < GOOD_FOR)
        {
            NodeState::Good
        } else {
            NodeState::Questionable
        }
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    nodes: Vec<Entry>,
    replacements: Vec<Entry>,
    last_changed: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Self {
            nodes: Vec::with_capacity(K),
            replacements: Vec::new(),
            last_changed: now,
        }
    }
}

/// How we heard from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// It answered a query of ours: verified.
    Response,
    /// It queried us (or was named by another node): not verified.
    Query,
}

/// What `insert` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    Added,
    Updated,
    /// The bucket is full of live nodes; the node went to the replacement
    /// cache. Pinging `ping` (the least recently seen questionable node)
    /// decides whether it stays.
    Cached {
        ping: Option<(NodeId, SocketAddr)>,
    },
    Rejected(&'static str),
}

#[derive(Debug, Clone)]
pub struct RoutingTable {
    own: NodeId,
    buckets: Vec<Bucket>,
}

fn common_prefix_len(a: &NodeId, b: &NodeId) -> usize {
    for (i, (x, y)) in a.0.iter().zip(b.0.iter()).enumerate() {
        let d = x ^ y;
        if d != 0 {
            return i * 8 + d.leading_zeros() as usize;
        }
    }
    160
}

fn distance(a: &NodeId, b: &NodeId) -> [u8; 20] {
    let mut d = [0u8; 20];
    for (i, o) in d.iter_mut().enumerate() {
        *o = a.0[i] ^ b.0[i];
    }
    d
}

impl RoutingTable {
    pub fn new(own: NodeId, now: Instant) -> Self {
        Self {
            own,
            buckets: vec![Bucket::new(now)],
        }
    }

    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// Change our id (BEP 42: once we learn our external address).
    pub fn set_own_id(&mut self, id: NodeId, now: Instant) {
        let nodes: Vec<Entry> = self.iter().copied().collect();
        self.own = id;
        self.buckets = vec![Bucket::new(now)];
        for e in nodes {
            let heard = if e.last_response.is_some() {
                Heard::Response
            } else {
                Heard::Query
            };
            self.insert(e.id, e.addr, heard, now);
        }
    }

    fn bucket_index(&self, id: &NodeId) -> usize {
        common_prefix_len(&self.own, id).min(self.buckets.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn num_buckets(&self) -> usize {
        self.buckets.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }

    pub fn count(&self, state: NodeState, now: Instant) -> usize {
        self.iter().filter(|e| e.state(now) == state).count()
    }

    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.buckets[self.bucket_index(id)]
            .nodes
            .iter()
            .find(|e| e.id == *id)
    }

    /// Learn about a node. Never stores our own id, port 0, or a second id
    /// for an address already in the table.
    pub fn insert(&mut self, id: NodeId, addr: SocketAddr, heard: Heard, now: Instant) -> Inserted {
        if id == self.own {
            return Inserted::Rejected("our own id");
        }
        if addr.port() == 0 {
            return Inserted::Rejected("port 0");
        }
        // Split until the node's bucket has room or cannot split further.
        loop {
            let bi = self.bucket_index(&id);
            let last = bi == self.buckets.len() - 1;
            let bucket = &mut self.buckets[bi];
            if let Some(e) = bucket.nodes.iter_mut().find(|e| e.id == id) {
                if e.addr != addr {
                    // Same id from another address: keep the one we know
                    // unless it has stopped answering.
                    if e.state(now) != NodeState::Bad {
                        return Inserted::Rejected("id already known at another address");
                    }
                    e.addr = addr;
                    e.last_response = None;
                }
                e.last_seen = now;
                if heard == Heard::Response {
                    e.last_response = Some(now);
                    e.fails = 0;
                }
                return Inserted::Updated;
            }
            let addr_taken = self
                .buckets
                .iter()
                .any(|b| b.nodes.iter().any(|e| e.addr == addr));
            if addr_taken {
                return Inserted::Rejected("address already in the table with another id");
            }
            let bucket = &mut self.buckets[bi];
            let entry = Entry {
                id,
                addr,
                last_response: (heard == Heard::Response).then_some(now),
                last_seen: now,
                fails: 0,
            };
            if bucket.nodes.len() < K {
                bucket.nodes.push(entry);
                bucket.last_changed = now;
                bucket.replacements.retain(|r| r.id != id);
                return Inserted::Added;
            }
            // Full: replace a bad node first.
            if let Some(bad) = bucket
                .nodes
                .iter_mut()
                .find(|e| e.state(now) == NodeState::Bad)
            {
                *bad = entry;
                bucket.last_changed = now;
                return Inserted::Added;
            }
            if last && self.buckets.len() < 160 {
                self.split(now);
                continue;
            }
            let bucket = &mut self.buckets[bi];
            bucket.replacements.retain(|r| r.id != id && r.addr != addr);
            if bucket.replacements.len() >= K {
                bucket.replacements.remove(0);
            }
            bucket.replacements.push(entry);
            let ping = bucket
                .nodes
                .iter()
                .filter(|e| e.state(now) == NodeState::Questionable)
                .min_by_key(|e| e.last_seen)
                .map(|e| (e.id, e.addr));
            return Inserted::Cached { ping };
        }
    }

    fn split(&mut self, now: Instant) {
        let depth = self.buckets.len();
        let mut new = Bucket::new(now);
        let Some(last) = self.buckets.last_mut() else {
            return;
        };
        let own = self.own;
        let (stay, go): (Vec<Entry>, Vec<Entry>) = last
            .nodes
            .drain(..)
            .partition(|e| common_prefix_len(&own, &e.id) < depth);
        last.nodes = stay;
        new.nodes = go;
        let (stay, go): (Vec<Entry>, Vec<Entry>) = last
            .replacements
            .drain(..)
            .partition(|e| common_prefix_len(&own, &e.id) < depth);
        last.replacements = stay;
        new.replacements = go;
        self.buckets.push(new);
    }

    /// A query to `id` timed out. A bad node is swapped for the freshest
    /// replacement, if there is one.
    pub fn failed(&mut self, id: &NodeId, now: Instant) {
        let bi = self.bucket_index(id);
        let bucket = &mut self.buckets[bi];
        let Some(pos) = bucket.nodes.iter().position(|e| e.id == *id) else {
            bucket.replacements.retain(|r| r.id != *id);
            return;
        };
        bucket.nodes[pos].fails += 1;
        if bucket.nodes[pos].state(now) == NodeState::Bad {
            if let Some(r) = bucket.replacements.pop() {
                bucket.nodes[pos] = r;
                bucket.last_changed = now;
            }
        }
    }

    /// Forget a node entirely (it sent us garbage, for example).
    pub fn remove(&mut self, id: &NodeId) {
        let bi = self.bucket_index(id);
        let bucket = &mut self.buckets[bi];
        bucket.nodes.retain(|e| e.id != *id);
        bucket.replacements.retain(|e| e.id != *id);
        if let Some(r) = bucket.replacements.pop() {
            bucket.nodes.push(r);
        }
    }

    /// The `n` nodes closest to `target` that are not bad, closest first.
    pub fn closest(&self, target: &NodeId, n: usize, now: Instant) -> Vec<(NodeId, SocketAddr)> {
        let mut all: Vec<(&Entry, [u8; 20])> = self
            .iter()
            .filter(|e| e.state(now) != NodeState::Bad)
            .map(|e| (e, distance(&e.id, target)))
            .collect();
        all.sort_unstable_by_key(|a| a.1);
        all.into_iter()
            .take(n)
            .map(|(e, _)| (e.id, e.addr))
            .collect()
    }

    /// Buckets not changed for `REFRESH_AFTER`, as (index, prefix length):
    /// a lookup for a random id in each refreshes it.
    pub fn stale_buckets(&self, now: Instant) -> Vec<usize> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| now.saturating_duration_since(b.last_changed) >= REFRESH_AFTER)
            .map(|(i, _)| i)
            .collect()
    }

    /// Mark a bucket refreshed (a lookup into it was started).
    pub fn touch_bucket(&mut self, index: usize, now: Instant) {
        if let Some(b) = self.buckets.get_mut(index) {
            b.last_changed = now;
        }
    }

    /// An id that falls into bucket `index`, from caller-supplied random bytes.
    pub fn random_id_in_bucket(&self, index: usize, mut random: [u8; 20]) -> NodeId {
        let own = &self.own.0;
        // Copy the first `index` bits of our id, flip bit `index` (unless it
        // is the deepest bucket, which shares at least that many bits).
        for bit in 0..index.min(160) {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            random[byte] = (random[byte] & !mask) | (own[byte] & mask);
        }
        if index < 160 && index + 1 < self.buckets.len() {
            let (byte, mask) = (index / 8, 0x80u8 >> (index % 8));
            random[byte] = (random[byte] & !mask) | (!own[byte] & mask);
        }
        NodeId(random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8, rest: u8) -> NodeId {
        let mut b = [rest; 20];
        b[0] = first;
        NodeId(b)
    }

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10_000 + i))
    }

    #[test]
    fn rejects_own_id_port_zero_and_duplicate_addresses() {
        let now = Instant::now();
        let own = id(0, 0);
        let mut t = RoutingTable::new(own, now);
        assert!(matches!(
            t.insert(own, addr(1), Heard::Response, now),
            Inserted::Rejected(_)
        ));
        assert!(matches!(
            t.insert(
                id(1, 1),
                SocketAddr::from(([127, 0, 0, 1], 0)),
                Heard::Response,
                now
            ),
            Inserted::Rejected(_)
        ));
        assert_eq!(
            t.insert(id(1, 1), addr(1), Heard::Response, now),
            Inserted::Added
        );
        assert!(matches!(
            t.insert(id(2, 2), addr(1), Heard::Response, now),
            Inserted::Rejected(_)
        ));
        assert!(matches!(
            t.insert(id(1, 1), addr(2), Heard::Response, now),
            Inserted::Rejected(_)
        ));
        assert_eq!(
            t.insert(id(1, 1), addr(1), Heard::Response, now),
            Inserted::Updated
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn splits_only_where_our_id_falls() {
        let now = Instant::now();
        let own = id(0, 0);
        let mut t = RoutingTable::new(own, now);
        // 8 nodes far away (first bit 1) and 8 close (first bit 0).
        for i in 0..8u8 {
            t.insert(id(0x80 | i, i), addr(u16::from(i)), Heard::Response, now);
        }
        for i in 0..8u8 {
            t.insert(
                id(0x40 | i, i),
                addr(100 + u16::from(i)),
                Heard::Response,
                now,
            );
        }
        assert_eq!(t.len(), 16);
        assert!(t.num_buckets() >= 2);
        // The far bucket is full and does not contain us: a 9th far node is cached.
        let r = t.insert(id(0xff, 9), addr(50), Heard::Response, now);
        assert!(matches!(r, Inserted::Cached { .. }), "{r:?}");
        assert_eq!(t.len(), 16);
        // Close nodes keep splitting: many more fit.
        for i in 0..40u8 {
            t.insert(
                id(i & 0x0f, i.wrapping_mul(7)),
                addr(200 + u16::from(i)),
                Heard::Response,
                now,
            );
        }
        assert!(t.len() > 24, "{}", t.len());
    }

    #[test]
    fn states_and_replacement() {
        let t0 = Instant::now();
        let own = id(0, 0);
        let mut t = RoutingTable::new(own, t0);
        for i in 0..8u8 {
            t.insert(id(0x80 | i, i), addr(u16::from(i)), Heard::Response, t0);
        }
        assert_eq!(t.count(NodeState::Good, t0), 8);
        let later = t0 + GOOD_FOR;
        assert_eq!(t.count(NodeState::Questionable, later), 8);
        let Inserted::Cached {
            ping: Some((victim, _)),
        } = t.insert(id(0xfe, 1), addr(99), Heard::Response, later)
        else {
            panic!("expected a ping suggestion");
        };
        t.failed(&victim, later);
        assert!(t.get(&victim).is_some(), "one failure is not enough");
        t.failed(&victim, later);
        assert!(t.get(&victim).is_none(), "bad node replaced");
        assert!(t.get(&id(0xfe, 1)).is_some());
    }

    #[test]
    fn closest_orders_by_xor_distance() {
        let now = Instant::now();
        let mut t = RoutingTable::new(id(0, 0), now);
        for i in 1..=20u8 {
            t.insert(id(i, 0), addr(u16::from(i)), Heard::Response, now);
        }
        let c = t.closest(&id(6, 0), 3, now);
        let firsts: Vec<u8> = c.iter().map(|(n, _)| n.0[0]).collect();
        assert_eq!(firsts, [6, 7, 4]);
    }

    #[test]
    fn refresh_targets_land_in_their_bucket() {
        let now = Instant::now();
        let own = id(0x5a, 0x33);
        let mut t = RoutingTable::new(own, now);
        for i in 0..200u16 {
            let mut b = [0u8; 20];
            b[0] = (i as u8).wrapping_mul(37);
            b[1] = (i >> 3) as u8;
            t.insert(NodeId(b), addr(i), Heard::Response, now);
        }
        for bi in 0..t.num_buckets() {
            let target = t.random_id_in_bucket(bi, [0xa5; 20]);
            assert_eq!(t.bucket_index(&target), bi, "bucket {bi}");
        }
        assert!(t.stale_buckets(now).is_empty());
        assert_eq!(t.stale_buckets(now + REFRESH_AFTER).len(), t.num_buckets());
    }
}
