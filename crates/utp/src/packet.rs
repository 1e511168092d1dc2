//! The BEP 29 packet: a 20-byte header, a chain of extensions (selective
//! ack is the one we read and write; others are skipped by length), then
//! the payload. Parsing borrows the datagram and never panics.

use crate::seq::Seq;
use thiserror::Error;

pub const HEADER_LEN: usize = 20;
/// The protocol version in the low nibble of the first byte.
pub const VERSION: u8 = 1;
const EXT_NONE: u8 = 0;
const EXT_SELECTIVE_ACK: u8 = 1;
/// Ours: "I read datagrams up to this many bytes" (2 bytes, big-endian), on
/// the SYN and the answer to it. libtorrent and libutp read datagrams into
/// 1,500 and 4,096 bytes (taking a longer one truncated), so a peer that
/// does not say this gets nothing longer than Ethernet's frame, however
/// large the path's MTU. libtorrent skips it; Transmission 3.00's libutp
/// drops a SYN that carries it, so it is sent only when configured.
const EXT_MAX_DATAGRAM: u8 = 0x4c;
/// The longest selective-ack bitmask we read or write: 1,024 packets past
/// `ack_nr + 1`, more than any window we keep in flight.
pub const MAX_SACK_BYTES: usize = 128;
/// Extensions a packet may chain before we call it garbage.
const MAX_EXTENSIONS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data = 0,
    Fin = 1,
    State = 2,
    Reset = 3,
    Syn = 4,
}

impl Kind {
    fn from_nibble(n: u8) -> Option<Kind> {
        Some(match n {
            0 => Kind::Data,
            1 => Kind::Fin,
            2 => Kind::State,
            3 => Kind::Reset,
            4 => Kind::Syn,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub conn_id: u16,
    pub timestamp_us: u32,
    pub timestamp_diff_us: u32,
    pub wnd_size: u32,
    pub seq_nr: Seq,
    pub ack_nr: Seq,
}

/// A parsed packet borrowing from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// The selective-ack bitmask, if the packet carried one: bit `i`
    /// (least significant bit of byte 0 first) acks `ack_nr + 2 + i`.
    pub sack: Option<&'a [u8]>,
    /// The largest datagram the sender reads, if it said (our extension).
    pub max_datagram: Option<u16>,
    pub payload: &'a [u8],
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    #[error("{0} bytes is shorter than the 20-byte uTP header")]
    Short(usize),
    #[error("version {0} is not uTP version 1")]
    Version(u8),
    #[error("packet type {0} is not one of DATA, FIN, STATE, RESET, SYN")]
    Kind(u8),
    #[error("extension {ext} declares {len} bytes but {left} remain")]
    ExtensionOverrun { ext: u8, len: usize, left: usize },
    #[error("selective ack of {0} bytes is empty or longer than {MAX_SACK_BYTES}")]
    SackLength(usize),
    #[error("more than {MAX_EXTENSIONS} chained extensions")]
    TooManyExtensions,
    #[error("{kind:?} packet carries {len} bytes of payload")]
    UnexpectedPayload { kind: Kind, len: usize },
}

/// Does this datagram look like uTP rather than KRPC? Bencoded KRPC always
/// starts with `d`, whose low nibble (4) is not uTP's version (1); this is
/// the test libtorrent uses to share one UDP port between DHT and uTP.
pub fn looks_like_utp(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] & 0x0f == VERSION && datagram[0] >> 4 <= 4
}

impl<'a> Packet<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        if buf.len() < HEADER_LEN {
            return Err(PacketError::Short(buf.len()));
        }
        let version = buf[0] & 0x0f;
        if version != VERSION {
            return Err(PacketError::Version(version));
        }
        let kind = Kind::from_nibble(buf[0] >> 4).ok_or(PacketError::Kind(buf[0] >> 4))?;
        let be16 = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let header = Header {
            kind,
            conn_id: be16(2),
            timestamp_us: be32(4),
            timestamp_diff_us: be32(8),
            wnd_size: be32(12),
            seq_nr: Seq(be16(16)),
            ack_nr: Seq(be16(18)),
        };
        let mut next_ext = buf[1];
        let mut at = HEADER_LEN;
        let mut sack = None;
        let mut max_datagram = None;
        let mut count = 0;
        while next_ext != EXT_NONE {
            count += 1;
            if count > MAX_EXTENSIONS {
                return Err(PacketError::TooManyExtensions);
            }
            let left = buf.len() - at;
            if left < 2 {
                return Err(PacketError::ExtensionOverrun {
                    ext: next_ext,
                    len: 2,
                    left,
                });
            }
            let (ext, following, len) = (next_ext, buf[at], buf[at + 1] as usize);
            if left - 2 < len {
                return Err(PacketError::ExtensionOverrun {
                    ext,
                    len,
                    left: left - 2,
                });
            }
            let body = &buf[at + 2..at + 2 + len];
            if ext == EXT_SELECTIVE_ACK {
                // BEP 29 asks for a multiple of 4 bytes, but libtorrent
                // sends just the bytes its bitmask needs (1, 3, ...): take
                // any non-zero length, as libtorrent and libutp do.
                if len == 0 || len > MAX_SACK_BYTES {
                    return Err(PacketError::SackLength(len));
                }
                sack = Some(body);
            } else if ext == EXT_MAX_DATAGRAM && len == 2 {
                max_datagram = Some(u16::from_be_bytes([body[0], body[1]]));
            }
            at += 2 + len;
            next_ext = following;
        }
        let payload = &buf[at..];
        if !payload.is_empty() && matches!(kind, Kind::State | Kind::Reset | Kind::Syn) {
            return Err(PacketError::UnexpectedPayload {
                kind,
                len: payload.len(),
            });
        }
        Ok(Packet {
            header,
            sack,
            max_datagram,
            payload,
        })
    }
}

