//! `swarm`: one torrent, a flash crowd of leechers and its seeders on the
//! simulated stream network; prints each leecher's time to finish (median,
//! p99), the copies the initial seeder uploaded, bans, wall time and events.
//!
//!   cargo run --release -p lodestone-sim --bin swarm -- --peers 1000 --size 16M --seed 1
//!       [--seeders 1] [--piece 256K] [--join-over-s 10] [--nat 0.0] [--liars 0]
//!       [--seeder-leaves-after 3] [--tracker-peers 30] [--reannounce-s 0]
//!       [--rtt-ms 80] [--loss 0.0] [--seeder-up 10M] [--leecher-up 2M]
//!       [--leecher-down 10M] [--max-time-s 900] [--max-events 500000000]
//!       [--dht-nodes 0] [--dead 0.0] [--dht-loss 0.01] [--dht-poll-ms 50]
//!       [--dht-join-apart-ms 5] [--magnet] [--leechers-from-s 0]
//!
//! `--dht-nodes N` adds a simulated DHT of N nodes (at least one per peer)
//! that every peer announces on (`--dead`: the share of the other nodes
//! that never answer; `--dht-loss`: its datagram loss); `--tracker-peers 0`
//! turns the tracker off. `--magnet`: the leechers start from a bare
//! magnet (the info hash only) and fetch the metadata from their peers.
//! `--leechers-from-s`: the first leecher joins then (the seeders at 0).
//!
//! A bare magnet end to end over the DHT (100,000 nodes, 80 ms
//! median RTT, 10% dead, 1% loss), no tracker:
//!
//!   nice -n 10 cargo run --release -p lodestone-sim --bin swarm -- --dht-nodes 100000 \
//!       --dead 0.1 --loss 0.01 --magnet --peers 51 --tracker-peers 0 --leechers-from-s 5
//!       --dht-poll-ms 10
//!
//! Measured (seed 1, 16 MiB, 256 KiB pieces, a loaded 2-core machine): one
//! seeder and 50 leechers joining over 10 s from 5 s; 50/50 finish.
//! Median / p99 from each leecher's start: first peer 0.19 / 0.54 s (the
//! DHT lookup; peers are handed over every 10 ms), first handshake 0.27 /
//! 0.58 s, metadata 0.32 / 0.62 s, first byte 0.51 / 0.99 s, complete 9.57
//! / 11.57 s. Stage by stage (median): DHT 0.19 s, connect 0.07 s,
//! metadata 0.04 s, first byte 0.17 s, download 9.01 s (16 MiB at a 10 MiB/s
//! downlink, leechers uploading 2 MiB/s). Seeder 5.85 copies. Cost: the
//! 100,000 nodes take 239 s of wall time to build and join (5 ms apart, 500
//! s virtual) and 1.4 GiB RSS; the swarm itself 16 s. At 5,000 nodes: 2 s
//! to join, 130 MiB, and the same stages within 10 ms. One leecher alone
//! (`--peers 2`): first peer 0.09 s, handshake 0.28 s, metadata 0.37 s,
//! first byte 0.56 s, complete 6.18 s (one connection: 2.8 MiB/s).
//! Measured (seed 1, 16 MiB, 256 KiB pieces, defaults, a loaded 2-core
//! machine): 100 peers: 99/99 finish, median 10.75 s, p99 12.50 s, seeder
//! 6.69 copies, 643k events, 7.4 s wall, 105 MiB RSS; 1000 peers: 999/999
//! finish, median 13.54 s, p99 15.70 s, seeder 5.93 copies, 7.8M events,
//! 14.3M actions, 16.1 GiB delivered, 305 s wall (253 s CPU), 762 MiB RSS.
//!
//! `--peers` counts every peer: seeders, liars and leechers. Leechers join
//! one by one over `--join-over-s`; every tenth (of `--nat`'s share) is
//! behind NAT, spread evenly.

use std::time::Duration;

use lodestone_sim::swarm::{
    percentile, DhtOptions, Leave, Outcome, PeerReport, PeerSpec, Swarm, SwarmConfig,
};

struct Args {
    peers: usize,
    seeders: usize,
    liars: usize,
    size: u64,
    piece: u64,
    seed: u64,
    join_over: f64,
    nat: f64,
    seeder_leaves_after: Option<f64>,
    tracker_peers: usize,
    reannounce: f64,
    rtt_ms: u64,
    loss: f64,
    seeder_up: u64,
    leecher_up: u64,
    leecher_down: u64,
    max_time: f64,
    max_events: u64,
    dht_nodes: usize,
    dead: f64,
    dht_loss: Option<f64>,
    dht_poll_ms: u64,
    dht_join_apart_ms: u64,
    magnet: bool,
    leechers_from: f64,
}

