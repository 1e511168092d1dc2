//! `lodestone dht ...`: run a DHT node, or use one for a single job.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lodestone_core::encoding::{from_hex, to_hex};
use lodestone_core::InfoHash;
use lodestone_dht::items::{self, Item, MutableItem};
use lodestone_dht::rng::Rng;
use lodestone_dht::{Config, NodeId, RawValue};
use lodestone_engine::dht::{self, Dht, ItemQuery, LookupUpdate, DEFAULT_BOOTSTRAP};
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

/// The routers: the user's, or (only then) the public ones, resolved;
/// both address families are kept (each family's node takes its own).
/// Under [`super::get::LOCAL_ONLY_ENV`] there are none to fall back on: a
/// `dht node` then starts alone, the first node of a private DHT that the
/// others join, and any command given a saved table (`--state`) starts
/// from the nodes in it.
async fn routers(c: &DhtCommon, role: Role) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    if !c.bootstrap.is_empty() {
        for b in &c.bootstrap {
            let addrs = tokio::net::lookup_host(b.as_str())
                .await
                .with_context(|| format!("cannot resolve bootstrap node {b}"))?;
            out.extend(addrs);
        }
        return Ok(out);
    }
    if super::get::local_only() {
        if role == Role::Member && c.state.is_none() && !c.json {
            eprintln!(
                "no --bootstrap and {} is set: starting alone, as the first node of a \
                 private DHT (others join with --bootstrap {})",
                super::get::LOCAL_ONLY_ENV,
                c.listen
            );
        }
        if role == Role::Member || c.state.is_some() {
            return Ok(out);
        }
        bail!(
            "give --bootstrap HOST:PORT (or --state FILE): the public routers are refused \
             because {} is set",
            super::get::LOCAL_ONLY_ENV
        );
    }
    for b in DEFAULT_BOOTSTRAP {
        if let Ok(addrs) = tokio::net::lookup_host(*b).await {
            out.extend(addrs);
        }
    }
    if out.is_empty() {
        bail!("none of the default bootstrap routers resolved; give --bootstrap HOST:PORT");
    }
    Ok(out)
}

/// Where the node of the other address family listens: --listen6, or the
/// unspecified address when a router of that family was given.
fn other_family(c: &DhtCommon, routers: &[SocketAddr]) -> anyhow::Result<Option<SocketAddr>> {
    if let Some(l) = c.listen6 {
        if l.is_ipv4() == c.listen.is_ipv4() {
            bail!(
                "--listen6 {l} is of the same address family as --listen {}",
                c.listen
            );
        }
        return Ok(Some(l));
    }
    let v4 = c.listen.is_ipv4();
    Ok(routers.iter().any(|a| a.is_ipv4() != v4).then(|| {
        if v4 {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
        }
    }))
}

/// What a node started for the command is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `dht node`: a full member of the DHT (read-only only if asked).
    Member,
    /// A one-shot job (ping, get-peers, announce, get, put): BEP 43
    /// read-only, so that others do not fill their routing tables with a
    /// node that is gone a second later.
    OneShot,
}

