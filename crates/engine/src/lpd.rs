//! Local Peer Discovery (BEP 14) driver: announce our torrent to the LAN's
//! multicast group every 5 minutes and turn others' announces for it into
//! peers. IPv4 group only for now.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use lodestone_wire::lpd::{Announce, GROUP_V4, MAX_LEN};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::peer_io::{PeerInput, PeerSource};

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
const PORT: u16 = 6771;
/// BEP 14: every 5 minutes; never more than once a minute.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(300);
/// Announces accepted from one IP in this window (floods are dropped).
const PER_SENDER_WINDOW: Duration = Duration::from_secs(10);

/// Bind the multicast socket (shared with other clients on the host).
fn socket() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).into())?;
    s.join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED)?;
    // Org-local scope: a little past the first router, as BEP 14 suggests.
    s.set_multicast_ttl_v4(2)?;
    s.set_multicast_loop_v4(true)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Run LPD for one torrent until the task is aborted. Status lines go to
/// the torrent (for the sources table) as `SourceStatus`.
pub async fn run(info_hash: InfoHash, port: u16, cookie: String, input: mpsc::Sender<PeerInput>) {
    let status = |text: String, next_in: Option<Duration>| PeerInput::SourceStatus {
        source: PeerSource::Lpd,
        status: text,
        next_in,
    };
    let sock = match socket() {
        Ok(s) => s,
        Err(e) => {
            let _ = input
                .send(status(
                    format!("not working: cannot join {GROUP_V4}: {e}"),
                    None,
                ))
                .await;
            return;
        }
    };
    let announce = Announce {
        port,
        info_hashes: vec![info_hash],
        cookie: Some(cookie.clone()),
    }
    .encode(GROUP_V4);
    let group = SocketAddr::V4(SocketAddrV4::new(GROUP, PORT));
    let mut next = Instant::now();
    let mut sent = 0u32;
    let mut found = 0u32;
    let mut last_from: HashMap<IpAddr, Instant> = HashMap::new();
    let mut buf = vec![0u8; MAX_LEN + 1];
    loop {
        if Instant::now() >= next {
            let text = match sock.send_to(&announce, group).await {
                Ok(_) => {
                    sent += 1;
                    format!("working: {sent} announces sent, {found} peers heard")
                }
                Err(e) => format!("not working: cannot send to {GROUP_V4}: {e}"),
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
        let received = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await;
        let Ok(Ok((n, from))) = received else {
            continue;
        };
        let Ok(a) = Announce::decode(&buf[..n]) else {
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
        let peer = SocketAddr::new(from.ip(), a.port);
        let msg = PeerInput::Discovered {
            addrs: vec![peer],
            source: PeerSource::Lpd,
        };
        if input.send(msg).await.is_err() {
            return;
        }
        let text = format!("working: {sent} announces sent, {found} peers heard");
        let left = next.saturating_duration_since(now);
        if input.send(status(text, Some(left))).await.is_err() {
            return;
        }
    }
}
