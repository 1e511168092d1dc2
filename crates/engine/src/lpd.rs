//! Local Peer Discovery (BEP 14): one [`Service`] per session announces
//! every registered torrent to the LAN's multicast groups (IPv4
//! 239.192.152.143 and IPv6 ff15::efc0:988f) on every interface that is up,
//! every 5 minutes, and turns others' announces into peers for the
//! torrents they name.
//!
//! One socket per address family receives from all interfaces (it joins
//! the group on each); an announce goes out once per interface, the
//! socket's outgoing interface switched before each send. Up to
//! [`MAX_HASHES`] info hashes share one announce (BEP 14 allows several
//! `Infohash` headers), so a session of 1,000 torrents sends 63 announces
//! per interface every 5 minutes, not 1,000.
//!
//! The service's task owns all its state; torrents reach it through a
//! command channel and it reaches them only with `try_send`, so a torrent
//! that does not read its input never stalls the others.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lodestone_core::InfoHash;
use lodestone_wire::lpd::{Announce, GROUP_V4, GROUP_V6, MAX_HASHES, MAX_LEN};
use socket2::SockRef;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::peer_io::{PeerInput, PeerSource};

const GROUP4: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f);
const PORT: u16 = 6771;
/// BEP 14: every 5 minutes, for each torrent.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(300);
/// BEP 14: never more than once a minute (for one info hash, even one
/// unregistered and registered again).
pub const MIN_GAP: Duration = Duration::from_secs(60);
/// A torrent registered waits this long for others to share its announce.
pub const BATCH: Duration = Duration::from_secs(1);
/// Announces accepted from one IP for one torrent in this window (floods,
/// and the same announce heard on two interfaces, are dropped).
const PER_SENDER_WINDOW: Duration = Duration::from_secs(10);
/// (sender, torrent) pairs remembered for [`PER_SENDER_WINDOW`].
const MAX_HEARD: usize = 4096;
/// Org-local scope: a little past the first router, as BEP 14 suggests.
const HOPS: u32 = 2;

/// The interfaces to announce on: up and not loopback, by address (IPv4)
/// and by index (IPv6, which multicasts by interface index).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Links {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<u32>,
}

impl Links {
    pub fn of_this_host() -> Self {
        let mut links = Links::default();
        let Ok(ifaces) = if_addrs::get_if_addrs() else {
            return links;
        };
        for i in ifaces {
            if i.is_loopback() || !i.is_oper_up() {
                continue;
            }
            match i.ip() {
                IpAddr::V4(a) if !links.v4.contains(&a) => links.v4.push(a),
                IpAddr::V6(_) => {
                    if let Some(idx) = i.index.filter(|x| !links.v6.contains(x)) {
                        links.v6.push(idx);
                    }
                }
                IpAddr::V4(_) => {}
            }
        }
        links
    }
}

fn reusable(domain: socket2::Domain) -> std::io::Result<socket2::Socket> {
    use socket2::{Protocol, Socket, Type};
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // Shared with other clients on the host, as every BEP 14 client does.
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    Ok(s)
}

/// Join the group on every link that lets us; an error only when none
/// did (the last one's, or `none` when there was no link at all).
fn join_any<T>(
    links: &[T],
    mut join: impl FnMut(&T) -> std::io::Result<()>,
    none: &str,
) -> std::io::Result<()> {
    let mut last = None;
    let mut joined = false;
    for l in links {
        match join(l) {
            Ok(()) => joined = true,
            Err(e) => last = Some(e),
        }
    }
    match (joined, last) {
        (true, _) => Ok(()),
        (false, Some(e)) => Err(e),
        (false, None) => Err(std::io::Error::other(none.to_owned())),
    }
}

