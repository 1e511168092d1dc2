//! BEP 11 `ut_pex`: peers added and dropped since the last message.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lodestone_bencode::{DecodeOptions, Decoder, OwnedValue as V};

/// At most this many added (and dropped) peers per message, as libtorrent
/// sends and as we accept; the rest of a larger message is ignored.
pub const MAX_PEX_PEERS: usize = 50;

/// BEP 11 flags of an added peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PexFlags(pub u8);

impl PexFlags {
    pub const ENCRYPTION: u8 = 0x01;
    pub const SEED: u8 = 0x02;
    pub const UTP: u8 = 0x04;
    pub const HOLEPUNCH: u8 = 0x08;
    pub const REACHABLE: u8 = 0x10;

    pub fn seed(self) -> bool {
        self.0 & Self::SEED != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PexMessage {
    pub added: Vec<(SocketAddr, PexFlags)>,
    pub dropped: Vec<SocketAddr>,
    /// The message listed more peers than we take.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PexError {
    #[error("ut_pex message is not a bencoded dictionary")]
    NotDict,
    #[error("ut_pex '{0}' is not a whole number of compact addresses")]
    BadCompact(&'static str),
}

/// Compact peers: 6 bytes (IPv4 + port) or 18 bytes (IPv6 + port) each.
pub fn decode_compact(b: &[u8], v6: bool) -> Option<Vec<SocketAddr>> {
    let size = if v6 { 18 } else { 6 };
    if b.len() % size != 0 {
        return None;
    }
    Some(
        b.chunks_exact(size)
            .map(|c| {
                let (ip, port) = c.split_at(size - 2);
                let port = u16::from_be_bytes([port[0], port[1]]);
                let ip = match <[u8; 16]>::try_from(ip) {
                    Ok(a) => IpAddr::V6(Ipv6Addr::from(a)),
                    Err(_) => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
                };
                SocketAddr::new(ip, port)
            })
            .collect(),
    )
}

pub fn encode_compact(addrs: impl IntoIterator<Item = SocketAddr>, out: &mut Vec<u8>) {
    for a in addrs {
        match a.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
}

impl PexMessage {
    pub fn decode(payload: &[u8]) -> Result<Self, PexError> {
        let opts = DecodeOptions {
            max_depth: 4,
            max_values: 64,
            strict: false,
        };
        let v = Decoder::new(payload, opts)
            .decode_all()
            .map_err(|_| PexError::NotDict)?;
        let d = v.as_dict().ok_or(PexError::NotDict)?;
        let mut m = Self::default();
        for (key, flags_key, v6) in [("added", "added.f", false), ("added6", "added6.f", true)] {
            let Some(raw) = d.get(key.as_bytes()).and_then(|v| v.as_bytes()) else {
                continue;
            };
            let addrs = decode_compact(raw, v6).ok_or(PexError::BadCompact(if v6 {
                "added6"
            } else {
                "added"
            }))?;
            let flags = d
                .get(flags_key.as_bytes())
                .and_then(|v| v.as_bytes())
                .unwrap_or(&[]);
            for (i, a) in addrs.into_iter().enumerate() {
                if m.added.len() >= MAX_PEX_PEERS {
                    m.truncated = true;
                    break;
                }
                // Port 0 cannot be dialled.
                if a.port() != 0 {
                    m.added
                        .push((a, PexFlags(flags.get(i).copied().unwrap_or(0))));
                }
            }
        }
        for (key, v6) in [("dropped", false), ("dropped6", true)] {
            let Some(raw) = d.get(key.as_bytes()).and_then(|v| v.as_bytes()) else {
                continue;
            };
            let addrs = decode_compact(raw, v6).ok_or(PexError::BadCompact(if v6 {
                "dropped6"
            } else {
                "dropped"
            }))?;
            for a in addrs {
                if m.dropped.len() >= MAX_PEX_PEERS {
                    m.truncated = true;
                    break;
                }
                m.dropped.push(a);
            }
        }
        Ok(m)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = BTreeMap::new();
        let (mut a4, mut f4, mut a6, mut f6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (a, f) in self.added.iter().take(MAX_PEX_PEERS) {
            if a.is_ipv4() {
                encode_compact([*a], &mut a4);
                f4.push(f.0);
            } else {
                encode_compact([*a], &mut a6);
                f6.push(f.0);
            }
        }
        let (mut d4, mut d6) = (Vec::new(), Vec::new());
        for a in self.dropped.iter().take(MAX_PEX_PEERS) {
            encode_compact([*a], if a.is_ipv4() { &mut d4 } else { &mut d6 });
        }
        d.insert(b"added".to_vec(), V::Bytes(a4));
        d.insert(b"added.f".to_vec(), V::Bytes(f4));
        d.insert(b"added6".to_vec(), V::Bytes(a6));
        d.insert(b"added6.f".to_vec(), V::Bytes(f6));
        d.insert(b"dropped".to_vec(), V::Bytes(d4));
        d.insert(b"dropped6".to_vec(), V::Bytes(d6));
        V::Dict(d).encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_v4_and_v6() {
        let m = PexMessage {
            added: vec![
                ("127.0.0.2:6881".parse().unwrap(), PexFlags(PexFlags::SEED)),
                ("[::1]:51413".parse().unwrap(), PexFlags(0)),
            ],
            dropped: vec!["127.0.0.3:1".parse().unwrap()],
            truncated: false,
        };
        assert_eq!(PexMessage::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn flood_is_capped_and_bad_input_refused() {
        let addrs: Vec<SocketAddr> = (0..500u16)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
            .collect();
        let mut a = Vec::new();
        encode_compact(addrs, &mut a);
        let mut payload = b"d5:added".to_vec();
        payload.extend(format!("{}:", a.len()).as_bytes());
        payload.extend(&a);
        payload.push(b'e');
        let m = PexMessage::decode(&payload).unwrap();
        assert_eq!(m.added.len(), MAX_PEX_PEERS);
        assert!(m.truncated);
        assert_eq!(
            PexMessage::decode(b"d5:added5:abcdee"),
            Err(PexError::BadCompact("added"))
        );
        assert_eq!(PexMessage::decode(b"le"), Err(PexError::NotDict));
        // Port 0 is dropped.
        let m = PexMessage::decode(b"d5:added6:\x7f\x00\x00\x01\x00\x00e").unwrap();
        assert!(m.added.is_empty());
    }
}
