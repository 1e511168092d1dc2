//! The DHT driver: one task per address family owns a sans-IO [`Node`]
//! and its UDP socket (BEP 32: IPv4 and IPv6 are two DHTs with two routing
//! tables). A task wakes on a datagram, a command, or the node's next
//! deadline, never on a fixed tick, so a lookup leaves the machine the
//! moment it is asked. [`Dht`] sends each lookup to every family and
//! merges what comes back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use lodestone_dht::items::Item;
use lodestone_dht::{Config, Event, LookupId, Node, NodeId};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// The public routers: used only when the user gives no `--bootstrap`.
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// A node that refused a put: its address, the BEP 44 error code, the message.
pub type Refusal = (SocketAddr, i64, String);

/// What a lookup reports back as it goes.
#[derive(Debug, Clone)]
pub enum LookupUpdate {
    Peers(Vec<SocketAddr>),
    Hop {
        node: NodeId,
        addr: SocketAddr,
        rtt: Duration,
        common_bits: usize,
        nodes: usize,
        values: usize,
    },
    Announced {
        sent: u32,
        acked: u32,
    },
    /// A node's BEP 51 sample of the info hashes it stores.
    Samples {
        from: SocketAddr,
        node: NodeId,
        samples: Vec<InfoHash>,
        num: Option<i64>,
        interval: Option<i64>,
    },
    /// A verified BEP 44 item (each newer version of a mutable one).
    Item {
        item: Item,
        from: SocketAddr,
    },
    /// A BEP 44 put ended: `acked` of `sent` nodes stored the item;
    /// `errors` are the refusals (node, code, message).
    Stored {
        sent: u32,
        acked: u32,
        errors: Vec<Refusal>,
    },
    Done {
        queries: u32,
        responses: u32,
        timeouts: u32,
        duration: Duration,
        closest: Vec<(NodeId, SocketAddr)>,
    },
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Health {
    pub nodes: usize,
    pub items_stored: usize,
    pub good: usize,
    pub questionable: usize,
    pub buckets: usize,
    pub torrents_stored: usize,
    pub received: u64,
    pub sent: u64,
    pub timeouts: u64,
    pub queries_answered: u64,
    pub id: NodeId,
    /// BEP 42: our address as the nodes we ask agree it is.
    pub external_ip: Option<std::net::IpAddr>,
}

/// A ping waiting for its answer: who, since when, and where to report.
type PingWaiter = (
    SocketAddr,
    Instant,
    oneshot::Sender<Option<(NodeId, Duration)>>,
);

/// What a BEP 44 get looks for.
#[derive(Debug, Clone)]
pub enum ItemQuery {
    /// An immutable item, by the SHA-1 of its value.
    Immutable(NodeId),
    /// The mutable item of a public key and salt; with `seq`, only a newer one.
    Mutable {
        key: [u8; 32],
        salt: Vec<u8>,
        seq: Option<i64>,
    },
}

enum Command {
    Sample(NodeId, mpsc::Sender<LookupUpdate>),
    GetItem(ItemQuery, mpsc::Sender<LookupUpdate>),
    Put(Box<Item>, mpsc::Sender<LookupUpdate>),
    GetPeers(InfoHash, mpsc::Sender<LookupUpdate>),
    Announce(InfoHash, Option<u16>, mpsc::Sender<LookupUpdate>),
    Bootstrap(Vec<SocketAddr>, mpsc::Sender<LookupUpdate>),
    Ping(SocketAddr, oneshot::Sender<Option<(NodeId, Duration)>>),
    Health(oneshot::Sender<Health>),
    Nodes(oneshot::Sender<Vec<(NodeId, SocketAddr)>>),
}

/// One node task: its command queue and where its socket is bound.
#[derive(Clone)]
struct Family {
    tx: mpsc::Sender<Command>,
    local: SocketAddr,
    /// Announce our port here? Not when no peer listener takes this
    /// family: the node then only looks up.
    announces: bool,
}

/// A handle to a running DHT (one node per address family); cheap to clone.
#[derive(Clone)]
pub struct Dht {
    families: Vec<Family>,
}

impl std::fmt::Debug for Dht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<SocketAddr> = self.families.iter().map(|f| f.local).collect();
        write!(f, "Dht({addrs:?})")
    }
}

