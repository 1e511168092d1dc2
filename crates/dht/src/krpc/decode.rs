//! Datagram to [`Message`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use lodestone_bencode::{DecodeOptions, Decoder, Dict, Value};
use lodestone_core::InfoHash;

use super::{
    cap_str, Body, CompactNode, CompactNode6, KrpcError, Message, MethodName, MutablePut, Query,
    RawValue, Response, Token, TransactionId, Version, Want, BLOOM_LEN, COMPACT_NODE6_LEN,
    COMPACT_NODE_LEN, MAX_BENCODE_VALUES, MAX_DEPTH, MAX_ERROR_MESSAGE_LEN, MAX_NODES,
    MAX_PACKET_LEN, MAX_SALT_LEN, MAX_SAMPLES, MAX_VALUES,
};
use crate::id::{NodeId, ID_LEN};

const OPTIONS: DecodeOptions = DecodeOptions {
    max_depth: MAX_DEPTH,
    max_values: MAX_BENCODE_VALUES,
    strict: false,
};

const STRING: &str = "string";
const INTEGER: &str = "integer";
const DICT: &str = "dictionary";
const LIST: &str = "list";

fn root(bytes: &[u8]) -> Result<Value<'_>, KrpcError> {
    if bytes.len() > MAX_PACKET_LEN {
        return Err(KrpcError::TooLong(bytes.len()));
    }
    Decoder::new(bytes, OPTIONS)
        .decode_all()
        .map_err(KrpcError::Bencode)
}

pub(super) fn message(bytes: &[u8]) -> Result<Message, KrpcError> {
    let root = root(bytes)?;
    let d = root.as_dict().ok_or(KrpcError::NotDict)?;
    let transaction_id = transaction_id(d)?;
    let body = match req_bytes(d, "y")? {
        b"q" => Body::Query(query(d, transaction_id)?),
        b"r" => Body::Response(response(req_dict(d, "r")?)?),
        b"e" => error(d)?,
        _ => return Err(KrpcError::BadValue { key: "y" }),
    };
    Ok(Message {
        transaction_id,
        body,
        // Informative only: a malformed one is dropped, not an error.
        version: d.get(b"v").and_then(Value::as_bytes).and_then(Version::new),
        read_only: flag(d, "ro")?,
        your_ip: d
            .get(b"ip")
            .and_then(Value::as_bytes)
            .and_then(compact_addr),
    })
}

/// The transaction id of `bytes` if it is a query with a usable `t`, even
/// when the rest of it is malformed: what to answer error 203 to after
/// [`Message::decode`] failed. `None` for anything that is not a query
/// (replying to a bad response or error would invite loops).
pub fn query_transaction_id(bytes: &[u8]) -> Option<TransactionId> {
    let root = root(bytes).ok()?;
    let d = root.as_dict()?;
    if d.get(b"y")?.as_bytes()? != b"q" {
        return None;
    }
    transaction_id(d).ok()
}

fn transaction_id(d: &Dict<'_>) -> Result<TransactionId, KrpcError> {
    TransactionId::new(req_bytes(d, "t")?).ok_or(KrpcError::BadTransactionId)
}

fn query(d: &Dict<'_>, transaction_id: TransactionId) -> Result<Query, KrpcError> {
    let method = req_bytes(d, "q")?;
    // The method is checked before `a`, so that any unknown query can be
    // answered with 204.
    if !matches!(
        method,
        b"ping"
            | b"find_node"
            | b"get_peers"
            | b"announce_peer"
            | b"get"
            | b"put"
            | b"sample_infohashes"
    ) {
        return Err(KrpcError::UnknownMethod {
            transaction_id,
            method: MethodName::truncated(method),
        });
    }
    let a = req_dict(d, "a")?;
    let id = req_id(a, "id")?;
    Ok(match method {
        b"ping" => Query::Ping { id },
        b"find_node" => Query::FindNode {
            id,
            target: req_id(a, "target")?,
            want: want(a)?,
        },
        b"get_peers" => Query::GetPeers {
            id,
            info_hash: InfoHash::from(req_id(a, "info_hash")?),
            want: want(a)?,
            scrape: flag(a, "scrape")?,
            no_seed: flag(a, "noseed")?,
        },
        b"announce_peer" => {
            let implied_port = flag(a, "implied_port")?;
            let port = match opt_int(a, "port")? {
                Some(p) => u16::try_from(p).map_err(|_| KrpcError::BadValue { key: "port" })?,
                None if implied_port => 0,
                None => return Err(KrpcError::MissingKey("port")),
            };
            Query::AnnouncePeer {
                id,
                info_hash: InfoHash::from(req_id(a, "info_hash")?),
                port,
                implied_port,
                token: req_token(a)?,
                seed: flag(a, "seed")?,
            }
        }
        b"get" => Query::Get {
            id,
            target: req_id(a, "target")?,
            seq: opt_int(a, "seq")?,
        },
        b"put" => {
            let token = req_token(a)?;
            let value = raw_value(a.get(b"v").ok_or(KrpcError::MissingKey("v"))?)?;
            let mutable = match opt_array::<32>(a, "k")? {
                None => None,
                Some(key) => Some(MutablePut {
                    key,
                    signature: opt_array::<64>(a, "sig")?.ok_or(KrpcError::MissingKey("sig"))?,
                    seq: opt_int(a, "seq")?.ok_or(KrpcError::MissingKey("seq"))?,
                    salt: salt(a)?,
                    cas: opt_int(a, "cas")?,
                }),
            };
            Query::Put {
                id,
                token,
                value,
                mutable,
            }
        }
        _ => Query::SampleInfohashes {
            id,
            target: req_id(a, "target")?,
        },
    })
}