impl Header {
    /// Writes the header (and a selective ack, if given) into `out`, which
    /// is cleared first; the caller appends the payload.
    pub fn encode(&self, sack: Option<&[u8]>, out: &mut Vec<u8>) {
        self.encode_with(sack, None, out);
    }

    /// [`Self::encode`], saying the largest datagram we read too.
    pub fn encode_with(&self, sack: Option<&[u8]>, max_datagram: Option<u16>, out: &mut Vec<u8>) {
        out.clear();
        let ext = match (max_datagram, sack) {
            (Some(_), _) => EXT_MAX_DATAGRAM,
            (None, Some(_)) => EXT_SELECTIVE_ACK,
            (None, None) => EXT_NONE,
        };
        out.push(((self.kind as u8) << 4) | VERSION);
        out.push(ext);
        out.extend_from_slice(&self.conn_id.to_be_bytes());
        out.extend_from_slice(&self.timestamp_us.to_be_bytes());
        out.extend_from_slice(&self.timestamp_diff_us.to_be_bytes());
        out.extend_from_slice(&self.wnd_size.to_be_bytes());
        out.extend_from_slice(&self.seq_nr.0.to_be_bytes());
        out.extend_from_slice(&self.ack_nr.0.to_be_bytes());
        if let Some(max) = max_datagram {
            out.push(if sack.is_some() {
                EXT_SELECTIVE_ACK
            } else {
                EXT_NONE
            });
            out.push(2);
            out.extend_from_slice(&max.to_be_bytes());
        }
        if let Some(mask) = sack {
            // What we send is a multiple of 4 bytes (BEP 29); what we parse
            // (and the fuzzer encodes again) may be any non-zero length.
            debug_assert!(!mask.is_empty() && mask.len() <= MAX_SACK_BYTES);
            out.push(EXT_NONE);
            out.push(mask.len() as u8);
            out.extend_from_slice(mask);
        }
    }

    /// The encoded length of a header with a selective ack of `sack` bytes.
    pub fn len_with(sack: usize) -> usize {
        if sack == 0 {
            HEADER_LEN
        } else {
            HEADER_LEN + 2 + sack
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            conn_id: 0xbeef,
            timestamp_us: 0x0102_0304,
            timestamp_diff_us: 7,
            wnd_size: 1 << 20,
            seq_nr: Seq(65535),
            ack_nr: Seq(12),
        }
    }

    #[test]
    fn round_trips_with_selective_ack_and_payload() {
        let mut out = Vec::new();
        let mask = [0b0000_0101, 0, 0, 0x80];
        header(Kind::Data).encode(Some(&mask), &mut out);
        out.extend_from_slice(b"hello");
        let p = Packet::parse(&out).unwrap();
        assert_eq!(p.header, header(Kind::Data));
        assert_eq!(p.sack, Some(&mask[..]));
        assert_eq!(p.payload, b"hello");
        assert_eq!(out.len(), Header::len_with(4) + 5);
    }

    #[test]
    fn skips_unknown_extensions_and_rejects_overruns() {
        let mut out = Vec::new();
        header(Kind::State).encode(None, &mut out);
        out[1] = 9; // an extension we do not know, 3 bytes long, then none
        out.extend_from_slice(&[0, 3, 1, 2, 3]);
        let p = Packet::parse(&out).unwrap();
        assert_eq!(p.sack, None);
        assert!(p.payload.is_empty());
        out[21] = 200;
        assert!(matches!(
            Packet::parse(&out),
            Err(PacketError::ExtensionOverrun { .. })
        ));
    }

