//! KRPC, the message layer of the Mainline DHT: bencoded dictionaries over
//! UDP (BEP 5), with the IPv6 fields of BEP 32, the scrape fields of
//! BEP 33, the BEP 42 `ip` echo, read-only nodes (BEP 43), `get`/`put`
//! (BEP 44) and `sample_infohashes` (BEP 51).
//!
//! Codec only: [`Message::decode`] turns one datagram into a typed message,
//! [`Message::encode`] appends the canonical encoding of one.
//!
//! Decoding is strict about what a node acts on and lenient about the rest:
//! - a known key with the wrong type or length is an error naming the key
//!   (`nodes` of 27 bytes is `BadLength { key: "nodes", len: 27 }`);
//! - unknown keys, unsorted or duplicated keys (real clients send them; the
//!   first of a duplicate wins), unknown `want` entries, malformed `values`
//!   entries and entries with port 0 are ignored; so are a malformed
//!   top-level `v` (client version) or `ip`, which are informative only;
//! - lists that could grow a reply's footprint are cut to named caps
//!   ([`MAX_NODES`], [`MAX_VALUES`], [`MAX_SAMPLES`]).
//!
//! Responses do not say which query they answer, so [`Response`] has every
//! return value as an optional, typed field; the caller matches it to its
//! query through the transaction id.

mod bytes;
mod decode;
mod encode;
#[cfg(test)]
mod tests;

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use lodestone_bencode::DecodeError;
use lodestone_core::InfoHash;

use crate::id::NodeId;

pub use bytes::{MethodName, RawValue, Token, TransactionId, Version};
pub use decode::query_transaction_id;

/// Longest datagram [`Message::decode`] looks at. BEP 32 caps what a node
/// sends at 1024 bytes and asks for robustness beyond; 2048 leaves room for
/// BEP 33 bloom filters plus nodes, and stays within one allocation budget.
pub const MAX_PACKET_LEN: usize = 2048;
/// Most entries kept from `nodes` and from `nodes6` (a reply carries 8).
pub const MAX_NODES: usize = 64;
/// Most peers kept from `values`.
pub const MAX_VALUES: usize = 200;
/// Most info hashes kept from `samples` (BEP 51).
pub const MAX_SAMPLES: usize = 256;
/// Longest BEP 44 value, bencoded.
pub const MAX_VALUE_LEN: usize = 1000;
/// Longest BEP 44 salt.
pub const MAX_SALT_LEN: usize = 64;
/// Longest error message kept or sent, in bytes.
pub const MAX_ERROR_MESSAGE_LEN: usize = 256;
/// Size of a BEP 33 bloom filter (`BFsd`, `BFpe`).
pub const BLOOM_LEN: usize = 256;
/// Nesting accepted in a datagram: the message, its `a`/`r` dictionary and
/// six levels inside a BEP 44 value.
pub const MAX_DEPTH: usize = 8;
/// Bencode values accepted in one datagram (2048 bytes hold at most ~1024).
pub const MAX_BENCODE_VALUES: usize = 2048;
/// Bytes in a compact IPv4 node (`nodes`): id, address, port.
pub const COMPACT_NODE_LEN: usize = 26;
/// Bytes in a compact IPv6 node (`nodes6`).
pub const COMPACT_NODE6_LEN: usize = 38;

/// Error codes of BEP 5 and BEP 44.
pub mod error_code {
    pub const GENERIC: i64 = 201;
    pub const SERVER: i64 = 202;
    /// Malformed packet, invalid arguments or bad token.
    pub const PROTOCOL: i64 = 203;
    pub const METHOD_UNKNOWN: i64 = 204;
    pub const MESSAGE_TOO_BIG: i64 = 205;
    pub const INVALID_SIGNATURE: i64 = 206;
    pub const SALT_TOO_BIG: i64 = 207;
    pub const CAS_MISMATCH: i64 = 301;
    pub const SEQUENCE_TOO_LOW: i64 = 302;
}

/// One KRPC datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `t`.
    pub transaction_id: TransactionId,
    pub body: Body,
    /// `v`: the sender's client and version, when given and 1..=16 bytes.
    pub version: Option<Version>,
    /// `ro` = 1 (BEP 43): the sender does not answer queries; do not add it
    /// to the routing table.
    pub read_only: bool,
    /// `ip` (BEP 42): the address the sender sees us at.
    pub your_ip: Option<SocketAddr>,
}

