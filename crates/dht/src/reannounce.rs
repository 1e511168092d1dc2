//! When a running torrent asks the DHT again (and re-announces its port):
//! soon at first, then every few minutes, so that its entry in the nodes'
//! peer stores ([`crate::store::PEER_TTL`], 30 minutes) never lapses.
//! While the DHT has given no peer at all, it asks every 20 s for 10
//! minutes, then every 2: a swarm that appears a minute later (a seeder
//! still starting) is found a minute later, not in five.
//!
//! Sans-IO: the driver (the engine's discovery task, or the simulator)
//! starts a round when the last one ended plus the wait it was given.

use std::time::Duration;

/// Rounds asked every [`SEARCH_EVERY`] while no peer was ever found.
pub const SEARCH_ROUNDS: u32 = 30;
/// The wait after a round while no peer was ever found (first 30 rounds).
pub const SEARCH_EVERY: Duration = Duration::from_secs(20);
/// The wait after a round once [`SEARCH_ROUNDS`] found nobody.
pub const SEARCH_SLOW_EVERY: Duration = Duration::from_secs(120);
/// Rounds asked every [`SOON_EVERY`] once there is a swarm.
pub const SOON_ROUNDS: u32 = 3;
/// The wait after one of the first rounds once there is a swarm.
pub const SOON_EVERY: Duration = Duration::from_secs(15);
/// The steady re-announce interval: well inside the 30-minute peer TTL.
pub const STEADY_EVERY: Duration = Duration::from_secs(300);

/// One torrent's DHT rounds so far.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    round: u32,
    peers_ever: u64,
}

impl Schedule {
    pub fn new() -> Self {
        Self::default()
    }

    /// A round starts now; returns how long to wait after it ends before
    /// the next one (decided by what earlier rounds found).
    pub fn start_round(&mut self) -> Duration {
        let wait = wait_after(self.peers_ever, self.round);
        self.round = self.round.saturating_add(1);
        wait
    }

    /// The DHT gave `n` peers other than ourselves.
    pub fn found_peers(&mut self, n: u64) {
        self.peers_ever = self.peers_ever.saturating_add(n);
    }

    /// Rounds started so far.
    pub fn rounds(&self) -> u32 {
        self.round
    }
}

/// The wait after round `round` (from 0) when `peers_ever` peers other
/// than ourselves were found before it started.
pub fn wait_after(peers_ever: u64, round: u32) -> Duration {
    match (peers_ever, round) {
        (0, r) if r < SEARCH_ROUNDS => SEARCH_EVERY,
        (0, _) => SEARCH_SLOW_EVERY,
        (_, r) if r < SOON_ROUNDS => SOON_EVERY,
        _ => STEADY_EVERY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_fast_then_settles_inside_the_peer_ttl() {
        let mut s = Schedule::new();
        let alone: Vec<u64> = (0..32).map(|_| s.start_round().as_secs()).collect();
        assert_eq!(&alone[..30], &[20; 30]);
        assert_eq!(&alone[30..], &[120, 120]);
        // A swarm turns up: from then on steady, every 5 minutes.
        s.found_peers(2);
        assert_eq!(s.start_round(), STEADY_EVERY);
        let mut s = Schedule::new();
        s.start_round();
        s.found_peers(1);
        let waits: Vec<u64> = (0..5).map(|_| s.start_round().as_secs()).collect();
        assert_eq!(waits, [15, 15, 300, 300, 300]);
        assert!(STEADY_EVERY * 2 < crate::store::PEER_TTL);
    }
}
