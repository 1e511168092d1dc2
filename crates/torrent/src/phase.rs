//! [`Phase`]: one torrent through its whole life, fetching its metadata
//! first when it started from a magnet, with the inputs both phases take.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lodestone_core::InfoHash;
use lodestone_peer::picker::PeerKey;

use crate::io::Action;
use crate::magnet::MagnetCore;
use crate::source::{DhtRound, PeerSource, TrackerStatus};
use crate::TorrentCore;

pub enum Phase {
    /// A magnet without its info dictionary yet.
    Metadata(Box<MagnetCore>),
    /// The metadata is known (and the files checked).
    Ready(Box<TorrentCore>),
}

/// The same call on whichever core the torrent is in.
macro_rules! either {
    ($self:ident, $core:ident => $call:expr) => {
        match $self {
            Phase::Metadata($core) => $call,
            Phase::Ready($core) => $call,
        }
    };
}

impl Phase {
    pub fn info_hash(&self) -> InfoHash {
        match self {
            Phase::Metadata(m) => m.info_hashes().wire(),
            Phase::Ready(t) => t.metainfo().info_hashes.wire(),
        }
    }

    pub fn ready(&self) -> Option<&TorrentCore> {
        match self {
            Phase::Ready(t) => Some(t),
            Phase::Metadata(_) => None,
        }
    }

    pub fn ready_mut(&mut self) -> Option<&mut TorrentCore> {
        match self {
            Phase::Ready(t) => Some(t),
            Phase::Metadata(_) => None,
        }
    }

    pub fn handle_connected(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        source: PeerSource,
        encrypted: bool,
        utp: bool,
    ) -> Option<PeerKey> {
        either!(self, c => c.handle_connected(now, addr, source, encrypted, utp))
    }

    pub fn handle_connect_failed(&mut self, now: Instant, addr: SocketAddr) {
        either!(self, c => c.handle_connect_failed(now, addr))
    }

    pub fn handle_discovered(&mut self, now: Instant, addrs: &[SocketAddr], source: PeerSource) {
        either!(self, c => c.handle_discovered(now, addrs, source))
    }

    pub fn handle_dht_round(&mut self, now: Instant, round: DhtRound) {
        either!(self, c => c.handle_dht_round(now, round))
    }

    pub fn handle_tracker_status(&mut self, now: Instant, status: TrackerStatus) {
        either!(self, c => c.handle_tracker_status(now, status))
    }

    pub fn handle_lpd_status(&mut self, now: Instant, status: String, next_in: Option<Duration>) {
        either!(self, c => c.handle_lpd_status(now, status, next_in))
    }

    pub fn handle_data(&mut self, now: Instant, key: PeerKey, bytes: BytesMut) {
        either!(self, c => c.handle_data(now, key, bytes))
    }

    pub fn handle_closed(&mut self, now: Instant, key: PeerKey, reason: String) {
        either!(self, c => c.handle_closed(now, key, reason))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        either!(self, c => c.handle_timeout(now))
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        either!(self, c => c.poll_action())
    }

    pub fn poll_timeout(&self) -> Instant {
        either!(self, c => c.poll_timeout())
    }

    pub fn poll_transmit(&mut self, now: Instant, key: PeerKey) -> Option<Bytes> {
        either!(self, c => c.poll_transmit(now, key))
    }
}
