//! BEP 9 `ut_metadata` messages: a bencoded dictionary, then (for `data`)
//! the raw piece of the info dictionary.

use std::collections::BTreeMap;

use bytes::Bytes;
use lodestone_bencode::{DecodeOptions, Decoder, OwnedValue as V};

/// Metadata is exchanged in 16 KiB pieces.
pub const METADATA_PIECE_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMessage {
    Request {
        piece: u32,
    },
    Data {
        piece: u32,
        total_size: u64,
        data: Bytes,
    },
    Reject {
        piece: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("ut_metadata message is not bencode: {0}")]
    Bencode(lodestone_bencode::DecodeError),
    #[error("ut_metadata message lacks a valid '{0}'")]
    Missing(&'static str),
    #[error("ut_metadata msg_type {0} is unknown")]
    UnknownType(i64),
    #[error("ut_metadata data piece is {0} bytes, more than 16 KiB")]
    TooLong(usize),
    #[error("ut_metadata {0} message carries trailing bytes")]
    Trailing(&'static str),
}

impl MetadataMessage {
    pub fn decode(payload: &Bytes) -> Result<Self, MetadataError> {
        let opts = DecodeOptions {
            max_depth: 4,
            max_values: 64,
            strict: false,
        };
        let (v, used) = Decoder::new(payload, opts)
            .decode_prefix()
            .map_err(MetadataError::Bencode)?;
        let d = v.as_dict().ok_or(MetadataError::Missing("msg_type"))?;
        let int = |k: &[u8]| d.get(k).and_then(|v| v.as_int());
        let msg_type = int(b"msg_type").ok_or(MetadataError::Missing("msg_type"))?;
        let piece = int(b"piece")
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(MetadataError::Missing("piece"))?;
        let rest = payload.len() - used;
        match msg_type {
            0 if rest == 0 => Ok(Self::Request { piece }),
            2 if rest == 0 => Ok(Self::Reject { piece }),
            0 => Err(MetadataError::Trailing("request")),
            2 => Err(MetadataError::Trailing("reject")),
            1 => {
                let total_size = int(b"total_size")
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or(MetadataError::Missing("total_size"))?;
                if rest > METADATA_PIECE_LEN {
                    return Err(MetadataError::TooLong(rest));
                }
                Ok(Self::Data {
                    piece,
                    total_size,
                    data: payload.slice(used..),
                })
            }
            other => Err(MetadataError::UnknownType(other)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = BTreeMap::new();
        let (t, piece) = match self {
            Self::Request { piece } => (0, piece),
            Self::Data { piece, .. } => (1, piece),
            Self::Reject { piece } => (2, piece),
        };
        d.insert(b"msg_type".to_vec(), V::Int(t));
        d.insert(b"piece".to_vec(), V::Int(i64::from(*piece)));
        if let Self::Data { total_size, .. } = self {
            d.insert(b"total_size".to_vec(), V::Int(*total_size as i64));
        }
        let mut out = V::Dict(d).encode();
        if let Self::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for m in [
            MetadataMessage::Request { piece: 2 },
            MetadataMessage::Reject { piece: 0 },
            MetadataMessage::Data {
                piece: 1,
                total_size: 20_000,
                data: Bytes::from(vec![b'e'; 3616]),
            },
        ] {
            assert_eq!(MetadataMessage::decode(&Bytes::from(m.encode())), Ok(m));
        }
    }

    #[test]
    fn hostile() {
        let d = |b: &'static [u8]| MetadataMessage::decode(&Bytes::from_static(b));
        assert_eq!(
            d(b"d8:msg_typei7e5:piecei0ee"),
            Err(MetadataError::UnknownType(7))
        );
        assert_eq!(d(b"d8:msg_typei0ee"), Err(MetadataError::Missing("piece")));
        assert_eq!(
            d(b"d8:msg_typei0e5:piecei-1ee"),
            Err(MetadataError::Missing("piece"))
        );
        assert_eq!(
            d(b"d8:msg_typei1e5:piecei0ee"),
            Err(MetadataError::Missing("total_size"))
        );
        assert_eq!(
            d(b"d8:msg_typei0e5:piecei0eeXX"),
            Err(MetadataError::Trailing("request"))
        );
        let mut big = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        big.extend(vec![0; 16385]);
        assert_eq!(
            MetadataMessage::decode(&Bytes::from(big)),
            Err(MetadataError::TooLong(16385))
        );
    }
}
