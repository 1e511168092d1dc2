//! Node ids and the XOR metric (BEP 5).

use std::fmt;
use std::str::FromStr;

use lodestone_core::encoding::{from_hex, to_hex};
use lodestone_core::InfoHash;

/// Bytes in a node id (and in any DHT target).
pub const ID_LEN: usize = 20;
/// Bits in a node id.
pub const ID_BITS: usize = ID_LEN * 8;

/// A 160-bit node id. Info hashes and BEP 44 targets live in the same
/// space, so they convert both ways for free.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; ID_LEN]);

/// `a XOR b`, read as a big-endian unsigned integer: smaller is closer.
/// Byte-wise comparison of big-endian bytes is numeric comparison, so the
/// derived `Ord` is the Kademlia order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Distance(pub [u8; ID_LEN]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a node id: expected 40 hex characters, got {len} characters")]
pub struct ParseNodeIdError {
    pub len: usize,
}

impl NodeId {
    pub const ZERO: NodeId = NodeId([0; ID_LEN]);
    pub const MAX: NodeId = NodeId([0xff; ID_LEN]);

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// Exactly 20 bytes, or `None`.
    pub fn from_slice(bytes: &[u8]) -> Option<NodeId> {
        <[u8; ID_LEN]>::try_from(bytes).ok().map(NodeId)
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut d = [0u8; ID_LEN];
        for ((d, a), b) in d.iter_mut().zip(&self.0).zip(&other.0) {
            *d = a ^ b;
        }
        Distance(d)
    }

    /// Leading bits shared with `other`, 0..=160 (160 when equal). In a
    /// routing table split along our own id, this is the bucket index.
    pub fn common_prefix_len(&self, other: &NodeId) -> usize {
        self.distance(other).leading_zeros()
    }

    /// Bit `index` counted from the most significant bit; `false` past 160.
    pub fn bit(&self, index: usize) -> bool {
        self.0
            .get(index / 8)
            .is_some_and(|b| b & (0x80 >> (index % 8)) != 0)
    }

    /// An id whose first `prefix_bits` bits are those of `prefix_of` and
    /// whose remaining bits come from `random` (supplied by the caller, so
    /// a seeded generator replays). `prefix_bits` above 160 means 160.
    ///
    /// To refresh bucket `i` of a table split along our id `me`, use
    /// `with_prefix(&me, i, r)` and then flip bit `i` (see
    /// [`NodeId::random_in_bucket`]).
    pub fn with_prefix(prefix_of: &NodeId, prefix_bits: usize, random: [u8; ID_LEN]) -> NodeId {
        let prefix_bits = prefix_bits.min(ID_BITS);
        let mut out = random;
        for (i, (o, p)) in out.iter_mut().zip(&prefix_of.0).enumerate() {
            let start = i * 8;
            if prefix_bits >= start + 8 {
                *o = *p;
            } else if prefix_bits > start {
                // 1..=7 bits of this byte come from the prefix.
                let mask = 0xffu8 << (8 - (prefix_bits - start));
                *o = (*p & mask) | (*o & !mask);
            } else {
                break;
            }
        }
        NodeId(out)
    }

    /// A random id that shares exactly `bucket` leading bits with `own`
    /// (for `bucket < 160`; 160 gives `own` itself), i.e. an id that falls
    /// in bucket `bucket` of a table split along `own`.
    pub fn random_in_bucket(own: &NodeId, bucket: usize, random: [u8; ID_LEN]) -> NodeId {
        let mut id = NodeId::with_prefix(own, bucket, random);
        if bucket < ID_BITS {
            if let Some(b) = id.0.get_mut(bucket / 8) {
                let bit = 0x80u8 >> (bucket % 8);
                let own_bit = own.0.get(bucket / 8).map_or(0, |o| o & bit);
                *b = (*b & !bit) | (own_bit ^ bit);
            }
        }
        id
    }
}

impl Distance {
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// Leading zero bits, 0..=160 (160 for distance zero).
    pub fn leading_zeros(&self) -> usize {
        let mut n = 0;
        for b in &self.0 {
            if *b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros() as usize;
            }
        }
        n
    }
}

