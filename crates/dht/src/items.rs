//! BEP 44 items: immutable values stored under their SHA-1, and mutable
//! values signed with an ed25519 key and stored under SHA-1(key + salt).
//!
//! [`ItemStore`] is what a node keeps for others: bounded in count (each
//! value is at most 1000 bytes, so the bound is also one on memory), two
//! hours without a refresh and an item is gone. Every check a storing node
//! must make (signature, salt length, sequence numbers, `cas`) lives here,
//! as does the check a requesting node makes on what it is given.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha1::{Digest, Sha1};

use crate::id::NodeId;
use crate::krpc::{error_code, RawValue, MAX_SALT_LEN};

/// BEP 44: items may expire two hours after their last put.
pub const ITEM_TTL: Duration = Duration::from_secs(2 * 60 * 60);

/// A mutable item: the value, and what proves who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableItem {
    pub key: [u8; 32],
    pub salt: Vec<u8>,
    pub seq: i64,
    pub value: RawValue,
    pub signature: [u8; 64],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Immutable(RawValue),
    Mutable(MutableItem),
}

/// Why an item was refused; each maps to a BEP 44 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("invalid signature")]
    BadSignature,
    #[error("salt longer than {MAX_SALT_LEN} bytes")]
    SaltTooBig,
    #[error("negative sequence number")]
    NegativeSeq,
    #[error("cas mismatch: stored seq is {stored}")]
    CasMismatch { stored: i64 },
    #[error("sequence number {given} is not above the stored {stored}")]
    SeqTooLow { given: i64, stored: i64 },
    #[error("the value does not hash to the target")]
    WrongTarget,
}

impl ItemError {
    pub fn code(&self) -> i64 {
        match self {
            Self::BadSignature => error_code::INVALID_SIGNATURE,
            Self::SaltTooBig => error_code::SALT_TOO_BIG,
            Self::CasMismatch { .. } => error_code::CAS_MISMATCH,
            Self::SeqTooLow { .. } => error_code::SEQUENCE_TOO_LOW,
            Self::NegativeSeq | Self::WrongTarget => error_code::PROTOCOL,
        }
    }
}

/// Target of an immutable item: SHA-1 of its bencoded value.
pub fn immutable_target(value: &RawValue) -> NodeId {
    NodeId(Sha1::digest(value.as_bytes()).into())
}

/// Target of a mutable item: SHA-1 of the public key, then the salt.
pub fn mutable_target(key: &[u8; 32], salt: &[u8]) -> NodeId {
    let mut h = Sha1::new();
    h.update(key);
    h.update(salt);
    NodeId(h.finalize().into())
}

/// The bytes a mutable item's signature covers:
/// `[4:salt<len>:<salt>]3:seqi<seq>e1:v` followed by the bencoded value.
/// Built by hand, never by re-encoding a dictionary (BEP 44's advice).
pub fn signed_bytes(salt: &[u8], seq: i64, value: &RawValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.as_bytes().len() + salt.len() + 40);
    if !salt.is_empty() {
        out.extend_from_slice(format!("4:salt{}:", salt.len()).as_bytes());
        out.extend_from_slice(salt);
    }
    out.extend_from_slice(format!("3:seqi{seq}e1:v").as_bytes());
    out.extend_from_slice(value.as_bytes());
    out
}

impl MutableItem {
    /// Sign `value` as version `seq` under `salt` with `secret` (an ed25519
    /// seed of 32 bytes).
    pub fn sign(
        secret: &[u8; 32],
        salt: &[u8],
        seq: i64,
        value: RawValue,
    ) -> Result<Self, ItemError> {
        if salt.len() > MAX_SALT_LEN {
            return Err(ItemError::SaltTooBig);
        }
        if seq < 0 {
            return Err(ItemError::NegativeSeq);
        }
        let key = SigningKey::from_bytes(secret);
        let signature = key.sign(&signed_bytes(salt, seq, &value)).to_bytes();
        Ok(Self {
            key: key.verifying_key().to_bytes(),
            salt: salt.to_vec(),
            seq,
            value,
            signature,
        })
    }

    pub fn target(&self) -> NodeId {
        mutable_target(&self.key, &self.salt)
    }