fn response(r: &Dict<'_>) -> Result<Response, KrpcError> {
    Ok(Response {
        id: req_id(r, "id")?,
        nodes: compact_list(r, "nodes", COMPACT_NODE_LEN, MAX_NODES, |c| {
            let (id, addr) = c.split_first_chunk::<ID_LEN>()?;
            Some(CompactNode {
                id: NodeId(*id),
                addr: compact_v4(addr)?,
            })
        })?
        .unwrap_or_default(),
        nodes6: compact_list(r, "nodes6", COMPACT_NODE6_LEN, MAX_NODES, |c| {
            let (id, addr) = c.split_first_chunk::<ID_LEN>()?;
            Some(CompactNode6 {
                id: NodeId(*id),
                addr: compact_v6(addr)?,
            })
        })?
        .unwrap_or_default(),
        values: values(r)?,
        token: opt_bytes(r, "token")?
            .map(|t| {
                Token::new(t).ok_or(KrpcError::BadLength {
                    key: "token",
                    len: t.len(),
                })
            })
            .transpose()?,
        bf_seeds: opt_array::<BLOOM_LEN>(r, "BFsd")?.map(Box::new),
        bf_peers: opt_array::<BLOOM_LEN>(r, "BFpe")?.map(Box::new),
        samples: compact_list(r, "samples", ID_LEN, MAX_SAMPLES, |c| {
            NodeId::from_slice(c).map(InfoHash::from)
        })?,
        num: opt_int(r, "num")?,
        interval: opt_int(r, "interval")?,
        v: r.get(b"v").map(raw_value).transpose()?,
        k: opt_array::<32>(r, "k")?,
        sig: opt_array::<64>(r, "sig")?,
        seq: opt_int(r, "seq")?,
    })
}

/// `e`: `[code, message]`. The code must be an integer; a missing or
/// non-string message is read as empty.
fn error(d: &Dict<'_>) -> Result<Body, KrpcError> {
    const EXPECTED: &str = "list [integer, string]";
    let e = d.get(b"e").ok_or(KrpcError::MissingKey("e"))?;
    let wrong = KrpcError::WrongType {
        key: "e",
        expected: EXPECTED,
    };
    let list = e.as_list().ok_or(wrong)?;
    let code = list.first().and_then(Value::as_int).ok_or(wrong)?;
    let message = match list.get(1).and_then(Value::as_bytes) {
        // At most MAX_PACKET_LEN bytes, so the lossy copy is bounded.
        Some(raw) => {
            let s = String::from_utf8_lossy(raw);
            cap_str(&s, MAX_ERROR_MESSAGE_LEN).to_owned()
        }
        None => String::new(),
    };
    Ok(Body::Error { code, message })
}

fn want(a: &Dict<'_>) -> Result<Want, KrpcError> {
    let mut want = Want::NONE;
    if let Some(v) = a.get(b"want") {
        let list = v.as_list().ok_or(KrpcError::WrongType {
            key: "want",
            expected: LIST,
        })?;
        // BEP 32: other strings must be ignored.
        for item in list {
            match item.as_bytes() {
                Some(b"n4") => want.v4 = true,
                Some(b"n6") => want.v6 = true,
                _ => {}
            }
        }
    }
    Ok(want)
}

fn values(r: &Dict<'_>) -> Result<Vec<SocketAddr>, KrpcError> {
    let Some(v) = r.get(b"values") else {
        return Ok(Vec::new());
    };
    let list = v.as_list().ok_or(KrpcError::WrongType {
        key: "values",
        expected: LIST,
    })?;
    Ok(list
        .iter()
        .filter_map(|item| item.as_bytes().and_then(compact_addr))
        .take(MAX_VALUES)
        .collect())
}

