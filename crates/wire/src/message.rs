use bytes::{Buf, BufMut, Bytes, BytesMut};
use lodestone_core::PieceIndex;

/// Largest block we ever ask for or accept in a `piece` message.
pub const MAX_BLOCK_LEN: u32 = 16 * 1024;

/// The peer broke the protocol; the connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a BitTorrent handshake")]
    NotBitTorrent,
    #[error("message of {len} bytes is longer than the {max}-byte limit")]
    TooLong { len: u32, max: u32 },
    #[error("message id {id} has length {len}, which is wrong for it")]
    BadLength { id: u8, len: u32 },
    #[error("bitfield is {len} bytes, expected {expected}")]
    BadBitfieldLength { len: u32, expected: u32 },
}

/// Limits that depend on the torrent and our configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pieces in the torrent, once known (before the metadata is, a magnet
    /// session bounds bitfields by `max_bitfield_bytes` only).
    pub num_pieces: Option<u32>,
    pub max_bitfield_bytes: u32,
    /// Largest extension message (ut_metadata carries 16 KiB plus a header).
    pub max_extended: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            num_pieces: None,
            // 2^20 bytes = 8M pieces, beyond any real torrent.
            max_bitfield_bytes: 1 << 20,
            max_extended: 64 * 1024,
        }
    }
}

impl Limits {
    pub fn for_pieces(num_pieces: u32) -> Self {
        Self {
            num_pieces: Some(num_pieces),
            ..Self::default()
        }
    }

    fn bitfield_bytes(&self) -> u32 {
        match self.num_pieces {
            Some(n) => n.div_ceil(8),
            None => self.max_bitfield_bytes,
        }
    }

    /// The longest message body (id + payload) we accept.
    pub fn max_message_len(&self) -> u32 {
        (1 + 8 + MAX_BLOCK_LEN)
            .max(1 + self.bitfield_bytes())
            .max(2 + self.max_extended)
    }
}

/// A block request, as in `request`, `cancel` and `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRequest {
    pub piece: PieceIndex,
    pub begin: u32,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(PieceIndex),
    /// Raw bitfield bytes; the length is already checked when the piece count is known.
    Bitfield(Bytes),
    Request(BlockRequest),
    Piece {
        piece: PieceIndex,
        begin: u32,
        data: Bytes,
    },
    Cancel(BlockRequest),
    /// BEP 5: the peer's DHT port.
    Port(u16),
    // BEP 6
    Suggest(PieceIndex),
    HaveAll,
    HaveNone,
    Reject(BlockRequest),
    AllowedFast(PieceIndex),
    /// BEP 10: `id` 0 is the extension handshake.
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// A message id we do not know; BEP 3 says to ignore it.
    Unknown {
        id: u8,
    },
}

mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0d;
    pub const HAVE_ALL: u8 = 0x0e;
    pub const HAVE_NONE: u8 = 0x0f;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    pub const EXTENDED: u8 = 20;
}