async fn start(c: &DhtCommon, routers: &[SocketAddr], role: Role) -> anyhow::Result<Dht> {
    let mut rng = Rng::from_u64(seed());
    let cfg = Config {
        bootstrap: routers.to_vec(),
        read_only: c.read_only || role == Role::OneShot,
        enforce_node_id: c.enforce_node_id,
        // An id the user chose stays; a random one becomes BEP 42-valid
        // once our external IP is known.
        secure_id: c.node_id.is_none(),
        ..Config::default()
    };
    let known = c.state.as_deref().map(dht::load_nodes).unwrap_or_default();
    let id = c
        .node_id
        .map_or_else(|| NodeId(rng.bytes20()), |n| NodeId(n.0));
    let mut dht = Dht::start(c.listen, cfg.clone(), id, rng.bytes32(), &known)
        .await
        .with_context(|| format!("cannot listen on {}", c.listen))?;
    if let Some(other) = other_family(c, routers)? {
        // `dht announce --port` names a port the user vouches for.
        dht.add_family(
            other,
            cfg,
            NodeId(rng.bytes20()),
            rng.bytes32(),
            &known,
            true,
        )
        .await
        .with_context(|| format!("cannot listen on {other}"))?;
    }
    Ok(dht)
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
            DhtCommand::Sample {
                target,
                walks,
                common,
                timeout,
            } => sample(common, target.map(|t| NodeId(t.0)), *walks, *timeout).await,
            DhtCommand::Get {
                target,
                key,
                salt,
                common,
                timeout,
            } => {
                let q = match (target, key) {
                    (Some(t), _) => ItemQuery::Immutable(NodeId(t.0)),
                    (None, Some(k)) => ItemQuery::Mutable {
                        key: from_hex::<32>(k)
                            .with_context(|| format!("--key {k}: not 64 hex digits"))?,
                        salt: salt.as_bytes().to_vec(),
                        seq: None,
                    },
                    (None, None) => bail!("give a target or --key"),
                };
                get_item(common, q, *timeout).await
            }
            DhtCommand::Put {
                value,
                bencoded,
                key_file,
                salt,
                seq,
                common,
                timeout,
            } => {
                let value = if *bencoded {
                    RawValue::new(value.as_bytes())
                        .map_err(|e| anyhow::anyhow!("the value is not canonical bencode: {e}"))?
                } else {
                    RawValue::from_string(value.as_bytes())
                        .context("the value is longer than BEP 44's 1000 bytes")?
                };
                let signer = match key_file {
                    Some(path) => Some((load_or_create_key(path, common.json)?, salt.as_bytes())),
                    None => None,
                };
                put_item(common, value, signer, *seq, *timeout).await
            }
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
    let routers = routers(c, Role::Member).await?;
    let dht = start(c, &routers, Role::Member).await?;
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
                    crate::outln!("{}", json!({"event": "health", "t": started.elapsed().as_secs_f64(), "listen": dht.local_addr().to_string(), "nodes": h.nodes, "good": h.good, "questionable": h.questionable, "buckets": h.buckets, "torrents_stored": h.torrents_stored, "received": h.received, "sent": h.sent, "timeouts": h.timeouts, "queries_answered": h.queries_answered, "id": h.id.to_hex(), "external_ip": h.external_ip.map(|ip| ip.to_string())}));
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
    if addr.is_ipv4() != c.listen.is_ipv4() && c.listen6.is_none() {
        bail!("{addr} is of another address family than --listen {}; give --listen or --listen6 of its family", c.listen);
    }
    let dht = start(c, &[], Role::OneShot).await?;
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
    let routers = routers(c, Role::OneShot).await?;
    let t0 = Instant::now();
    let dht = start(c, &routers, Role::OneShot).await?;
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
    let routers = routers(c, Role::OneShot).await?;
    let dht = start(c, &routers, Role::OneShot).await?;
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
    let routers = routers(c, Role::OneShot).await?;
    let dht = start(c, &routers, Role::OneShot).await?;
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

/// The ed25519 seed in `path` (64 hex digits), or a new one written there
/// (mode 0600) when the file does not exist.
fn load_or_create_key(path: &std::path::Path, quiet: bool) -> anyhow::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => from_hex::<32>(text.trim()).with_context(|| {
            format!(
                "{}: expected an ed25519 secret key of 64 hex digits",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| anyhow::anyhow!("no system randomness for a new key: {e}"))?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut f, format!("{}\n", to_hex(&seed)).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            if !quiet {
                eprintln!("new key written to {}", path.display());
            }
            Ok(seed)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A value for people: the text of a UTF-8 byte string, else its bencoding.
fn show_value(v: &RawValue) -> String {
    let b = v.as_bytes();
    if let Some(colon) = b.iter().position(|&c| c == b':') {
        if b[..colon].iter().all(u8::is_ascii_digit) {
            if let Ok(text) = std::str::from_utf8(&b[colon + 1..]) {
                return text.to_owned();
            }
        }
    }
    String::from_utf8_lossy(b).into_owned()
}

fn item_json(item: &Item, from: SocketAddr) -> serde_json::Value {
    let v = item.value();
    let mut j = json!({
        "event": "item",
        "target": item.target().to_hex(),
        "value": show_value(v),
        "bencoded_hex": to_hex(v.as_bytes()),
        "from": from.to_string(),
    });
    if let Item::Mutable(m) = item {
        j["seq"] = json!(m.seq);
        j["key"] = json!(to_hex(&m.key));
        j["salt"] = json!(String::from_utf8_lossy(&m.salt));
    }
    j
}

/// Run one BEP 44 get; the newest item found (for a mutable one, the
/// highest seq), or `None` when the lookup ended without one.
async fn newest_item(
    dht: &Dht,
    q: ItemQuery,
    timeout: u64,
    json: bool,
    print: bool,
) -> anyhow::Result<(Option<Item>, u32)> {
    let mut rx = dht.get_item(q).await;
    let mut best: Option<Item> = None;
    let mut responses = 0;
    let result = tokio::time::timeout(Duration::from_secs(timeout), async {
        while let Some(u) = rx.recv().await {
            match u {
                LookupUpdate::Item { item, from } => {
                    if print && json {
                        crate::outln!("{}", item_json(&item, from));
                    }
                    if best.as_ref().is_none_or(|b| item.seq() > b.seq()) {
                        best = Some(item);
                    }
                }
                LookupUpdate::Done { responses: r, .. } => {
                    responses = r;
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    if result.is_err() {
        bail!("the lookup did not finish in {timeout} s");
    }
    Ok((best, responses))
}

async fn get_item(c: &DhtCommon, q: ItemQuery, timeout: u64) -> anyhow::Result<ExitCode> {
    let routers = routers(c, Role::OneShot).await?;
    let dht = start(c, &routers, Role::OneShot).await?;
    let (best, responses) = newest_item(&dht, q, timeout, c.json, true).await?;
    match best {
        Some(item) => {
            if !c.json {
                match item.seq() {
                    Some(seq) => crate::outln!("{} (seq {seq})", show_value(item.value())),
                    None => crate::outln!("{}", show_value(item.value())),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("error: not found ({responses} nodes answered, none had a valid item)");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn put_item(
    c: &DhtCommon,
    value: RawValue,
    signer: Option<([u8; 32], &[u8])>,
    seq: Option<i64>,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let routers = routers(c, Role::OneShot).await?;
    let dht = start(c, &routers, Role::OneShot).await?;
    let item = match signer {
        None => Item::Immutable(value),
        Some((secret, salt)) => {
            let seq = match seq {
                Some(s) => s,
                None => {
                    // One above the newest version anyone holds.
                    let key = items::public_key(&secret);
                    let q = ItemQuery::Mutable {
                        key,
                        salt: salt.to_vec(),
                        seq: None,
                    };
                    let (found, _) = newest_item(&dht, q, timeout, c.json, false).await?;
                    found
                        .and_then(|i| i.seq())
                        .map_or(1, |s| s.saturating_add(1))
                }
            };
            Item::Mutable(
                MutableItem::sign(&secret, salt, seq, value).map_err(|e| anyhow::anyhow!("{e}"))?,
            )
        }
    };
    let target = item.target();
    let mut rx = dht.put(item.clone()).await;
    let result = tokio::time::timeout(Duration::from_secs(timeout), async {
        let mut stored = None;
        while let Some(u) = rx.recv().await {
            match u {
                LookupUpdate::Stored {
                    sent,
                    acked,
                    errors,
                } => stored = Some((sent, acked, errors)),
                LookupUpdate::Done { .. } => break,
                _ => {}
            }
        }
        stored
    })
    .await;
    let Ok(stored) = result else {
        eprintln!("error: put did not finish in {timeout} s");
        return Ok(ExitCode::FAILURE);
    };
    let (sent, acked, errors) = stored.unwrap_or((0, 0, Vec::new()));
    if c.json {
        let mut j = json!({
            "event": "stored",
            "target": target.to_hex(),
            "sent": sent,
            "acked": acked,
            "errors": errors.iter().map(|(a, code, m)| json!({"node": a.to_string(), "code": code, "message": m})).collect::<Vec<_>>(),
        });
        if let Item::Mutable(m) = &item {
            j["key"] = json!(to_hex(&m.key));
            j["seq"] = json!(m.seq);
        }
        crate::outln!("{j}");
    } else {
        match &item {
            Item::Immutable(_) => crate::outln!("target {target}"),
            Item::Mutable(m) => {
                crate::outln!("target {target}\nkey {}\nseq {}", to_hex(&m.key), m.seq)
            }
        }
        crate::outln!("stored on {acked} of {sent} nodes");
        for (a, code, m) in &errors {
            eprintln!("  {a} refused: {code} {m}");
        }
    }
    if acked == 0 {
        eprintln!("error: no node stored the item");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// BEP 51: walk the DHT collecting samples; one line per node that
/// answered, then the distinct info hashes.
async fn sample(
    c: &DhtCommon,
    target: Option<NodeId>,
    walks: u32,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let routers = routers(c, Role::OneShot).await?;
    let dht = start(c, &routers, Role::OneShot).await?;
    let mut rng = Rng::from_u64(seed());
    let targets: Vec<NodeId> = match target {
        Some(t) => vec![t],
        None => (0..walks.max(1)).map(|_| NodeId(rng.bytes20())).collect(),
    };
    let mut seen: std::collections::BTreeSet<InfoHash> = std::collections::BTreeSet::new();
    let mut nodes = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    for t in targets {
        let mut rx = dht.sample(t).await;
        loop {
            let u = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(u)) => u,
                Ok(None) => break,
                Err(_) => {
                    eprintln!("error: sampling did not finish in {timeout} s");
                    return Ok(ExitCode::FAILURE);
                }
            };
            match u {
                LookupUpdate::Samples {
                    from,
                    node,
                    samples,
                    num,
                    interval,
                } => {
                    nodes += 1;
                    if c.json {
                        crate::outln!(
                            "{}",
                            json!({"event": "samples", "from": from.to_string(), "node": node.to_hex(), "num": num, "interval": interval, "samples": samples.iter().map(|h| h.to_hex()).collect::<Vec<_>>()})
                        );
                    } else {
                        eprintln!(
                            "{from} ({node}): {} samples of {} stored, ask again in {} s",
                            samples.len(),
                            num.map_or("?".to_owned(), |n| n.to_string()),
                            interval.unwrap_or(0)
                        );
                    }
                    seen.extend(samples);
                }
                LookupUpdate::Done { .. } => break,
                _ => {}
            }
        }
    }
    if c.json {
        crate::outln!(
            "{}",
            json!({"event": "done", "nodes": nodes, "info_hashes": seen.iter().map(|h| h.to_hex()).collect::<Vec<_>>()})
        );
    } else {
        for h in &seen {
            crate::outln!("{h}");
        }
        eprintln!("{} distinct info hashes from {nodes} nodes", seen.len());
    }
    Ok(if nodes == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
