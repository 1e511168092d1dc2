//! What a swarm run did: per peer, and summed up.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Role, MIB};

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every leecher finished or left.
    AllFinished,
    /// [`SwarmConfig::max_time`] of virtual time passed.
    TimeCap,
    /// [`SwarmConfig::max_events`] events were processed.
    EventCap,
    /// Nothing was left to happen (no core deadline, no network event).
    Stalled,
}

/// One peer at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerReport {
    pub addr: SocketAddr,
    pub role: Role,
    pub nat: bool,
    /// After the swarm's start; `None` if it never joined.
    pub joined_at: Option<Duration>,
    /// Time to complete, from its own start.
    pub finished_after: Option<Duration>,
    pub left_at: Option<Duration>,
    /// Payload bytes its core uploaded.
    pub uploaded: u64,
    /// Pieces that passed its hash checks (or that it started with).
    pub verified_pieces: u32,
    /// Every piece verified.
    pub complete: bool,
    /// Pieces that passed the hash check but differ from the payload
    /// (never expected: SHA-1 is not broken here).
    pub content_errors: u32,
    /// Pieces that failed its hash checks.
    pub hash_failures: u32,
    /// Connections it dialed, accepted, and dials of its that were
    /// refused (from the network).
    pub dialed: u64,
    pub accepted: u64,
    pub refused: u64,
    /// It started from a bare magnet (the info hash only).
    pub magnet: bool,
    /// Its timeline, each from its own start: the first peer address
    /// from any source (tracker, DHT, or a peer that dialed it); the first
    /// peer that completed a handshake with it; the metadata verified
    /// (magnet starts only); the first payload block; complete (as
    /// `finished_after`).
    pub first_peer_after: Option<Duration>,
    pub connected_after: Option<Duration>,
    pub metadata_after: Option<Duration>,
    pub first_byte_after: Option<Duration>,
    /// Magnet starts: connections the torrent core took over from the
    /// metadata phase, and those of them that then brought it at least
    /// one 16 KiB block's worth of bytes (content, on a connection opened
    /// before the metadata was known); of the adopted connections, those a
    /// metadata piece came over, and those of them that then brought a
    /// block's worth (metadata and content on one connection).
    pub adopted: usize,
    pub adopted_with_content: usize,
    pub metadata_conns: usize,
    pub metadata_conns_with_content: usize,
}

/// The stages of a leecher's start, each the time from the end of the
/// one before (see [`Report::where_time_goes`]).
pub const STAGES: [&str; 5] = [
    "find a peer",
    "connect",
    "metadata",
    "first byte",
    "download",
];

/// `p` in 0..=1 of sorted `v` (nearest rank).
pub fn percentile(v: &[Duration], p: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub seed: u64,
    pub outcome: Outcome,
    pub size: u64,
    pub peers: Vec<PeerReport>,
    /// (banned by, banned) as peer indices, in the order they happened.
    pub bans: Vec<(usize, usize)>,
    /// Virtual time from the start to the end of the run.
    pub sim_time: Duration,
    /// Wall-clock time the run took (the only wall clock read).
    pub wall: Duration,
    /// Events processed: network events, core deadlines, schedule.
    pub events: u64,
    pub net_events: u64,
    pub timeouts: u64,
    /// Actions the cores asked for.
    pub actions: u64,
    /// Bytes delivered by the network (payload and protocol).
    pub net_bytes: u64,
    /// DHT lookups started, and peer addresses they gave the cores.
    pub dht_lookups: u64,
    pub dht_found: u64,
    /// DHT nodes, and the wall time it took to build and join them
    /// (before the swarm's clock starts; not in `wall`).
    pub dht_nodes: usize,
    pub dht_setup_wall: Duration,
}

impl Report {
    pub fn leechers(&self) -> impl Iterator<Item = &PeerReport> {
        self.peers.iter().filter(|p| p.role == Role::Leecher)
    }

    /// Finish times of the leechers that finished, sorted.
    pub fn finish_times(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.leechers().filter_map(|p| p.finished_after).collect();
        v.sort();
        v
    }

    /// Each leecher's finish time in peer order (`None`: did not finish).
    pub fn finish_by_peer(&self) -> Vec<Option<Duration>> {
        self.leechers().map(|p| p.finished_after).collect()
    }

    pub fn finished(&self) -> usize {
        self.leechers()
            .filter(|p| p.finished_after.is_some())
            .count()
    }