    #[test]
    fn carries_our_max_datagram_extension_before_a_selective_ack() {
        let mut out = Vec::new();
        header(Kind::State).encode_with(Some(&[1, 0, 0, 0]), Some(16_384), &mut out);
        let p = Packet::parse(&out).unwrap();
        assert_eq!(p.max_datagram, Some(16_384));
        assert_eq!(p.sack, Some(&[1u8, 0, 0, 0][..]));
        // Its id and 2-byte body, then the sack: a parser that does not
        // know it skips it by length (libtorrent's and libutp's do).
        assert_eq!(out[1], EXT_MAX_DATAGRAM);
        assert_eq!(&out[20..24], &[EXT_SELECTIVE_ACK, 2, 0x40, 0x00]);
    }

    #[test]
    fn takes_a_selective_ack_of_any_length_as_libtorrent_sends_them() {
        // On the wire from libtorrent 2.0.8: a STATE with a 1-byte and one
        // with a 3-byte bitmask (BEP 29 says a multiple of 4; libtorrent
        // sends (span + 7) / 8 bytes). Dropping them lost every ack and
        // DATA packet after the first loss, and the connection stalled.
        for mask in [&[0x60u8][..], &[0, 0, 0xfc][..]] {
            let mut out = Vec::new();
            header(Kind::State).encode(None, &mut out);
            out[1] = 1;
            out.extend_from_slice(&[0, mask.len() as u8]);
            out.extend_from_slice(mask);
            let p = Packet::parse(&out).unwrap();
            assert_eq!(p.sack, Some(mask));
            let mut data = out.clone();
            data[0] = (Kind::Data as u8) << 4 | 1;
            data.extend_from_slice(b"payload");
            assert_eq!(Packet::parse(&data).unwrap().payload, b"payload");
        }
    }

    #[test]
    fn rejects_bad_versions_kinds_and_sack_lengths() {
        let mut out = Vec::new();
        header(Kind::Syn).encode(None, &mut out);
        let mut v2 = out.clone();
        v2[0] = (4 << 4) | 2;
        assert_eq!(Packet::parse(&v2), Err(PacketError::Version(2)));
        let mut k = out.clone();
        k[0] = (5 << 4) | 1;
        assert_eq!(Packet::parse(&k), Err(PacketError::Kind(5)));
        assert_eq!(Packet::parse(&out[..19]), Err(PacketError::Short(19)));
        let mut s = out.clone();
        s[1] = 1;
        s.extend_from_slice(&[0, 0]);
        assert_eq!(Packet::parse(&s), Err(PacketError::SackLength(0)));
        let mut s = out.clone();
        s[1] = 1;
        s.extend_from_slice(&[0, 129]);
        s.extend_from_slice(&[0; 129]);
        assert_eq!(Packet::parse(&s), Err(PacketError::SackLength(129)));
        let mut p = out.clone();
        p.push(0);
        assert!(matches!(
            Packet::parse(&p),
            Err(PacketError::UnexpectedPayload { .. })
        ));
    }

    #[test]
    fn krpc_is_never_taken_for_utp() {
        assert!(!looks_like_utp(
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
        ));
        let mut out = Vec::new();
        header(Kind::Syn).encode(None, &mut out);
        assert!(looks_like_utp(&out));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn encode_then_parse_is_identity(
            kind in 0u8..5, conn in any::<u16>(), ts in any::<u32>(), diff in any::<u32>(),
            wnd in any::<u32>(), seq in any::<u16>(), ack in any::<u16>(),
            words in 0usize..4, payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let h = Header {
                kind: Kind::from_nibble(kind).unwrap(), conn_id: conn, timestamp_us: ts,
                timestamp_diff_us: diff, wnd_size: wnd, seq_nr: Seq(seq), ack_nr: Seq(ack),
            };
            let mask = vec![0xa5u8; words * 4];
            let mut out = Vec::new();
            h.encode(if words > 0 { Some(&mask) } else { None }, &mut out);
            let payload_ok = matches!(h.kind, Kind::Data | Kind::Fin);
            if payload_ok { out.extend_from_slice(&payload); }
            let p = Packet::parse(&out).unwrap();
            prop_assert_eq!(p.header, h);
            prop_assert_eq!(p.sack.map(|s| s.len()).unwrap_or(0), words * 4);
            if payload_ok { prop_assert_eq!(p.payload, &payload[..]); }
        }
    }
}