/// Take one complete message off the front of `buf`. `Ok(None)` means more
/// bytes are needed; the length prefix is checked against `limits` first,
/// so a hostile 2^31 length fails at once, with nothing allocated.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Message>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let max = limits.max_message_len();
    if len > max {
        return Err(WireError::TooLong { len, max });
    }
    if buf.len() < 4 + len as usize {
        return Ok(None);
    }
    buf.advance(4);
    if len == 0 {
        return Ok(Some(Message::KeepAlive));
    }
    let mut body = buf.split_to(len as usize).freeze();
    let id = body.get_u8();
    let plen = len - 1;
    let bad = || WireError::BadLength { id, len };
    let exact = |n: u32| if plen == n { Ok(()) } else { Err(bad()) };
    let request = |b: &mut Bytes| BlockRequest {
        piece: PieceIndex(b.get_u32()),
        begin: b.get_u32(),
        len: b.get_u32(),
    };
    let msg = match id {
        id::CHOKE => exact(0).map(|()| Message::Choke)?,
        id::UNCHOKE => exact(0).map(|()| Message::Unchoke)?,
        id::INTERESTED => exact(0).map(|()| Message::Interested)?,
        id::NOT_INTERESTED => exact(0).map(|()| Message::NotInterested)?,
        id::HAVE_ALL => exact(0).map(|()| Message::HaveAll)?,
        id::HAVE_NONE => exact(0).map(|()| Message::HaveNone)?,
        id::HAVE => {
            exact(4)?;
            Message::Have(PieceIndex(body.get_u32()))
        }
        id::SUGGEST => {
            exact(4)?;
            Message::Suggest(PieceIndex(body.get_u32()))
        }
        id::ALLOWED_FAST => {
            exact(4)?;
            Message::AllowedFast(PieceIndex(body.get_u32()))
        }
        id::REQUEST => {
            exact(12)?;
            Message::Request(request(&mut body))
        }
        id::CANCEL => {
            exact(12)?;
            Message::Cancel(request(&mut body))
        }
        id::REJECT => {
            exact(12)?;
            Message::Reject(request(&mut body))
        }
        id::PORT => {
            exact(2)?;
            Message::Port(body.get_u16())
        }
        id::BITFIELD => {
            let expected = limits.bitfield_bytes();
            let ok = match limits.num_pieces {
                Some(_) => plen == expected,
                None => plen <= expected,
            };
            if !ok {
                return Err(WireError::BadBitfieldLength {
                    len: plen,
                    expected,
                });
            }
            Message::Bitfield(body)
        }
        id::PIECE => {
            if plen < 8 || plen - 8 > MAX_BLOCK_LEN {
                return Err(bad());
            }
            let piece = PieceIndex(body.get_u32());
            let begin = body.get_u32();
            Message::Piece {
                piece,
                begin,
                data: body,
            }
        }
        id::EXTENDED => {
            if plen < 1 || plen - 1 > limits.max_extended {
                return Err(bad());
            }
            let ext = body.get_u8();
            Message::Extended {
                id: ext,
                payload: body,
            }
        }
        other => Message::Unknown { id: other },
    };
    Ok(Some(msg))
}

impl Message {
    /// Append the framed message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let simple = |out: &mut BytesMut, id: u8| {
            out.put_u32(1);
            out.put_u8(id);
        };
        let with_u32 = |out: &mut BytesMut, id: u8, v: u32| {
            out.put_u32(5);
            out.put_u8(id);
            out.put_u32(v);
        };
        let with_request = |out: &mut BytesMut, id: u8, r: &BlockRequest| {
            out.put_u32(13);
            out.put_u8(id);
            out.put_u32(r.piece.0);
            out.put_u32(r.begin);
            out.put_u32(r.len);
        };
        match self {
            Self::KeepAlive => out.put_u32(0),
            Self::Choke => simple(out, id::CHOKE),
            Self::Unchoke => simple(out, id::UNCHOKE),
            Self::Interested => simple(out, id::INTERESTED),
            Self::NotInterested => simple(out, id::NOT_INTERESTED),
            Self::HaveAll => simple(out, id::HAVE_ALL),
            Self::HaveNone => simple(out, id::HAVE_NONE),
            Self::Have(p) => with_u32(out, id::HAVE, p.0),
            Self::Suggest(p) => with_u32(out, id::SUGGEST, p.0),
            Self::AllowedFast(p) => with_u32(out, id::ALLOWED_FAST, p.0),
            Self::Request(r) => with_request(out, id::REQUEST, r),
            Self::Cancel(r) => with_request(out, id::CANCEL, r),
            Self::Reject(r) => with_request(out, id::REJECT, r),
            Self::Port(p) => {
                out.put_u32(3);
                out.put_u8(id::PORT);
                out.put_u16(*p);
            }
            Self::Bitfield(b) => {
                out.put_u32(1 + b.len() as u32);
                out.put_u8(id::BITFIELD);
                out.put_slice(b);
            }
            Self::Piece { piece, begin, data } => {
                encode_piece_header(*piece, *begin, data.len() as u32, out);
                out.put_slice(data);
            }
            Self::Extended { id: ext, payload } => {
                out.put_u32(2 + payload.len() as u32);
                out.put_u8(id::EXTENDED);
                out.put_u8(*ext);
                out.put_slice(payload);
            }
            Self::Unknown { id } => simple(out, *id),
        }
    }
}

