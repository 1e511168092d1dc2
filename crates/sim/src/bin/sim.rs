//! `sim`: a large DHT on the simulated network, to measure lookups at a
//! scale no test network here reaches. Runs our configuration and a
//! baseline (alpha 3, no soft timeout) on the same seed, one after the
//! other, each in its own process so memory figures do not mix.
//!
//!   cargo run --release -p lodestone-sim --bin sim -- [--nodes N] [--seed S]
//!       [--lookups L] [--unresponsive F] [--loss F] [--rtt-ms M]

use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use lodestone_dht::Config;
use lodestone_sim::{DhtSim, SimConfig};

const MAX_EVENTS: u64 = u64::MAX / 4;

struct Args {
    /// Run one configuration in this process ("ours" or "baseline").
    only: Option<String>,
    nodes: usize,
    seed: u64,
    lookups: usize,
    unresponsive: f64,
    loss: f64,
    rtt_ms: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        only: None,
        nodes: 100_000,
        seed: 1,
        lookups: 500,
        unresponsive: 0.10,
        loss: 0.01,
        rtt_ms: 80,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = format!("bad value for {flag}: {v}");
        match flag.as_str() {
            "--nodes" => a.nodes = v.parse().map_err(|_| bad.clone())?,
            "--seed" => a.seed = v.parse().map_err(|_| bad.clone())?,
            "--lookups" => a.lookups = v.parse().map_err(|_| bad.clone())?,
            "--unresponsive" => a.unresponsive = v.parse().map_err(|_| bad.clone())?,
            "--loss" => a.loss = v.parse().map_err(|_| bad.clone())?,
            "--rtt-ms" => a.rtt_ms = v.parse().map_err(|_| bad.clone())?,
            "--only" => a.only = Some(v),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn info_hash(n: u64) -> InfoHash {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    b[8..16].copy_from_slice(&(n ^ 0x5555).to_le_bytes());
    InfoHash(b)
}

fn run(label: &str, a: &Args, node: Config) {
    let wall = Instant::now();
    let rss0 = rss_bytes().unwrap_or(0);
    let cfg = SimConfig {
        nodes: a.nodes,
        seed: a.seed,
        median_rtt: Duration::from_millis(a.rtt_ms),
        loss: a.loss,
        unresponsive: a.unresponsive,
        node,
        ..SimConfig::default()
    };
    let mut sim = DhtSim::new(&cfg);
    sim.join_all(
        Duration::from_millis(1),
        Duration::from_secs(30),
        MAX_EVENTS,
    );
    let joined = sim.elapsed();
    let boot_msgs = sim.messages;
    let sizes = sim.table_sizes();
    let avg_table = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    let rss = rss_bytes().unwrap_or(0).saturating_sub(rss0);

    // Announce, then look each torrent up from another node.
    let mut pairs = Vec::new();
    let mut k = 0u64;
    while pairs.len() < a.lookups && k < 20 * a.lookups as u64 {
        k += 1;
        let announcer = 1 + sim.rng().below(a.nodes as u64 - 1) as usize;
        let asker = 1 + sim.rng().below(a.nodes as u64 - 1) as usize;
        if announcer == asker || !sim.is_responsive(announcer) || !sim.is_responsive(asker) {
            continue;
        }
        let ih = info_hash(k);
        sim.announce(announcer, ih);
        pairs.push((announcer, asker, ih));
    }
    sim.run_for(Duration::from_secs(30), MAX_EVENTS);
    let before = sim.messages;
    let mut lookups = Vec::new();
    for (announcer, asker, ih) in &pairs {
        let want = sim.addr(*announcer);
        lookups.push((*asker, sim.get_peers(*asker, *ih, Some(want))));
        // Spread the lookups out a little, as real ones are.
        sim.run_for(Duration::from_millis(5), MAX_EVENTS);
    }
    sim.run_for(Duration::from_secs(60), MAX_EVENTS);
    let lookup_msgs = sim.messages - before;

    let mut found = Vec::new();
    let mut done = Vec::new();
    let (mut queries, mut responses) = (0u64, 0u64);
    for (asker, l) in &lookups {
        if let Some(r) = sim.record_of(*asker, *l) {
            if let Some(f) = r.found_at {
                found.push(f - r.started);
            }
            if let Some(d) = r.done_at {
                done.push(d - r.started);
            }
            queries += u64::from(r.queries);
            responses += u64::from(r.responses);
        }
    }
    found.sort();
    done.sort();
    let n = lookups.len().max(1) as f64;
    println!("== {label}");
    println!(
        "nodes {} ({}% unresponsive), median RTT {} ms, loss {}%, seed {}",
        a.nodes,
        a.unresponsive * 100.0,
        a.rtt_ms,
        a.loss * 100.0,
        a.seed
    );
    println!(
        "bootstrap: all joined after {:.1} s virtual, {} messages, average table {:.1} nodes",
        joined.as_secs_f64(),
        boot_msgs,
        avg_table
    );
    println!(
        "get_peers: {}/{} found the announcer ({:.1}%); time to find it median {:?}, p90 {:?}, p99 {:?}",
        found.len(),
        lookups.len(),
        found.len() as f64 * 100.0 / n,
        pct(&found, 0.5),
        pct(&found, 0.9),
        pct(&found, 0.99)
    );
    println!(
        "           lookup finished median {:?}, p99 {:?}; {:.1} queries and {:.1} responses per lookup; {:.1} datagrams per lookup on the wire (incl. answers)",
        pct(&done, 0.5),
        pct(&done, 0.99),
        queries as f64 / n,
        responses as f64 / n,
        lookup_msgs as f64 / n
    );
    println!(
        "memory: {:.1} KiB per node (RSS growth while building the network); wall time {:.1} s",
        rss as f64 / 1024.0 / a.nodes as f64,
        wall.elapsed().as_secs_f64()
    );
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let baseline = Config {
        alpha: 3,
        soft_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    match a.only.as_deref() {
        Some("ours") => run(
            "lodestone (alpha 4, soft timeout 400 ms, hard 2 s)",
            &a,
            Config::default(),
        ),
        Some("baseline") => run(
            "baseline (alpha 3, no soft timeout, hard 2 s)",
            &a,
            baseline,
        ),
        Some(other) => {
            eprintln!("error: --only takes ours or baseline, not {other}");
            std::process::exit(2);
        }
        None => {
            // One process per configuration, so each measures its own memory.
            let exe = std::env::current_exe().unwrap_or_else(|_| "sim".into());
            let args: Vec<String> = std::env::args().skip(1).collect();
            for which in ["ours", "baseline"] {
                let status = std::process::Command::new(&exe)
                    .args(&args)
                    .args(["--only", which])
                    .status();
                if !status.is_ok_and(|s| s.success()) {
                    eprintln!("error: the {which} run failed");
                    std::process::exit(1);
                }
            }
        }
    }
}
