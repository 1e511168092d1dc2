//! Where peers come from, and what each source last said: the sources
//! table as data. Its wording belongs to whoever renders it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::CoreConfig;

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

/// Connected peers counted by the source that gave each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PerSource([usize; PeerSource::ALL.len()]);

impl PerSource {
    pub fn add(&mut self, s: PeerSource) {
        self.0[s as usize] += 1;
    }

    pub fn get(&self, s: PeerSource) -> usize {
        self.0[s as usize]
    }
}

/// What a phase knows of its sources, borrowed for [`SourcesInput::rows`]:
/// the metadata phase and the torrent phase make the same table from it.
pub(crate) struct SourcesInput<'a> {
    pub cfg: &'a CoreConfig,
    pub private: bool,
    /// Distinct addresses each source named.
    pub found: PerSource,
    pub dht_round: Option<&'a (DhtRound, Instant)>,
    pub lpd_status: Option<&'a (String, Instant, Option<Duration>)>,
    pub tracker_status: &'a HashMap<String, (TrackerStatus, Instant)>,
    /// The torrent's trackers, a row each, in this order.
    pub trackers: Vec<&'a str>,
    /// Connected peers known to have everything.
    pub seeds: PerSource,
    /// Peers connected (or connecting), by their source.
    pub connected: PerSource,
    /// Peers we exchange PEX with, and when the next exchange is due.
    pub pex_peers: usize,
    pub next_pex: Option<Instant>,
}

impl SourcesInput<'_> {
    /// The sources table at `now`.
    pub fn rows(&self, now: Instant) -> Vec<Source> {
        let cfg = self.cfg;
        let private = self.private;
        let seeds = |s: PeerSource| self.seeds.get(s);
        let found = |s: PeerSource| self.found.get(s);
        let until = |at: Instant, d: Duration| (at + d).saturating_duration_since(now);
        let mut rows = Vec::new();
        let (state, next) = match self.dht_round {
            _ if private => (SourceState::Disabled(Disabled::Private), None),
            _ if !cfg.dht => (SourceState::Disabled(Disabled::Off), None),
            None => (SourceState::Starting, None),
            Some((r, at)) => (SourceState::DhtRound(*r), Some(until(*at, r.next_in))),
        };
        rows.push(Source {
            kind: SourceKind::Dht,
            state,
            next_update: next,
            seeds: seeds(PeerSource::Dht),
            peers: found(PeerSource::Dht),
        });
        rows.push(Source {
            kind: SourceKind::Pex,
            state: if private {
                SourceState::Disabled(Disabled::Private)
            } else if !cfg.pex {
                SourceState::Disabled(Disabled::Off)
            } else if self.pex_peers == 0 {
                SourceState::NoPexPeer
            } else {
                SourceState::Exchanging(self.pex_peers)
            },
            next_update: self.next_pex.map(|t| t.saturating_duration_since(now)),
            seeds: seeds(PeerSource::Pex),
            peers: found(PeerSource::Pex),
        });
        let (state, next) = match self.lpd_status {
            _ if private => (SourceState::Disabled(Disabled::Private), None),
            Some((s, at, next)) => (
                SourceState::Reported(s.clone()),
                next.map(|n| until(*at, n)),
            ),
            None if cfg.lpd && cfg.listen.is_none() => {
                (SourceState::Disabled(Disabled::NeedsListen), None)
            }
            None if cfg.lpd => (SourceState::Starting, None),
            None => (SourceState::Disabled(Disabled::Off), None),
        };
        rows.push(Source {
            kind: SourceKind::Lpd,
            state,
            next_update: next,
            seeds: seeds(PeerSource::Lpd),
            peers: found(PeerSource::Lpd),
        });
        if !cfg.peers.is_empty() {
            rows.push(Source {
                kind: SourceKind::Given,
                state: SourceState::Given(cfg.peers.len()),
                next_update: None,
                seeds: seeds(PeerSource::Manual),
                peers: cfg.peers.len(),
            });
        }
        if let Some(l) = cfg.listen {
            rows.push(Source {
                kind: SourceKind::Incoming,
                state: SourceState::Listening(l),
                next_update: None,
                seeds: seeds(PeerSource::Incoming),
                peers: self.connected.get(PeerSource::Incoming),
            });
        }
        for url in &self.trackers {
            let kind = SourceKind::Tracker((*url).to_owned());
            let row = match self.tracker_status.get(*url) {
                _ if !cfg.trackers => Source {
                    kind,
                    state: SourceState::Disabled(Disabled::Off),
                    next_update: None,
                    seeds: 0,
                    peers: 0,
                },
                None => Source {
                    kind,
                    state: SourceState::NotContacted,
                    next_update: None,
                    seeds: 0,
                    peers: 0,
                },
                Some((s, at)) => Source {
                    kind,
                    next_update: s.next_in.map(|n| until(*at, n)),
                    seeds: s.seeders.map_or(0, |x| x as usize),
                    peers: s.leechers.map_or(s.peers, |x| x as usize),
                    state: SourceState::Tracker(s.clone()),
                },
            };
            rows.push(row);
        }
        rows
    }
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