/// The 13-byte header of a `piece` message whose `len` data bytes the
/// caller sends next (straight from the disk buffer, without a copy).
pub fn encode_piece_header(piece: PieceIndex, begin: u32, len: u32, out: &mut BytesMut) {
    out.put_u32(9 + len);
    out.put_u8(id::PIECE);
    out.put_u32(piece.0);
    out.put_u32(begin);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Message, limits: &Limits) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        // Arrives one byte at a time: no message until it is complete.
        let mut partial = BytesMut::new();
        let total = buf.len();
        for (i, b) in buf.iter().enumerate() {
            partial.put_u8(*b);
            let got = decode(&mut partial, limits).unwrap();
            if i + 1 < total {
                assert_eq!(got, None, "{m:?} at byte {i}");
            } else {
                assert_eq!(got, Some(m.clone()));
            }
        }
        assert!(partial.is_empty());
    }

    #[test]
    fn every_message_roundtrips() {
        let r = BlockRequest {
            piece: PieceIndex(3),
            begin: 16384,
            len: 16384,
        };
        let limits = Limits::for_pieces(20);
        for m in [
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(PieceIndex(7)),
            Message::Bitfield(Bytes::from_static(&[0xff, 0xff, 0xf0])),
            Message::Request(r),
            Message::Piece {
                piece: PieceIndex(1),
                begin: 0,
                data: Bytes::from(vec![9u8; 16384]),
            },
            Message::Cancel(r),
            Message::Port(6881),
            Message::Suggest(PieceIndex(2)),
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject(r),
            Message::AllowedFast(PieceIndex(4)),
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"d1:md11:ut_metadatai1eee"),
            },
            Message::Unknown { id: 99 },
        ] {
            roundtrip(m, &limits);
        }
    }

    #[test]
    fn hostile_lengths() {
        let limits = Limits::for_pieces(20);
        let mut huge = BytesMut::from(&[0x80, 0, 0, 0][..]);
        assert_eq!(
            decode(&mut huge, &limits),
            Err(WireError::TooLong {
                len: 1 << 31,
                max: limits.max_message_len()
            })
        );
        // A piece message with more than 16 KiB of data.
        let mut big = BytesMut::new();
        encode_piece_header(PieceIndex(0), 0, 16385, &mut big);
        big.extend_from_slice(&vec![0; 16385]);
        assert_eq!(
            decode(&mut big, &limits),
            Err(WireError::BadLength {
                id: 7,
                len: 9 + 16385
            })
        );
        // Fixed-size messages with the wrong size.
        let mut have = BytesMut::from(&[0, 0, 0, 3, 4, 0, 0][..]);
        assert_eq!(
            decode(&mut have, &limits),
            Err(WireError::BadLength { id: 4, len: 3 })
        );
        let mut choke = BytesMut::from(&[0, 0, 0, 2, 0, 0][..]);
        assert_eq!(
            decode(&mut choke, &limits),
            Err(WireError::BadLength { id: 0, len: 2 })
        );
    }

    #[test]
    fn bitfield_length_is_exact_once_pieces_are_known() {
        let mut bf = BytesMut::from(&[0, 0, 0, 3, 5, 0xff, 0xff][..]);
        assert_eq!(
            decode(&mut bf, &Limits::for_pieces(20)),
            Err(WireError::BadBitfieldLength {
                len: 2,
                expected: 3
            })
        );
        let mut bf = BytesMut::from(&[0, 0, 0, 3, 5, 0xff, 0xff][..]);
        assert!(matches!(
            decode(&mut bf, &Limits::default()),
            Ok(Some(Message::Bitfield(_)))
        ));
    }

    #[test]
    fn several_messages_in_one_buffer() {
        let mut buf = BytesMut::new();
        Message::Unchoke.encode(&mut buf);
        Message::Have(PieceIndex(1)).encode(&mut buf);
        let limits = Limits::default();
        assert_eq!(decode(&mut buf, &limits), Ok(Some(Message::Unchoke)));
        assert_eq!(
            decode(&mut buf, &limits),
            Ok(Some(Message::Have(PieceIndex(1))))
        );
        assert_eq!(decode(&mut buf, &limits), Ok(None));
    }
}
