//! Swarms of torrent cores on the simulated stream network: a seeder and
//! 50 leechers (4 MiB, 64 KiB pieces) joining over five seconds. Every run
//! is bounded in virtual time and events; a failure prints its seed and
//! the report.

use std::time::Duration;

use lodestone_sim::swarm::{
    DhtOptions, Leave, Outcome, PeerReport, PeerSpec, Report, Role, Swarm, SwarmConfig, MIB,
};

const LEECHERS: usize = 50;
const SIZE: u64 = 4 * MIB;

fn config(seed: u64) -> SwarmConfig {
    SwarmConfig {
        seed,
        size: SIZE,
        piece_length: 64 * 1024,
        max_time: Duration::from_secs(600),
        max_events: 20_000_000,
        ..SwarmConfig::default()
    }
}

/// Peer 0 seeds; then `LEECHERS` leechers, one every 100 ms; `extra`
/// may add more peers at the end.
fn run(seed: u64, seeder: PeerSpec, extra: impl FnOnce(&mut Swarm)) -> Report {
    let mut s = Swarm::new(config(seed));
    s.add_peer(seeder);
    for i in 0..LEECHERS {
        s.add_peer(PeerSpec::leecher().at(Duration::from_millis(100 * i as u64)));
    }
    extra(&mut s);
    let r = s.run();
    println!("{r}");
    r
}

/// Leechers that finished after `t`.
fn finished_after(r: &Report, t: Duration) -> usize {
    r.leechers()
        .filter(|p| {
            p.joined_at
                .zip(p.finished_after)
                .is_some_and(|(j, f)| j + f > t)
        })
        .count()
}

/// Every leecher finished, holding every piece, each verified.
fn all_finished(r: &Report) {
    assert_eq!(r.outcome, Outcome::AllFinished, "seed {}:\n{r}", r.seed);
    for (i, p) in r.peers.iter().enumerate() {
        if p.role == Role::Leecher {
            assert!(
                p.complete && p.finished_after.is_some(),
                "seed {}: leecher {i} did not finish: {p:?}",
                r.seed
            );
        }
        assert_eq!(p.content_errors, 0, "seed {}: peer {i}", r.seed);
    }
}

/// Measured: 10.5 to 11.1 copies over seeds 1, 4, 5 and 6 (the seeder's
/// uplink is five leechers' worth, and it serves whoever asks).
#[test]
fn fifty_leechers_finish_and_the_seeder_uploads_a_few_copies() {
    let r = run(1, PeerSpec::seeder(), |_| {});
    all_finished(&r);
    assert_eq!(r.finished(), LEECHERS);
    let copies = r.seeder_copies();
    println!("initial seeder: {copies:.2} copies for {LEECHERS} leechers");
    assert!(copies < 15.0, "seed 1: {copies:.2} copies\n{r}");
    assert!(r.bans.is_empty(), "{:?}", r.bans);
}

#[test]
fn a_liar_is_banned_and_every_honest_leecher_finishes() {
    let mut liar = 0;
    let r = run(2, PeerSpec::seeder(), |s| {
        liar = s.add_peer(PeerSpec::seeder().liar());
    });
    all_finished(&r);
    let by = r.banned_by(liar);
    println!("the liar was banned by {} peers", by.len());
    // Banned, and only the liar.
    assert_eq!(r.banned(), [liar].into(), "seed 2\n{r}");
    // Every leecher that had a piece fail its check (the liar's data: it
    // is the only one lying) banned it.
    let bad: std::collections::BTreeSet<usize> = r
        .peers
        .iter()
        .enumerate()
        .filter(|(_, p)| p.role == Role::Leecher && p.hash_failures > 0)
        .map(|(i, _)| i)
        .collect();
    println!("{} leechers had a piece fail its check", bad.len());
    assert!(bad.len() > LEECHERS / 2, "seed 2: {bad:?}\n{r}");
    assert_eq!(by, bad, "seed 2");
}

