use std::fmt;
use std::str::FromStr;

use crate::encoding::{from_base32, from_hex, to_hex};

/// A v1 info hash: the SHA-1 of the bencoded info dictionary. Also the
/// 20-byte key used on the wire and in the DHT (for v2 torrents, the
/// truncated SHA-256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// A v2 info hash (BEP 52): the SHA-256 of the info dictionary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHashV2(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an info hash: expected 40 hex or 32 base32 characters, got {len} characters")]
pub struct ParseHashError {
    pub len: usize,
}

impl InfoHash {
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

impl FromStr for InfoHash {
    type Err = ParseHashError;

    /// 40 hex digits or 32 base32 characters, as in `xt=urn:btih:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.len() {
            40 => from_hex(s),
            32 => from_base32(s),
            _ => None,
        }
        .map(InfoHash)
        .ok_or(ParseHashError { len: s.len() })
    }
}

impl InfoHashV2 {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The first 20 bytes: what identifies a v2 torrent in the handshake and the DHT.
    pub fn truncated(&self) -> InfoHash {
        let mut h = [0u8; 20];
        h.copy_from_slice(&self.0[..20]);
        InfoHash(h)
    }

    /// The multihash form used in `xt=urn:btmh:` (0x12 = SHA-256, 0x20 = 32 bytes).
    pub fn to_multihash_hex(&self) -> String {
        format!("1220{}", self.to_hex())
    }
}

impl FromStr for InfoHashV2 {
    type Err = ParseHashError;

    /// 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_hex(s)
            .map(InfoHashV2)
            .ok_or(ParseHashError { len: s.len() })
    }
}

macro_rules! hex_display {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.to_hex())
            }
        }
    };
}
hex_display!(InfoHash);
hex_display!(InfoHashV2);

/// The hashes that identify one torrent: v1, v2, or both (hybrid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InfoHashes {
    V1(InfoHash),
    V2(InfoHashV2),
    Hybrid(InfoHash, InfoHashV2),
}

impl InfoHashes {
    pub fn v1(&self) -> Option<InfoHash> {
        match *self {
            Self::V1(h) | Self::Hybrid(h, _) => Some(h),
            Self::V2(_) => None,
        }
    }

    pub fn v2(&self) -> Option<InfoHashV2> {
        match *self {
            Self::V2(h) | Self::Hybrid(_, h) => Some(h),
            Self::V1(_) => None,
        }
    }

    /// The 20 bytes to use in handshakes and DHT lookups: the v1 hash when
    /// there is one (hybrid swarms meet there), else the truncated v2 hash.
    pub fn wire(&self) -> InfoHash {
        match *self {
            Self::V1(h) | Self::Hybrid(h, _) => h,
            Self::V2(h) => h.truncated(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_hex_and_base32() {
        let hex = "46e9756a2d7332452e3d7726ace04821e94c2869";
        let h: InfoHash = hex.parse().unwrap();
        assert_eq!(h.to_string(), hex);
        let b32 = crate::encoding::to_base32(h.as_bytes());
        assert_eq!(b32.parse::<InfoHash>().unwrap(), h);
        assert_eq!(b32.to_lowercase().parse::<InfoHash>().unwrap(), h);
        assert_eq!("abc".parse::<InfoHash>(), Err(ParseHashError { len: 3 }));
    }

    #[test]
    fn v2_truncation() {
        let h = InfoHashV2([7; 32]);
        assert_eq!(h.truncated(), InfoHash([7; 20]));
        assert!(h.to_multihash_hex().starts_with("1220"));
        assert_eq!(InfoHashes::V2(h).wire(), InfoHash([7; 20]));
    }
}