/// The IPv4 socket, in the group on every link (or on the default one when
/// none is known). Errors are sentences for the status line.
fn socket_v4(links: &[Ipv4Addr]) -> Result<UdpSocket, String> {
    let err = |e: std::io::Error| format!("cannot join {GROUP_V4}: {e}");
    let s = reusable(socket2::Domain::IPV4).map_err(err)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).into())
        .map_err(err)?;
    let fallback = [Ipv4Addr::UNSPECIFIED];
    let links = if links.is_empty() {
        &fallback[..]
    } else {
        links
    };
    join_any(links, |a| s.join_multicast_v4(&GROUP4, a), "no interface").map_err(err)?;
    s.set_multicast_ttl_v4(HOPS).map_err(err)?;
    s.set_multicast_loop_v4(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

/// The IPv6 socket, in the group on every link that has IPv6.
fn socket_v6(links: &[u32]) -> Result<UdpSocket, String> {
    let err = |e: std::io::Error| format!("cannot join {GROUP_V6}: {e}");
    let s = reusable(socket2::Domain::IPV6).map_err(err)?;
    s.set_only_v6(true).map_err(err)?;
    s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, PORT, 0, 0)).into())
        .map_err(err)?;
    join_any(
        links,
        |i| s.join_multicast_v6(&GROUP6, *i),
        "no IPv6 interface",
    )
    .map_err(err)?;
    s.set_multicast_hops_v6(HOPS).map_err(err)?;
    s.set_multicast_loop_v6(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

/// One family's socket and where it announces.
struct Family {
    sock: UdpSocket,
    /// The `Host` header: [`GROUP_V4`] or [`GROUP_V6`].
    host: &'static str,
    group: SocketAddr,
    /// Send once per entry: set the outgoing interface, then send.
    links: Vec<Link>,
}

#[derive(Clone, Copy)]
enum Link {
    V4(Ipv4Addr),
    V6(u32),
}

impl Family {
    /// Send `datagram` on every link; how many sends succeeded, and the
    /// last error.
    async fn send(&self, datagram: &[u8]) -> (u32, Option<String>) {
        let (mut ok, mut error) = (0, None);
        for link in &self.links {
            let sock = SockRef::from(&self.sock);
            let set = match link {
                Link::V4(a) => sock.set_multicast_if_v4(a),
                Link::V6(i) => sock.set_multicast_if_v6(*i),
            };
            let sent = match set {
                Ok(()) => self.sock.send_to(datagram, self.group).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => ok += 1,
                Err(e) => error = Some(format!("cannot send to {}: {e}", self.group)),
            }
        }
        (ok, error)
    }

    async fn recv(f: &Option<Family>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match f {
            Some(f) => f.sock.recv_from(buf).await,
            None => std::future::pending().await,
        }
    }
}

/// The service's sockets, and why the missing ones are missing.
struct Net {
    v4: Option<Family>,
    v6: Option<Family>,
    problems: Vec<String>,
}

impl Net {
    /// Join the groups on `links` (IPv6 only when some link has it).
    fn open(links: &Links) -> Self {
        let mut problems = Vec::new();
        let v4 = match socket_v4(&links.v4) {
            Ok(sock) => Some(Family {
                sock,
                host: GROUP_V4,
                group: SocketAddr::V4(SocketAddrV4::new(GROUP4, PORT)),
                links: if links.v4.is_empty() {
                    vec![Link::V4(Ipv4Addr::UNSPECIFIED)]
                } else {
                    links.v4.iter().map(|a| Link::V4(*a)).collect()
                },
            }),
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let v6 = if links.v6.is_empty() {
            None
        } else {
            match socket_v6(&links.v6) {
                Ok(sock) => Some(Family {
                    sock,
                    host: GROUP_V6,
                    group: SocketAddr::V6(SocketAddrV6::new(GROUP6, PORT, 0, 0)),
                    links: links.v6.iter().map(|i| Link::V6(*i)).collect(),
                }),
                Err(e) => {
                    problems.push(e);
                    None
                }
            }
        };
        Net { v4, v6, problems }
    }

    fn families(&self) -> impl Iterator<Item = &Family> {
        [&self.v4, &self.v6].into_iter().flatten()
    }

    /// "IPv4", "IPv6" or "IPv4 and IPv6", for the status line.
    fn names(&self) -> String {
        let names: Vec<&str> = [
            self.v4.as_ref().map(|_| "IPv4"),
            self.v6.as_ref().map(|_| "IPv6"),
        ]
        .into_iter()
        .flatten()
        .collect();
        names.join(" and ")
    }
}

/// The service's clock: [`Timing::BEP14`], shorter in tests.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Each torrent is announced this often ([`ANNOUNCE_EVERY`]).
    every: Duration,
    /// ... and never more often than this ([`MIN_GAP`]).
    min_gap: Duration,
    /// A round announces the torrents due within this much, so that
    /// torrents registered together share announces ([`BATCH`]).
    batch: Duration,
    /// Spare room in a round's last announce is filled with torrents due
    /// within this much (brought forward, their rounds fall together).
    fill: Duration,
    /// [`PER_SENDER_WINDOW`].
    flood: Duration,
    /// A status a full channel refused is offered again this much later.
    retry: Duration,
}

impl Timing {
    const BEP14: Timing = Timing {
        every: ANNOUNCE_EVERY,
        min_gap: MIN_GAP,
        batch: BATCH,
        fill: MIN_GAP,
        flood: PER_SENDER_WINDOW,
        retry: Duration::from_secs(1),
    };
}

enum Cmd {
    Register {
        id: u64,
        info_hash: InfoHash,
        input: mpsc::Sender<PeerInput>,
    },
    Unregister(u64),
}

/// The session's LPD: one task, its sockets, every registered torrent.
/// A cheap handle: clones share the task, which ends when the last handle
/// is dropped or on [`Service::shutdown`].
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    cmds: mpsc::UnboundedSender<Cmd>,
    /// Dropped with the last handle, or set by `shutdown`: the task ends.
    stop: watch::Sender<bool>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("lpd::Service").finish_non_exhaustive()
    }
}