/// `16M`, `256K`, `1G` or plain bytes.
fn bytes(v: &str) -> Option<u64> {
    let (num, mult) = match v.char_indices().last()? {
        (i, 'K' | 'k') => (&v[..i], 1 << 10),
        (i, 'M' | 'm') => (&v[..i], 1 << 20),
        (i, 'G' | 'g') => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        peers: 100,
        seeders: 1,
        liars: 0,
        size: 16 << 20,
        piece: 256 << 10,
        seed: 1,
        join_over: 10.0,
        nat: 0.0,
        seeder_leaves_after: None,
        tracker_peers: 30,
        reannounce: 0.0,
        rtt_ms: 80,
        loss: 0.0,
        seeder_up: 10 << 20,
        leecher_up: 2 << 20,
        leecher_down: 10 << 20,
        max_time: 900.0,
        max_events: 500_000_000,
        dht_nodes: 0,
        dead: 0.0,
        dht_loss: None,
        dht_poll_ms: 50,
        dht_join_apart_ms: 5,
        magnet: false,
        leechers_from: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err("see the header of crates/sim/src/bin/swarm.rs".into());
        }
        if flag == "--magnet" {
            a.magnet = true;
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = || format!("bad value for {flag}: {v}");
        let num = || v.parse::<f64>().map_err(|_| bad());
        match flag.as_str() {
            "--peers" => a.peers = v.parse().map_err(|_| bad())?,
            "--seeders" => a.seeders = v.parse().map_err(|_| bad())?,
            "--liars" => a.liars = v.parse().map_err(|_| bad())?,
            "--size" => a.size = bytes(&v).ok_or_else(bad)?,
            "--piece" => a.piece = bytes(&v).ok_or_else(bad)?,
            "--seed" => a.seed = v.parse().map_err(|_| bad())?,
            "--join-over-s" => a.join_over = num()?,
            "--nat" => a.nat = num()?,
            "--seeder-leaves-after" => a.seeder_leaves_after = Some(num()?),
            "--tracker-peers" => a.tracker_peers = v.parse().map_err(|_| bad())?,
            "--reannounce-s" => a.reannounce = num()?,
            "--rtt-ms" => a.rtt_ms = v.parse().map_err(|_| bad())?,
            "--loss" => a.loss = num()?,
            "--seeder-up" => a.seeder_up = bytes(&v).ok_or_else(bad)?,
            "--leecher-up" => a.leecher_up = bytes(&v).ok_or_else(bad)?,
            "--leecher-down" => a.leecher_down = bytes(&v).ok_or_else(bad)?,
            "--max-time-s" => a.max_time = num()?,
            "--max-events" => a.max_events = v.parse().map_err(|_| bad())?,
            "--dht-nodes" => a.dht_nodes = v.parse().map_err(|_| bad())?,
            "--dead" => a.dead = num()?,
            "--dht-loss" => a.dht_loss = Some(num()?),
            "--dht-poll-ms" => a.dht_poll_ms = v.parse().map_err(|_| bad())?,
            "--dht-join-apart-ms" => a.dht_join_apart_ms = v.parse().map_err(|_| bad())?,
            "--leechers-from-s" => a.leechers_from = num()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.seeders == 0 || a.peers <= a.seeders + a.liars {
        return Err("--peers must exceed --seeders + --liars, and --seeders >= 1".into());
    }
    if !(0.0..0.9).contains(&a.dead) {
        return Err("--dead must be in 0..0.9".into());
    }
    if a.magnet && a.tracker_peers == 0 && a.dht_nodes == 0 {
        return Err("--magnet with no tracker needs --dht-nodes".into());
    }
    let piece = u32::try_from(a.piece).ok().filter(|p| *p >= 16 << 10);
    if piece.is_none() || a.size == 0 {
        return Err("--piece must be 16K..4G and --size > 0".into());
    }
    Ok(a)
}

fn rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("swarm: {e}");
            std::process::exit(2);
        }
    };
    let cfg = SwarmConfig {
        seed: a.seed,
        size: a.size,
        piece_length: u32::try_from(a.piece).unwrap_or(256 << 10),
        median_rtt: Duration::from_millis(a.rtt_ms),
        loss: a.loss,
        tracker_peers: a.tracker_peers,
        reannounce: (a.reannounce > 0.0).then(|| Duration::from_secs_f64(a.reannounce)),
        max_time: Duration::from_secs_f64(a.max_time),
        max_events: a.max_events,
        dht: (a.dht_nodes > 0).then(|| DhtOptions {
            nodes: a.dht_nodes,
            loss: a.dht_loss.unwrap_or(a.loss),
            dead: a.dead,
            poll: Duration::from_millis(a.dht_poll_ms.max(1)),
            join_apart: Duration::from_millis(a.dht_join_apart_ms),
            ..DhtOptions::default()
        }),
        ..SwarmConfig::default()
    };
    let leechers = a.peers - a.seeders - a.liars;
    println!(
        "swarm: {} peers ({} seeders, {} liars, {} leechers{} joining over {} s from {} s, \
         {:.0}% behind NAT), {} MiB in {} KiB pieces, seed {}, rtt {} ms, loss {}",
        a.peers,
        a.seeders,
        a.liars,
        leechers,
        if a.magnet { " from a bare magnet" } else { "" },
        a.join_over,
        a.leechers_from,
        a.nat * 100.0,
        a.size >> 20,
        a.piece >> 10,
        a.seed,
        a.rtt_ms,
        a.loss,
    );
    let mut s = Swarm::new(cfg);
    for i in 0..a.seeders {
        let mut spec = PeerSpec::seeder().rates(a.seeder_up, a.seeder_up);
        if let (0, Some(c)) = (i, a.seeder_leaves_after) {
            spec = spec.leaving(Leave::AfterUpload((c * a.size as f64) as u64));
        }
        s.add_peer(spec);
    }
    for _ in 0..a.liars {
        s.add_peer(
            PeerSpec::seeder()
                .liar()
                .rates(a.leecher_up, a.leecher_down),
        );
    }
    let mut nat_acc = 0.0;
    for i in 0..leechers {
        let at = a.leechers_from + a.join_over * i as f64 / leechers as f64;
        let mut spec = PeerSpec::leecher()
            .rates(a.leecher_up, a.leecher_down)
            .at(Duration::from_secs_f64(at));
        if a.magnet {
            spec = spec.magnet();
        }
        nat_acc += a.nat;
        if nat_acc >= 1.0 {
            nat_acc -= 1.0;
            spec = spec.behind_nat();
        }
        s.add_peer(spec);
    }
    let r = s.run();
    println!("{r}");
    let t = r.finish_times();
    let pct = |p: f64| {
        r.percentile(p)
            .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()))
    };
    if a.dht_nodes > 0 {
        println!(
            "  DHT: {} nodes, {:.0}% dead, loss {}, found peers handed over every {} ms",
            r.dht_nodes,
            a.dead * 100.0,
            a.dht_loss.unwrap_or(a.loss),
            a.dht_poll_ms
        );
    }
    println!("  per leecher, from its start (s):        median      p99      max");
    let row = |name: &str, of: fn(&PeerReport) -> Option<Duration>| {
        let v = r.times(of);
        let f = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64()));
        println!(
            "    {name:<34} {:>8} {:>8} {:>8}  ({} of {})",
            f(percentile(&v, 0.5)),
            f(percentile(&v, 0.99)),
            f(v.last().copied()),
            v.len(),
            leechers
        );
    };
    row("first peer (any source)", |p| p.first_peer_after);
    row("first connection (handshake)", |p| p.connected_after);
    row("metadata", |p| p.metadata_after);
    row("first byte", |p| p.first_byte_after);
    row("complete", |p| p.finished_after);
    println!("  where the time goes, stage by stage (s): median      p99");
    for (name, m, p99) in r.where_time_goes() {
        let f = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64()));
        println!("    {name:<34} {:>8} {:>8}", f(m), f(p99));
    }
    println!(
        "  time to finish (s): min {} p10 {} p50 {} p90 {} p99 {} max {} ({} finished)",
        pct(0.0),
        pct(0.10),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
        t.len()
    );
    let nat: Vec<_> = r.leechers().filter(|p| p.nat).collect();
    if !nat.is_empty() {
        println!(
            "  NAT'd leechers finished: {}/{}",
            nat.iter().filter(|p| p.finished_after.is_some()).count(),
            nat.len()
        );
    }
    if let Some(left) = r.initial_seeder().and_then(|i| r.peers[i].left_at) {
        println!("  the initial seeder left at {:.2} s", left.as_secs_f64());
    }
    let errors: u32 = r.peers.iter().map(|p| p.content_errors).sum();
    println!(
        "  content errors {errors}; peak RSS {}",
        rss_mib().map_or("-".into(), |m| format!("{m:.0} MiB"))
    );
    match r.outcome {
        Outcome::AllFinished => {}
        Outcome::TimeCap => println!("  STOPPED: hit the cap on simulated time (--max-time-s)"),
        Outcome::EventCap => println!("  STOPPED: hit the cap on events (--max-events)"),
        Outcome::Stalled => println!("  STOPPED: nothing left to happen"),
    }
}
