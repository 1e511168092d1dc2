//! Peer exchange (BEP 11), the sans-IO part: what to tell one peer, and
//! when. Each message lists the peers added and dropped since the previous
//! one to that peer, at most 50 of each, no more than once a minute.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_wire::pex::{PexFlags, PexMessage, MAX_PEX_PEERS};

/// BEP 11: at most one message a minute to a peer.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// The first message goes out soon after the extension handshake, so a new
/// peer learns the swarm quickly.
pub const FIRST_AFTER: Duration = Duration::from_secs(2);

/// What we have told one peer so far.
#[derive(Debug, Clone)]
pub struct PexState {
    told: BTreeSet<SocketAddr>,
    next: Instant,
}

impl PexState {
    pub fn new(now: Instant) -> Self {
        Self {
            told: BTreeSet::new(),
            next: now + FIRST_AFTER,
        }
    }

    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// The message for this peer if one is due and there is news.
    /// `current` lists the connectable peers we are connected to (never the
    /// recipient itself), with their flags.
    pub fn poll(&mut self, now: Instant, current: &[(SocketAddr, PexFlags)]) -> Option<PexMessage> {
        if now < self.next {
            return None;
        }
        self.next = now + INTERVAL;
        let now_set: BTreeSet<SocketAddr> = current.iter().map(|(a, _)| *a).collect();
        let added: Vec<(SocketAddr, PexFlags)> = current
            .iter()
            .filter(|(a, _)| !self.told.contains(a))
            .take(MAX_PEX_PEERS)
            .copied()
            .collect();
        let dropped: Vec<SocketAddr> = self
            .told
            .iter()
            .filter(|a| !now_set.contains(a))
            .take(MAX_PEX_PEERS)
            .copied()
            .collect();
        if added.is_empty() && dropped.is_empty() {
            return None;
        }
        for (a, _) in &added {
            self.told.insert(*a);
        }
        for a in &dropped {
            self.told.remove(a);
        }
        Some(PexMessage {
            added,
            dropped,
            truncated: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + i))
    }

    #[test]
    fn diffs_once_a_minute_and_capped() {
        let t0 = Instant::now();
        let mut s = PexState::new(t0);
        let peers: Vec<(SocketAddr, PexFlags)> = (0..80).map(|i| (a(i), PexFlags(0))).collect();
        assert_eq!(s.poll(t0, &peers), None, "not before the first delay");
        let m = s.poll(t0 + FIRST_AFTER, &peers).unwrap();
        assert_eq!(m.added.len(), MAX_PEX_PEERS);
        assert!(m.dropped.is_empty());
        assert_eq!(
            s.poll(t0 + FIRST_AFTER + Duration::from_secs(10), &peers),
            None,
            "once a minute"
        );
        // A minute later: the other 30, and the ones that left.
        let later = t0 + FIRST_AFTER + INTERVAL;
        let m = s.poll(later, &peers[5..]).unwrap();
        assert_eq!(m.added.len(), 30);
        assert_eq!(m.dropped, (0..5).map(a).collect::<Vec<_>>());
        // Nothing new: nothing sent.
        assert_eq!(s.poll(later + INTERVAL, &peers[5..]), None);
    }

    /// The schedule interop_pex relies on, with literal figures so a
    /// changed constant shows here: nothing before 2 s after the extension
    /// handshake, the first message at 2 s, then at most one a minute.
    #[test]
    fn first_message_two_seconds_after_the_handshake_then_once_a_minute() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut s = PexState::new(t0);
        let peers = [(a(1), PexFlags(0))];
        assert_eq!(s.next_due(), t0 + secs(2));
        let just_before = t0 + secs(2) - Duration::from_millis(1);
        assert_eq!(s.poll(just_before, &peers), None, "before 2 s");
        assert_eq!(s.next_due(), t0 + secs(2), "an early poll moves nothing");
        let m = s
            .poll(t0 + secs(2), &peers)
            .expect("the first message at 2 s");
        assert_eq!(m.added, peers);
        assert_eq!(s.next_due(), t0 + secs(62));
        // News within the minute waits for the minute to end.
        let more = [(a(1), PexFlags(0)), (a(2), PexFlags(0))];
        assert_eq!(
            s.poll(t0 + secs(61), &more),
            None,
            "a second message within 60 s"
        );
        let m = s.poll(t0 + secs(62), &more).expect("the news at 62 s");
        assert_eq!(m.added, [(a(2), PexFlags(0))], "only what is new");
        assert_eq!(s.next_due(), t0 + secs(122));
    }

    /// A driver polls on its tick, a little after the due time: the minute
    /// counts from when the message went out.
    #[test]
    fn a_late_poll_counts_the_minute_from_the_message() {
        let t0 = Instant::now();
        let mut s = PexState::new(t0);
        let late = t0 + Duration::from_millis(2_250);
        assert!(s.poll(late, &[(a(1), PexFlags(0))]).is_some());
        assert_eq!(s.next_due(), late + Duration::from_secs(60));
    }

    /// Nothing to say at 2 s (no other peer yet) sends nothing, and the
    /// next chance is a minute later: a peer that connects to us before we
    /// know anyone learns nothing from us for a minute (interop_pex lets
    /// the middle peer reach the seeder first for this reason).
    #[test]
    fn nothing_to_say_at_2_s_means_the_next_try_a_minute_later() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut s = PexState::new(t0);
        assert_eq!(s.poll(t0 + secs(2), &[]), None, "nothing to say");
        assert_eq!(s.next_due(), t0 + secs(62));
        let peers = [(a(1), PexFlags(PexFlags::SEED))];
        assert_eq!(s.poll(t0 + secs(3), &peers), None, "not before the minute");
        assert_eq!(s.poll(t0 + secs(61), &peers), None, "not before the minute");
        let m = s.poll(t0 + secs(62), &peers).expect("the news at 62 s");
        assert_eq!(m.added, peers, "with its flags");
        assert!(m.dropped.is_empty());
    }
}
