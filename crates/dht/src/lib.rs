//! The Mainline DHT, sans-IO: node ids and the XOR metric ([`id`]), KRPC
//! messages ([`krpc`]) of BEP 5 with the extensions of BEP 32, 33, 42
//! (`ip`), 43, 44 and 51, the routing table, iterative lookups, tokens, the
//! peer store, and the [`node::Node`] state machine that ties them together.
//!
//! No sockets, clock or global randomness: callers pass bytes and time in,
//! take datagrams and events out, and seed the node's generator.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod id;
pub mod items;
pub mod krpc;
pub mod lookup;
pub mod node;
pub mod reannounce;
pub mod rng;
pub mod routing_table;
pub mod secure_id;
pub mod store;
pub mod tokens;

pub use id::{Distance, NodeId, ParseNodeIdError};
pub use krpc::{
    Body, CompactNode, CompactNode6, KrpcError, Message, MethodName, MutablePut, Query, RawValue,
    Response, Token, TransactionId, Version, Want,
};
pub use lookup::{LookupId, LookupKind, LookupStats};
pub use node::{Config, Counters, Event, Node, Transmit};