    /// Check the salt length, the sequence number and the signature.
    pub fn verify(&self) -> Result<(), ItemError> {
        if self.salt.len() > MAX_SALT_LEN {
            return Err(ItemError::SaltTooBig);
        }
        if self.seq < 0 {
            return Err(ItemError::NegativeSeq);
        }
        let key = VerifyingKey::from_bytes(&self.key).map_err(|_| ItemError::BadSignature)?;
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(&signed_bytes(&self.salt, self.seq, &self.value), &sig)
            .map_err(|_| ItemError::BadSignature)
    }
}

/// The public key of an ed25519 seed.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

impl Item {
    pub fn target(&self) -> NodeId {
        match self {
            Self::Immutable(v) => immutable_target(v),
            Self::Mutable(m) => m.target(),
        }
    }

    pub fn value(&self) -> &RawValue {
        match self {
            Self::Immutable(v) => v,
            Self::Mutable(m) => &m.value,
        }
    }

    pub fn seq(&self) -> Option<i64> {
        match self {
            Self::Immutable(_) => None,
            Self::Mutable(m) => Some(m.seq),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ItemLimits {
    /// Items kept, immutable and mutable together.
    pub max_items: usize,
}

impl Default for ItemLimits {
    fn default() -> Self {
        // 1000 items of at most ~1.1 KB: about 1 MiB at worst.
        Self { max_items: 1000 }
    }
}

#[derive(Debug, Clone)]
struct Stored {
    item: Item,
    expires: Instant,
}

/// Items other nodes put here.
#[derive(Debug, Default)]
pub struct ItemStore {
    limits: ItemLimits,
    // Ordered, so eviction replays exactly in the simulator.
    items: BTreeMap<NodeId, Stored>,
}

impl ItemStore {
    pub fn new(limits: ItemLimits) -> Self {
        Self {
            limits,
            items: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, target: &NodeId, now: Instant) -> Option<&Item> {
        self.items
            .get(target)
            .filter(|s| s.expires > now)
            .map(|s| &s.item)
    }

    /// Store an immutable value (its target is its hash, so it cannot be
    /// wrong; a repeat put refreshes it).
    pub fn put_immutable(&mut self, value: RawValue, now: Instant) -> NodeId {
        let target = immutable_target(&value);
        self.insert(target, Item::Immutable(value), now);
        target
    }

    /// Store a mutable item after every BEP 44 check: signature, salt,
    /// `cas` against what is stored, and a sequence number that only goes
    /// up (the same seq and value refreshes the item).
    pub fn put_mutable(
        &mut self,
        item: MutableItem,
        cas: Option<i64>,
        now: Instant,
    ) -> Result<NodeId, ItemError> {
        item.verify()?;
        let target = item.target();
        if let Some(Item::Mutable(old)) = self.get(&target, now) {
            if let Some(cas) = cas {
                if cas != old.seq {
                    return Err(ItemError::CasMismatch { stored: old.seq });
                }
            }
            let same = item.seq == old.seq && item.value == old.value;
            if item.seq < old.seq || (item.seq == old.seq && !same) {
                return Err(ItemError::SeqTooLow {
                    given: item.seq,
                    stored: old.seq,
                });
            }
        }
        self.insert(target, Item::Mutable(item), now);
        Ok(target)
    }

    fn insert(&mut self, target: NodeId, item: Item, now: Instant) {
        if !self.items.contains_key(&target) && self.items.len() >= self.limits.max_items {
            self.expire(now);
            if self.items.len() >= self.limits.max_items {
                // Full of live items: the one refreshed longest ago goes.
                if let Some(victim) = self
                    .items
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(t, _)| *t)
                {
                    self.items.remove(&victim);
                }
            }
        }
        self.items.insert(
            target,
            Stored {
                item,
                expires: now + ITEM_TTL,
            },
        );
    }

    pub fn expire(&mut self, now: Instant) {
        self.items.retain(|_, s| s.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    fn hello() -> RawValue {
        RawValue::new(b"12:Hello World!").unwrap()
    }

    // The BEP's own test vectors: the key pair is given in libtorrent's
    // expanded form, so these check verification and targets, and signing
    // is checked by a round trip below.
    const PK: &str = "77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548";

    #[test]
    fn bep44_vector_mutable() {
        let item = MutableItem {
            key: hex(PK),
            salt: Vec::new(),
            seq: 1,
            value: hello(),
            signature: hex("305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01"),
        };
        assert_eq!(
            signed_bytes(b"", 1, &hello()),
            b"3:seqi1e1:v12:Hello World!"
        );
        assert_eq!(
            item.target().to_hex(),
            "4a533d47ec9c7d95b1ad75f576cffc641853b750"
        );
        assert_eq!(item.verify(), Ok(()));
        let mut bad = item.clone();
        bad.seq = 2;
        assert_eq!(bad.verify(), Err(ItemError::BadSignature));
    }

    #[test]
    fn bep44_vector_mutable_with_salt() {
        let item = MutableItem {
            key: hex(PK),
            salt: b"foobar".to_vec(),
            seq: 1,
            value: hello(),
            signature: hex("6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17ddf9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08"),
        };
        assert_eq!(
            signed_bytes(b"foobar", 1, &hello()),
            b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
        );
        assert_eq!(
            item.target().to_hex(),
            "411eba73b6f087ca51a3795d9c8c938d365e32c1"
        );
        assert_eq!(item.verify(), Ok(()));
        let mut other_salt = item.clone();
        other_salt.salt = b"foobaz".to_vec();
        assert_eq!(other_salt.verify(), Err(ItemError::BadSignature));
    }

    #[test]
    fn bep44_vector_immutable() {
        assert_eq!(
            immutable_target(&hello()).to_hex(),
            "e5f96f6f38320f0f33959cb4d3d656452117aadb"
        );
    }

    #[test]
    fn sign_then_verify() {
        let item = MutableItem::sign(&[7; 32], b"s", 5, hello()).unwrap();
        assert_eq!(item.key, public_key(&[7; 32]));
        assert_eq!(item.verify(), Ok(()));
        assert_eq!(
            MutableItem::sign(&[7; 32], &[0; 65], 1, hello()),
            Err(ItemError::SaltTooBig)
        );
        assert_eq!(
            MutableItem::sign(&[7; 32], b"", -1, hello()),
            Err(ItemError::NegativeSeq)
        );
    }

    #[test]
    fn store_rules() {
        let now = Instant::now();
        let mut store = ItemStore::new(ItemLimits { max_items: 2 });
        let v1 = MutableItem::sign(&[1; 32], b"", 1, hello()).unwrap();
        let t = store.put_mutable(v1.clone(), None, now).unwrap();
        // Same seq and value: a refresh. Same seq, other value: refused.
        assert_eq!(store.put_mutable(v1.clone(), None, now), Ok(t));
        let other = RawValue::new(b"i5e").unwrap();
        let v1b = MutableItem::sign(&[1; 32], b"", 1, other.clone()).unwrap();
        assert_eq!(
            store.put_mutable(v1b, None, now),
            Err(ItemError::SeqTooLow {
                given: 1,
                stored: 1
            })
        );
        let v2 = MutableItem::sign(&[1; 32], b"", 2, other).unwrap();
        assert_eq!(
            store.put_mutable(v2.clone(), Some(0), now),
            Err(ItemError::CasMismatch { stored: 1 })
        );
        assert_eq!(store.put_mutable(v2.clone(), Some(1), now), Ok(t));
        assert_eq!(
            store.put_mutable(v1, None, now),
            Err(ItemError::SeqTooLow {
                given: 1,
                stored: 2
            })
        );
        assert_eq!(store.get(&t, now), Some(&Item::Mutable(v2)));
        // A forged signature is refused before anything is compared.
        let mut forged = MutableItem::sign(&[1; 32], b"", 9, hello()).unwrap();
        forged.signature[0] ^= 1;
        assert_eq!(
            store.put_mutable(forged, None, now),
            Err(ItemError::BadSignature)
        );
        // Bounded: a third item evicts the one refreshed longest ago.
        let later = now + Duration::from_secs(1);
        let a = store.put_immutable(hello(), later);
        let b = store.put_immutable(RawValue::new(b"i1e").unwrap(), later);
        assert_eq!(store.len(), 2);
        assert!(store.get(&t, later).is_none());
        assert!(store.get(&a, later).is_some() && store.get(&b, later).is_some());
        // Expiry.
        let gone = later + ITEM_TTL;
        assert!(store.get(&a, gone).is_none());
        store.expire(gone);
        assert!(store.is_empty());
    }
}
