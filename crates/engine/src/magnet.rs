//! Getting the info dictionary of a magnet link (BEP 9): connect to the
//! peers we can find, ask every one that speaks ut_metadata for different
//! pieces, verify, and ban whoever sent bad data. Keeps trying, with
//! backoff, for as long as the caller waits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::{InfoHashes, Metainfo, PeerId};
use lodestone_peer::metadata::{MetadataAssembler, Outcome};
use lodestone_peer::picker::PeerKey;
use lodestone_peer::session::{Event, Session, SessionConfig};
use lodestone_wire::extended::{ExtendedHandshake, OUR_UT_METADATA_ID, UT_METADATA};
use lodestone_wire::metadata::MetadataMessage;
use tokio::sync::{mpsc, watch};

use crate::peer_io::{self, Connection, PeerInput, PeerSource};

/// Metadata pieces asked of a lone peer at a time (one each when several
/// peers can serve, so the pieces come in parallel).
const PER_PEER: usize = 4;
const MAX_PEERS: usize = 40;
const TICK: Duration = Duration::from_millis(200);
/// While stuck, say why this often.
const STUCK_REPORT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub info_hashes: InfoHashes,
    pub peers: Vec<SocketAddr>,
    pub dht: Option<crate::dht::Dht>,
    pub peer_id: PeerId,
    pub max_size: u32,
    pub listen: Option<SocketAddr>,
    /// Trackers from the magnet (`tr`), each its own tier.
    pub trackers: Vec<String>,
    /// Local Peer Discovery (needs `listen`).
    pub lpd: bool,
    /// For HTTP(S) trackers.
    pub http: crate::http::HttpClient,
}

#[derive(Debug, Clone)]
pub enum FetchEvent {
    PeerConnected {
        addr: SocketAddr,
        source: PeerSource,
        ut_metadata: bool,
        metadata_size: Option<u64>,
    },
    PeerRefused {
        addr: SocketAddr,
        reason: String,
    },
    Piece {
        done: usize,
        total: usize,
        from: SocketAddr,
    },
    /// A source named `new` peer addresses not known before.
    PeersFound {
        source: PeerSource,
        new: usize,
    },
    Banned {
        addr: SocketAddr,
        reason: String,
    },
    Mismatch,
    /// No metadata yet: what we know, in plain words (every few seconds).
    Stuck {
        after: Duration,
        diagnosis: Vec<String>,
    },
}

/// What the fetch has seen so far, for the diagnosis.
#[derive(Debug, Default)]
struct Seen {
    dht: Option<crate::sources::DhtRound>,
    dht_enabled: bool,
    found: usize,
    attempts: usize,
    failed: usize,
    /// Peers, not connections: a peer dialled again counts once.
    handshaken: HashSet<SocketAddr>,
    with_ut_metadata: HashSet<SocketAddr>,
    banned: usize,
    refused_size: HashSet<SocketAddr>,
}