    /// `p` in 0..=1 of the finish times (nearest rank).
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        percentile(&self.finish_times(), p)
    }

    /// One time of every leecher that has it, sorted.
    pub fn times(&self, of: impl Fn(&PeerReport) -> Option<Duration>) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.leechers().filter_map(of).collect();
        v.sort();
        v
    }

    /// Median and p99 of one time over the leechers.
    pub fn median_p99(
        &self,
        of: impl Fn(&PeerReport) -> Option<Duration>,
    ) -> (Option<Duration>, Option<Duration>) {
        let v = self.times(of);
        (percentile(&v, 0.5), percentile(&v, 0.99))
    }

    /// Leechers that started from a bare magnet.
    pub fn magnet_leechers(&self) -> usize {
        self.leechers().filter(|p| p.magnet).count()
    }

    /// Where a leecher's time goes, stage by stage ([`STAGES`]): the
    /// median and p99 over the leechers that finished of the time from
    /// the end of one stage to the end of the next (a .torrent start's
    /// metadata stage is zero). The medians need not add up to the median
    /// time to complete.
    pub fn where_time_goes(&self) -> Vec<(&'static str, Option<Duration>, Option<Duration>)> {
        let mut per_stage: Vec<Vec<Duration>> = vec![Vec::new(); STAGES.len()];
        for p in self.leechers() {
            let (Some(peer), Some(conn), Some(first), Some(done)) = (
                p.first_peer_after,
                p.connected_after,
                p.first_byte_after,
                p.finished_after,
            ) else {
                continue;
            };
            let meta = p.metadata_after.unwrap_or(conn);
            let ends = [peer, conn, meta, first, done];
            let mut last = Duration::ZERO;
            for (i, end) in ends.into_iter().enumerate() {
                per_stage[i].push(end.saturating_sub(last));
                last = last.max(end);
            }
        }
        STAGES
            .iter()
            .zip(per_stage)
            .map(|(name, mut v)| {
                v.sort();
                (*name, percentile(&v, 0.5), percentile(&v, 0.99))
            })
            .collect()
    }

    /// The first honest seeder.
    pub fn initial_seeder(&self) -> Option<usize> {
        self.peers.iter().position(|p| p.role == Role::Seeder)
    }

    /// What the initial seeder uploaded, in copies of the torrent.
    pub fn seeder_copies(&self) -> f64 {
        self.initial_seeder()
            .map_or(0.0, |i| self.peers[i].uploaded as f64 / self.size as f64)
    }

    /// Peers banned by someone, each once.
    pub fn banned(&self) -> BTreeSet<usize> {
        self.bans.iter().map(|(_, b)| *b).collect()
    }

    /// Who banned `peer`.
    pub fn banned_by(&self, peer: usize) -> BTreeSet<usize> {
        self.bans
            .iter()
            .filter(|(_, b)| *b == peer)
            .map(|(by, _)| *by)
            .collect()
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leechers = self.leechers().count();
        writeln!(
            f,
            "seed {}: {:?} after {:.1} s of virtual time",
            self.seed,
            self.outcome,
            self.sim_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "  leechers finished {}/{}; time to finish median {}, p99 {}, max {}",
            self.finished(),
            leechers,
            secs(self.percentile(0.5)),
            secs(self.percentile(0.99)),
            secs(self.finish_times().last().copied()),
        )?;
        writeln!(
            f,
            "  initial seeder uploaded {:.2} copies; peers banned {} ({} bans); hash failures {}",
            self.seeder_copies(),
            self.banned().len(),
            self.bans.len(),
            self.peers.iter().map(|p| p.hash_failures).sum::<u32>(),
        )?;
        write!(
            f,
            "  wall {:.2} s; events {} (network {}, core deadlines {}), actions {}, {:.1} MiB delivered",
            self.wall.as_secs_f64(),
            self.events,
            self.net_events,
            self.timeouts,
            self.actions,
            self.net_bytes as f64 / MIB as f64,
        )?;
        if self.dht_lookups > 0 {
            write!(
                f,
                "\n  DHT: {} nodes (built and joined in {:.1} s wall); {} announce lookups gave {} peer addresses",
                self.dht_nodes,
                self.dht_setup_wall.as_secs_f64(),
                self.dht_lookups,
                self.dht_found
            )?;
        }
        if self.leechers().count() > 0 {
            let row = |name: &str, of: fn(&PeerReport) -> Option<Duration>| {
                let (m, p99) = self.median_p99(of);
                format!("{name} {} / {}", secs(m), secs(p99))
            };
            write!(
                f,
                "\n  {} of {} leechers from a bare magnet; median / p99 time to {}; {}; {}; {}; {}",
                self.magnet_leechers(),
                self.leechers().count(),
                row("first peer", |p| p.first_peer_after),
                row("first connection", |p| p.connected_after),
                row("metadata", |p| p.metadata_after),
                row("first byte", |p| p.first_byte_after),
                row("complete", |p| p.finished_after),
            )?;
            let stages: Vec<String> = self
                .where_time_goes()
                .into_iter()
                .map(|(name, m, p99)| format!("{name} {} / {}", secs(m), secs(p99)))
                .collect();
            write!(
                f,
                "\n  where the time goes (median / p99 per stage): {}",
                stages.join("; ")
            )?;
        }
        if self.magnet_leechers() > 0 {
            let magnets = || self.leechers().filter(|p| p.magnet);
            let sum = |f: fn(&PeerReport) -> usize| magnets().map(f).sum::<usize>();
            write!(
                f,
                "\n  connections taken over from the metadata phase: {}, {} then brought content; \
                 {} brought metadata, {} of them content too ({} of {} leechers)",
                sum(|p| p.adopted),
                sum(|p| p.adopted_with_content),
                sum(|p| p.metadata_conns),
                sum(|p| p.metadata_conns_with_content),
                magnets()
                    .filter(|p| p.metadata_conns_with_content > 0)
                    .count(),
                self.magnet_leechers(),
            )?;
        }
        Ok(())
    }
}
