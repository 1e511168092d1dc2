//! Whom we upload to. Leeching: tit-for-tat (the peers that give us the
//! most get our slots) plus one optimistic unchoke rotated every 30 s, so
//! new peers get a chance to prove themselves. Seeding: the peers we can
//! serve fastest, with the same optimistic slot so nobody starves.

use std::time::{Duration, Instant};

use crate::picker::PeerKey;

#[derive(Debug, Clone)]
pub struct ChokerConfig {
    /// Unchoked peers at once, the optimistic one included.
    pub upload_slots: usize,
    pub optimistic_interval: Duration,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        Self {
            upload_slots: 4,
            optimistic_interval: Duration::from_secs(30),
        }
    }
}

/// What the choker needs to know about one connected peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerStats {
    pub key: PeerKey,
    pub interested: bool,
    /// Bytes per second the peer sends us (recent average).
    pub download_rate: f64,
    /// Bytes per second we send the peer (recent average).
    pub upload_rate: f64,
    /// The peer has not sent us anything for a while though we asked.
    pub snubbed: bool,
}

pub struct Choker {
    cfg: ChokerConfig,
    optimistic: Option<PeerKey>,
    next_optimistic: Option<Instant>,
    rng: u64,
}

impl Choker {
    pub fn new(cfg: ChokerConfig, seed: u64) -> Self {
        Self {
            cfg,
            optimistic: None,
            next_optimistic: None,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: seeded, so a simulation replays exactly.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// The set of peers to unchoke now. Peers not in it are choked.
    pub fn rechoke(&mut self, now: Instant, seeding: bool, peers: &[PeerStats]) -> Vec<PeerKey> {
        let slots = self.cfg.upload_slots.max(1);
        let candidates: Vec<&PeerStats> = peers.iter().filter(|p| p.interested).collect();
        if candidates.len() <= slots {
            // Room for everyone who wants something.
            return candidates.iter().map(|p| p.key).collect();
        }

        let mut ranked: Vec<&PeerStats> =
            candidates.iter().copied().filter(|p| !p.snubbed).collect();
        let rate = |p: &PeerStats| {
            if seeding {
                p.upload_rate
            } else {
                p.download_rate
            }
        };
        ranked.sort_by(|a, b| rate(b).total_cmp(&rate(a)).then(a.key.cmp(&b.key)));

        // Rotate the optimistic slot when it is due or its peer left.
        let still_here = self
            .optimistic
            .is_some_and(|k| candidates.iter().any(|p| p.key == k));
        let due = self.next_optimistic.is_none_or(|t| now >= t);
        if due || !still_here {
            let regular: Vec<PeerKey> = ranked.iter().take(slots - 1).map(|p| p.key).collect();
            let pool: Vec<PeerKey> = candidates
                .iter()
                .map(|p| p.key)
                .filter(|k| !regular.contains(k) && Some(*k) != self.optimistic)
                .collect();
            if !pool.is_empty() {
                let i = (self.next_random() % pool.len() as u64) as usize;
                self.optimistic = Some(pool[i]);
            }
            self.next_optimistic = Some(now + self.cfg.optimistic_interval);
        }

        let mut unchoke: Vec<PeerKey> = Vec::with_capacity(slots);
        if let Some(o) = self.optimistic {
            unchoke.push(o);
        }
        for p in ranked {
            if unchoke.len() >= slots {
                break;
            }
            if !unchoke.contains(&p.key) {
                unchoke.push(p.key);
            }
        }
        unchoke
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(k: u64, interested: bool, down: f64, up: f64) -> PeerStats {
        PeerStats {
            key: PeerKey(k),
            interested,
            download_rate: down,
            upload_rate: up,
            snubbed: false,
        }
    }

    #[test]
    fn everyone_fits() {
        let mut c = Choker::new(ChokerConfig::default(), 1);
        let peers = [
            peer(1, true, 0.0, 0.0),
            peer(2, false, 9.0, 0.0),
            peer(3, true, 1.0, 0.0),
        ];
        let mut u = c.rechoke(Instant::now(), false, &peers);
        u.sort();
        assert_eq!(u, [PeerKey(1), PeerKey(3)]);
    }

    #[test]
    fn tit_for_tat_with_optimistic_rotation() {
        let t0 = Instant::now();
        let mut c = Choker::new(ChokerConfig::default(), 7);
        let peers: Vec<PeerStats> = (0..10)
            .map(|k| peer(k, true, k as f64 * 100.0, 0.0))
            .collect();
        let u = c.rechoke(t0, false, &peers);
        assert_eq!(u.len(), 4);
        // The three best uploaders to us are always in.
        for k in [9, 8, 7] {
            assert!(u.contains(&PeerKey(k)), "{u:?}");
        }
        let opt = c.optimistic().unwrap();
        assert!(opt.0 < 7);
        // Within 30 s the optimistic peer stays; after, it changes.
        let u2 = c.rechoke(t0 + Duration::from_secs(10), false, &peers);
        assert!(u2.contains(&opt));
        let mut seen = std::collections::HashSet::new();
        for i in 1..=20 {
            c.rechoke(t0 + Duration::from_secs(30 * i), false, &peers);
            seen.insert(c.optimistic().unwrap());
        }
        assert!(seen.len() > 3, "optimistic slot rotates: {seen:?}");
    }

    #[test]
    fn snubbed_peers_lose_regular_slots_and_seeding_ranks_by_upload() {
        let t0 = Instant::now();
        let mut c = Choker::new(
            ChokerConfig {
                upload_slots: 2,
                ..Default::default()
            },
            3,
        );
        // Peer 4 gives us the most, then 3, 2, 1, 0.
        let mut peers: Vec<PeerStats> = (0..5)
            .map(|k| peer(k, true, k as f64, (10 - k) as f64))
            .collect();
        let u = c.rechoke(t0, false, &peers);
        let opt = c.optimistic().unwrap();
        assert_ne!(
            opt,
            PeerKey(4),
            "the best peer has a regular slot, not the optimistic one"
        );
        assert!(u.contains(&PeerKey(4)), "{u:?}");
        assert_eq!(u.len(), 2, "{u:?}");
        // Peer 4 stops sending though we asked: within the same optimistic
        // period (so only the snub changed), it loses its slot to the best
        // peer that still sends.
        peers[4].snubbed = true;
        let later = t0 + Duration::from_secs(10);
        let u = c.rechoke(later, false, &peers);
        assert_eq!(
            c.optimistic(),
            Some(opt),
            "the optimistic slot is not due yet"
        );
        assert!(
            !u.contains(&PeerKey(4)),
            "a snubbed peer keeps its slot: {u:?}"
        );
        let best_unsnubbed = if opt == PeerKey(3) { 2 } else { 3 };
        assert!(
            u.contains(&PeerKey(best_unsnubbed)),
            "{u:?} (optimistic {opt:?})"
        );
        assert_eq!(u.len(), 2, "the freed slot is filled: {u:?}");
        // Sending again, it takes the slot back from that peer.
        peers[4].snubbed = false;
        let u = c.rechoke(later + Duration::from_secs(10), false, &peers);
        assert!(u.contains(&PeerKey(4)), "{u:?}");
        assert_eq!(u.len(), 2, "{u:?}");

        let mut c = Choker::new(
            ChokerConfig {
                upload_slots: 2,
                ..Default::default()
            },
            3,
        );
        let u = c.rechoke(t0, true, &peers);
        assert!(u.contains(&PeerKey(0)), "{u:?}");
    }
}
