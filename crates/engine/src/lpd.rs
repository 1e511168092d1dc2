//! Local Peer Discovery (BEP 14) driver: announce our torrent to the LAN's
//! multicast groups (IPv4 239.192.152.143 and IPv6 ff15::efc0:988f) on
//! every interface that is up, every 5 minutes, and turn others' announces
//! for it into peers.
//!
//! One socket per address family receives from all interfaces (it joins
//! the group on each); an announce goes out once per interface, the
//! socket's outgoing interface switched before each send.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use lodestone_wire::lpd::{Announce, GROUP_V4, GROUP_V6, MAX_LEN};
use socket2::SockRef;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::peer_io::{PeerInput, PeerSource};

const GROUP4: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f);
const PORT: u16 = 6771;
/// BEP 14: every 5 minutes; never more than once a minute.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(300);
/// Announces accepted from one IP in this window (floods, and the same
/// announce heard on two interfaces, are dropped).
const PER_SENDER_WINDOW: Duration = Duration::from_secs(10);
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
    announce: Vec<u8>,
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
    /// Announce on every link; how many sends succeeded, and the last error.
    async fn announce(&self) -> (u32, Option<String>) {
        let (mut ok, mut error) = (0, None);
        for link in &self.links {
            let sock = SockRef::from(&self.sock);
            let set = match link {
                Link::V4(a) => sock.set_multicast_if_v4(a),
                Link::V6(i) => sock.set_multicast_if_v6(*i),
            };
            let sent = match set {
                Ok(()) => self
                    .sock
                    .send_to(&self.announce, self.group)
                    .await
                    .map(|_| ()),
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

/// Run LPD for one torrent until the task is aborted. Status lines go to
/// the torrent (for the sources table) as `SourceStatus`.
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
    let status = |text: String, next_in: Option<Duration>| PeerInput::SourceStatus {
        source: PeerSource::Lpd,
        status: text,
        next_in,
    };
    let message = |group: &str| {
        Announce {
            port,
            info_hashes: vec![info_hash],
            cookie: Some(cookie.clone()),
        }
        .encode(group)
    };
    let mut problems = Vec::new();
    let v4 = match socket_v4(&links.v4) {
        Ok(sock) => Some(Family {
            sock,
            announce: message(GROUP_V4),
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
                announce: message(GROUP_V6),
                group: SocketAddr::V6(SocketAddrV6::new(GROUP6, PORT, 0, 0)),
                links: links.v6.iter().map(|i| Link::V6(*i)).collect(),
            }),
            Err(e) => {
                problems.push(e);
                None
            }
        }
    };
    if v4.is_none() && v6.is_none() {
        let _ = input
            .send(status(
                format!("not working: {}", problems.join("; ")),
                None,
            ))
            .await;
        return;
    }
    let families: Vec<&str> = [v4.as_ref().map(|_| "IPv4"), v6.as_ref().map(|_| "IPv6")]
        .into_iter()
        .flatten()
        .collect();
    let families = families.join(" and ");
    let mut next = Instant::now();
    let (mut sent, mut found) = (0u32, 0u32);
    let mut last_from: HashMap<IpAddr, Instant> = HashMap::new();
    let mut buf4 = vec![0u8; MAX_LEN + 1];
    let mut buf6 = vec![0u8; MAX_LEN + 1];
    let working = |sent: u32, found: u32| {
        format!("working: {sent} announces sent over {families}, {found} peers heard")
    };
    loop {
        if Instant::now() >= next {
            let mut error = None;
            for f in [&v4, &v6].into_iter().flatten() {
                let (ok, e) = f.announce().await;
                sent += ok;
                error = error.or(e);
            }
            let text = match error {
                Some(e) if sent == 0 => format!("not working: {e}"),
                _ => working(sent, found),
            };
            next = Instant::now() + ANNOUNCE_EVERY;
            if input
                .send(status(text, Some(ANNOUNCE_EVERY)))
                .await
                .is_err()
            {
                return;
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        let received = tokio::time::timeout(wait, async {
            tokio::select! {
                r = Family::recv(&v4, &mut buf4) => r.map(|(n, from)| (buf4[..n].to_vec(), from)),
                r = Family::recv(&v6, &mut buf6) => r.map(|(n, from)| (buf6[..n].to_vec(), from)),
            }
        })
        .await;
        let Ok(Ok((bytes, from))) = received else {
            continue;
        };
        let Ok(a) = Announce::decode(&bytes) else {
            continue;
        };
        if a.cookie.as_deref() == Some(cookie.as_str()) || !a.info_hashes.contains(&info_hash) {
            continue; // our own, or another torrent
        }
        let now = Instant::now();
        if last_from
            .get(&from.ip())
            .is_some_and(|t| now.saturating_duration_since(*t) < PER_SENDER_WINDOW)
        {
            continue;
        }
        if last_from.len() > 1024 {
            last_from.clear();
        }
        last_from.insert(from.ip(), now);
        found += 1;
        // The sender's address with its port; a link-local IPv6 sender
        // keeps its scope (the interface it was heard on).
        let mut peer = from;
        peer.set_port(a.port);
        let msg = PeerInput::Discovered {
            addrs: vec![peer],
            source: PeerSource::Lpd,
        };
        if input.send(msg).await.is_err() {
            return;
        }
        let left = next.saturating_duration_since(now);
        if input
            .send(status(working(sent, found), Some(left)))
            .await
            .is_err()
        {
            return;
        }
    }
}