fn salt(a: &Dict<'_>) -> Result<Vec<u8>, KrpcError> {
    match opt_bytes(a, "salt")? {
        Some(s) if s.len() > MAX_SALT_LEN => Err(KrpcError::BadLength {
            key: "salt",
            len: s.len(),
        }),
        Some(s) => Ok(s.to_vec()),
        None => Ok(Vec::new()),
    }
}

fn raw_value(v: &Value<'_>) -> Result<RawValue, KrpcError> {
    // The raw span of a value decoded leniently may still hold unsorted
    // keys; BEP 44 says to reject those, and `RawValue::new` checks it
    // strictly.
    RawValue::new(v.raw())
}

/// A string of fixed-size records. Its length must be a multiple of
/// `size`; records `parse` rejects (port 0) are skipped, and at most `cap`
/// are kept.
fn compact_list<T>(
    d: &Dict<'_>,
    key: &'static str,
    size: usize,
    cap: usize,
    parse: impl Fn(&[u8]) -> Option<T>,
) -> Result<Option<Vec<T>>, KrpcError> {
    let Some(b) = opt_bytes(d, key)? else {
        return Ok(None);
    };
    if b.len() % size != 0 {
        return Err(KrpcError::BadLength { key, len: b.len() });
    }
    Ok(Some(
        b.chunks_exact(size).filter_map(parse).take(cap).collect(),
    ))
}

/// Compact peer info: 6 bytes for IPv4, 18 for IPv6. `None` for other
/// lengths and for port 0.
fn compact_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => compact_v4(b).map(SocketAddr::V4),
        18 => compact_v6(b).map(SocketAddr::V6),
        _ => None,
    }
}

fn compact_v4(b: &[u8]) -> Option<SocketAddrV4> {
    let [a, b, c, d, p0, p1] = <[u8; 6]>::try_from(b).ok()?;
    let port = u16::from_be_bytes([p0, p1]);
    (port != 0).then(|| SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
}

fn compact_v6(b: &[u8]) -> Option<SocketAddrV6> {
    let (ip, port) = b.split_first_chunk::<16>()?;
    let port = u16::from_be_bytes(<[u8; 2]>::try_from(port).ok()?);
    let ip = *ip;
    (port != 0).then(|| SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
}

fn opt_bytes<'a>(d: &Dict<'a>, key: &'static str) -> Result<Option<&'a [u8]>, KrpcError> {
    d.get(key.as_bytes())
        .map(|v| {
            v.as_bytes().ok_or(KrpcError::WrongType {
                key,
                expected: STRING,
            })
        })
        .transpose()
}

fn req_bytes<'a>(d: &Dict<'a>, key: &'static str) -> Result<&'a [u8], KrpcError> {
    opt_bytes(d, key)?.ok_or(KrpcError::MissingKey(key))
}

fn req_dict<'d, 'a>(d: &'d Dict<'a>, key: &'static str) -> Result<&'d Dict<'a>, KrpcError> {
    d.get(key.as_bytes())
        .ok_or(KrpcError::MissingKey(key))?
        .as_dict()
        .ok_or(KrpcError::WrongType {
            key,
            expected: DICT,
        })
}

fn opt_int(d: &Dict<'_>, key: &'static str) -> Result<Option<i64>, KrpcError> {
    d.get(key.as_bytes())
        .map(|v| {
            v.as_int().ok_or(KrpcError::WrongType {
                key,
                expected: INTEGER,
            })
        })
        .transpose()
}

/// An integer flag: absent or 0 is `false`, any other integer `true`.
fn flag(d: &Dict<'_>, key: &'static str) -> Result<bool, KrpcError> {
    Ok(opt_int(d, key)?.is_some_and(|i| i != 0))
}

fn opt_array<const N: usize>(
    d: &Dict<'_>,
    key: &'static str,
) -> Result<Option<[u8; N]>, KrpcError> {
    opt_bytes(d, key)?
        .map(|b| <[u8; N]>::try_from(b).map_err(|_| KrpcError::BadLength { key, len: b.len() }))
        .transpose()
}

fn req_id(d: &Dict<'_>, key: &'static str) -> Result<NodeId, KrpcError> {
    opt_array::<ID_LEN>(d, key)?
        .map(NodeId)
        .ok_or(KrpcError::MissingKey(key))
}

fn req_token(d: &Dict<'_>) -> Result<Token, KrpcError> {
    let t = req_bytes(d, "token")?;
    Token::new(t).ok_or(KrpcError::BadLength {
        key: "token",
        len: t.len(),
    })
}
