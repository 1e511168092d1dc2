//! uTP (lodestone-utp) over a simulated bottleneck: transfers survive
//! loss intact, LEDBAT holds the bottleneck's queue near its 100 ms target
//! while keeping the link busy, two flows share a link fairly (started
//! together or one late, deep buffer or shallow), a far path with random
//! loss is not held to a loss-halving sender's rate, and a hostile peer on
//! the same link neither grows the victim's state nor stalls an honest
//! transfer. Virtual time only; every run is bounded in virtual time and in
//! steps, and a failure names its seed.

use std::time::Duration;

use lodestone_sim::utp::{percentile, FlowId, LinkConfig, Side, UtpSim};
use lodestone_utp::ledbat::LedbatConfig;
use lodestone_utp::packet::{Header, Kind};
use lodestone_utp::seq::Seq;
use lodestone_utp::{Config, ConnectionConfig};

const MS: Duration = Duration::from_millis(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A 1 MB/s bottleneck left → right with `buffer` bytes of queue and 25 ms
/// of propagation each way; the way back is as fast (it carries acks).
fn bottleneck(buffer: usize, loss: f64, jitter: Duration) -> (LinkConfig, LinkConfig) {
    let forward = LinkConfig {
        rate: 1_000_000,
        buffer,
        delay: 25 * MS,
        jitter,
        loss,
    };
    let reverse = LinkConfig {
        buffer: 1_000_000,
        ..forward
    };
    (forward, reverse)
}

/// Every byte of every flow arrived once, in order, and the stream ended.
fn check_intact(sim: &UtpSim, f: FlowId, len: u64) {
    let flow = sim.flow(f);
    assert_eq!(
        flow.corrupt_at,
        None,
        "seed {}: a byte differed from the pattern",
        sim.seed()
    );
    assert_eq!(flow.received, len, "seed {}: bytes received", sim.seed());
    assert!(flow.finished.is_some(), "seed {}: EOF read", sim.seed());
}

#[test]
fn transfers_arrive_intact_at_0_1_and_5_percent_loss() {
    // 3 MiB over 1 MB/s with 200 kB of queue, 3 ms of jitter (packets
    // 1.5 ms apart: it reorders), random loss both ways. The limits are
    // 3-4x what seeds 1-3 took when this was written (3.5 s, 6.5 s, 14-19 s):
    // room for other seeds, but a stall of a few RTOs' back-off fails.
    const LEN: u64 = 3 << 20;
    for (loss, limit) in [(0.0, secs(15)), (0.01, secs(30)), (0.05, secs(60))] {
        for seed in 1..=3u64 {
            let (f, r) = bottleneck(200_000, loss, 3 * MS);
            let mut sim = UtpSim::new(seed, f, r, 200_000);
            let a = sim.add_host(Side::Left, Config::default());
            let b = sim.add_host(Side::Right, Config::default());
            let flow = sim.start_flow(a, b, Some(LEN));
            sim.run_flows(limit);
            check_intact(&sim, flow, LEN);
            let took = sim.flow(flow).finished.map(|t| t - sim.start());
            println!(
                "loss {loss}: seed {seed} took {took:?}, {} lost, {} dropped by the queue",
                sim.forward.stats().lost + sim.reverse.stats().lost,
                sim.forward.stats().dropped
            );
            // Both ends let go: the FIN exchange finishes and the
            // endpoints forget the connection.
            let later = sim.now() + secs(10);
            sim.run_until(later);
            assert_eq!(sim.endpoint(a).connection_count(), 0, "seed {seed}");
            assert_eq!(sim.endpoint(b).connection_count(), 0, "seed {seed}");
        }
    }
}

/// One flow that never ends over a 1 MB/s link with 1 MB of queue (1 s):
/// the queue's delay sampled every 10 ms from `from` to `to`, and the
/// share of the link's capacity used over that time.
fn saturate(seed: u64, cfg: Config, from: Duration, to: Duration) -> (Vec<Duration>, f64) {
    let (f, r) = bottleneck(1_000_000, 0.0, Duration::ZERO);
    let mut sim = UtpSim::new(seed, f, r, 2_000 * to.as_secs());
    let a = sim.add_host(Side::Left, cfg.clone());
    let b = sim.add_host(Side::Right, cfg);
    sim.start_flow(a, b, None);
    let t0 = sim.start();
    sim.run_until(t0 + from);
    let sent_before = sim.forward.stats().sent_bytes;
    let mut samples = Vec::new();
    sim.run_sampled(t0 + to, 10 * MS, |sim| {
        let now = sim.now();
        samples.push(sim.forward.queue_delay(now));
    });
    sim.forward.advance(t0 + to);
    let sent = sim.forward.stats().sent_bytes - sent_before;
    let utilisation = sent as f64 / (1_000_000.0 * (to - from).as_secs_f64());
    (samples, utilisation)
}

fn delay_control_off() -> Config {
    // A target no queue reaches: the window only grows until a loss
    // halves it, like a loss-based sender (TCP Reno without pacing).
    Config {
        connection: ConnectionConfig {
            ledbat: LedbatConfig {
                target: secs(30),
                ..LedbatConfig::default()
            },
            ..ConnectionConfig::default()
        },
        ..Config::default()
    }
}

#[test]
fn ledbat_holds_the_bottleneck_queue_near_100ms_and_the_link_busy() {
    // Slow start overshoots (the delay it reacts to is one RTT old) to
    // ~230 ms of queue; the decrease, proportional to the window, brings
    // it back to the target within a second (BEP 29's, at most `gain` per
    // RTT, took ~20 s). Measured from 20 s to 60 s, as before: see the next
    // test for minutes 2 to 5.
    let (mut q, util) = saturate(1, Config::default(), secs(20), secs(60));
    let (p5, p15, p50, p95) = (
        percentile(&mut q, 5.0),
        percentile(&mut q, 15.0),
        percentile(&mut q, 50.0),
        percentile(&mut q, 95.0),
    );
    println!("LEDBAT: queue p5 {p5:?} p15 {p15:?} p50 {p50:?} p95 {p95:?}, utilisation {util:.3}");
    // What LEDBAT must do: its window stops growing at 100 ms of one-way
    // queuing delay and shrinks above it, so with the link full the
    // bottleneck's queue sits at the target. Half or one and a half
    // times the target would mean the controller is not steering by it
    // (the noise it filters is a few packets, ~1.5 ms each here).
    assert!(
        p50 >= 80 * MS && p50 <= 120 * MS,
        "median queue {p50:?} is not near the 100 ms target"
    );
    // The slowdowns (the window at its minimum for two RTTs, then slow
    // start back: ~0.7 s every ~6.5 s) drain the queue on purpose, so that
    // every flow measures the true base delay: the queue is under 50 ms
    // ~9% of the time (p5 is 0; before slowdowns p5 was 99 ms). This
    // used to be p5 >= 50 ms; it is now p15: outside the slowdowns the
    // queue still must not drain.
    assert!(p15 >= 50 * MS, "the queue drained to {p15:?}");
    assert!(p95 <= 150 * MS, "the queue grew to {p95:?}");
    // 100 ms of queue is 2x the 50 ms base RTT: the link idles only in
    // the slowdowns (utilisation ~0.95; 1.00 before them).
    assert!(util > 0.9, "the link was {util:.3} used");

    // The same sender with the delay target out of reach fills the 1 s
    // buffer instead: the measurement above tells the two apart.
    let (mut q, util) = saturate(1, delay_control_off(), secs(20), secs(60));
    let p50 = percentile(&mut q, 50.0);
    println!("no delay control: queue p50 {p50:?}, utilisation {util:.3}");
    assert!(p50 > 400 * MS, "median queue {p50:?}");
}

#[test]
/// With BEP 29's two-minute base-delay history the queue grew by ~100 ms
/// every two minutes (100, 200, 300, 400 ms at 60, 180, 300, 400 s: the
/// standing queue was learned as the base); the 13-minute history libutp
/// uses held it at the target here, and now the periodic slowdowns drain
/// the queue every few seconds, so the base is measured afresh long
/// before any history runs out.
fn ledbat_holds_the_queue_near_100ms_from_minute_2_to_5() {
    let (mut q, util) = saturate(1, Config::default(), secs(150), secs(300));
    let p50 = percentile(&mut q, 50.0);
    println!("queue p50 {p50:?} from 150 s to 300 s, utilisation {util:.3}");
    assert!(p50 >= 80 * MS && p50 <= 120 * MS, "median queue {p50:?}");
}

/// Two never-ending flows from two hosts on the left to one on the right;
/// the second starts `late`. Each flow's share of the bytes received from
/// `run / 2` to `run`. Without jitter the seed changes nothing but ids
/// and sequence numbers; 1 ms of it (less than a packet's 1.5 ms on the
/// link) shifts when each packet arrives, so seeds differ.
fn share(seed: u64, buffer: usize, jitter: Duration, late: Duration, run: Duration) -> (f64, f64) {
    let (f, r) = bottleneck(buffer, 0.0, jitter);
    let mut sim = UtpSim::new(seed, f, r, 2_000 * run.as_secs());
    let a1 = sim.add_host(Side::Left, Config::default());
    let a2 = sim.add_host(Side::Left, Config::default());
    let b = sim.add_host(Side::Right, Config::default());
    let t0 = sim.start();
    let f1 = sim.start_flow(a1, b, None);
    sim.run_until(t0 + late);
    let f2 = sim.start_flow(a2, b, None);
    sim.run_until(t0 + run / 2);
    let (r1, r2) = (sim.flow(f1).received, sim.flow(f2).received);
    sim.run_until(t0 + run);
    let (d1, d2) = (sim.flow(f1).received - r1, sim.flow(f2).received - r2);
    let total = (d1 + d2) as f64;
    assert!(
        total > 0.8 * 1_000_000.0 * (run / 2).as_secs_f64(),
        "seed {seed}: the link was idle"
    );
    (d1 as f64 / total, d2 as f64 / total)
}

fn assert_fair(what: &str, (s1, s2): (f64, f64)) {
    println!("{what}: shares {s1:.3} / {s2:.3}");
    // Equal flows should split evenly; 35-65% leaves room for LEDBAT's
    // slow convergence (3 kB per RTT) but not for one flow starving.
    for s in [s1, s2] {
        assert!(
            (0.35..=0.65).contains(&s),
            "{what}: shares {s1:.3} / {s2:.3}"
        );
    }
}

/// With BEP 29's controller, increase and decrease both additive (gain x
/// off-target per RTT), nothing pulled two windows together in a deep
/// buffer: two flows started 1 ms apart kept shares 0.660 / 0.340. The
/// decrease is now proportional to the window (LEDBAT++), so the larger
/// window gives up more and they converge.
#[test]
fn two_flows_starting_together_share_a_deep_buffer() {
    assert_fair(
        "together, deep buffer",
        share(3, 1_000_000, Duration::ZERO, MS, secs(60)),
    );
    for seed in 1..=2 {
        assert_fair(
            &format!("together, deep buffer, 1 ms jitter, seed {seed}"),
            share(seed, 1_000_000, MS, MS, secs(60)),
        );
    }
}

#[test]
fn a_late_flow_gets_a_fair_share_of_a_shallow_buffer() {
    // 60 kB of queue (60 ms) is below the 100 ms target: losses, not
    // delay, cut the windows, and halving converges the two (the queue
    // is over a quarter of the target when it overflows: no gentler cut).
    assert_fair(
        "late by 10 s, 60 kB buffer",
        share(4, 60_000, Duration::ZERO, secs(10), secs(120)),
    );
}

/// LEDBAT's latecomer advantage: the second flow took the first one's
/// standing queue for its base delay and pushed the queue to ~237 ms; the
/// first fell to its minimum window: shares 0.005 / 0.995. Now the first
/// flow shrinks in proportion to the excess, the second's slowdown (two
/// RTTs after its slow start) drains the queue, and it measures the true
/// base.
#[test]
fn a_late_flow_gets_a_fair_share_of_a_deep_buffer() {
    assert_fair(
        "late by 10 s, 1 MB buffer",
        share(2, 1_000_000, Duration::ZERO, secs(10), secs(120)),
    );
    for seed in 1..=2 {
        assert_fair(
            &format!("late by 10 s, 1 MB buffer, 1 ms jitter, seed {seed}"),
            share(seed, 1_000_000, MS, secs(10), secs(120)),
        );
    }
}

/// Bytes one never-ending flow delivers in `run` of virtual time over a
/// far path with random loss: 150 ms of delay and 1% loss each way, and a
/// 10 MB/s link with 10 MB of buffer, so neither rate nor queue is the
/// limit (the benchmark's UDP relay: 300 ms RTT, 1% loss each way).
fn far_lossy_path(seed: u64, cfg: Config, run: Duration) -> u64 {
    let link = LinkConfig {
        rate: 10_000_000,
        buffer: 10_000_000,
        delay: 150 * MS,
        jitter: Duration::ZERO,
        loss: 0.01,
    };
    let mut sim = UtpSim::new(seed, link, link, 5_000 * run.as_secs());
    let a = sim.add_host(Side::Left, cfg.clone());
    let b = sim.add_host(Side::Right, cfg);
    let f = sim.start_flow(a, b, None);
    let t0 = sim.start();
    sim.run_until(t0 + run);
    let flow = sim.flow(f);
    assert_eq!(flow.corrupt_at, None, "seed {seed}");
    flow.received
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn a_far_randomly_lossy_path_is_not_held_to_a_halving_senders_rate() {
    // A sender that halves its window on every loss and grows 3,000 bytes
    // per RTT (libtorrent's uTP; ours before) settles at ~20 packets in
    // flight at 1% loss: ~80 kB/s at 300 ms. A loss while our queuing delay
    // is under a quarter of the target is not our queue overflowing: the
    // default cuts the window by 0.7 (CUBIC's β) for it. An AIMD window
    // goes with sqrt((1 + β) / (1 - β)): sqrt((1.7 / 0.3) / (1.5 / 0.5)),
    // 1.37x. Both runs include slow start (as a 4 MiB transfer does).
    let halving = Config {
        connection: ConnectionConfig {
            ledbat: LedbatConfig {
                loss_factor: 0.5,
                ..LedbatConfig::default()
            },
            ..ConnectionConfig::default()
        },
        ..Config::default()
    };
    let run = secs(60);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for seed in 1..=9 {
        let a = far_lossy_path(seed, Config::default(), run);
        let b = far_lossy_path(seed, halving.clone(), run);
        println!(
            "seed {seed}: default {:.1} kB/s, halving on every loss {:.1} kB/s",
            a as f64 / run.as_secs_f64() / 1000.0,
            b as f64 / run.as_secs_f64() / 1000.0,
        );
        ours.push(a);
        theirs.push(b);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let ratio = ours as f64 / theirs as f64;
    println!(
        "median: default {:.1} kB/s, halving {:.1} kB/s: {ratio:.2}x",
        ours as f64 / run.as_secs_f64() / 1000.0,
        theirs as f64 / run.as_secs_f64() / 1000.0,
    );
    assert!(
        ratio >= 1.3,
        "the default moved {ratio:.2}x what a halving sender did"
    );
}

fn raw(kind: Kind, conn_id: u16, seq: u16, ack: u16, wnd: u32, payload: usize) -> Vec<u8> {
    let mut out = Vec::new();
    Header {
        kind,
        conn_id,
        timestamp_us: 1,
        timestamp_diff_us: 0,
        wnd_size: wnd,
        seq_nr: Seq(seq),
        ack_nr: Seq(ack),
    }
    .encode(None, &mut out);
    out.extend(std::iter::repeat_n(0xee, payload));
    out
}

struct Attack {
    /// The honest flow's completion time.
    took: Option<Duration>,
    /// The most connections the victim held at any sample.
    peak: usize,
    counters: lodestone_utp::Counters,
    /// For the determinism check.
    fingerprint: (u64, u64, u64, u64),
}

/// An honest 2 MiB transfer a → b over the 1 MB/s bottleneck while, if
/// `hostile`, a host h beside a (sharing the bottleneck) attacks b every
/// 20 ms: SYNs from spoofed sources, datagrams for unknown connection ids
/// and garbage, then, spoofing a (whose ids and sequence numbers it sees on
/// the link), data far outside the window, acks of packets b never sent and
/// a 4 GiB advertised window; and a connection of its own to b that sends
/// holes and data out of the window, never acking.
fn attack(seed: u64, hostile: bool, cfg: &Config) -> Attack {
    const LEN: u64 = 2 << 20;
    let (f, r) = bottleneck(250_000, 0.0, MS);
    let mut sim = UtpSim::new(seed, f, r, 400_000);
    let a = sim.add_host(Side::Left, cfg.clone());
    let b = sim.add_host(Side::Right, cfg.clone());
    let h = sim.add_raw_host(Side::Left);
    let (a_addr, b_addr, h_addr) = (sim.addr(a), sim.addr(b), sim.addr(h));
    let flow = sim.start_flow(a, b, Some(LEN));
    let t0 = sim.start();
    let mut rng = lodestone_dht::rng::Rng::from_u64(seed ^ 0xa77ac);
    let mut peak = 0;
    let own_id: u16 = 0x4242;
    let mut own_ack: Option<u16> = None;
    let mut k = 0u32;
    let limit = t0 + secs(60);
    while sim.flow(flow).finished.is_none() && sim.now() < limit {
        let next = sim.now() + 20 * MS;
        sim.run_until(next);
        peak = peak.max(sim.endpoint(b).connection_count());
        if !hostile {
            continue;
        }
        k += 1;
        let send = |sim: &mut UtpSim, from, bytes| sim.send_raw(Side::Left, from, b_addr, bytes);
        for i in 0..10 {
            let r = rng.next_u64();
            let spoofed = format!("10.66.{}.{}:{}", r % 250, (r >> 8) % 250, 1024 + i)
                .parse()
                .expect("an address");
            send(
                &mut sim,
                spoofed,
                raw(Kind::Syn, r as u16, 1, 0, u32::MAX, 0),
            );
            let stray = raw(Kind::Data, (r >> 16) as u16, 7, 7, u32::MAX, 100);
            send(&mut sim, h_addr, stray);
            let junk: Vec<u8> = (0..(r >> 40) % 64).map(|j| (r >> (j % 56)) as u8).collect();
            send(&mut sim, h_addr, junk);
        }
        // What a sends to b, seen on the link: b's id and a's numbers (from
        // DATA: a SYN carries a's own id, and a stray with that id from a's
        // address makes b RESET a, as a spoofed RESET to a would).
        let seen = sim
            .observed(a_addr, b_addr)
            .filter(|h| h.kind == Kind::Data);
        if let Some(seen) = seen {
            let r = rng.next_u64();
            let (id, seq, ack) = (seen.conn_id, seen.seq_nr, seen.ack_nr);
            let far = seq.plus(1000 + (r % 30000) as u16).0;
            send(
                &mut sim,
                a_addr,
                raw(Kind::Data, id, far, ack.0, u32::MAX, 1000),
            );
            let old = Seq(seq.0.wrapping_sub(5000)).0;
            send(
                &mut sim,
                a_addr,
                raw(Kind::Data, id, old, ack.0, u32::MAX, 1000),
            );
            let unsent = ack.plus(2000 + (r >> 32) as u16 % 30000).0;
            send(
                &mut sim,
                a_addr,
                raw(Kind::State, id, seq.0, unsent, u32::MAX, 0),
            );
        }
        // h's own connection: SYN, then the ack b's STATE asks for, then
        // holes and far-out data with a huge window.
        for (_, from, bytes) in sim.take_inbox(h) {
            if from != b_addr {
                continue;
            }
            if let Ok(p) = lodestone_utp::packet::Packet::parse(&bytes) {
                if p.header.kind == Kind::State && own_ack.is_none() {
                    own_ack = Some(p.header.seq_nr.0.wrapping_sub(1));
                }
            }
        }
        match own_ack {
            None if k % 50 == 1 => {
                send(&mut sim, h_addr, raw(Kind::Syn, own_id, 1, 0, u32::MAX, 0))
            }
            None => {}
            Some(ack) => {
                let hole = 3 + (rng.next_u64() % 200) as u16;
                let id = own_id.wrapping_add(1);
                send(
                    &mut sim,
                    h_addr,
                    raw(Kind::Data, id, 1u16.wrapping_add(hole), ack, u32::MAX, 1200),
                );
                send(
                    &mut sim,
                    h_addr,
                    raw(Kind::Data, id, 40_000, ack, u32::MAX, 1200),
                );
            }
        }
    }
    let took = sim.flow(flow).finished.map(|t| t - t0);
    if took.is_some() {
        check_intact(&sim, flow, LEN);
    }
    let c = sim.endpoint(b).counters();
    Attack {
        took,
        peak,
        counters: c,
        fingerprint: (
            sim.forward.stats().offered_bytes,
            sim.reverse.stats().offered_bytes,
            c.resets_sent,
            sim.steps(),
        ),
    }
}

#[test]
fn a_hostile_peer_on_the_link_neither_grows_the_victim_nor_stalls_a_transfer() {
    let cfg = Config {
        max_connections: 64,
        max_half_open: 16,
        ..Config::default()
    };
    let calm = attack(7, false, &cfg);
    let hit = attack(7, true, &cfg);
    let (calm_t, hit_t) = (
        calm.took.expect("calm run"),
        hit.took.expect("the honest transfer finished under attack"),
    );
    println!(
        "honest 2 MiB: {calm_t:?} alone, {hit_t:?} under attack; victim peak {} connections; {:?}",
        hit.peak, hit.counters
    );
    // The honest connection, h's own and the half-open table.
    assert!(
        hit.peak <= 2 + cfg.max_half_open,
        "{} connections",
        hit.peak
    );
    let c = hit.counters;
    assert!(c.syns_refused > 0, "the half-open table filled: {c:?}");
    assert!(c.strays > 0 && c.malformed > 0, "{c:?}");
    // The attack's bytes are a few percent of the link; b drops what it
    // sends, so the transfer takes about as long.
    assert!(
        hit_t <= calm_t * 3 / 2,
        "{hit_t:?} under attack against {calm_t:?} alone"
    );
}

#[test]
fn the_same_seed_replays_the_same_run() {
    // The victim holds many connections at once: any iteration order that
    // depends on more than the seed shows up in the bytes on the link.
    let cfg = Config {
        max_connections: 64,
        max_half_open: 16,
        ..Config::default()
    };
    let one = attack(11, true, &cfg);
    let two = attack(11, true, &cfg);
    assert_eq!(one.fingerprint, two.fingerprint);
    assert_eq!(one.took, two.took);
}
