//! How many block requests to keep outstanding with one peer: enough to
//! cover its bandwidth-delay product, so the link never idles waiting for
//! our next request, and no more (requests in flight are lost work when
//! the peer chokes or leaves).
//!
//! The delay is measured: a request sent while nothing else was in flight
//! is timed until its block arrives (a round trip plus the peer's time to
//! read the block, with no queue of ours in front of it). The queue covers
//! the measured rate for twice that, and never less than
//! [`QueueSizer::MIN_SECONDS`] of it: on a fast, near link the rate term
//! lets the queue grow as fast as the peer can send.

use std::time::{Duration, Instant};

use crate::picker::{Block, BLOCK_SIZE};

#[derive(Debug, Clone, Default)]
pub struct QueueSizer {
    /// The request being timed, if any.
    probe: Option<(Block, Instant)>,
    /// The shortest round trip seen.
    rtt: Option<Duration>,
}

impl QueueSizer {
    /// Never fewer blocks in flight (a new peer has no rate yet).
    pub const MIN_BLOCKS: usize = 32;
    /// The cap for a near peer: 4 MiB in flight is plenty for a loopback
    /// or LAN link.
    pub const NEAR_MAX_BLOCKS: usize = 256;
    /// Below this round trip a peer counts as near. The timed request is
    /// the first one, so its time includes the peer's first disk read: a
    /// just-started libtorrent seeder on loopback measured a few ms, which
    /// at 700 MiB/s asked for 450 blocks and 6 MiB more of our memory.
    pub const NEAR_RTT: Duration = Duration::from_millis(50);
    /// The cap for a far peer, whose bandwidth-delay product needs more.
    pub const FAR_MAX_BLOCKS: usize = 2000;
    /// The queue covers at least this much of the peer's rate.
    pub const MIN_SECONDS: f64 = 0.5;

    pub fn new() -> Self {
        Self::default()
    }

    /// A request went out with `in_flight` others already outstanding.
    /// Into an empty pipe it is timed (an older probe is gone by then).
    pub fn on_request(&mut self, block: Block, in_flight: usize, now: Instant) {
        if in_flight == 0 {
            self.probe = Some((block, now));
        }
    }

    /// A block arrived.
    pub fn on_block(&mut self, block: Block, now: Instant) {
        if let Some((probe, sent)) = self.probe {
            if probe == block {
                let sample = now.saturating_duration_since(sent);
                self.rtt = Some(self.rtt.map_or(sample, |r| r.min(sample)));
                self.probe = None;
            }
        }
    }

    /// The timed request will not be answered (rejected, cancelled, choked,
    /// or its piece came from elsewhere): time the next one instead.
    pub fn on_request_lost(&mut self, block: Block) {
        if self.probe.is_some_and(|(p, _)| p == block) {
            self.probe = None;
        }
    }

    /// Forget every outstanding request (the peer choked us).
    pub fn on_all_lost(&mut self) {
        self.probe = None;
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Blocks to keep in flight for a peer sending `rate` bytes a second,
    /// which accepts at most `peer_limit` outstanding requests (its `reqq`).
    pub fn target(&self, rate: f64, peer_limit: usize) -> usize {
        let rtt = self.rtt.unwrap_or_default();
        let block = f64::from(BLOCK_SIZE);
        let cap = if rtt < Self::NEAR_RTT {
            Self::NEAR_MAX_BLOCKS
        } else {
            let bdp = (rate * 2.0 * rtt.as_secs_f64() / block) as usize;
            bdp.clamp(Self::NEAR_MAX_BLOCKS, Self::FAR_MAX_BLOCKS)
        };
        let rtt = rtt.as_secs_f64();
        let want = (rate * (2.0 * rtt).max(Self::MIN_SECONDS) / block) as usize;
        want.clamp(Self::MIN_BLOCKS, cap).min(peer_limit.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestone_core::PieceIndex;

    fn block(i: u32) -> Block {
        Block {
            piece: PieceIndex(i),
            begin: 0,
            len: BLOCK_SIZE,
        }
    }

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn a_new_peer_gets_the_minimum() {
        let q = QueueSizer::new();
        assert_eq!(q.target(0.0, 500), QueueSizer::MIN_BLOCKS);
        assert_eq!(q.target(0.0, 5), 5, "the peer's reqq wins");
    }

    #[test]
    fn a_near_fast_peer_is_capped_at_the_near_limit() {
        let mut q = QueueSizer::new();
        let t0 = Instant::now();
        q.on_request(block(0), 0, t0);
        q.on_block(block(0), t0 + Duration::from_micros(300));
        assert_eq!(q.rtt(), Some(Duration::from_micros(300)));
        // Half a second of 2 MiB/s is 64 blocks.
        assert_eq!(q.target(2.0 * MIB, 2000), 64);
        assert_eq!(q.target(700.0 * MIB, 2000), QueueSizer::NEAR_MAX_BLOCKS);
        // A slow first read on a near peer does not lift the cap.
        let mut q = QueueSizer::new();
        q.on_request(block(0), 0, t0);
        q.on_block(block(0), t0 + Duration::from_millis(20));
        assert_eq!(q.target(700.0 * MIB, 2000), QueueSizer::NEAR_MAX_BLOCKS);
    }

    /// With a fixed half second of rate, a peer 0.7 s away would be stuck:
    /// 32 blocks per round trip is 730 KiB/s, which asks for 22 blocks.
    /// Sized by the measured round trip, the queue grows with the rate.
    #[test]
    fn a_far_peer_gets_its_bandwidth_delay_product() {
        let mut q = QueueSizer::new();
        let t0 = Instant::now();
        q.on_request(block(0), 0, t0);
        // Only the request sent into an empty pipe is timed.
        q.on_request(block(1), 1, t0);
        q.on_block(block(1), t0 + Duration::from_millis(100));
        assert_eq!(q.rtt(), None);
        q.on_block(block(0), t0 + Duration::from_millis(700));
        assert_eq!(q.rtt(), Some(Duration::from_millis(700)));
        let slow = 730.0 * 1024.0;
        let t = q.target(slow, 2000);
        assert!(t >= 32, "{t}");
        // Throughput a queue allows is queue / rtt: it must exceed the rate.
        let allows = |t: usize| t as f64 * f64::from(BLOCK_SIZE) / 0.7;
        assert!(allows(q.target(slow, 2000)) > slow);
        assert!(allows(q.target(10.0 * MIB, 2000)) > 10.0 * MIB);
        assert!(q.target(10.0 * MIB, 2000) > QueueSizer::NEAR_MAX_BLOCKS);
        assert_eq!(q.target(100.0 * MIB, 2000), QueueSizer::FAR_MAX_BLOCKS);
    }

    #[test]
    fn a_lost_probe_is_replaced_and_the_shortest_trip_kept() {
        let mut q = QueueSizer::new();
        let t0 = Instant::now();
        q.on_request(block(0), 0, t0);
        q.on_request_lost(block(0));
        q.on_block(block(0), t0 + Duration::from_millis(5));
        assert_eq!(q.rtt(), None, "a lost probe is not timed");
        q.on_request(block(1), 0, t0);
        q.on_block(block(1), t0 + Duration::from_millis(80));
        q.on_request(block(2), 0, t0 + Duration::from_secs(1));
        q.on_block(block(2), t0 + Duration::from_millis(1200));
        assert_eq!(q.rtt(), Some(Duration::from_millis(80)));
        q.on_request(block(3), 0, t0);
        q.on_all_lost();
        q.on_block(block(3), t0 + Duration::from_millis(1));
        assert_eq!(q.rtt(), Some(Duration::from_millis(80)));
    }
}
