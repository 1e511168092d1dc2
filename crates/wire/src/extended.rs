//! The BEP 10 extension handshake.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lodestone_bencode::{DecodeOptions, Decoder, OwnedValue as V};

/// Names of the extensions we speak, with the ids we assign them.
pub const UT_METADATA: &str = "ut_metadata";
pub const UT_PEX: &str = "ut_pex";
/// Our local message ids (what peers must use when sending to us).
pub const OUR_UT_METADATA_ID: u8 = 1;
pub const OUR_UT_PEX_ID: u8 = 2;

/// Largest `metadata_size` we would even consider (the metadata assembler
/// applies the user's, usually smaller, cap).
pub const MAX_METADATA_SIZE: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtendedError {
    #[error("extension handshake is not bencode: {0}")]
    Bencode(lodestone_bencode::DecodeError),
    #[error("extension handshake is not a dictionary")]
    NotDict,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtendedHandshake {
    /// Extension name → the id the sender wants us to use; 0 means disabled.
    pub extensions: BTreeMap<String, u8>,
    /// The sender's listen port.
    pub listen_port: Option<u16>,
    /// Client name and version.
    pub client: Option<String>,
    /// Our address as the sender sees it.
    pub your_ip: Option<IpAddr>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// How many outstanding requests the sender queues.
    pub request_queue: Option<u32>,
    /// BEP 9: size of the info dictionary.
    pub metadata_size: Option<u64>,
    /// BEP 21: the sender only uploads (a seed or partial seed).
    pub upload_only: bool,
}

impl ExtendedHandshake {
    /// The id to use when sending extension `name` to this peer.
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.extensions.get(name).copied().filter(|&id| id != 0)
    }

    /// Decode leniently: clients put all kinds of things in here; we read
    /// what we understand and ignore wrongly typed or out-of-range values.
    pub fn decode(payload: &[u8]) -> Result<Self, ExtendedError> {
        let opts = DecodeOptions {
            max_depth: 8,
            max_values: 4096,
            strict: false,
        };
        let v = Decoder::new(payload, opts)
            .decode_all()
            .map_err(ExtendedError::Bencode)?;
        let d = v.as_dict().ok_or(ExtendedError::NotDict)?;
        let mut h = Self::default();
        if let Some(m) = d.get(b"m").and_then(|m| m.as_dict()) {
            for (name, id) in m.iter() {
                if let (Ok(name), Some(id)) = (std::str::from_utf8(name), id.as_int()) {
                    if let Ok(id) = u8::try_from(id) {
                        h.extensions.insert(name.to_owned(), id);
                    }
                }
            }
        }
        let int = |k: &[u8]| d.get(k).and_then(|v| v.as_int());
        h.listen_port = int(b"p")
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0);
        h.client = d
            .get(b"v")
            .and_then(|v| v.as_bytes())
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned());
        h.your_ip = d
            .get(b"yourip")
            .and_then(|v| v.as_bytes())
            .and_then(ip_from_bytes);
        h.ipv4 = d
            .get(b"ipv4")
            .and_then(|v| v.as_bytes())
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(Ipv4Addr::from);
        h.ipv6 = d
            .get(b"ipv6")
            .and_then(|v| v.as_bytes())
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from);
        h.request_queue = int(b"reqq").and_then(|q| u32::try_from(q).ok());
        h.metadata_size = int(b"metadata_size").and_then(|s| u64::try_from(s).ok());
        h.upload_only = int(b"upload_only").is_some_and(|u| u != 0);
        Ok(h)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = BTreeMap::new();
        let m = self
            .extensions
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), V::Int(i64::from(*v))))
            .collect();
        d.insert(b"m".to_vec(), V::Dict(m));
        if let Some(p) = self.listen_port {
            d.insert(b"p".to_vec(), V::Int(i64::from(p)));
        }
        if let Some(v) = &self.client {
            d.insert(b"v".to_vec(), V::str(v));
        }
        if let Some(ip) = self.your_ip {
            d.insert(b"yourip".to_vec(), V::Bytes(ip_to_bytes(ip)));
        }
        if let Some(ip) = self.ipv4 {
            d.insert(b"ipv4".to_vec(), V::Bytes(ip.octets().to_vec()));
        }
        if let Some(ip) = self.ipv6 {
            d.insert(b"ipv6".to_vec(), V::Bytes(ip.octets().to_vec()));
        }
        if let Some(q) = self.request_queue {
            d.insert(b"reqq".to_vec(), V::Int(i64::from(q)));
        }
        if let Some(s) = self.metadata_size {
            d.insert(b"metadata_size".to_vec(), V::Int(s as i64));
        }
        if self.upload_only {
            d.insert(b"upload_only".to_vec(), V::Int(1));
        }
        V::Dict(d).encode()
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(|a| IpAddr::V4(a.into())),
        16 => <[u8; 16]>::try_from(b).ok().map(|a| IpAddr::V6(a.into())),
        _ => None,
    }
}

fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut h = ExtendedHandshake {
            listen_port: Some(6881),
            client: Some("Lodestone 0.1.0".into()),
            your_ip: Some("127.0.0.2".parse().unwrap()),
            ipv6: Some("::1".parse().unwrap()),
            request_queue: Some(500),
            metadata_size: Some(31_235),
            ..Default::default()
        };
        h.extensions.insert(UT_METADATA.into(), 3);
        h.extensions.insert(UT_PEX.into(), 0);
        let d = ExtendedHandshake::decode(&h.encode()).unwrap();
        assert_eq!(d, h);
        assert_eq!(d.id_of(UT_METADATA), Some(3));
        assert_eq!(d.id_of(UT_PEX), None);
    }

    #[test]
    fn lenient_with_odd_values() {
        // Unsorted keys, a negative port, an id out of range, a 5-byte IP.
        let raw =
            b"d1:pi-1e1:md11:ut_metadatai300e6:ut_pexi2ee6:yourip5:abcde13:metadata_sizei-5ee";
        let d = ExtendedHandshake::decode(raw).unwrap();
        assert_eq!(d.listen_port, None);
        assert_eq!(d.id_of(UT_METADATA), None);
        assert_eq!(d.id_of(UT_PEX), Some(2));
        assert_eq!(d.your_ip, None);
        assert_eq!(d.metadata_size, None);
        assert!(ExtendedHandshake::decode(b"i1e").is_err());
        assert!(ExtendedHandshake::decode(b"d1:m").is_err());
    }
}