/// Why the metadata has not arrived, as sentences a person can act on.
fn diagnose(s: &Seen, asm: &MetadataAssembler) -> Vec<String> {
    let mut out = Vec::new();
    if s.dht_enabled {
        match s.dht {
            None => out.push("DHT: first lookup still running".to_owned()),
            Some(r) if r.queries == 0 => out.push("DHT: no node to ask: the bootstrap nodes did not resolve or answer".to_owned()),
            Some(r) if r.responses == 0 => out.push(format!("DHT: 0 of {} nodes answered: bootstrap unreachable", r.queries)),
            Some(r) if r.peers == 0 => out.push(format!(
                "DHT: {} nodes answered but none knows a peer for this info hash (nobody announced it yet)",
                r.responses
            )),
            Some(r) => out.push(format!("DHT: {} nodes answered, {} peers returned", r.responses, r.peers)),
        }
    } else {
        out.push(
            "DHT: off (--no-dht, or a local-only run; give --bootstrap HOST:PORT or --dht)"
                .to_owned(),
        );
    }
    if s.found == 0 {
        out.push("no peer addresses known yet".to_owned());
    } else if s.handshaken.is_empty() {
        out.push(format!(
            "{} peers found, {} connection attempts, {} failed, none completed a BitTorrent handshake",
            s.found, s.attempts, s.failed
        ));
    } else if s.with_ut_metadata.is_empty() {
        out.push(format!(
            "{} peers connected, none supports ut_metadata (BEP 9)",
            s.handshaken.len()
        ));
    } else if asm.size().is_none() {
        // Those refused for their size did tell it (said below).
        let unsized_ = s.with_ut_metadata.difference(&s.refused_size).count();
        if unsized_ > 0 {
            out.push(format!(
                "{unsized_} peers support ut_metadata but none told the metadata size"
            ));
        }
    } else {
        out.push(format!(
            "metadata {}/{} pieces from {} peers with ut_metadata",
            asm.pieces_done(),
            asm.num_pieces(),
            s.with_ut_metadata.len()
        ));
    }
    if s.banned > 0 {
        out.push(format!("{} peer(s) banned for bad metadata", s.banned));
    }
    if !s.refused_size.is_empty() {
        out.push(format!(
            "{} peer(s) refused: metadata size above the limit",
            s.refused_size.len()
        ));
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("stopped before the metadata arrived")]
    Stopped,
    #[error("the metadata matched the info hash but does not parse: {0}")]
    Invalid(lodestone_core::MetainfoError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

struct Peer {
    addr: SocketAddr,
    source: PeerSource,
    session: Session,
    conn: Connection,
    ut_metadata: bool,
}

/// Fetch and verify the metadata. Returns the torrent (info dict only; the
/// caller adds trackers and the like from the magnet). With `listen`, peers
/// that dial us are taken too; the port is free again when this returns.
pub async fn fetch_metadata(
    cfg: FetchConfig,
    events: mpsc::Sender<FetchEvent>,
    shutdown: watch::Receiver<bool>,
) -> Result<Metainfo, FetchError> {
    let (input_tx, input_rx) = mpsc::channel::<PeerInput>(64);
    let listener = match cfg.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|error| FetchError::Listen { addr, error })?;
            let seed = u64::from_le_bytes(cfg.peer_id.0[12..20].try_into().unwrap_or([0; 8]));
            let ih = vec![cfg.info_hashes.wire()];
            Some(Listener(Some(peer_io::listen(
                l,
                input_tx.clone(),
                ih,
                seed,
            ))))
        }
        None => None,
    };
    let r = fetch(cfg, events, shutdown, input_tx, input_rx).await;
    // The download phase binds the same port: wait until the listener is gone.
    if let Some(l) = listener {
        l.stop().await;
    }
    r
}

/// The metadata phase's accept task: aborted if the fetch is dropped.
struct Listener(Option<tokio::task::JoinHandle<()>>);

