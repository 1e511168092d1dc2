//! uTP, the micro transport protocol of BEP 29, sans-IO.
//!
//! [`Endpoint`] holds every connection on one UDP socket: the driver hands
//! it datagrams ([`Endpoint::handle_datagram`]) and the time, and drains
//! datagrams to send ([`Endpoint::poll_transmit`]), events
//! ([`Endpoint::poll_event`]) and the next deadline
//! ([`Endpoint::poll_timeout`]). The application reads and writes stream
//! bytes through the endpoint by [`ConnectionId`].
//!
//! Inside: the packet codec ([`packet`]), 16-bit sequence numbers that wrap
//! ([`seq`]), the send and receive queues, RTT and timeouts, LEDBAT
//! congestion control ([`ledbat`]) and path-MTU probing ([`mtu`]).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod connection;
mod endpoint;
pub mod ledbat;
pub mod mtu;
pub mod packet;
mod recv;
mod rtt;
mod send;
pub mod seq;

pub use connection::{CloseReason, ConnectionConfig, ConnectionStats};
pub use endpoint::{
    Config, ConnectError, ConnectionId, Counters, Endpoint, Event, StreamError, Transmit,
};
pub use packet::looks_like_utp;