/// At two copies, blocks of a few pieces were still spread over several
/// leechers and no one held all of a piece (seen with seed 3: 4 of 64
/// pieces missing everywhere, so the swarm can never finish); at three,
/// every piece is out.
#[test]
fn the_seeder_leaves_after_three_copies_and_the_leechers_route_around_it() {
    let r = run(
        3,
        PeerSpec::seeder().leaving(Leave::AfterUpload(3 * SIZE)),
        |_| {},
    );
    let seeder = &r.peers[0];
    let left = seeder.left_at.expect("the seeder left");
    println!(
        "the seeder left at {:.2} s after {:.2} copies",
        left.as_secs_f64(),
        r.seeder_copies()
    );
    assert!(r.seeder_copies() < 3.5, "seed 3\n{r}");
    all_finished(&r);
    // Most leechers finished without it.
    let after = finished_after(&r, left);
    println!("{after} leechers finished after it left");
    assert!(after > LEECHERS / 2, "seed 3: {after}\n{r}");
}

#[test]
fn a_leecher_behind_nat_finishes() {
    let mut natted = 0;
    let r = run(4, PeerSpec::seeder(), |s| {
        natted = s.add_peer(PeerSpec::leecher().behind_nat().at(Duration::from_secs(1)));
    });
    all_finished(&r);
    let p = &r.peers[natted];
    println!(
        "the NAT'd leecher finished in {:?}: {} dials out, {} accepted",
        p.finished_after, p.dialed, p.accepted
    );
    assert_eq!(p.accepted, 0);
    assert!(p.dialed > 0);
    // Others heard of it and tried.
    let refused: u64 = r.peers.iter().map(|p| p.refused).sum();
    assert!(refused > 0);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run(5, PeerSpec::seeder(), |_| {});
    let b = run(5, PeerSpec::seeder(), |_| {});
    all_finished(&a);
    assert_eq!(a.finish_by_peer(), b.finish_by_peer());
    assert_eq!((a.events, a.actions), (b.events, b.actions));
    assert_eq!(a.peers, b.peers);
    let c = run(6, PeerSpec::seeder(), |_| {});
    all_finished(&c);
    assert_ne!(a.finish_by_peer(), c.finish_by_peer());
}

/// No tracker: a seeder and 30 leechers find each other through a
/// 500-node simulated DHT (1% loss), announcing at their start and every
/// 15 s until complete, and PEX.
#[test]
fn with_only_the_dht_every_leecher_finds_peers_and_finishes() {
    let mut cfg = config(7);
    cfg.tracker_peers = 0;
    cfg.dht = Some(DhtOptions {
        nodes: 500,
        ..DhtOptions::default()
    });
    let mut s = Swarm::new(cfg);
    s.add_peer(PeerSpec::seeder());
    for i in 0..30 {
        s.add_peer(PeerSpec::leecher().at(Duration::from_millis(200 * i)));
    }
    let r = s.run();
    println!("{r}");
    all_finished(&r);
    assert_eq!(r.finished(), 30);
    assert!(r.dht_lookups >= 31 && r.dht_found > 0, "seed 7\n{r}");
}

/// The first CI swarm: no tracker and no .torrent. A seeder and
/// 50 leechers that know only the info hash find each other through a
/// 500-node simulated DHT (1% loss), fetch the info dictionary (BEP 9)
/// from whoever has it, and go on to the content on the same
/// connections.
#[test]
fn fifty_leechers_from_a_bare_magnet_through_the_dht_finish() {
    let r = run_magnet(8, PeerSpec::seeder(), |_| {});
    all_finished(&r);
    assert_eq!(r.finished(), LEECHERS);
    assert_eq!(r.magnet_leechers(), LEECHERS);
    // Measured 10.72 copies (seeds 9 to 12: 8.10 to 10.31), as many as
    // with .torrent starts (10.43 on this seed).
    let copies = r.seeder_copies();
    println!("initial seeder: {copies:.2} copies for {LEECHERS} magnet leechers");
    assert!(copies < 15.0, "seed 8: {copies:.2} copies\n{r}");
    // The metadata phase's connections were taken over, not dropped and
    // found again: each leecher's metadata came over one of them, and
    // they went on to carry content. Not every leecher's do: one that
    // joins a busy swarm waits for an unchoke, and its first block may
    // come from a peer that dialed it later (the choker's doing, seen in
    // the cores' peer lists: interested, choked by peers with no free
    // slot). Measured with seed 8: 502 taken over, 100 brought content,
    // to 34 of the 50 leechers; metadata and content over one connection
    // for 15 (the metadata is one 16 KiB piece, often from a leecher).
    // Seeds 9 to 12: 74 to 170 brought content, to 28 to 33 leechers;
    // 15 to 19 got both over one. With the adoption removed (a fresh
    // TorrentCore::new at the switch), none does.
    let magnets: Vec<_> = r.leechers().filter(|p| p.magnet).collect();
    for (i, p) in magnets.iter().enumerate() {
        assert!(
            p.metadata_after.is_some() && p.metadata_conns > 0,
            "seed 8: magnet leecher {i} has no metadata connection: {p:?}"
        );
    }
    let count = |f: fn(&PeerReport) -> bool| magnets.iter().filter(|p| f(p)).count();
    let adopted: usize = magnets.iter().map(|p| p.adopted).sum();
    let carried: usize = magnets.iter().map(|p| p.adopted_with_content).sum();
    let fed = count(|p| p.adopted_with_content > 0);
    let same = count(|p| p.metadata_conns_with_content > 0);
    println!(
        "{adopted} connections taken over, {carried} brought content, to {fed} leechers; \
         metadata and content over one connection: {same} leechers"
    );
    assert!(carried >= 50 && fed >= LEECHERS / 2, "seed 8\n{r}");
    assert!(same >= LEECHERS / 5, "seed 8: {same}\n{r}");
}