impl Listener {
    /// Abort the task and wait until it (and so the socket) is gone.
    async fn stop(mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

async fn fetch(
    cfg: FetchConfig,
    events: mpsc::Sender<FetchEvent>,
    mut shutdown: watch::Receiver<bool>,
    input_tx: mpsc::Sender<PeerInput>,
    mut input_rx: mpsc::Receiver<PeerInput>,
) -> Result<Metainfo, FetchError> {
    let ih = cfg.info_hashes.wire();
    let _dht = cfg
        .dht
        .clone()
        .map(|d| crate::torrent::spawn_dht_discovery(d, ih, cfg.listen, input_tx.clone()));
    // Trackers: we do not know the size yet, so say 1 byte is left.
    let (_progress_tx, progress_rx) = watch::channel(crate::tracker::Progress {
        left: 1,
        ..Default::default()
    });
    let base = lodestone_wire::tracker::AnnounceRequest {
        info_hash: ih,
        peer_id: cfg.peer_id,
        port: cfg.listen.map_or(0, |a| a.port()),
        uploaded: 0,
        downloaded: 0,
        left: 1,
        event: lodestone_wire::tracker::AnnounceEvent::Started,
        num_want: 50,
        key: u32::from_be_bytes([
            cfg.peer_id.0[16],
            cfg.peer_id.0[17],
            cfg.peer_id.0[18],
            cfg.peer_id.0[19],
        ]),
    };
    let _trackers: Vec<crate::torrent::AbortOnDrop> = cfg
        .trackers
        .iter()
        .map(|t| {
            crate::torrent::AbortOnDrop::spawn(crate::tracker::run_tier(
                vec![t.clone()],
                base.clone(),
                progress_rx.clone(),
                input_tx.clone(),
                cfg.http.clone(),
            ))
        })
        .collect();
    let _lpd = match (cfg.lpd, cfg.listen) {
        (true, Some(l)) => Some(crate::torrent::AbortOnDrop::spawn(crate::lpd::run(
            ih,
            l.port(),
            crate::lpd_cookie(&cfg.peer_id),
            input_tx.clone(),
        ))),
        _ => None,
    };
    let mut asm = MetadataAssembler::new(cfg.info_hashes, cfg.max_size);
    let mut peers: HashMap<PeerKey, Peer> = HashMap::new();
    let mut next_key = 0u64;
    let buffers = std::sync::Arc::new(crate::peer_io::ReadBuffers::default());
    let mut known: BTreeMap<SocketAddr, (PeerSource, Instant, Duration)> = BTreeMap::new();
    let mut connecting: HashSet<SocketAddr> = HashSet::new();
    let mut banned: HashSet<IpAddr> = HashSet::new();
    let mut seen = Seen {
        dht_enabled: cfg.dht.is_some(),
        ..Seen::default()
    };
    let started = Instant::now();
    let mut next_report = started + STUCK_REPORT;
    let now = Instant::now();
    for p in &cfg.peers {
        known.insert(*p, (PeerSource::Manual, now, Duration::from_secs(1)));
    }
    seen.found = known.len();
    let mut tick = tokio::time::interval(TICK);
    loop {
        // Dial what is due.
        let now = Instant::now();
        let connected: HashSet<SocketAddr> = peers.values().map(|p| p.addr).collect();
        for (addr, (source, due, backoff)) in known.iter_mut() {
            if peers.len() + connecting.len() >= MAX_PEERS {
                break;
            }
            if *due > now
                || connected.contains(addr)
                || connecting.contains(addr)
                || banned.contains(&addr.ip())
            {
                continue;
            }
            connecting.insert(*addr);
            seen.attempts += 1;
            *due = now + *backoff;
            *backoff = (*backoff * 2).min(Duration::from_secs(60));
            peer_io::connect(*addr, cfg.listen, *source, input_tx.clone(), None);
        }

        let input = tokio::select! {
            i = input_rx.recv() => i,
            _ = tick.tick() => None,
            _ = shutdown.changed() => return Err(FetchError::Stopped),
        };
        let now = Instant::now();
        let mut touched: Vec<PeerKey> = Vec::new();
        match input {
            Some(PeerInput::Connected {
                stream,
                addr,
                source,
                cipher,
                initial,
            }) => {
                connecting.remove(&addr);
                if banned.contains(&addr.ip()) {
                    continue;
                }
                // Dials are counted before they start; peers that dial us
                // are held to the same cap here (the stream is dropped).
                if source == PeerSource::Incoming && peers.len() + connecting.len() >= MAX_PEERS {
                    continue;
                }
                let key = PeerKey(next_key);
                next_key += 1;
                let mut session = Session::new(SessionConfig::new(ih, cfg.peer_id, None), now);
                // What the listener read while sniffing: the peer's handshake.
                if !initial.is_empty() && session.handle_chunk(now, initial[..].into()).is_err() {
                    continue;
                }
                let conn =
                    Connection::spawn(key, stream, input_tx.clone(), cipher, buffers.clone());
                peers.insert(
                    key,
                    Peer {
                        addr,
                        source,
                        session,
                        conn,
                        ut_metadata: false,
                    },
                );
                touched.push(key);
            }
            Some(PeerInput::ConnectFailed { addr, .. }) => {
                connecting.remove(&addr);
                seen.failed += 1;
            }
            Some(PeerInput::Discovered { addrs, source }) => {
                let mut new = 0;
                for a in addrs {
                    if Some(a) != cfg.listen && known.len() < 2000 && !known.contains_key(&a) {
                        known.insert(a, (source, now, Duration::from_secs(1)));
                        new += 1;
                    }
                }
                seen.found = known.len();
                if new > 0 {
                    let _ = events.send(FetchEvent::PeersFound { source, new }).await;
                }
            }
            Some(PeerInput::Data { key, bytes }) => {
                let Some(p) = peers.get_mut(&key) else {
                    continue;
                };
                if let Err(e) = p.session.handle_chunk(now, bytes) {
                    drop_peer(&mut peers, &mut asm, key, e.to_string(), &events).await;
                    continue;
                }
                touched.push(key);
            }
            Some(PeerInput::Writable { key }) => touched.push(key),
            Some(PeerInput::DhtRound(r)) => seen.dht = Some(r),
            Some(PeerInput::SourceStatus { .. }) | Some(PeerInput::TrackerStatus(_)) => {}
            Some(PeerInput::Closed { key, .. }) => {
                peers.remove(&key);
                asm.peer_gone(key);
            }
            None => {
                touched.extend(peers.keys().copied());
                if now >= next_report {
                    next_report = now + STUCK_REPORT;
                    let diagnosis = diagnose(&seen, &asm);
                    let _ = events
                        .send(FetchEvent::Stuck {
                            after: now - started,
                            diagnosis,
                        })
                        .await;
                }
            }
        }

        for key in touched {
            // Events of this peer.
            while let Some(ev) = peers.get_mut(&key).and_then(|p| p.session.poll_event()) {
                let Some(p) = peers.get_mut(&key) else { break };
                match ev {
                    Event::Connected { .. } => {
                        seen.handshaken.insert(p.addr);
                        let mut h = ExtendedHandshake {
                            client: Some(format!("Lodestone {}", env!("CARGO_PKG_VERSION"))),
                            listen_port: cfg.listen.map(|a| a.port()),
                            ..Default::default()
                        };
                        h.extensions.insert(UT_METADATA.into(), OUR_UT_METADATA_ID);
                        p.session.send_extended_handshake(&h);
                    }
                    Event::ExtendedHandshake(h) => {
                        let (addr, source) = (p.addr, p.source);
                        p.ut_metadata = h.id_of(UT_METADATA).is_some();
                        if p.ut_metadata {
                            seen.with_ut_metadata.insert(addr);
                        }
                        let _ = events
                            .send(FetchEvent::PeerConnected {
                                addr,
                                source,
                                ut_metadata: p.ut_metadata,
                                metadata_size: h.metadata_size,
                            })
                            .await;
                        if let (true, Some(size)) = (p.ut_metadata, h.metadata_size) {
                            if let Err(e) = asm.peer_size(key, size) {
                                seen.refused_size.insert(addr);
                                peers.remove(&key);
                                let _ = events
                                    .send(FetchEvent::PeerRefused {
                                        addr,
                                        reason: e.to_string(),
                                    })
                                    .await;
                                break;
                            }
                        }
                    }
                    Event::Metadata(MetadataMessage::Data {
                        piece,
                        total_size,
                        data,
                    }) => {
                        let from = p.addr;
                        match asm.on_data(key, piece, total_size, &data) {
                            Outcome::Stored => {
                                let _ = events
                                    .send(FetchEvent::Piece {
                                        done: asm.pieces_done(),
                                        total: asm.num_pieces(),
                                        from,
                                    })
                                    .await;
                            }
                            Outcome::Ignored => {}
                            Outcome::Mismatch { liars } => {
                                let _ = events.send(FetchEvent::Mismatch).await;
                                seen.banned += liars.len();
                                ban(&mut peers, &mut asm, &mut banned, &liars, &events).await;
                            }
                            Outcome::Complete { info, liars } => {
                                // The last piece too: --explain shows each.
                                let total = asm.num_pieces();
                                let piece = FetchEvent::Piece {
                                    done: total,
                                    total,
                                    from,
                                };
                                let _ = events.send(piece).await;
                                ban(&mut peers, &mut asm, &mut banned, &liars, &events).await;
                                return Metainfo::from_info_bytes(&info)
                                    .map_err(FetchError::Invalid);
                            }
                        }
                    }
                    Event::Metadata(MetadataMessage::Reject { piece }) => asm.on_reject(key, piece),
                    Event::Metadata(MetadataMessage::Request { piece }) => {
                        // We have nothing to give yet.
                        let reject = MetadataMessage::Reject { piece }.encode();
                        p.session.send_extension(UT_METADATA, reject);
                    }
                    _ => {}
                }
            }
            // Requests, then bytes out.
            let Some(p) = peers.get_mut(&key) else {
                continue;
            };
            if p.ut_metadata {
                // Spread the pieces over the peers that have them; a lone
                // peer gets several at once.
                let cap = if asm.usable_peers() > 1 { 1 } else { PER_PEER };
                while asm.in_flight(key) < cap {
                    let Some(piece) = asm.next_request(key, now) else {
                        break;
                    };
                    p.session
                        .send_extension(UT_METADATA, MetadataMessage::Request { piece }.encode());
                }
            }
            if let Err(e) = p.session.handle_timeout(now) {
                drop_peer(&mut peers, &mut asm, key, e.to_string(), &events).await;
                continue;
            }
            while let Some(b) = p.session.poll_transmit(now) {
                if p.conn.tx.try_send(b).is_err() {
                    break;
                }
            }
        }
    }
}

/// Close a peer's connection and say why.
async fn drop_peer(
    peers: &mut HashMap<PeerKey, Peer>,
    asm: &mut MetadataAssembler,
    key: PeerKey,
    reason: String,
    events: &mpsc::Sender<FetchEvent>,
) {
    if let Some(p) = peers.remove(&key) {
        asm.peer_gone(key);
        let _ = events
            .send(FetchEvent::PeerRefused {
                addr: p.addr,
                reason,
            })
            .await;
    }
}

async fn ban(
    peers: &mut HashMap<PeerKey, Peer>,
    asm: &mut MetadataAssembler,
    banned: &mut HashSet<IpAddr>,
    liars: &[PeerKey],
    events: &mpsc::Sender<FetchEvent>,
) {
    for k in liars {
        if let Some(p) = peers.remove(k) {
            banned.insert(p.addr.ip());
            asm.peer_gone(*k);
            let reason = "sent metadata that does not match the info hash".to_owned();
            let _ = events
                .send(FetchEvent::Banned {
                    addr: p.addr,
                    reason,
                })
                .await;
        }
    }
}

/// Largest .torrent accepted from an `xs`/`as` URL.
pub const MAX_TORRENT_DOWNLOAD: usize = 16 << 20;

/// Try the magnet's `.torrent` URLs (`xs`, then `as`) in order; the first
/// that parses and has the magnet's info hash wins. Returns every failure
/// when none does.
pub async fn fetch_torrent_file(
    urls: &[String],
    hashes: InfoHashes,
    http: &crate::http::HttpClient,
) -> Result<Metainfo, Vec<String>> {
    let mut errors = Vec::new();
    for url in urls {
        match http.get(url, MAX_TORRENT_DOWNLOAD).await {
            Err(e) => errors.push(format!("{url}: {e}")),
            Ok(body) => match Metainfo::from_bytes(&body) {
                Err(e) => errors.push(format!("{url}: not a valid .torrent: {e}")),
                Ok(m) if m.info_hashes.wire() != hashes.wire() => errors.push(format!(
                    "{url}: a torrent for another info hash ({})",
                    m.info_hashes.wire()
                )),
                Ok(m) => return Ok(m),
            },
        }
    }
    Err(errors)
}
