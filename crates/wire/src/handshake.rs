use lodestone_core::{InfoHash, PeerId};

use crate::WireError;

pub const HANDSHAKE_LEN: usize = 68;
const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// The 8 reserved handshake bytes: one bit per extension.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Reserved(pub [u8; 8]);

impl Reserved {
    /// What Lodestone advertises: extension protocol, fast extension, DHT.
    pub fn ours() -> Self {
        let mut r = Self::default();
        r.0[5] |= 0x10;
        r.0[7] |= 0x04 | 0x01;
        r
    }

    /// BEP 10 extension protocol.
    pub fn extension_protocol(&self) -> bool {
        self.0[5] & 0x10 != 0
    }

    /// BEP 6 fast extension.
    pub fn fast(&self) -> bool {
        self.0[7] & 0x04 != 0
    }

    /// BEP 5 DHT (the peer may send a `port` message).
    pub fn dht(&self) -> bool {
        self.0[7] & 0x01 != 0
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Handshake {
    pub reserved: Reserved,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
}

impl Handshake {
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved.0);
        out[28..48].copy_from_slice(&self.info_hash.0);
        out[48..68].copy_from_slice(&self.peer_id.0);
        out
    }

    /// Decode from the start of `buf`: `Ok(None)` until 68 bytes are there.
    /// A wrong protocol string fails as soon as its first bytes arrive.
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, WireError> {
        let head = &buf[..buf.len().min(20)];
        let mut expected = [0u8; 20];
        expected[0] = 19;
        expected[1..].copy_from_slice(PROTOCOL);
        if head != &expected[..head.len()] {
            return Err(WireError::NotBitTorrent);
        }
        if buf.len() < HANDSHAKE_LEN {
            return Ok(None);
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&buf[20..28]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&buf[28..48]);
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&buf[48..68]);
        Ok(Some(Self {
            reserved: Reserved(reserved),
            info_hash: InfoHash(info_hash),
            peer_id: PeerId(peer_id),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_bits() {
        let h = Handshake {
            reserved: Reserved::ours(),
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([2; 20]),
        };
        let bytes = h.encode();
        assert_eq!(&bytes[..20], b"\x13BitTorrent protocol");
        assert_eq!(Handshake::decode(&bytes[..67]), Ok(None));
        let d = Handshake::decode(&bytes).unwrap().unwrap();
        assert_eq!(d, h);
        assert!(d.reserved.extension_protocol() && d.reserved.fast() && d.reserved.dht());
        assert!(!Reserved::default().fast());
    }

    #[test]
    fn wrong_protocol_fails_early() {
        assert_eq!(
            Handshake::decode(b"GET / HTTP/1.1"),
            Err(WireError::NotBitTorrent)
        );
        assert_eq!(Handshake::decode(b"\x13Bit"), Ok(None));
        assert_eq!(Handshake::decode(b"\x14"), Err(WireError::NotBitTorrent));
    }
}
