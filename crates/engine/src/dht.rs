//! The DHT driver: one task owns the sans-IO [`Node`] and its UDP socket.
//! It wakes on a datagram, a command, or the node's next deadline, never
//! on a fixed tick, so a lookup leaves the machine the moment it is asked.

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
        errors: Vec<(SocketAddr, i64, String)>,
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
    GetItem(ItemQuery, mpsc::Sender<LookupUpdate>),
    Put(Box<Item>, mpsc::Sender<LookupUpdate>),
    GetPeers(InfoHash, mpsc::Sender<LookupUpdate>),
    Announce(InfoHash, Option<u16>, mpsc::Sender<LookupUpdate>),
    Bootstrap(Vec<SocketAddr>, mpsc::Sender<LookupUpdate>),
    Ping(SocketAddr, oneshot::Sender<Option<(NodeId, Duration)>>),
    Health(oneshot::Sender<Health>),
    Nodes(oneshot::Sender<Vec<(NodeId, SocketAddr)>>),
}

/// A handle to a running DHT node; cheap to clone.
#[derive(Clone)]
pub struct Dht {
    tx: mpsc::Sender<Command>,
    local: SocketAddr,
}

impl std::fmt::Debug for Dht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dht({})", self.local)
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
        let socket = UdpSocket::bind(listen).await?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut node = Node::new(cfg, id, seed, now);
        for (id, addr) in known {
            node.add_node(now, *id, *addr);
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(drive(socket, node, rx));
        Ok(Self { tx, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn lookup(
        &self,
        make: impl FnOnce(mpsc::Sender<LookupUpdate>) -> Command,
    ) -> mpsc::Receiver<LookupUpdate> {
        let (tx, rx) = mpsc::channel(256);
        let _ = self.tx.send(make(tx)).await;
        rx
    }

    pub async fn get_peers(&self, ih: InfoHash) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|tx| Command::GetPeers(ih, tx)).await
    }

    /// `port: None` announces the port we send from (implied_port).
    pub async fn announce(&self, ih: InfoHash, port: Option<u16>) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|tx| Command::Announce(ih, port, tx)).await
    }

    /// BEP 44 get: updates carry each verified item, then `Done`.
    pub async fn get_item(&self, q: ItemQuery) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|tx| Command::GetItem(q, tx)).await
    }

    /// BEP 44 put: updates end with `Stored`, then `Done`.
    pub async fn put(&self, item: Item) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|tx| Command::Put(Box::new(item), tx)).await
    }

    pub async fn bootstrap(&self, routers: Vec<SocketAddr>) -> mpsc::Receiver<LookupUpdate> {
        self.lookup(|tx| Command::Bootstrap(routers, tx)).await
    }

    pub async fn ping(&self, addr: SocketAddr) -> Option<(NodeId, Duration)> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Ping(addr, tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    pub async fn health(&self) -> Health {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Health(tx)).await.is_err() {
            return Health::default();
        }
        rx.await.unwrap_or_default()
    }

    pub async fn nodes(&self) -> Vec<(NodeId, SocketAddr)> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Nodes(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

async fn drive(socket: UdpSocket, mut node: Node, mut rx: mpsc::Receiver<Command>) {
    let mut buf = vec![0u8; 2048];
    let mut lookups: BTreeMap<LookupId, mpsc::Sender<LookupUpdate>> = BTreeMap::new();
    let mut pings: Vec<PingWaiter> = Vec::new();
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
                    Some(Command::Put(item, tx)) => { lookups.insert(node.put(now, *item), tx); }
                    Some(Command::Bootstrap(routers, tx)) => { lookups.insert(node.bootstrap(now, &routers), tx); }
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
            let _ = socket.send_to(&t.payload, t.to).await;
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
        Event::IncomingAnnounce { .. } => {}
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