impl Dht {
    /// Bind `listen` and start the node task, seeding its table with
    /// `known` nodes (a saved table, for a warm restart).
    pub async fn start(
        listen: SocketAddr,
        cfg: Config,
        id: NodeId,
        seed: [u8; 32],
        known: &[(NodeId, SocketAddr)],
    ) -> std::io::Result<Self> {
        let family = spawn_node(listen, cfg, id, seed, known, true).await?;
        Ok(Self {
            families: vec![family],
        })
    }

    /// [`Self::start`] on the UDP socket uTP uses: one port for both, as
    /// libtorrent has it.
    pub async fn start_on(
        utp: &crate::utp::UtpSocket,
        cfg: Config,
        id: NodeId,
        seed: [u8; 32],
        known: &[(NodeId, SocketAddr)],
    ) -> std::io::Result<Self> {
        let socket = DhtSocket::Shared {
            socket: utp.udp(),
            inbox: utp.dht_inbox(),
        };
        let family = spawn_on(socket, cfg, id, seed, known, true)?;
        Ok(Self {
            families: vec![family],
        })
    }

    /// Add a node for the other address family (BEP 32), bound to
    /// `listen`, with its own routers in `cfg.bootstrap`. Lookups then go
    /// to both and their results are merged; announces too if `announces`
    /// (otherwise the node runs a get_peers in their place).
    pub async fn add_family(
        &mut self,
        listen: SocketAddr,
        cfg: Config,
        id: NodeId,
        seed: [u8; 32],
        known: &[(NodeId, SocketAddr)],
        announces: bool,
    ) -> std::io::Result<()> {
        if self
            .families
            .iter()
            .any(|f| f.local.is_ipv4() == listen.is_ipv4())
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a DHT node of this address family is running already",
            ));
        }
        let family = spawn_node(listen, cfg, id, seed, known, announces).await?;
        self.families.push(family);
        Ok(())
    }

    /// The first node's address (the one `start` bound).
    pub fn local_addr(&self) -> SocketAddr {
        self.families[0].local
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.families.iter().map(|f| f.local).collect()
    }

    fn family_of(&self, addr: SocketAddr) -> Option<&Family> {
        self.families
            .iter()
            .find(|f| f.local.is_ipv4() == addr.is_ipv4())
    }

    /// Start the same lookup on every family's node; one stream of updates
    /// comes back, with one `Done` (and one `Announced`/`Stored`) summing
    /// them all once every node has finished.
    async fn lookup(
        &self,
        make: impl Fn(&Family, mpsc::Sender<LookupUpdate>) -> Command,
    ) -> mpsc::Receiver<LookupUpdate> {
        if let [only] = self.families.as_slice() {
            let (tx, rx) = mpsc::channel(256);
            let _ = only.tx.send(make(only, tx)).await;
            return rx;
        }
        let (out, rx) = mpsc::channel(256);
        let (merged_tx, mut merged_rx) = mpsc::channel(256);
        let mut running = 0;
        for f in &self.families {
            let (tx, mut family_rx) = mpsc::channel(256);
            if f.tx.send(make(f, tx)).await.is_ok() {
                running += 1;
                let merged_tx = merged_tx.clone();
                tokio::spawn(async move {
                    while let Some(u) = family_rx.recv().await {
                        if merged_tx.send(u).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
        drop(merged_tx);
        tokio::spawn(async move {
            let mut merge = Merge::default();
            while let Some(u) = merged_rx.recv().await {
                let pass = merge.take(u);
                for u in pass {
                    if out.send(u).await.is_err() {
                        return;
                    }
                }
                if merge.done == running {
                    for u in merge.finish() {
                        let _ = out.send(u).await;
                    }
                    return;
                }
            }
        });
        rx
    }

    pub async fn get_peers(&self, ih: InfoHash) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|_, tx| Command::GetPeers(ih, tx)).await
    }

    /// `port: None` announces the port we send from (implied_port).
    pub async fn announce(&self, ih: InfoHash, port: Option<u16>) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|f, tx| {
            if f.announces {
                Command::Announce(ih, port, tx)
            } else {
                Command::GetPeers(ih, tx)
            }
        })
        .await
    }

    /// BEP 51: walk towards `target` collecting samples of info hashes.
    pub async fn sample(&self, target: NodeId) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|_, tx| Command::Sample(target, tx)).await
    }

    /// BEP 44 get: updates carry each verified item, then `Done`.
    pub async fn get_item(&self, q: ItemQuery) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|_, tx| Command::GetItem(q.clone(), tx)).await
    }

    /// BEP 44 put: updates end with `Stored`, then `Done`.
    pub async fn put(&self, item: Item) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|_, tx| Command::Put(Box::new(item.clone()), tx))
            .await
    }

    /// Join through `routers`; each family's node takes the routers of
    /// its own family.
    pub async fn bootstrap(&self, routers: Vec<SocketAddr>) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|_, tx| Command::Bootstrap(routers.clone(), tx))
            .await
    }

    pub async fn ping(&self, addr: SocketAddr) -> Option<(NodeId, Duration)> {
        let (tx, rx) = oneshot::channel();
        let family = self.family_of(addr)?;
        family.tx.send(Command::Ping(addr, tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Health of each family's node, in the order they were started.
    pub async fn health_per_family(&self) -> Vec<(SocketAddr, Health)> {
        let mut out = Vec::new();
        for f in &self.families {
            let (tx, rx) = oneshot::channel();
            if f.tx.send(Command::Health(tx)).await.is_ok() {
                out.push((f.local, rx.await.unwrap_or_default()));
            }
        }
        out
    }

    /// Health summed over the families (the id is the first node's).
    pub async fn health(&self) -> Health {
        let all = self.health_per_family().await;
        let mut h = all.first().map(|(_, h)| *h).unwrap_or_default();
        for (_, o) in all.iter().skip(1) {
            h.nodes += o.nodes;
            h.items_stored += o.items_stored;
            h.good += o.good;
            h.questionable += o.questionable;
            h.buckets += o.buckets;
            h.torrents_stored += o.torrents_stored;
            h.received += o.received;
            h.sent += o.sent;
            h.timeouts += o.timeouts;
            h.queries_answered += o.queries_answered;
        }
        h
    }

    /// Every family's routing-table nodes.
    pub async fn nodes(&self) -> Vec<(NodeId, SocketAddr)> {
        let mut out = Vec::new();
        for f in &self.families {
            let (tx, rx) = oneshot::channel();
            if f.tx.send(Command::Nodes(tx)).await.is_ok() {
                out.extend(rx.await.unwrap_or_default());
            }
        }
        out
    }
}

async fn spawn_node(
    listen: SocketAddr,
    cfg: Config,
    id: NodeId,
    seed: [u8; 32],
    known: &[(NodeId, SocketAddr)],
    announces: bool,
) -> std::io::Result<Family> {
    let socket = DhtSocket::Own(UdpSocket::bind(listen).await?);
    spawn_on(socket, cfg, id, seed, known, announces)
}

/// A DHT node's socket: its own, or the one it shares with uTP (which
/// hands it the datagrams that are not uTP).
enum DhtSocket {
    Own(UdpSocket),
    Shared {
        socket: std::sync::Arc<UdpSocket>,
        inbox: crate::utp::DhtInbox,
    },
}

impl DhtSocket {
    fn udp(&self) -> &UdpSocket {
        match self {
            DhtSocket::Own(s) => s,
            DhtSocket::Shared { socket, .. } => socket,
        }
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match self {
            DhtSocket::Own(s) => s.recv_from(buf).await,
            DhtSocket::Shared { inbox, .. } => match inbox.recv().await {
                Some((bytes, from)) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    Ok((n, from))
                }
                // The uTP socket is gone; so is this node's traffic.
                None => std::future::pending().await,
            },
        }
    }
}

fn spawn_on(
    socket: DhtSocket,
    mut cfg: Config,
    id: NodeId,
    seed: [u8; 32],
    known: &[(NodeId, SocketAddr)],
    announces: bool,
) -> std::io::Result<Family> {
    let local = socket.udp().local_addr()?;
    // A node's socket speaks one family: routers and saved nodes of the
    // other are for the other node.
    cfg.bootstrap.retain(|a| a.is_ipv4() == local.is_ipv4());
    let now = Instant::now();
    let mut node = Node::new(cfg, id, seed, now);
    for (id, addr) in known.iter().filter(|(_, a)| a.is_ipv4() == local.is_ipv4()) {
        node.add_node(now, *id, *addr);
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(drive(socket, node, rx));
    Ok(Family {
        tx,
        local,
        announces,
    })
}

/// Sums the end-of-lookup updates of several families into one of each;
/// everything else passes straight through.
#[derive(Default)]
struct Merge {
    done: usize,
    queries: u32,
    responses: u32,
    timeouts: u32,
    duration: Duration,
    closest: Vec<(NodeId, SocketAddr)>,
    announced: Option<(u32, u32)>,
    stored: Option<(u32, u32, Vec<Refusal>)>,
}

impl Merge {
    fn take(&mut self, u: LookupUpdate) -> Vec<LookupUpdate> {
        match u {
            LookupUpdate::Done {
                queries,
                responses,
                timeouts,
                duration,
                closest,
            } => {
                self.done += 1;
                self.queries += queries;
                self.responses += responses;
                self.timeouts += timeouts;
                self.duration = self.duration.max(duration);
                self.closest.extend(closest);
                Vec::new()
            }
            LookupUpdate::Announced { sent, acked } => {
                let (s, a) = self.announced.get_or_insert((0, 0));
                *s += sent;
                *a += acked;
                Vec::new()
            }
            LookupUpdate::Stored {
                sent,
                acked,
                errors,
            } => {
                let (s, a, e) = self.stored.get_or_insert((0, 0, Vec::new()));
                *s += sent;
                *a += acked;
                e.extend(errors);
                Vec::new()
            }
            other => vec![other],
        }
    }

    fn finish(self) -> Vec<LookupUpdate> {
        let mut out = Vec::new();
        if let Some((sent, acked)) = self.announced {
            out.push(LookupUpdate::Announced { sent, acked });
        }
        if let Some((sent, acked, errors)) = self.stored {
            out.push(LookupUpdate::Stored {
                sent,
                acked,
                errors,
            });
        }
        out.push(LookupUpdate::Done {
            queries: self.queries,
            responses: self.responses,
            timeouts: self.timeouts,
            duration: self.duration,
            closest: self.closest,
        });
        out
    }
}

async fn drive(mut socket: DhtSocket, mut node: Node, mut rx: mpsc::Receiver<Command>) {
    let mut buf = vec![0u8; 2048];
    let mut lookups: BTreeMap<LookupId, mpsc::Sender<LookupUpdate>> = BTreeMap::new();
    let mut pings: Vec<PingWaiter> = Vec::new();
    let v4 = socket.udp().local_addr().map_or(true, |a| a.is_ipv4());
    loop {
        let deadline = node
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    node.handle_datagram(Instant::now(), from, &buf[..n]);
                }
            }
            cmd = rx.recv() => {
                let now = Instant::now();
                match cmd {
                    None => return,
                    Some(Command::GetPeers(ih, tx)) => { lookups.insert(node.get_peers(now, ih), tx); }
                    Some(Command::Announce(ih, port, tx)) => { lookups.insert(node.announce(now, ih, port, false), tx); }
                    Some(Command::GetItem(q, tx)) => {
                        let l = match q {
                            ItemQuery::Immutable(target) => node.get_immutable(now, target),
                            ItemQuery::Mutable { key, salt, seq } => node.get_mutable(now, &key, &salt, seq),
                        };
                        lookups.insert(l, tx);
                    }
                    Some(Command::Sample(target, tx)) => { lookups.insert(node.sample(now, target), tx); }
                    Some(Command::Put(item, tx)) => { lookups.insert(node.put(now, *item), tx); }
                    Some(Command::Bootstrap(mut routers, tx)) => {
                        routers.retain(|a| a.is_ipv4() == v4);
                        lookups.insert(node.bootstrap(now, &routers), tx);
                    }
                    Some(Command::Ping(addr, tx)) => { node.ping(now, addr); pings.push((addr, now, tx)); }
                    Some(Command::Health(tx)) => {
                        use lodestone_dht::routing_table::NodeState;
                        let t = node.table();
                        let c = node.counters();
                        let _ = tx.send(Health {
                            nodes: t.len(),
                            items_stored: node.items().len(),
                            good: t.count(NodeState::Good, now),
                            questionable: t.count(NodeState::Questionable, now),
                            buckets: t.num_buckets(),
                            torrents_stored: node.store().num_torrents(),
                            received: c.received,
                            sent: c.sent,
                            timeouts: c.timeouts,
                            queries_answered: c.queries_answered,
                            id: node.id(),
                            external_ip: node.external_ip(),
                        });
                    }
                    Some(Command::Nodes(tx)) => {
                        let _ = tx.send(node.table().iter().map(|e| (e.id, e.addr)).collect());
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => node.handle_timeout(Instant::now()),
        }
        // Drain: datagrams out, events to whoever asked.
        while let Some(t) = node.poll_transmit() {
            let _ = socket.udp().send_to(&t.payload, t.to).await;
        }
        while let Some(e) = node.poll_event() {
            dispatch(e, &mut lookups, &mut pings);
        }
    }
}

fn dispatch(
    e: Event,
    lookups: &mut BTreeMap<LookupId, mpsc::Sender<LookupUpdate>>,
    pings: &mut Vec<PingWaiter>,
) {
    let send = |l: &LookupId,
                u: LookupUpdate,
                lookups: &BTreeMap<LookupId, mpsc::Sender<LookupUpdate>>| {
        if let Some(tx) = lookups.get(l) {
            // A reader that fell behind loses trace detail, never the node.
            let _ = tx.try_send(u);
        }
    };
    match e {
        Event::Peers { lookup, peers, .. } => send(&lookup, LookupUpdate::Peers(peers), lookups),
        Event::Hop {
            lookup,
            node,
            addr,
            rtt,
            common_bits,
            nodes,
            values,
        } => send(
            &lookup,
            LookupUpdate::Hop {
                node,
                addr,
                rtt,
                common_bits,
                nodes,
                values,
            },
            lookups,
        ),
        Event::Announced {
            lookup,
            sent,
            acked,
            ..
        } => send(&lookup, LookupUpdate::Announced { sent, acked }, lookups),
        Event::Samples {
            lookup,
            from,
            node,
            samples,
            num,
            interval,
        } => send(
            &lookup,
            LookupUpdate::Samples {
                from,
                node,
                samples,
                num,
                interval,
            },
            lookups,
        ),
        Event::Item { lookup, item, from } => {
            send(&lookup, LookupUpdate::Item { item, from }, lookups)
        }
        Event::ItemStored {
            lookup,
            sent,
            acked,
            errors,
            ..
        } => send(
            &lookup,
            LookupUpdate::Stored {
                sent,
                acked,
                errors,
            },
            lookups,
        ),
        Event::LookupDone {
            lookup,
            stats,
            closest,
            duration,
            ..
        } => {
            send(
                &lookup,
                LookupUpdate::Done {
                    queries: stats.queries,
                    responses: stats.responses,
                    timeouts: stats.timeouts,
                    duration,
                    closest,
                },
                lookups,
            );
            lookups.remove(&lookup);
        }
        Event::Pong { addr, id, rtt } => {
            if let Some(i) = pings.iter().position(|(a, _, _)| *a == addr) {
                let (_, _, tx) = pings.remove(i);
                let _ = tx.send(Some((id, rtt)));
            }
        }
        Event::PingFailed { addr } => {
            if let Some(i) = pings.iter().position(|(a, _, _)| *a == addr) {
                let (_, _, tx) = pings.remove(i);
                let _ = tx.send(None);
            }
        }
        // Read through `health` (the node keeps them).
        Event::IncomingAnnounce { .. } | Event::ExternalIp { .. } => {}
    }
}

/// Save the routing table's nodes (one `id addr` per line), atomically.
pub fn save_nodes(path: &Path, nodes: &[(NodeId, SocketAddr)]) -> std::io::Result<()> {
    let text: String = nodes.iter().map(|(id, a)| format!("{id} {a}\n")).collect();
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// Load saved nodes; malformed lines are skipped, at most 1000 are read.
pub fn load_nodes(path: &Path) -> Vec<(NodeId, SocketAddr)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (id, addr) = l.split_once(' ')?;
            Some((id.parse().ok()?, addr.trim().parse().ok()?))
        })
        .take(1000)
        .collect()
}
