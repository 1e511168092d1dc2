//! 2 000 DHT nodes on the simulated network: everyone bootstraps, some
//! announce, others look them up; then half the nodes vanish and lookups
//! still work. Every loop is bounded; a failure prints its seed.

use std::time::Duration;

use lodestone_core::InfoHash;
use lodestone_sim::{DhtSim, SimConfig};

const NODES: usize = 2000;
const MAX_EVENTS: u64 = 50_000_000;

fn boot(seed: u64) -> DhtSim {
    let cfg = SimConfig {
        nodes: NODES,
        seed,
        loss: 0.01,
        unresponsive: 0.05,
        ..SimConfig::default()
    };
    let mut sim = DhtSim::new(&cfg);
    // Nodes join over 20 s of virtual time, each through the router (node 0)
    // and, once there are some, one earlier node.
    sim.join_all(
        Duration::from_millis(10),
        Duration::from_secs(30),
        MAX_EVENTS,
    );
    sim
}

fn info_hash(n: u64) -> InfoHash {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    b[8..16].copy_from_slice(&n.to_le_bytes());
    InfoHash(b)
}

/// Announce `count` torrents from responsive nodes; return (announcer, hash).
fn announce(sim: &mut DhtSim, count: u64, salt: u64) -> Vec<(usize, InfoHash)> {
    let mut out = Vec::new();
    let mut n = 0u64;
    while out.len() < count as usize && n < 10 * count {
        n += 1;
        let i = 1 + sim.rng().below(NODES as u64 - 1) as usize;
        if !sim.is_responsive(i) || out.iter().any(|(a, _)| *a == i) {
            continue;
        }
        let ih = info_hash(salt * 1000 + n);
        sim.announce(i, ih);
        out.push((i, ih));
    }
    sim.run_for(Duration::from_secs(20), MAX_EVENTS);
    out
}

/// Every announced torrent looked up from a different live node; returns
/// the lookup latencies (time until the announcer appeared).
fn lookups(sim: &mut DhtSim, announced: &[(usize, InfoHash)], seed: u64) -> Vec<Duration> {
    let mut started = Vec::new();
    for (k, (announcer, ih)) in announced.iter().enumerate() {
        let mut asker = 1 + (k * 7919 + 13) % (NODES - 1);
        while asker == *announcer || !sim.is_responsive(asker) {
            asker = 1 + (asker % (NODES - 1));
        }
        let want = sim.addr(*announcer);
        let l = sim.get_peers(asker, *ih, Some(want));
        started.push((asker, l, *announcer));
    }
    sim.run_for(Duration::from_secs(20), MAX_EVENTS);
    let mut latencies = Vec::new();
    for (asker, l, announcer) in started {
        let r = sim.record_of(asker, l).expect("recorded");
        let found = r.found_at.unwrap_or_else(|| {
            panic!(
                "seed {seed}: node {asker} did not find announcer {announcer} ({} queries, {} responses, done {:?})",
                r.queries, r.responses, r.done_at
            )
        });
        latencies.push(found - r.started);
    }
    latencies
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn two_thousand_nodes_find_each_other_and_survive_churn() {
    let seed = 42;
    let mut sim = boot(seed);

    // Routing tables are healthy: nobody is isolated, most know dozens.
    let sizes = sim.table_sizes();
    let empty = sizes.iter().filter(|&&s| s == 0).count();
    let avg = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    assert_eq!(empty, 0, "seed {seed}: {empty} nodes with an empty table");
    assert!(avg >= 20.0, "seed {seed}: average table size {avg}");

    let announced = announce(&mut sim, 40, 1);
    let lat = lookups(&mut sim, &announced, seed);
    let m = median(lat.clone());
    eprintln!("before churn: median lookup {m:?}, average table {avg:.1} nodes");
    assert!(m < Duration::from_secs(2), "seed {seed}: median {m:?}");

    // Half the nodes vanish. The rest notice (timeouts, refreshes) and the
    // survivors' torrents stay findable once re-announced.
    for i in 1..NODES {
        if i % 2 == 0 {
            sim.kill(i);
        }
    }
    sim.run_for(Duration::from_secs(60), MAX_EVENTS);
    let survivors: Vec<(usize, InfoHash)> = announced
        .into_iter()
        .filter(|(a, _)| sim.is_alive(*a))
        .collect();
    assert!(survivors.len() >= 10);
    for (a, ih) in &survivors {
        sim.announce(*a, *ih);
    }
    sim.run_for(Duration::from_secs(20), MAX_EVENTS);
    let lat = lookups(&mut sim, &survivors, seed);
    eprintln!("after churn: median lookup {:?}", median(lat));
}

#[test]
fn same_seed_same_run() {
    let cfg = SimConfig {
        nodes: 300,
        seed: 7,
        ..SimConfig::default()
    };
    let run = || {
        let mut sim = DhtSim::new(&cfg);
        for i in 1..300 {
            sim.bootstrap(i, &[0]);
            sim.run_for(Duration::from_millis(5), MAX_EVENTS);
        }
        sim.run_for(Duration::from_secs(10), MAX_EVENTS);
        let l = sim.get_peers(5, info_hash(1), None);
        sim.run_for(Duration::from_secs(10), MAX_EVENTS);
        (
            sim.messages,
            sim.dropped,
            sim.table_sizes(),
            sim.record_of(5, l)
                .cloned()
                .map(|r| (r.queries, r.done_at.map(|d| d - r.started))),
        )
    };
    assert_eq!(run(), run());
}