/// What `y` says the message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `y` = `q`.
    Query(Query),
    /// `y` = `r`.
    Response(Response),
    /// `y` = `e`: `e` = `[code, message]`. The message is cut to
    /// [`MAX_ERROR_MESSAGE_LEN`] bytes (at a character boundary) when
    /// decoded and when encoded; invalid UTF-8 is replaced.
    Error { code: i64, message: String },
}

/// A query (`q` names the method, `a` holds the arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `ping`.
    Ping { id: NodeId },
    /// `find_node`.
    FindNode {
        id: NodeId,
        target: NodeId,
        want: Want,
    },
    /// `get_peers`, with BEP 33 `scrape` and `noseed`.
    GetPeers {
        id: NodeId,
        info_hash: InfoHash,
        want: Want,
        scrape: bool,
        no_seed: bool,
    },
    /// `announce_peer`, with BEP 33 `seed`. When `implied_port` is set,
    /// the peer's port is the datagram's source port and `port` means
    /// nothing (it is 0 if the sender left it out).
    AnnouncePeer {
        id: NodeId,
        info_hash: InfoHash,
        port: u16,
        implied_port: bool,
        token: Token,
        seed: bool,
    },
    /// BEP 44 `get`: `seq` asks for the value only if newer.
    Get {
        id: NodeId,
        target: NodeId,
        seq: Option<i64>,
    },
    /// BEP 44 `put`: immutable when `mutable` is `None`.
    Put {
        id: NodeId,
        token: Token,
        value: RawValue,
        mutable: Option<MutablePut>,
    },
    /// BEP 51 `sample_infohashes`.
    SampleInfohashes { id: NodeId, target: NodeId },
}

/// The arguments that make a BEP 44 `put` mutable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutablePut {
    /// `k`: ed25519 public key.
    pub key: [u8; 32],
    /// `sig`: ed25519 signature of (salt,) seq and v.
    pub signature: [u8; 64],
    /// `seq`.
    pub seq: i64,
    /// `salt`, at most [`MAX_SALT_LEN`] bytes; empty means none (BEP 44
    /// treats an empty salt as absent, and it is not sent).
    pub salt: Vec<u8>,
    /// `cas`: the sequence number being replaced.
    pub cas: Option<i64>,
}

/// BEP 32 `want`: which node lists the querier asks for. Both `false` is
/// "not given" (then the reply follows the address family of the query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Want {
    /// `n4`: include `nodes`.
    pub v4: bool,
    /// `n6`: include `nodes6`.
    pub v6: bool,
}

impl Want {
    pub const NONE: Want = Want {
        v4: false,
        v6: false,
    };
    pub const BOTH: Want = Want { v4: true, v6: true };

    pub fn is_given(&self) -> bool {
        self.v4 || self.v6
    }
}

/// The return values (`r`) of any query. Only `id` is always present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: NodeId,
    /// `nodes`: compact IPv4 nodes.
    pub nodes: Vec<CompactNode>,
    /// `nodes6` (BEP 32): compact IPv6 nodes.
    pub nodes6: Vec<CompactNode6>,
    /// `values`: compact peers, IPv4 (6 bytes) or IPv6 (18 bytes).
    pub values: Vec<SocketAddr>,
    /// `token`: a write token for `announce_peer` or `put`.
    pub token: Option<Token>,
    /// `BFsd` (BEP 33): bloom filter of seeds.
    pub bf_seeds: Option<Box<[u8; BLOOM_LEN]>>,
    /// `BFpe` (BEP 33): bloom filter of peers.
    pub bf_peers: Option<Box<[u8; BLOOM_LEN]>>,
    /// `samples` (BEP 51). `Some(vec![])` and `None` differ: a node that
    /// supports BEP 51 sends the key even when it has nothing.
    pub samples: Option<Vec<InfoHash>>,
    /// `num` (BEP 51): info hashes in the node's store.
    pub num: Option<i64>,
    /// `interval` (BEP 51): seconds before asking this node again.
    pub interval: Option<i64>,
    /// `v` (BEP 44): the stored value.
    pub v: Option<RawValue>,
    /// `k` (BEP 44): public key of a mutable item.
    pub k: Option<[u8; 32]>,
    /// `sig` (BEP 44): signature of a mutable item.
    pub sig: Option<[u8; 64]>,
    /// `seq` (BEP 44): sequence number of a mutable item.
    pub seq: Option<i64>,
}

