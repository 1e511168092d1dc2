//! A torrent's automatic DHT re-announce on virtual time: two nodes run
//! the engine's rule ([`lodestone_dht::reannounce::Schedule`]) on their own,
//! with nothing announcing by hand, for two virtual hours, four times the
//! peers' 30-minute TTL in the stores. A third node must find both at
//! every check, and the rounds must come when the rule says. Every loop
//! is bounded; a failure prints its seed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use lodestone_dht::reannounce::{Schedule, STEADY_EVERY};
use lodestone_dht::store::PEER_TTL;
use lodestone_dht::LookupId;
use lodestone_sim::{DhtSim, SimConfig};

const NODES: usize = 200;
const MAX_EVENTS: u64 = 20_000_000;
const STEP: Duration = Duration::from_millis(500);

/// One node's discovery loop, as the engine's task runs it: a round
/// (announce), then the rule's wait from the round's end, then the next.
struct Announcer {
    node: usize,
    schedule: Schedule,
    running: Option<(LookupId, Duration)>,
    next: Instant,
    /// When each round started.
    starts: Vec<Instant>,
}

impl Announcer {
    fn new(node: usize, now: Instant) -> Self {
        Self {
            node,
            schedule: Schedule::new(),
            running: None,
            next: now,
            starts: Vec::new(),
        }
    }

    fn step(&mut self, sim: &mut DhtSim, ih: InfoHash) {
        let me = sim.addr(self.node);
        if let Some((l, wait)) = self.running {
            let r = sim.record_of(self.node, l).expect("recorded");
            if let Some(done) = r.done_at {
                let others = r.peers.iter().filter(|p| **p != me).count();
                self.schedule.found_peers(others as u64);
                self.running = None;
                self.next = done + wait;
            }
        } else if sim.now() >= self.next {
            let wait = self.schedule.start_round();
            self.starts.push(sim.now());
            let l = sim.announce(self.node, ih);
            self.running = Some((l, wait));
        }
    }
}

#[test]
fn a_torrent_stays_findable_for_hours_by_its_own_reannounces() {
    let seed = 11;
    let mut sim = DhtSim::new(&SimConfig {
        nodes: NODES,
        seed,
        loss: 0.01,
        ..SimConfig::default()
    });
    sim.join_all(
        Duration::from_millis(20),
        Duration::from_secs(20),
        MAX_EVENTS,
    );
    let ih = InfoHash([0x5a; 20]);
    let t0 = sim.now();
    let mut announcers = [Announcer::new(17, t0), Announcer::new(91, t0)];
    let want: Vec<SocketAddr> = announcers.iter().map(|a| sim.addr(a.node)).collect();
    let asker = 150;
    let total = Duration::from_secs(2 * 3600);
    let check_every = Duration::from_secs(600);
    let mut next_check = t0 + check_every;
    let mut checks: Vec<(Instant, LookupId)> = Vec::new();
    let steps = (total.as_millis() / STEP.as_millis()) as usize;
    for _ in 0..steps {
        sim.run_for(STEP, MAX_EVENTS);
        for a in &mut announcers {
            a.step(&mut sim, ih);
        }
        if sim.now() >= next_check {
            checks.push((sim.now(), sim.get_peers(asker, ih, None)));
            next_check += check_every;
        }
    }
    sim.run_for(Duration::from_secs(30), MAX_EVENTS);

    // Found at every check, long after the first announce's entries expired.
    assert_eq!(checks.len(), 12, "seed {seed}");
    for (at, l) in &checks {
        let r = sim.record_of(asker, *l).expect("recorded");
        let minute = (*at - t0).as_secs() / 60;
        for w in &want {
            assert!(
                r.peers.contains(w),
                "seed {seed}: at minute {minute} the lookup did not find {w} (got {:?}, {} responses)",
                r.peers,
                r.responses
            );
        }
    }
    assert!(checks.last().is_some_and(|(at, _)| *at - t0 > PEER_TTL * 3));

    // The rounds came as the rule says: three soon (20 s while alone,
    // then 15 s once the other announcer was seen), then every 5 minutes
    // plus the lookup's own time (about 27 rounds in 2 h), never later.
    for a in &announcers {
        let gaps: Vec<Duration> = a.starts.windows(2).map(|w| w[1] - w[0]).collect();
        let n = a.starts.len();
        assert!(
            (25..=29).contains(&n),
            "seed {seed}: node {} announced {n} times in 2 h: gaps {gaps:?}",
            a.node
        );
        let steady = &gaps[3..];
        for g in steady {
            assert!(
                *g >= STEADY_EVERY && *g <= STEADY_EVERY + Duration::from_secs(20),
                "seed {seed}: node {} waited {g:?} between rounds: {gaps:?}",
                a.node
            );
        }
        assert!(
            gaps[..3].iter().all(|g| *g < Duration::from_secs(60)),
            "seed {seed}: node {} first gaps {gaps:?}",
            a.node
        );
    }
}