/// [`run`] with no tracker and no .torrent: the leechers know only the
/// info hash and find everyone through a 500-node simulated DHT.
fn run_magnet(seed: u64, seeder: PeerSpec, extra: impl FnOnce(&mut Swarm)) -> Report {
    let mut cfg = config(seed);
    cfg.tracker_peers = 0;
    cfg.dht = Some(DhtOptions {
        nodes: 500,
        ..DhtOptions::default()
    });
    let mut s = Swarm::new(cfg);
    s.add_peer(seeder);
    for i in 0..LEECHERS {
        s.add_peer(
            PeerSpec::leecher()
                .magnet()
                .at(Duration::from_millis(100 * i as u64)),
        );
    }
    extra(&mut s);
    let r = s.run();
    println!("{r}");
    r
}

/// The liar, the leaving seeder and the NAT'd leecher again, in a swarm
/// that starts from bare magnets through the DHT.
#[test]
fn from_bare_magnets_a_liar_is_banned_and_everyone_finishes() {
    let mut liar = 0;
    let r = run_magnet(21, PeerSpec::seeder(), |s| {
        liar = s.add_peer(PeerSpec::seeder().liar());
    });
    all_finished(&r);
    assert_eq!(r.magnet_leechers(), LEECHERS);
    assert_eq!(r.banned(), [liar].into(), "seed 21\n{r}");
    let by = r.banned_by(liar);
    println!("the liar was banned by {} magnet leechers", by.len());
    assert!(!by.is_empty(), "seed 21\n{r}");
}

#[test]
fn from_bare_magnets_the_leechers_route_around_a_seeder_that_leaves() {
    let r = run_magnet(
        22,
        PeerSpec::seeder().leaving(Leave::AfterUpload(3 * SIZE)),
        |_| {},
    );
    let left = r.peers[0].left_at.expect("the seeder left");
    println!(
        "the seeder left at {:.2} s after {:.2} copies",
        left.as_secs_f64(),
        r.seeder_copies()
    );
    all_finished(&r);
    assert_eq!(r.magnet_leechers(), LEECHERS);
    let after = finished_after(&r, left);
    println!("{after} magnet leechers finished after it left");
    assert!(after > 0, "seed 22: everyone finished before it left\n{r}");
}

#[test]
fn from_a_bare_magnet_a_leecher_behind_nat_finishes() {
    let mut natted = 0;
    let r = run_magnet(23, PeerSpec::seeder(), |s| {
        natted = s.add_peer(
            PeerSpec::leecher()
                .magnet()
                .behind_nat()
                .at(Duration::from_secs(1)),
        );
    });
    all_finished(&r);
    let p = &r.peers[natted];
    println!(
        "the NAT'd magnet leecher finished in {:?}: {} dials out, {} accepted",
        p.finished_after, p.dialed, p.accepted
    );
    assert!(p.magnet && p.metadata_after.is_some());
    assert_eq!(p.accepted, 0);
    assert!(p.dialed > 0);
}
