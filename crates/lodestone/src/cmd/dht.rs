//! `lodestone dht ...`: run a DHT node, or use one for a single job.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lodestone_core::InfoHash;
use lodestone_dht::rng::Rng;
use lodestone_dht::{Config, NodeId};
use lodestone_engine::dht::{self, Dht, LookupUpdate, DEFAULT_BOOTSTRAP};
use serde_json::json;

use crate::cli::{DhtArgs, DhtCommand, DhtCommon};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The routers: the user's, or (only then) the public ones, resolved.
async fn routers(c: &DhtCommon) -> anyhow::Result<Vec<SocketAddr>> {
    if !c.bootstrap.is_empty() {
        let mut out = Vec::new();
        for b in &c.bootstrap {
            let addrs = tokio::net::lookup_host(b.as_str())
                .await
                .with_context(|| format!("cannot resolve bootstrap node {b}"))?;
            out.extend(addrs.filter(|a| a.is_ipv4() == c.listen.is_ipv4()));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for b in DEFAULT_BOOTSTRAP {
        if let Ok(addrs) = tokio::net::lookup_host(*b).await {
            out.extend(addrs.filter(|a| a.is_ipv4() == c.listen.is_ipv4()));
        }
    }
    if out.is_empty() {
        bail!("none of the default bootstrap routers resolved; give --bootstrap HOST:PORT");
    }
    Ok(out)
}

async fn start(c: &DhtCommon, routers: &[SocketAddr]) -> anyhow::Result<Dht> {
    let mut rng = Rng::from_u64(seed());
    let cfg = Config {
        bootstrap: routers.to_vec(),
        read_only: c.read_only,
        ..Config::default()
    };
    let known = c.state.as_deref().map(dht::load_nodes).unwrap_or_default();
    let id = c
        .node_id
        .map_or_else(|| NodeId(rng.bytes20()), |n| NodeId(n.0));
    Dht::start(c.listen, cfg, id, rng.bytes32(), &known)
        .await
        .with_context(|| format!("cannot listen on {}", c.listen))
}

pub fn run(a: &DhtArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        match &a.command {
            DhtCommand::Node {
                common,
                status_every,
                duration,
            } => node(common, *status_every, *duration).await,
            DhtCommand::Ping { addr, common } => ping(common, *addr).await,
            DhtCommand::GetPeers {
                info_hash,
                common,
                repeat: Some(n),
                ..
            } => repeat(common, parse_ih(info_hash)?, *n).await,
            DhtCommand::GetPeers {
                info_hash,
                common,
                trace,
                timeout,
                repeat: None,
            } => get_peers(common, parse_ih(info_hash)?, *trace, *timeout).await,
            DhtCommand::Announce {
                info_hash,
                port,
                common,
                timeout,
            } => announce(common, parse_ih(info_hash)?, *port, *timeout).await,
        }
    })
}

