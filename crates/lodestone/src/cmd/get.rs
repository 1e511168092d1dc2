//! `lodestone get` and `lodestone seed`: run the engine on one torrent and
//! show what it does.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use lodestone_core::{Metainfo, PeerId};
use lodestone_engine::magnet::FetchEvent;
use lodestone_engine::peer_io::Transports;
use lodestone_engine::session;
use lodestone_engine::torrent::{self, StartState, Stats, Summary, TorrentConfig, TorrentEvent};
use lodestone_engine::utp::UtpSocket;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::cli::{GetArgs, SeedArgs};
use crate::human;

pub(crate) fn load(path: &Path) -> anyhow::Result<Metainfo> {
    match super::info::load(&path.to_string_lossy())? {
        super::info::Input::Torrent(m) => Ok(*m),
        super::info::Input::Magnet(_) => {
            bail!("seeding needs the .torrent file: a magnet link has no piece hashes to check the content against (fetch it with `lodestone get` first)")
        }
    }
}

/// Set (to anything but empty or 0) in tests and benchmarks: nothing may
/// reach beyond the machine unless a command names it. The public DHT
/// routers are refused, and the DHT and LPD are off unless asked for.
pub const LOCAL_ONLY_ENV: &str = "LODESTONE_LOCAL_ONLY";

