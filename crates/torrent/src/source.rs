//! Where peers come from, and what each source last said: the sources
//! table as data. Its wording belongs to whoever renders it.

use std::net::SocketAddr;
use std::time::Duration;

/// Where a peer's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerSource {
    /// Given by the user (`--peer`) or a magnet's `x.pe`.
    Manual,
    /// It connected to us.
    Incoming,
    Dht,
    Pex,
    Lpd,
    Tracker,
}

impl PeerSource {
    pub const ALL: [PeerSource; 6] = [
        Self::Manual,
        Self::Incoming,
        Self::Dht,
        Self::Pex,
        Self::Lpd,
        Self::Tracker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Incoming => "incoming",
            Self::Dht => "dht",
            Self::Pex => "pex",
            Self::Lpd => "lpd",
            Self::Tracker => "tracker",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Every source that named one address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceSet(u8);

impl SourceSet {
    pub fn of(s: PeerSource) -> Self {
        Self(s.bit())
    }

    pub fn insert(&mut self, s: PeerSource) {
        self.0 |= s.bit();
    }

    pub fn contains(self, s: PeerSource) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = PeerSource> {
        PeerSource::ALL
            .into_iter()
            .filter(move |s| self.contains(*s))
    }
}

/// What the last DHT lookup for the torrent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DhtRound {
    pub queries: u32,
    pub responses: u32,
    pub peers: u32,
    /// Announce: (nodes asked, nodes that accepted).
    pub announced: Option<(u32, u32)>,
    pub next_in: Duration,
}

/// One tracker's last answer (or failure), as its driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerStatus {
    pub url: String,
    /// The tracker's own words (a warning, a failure reason), or the
    /// driver's account of what happened.
    pub status: String,
    pub next_in: Option<Duration>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub peers: usize,
}

/// Why a source is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disabled {
    /// BEP 27: a private torrent uses its trackers only.
    Private,
    /// Switched off by configuration.
    Off,
    /// Needs a listening port, and there is none.
    NeedsListen,
}

/// One row of the sources table.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub kind: SourceKind,
    pub state: SourceState,
    /// Until the next update, when one is scheduled.
    pub next_update: Option<Duration>,
    /// Connected peers from this source that have everything.
    pub seeds: usize,
    /// Distinct peer addresses this source gave us.
    pub peers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Dht,
    Pex,
    Lpd,
    /// Addresses given by the user or the magnet (`x.pe`).
    Given,
    /// Peers that dialled us.
    Incoming,
    Tracker(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceState {
    Disabled(Disabled),
    /// Started, no result yet.
    Starting,
    /// The last DHT round.
    DhtRound(DhtRound),
    /// PEX: no connected peer speaks ut_pex.
    NoPexPeer,
    /// PEX: exchanging with this many peers.
    Exchanging(usize),
    /// The source's driver's own status line (LPD).
    Reported(String),
    /// `n` addresses given.
    Given(usize),
    Listening(SocketAddr),
    /// A tracker not asked yet.
    NotContacted,
    Tracker(TrackerStatus),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_every_source_once() {
        let mut s = SourceSet::of(PeerSource::Dht);
        s.insert(PeerSource::Pex);
        s.insert(PeerSource::Dht);
        assert!(s.contains(PeerSource::Dht) && s.contains(PeerSource::Pex));
        assert!(!s.contains(PeerSource::Tracker));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![PeerSource::Dht, PeerSource::Pex]
        );
    }
}