impl From<InfoHash> for NodeId {
    fn from(h: InfoHash) -> Self {
        NodeId(h.0)
    }
}

impl From<NodeId> for InfoHash {
    fn from(id: NodeId) -> Self {
        InfoHash(id.0)
    }
}

impl From<[u8; ID_LEN]> for NodeId {
    fn from(b: [u8; ID_LEN]) -> Self {
        NodeId(b)
    }
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    /// 40 hex digits, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_hex(s)
            .map(NodeId)
            .ok_or(ParseNodeIdError { len: s.len() })
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.to_hex())
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Distance({})", to_hex(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(hex: &str) -> NodeId {
        hex.parse().unwrap()
    }

    #[test]
    fn distance_and_prefix() {
        let a = id("0000000000000000000000000000000000000000");
        let b = id("0000000000000000000000000000000000000001");
        let c = id("8000000000000000000000000000000000000000");
        assert_eq!(a.common_prefix_len(&a), 160);
        assert_eq!(a.common_prefix_len(&b), 159);
        assert_eq!(a.common_prefix_len(&c), 0);
        assert!(a.distance(&b) < a.distance(&c));
        assert_eq!(a.distance(&c), c.distance(&a));
        assert_eq!(Distance::default().leading_zeros(), 160);
        let d = id("00f0000000000000000000000000000000000000");
        assert_eq!(a.common_prefix_len(&d), 8);
    }

    #[test]
    fn bits() {
        let c = id("8000000000000000000000000000000000000001");
        assert!(c.bit(0));
        assert!(!c.bit(1));
        assert!(c.bit(159));
        assert!(!c.bit(160));
        assert!(!c.bit(usize::MAX));
    }

    #[test]
    fn hex_forms() {
        let s = "0123456789abcdef0123456789abcdef01234567";
        let n = id(s);
        assert_eq!(n.to_string(), s);
        assert_eq!(format!("{n:?}"), format!("NodeId({s})"));
        assert_eq!("abc".parse::<NodeId>(), Err(ParseNodeIdError { len: 3 }));
        assert_eq!(NodeId::from_slice(&[1; 19]), None);
        assert_eq!(NodeId::from_slice(&[1; 20]), Some(NodeId([1; 20])));
    }

    #[test]
    fn infohash_conversions() {
        let h = InfoHash([7; 20]);
        let n = NodeId::from(h);
        assert_eq!(InfoHash::from(n), h);
    }

    #[test]
    fn with_prefix_copies_bits() {
        let p = NodeId::MAX;
        let r = [0u8; 20];
        assert_eq!(NodeId::with_prefix(&p, 0, r), NodeId::ZERO);
        assert_eq!(NodeId::with_prefix(&p, 160, r), NodeId::MAX);
        assert_eq!(NodeId::with_prefix(&p, 1000, r), NodeId::MAX);
        let x = NodeId::with_prefix(&p, 12, r);
        assert_eq!(x.to_hex(), "fff0000000000000000000000000000000000000");
        let y = NodeId::with_prefix(&NodeId::ZERO, 3, [0xff; 20]);
        assert_eq!(y.to_hex(), "1fffffffffffffffffffffffffffffffffffffff");
    }

    proptest! {
        #[test]
        fn prefix_len_is_exact(a: [u8; 20], r: [u8; 20], bits in 0usize..=170) {
            let own = NodeId(a);
            let x = NodeId::with_prefix(&own, bits, r);
            prop_assert!(own.common_prefix_len(&x) >= bits.min(160));
            let b = NodeId::random_in_bucket(&own, bits, r);
            prop_assert_eq!(own.common_prefix_len(&b), bits.min(160));
        }

        #[test]
        fn xor_metric(a: [u8; 20], b: [u8; 20], c: [u8; 20]) {
            let (a, b, c) = (NodeId(a), NodeId(b), NodeId(c));
            prop_assert_eq!(a.distance(&b), b.distance(&a));
            prop_assert_eq!(a.distance(&a), Distance::default());
            // Distinct points at equal distance from a are impossible under XOR.
            if b != c {
                prop_assert_ne!(a.distance(&b), a.distance(&c));
            }
        }
    }
}