/// A `nodes` entry: 20-byte id, 4-byte address, 2-byte port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompactNode {
    pub id: NodeId,
    pub addr: SocketAddrV4,
}

/// A `nodes6` entry: 20-byte id, 16-byte address, 2-byte port. Flow info
/// and scope id are not on the wire and decode as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompactNode6 {
    pub id: NodeId,
    pub addr: SocketAddrV6,
}

/// Why a datagram is not a KRPC message we accept. Every variant is the
/// sender's fault; none is a local failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KrpcError {
    #[error("datagram of {0} bytes is longer than the {MAX_PACKET_LEN}-byte limit")]
    TooLong(usize),
    #[error(transparent)]
    Bencode(DecodeError),
    #[error("message is not a dictionary")]
    NotDict,
    #[error("missing key \"{0}\"")]
    MissingKey(&'static str),
    #[error("key \"{key}\" should be a {expected}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("key \"{key}\" has a bad length: {len} bytes")]
    BadLength { key: &'static str, len: usize },
    #[error("key \"{key}\" has a value out of range or malformed")]
    BadValue { key: &'static str },
    #[error("transaction id must be 1 to 16 bytes")]
    BadTransactionId,
    /// A query with a method we do not implement; answer with error 204
    /// ([`error_code::METHOD_UNKNOWN`]) under this transaction id.
    #[error("unknown query method {method}")]
    UnknownMethod {
        transaction_id: TransactionId,
        method: MethodName,
    },
}

impl KrpcError {
    /// The error code to answer a malformed *query* with.
    pub fn error_code(&self) -> i64 {
        match self {
            Self::UnknownMethod { .. } => error_code::METHOD_UNKNOWN,
            _ => error_code::PROTOCOL,
        }
    }
}

impl Message {
    pub fn query(transaction_id: TransactionId, query: Query) -> Self {
        Self::with_body(transaction_id, Body::Query(query))
    }

    pub fn response(transaction_id: TransactionId, response: Response) -> Self {
        Self::with_body(transaction_id, Body::Response(response))
    }

    /// An error reply; `message` is cut to [`MAX_ERROR_MESSAGE_LEN`] bytes.
    pub fn error(transaction_id: TransactionId, code: i64, message: &str) -> Self {
        Self::with_body(
            transaction_id,
            Body::Error {
                code,
                message: cap_str(message, MAX_ERROR_MESSAGE_LEN).to_owned(),
            },
        )
    }

    fn with_body(transaction_id: TransactionId, body: Body) -> Self {
        Self {
            transaction_id,
            body,
            version: None,
            read_only: false,
            your_ip: None,
        }
    }

    /// Decode one datagram. See the module docs for what is checked.
    pub fn decode(bytes: &[u8]) -> Result<Message, KrpcError> {
        decode::message(bytes)
    }

    /// Append the canonical encoding (sorted keys) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode::message(self, out);
    }

    /// The canonical encoding in a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.encode(&mut out);
        out
    }

    /// The sender's node id, for queries and responses.
    pub fn sender_id(&self) -> Option<NodeId> {
        match &self.body {
            Body::Query(q) => Some(q.id()),
            Body::Response(r) => Some(r.id),
            Body::Error { .. } => None,
        }
    }
}

impl Query {
    /// The querying node's id.
    pub fn id(&self) -> NodeId {
        match self {
            Self::Ping { id }
            | Self::FindNode { id, .. }
            | Self::GetPeers { id, .. }
            | Self::AnnouncePeer { id, .. }
            | Self::Get { id, .. }
            | Self::Put { id, .. }
            | Self::SampleInfohashes { id, .. } => *id,
        }
    }

    /// The `q` string.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Ping { .. } => "ping",
            Self::FindNode { .. } => "find_node",
            Self::GetPeers { .. } => "get_peers",
            Self::AnnouncePeer { .. } => "announce_peer",
            Self::Get { .. } => "get",
            Self::Put { .. } => "put",
            Self::SampleInfohashes { .. } => "sample_infohashes",
        }
    }
}

impl Response {
    /// A response with only `id` (the reply to `ping` and `announce_peer`).
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            nodes: Vec::new(),
            nodes6: Vec::new(),
            values: Vec::new(),
            token: None,
            bf_seeds: None,
            bf_peers: None,
            samples: None,
            num: None,
            interval: None,
            v: None,
            k: None,
            sig: None,
            seq: None,
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cap_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}