pub fn local_only() -> bool {
    std::env::var(LOCAL_ONLY_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Use the public DHT? Yes by default, unless another DHT (--bootstrap) or
/// none (--no-dht) is asked for, or in a local-only run.
fn public_dht(
    explicit: bool,
    no_dht: bool,
    bootstrap: &[String],
    local_only: bool,
) -> anyhow::Result<bool> {
    if local_only {
        if explicit {
            bail!("--dht: the public DHT is refused because {LOCAL_ONLY_ENV} is set");
        }
        return Ok(false);
    }
    Ok(explicit || (!no_dht && bootstrap.is_empty()))
}

/// [`public_dht`] for a command's source options, in this run.
pub(crate) fn sources_public_dht(a: &crate::cli::SourceArgs) -> anyhow::Result<bool> {
    public_dht(a.dht, a.no_dht, &a.bootstrap, local_only())
}

/// LPD: when asked for, or by default when we listen (outside local-only runs).
fn use_lpd(explicit: bool, no_lpd: bool, listening: bool, local_only: bool) -> bool {
    explicit || (!no_lpd && listening && !local_only)
}

/// When this command started (its arguments parsed): the summary's times
/// count from here. Set by the first call, which `get` and `seed` make
/// first thing.
fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// What happened when, counted from [`process_start`]: each milestone once
/// (its first time). Most are when this code saw the event; `first_byte`
/// and `complete` are the engine's own measures, moved to the process's
/// clock. With `--explain --json` the summary's `timeline`.
struct Timeline {
    start: Instant,
    entries: Vec<(Duration, serde_json::Value)>,
}

impl Timeline {
    fn new() -> Self {
        Self {
            start: process_start(),
            entries: Vec::new(),
        }
    }

    /// Since the process start.
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn at(&self, event: &str) -> Option<Duration> {
        self.entries
            .iter()
            .find(|(_, v)| v["event"] == event)
            .map(|(t, _)| *t)
    }

    /// `event` at `at` (since the process start), with `extra` fields (a
    /// JSON object or null), unless it happened already.
    fn mark_at(&mut self, at: Duration, event: &str, extra: serde_json::Value) {
        if self.at(event).is_some() {
            return;
        }
        let mut v = json!({ "event": event });
        if let (Some(o), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
            o.extend(x);
        }
        self.entries.push((at, v));
    }

    fn mark(&mut self, event: &str, extra: serde_json::Value) {
        self.mark_at(self.now(), event, extra);
    }

    /// In order of time: `{"at_s": .., "event": .., ...}`.
    fn to_json(&self) -> serde_json::Value {
        let mut e = self.entries.clone();
        e.sort_by_key(|(t, _)| *t);
        e.into_iter()
            .map(|(t, mut v)| {
                v["at_s"] = json!(t.as_secs_f64());
                v
            })
            .collect()
    }
}

/// Fresh randomness per run for the peer id and the engine's seeded choices.
pub(crate) fn run_seed_value() -> u64 {
    RandomState::new().hash_one(SystemTime::now())
}

pub(crate) fn peer_id(seed: u64) -> PeerId {
    let mut r = [0u8; 12];
    lodestone_dht::rng::Rng::from_u64(seed).fill(&mut r);
    PeerId::generate(r)
}

pub fn run_get(a: &GetArgs) -> anyhow::Result<ExitCode> {
    let [one] = a.inputs.as_slice() else {
        return super::many::get_many(a);
    };
    if a.sources.state_dir.is_some() {
        // The state directory may hold others: they all run in a session.
        return super::many::get_many(a);
    }
    let mut timeline = Timeline::new();
    let input = super::info::load(one)?;
    if matches!(input, super::info::Input::Torrent(_)) {
        timeline.mark("metadata", json!({"from": "torrent file"}));
    }
    let seed = run_seed_value();
    let rt = runtime()?;
    rt.block_on(async {
        let net = open_net(&a.sources, a.listen, seed).await?;
        let listen = net.listen;
        let public = sources_public_dht(&a.sources)?;
        let dht = net.dht(&a.sources, public, seed, &[]).await?;
        if dht.is_some() {
            timeline.mark("dht_bootstrap_started", json!(null));
        }
        let (meta, peers) = match input {
            super::info::Input::Torrent(m) => (*m, a.peers.clone()),
            super::info::Input::Magnet(m) => {
                let mut peers: Vec<std::net::SocketAddr> = a.peers.clone();
                peers.extend(m.peers.iter().filter_map(|p| match p {
                    lodestone_core::magnet::PeerAddr::Ip(a) => Some(*a),
                    lodestone_core::magnet::PeerAddr::Host(..) => None,
                }));
                let trackers = !a.sources.no_trackers && !m.trackers.is_empty();
                let lpd = use_lpd(a.sources.lpd, a.sources.no_lpd, a.listen.is_some(), local_only());
                // A listener is a way too: peers told our address dial us.
                if peers.is_empty() && dht.is_none() && !trackers && !lpd && listen.is_none() {
                    bail!("a magnet link needs a way to find peers: give --peer, --bootstrap (a DHT node), --dht (the public DHT), --listen (for peers that know our address) or --lpd with --listen, or use a magnet with trackers");
                }
                let mut cfg = torrent_config(a, seed, dht, peers, &net)?;
                let mut state = open_state(&a.sources)?;
                let uri = if one.starts_with("magnet:") {
                    one.clone()
                } else {
                    format!("magnet:?xt=urn:btih:{}", m.info_hashes.wire().to_hex())
                };
                let ih = m.info_hashes.wire();
                keep_in_state(&mut state, ih, StateSource::Magnet(&uri), &mut cfg)?;
                return drive_async(Begin::Magnet(m), cfg, Show::of(a), timeline).await;
            }
        };
        get_with(meta, peers, a, seed, dht, &net, timeline).await
    })
}

/// One network thread, as libtorrent has: hashing and disk writes run on
/// their own pool, and with a single worker every read buffer is allocated
/// and freed in one malloc arena (two workers measured 3-8 MiB more RSS
/// and more CPU for a 512 MiB download).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Where a run meets peers: the UDP socket that carries uTP and the DHT
/// (unless --no-utp), the address we listen on, and whether TCP is on.
pub(crate) struct Net {
    pub utp: Option<UtpSocket>,
    /// TCP and UDP listen on the same port: peers learn one port (from
    /// our handshake, the DHT, PEX) and try both transports there.
    pub listen: Option<std::net::SocketAddr>,
    pub tcp: bool,
}

impl Net {
    pub fn transports(&self) -> Transports {
        Transports::new(self.utp.clone(), self.tcp)
    }

    /// The run's DHT node (see [`start_dht_with`]), on this socket when
    /// uTP is on.
    pub async fn dht(
        &self,
        sources: &crate::cli::SourceArgs,
        public: bool,
        seed: u64,
        known: &[(lodestone_dht::NodeId, std::net::SocketAddr)],
    ) -> anyhow::Result<Option<lodestone_engine::dht::Dht>> {
        start_dht_with(
            &sources.bootstrap,
            public,
            self.listen,
            seed,
            known,
            self.utp.as_ref(),
        )
        .await
    }
}

/// Binds the uTP socket on `listen`'s address (any port when `listen` is
/// unset or asks for port 0; TCP then takes the same port).
pub(crate) async fn open_net(
    sources: &crate::cli::SourceArgs,
    listen: Option<std::net::SocketAddr>,
    seed: u64,
) -> anyhow::Result<Net> {
    if sources.no_utp {
        return Ok(Net {
            utp: None,
            listen,
            tcp: true,
        });
    }
    let bind = listen.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let utp = UtpSocket::bind(bind, lodestone_utp::Config::default(), seed ^ 0x757470)
        .await
        .with_context(|| format!("cannot bind the uTP/DHT socket on {bind} (UDP)"))?;
    let listen = listen.map(|l| {
        if l.port() == 0 {
            std::net::SocketAddr::new(l.ip(), utp.local_addr().port())
        } else {
            l
        }
    });
    Ok(Net {
        utp: Some(utp),
        listen,
        tcp: !sources.no_tcp,
    })
}

/// A DHT node for this run, when asked for: on the same port as the peer
/// listener (clients expect that), or any port; its routing table first
/// filled with `known` nodes (a table saved by an earlier run: the restart
/// is warm).
pub(crate) async fn start_dht_with(
    bootstrap: &[String],
    public: bool,
    listen: Option<std::net::SocketAddr>,
    seed: u64,
    known: &[(lodestone_dht::NodeId, std::net::SocketAddr)],
    utp: Option<&UtpSocket>,
) -> anyhow::Result<Option<lodestone_engine::dht::Dht>> {
    // A saved table is a way in too.
    if bootstrap.is_empty() && !public && known.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = if public {
        lodestone_engine::dht::DEFAULT_BOOTSTRAP
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        bootstrap.to_vec()
    };
    let bind = listen.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut routers = Vec::new();
    for n in &names {
        match tokio::net::lookup_host(n.as_str()).await {
            Ok(addrs) => routers.extend(addrs),
            Err(e) if !public => bail!("cannot resolve bootstrap node {n}: {e}"),
            Err(_) => {}
        }
    }
    let mut rng = lodestone_dht::rng::Rng::from_u64(seed ^ 0xd47);
    let cfg = lodestone_dht::Config {
        bootstrap: routers.clone(),
        ..lodestone_dht::Config::default()
    };
    let (id, node_seed) = (lodestone_dht::NodeId(rng.bytes20()), rng.bytes32());
    let mut dht = match utp {
        // One port for uTP and the DHT.
        Some(utp) => {
            lodestone_engine::dht::Dht::start_on(utp, cfg.clone(), id, node_seed, known).await
        }
        None => lodestone_engine::dht::Dht::start(bind, cfg.clone(), id, node_seed, known).await,
    }
    .with_context(|| format!("cannot bind the DHT socket on {bind}"))?;
    // BEP 32: routers of the other family get a node of their own, on the
    // same port where possible.
    if routers.iter().any(|r| r.is_ipv4() != bind.is_ipv4()) {
        let ip: std::net::IpAddr = if bind.is_ipv4() {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        let port = dht.local_addr().port();
        let mut added = false;
        for port in [port, 0] {
            let other = std::net::SocketAddr::new(ip, port);
            let (id, seed) = (lodestone_dht::NodeId(rng.bytes20()), rng.bytes32());
            // Announce there only if our peer listener takes that family
            // too (an unspecified IPv6 listener is dual-stack on Linux).
            let reachable = listen.is_some_and(|l| l.ip().is_unspecified() && l.is_ipv6());
            if dht
                .add_family(other, cfg.clone(), id, seed, known, reachable)
                .await
                .is_ok()
            {
                added = true;
                break;
            }
        }
        if !added {
            eprintln!("warning: no DHT node for the other address family (could not bind)");
        }
    }
    // Join in the background; lookups start from the routers meanwhile.
    let mut boot = dht.bootstrap(routers).await;
    tokio::spawn(async move { while boot.recv().await.is_some() {} });
    Ok(Some(dht))
}

/// One metadata-phase event: its NDJSON line and its words; `true` when a
/// person sees it without --explain (why it waits, who was banned).
fn fetch_line(ev: &FetchEvent, t: f64) -> (serde_json::Value, String, bool) {
    let (j, text) = match ev {
        FetchEvent::PeerConnected {
            addr,
            source,
            ut_metadata,
            metadata_size,
        } => (
            json!({"event": "metadata_peer", "t": t, "addr": addr.to_string(), "source": source.name(), "ut_metadata": ut_metadata, "metadata_size": metadata_size}),
            format!(
                "peer {addr} ({}): {}",
                source.name(),
                if *ut_metadata {
                    "has ut_metadata"
                } else {
                    "no ut_metadata"
                }
            ),
        ),
        FetchEvent::PeerRefused { addr, reason } => (
            json!({"event": "metadata_peer_refused", "t": t, "addr": addr.to_string(), "reason": reason}),
            format!("peer {addr} dropped: {reason}"),
        ),
        FetchEvent::PeersFound { source, new } => (
            json!({"event": "peers_found", "t": t, "source": source.name(), "new": new}),
            format!("{new} new peer addresses from {}", source.name()),
        ),
        FetchEvent::Piece { done, total, from } => (
            json!({"event": "metadata_piece", "t": t, "done": done, "total": total, "from": from.to_string()}),
            format!("metadata {done}/{total} pieces"),
        ),
        FetchEvent::Banned { addr, reason } => (
            json!({"event": "peer_banned", "t": t, "addr": addr.to_string(), "reason": reason}),
            format!("banned {addr}: {reason}"),
        ),
        FetchEvent::Stuck { after, status } => {
            let diagnosis = crate::words::diagnose(status);
            (
                json!({"event": "diagnosis", "t": t, "waiting_s": after.as_secs_f64(), "diagnosis": diagnosis}),
                format!(
                    "no metadata after {:.0} s:\n  {}",
                    after.as_secs_f64(),
                    diagnosis.join("\n  ")
                ),
            )
        }
        FetchEvent::Mismatch => (
            json!({"event": "metadata_mismatch", "t": t}),
            "metadata did not match the info hash; fetching it again".to_owned(),
        ),
    };
    let always = matches!(ev, FetchEvent::Stuck { .. } | FetchEvent::Banned { .. });
    (j, text, always)
}

/// Try the magnet's .torrent URLs (`xs`, `as`) beside the peers: a
/// verified one goes to the engine, failures are reported on `failed`.
pub(crate) fn race_torrent_file(
    m: &lodestone_core::Magnet,
    http: lodestone_engine::http::HttpClient,
    failed: mpsc::Sender<Vec<String>>,
) -> Option<mpsc::Receiver<Metainfo>> {
    let urls: Vec<String> = m
        .exact_sources
        .iter()
        .chain(&m.acceptable_sources)
        .cloned()
        .collect();
    if urls.is_empty() {
        return None;
    }
    let (tx, rx) = mpsc::channel(1);
    let hashes = m.info_hashes;
    tokio::spawn(async move {
        match lodestone_engine::magnet::fetch_torrent_file(&urls, hashes, &http).await {
            Ok(meta) => {
                let _ = tx.send(meta).await;
            }
            Err(errors) => {
                let _ = failed.send(errors).await;
            }
        }
    });
    Some(rx)
}

async fn get_with(
    meta: Metainfo,
    peers: Vec<std::net::SocketAddr>,
    a: &GetArgs,
    seed: u64,
    dht: Option<lodestone_engine::dht::Dht>,
    net: &Net,
    timeline: Timeline,
) -> anyhow::Result<ExitCode> {
    for &i in &a.only {
        if i >= meta.info.files.len() {
            bail!(
                "--only {i}: the torrent has {} files (0..{})",
                meta.info.files.len(),
                meta.info.files.len().saturating_sub(1)
            );
        }
    }
    let mut cfg = torrent_config(a, seed, dht, peers, net)?;
    let mut state = open_state(&a.sources)?;
    if state.is_some() {
        let raw = std::fs::read(&a.inputs[0])?;
        let ih = meta.info_hashes.wire();
        keep_in_state(&mut state, ih, StateSource::Torrent(&raw), &mut cfg)?;
    }
    drive_async(Begin::Torrent(Box::new(meta)), cfg, Show::of(a), timeline).await
}

/// What `get` asked for, as the engine's configuration.
pub(crate) fn torrent_config(
    a: &GetArgs,
    seed: u64,
    dht: Option<lodestone_engine::dht::Dht>,
    peers: Vec<std::net::SocketAddr>,
    net: &Net,
) -> anyhow::Result<TorrentConfig> {
    let mut cfg = TorrentConfig::new(a.output.clone(), peer_id(seed), seed);
    cfg.dht = dht;
    cfg.listen = net.listen;
    cfg.transports = net.transports();
    cfg.peers = peers;
    // A ratio alone seeds until it is reached; neither: stop when done.
    cfg.seed_time = match (a.seed_time, a.seed_ratio) {
        (Some(t), _) => Some(Duration::from_secs(t)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::ZERO),
    };
    cfg.seed_ratio = a.seed_ratio;
    cfg.recheck = a.recheck;
    cfg.only_files = (!a.only.is_empty()).then(|| a.only.clone());
    cfg.sequential = a.sequential;
    cfg.download_rate_limit = a.download_limit.filter(|&l| l > 0);
    cfg.upload_rate_limit = a.upload_limit.filter(|&l| l > 0);
    a.peer_limits.apply(&mut cfg);
    cfg.lpd = use_lpd(
        a.sources.lpd,
        a.sources.no_lpd,
        a.listen.is_some(),
        local_only(),
    );
    cfg.trackers = !a.sources.no_trackers;
    cfg.pex = !a.sources.no_pex;
    cfg.http = http_client(a.sources.ca_file.as_deref())?;
    Ok(cfg)
}

/// `--state-dir`: the directory, locked for this run (a second process on
/// it is refused with who holds it).
pub(crate) fn open_state(
    a: &crate::cli::SourceArgs,
) -> anyhow::Result<Option<lodestone_engine::state_dir::StateDir>> {
    a.state_dir
        .as_ref()
        .map(lodestone_engine::state_dir::StateDir::open)
        .transpose()
        .map_err(anyhow::Error::from)
}

/// Record the torrent (`raw` .torrent bytes, or its magnet) in the state
/// directory and keep its resume data there.
pub(crate) fn keep_in_state(
    state: &mut Option<lodestone_engine::state_dir::StateDir>,
    info_hash: lodestone_core::InfoHash,
    source: StateSource<'_>,
    cfg: &mut TorrentConfig,
) -> anyhow::Result<()> {
    let Some(sd) = state.as_mut() else {
        return Ok(());
    };
    match source {
        StateSource::Torrent(raw) => sd.save_metainfo(info_hash, raw)?,
        StateSource::Magnet(uri) => sd.save_magnet(info_hash, uri)?,
    }
    let added = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let entry = lodestone_engine::state_dir::TorrentEntry::new(cfg.output_dir.clone(), added);
    sd.save_entry(info_hash, &entry)?;
    cfg.resume_file = Some(sd.resume_path(info_hash));
    Ok(())
}

/// What a state directory keeps of a torrent.
pub(crate) enum StateSource<'a> {
    Torrent(&'a [u8]),
    Magnet(&'a str),
}

/// The HTTP(S) client: Mozilla's roots, plus the user's CA file if given.
pub fn http_client(ca_file: Option<&Path>) -> anyhow::Result<lodestone_engine::http::HttpClient> {
    match ca_file {
        None => Ok(lodestone_engine::http::HttpClient::default()),
        Some(p) => lodestone_engine::http::HttpClient::with_ca_file(p)
            .map_err(|e| anyhow::anyhow!("--ca-file {e}")),
    }
}

pub fn run_seed(a: &SeedArgs) -> anyhow::Result<ExitCode> {
    let Some((path, torrents)) = a.inputs.split_last() else {
        bail!("seed needs a .torrent and the content");
    };
    if torrents.len() > 1 {
        return super::many::seed_many(a, torrents, path);
    }
    let mut timeline = Timeline::new();
    let meta = load(&torrents[0])?;
    timeline.mark("metadata", json!({"from": "torrent file"}));
    let seed = run_seed_value();
    let http = http_client(a.sources.ca_file.as_deref())?;
    let mut cfg = seed_config(a, &meta, path, seed, &http)?;
    let mut state = open_state(&a.sources)?;
    let raw = std::fs::read(&torrents[0])?;
    let ih = meta.info_hashes.wire();
    keep_in_state(&mut state, ih, StateSource::Torrent(&raw), &mut cfg)?;
    let public = sources_public_dht(&a.sources)?;
    runtime()?.block_on(async {
        let net = open_net(&a.sources, Some(a.listen), seed).await?;
        cfg.listen = net.listen;
        cfg.transports = net.transports();
        cfg.dht = net.dht(&a.sources, public, seed, &[]).await?;
        if cfg.dht.is_some() {
            timeline.mark("dht_bootstrap_started", json!(null));
        }
        let show = Show {
            json: a.json,
            explain: false,
            only: Vec::new(),
            max_metadata_size: 0,
        };
        drive_async(Begin::Torrent(Box::new(meta)), cfg, show, timeline).await
    })
}

/// What `seed` asked for one torrent whose content is at (or in) `path`.
/// `http` is shared: one TLS client (its root store and session cache,
/// ~25 KB) per process, not per torrent.
pub(crate) fn seed_config(
    a: &SeedArgs,
    meta: &Metainfo,
    path: &Path,
    seed: u64,
    http: &lodestone_engine::http::HttpClient,
) -> anyhow::Result<TorrentConfig> {
    let dir = content_dir(path, &meta.info.name)?;
    let mut cfg = TorrentConfig::new(dir, peer_id(seed), seed);
    cfg.listen = Some(a.listen);
    cfg.peers = a.peers.clone();
    cfg.seed_time = a.seed_time.map(Duration::from_secs).or(Some(Duration::MAX));
    cfg.seed_ratio = a.seed_ratio;
    // What is there: from the resume file a `get` or an earlier `seed` left
    // (files modified since are hashed again), else by hashing the files.
    cfg.recheck = a.recheck;
    cfg.upload_rate_limit = a.upload_limit.filter(|&l| l > 0);
    a.peer_limits.apply(&mut cfg);
    cfg.lpd = use_lpd(a.sources.lpd, a.sources.no_lpd, true, local_only());
    cfg.trackers = !a.sources.no_trackers;
    cfg.pex = !a.sources.no_pex;
    cfg.http = http.clone();
    Ok(cfg)
}

/// The folder the torrent's content lives in, given it or the content.
fn content_dir(path: &Path, name: &str) -> anyhow::Result<PathBuf> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    if path.file_name().is_some_and(|n| n == name) {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return Ok(parent.to_owned());
    }
    if path.is_dir() {
        return Ok(path.to_owned());
    }
    bail!(
        "{} is neither the content ({name}) nor a folder holding it",
        path.display()
    )
}

/// What the engine starts from.
enum Begin {
    Torrent(Box<Metainfo>),
    /// The metadata comes from the magnet's peers (or its .torrent URLs).
    Magnet(Box<lodestone_core::Magnet>),
}

/// How the run is shown, and what needs the metadata to be checked.
struct Show {
    json: bool,
    explain: bool,
    /// `--only`: checked against the file count once it is known.
    only: Vec<usize>,
    max_metadata_size: u64,
}

impl Show {
    fn of(a: &GetArgs) -> Self {
        Self {
            json: a.json,
            explain: a.explain,
            only: a.only.clone(),
            max_metadata_size: a.max_metadata_size,
        }
    }
}

async fn drive_async(
    begin: Begin,
    cfg: TorrentConfig,
    show: Show,
    timeline: Timeline,
) -> anyhow::Result<ExitCode> {
    let (json, explain) = (show.json, show.explain);
    let seeding_forever = cfg.seed_time == Some(Duration::MAX);
    let mut cfg = cfg;
    if seeding_forever {
        cfg.seed_time = None;
    }
    let (events_tx, mut events_rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    // The engine's times count from its own start, a moment after this
    // (at most): shifted by this, they count from the process start.
    let torrent_started = timeline.now();
    let (failed_tx, mut failed_rx) = mpsc::channel(1);
    let (engine, mut ui, magnet) = match begin {
        Begin::Torrent(meta) => {
            let meta = Arc::new(*meta);
            let start = torrent::Start::Torrent(meta.clone());
            let engine = tokio::spawn(session::run_one(start, cfg, events_tx, stop_rx));
            let ui = Ui::new(&meta, json, explain, timeline, torrent_started);
            (engine, Some(ui), None)
        }
        Begin::Magnet(m) => {
            let start = torrent::Start::Magnet(torrent::MagnetStart {
                info_hashes: m.info_hashes,
                trackers: m.trackers.clone(),
                max_metadata_size: u32::try_from(show.max_metadata_size).unwrap_or(u32::MAX),
                torrent_file: race_torrent_file(&m, cfg.http.clone(), failed_tx),
            });
            let engine = tokio::spawn(session::run_one(start, cfg, events_tx, stop_rx));
            (engine, None, Some(timeline))
        }
    };
    let mut magnet = magnet;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut stopping = false;
    let mut refused: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            ev = events_rx.recv() => match ev {
                None => break,
                Some(TorrentEvent::Metadata(fe, at)) => {
                    let t = at.as_secs_f64();
                    if let Some(tl) = magnet.as_mut() {
                        // The engine's moment, not this loop's (it may lag).
                        let at = torrent_started + at;
                        match &fe {
                            FetchEvent::PeerConnected { addr, source, .. } => tl.mark_at(
                                at,
                                "first_peer",
                                json!({"addr": addr.to_string(), "source": source.name()}),
                            ),
                            FetchEvent::PeersFound { source, new } if *new > 0 => tl.mark_at(
                                at,
                                "first_peer_found",
                                json!({"source": source.name()}),
                            ),
                            FetchEvent::Piece { .. } => {
                                tl.mark_at(at, "first_metadata_piece", json!(null))
                            }
                            _ => {}
                        }
                    }
                    let (j, text, always) = fetch_line(&fe, t);
                    if json {
                        crate::outln!("{j}");
                    } else if explain || always {
                        eprintln!("{text}");
                    }
                }
                Some(TorrentEvent::MetadataReady { meta, from_file, after }) => {
                    let Some(mut tl) = magnet.take() else { continue };
                    // The engine's moment, not this loop's (it may lag).
                    let t = after.as_secs_f64();
                    let from = if from_file { "torrent url" } else { "peers" };
                    tl.mark_at(torrent_started + after, "metadata", json!({"from": from}));
                    if json {
                        if from_file {
                            crate::outln!("{}", json!({"event": "torrent_file", "t": t}));
                        }
                        crate::outln!(
                            "{}",
                            json!({"event": "metadata", "t": t, "name": meta.info.name, "size": meta.info_bytes.len(), "pieces": meta.info.num_pieces()})
                        );
                    } else {
                        if from_file && explain {
                            eprintln!("got the .torrent from the magnet's source URL");
                        }
                        eprintln!(
                            "metadata received in {t:.3} s: {} ({})",
                            meta.info.name,
                            human::bytes(meta.info.content_length())
                        );
                    }
                    let files = meta.info.files.len();
                    if let Some(&i) = show.only.iter().find(|&&i| i >= files) {
                        refused = Some(anyhow::anyhow!(
                            "--only {i}: the torrent has {files} files (0..{})",
                            files.saturating_sub(1)
                        ));
                        stopping = true;
                        let _ = stop_tx.send(true);
                    }
                    ui = Some(Ui::new(&meta, json, explain, tl, torrent_started));
                }
                Some(ev) => {
                    if let Some(ui) = ui.as_mut() {
                        ui.event(&ev);
                    }
                }
            },
            errors = failed_rx.recv() => {
                for e in errors.unwrap_or_default() {
                    if json {
                        crate::outln!("{}", json!({"event": "torrent_file_failed", "t": timeline_now(&magnet), "error": e}));
                    } else {
                        eprintln!("source URL failed: {e}");
                    }
                }
            }
            _ = &mut ctrl_c, if !stopping => {
                stopping = true;
                match &ui {
                    Some(ui) => ui.note("stopping: saving resume data"),
                    None if !json => eprintln!("stopping"),
                    None => {}
                }
                let _ = stop_tx.send(true);
            }
        }
    }
    let summary = engine.await.context("engine task")?;
    if let Some(e) = refused {
        return Err(e);
    }
    let summary = summary?;
    let Some(mut ui) = ui else {
        bail!("the engine ended before the metadata arrived");
    };
    ui.finish(&summary);
    Ok(if summary.complete && summary.paused.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Seconds since the process start, while the metadata phase's timeline is held.
fn timeline_now(t: &Option<Timeline>) -> f64 {
    t.as_ref().map_or(0.0, |t| t.now().as_secs_f64())
}

/// Progress for people (a bar on a terminal, lines otherwise) or NDJSON.
struct Ui {
    json: bool,
    explain: bool,
    bar: Option<indicatif::ProgressBar>,
    /// The sources table, one text line each, under the bar.
    multi: Option<indicatif::MultiProgress>,
    table: Vec<indicatif::ProgressBar>,
    last_rows: Vec<crate::words::SourceRow>,
    last_table_print: Option<Instant>,
    info_hash: String,
    total: u64,
    started: Instant,
    /// Everything was on disk at the start: we are only seeding.
    seeding_only: bool,
    timeline: Timeline,
    /// When the engine started the torrent, since the process start.
    torrent_started: Duration,
}

impl Ui {
    fn new(
        meta: &Metainfo,
        json: bool,
        explain: bool,
        timeline: Timeline,
        torrent_started: Duration,
    ) -> Self {
        let total = meta.info.content_length();
        let multi = (!json && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new);
        let bar = multi.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::new(total));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Self {
            json,
            explain,
            bar,
            multi,
            table: Vec::new(),
            last_rows: Vec::new(),
            last_table_print: None,
            info_hash: meta.info_hashes.wire().to_hex(),
            total,
            started: Instant::now(),
            seeding_only: false,
            timeline,
            torrent_started,
        }
    }

    fn note(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None if !self.json => eprintln!("{text}"),
            None => {}
        }
    }

    fn line(&self, v: serde_json::Value) {
        crate::outln!("{v}");
    }

    /// Record the milestones among the engine's events.
    fn milestone(&mut self, ev: &TorrentEvent) {
        let tl = &mut self.timeline;
        match ev {
            TorrentEvent::Metadata(..) | TorrentEvent::MetadataReady { .. } => {}
            TorrentEvent::Started { have, after, .. } => tl.mark_at(
                self.torrent_started + *after,
                "download_started",
                json!({"have_pieces": have}),
            ),
            TorrentEvent::PeerConnected { addr, source, .. } => tl.mark(
                "first_peer",
                json!({"addr": addr.to_string(), "source": source.name()}),
            ),
            TorrentEvent::Completed { after } => {
                tl.mark_at(self.torrent_started + *after, "complete", json!(null))
            }
            _ => {}
        }
    }

    fn event(&mut self, ev: &TorrentEvent) {
        self.milestone(ev);
        let t = self.started.elapsed().as_secs_f64();
        if self.json {
            let v = match ev {
                // Shown by the driving loop, before this view exists.
                TorrentEvent::Metadata(..) | TorrentEvent::MetadataReady { .. } => return,
                TorrentEvent::Started {
                    state,
                    have,
                    num_pieces,
                    ..
                } => json!({
                    "event": "started", "t": t, "have_pieces": have, "num_pieces": num_pieces,
                    "resume": match state { StartState::Fresh => "fresh".to_owned(), StartState::Resumed { .. } => "resumed".to_owned(), StartState::Rechecked { reason } => format!("rechecked: {reason}") },
                    "changed_files": match state { StartState::Resumed { changed_files } => *changed_files, _ => 0 },
                }),
                TorrentEvent::PeerConnected {
                    addr,
                    client,
                    source,
                    utp,
                } => {
                    let transport = if *utp { "utp" } else { "tcp" };
                    json!({"event": "peer_connected", "t": t, "addr": addr.to_string(), "client": client, "source": source.name(), "transport": transport})
                }
                TorrentEvent::PeerDisconnected { addr, reason } => {
                    json!({"event": "peer_disconnected", "t": t, "addr": addr.to_string(), "reason": reason})
                }
                TorrentEvent::HashFailed { piece, peers } => {
                    json!({"event": "hash_failed", "t": t, "piece": piece, "peers": peers.iter().map(|p| p.to_string()).collect::<Vec<_>>()})
                }
                TorrentEvent::PeerBanned { addr, reason } => {
                    json!({"event": "peer_banned", "t": t, "addr": addr.to_string(), "reason": reason})
                }
                TorrentEvent::Progress(s) => progress_json(t, s),
                TorrentEvent::Completed { after } => {
                    json!({"event": "completed", "t": t, "after_s": after.as_secs_f64()})
                }
                TorrentEvent::Paused { reason } => {
                    json!({"event": "paused", "t": t, "reason": reason})
                }
                TorrentEvent::ReadFailed { piece, reason } => {
                    json!({"event": "read_failed", "t": t, "piece": piece, "reason": reason})
                }
                TorrentEvent::Sources(rows) => {
                    let rows: Vec<serde_json::Value> = rows
                        .iter()
                        .map(crate::words::describe)
                        .map(|r| json!({"name": r.name, "status": r.status, "next_update_s": r.next_update.map(|d| d.as_secs()), "seeds": r.seeds, "peers": r.peers}))
                        .collect();
                    json!({"event": "sources", "t": t, "sources": rows})
                }
            };
            self.line(v);
            return;
        }
        match ev {
            TorrentEvent::Metadata(..) | TorrentEvent::MetadataReady { .. } => {}
            TorrentEvent::Started {
                state,
                have,
                num_pieces,
                ..
            } => {
                let how = match state {
                    StartState::Fresh => "new download".to_owned(),
                    StartState::Resumed { changed_files: 0 } => "resumed".to_owned(),
                    StartState::Resumed { changed_files } => {
                        format!("resumed ({changed_files} files modified since, hashed again)")
                    }
                    StartState::Rechecked { reason } => format!("checked files on disk ({reason})"),
                };
                self.note(&format!("{how}: {have}/{num_pieces} pieces present"));
                self.seeding_only = have == num_pieces;
            }
            TorrentEvent::PeerConnected {
                addr,
                client,
                source,
                utp,
            } => self.note(&format!(
                "peer {addr} connected over {} ({client}, {})",
                if *utp { "uTP" } else { "TCP" },
                source.name()
            )),
            TorrentEvent::PeerDisconnected { addr, reason } => {
                self.note(&format!("peer {addr} disconnected: {reason}"))
            }
            TorrentEvent::HashFailed { piece, peers } => self.note(&format!(
                "piece {piece} failed its hash check (from {peers:?}); fetching it again"
            )),
            TorrentEvent::PeerBanned { addr, reason } => {
                self.note(&format!("banned {addr}: {reason}"))
            }
            TorrentEvent::Progress(s) => {
                if let Some(b) = &self.bar {
                    b.set_length(s.wanted_bytes.max(1));
                    b.set_position(s.wanted_bytes - s.bytes_left);
                    b.set_message(format!(
                        "{} peers ({} seeds) ↑{}/s",
                        s.peers,
                        s.seeds,
                        human::bytes(s.upload_rate as u64)
                    ));
                }
            }
            TorrentEvent::Completed { .. } if self.seeding_only => {
                self.note("seeding: every piece is verified")
            }
            TorrentEvent::Completed { after } => self.note(&format!(
                "download complete in {:.2} s",
                after.as_secs_f64()
            )),
            TorrentEvent::Paused { reason } => self.note(&format!(
                "paused: {reason}. What was verified is kept; run again to resume."
            )),
            TorrentEvent::ReadFailed { piece, reason } => self.note(&format!(
                "cannot seed piece {piece}: {reason}. Its requests are refused; --recheck finds what is still good."
            )),
            TorrentEvent::Sources(rows) => {
                let rows: Vec<_> = rows.iter().map(crate::words::describe).collect();
                self.sources(&rows)
            }
        }
    }

    /// The sources table: live under the bar on a terminal; printed every
    /// 10 s with --explain otherwise.
    fn sources(&mut self, rows: &[crate::words::SourceRow]) {
        self.last_rows = rows.to_vec();
        let lines = crate::words::render(rows);
        if let Some(m) = &self.multi {
            while self.table.len() < lines.len() {
                let line = m.add(indicatif::ProgressBar::new_spinner());
                line.set_style(
                    indicatif::ProgressStyle::with_template("{msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                self.table.push(line);
            }
            for (bar, line) in self.table.iter().zip(&lines) {
                bar.set_message(line.clone());
            }
            return;
        }
        let due = self
            .last_table_print
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if self.explain && due {
            self.last_table_print = Some(Instant::now());
            eprintln!("{}", lines.join("\n"));
        }
    }

    fn finish(&mut self, s: &Summary) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        for line in self.table.drain(..) {
            line.finish_and_clear();
        }
        if !self.json && !self.last_rows.is_empty() {
            eprintln!("{}", crate::words::render(&self.last_rows).join("\n"));
        }
        // Every time in the summary counts from the process start; the
        // engine's count from the torrent's.
        let from_start = |d: Option<Duration>| d.map(|d| self.torrent_started + d);
        let (complete_at, first_byte_at) = (
            from_start(s.time_to_complete),
            from_start(s.time_to_first_byte),
        );
        if let Some(t) = first_byte_at {
            self.timeline.mark_at(t, "first_byte", json!(null));
        }
        if let Some(t) = complete_at {
            self.timeline.mark_at(t, "complete", json!(null));
        }
        self.timeline.mark("end", json!({"stopped": s.stopped}));
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        if self.json {
            let mut summary = json!({
                "event": "summary",
                "infohash": self.info_hash,
                "bytes": self.total,
                "complete": s.complete,
                "time_to_complete_s": secs(complete_at),
                "first_byte_s": secs(first_byte_at),
                "metadata_s": secs(self.timeline.at("metadata")),
                "downloaded_bytes": s.stats.downloaded,
                "uploaded_bytes": s.stats.uploaded,
                "wasted_bytes": s.stats.wasted,
                "peers_by_source": s.peers_by_source,
                "paused": s.paused,
                "stopped": s.stopped,
            });
            if self.explain {
                summary["timeline"] = self.timeline.to_json();
            }
            self.line(summary);
        } else {
            let done = if s.complete { "complete" } else { "incomplete" };
            crate::outln!(
                "{done}: {} downloaded, {} uploaded{}",
                human::bytes(s.stats.downloaded),
                human::bytes(s.stats.uploaded),
                complete_at
                    .map(|d| format!(", finished after {:.2} s", d.as_secs_f64()))
                    .unwrap_or_default()
            );
        }
    }
}

fn progress_json(t: f64, s: &Stats) -> serde_json::Value {
    json!({
        "event": "progress", "t": t,
        "have_pieces": s.have_pieces, "num_pieces": s.num_pieces,
        "bytes_left": s.bytes_left, "downloaded_bytes": s.downloaded, "uploaded_bytes": s.uploaded,
        "download_rate": s.download_rate, "upload_rate": s.upload_rate,
        "peers": s.peers, "seeds": s.seeds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dht_and_lpd_defaults() {
        let boot = vec!["127.0.0.1:1".to_owned()];
        // A user's run: the public DHT unless told otherwise.
        assert!(public_dht(false, false, &[], false).unwrap());
        assert!(!public_dht(false, true, &[], false).unwrap());
        assert!(!public_dht(false, false, &boot, false).unwrap());
        // A local-only run (tests, benchmarks): never, and asking fails.
        assert!(!public_dht(false, false, &[], true).unwrap());
        assert!(public_dht(true, false, &[], true).is_err());
        // LPD needs a port to announce; on by default then.
        assert!(use_lpd(false, false, true, false));
        assert!(!use_lpd(false, false, false, false));
        assert!(!use_lpd(false, true, true, false));
        assert!(!use_lpd(false, false, true, true));
        assert!(use_lpd(true, false, true, true));
    }
}