/// A torrent's place in the [`Service`]: announced and told of the peers
/// heard for it while this lives; dropping it unregisters the torrent.
#[must_use = "dropping the Registration unregisters the torrent"]
#[derive(Debug)]
pub struct Registration {
    id: u64,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The task may have ended already: nothing left to undo then.
        let _ = self.cmds.send(Cmd::Unregister(self.id));
    }
}

impl Service {
    /// Join the groups on `links` and start the task on the current tokio
    /// runtime (panics outside one). `port` is our listen port, `cookie`
    /// marks our announces (see [`crate::lpd_cookie`]). Sockets that
    /// cannot be opened make each torrent's status "not working: ...".
    pub fn start(links: Links, port: u16, cookie: String) -> Service {
        Self::start_with(Net::open(&links), port, cookie, Timing::BEP14)
    }

    fn start_with(net: Net, port: u16, cookie: String, timing: Timing) -> Service {
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let task = Task {
            per: per_datagram(port, &cookie),
            names: net.names(),
            net,
            port,
            cookie,
            timing,
            torrents: HashMap::new(),
            ids: HashMap::new(),
            sent_at: HashMap::new(),
            heard: HashMap::new(),
            retry_at: None,
        };
        tokio::spawn(task.run(cmd_rx, stop_rx));
        Service {
            inner: Arc::new(Inner {
                cmds,
                stop,
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Announce `info_hash` (first within [`BATCH`], then every
    /// [`ANNOUNCE_EVERY`]) and send the peers heard for it to `input` as
    /// `Discovered { source: Lpd }`, with `SourceStatus { source: Lpd }`
    /// lines for the sources table. Both with `try_send`: a full `input`
    /// misses peers (heard again at the sender's next announce) and gets
    /// its latest status later. Until the returned [`Registration`] drops.
    pub fn register(&self, info_hash: InfoHash, input: mpsc::Sender<PeerInput>) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.inner.cmds.send(Cmd::Register {
            id,
            info_hash,
            input,
        });
        Registration {
            id,
            cmds: self.inner.cmds.clone(),
        }
    }

    /// End the task now (for every handle); registering afterwards does
    /// nothing.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }
}

/// How many info hashes fit one announce: [`MAX_HASHES`] (what receivers
/// read), fewer if a long cookie would make it longer than [`MAX_LEN`].
fn per_datagram(port: u16, cookie: &str) -> usize {
    (1..=MAX_HASHES)
        .rev()
        .find(|&n| {
            let a = Announce {
                port,
                info_hashes: vec![InfoHash([0; 20]); n],
                cookie: Some(cookie.to_owned()),
            };
            a.encode(GROUP_V6).len() <= MAX_LEN
        })
        .unwrap_or(1)
}

/// One info hash's registrations (usually one) and when it is due.
struct Torrent {
    next: Instant,
    regs: Vec<Reg>,
}

struct Reg {
    id: u64,
    input: mpsc::Sender<PeerInput>,
    /// Sends of announces that named it (one per link).
    sent: u32,
    /// Peers heard for it.
    found: u32,
    /// The last round's error, shown while nothing was sent.
    error: Option<String>,
    /// Its latest status was refused by a full channel.
    behind: bool,
}

enum Offer {
    Taken,
    Full,
    Closed,
}

fn offer(input: &mpsc::Sender<PeerInput>, msg: PeerInput) -> Offer {
    match input.try_send(msg) {
        Ok(()) => Offer::Taken,
        Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
        Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
    }
}

enum Event {
    Cmd(Cmd),
    Heard4(usize, SocketAddr),
    Heard6(usize, SocketAddr),
    Timer,
}

struct Task {
    net: Net,
    /// [`Net::names`].
    names: String,
    port: u16,
    cookie: String,
    timing: Timing,
    /// Info hashes per announce.
    per: usize,
    torrents: HashMap<InfoHash, Torrent>,
    /// Registration id to its info hash.
    ids: HashMap<u64, InfoHash>,
    /// When each info hash was last announced, for [`MIN_GAP`]: kept that
    /// long, even for a torrent that unregistered.
    sent_at: HashMap<InfoHash, Instant>,
    /// (sender, torrent) to when an announce was accepted, for the flood
    /// window; at most [`MAX_HEARD`] entries.
    heard: HashMap<(IpAddr, InfoHash), Instant>,
    /// When to offer statuses that full channels refused again.
    retry_at: Option<Instant>,
}

impl Task {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut buf4 = vec![0u8; MAX_LEN + 1];
        let mut buf6 = vec![0u8; MAX_LEN + 1];
        loop {
            let wake = self.wake();
            let event = tokio::select! {
                _ = stop.changed() => return,
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => Event::Cmd(cmd),
                    None => return,
                },
                r = Family::recv(&self.net.v4, &mut buf4), if self.net.v4.is_some() => match r {
                    Ok((n, from)) => Event::Heard4(n, from),
                    Err(_) => continue,
                },
                r = Family::recv(&self.net.v6, &mut buf6), if self.net.v6.is_some() => match r {
                    Ok((n, from)) => Event::Heard6(n, from),
                    Err(_) => continue,
                },
                _ = sleep_until(wake) => Event::Timer,
            };
            let now = Instant::now();
            match event {
                Event::Cmd(cmd) => {
                    self.command(cmd, now);
                    // A burst of registrations is taken in one go.
                    while let Ok(cmd) = cmds.try_recv() {
                        self.command(cmd, now);
                    }
                }
                Event::Heard4(n, from) => self.heard(&buf4[..n], from, now),
                Event::Heard6(n, from) => self.heard(&buf6[..n], from, now),
                Event::Timer => {
                    if self.retry_at.is_some_and(|t| t <= now) {
                        self.retry(now);
                    }
                    self.announce(now).await;
                }
            }
        }
    }

    /// When the next round is due, or a status to retry.
    fn wake(&self) -> Option<Instant> {
        let due = self.torrents.iter().map(|(ih, t)| self.due_at(ih, t)).min();
        due.into_iter().chain(self.retry_at).min()
    }

    /// When `t` may be announced: when it is due, and [`MIN_GAP`] after
    /// its last announce.
    fn due_at(&self, ih: &InfoHash, t: &Torrent) -> Instant {
        match self.sent_at.get(ih) {
            Some(&last) => t.next.max(last + self.timing.min_gap),
            None => t.next,
        }
    }

    fn command(&mut self, cmd: Cmd, now: Instant) {
        match cmd {
            Cmd::Register {
                id,
                info_hash,
                input,
            } => {
                let mut reg = Reg {
                    id,
                    input,
                    sent: 0,
                    found: 0,
                    error: None,
                    behind: false,
                };
                if self.net.v4.is_none() && self.net.v6.is_none() {
                    // Nothing will ever be sent: say why now.
                    let status = self.status(&reg, None);
                    self.deliver_status(&mut reg, status, now);
                }
                let batch = self.timing.batch;
                let t = self.torrents.entry(info_hash).or_insert_with(|| Torrent {
                    next: now + batch,
                    regs: Vec::new(),
                });
                t.regs.push(reg);
                self.ids.insert(id, info_hash);
            }
            Cmd::Unregister(id) => self.remove(id),
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(ih) = self.ids.remove(&id) else {
            return;
        };
        if let Some(t) = self.torrents.get_mut(&ih) {
            t.regs.retain(|r| r.id != id);
            if t.regs.is_empty() {
                self.torrents.remove(&ih);
            }
        }
    }

    fn status(&self, reg: &Reg, next_in: Option<Duration>) -> PeerInput {
        let status = if self.net.v4.is_none() && self.net.v6.is_none() {
            format!("not working: {}", self.net.problems.join("; "))
        } else {
            match &reg.error {
                Some(e) if reg.sent == 0 => format!("not working: {e}"),
                _ => format!(
                    "working: {} announces sent over {}, {} peers heard",
                    reg.sent, self.names, reg.found
                ),
            }
        };
        PeerInput::SourceStatus {
            source: PeerSource::Lpd,
            status,
            next_in,
        }
    }

    /// Offer `reg` its status; remembered for a retry if its channel is
    /// full. False when the torrent is gone (its channel closed).
    fn deliver_status(&mut self, reg: &mut Reg, status: PeerInput, now: Instant) -> bool {
        match offer(&reg.input, status) {
            Offer::Taken => reg.behind = false,
            Offer::Full => {
                reg.behind = true;
                self.retry_at.get_or_insert(now + self.timing.retry);
            }
            Offer::Closed => return false,
        }
        true
    }

    /// The torrent's time to its next announce, for `next_in`.
    fn next_in(&self, ih: &InfoHash, now: Instant) -> Option<Duration> {
        if self.net.v4.is_none() && self.net.v6.is_none() {
            return None;
        }
        let t = self.torrents.get(ih)?;
        Some(self.due_at(ih, t).saturating_duration_since(now))
    }

    /// Offer the statuses that full channels refused again.
    fn retry(&mut self, now: Instant) {
        self.retry_at = None;
        let mut gone = Vec::new();
        let hashes: Vec<InfoHash> = self
            .torrents
            .iter()
            .filter(|(_, t)| t.regs.iter().any(|r| r.behind))
            .map(|(ih, _)| *ih)
            .collect();
        for ih in hashes {
            let next_in = self.next_in(&ih, now);
            let Some(mut t) = self.torrents.remove(&ih) else {
                continue;
            };
            for reg in t.regs.iter_mut().filter(|r| r.behind) {
                let status = self.status(reg, next_in);
                if !self.deliver_status(reg, status, now) {
                    gone.push(reg.id);
                }
            }
            self.torrents.insert(ih, t);
        }
        for id in gone {
            self.remove(id);
        }
    }

    /// A round: announce the torrents due (and those due within
    /// `batch`) in as few announces as fit them, the last one's spare room
    /// filled with torrents due within `fill`; each info hash at most once
    /// per `min_gap`.
    async fn announce(&mut self, now: Instant) {
        let horizon = now + self.timing.fill;
        let mut soon: Vec<(Instant, InfoHash)> = self
            .torrents
            .iter()
            .map(|(ih, t)| (self.due_at(ih, t), *ih))
            .filter(|(due, ih)| {
                *due <= horizon
                    && self.sent_at.get(ih).is_none_or(|&last| {
                        now.saturating_duration_since(last) >= self.timing.min_gap
                    })
            })
            .collect();
        soon.sort_unstable();
        let must = soon.partition_point(|(due, _)| *due <= now + self.timing.batch);
        if must == 0 || (self.net.v4.is_none() && self.net.v6.is_none()) {
            return;
        }
        soon.truncate(must.div_ceil(self.per) * self.per);
        let hashes: Vec<InfoHash> = soon.into_iter().map(|(_, ih)| ih).collect();
        let mut results = Vec::new();
        for chunk in hashes.chunks(self.per) {
            let (mut ok, mut error) = (0, None);
            for f in self.net.families() {
                let datagram = Announce {
                    port: self.port,
                    info_hashes: chunk.to_vec(),
                    cookie: Some(self.cookie.clone()),
                }
                .encode(f.host);
                let (n, e) = f.send(&datagram).await;
                ok += n;
                error = error.or(e);
            }
            results.push((ok, error));
        }
        let min_gap = self.timing.min_gap;
        self.sent_at
            .retain(|_, last| now.saturating_duration_since(*last) < min_gap);
        let next_in = Some(self.timing.every);
        let mut gone = Vec::new();
        for (chunk, (ok, error)) in hashes.chunks(self.per).zip(results) {
            for ih in chunk {
                self.sent_at.insert(*ih, now);
                let Some(mut t) = self.torrents.remove(ih) else {
                    continue;
                };
                t.next = now + self.timing.every;
                for reg in &mut t.regs {
                    reg.sent += ok;
                    reg.error = error.clone();
                    let status = self.status(reg, next_in);
                    if !self.deliver_status(reg, status, now) {
                        gone.push(reg.id);
                    }
                }
                self.torrents.insert(*ih, t);
            }
        }
        for id in gone {
            self.remove(id);
        }
    }

    /// An announce heard from `from`: its peer to every torrent it names
    /// that is registered here (not our own announces; once per sender
    /// and torrent per flood window).
    fn heard(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        let Ok(a) = Announce::decode(bytes) else {
            return;
        };
        if a.cookie.as_deref() == Some(self.cookie.as_str()) {
            return; // our own, looped back
        }
        // The sender's address with its port; a link-local IPv6 sender
        // keeps its scope (the interface it was heard on).
        let mut peer = from;
        peer.set_port(a.port);
        let mut gone = Vec::new();
        for ih in a.info_hashes {
            if !self.torrents.contains_key(&ih) {
                continue; // another torrent
            }
            let key = (from.ip(), ih);
            let flood = self.timing.flood;
            if self
                .heard
                .get(&key)
                .is_some_and(|t| now.saturating_duration_since(*t) < flood)
            {
                continue;
            }
            if self.heard.len() >= MAX_HEARD {
                self.heard
                    .retain(|_, t| now.saturating_duration_since(*t) < flood);
                if self.heard.len() >= MAX_HEARD {
                    self.heard.clear();
                }
            }
            self.heard.insert(key, now);
            let next_in = self.next_in(&ih, now);
            let Some(mut t) = self.torrents.remove(&ih) else {
                continue;
            };
            for reg in &mut t.regs {
                reg.found += 1;
                let msg = PeerInput::Discovered {
                    addrs: vec![peer],
                    source: PeerSource::Lpd,
                };
                // A full channel misses this peer: it announces again.
                if let Offer::Closed = offer(&reg.input, msg) {
                    gone.push(reg.id);
                    continue;
                }
                let status = self.status(reg, next_in);
                if !self.deliver_status(reg, status, now) {
                    gone.push(reg.id);
                }
            }
            self.torrents.insert(ih, t);
        }
        for id in gone {
            self.remove(id);
        }
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Run LPD for one torrent until the task is aborted or `input`'s receiver
/// is dropped: a [`Service`] of its own with this one registration. Status
/// lines go to the torrent (for the sources table) as `SourceStatus`.
pub async fn run(info_hash: InfoHash, port: u16, cookie: String, input: mpsc::Sender<PeerInput>) {
    run_on(Links::of_this_host(), info_hash, port, cookie, input).await
}

/// [`run`] on the given interfaces.
pub async fn run_on(
    links: Links,
    info_hash: InfoHash,
    port: u16,
    cookie: String,
    input: mpsc::Sender<PeerInput>,
) {
    let service = Service::start(links, port, cookie);
    let _registration = service.register(info_hash, input.clone());
    input.closed().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Timing::BEP14`] scaled down: rounds every 800 ms.
    const FAST: Timing = Timing {
        every: Duration::from_millis(800),
        min_gap: Duration::from_millis(300),
        batch: Duration::from_millis(50),
        fill: Duration::from_millis(200),
        flood: Duration::from_secs(10),
        retry: Duration::from_millis(20),
    };
    const COOKIE: &str = "0123456789abcdef";
    const PORT: u16 = 6881;

    fn hash(i: u32) -> InfoHash {
        let mut h = [0x11; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        InfoHash(h)
    }

    async fn local_socket(ip: &str) -> UdpSocket {
        UdpSocket::bind((ip, 0)).await.unwrap()
    }

    /// A service whose "group" is `group` (a local socket, instead of the
    /// multicast group) and that listens on 127.0.0.1; and its address.
    async fn local_service(group: Option<SocketAddr>) -> (Service, SocketAddr) {
        let sock = local_socket("127.0.0.1").await;
        let me = sock.local_addr().unwrap();
        let net = Net {
            v4: Some(Family {
                sock,
                host: GROUP_V4,
                group: group.unwrap_or(me),
                links: vec![Link::V4(Ipv4Addr::LOCALHOST)],
            }),
            v6: None,
            problems: Vec::new(),
        };
        let service = Service::start_with(net, PORT, COOKIE.into(), FAST);
        (service, me)
    }

    /// One round of announces at `capture`: the first within `within`
    /// (none if none came), then those that follow it closely; each with
    /// when it came.
    async fn round(capture: &UdpSocket, within: Duration) -> Vec<(Instant, Announce)> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; MAX_LEN + 1];
        let mut wait = within;
        while let Ok(r) = tokio::time::timeout(wait, capture.recv_from(&mut buf)).await {
            let (n, _) = r.unwrap();
            got.push((Instant::now(), Announce::decode(&buf[..n]).unwrap()));
            wait = Duration::from_millis(150);
        }
        got
    }

    /// The next `Discovered` on `rx` within `within` (statuses skipped).
    async fn discovered(
        rx: &mut mpsc::Receiver<PeerInput>,
        within: Duration,
    ) -> Option<Vec<SocketAddr>> {
        tokio::time::timeout(within, async {
            loop {
                match rx.recv().await {
                    Some(PeerInput::Discovered { addrs, source }) => {
                        assert_eq!(source, PeerSource::Lpd);
                        return Some(addrs);
                    }
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The next `SourceStatus` on `rx` within `within`.
    async fn status(
        rx: &mut mpsc::Receiver<PeerInput>,
        within: Duration,
    ) -> Option<(String, Option<Duration>)> {
        tokio::time::timeout(within, async {
            loop {
                match rx.recv().await {
                    Some(PeerInput::SourceStatus {
                        source,
                        status,
                        next_in,
                    }) => {
                        assert_eq!(source, PeerSource::Lpd);
                        return Some((status, next_in));
                    }
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    async fn send_announce(
        from: &UdpSocket,
        to: SocketAddr,
        port: u16,
        hashes: &[InfoHash],
        cookie: &str,
    ) {
        let a = Announce {
            port,
            info_hashes: hashes.to_vec(),
            cookie: Some(cookie.into()),
        };
        from.send_to(&a.encode(GROUP_V4), to).await.unwrap();
    }

    #[tokio::test]
    async fn two_torrents_share_one_announce_soon_after_registering() {
        let capture = local_socket("127.0.0.1").await;
        let (service, _) = local_service(Some(capture.local_addr().unwrap())).await;
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, _rx_b) = mpsc::channel(8);
        let t0 = Instant::now();
        let _a = service.register(hash(1), tx_a);
        let _b = service.register(hash(2), tx_b);
        let got = round(&capture, Duration::from_millis(500)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let (at, a) = &got[0];
        assert!(
            *at - t0 < FAST.batch + Duration::from_millis(200),
            "{:?}",
            *at - t0
        );
        let mut hashes = a.info_hashes.clone();
        hashes.sort();
        assert_eq!(hashes, vec![hash(1), hash(2)]);
        assert_eq!(a.port, PORT);
        assert_eq!(a.cookie.as_deref(), Some(COOKIE));
        // Nothing more until the next round.
        assert!(round(&capture, Duration::from_millis(300)).await.is_empty());
        // Each torrent hears how it went, for the sources table.
        let (text, next_in) = status(&mut rx_a, Duration::from_secs(1)).await.unwrap();
        assert_eq!(text, "working: 1 announces sent over IPv4, 0 peers heard");
        assert_eq!(next_in, Some(FAST.every));
    }

    #[tokio::test]
    async fn an_announce_reaches_only_the_torrents_it_names() {
        let capture = local_socket("127.0.0.1").await;
        let (service, me) = local_service(Some(capture.local_addr().unwrap())).await;
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let _a = service.register(hash(1), tx_a);
        let _b = service.register(hash(2), tx_b);
        let other = local_socket("127.0.0.1").await;
        // Give the registrations time to land before announcing.
        tokio::time::sleep(Duration::from_millis(20)).await;
        send_announce(&other, me, 7000, &[hash(1), hash(9)], "other").await;
        let want: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(
            discovered(&mut rx_a, Duration::from_secs(1)).await,
            Some(vec![want])
        );
        assert_eq!(
            discovered(&mut rx_b, Duration::from_millis(300)).await,
            None
        );
        // Its status counts the peer.
        let (text, next_in) = status(&mut rx_a, Duration::from_secs(1)).await.unwrap();
        assert!(text.ends_with(", 1 peers heard"), "{text}");
        assert!(next_in.is_some());
    }

    #[tokio::test]
    async fn flood_window_is_per_sender_and_torrent() {
        let capture = local_socket("127.0.0.1").await;
        let (service, me) = local_service(Some(capture.local_addr().unwrap())).await;
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let _a = service.register(hash(1), tx_a);
        let _b = service.register(hash(2), tx_b);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let other = local_socket("127.0.0.1").await;
        send_announce(&other, me, 7000, &[hash(1)], "other").await;
        assert!(discovered(&mut rx_a, Duration::from_secs(1))
            .await
            .is_some());
        // The same sender again for A: dropped. For B (a client with many
        // torrents sends several announces in a row): taken.
        send_announce(&other, me, 7000, &[hash(1)], "other").await;
        send_announce(&other, me, 7000, &[hash(2)], "other").await;
        assert!(discovered(&mut rx_b, Duration::from_secs(1))
            .await
            .is_some());
        assert_eq!(
            discovered(&mut rx_a, Duration::from_millis(300)).await,
            None
        );
        // Another sender for A: taken.
        let third = local_socket("127.0.0.2").await;
        send_announce(&third, me, 7001, &[hash(1)], "third").await;
        let want: SocketAddr = "127.0.0.2:7001".parse().unwrap();
        assert_eq!(
            discovered(&mut rx_a, Duration::from_secs(1)).await,
            Some(vec![want])
        );
    }

    #[tokio::test]
    async fn our_own_announces_are_ignored() {
        // The "group" is the service's own socket: its announces come
        // back to it, as multicast loopback brings them back.
        let (service, me) = local_service(None).await;
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let _a = service.register(hash(1), tx_a);
        let (text, _) = status(&mut rx_a, Duration::from_secs(1)).await.unwrap();
        assert!(text.starts_with("working: 1 announces sent"), "{text}");
        let other = local_socket("127.0.0.2").await;
        send_announce(&other, me, 7000, &[hash(1)], COOKIE).await;
        assert_eq!(
            discovered(&mut rx_a, Duration::from_millis(300)).await,
            None
        );
        // Another cookie from the same sender is a peer.
        send_announce(&other, me, 7000, &[hash(1)], "other").await;
        assert!(discovered(&mut rx_a, Duration::from_secs(1))
            .await
            .is_some());
    }

    #[tokio::test]
    async fn a_dropped_registration_is_no_longer_announced() {
        let capture = local_socket("127.0.0.1").await;
        let (service, _) = local_service(Some(capture.local_addr().unwrap())).await;
        let (tx_a, _rx_a) = mpsc::channel(8);
        let (tx_b, _rx_b) = mpsc::channel(8);
        let a = service.register(hash(1), tx_a);
        let _b = service.register(hash(2), tx_b);
        let first = round(&capture, Duration::from_millis(500)).await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1.info_hashes.len(), 2);
        drop(a);
        // The next round (one `every` after the first) names B only.
        let second = round(&capture, FAST.every + Duration::from_millis(200)).await;
        assert_eq!(second.len(), 1, "{second:?}");
        assert_eq!(second[0].1.info_hashes, vec![hash(2)]);
        let gap = second[0].0 - first[0].0;
        assert!(gap >= FAST.every - Duration::from_millis(20), "{gap:?}");
    }

    #[tokio::test]
    async fn registering_again_waits_for_the_minimum_gap() {
        let capture = local_socket("127.0.0.1").await;
        let (service, _) = local_service(Some(capture.local_addr().unwrap())).await;
        let (tx, _rx) = mpsc::channel(8);
        let a = service.register(hash(1), tx.clone());
        let first = round(&capture, Duration::from_millis(500)).await;
        assert_eq!(first.len(), 1);
        drop(a);
        let _a = service.register(hash(1), tx);
        let second = round(&capture, FAST.min_gap + Duration::from_millis(200)).await;
        assert_eq!(second.len(), 1, "{second:?}");
        let gap = second[0].0 - first[0].0;
        assert!(gap >= FAST.min_gap, "{gap:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_torrents_share_few_announces() {
        let capture = local_socket("127.0.0.1").await;
        let (service, _) = local_service(Some(capture.local_addr().unwrap())).await;
        let mut regs = Vec::new();
        let mut rxs = Vec::new();
        for i in 0..1000 {
            let (tx, rx) = mpsc::channel(2);
            regs.push(service.register(hash(i), tx));
            rxs.push(rx);
        }
        let rounds = 1000usize.div_ceil(MAX_HASHES);
        for (n, within) in [
            (1, Duration::from_millis(500)),
            (2, FAST.every + Duration::from_millis(200)),
        ] {
            let got = round(&capture, within).await;
            assert_eq!(got.len(), rounds, "round {n}");
            let mut heard: Vec<InfoHash> =
                got.into_iter().flat_map(|(_, a)| a.info_hashes).collect();
            heard.sort();
            let mut want: Vec<InfoHash> = (0..1000).map(hash).collect();
            want.sort();
            assert_eq!(heard, want, "round {n}: each once");
        }
    }

    #[tokio::test]
    async fn a_full_channel_does_not_hold_up_the_others() {
        let capture = local_socket("127.0.0.1").await;
        let (service, me) = local_service(Some(capture.local_addr().unwrap())).await;
        // A's driver is stuck: its channel is full and nobody reads it.
        let (tx_a, mut rx_a) = mpsc::channel(1);
        tx_a.try_send(PeerInput::Discovered {
            addrs: Vec::new(),
            source: PeerSource::Manual,
        })
        .unwrap();
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let _a = service.register(hash(1), tx_a);
        let _b = service.register(hash(2), tx_b);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let other = local_socket("127.0.0.1").await;
        send_announce(&other, me, 7000, &[hash(1), hash(2)], "other").await;
        assert!(discovered(&mut rx_b, Duration::from_secs(1))
            .await
            .is_some());
        // Announce rounds go on, B hears of them.
        let (text, _) = status(&mut rx_b, Duration::from_secs(1)).await.unwrap();
        assert!(text.ends_with("1 peers heard"), "{text}");
        let (text, _) = status(&mut rx_b, Duration::from_secs(1)).await.unwrap();
        assert!(text.starts_with("working: 1 announces sent"), "{text}");
        // Once A reads again, it gets its latest status.
        assert!(matches!(
            rx_a.recv().await,
            Some(PeerInput::Discovered { .. })
        ));
        let (text, _) = status(&mut rx_a, Duration::from_secs(1)).await.unwrap();
        assert_eq!(text, "working: 1 announces sent over IPv4, 1 peers heard");
    }

    #[tokio::test]
    async fn without_sockets_each_torrent_hears_why() {
        let net = Net {
            v4: None,
            v6: None,
            problems: vec!["cannot join 239.192.152.143:6771: no".into()],
        };
        let service = Service::start_with(net, PORT, COOKIE.into(), FAST);
        let (tx, mut rx) = mpsc::channel(8);
        let _a = service.register(hash(1), tx);
        let got = status(&mut rx, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            got,
            (
                "not working: cannot join 239.192.152.143:6771: no".into(),
                None
            )
        );
    }

    #[tokio::test]
    async fn the_task_ends_with_the_last_handle_or_on_shutdown() {
        let capture = local_socket("127.0.0.1").await;
        let group = Some(capture.local_addr().unwrap());
        let (service, _) = local_service(group).await;
        let (tx, _rx) = mpsc::channel(8);
        let reg = service.register(hash(1), tx.clone());
        let clone = service.clone();
        drop(service);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!reg.cmds.is_closed(), "a handle is left");
        drop(clone);
        tokio::time::timeout(Duration::from_secs(1), reg.cmds.closed())
            .await
            .expect("task ended");

        let (service, _) = local_service(group).await;
        let reg = service.register(hash(1), tx);
        service.shutdown();
        tokio::time::timeout(Duration::from_secs(1), reg.cmds.closed())
            .await
            .expect("task ended");
    }

    #[test]
    fn sixteen_hashes_fit_an_announce() {
        assert_eq!(per_datagram(65535, COOKIE), MAX_HASHES);
        assert!(per_datagram(65535, &"c".repeat(700)) < MAX_HASHES);
    }
}