fn parse_ih(s: &str) -> anyhow::Result<InfoHash> {
    if let Ok(m) = s.parse::<lodestone_core::Magnet>() {
        return Ok(m.info_hashes.wire());
    }
    s.parse::<InfoHash>()
        .map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

async fn node(c: &DhtCommon, every: u64, duration: Option<u64>) -> anyhow::Result<ExitCode> {
    let routers = routers(c).await?;
    let dht = start(c, &routers).await?;
    let mut boot = dht.bootstrap(routers).await;
    let started = Instant::now();
    let end = duration.map(|d| started + Duration::from_secs(d));
    let mut tick = tokio::time::interval(Duration::from_secs(every.max(1)));
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let h = dht.health().await;
                if c.json {
                    crate::outln!("{}", json!({"event": "health", "t": started.elapsed().as_secs_f64(), "listen": dht.local_addr().to_string(), "nodes": h.nodes, "good": h.good, "questionable": h.questionable, "buckets": h.buckets, "torrents_stored": h.torrents_stored, "received": h.received, "sent": h.sent, "timeouts": h.timeouts, "queries_answered": h.queries_answered, "id": h.id.to_hex()}));
                } else {
                    crate::outln!("{:>6.0}s  {} nodes ({} good, {} questionable) in {} buckets; {} torrents stored; {} in / {} out, {} timeouts, {} queries answered", started.elapsed().as_secs_f64(), h.nodes, h.good, h.questionable, h.buckets, h.torrents_stored, h.received, h.sent, h.timeouts, h.queries_answered);
                }
                if end.is_some_and(|e| Instant::now() >= e) {
                    break;
                }
            }
            _ = boot.recv() => {}
            _ = &mut ctrl_c => break,
        }
    }
    if let Some(path) = &c.state {
        dht::save_nodes(path, &dht.nodes().await)
            .with_context(|| format!("saving {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn ping(c: &DhtCommon, addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let dht = start(c, &[]).await?;
    match dht.ping(addr).await {
        Some((id, rtt)) => {
            if c.json {
                crate::outln!(
                    "{}",
                    json!({"addr": addr.to_string(), "id": id.to_hex(), "rtt_ms": rtt.as_secs_f64() * 1000.0})
                );
            } else {
                crate::outln!("{addr}: id {id}, {:.2} ms", rtt.as_secs_f64() * 1000.0);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("error: {addr} did not answer");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn get_peers(
    c: &DhtCommon,
    ih: InfoHash,
    trace: bool,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let routers = routers(c).await?;
    let t0 = Instant::now();
    let dht = start(c, &routers).await?;
    let mut rx = dht.get_peers(ih).await;
    let mut peers: Vec<SocketAddr> = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(timeout));
    tokio::pin!(deadline);
    let t = |t0: Instant| t0.elapsed().as_secs_f64();
    loop {
        tokio::select! {
            u = rx.recv() => match u {
                Some(LookupUpdate::Peers(ps)) => {
                    for p in ps {
                        if !peers.contains(&p) {
                            peers.push(p);
                            if c.json {
                                crate::outln!("{}", json!({"event": "peer", "t": t(t0), "addr": p.to_string()}));
                            } else {
                                crate::outln!("{p}");
                            }
                        }
                    }
                }
                Some(LookupUpdate::Hop { node, addr, rtt, common_bits, nodes, values }) if trace => {
                    if c.json {
                        crate::outln!("{}", json!({"event": "hop", "t": t(t0), "node": node.to_hex(), "addr": addr.to_string(), "rtt_ms": rtt.as_secs_f64() * 1000.0, "common_bits": common_bits, "nodes": nodes, "values": values}));
                    } else {
                        eprintln!("hop {addr} id {node} rtt {:.2} ms, {common_bits} bits in common, returned {nodes} nodes and {values} peers", rtt.as_secs_f64() * 1000.0);
                    }
                }
                Some(LookupUpdate::Done { queries, responses, timeouts, duration, .. }) => {
                    if c.json {
                        crate::outln!("{}", json!({"event": "done", "t": t(t0), "peers": peers.len(), "queries": queries, "responses": responses, "timeouts": timeouts, "lookup_s": duration.as_secs_f64()}));
                    } else {
                        eprintln!("{} peers; {queries} queries, {responses} answers, {timeouts} timeouts in {:.3} s", peers.len(), duration.as_secs_f64());
                    }
                    break;
                }
                Some(_) => {}
                None => break,
            },
            _ = &mut deadline => {
                eprintln!("error: lookup did not finish in {timeout} s");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(if peers.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Repeated lookups on one node: time from the command to the first peer.
async fn repeat(c: &DhtCommon, ih: InfoHash, n: u32) -> anyhow::Result<ExitCode> {
    let routers = routers(c).await?;
    let dht = start(c, &routers).await?;
    let mut warm = Vec::new();
    for i in 0..n.max(1) {
        let t0 = Instant::now();
        let mut rx = dht.get_peers(ih).await;
        let mut first = None;
        let mut done = None;
        let wait = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(u) = rx.recv().await {
                match u {
                    LookupUpdate::Peers(p) if first.is_none() && !p.is_empty() => {
                        first = Some(t0.elapsed())
                    }
                    LookupUpdate::Done { .. } => {
                        done = Some(t0.elapsed());
                        break;
                    }
                    _ => {}
                }
            }
        })
        .await;
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        crate::outln!(
            "{}",
            json!({"event": "lookup", "n": i, "first_peer_ms": ms(first), "finished_ms": ms(done), "timed_out": wait.is_err()})
        );
        if i > 0 {
            if let Some(f) = first {
                warm.push(f);
            }
        }
    }
    warm.sort();
    if let Some(m) = warm.get(warm.len() / 2) {
        crate::outln!(
            "{}",
            json!({"event": "summary", "warm_lookups": warm.len(), "median_first_peer_ms": m.as_secs_f64() * 1000.0})
        );
    }
    Ok(if warm.is_empty() && n > 1 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn announce(
    c: &DhtCommon,
    ih: InfoHash,
    port: Option<u16>,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let routers = routers(c).await?;
    let dht = start(c, &routers).await?;
    let mut rx = dht.announce(ih, port).await;
    let result = tokio::time::timeout(Duration::from_secs(timeout), async {
        let mut acked = None;
        while let Some(u) = rx.recv().await {
            match u {
                LookupUpdate::Announced { sent, acked: a } => acked = Some((sent, a)),
                LookupUpdate::Done { .. } => break,
                _ => {}
            }
        }
        acked
    })
    .await;
    match result {
        Ok(Some((sent, acked))) if acked > 0 => {
            if c.json {
                crate::outln!(
                    "{}",
                    json!({"event": "announced", "info_hash": ih.to_hex(), "sent": sent, "acked": acked})
                );
            } else {
                crate::outln!("announced {ih} to {acked} of {sent} nodes");
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => {
            eprintln!("error: no node accepted the announce (no node with a token answered)");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            eprintln!("error: announce did not finish in {timeout} s");
            Ok(ExitCode::FAILURE)
        }
    }
}
