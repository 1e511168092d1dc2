//! Tracker driver: announce to HTTP and UDP (BEP 15) trackers, tier by tier
//! (BEP 12), feed the peers they return to the torrent, and report each
//! tracker's status for the sources table. A tracker that fails shows its
//! error and is retried with backoff; the download carries on without it.

use std::net::SocketAddr;
use std::time::Duration;

use lodestone_wire::tracker::{
    http_announce_url, parse_http_response, udp_announce_request, udp_connect_request,
    udp_parse_announce, udp_parse_connect, AnnounceEvent, AnnounceRequest, AnnounceResponse,
    MAX_RESPONSE,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::peer_io::{PeerInput, PeerSource};

/// BEP 15 says 15 * 2^n; we start shorter so a dead tracker shows quickly.
const UDP_TRIES: [Duration; 3] = [
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];
const MIN_INTERVAL: Duration = Duration::from_secs(60);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const FIRST_RETRY: Duration = Duration::from_secs(15);
const MAX_RETRY: Duration = Duration::from_secs(1800);

pub use lodestone_torrent::{Progress, TrackerStatus};

/// Announce one tier until the task is dropped. A change on `now` (the
/// user's "ask the trackers now") cuts the wait short, unless the last
/// tracker that answered gave a `min interval` and it has not passed
/// since the last announce (Transmission refuses a manual announce
/// sooner too); one asked for while an announce runs is that announce.
pub async fn run_tier(
    tier: Vec<String>,
    base: AnnounceRequest,
    mut progress: watch::Receiver<Progress>,
    input: mpsc::Sender<PeerInput>,
    http: crate::http::HttpClient,
    mut now: watch::Receiver<()>,
) {
    let mut order = tier;
    let mut event = AnnounceEvent::Started;
    let mut retry = FIRST_RETRY;
    // The tracker's own floor between announces, if it gave one.
    let mut min_interval: Option<Duration> = None;
    loop {
        let mut wait = None;
        for i in 0..order.len() {
            let url = order[i].clone();
            let p = *progress.borrow();
            let req = AnnounceRequest {
                uploaded: p.uploaded,
                downloaded: p.downloaded,
                left: p.left,
                event,
                ..base.clone()
            };
            // Boxed: an announce's state (an HTTPS exchange, kilobytes)
            // exists while it runs, not for the whole life of the task,
            // which mostly sleeps (one per tier of every torrent).
            match Box::pin(announce(&url, &req, &http)).await {
                Ok(r) => {
                    let interval = Duration::from_secs(u64::from(
                        r.min_interval.unwrap_or(r.interval).max(r.interval),
                    ))
                    .clamp(MIN_INTERVAL, MAX_INTERVAL);
                    min_interval = r
                        .min_interval
                        .map(|m| Duration::from_secs(u64::from(m)).min(MAX_INTERVAL));
                    let status = TrackerStatus {
                        url: url.clone(),
                        status: match &r.warning {
                            Some(w) => format!("working (warning: {w})"),
                            None => "working".to_owned(),
                        },
                        next_in: Some(interval),
                        seeders: r.seeders,
                        leechers: r.leechers,
                        peers: r.peers.len(),
                    };
                    if send(&input, status, r.peers).await.is_err() {
                        return;
                    }
                    // BEP 12: a tracker that answered moves to the front of its tier.
                    let t = order.remove(i);
                    order.insert(0, t);
                    event = AnnounceEvent::None;
                    retry = FIRST_RETRY;
                    wait = Some(interval);
                    break;
                }
                Err(e) => {
                    let status = TrackerStatus {
                        url: url.clone(),
                        status: format!("not working: {e}"),
                        next_in: Some(retry),
                        seeders: None,
                        leechers: None,
                        peers: 0,
                    };
                    if send(&input, status, Vec::new()).await.is_err() {
                        return;
                    }
                }
            }
        }
        let wait = wait.unwrap_or_else(|| {
            let w = retry;
            retry = (retry * 2).min(MAX_RETRY);
            w
        });
        // Sleep until the next announce, or until the download completes:
        // trackers hear `completed` at once (BEP 3) and count us a seed;
        // or until asked to announce now, if the tracker allows it.
        let downloading = progress.borrow().left > 0;
        let announced = tokio::time::Instant::now();
        let deadline = announced + wait;
        // Asked while announcing: that announce was the answer.
        now.borrow_and_update();
        let mut can_ask = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                done = progress.wait_for(|p| p.left == 0), if downloading => {
                    if done.is_err() {
                        return; // the torrent is gone
                    }
                    event = AnnounceEvent::Completed;
                    break;
                }
                asked = now.changed(), if can_ask => match asked {
                    Err(_) => can_ask = false,
                    Ok(()) if manual_allowed(announced, min_interval) => break,
                    Ok(()) => {}
                },
            }
        }
    }
}

/// May the user's "announce now" be carried out, the last announce having
/// ended at `announced`? Not before the tracker's `min interval`.
fn manual_allowed(announced: tokio::time::Instant, min_interval: Option<Duration>) -> bool {
    min_interval.is_none_or(|m| announced.elapsed() >= m)
}

async fn send(
    input: &mpsc::Sender<PeerInput>,
    status: TrackerStatus,
    peers: Vec<SocketAddr>,
) -> Result<(), ()> {
    if !peers.is_empty() {
        let msg = PeerInput::Discovered {
            addrs: peers,
            source: PeerSource::Tracker,
        };
        input.send(msg).await.map_err(|_| ())?;
    }
    input
        .send(PeerInput::TrackerStatus(Box::new(status)))
        .await
        .map_err(|_| ())
}

/// One announce to `url`, whatever its scheme. Errors are sentences.
pub async fn announce(
    url: &str,
    req: &AnnounceRequest,
    client: &crate::http::HttpClient,
) -> Result<AnnounceResponse, String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        http(url, req, client).await
    } else if lower.starts_with("udp://") {
        udp(url, req).await
    } else {
        Err("unknown tracker URL scheme".into())
    }
}

async fn http(
    url: &str,
    req: &AnnounceRequest,
    client: &crate::http::HttpClient,
) -> Result<AnnounceResponse, String> {
    let body = client
        .get(&http_announce_url(url, req), MAX_RESPONSE)
        .await?;
    parse_http_response(&body).map_err(|e| e.to_string())
}

/// Ask a tracker (HTTP(S) by BEP 48's URL convention, or UDP) what it
/// knows about one torrent. Errors are sentences.
pub async fn scrape(
    url: &str,
    info_hash: &lodestone_core::InfoHash,
    client: &crate::http::HttpClient,
) -> Result<lodestone_wire::tracker::ScrapeStats, String> {
    use lodestone_wire::tracker::{
        http_scrape_url, parse_http_scrape, udp_parse_scrape, udp_scrape_request,
    };
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let scrape = http_scrape_url(url, info_hash)
            .ok_or("this tracker's URL does not end in /announce, so it has no scrape URL")?;
        let body = client.get(&scrape, MAX_RESPONSE).await?;
        parse_http_scrape(&body, info_hash).map_err(|e| e.to_string())
    } else if lower.starts_with("udp://") {
        let (sock, _) = udp_socket(url).await?;
        let mut buf = vec![0u8; 2048];
        // Any number will do; only the answer's echo of it matters.
        let t1 = u32::from_be_bytes([info_hash.0[0], info_hash.0[1], info_hash.0[2], 0x5c]);
        let connection = exchange(&sock, &udp_connect_request(t1), &mut buf, |b| {
            udp_parse_connect(b, t1)
        })
        .await?;
        let t2 = t1.wrapping_add(1);
        exchange(
            &sock,
            &udp_scrape_request(connection, t2, info_hash),
            &mut buf,
            |b| udp_parse_scrape(b, t2),
        )
        .await
    } else {
        Err("unknown tracker URL scheme".into())
    }
}

/// A UDP socket connected to the tracker of `url`.
async fn udp_socket(url: &str) -> Result<(UdpSocket, SocketAddr), String> {
    let (host, port) = host_port(url)?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| "bind")?;
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
    sock.connect(addr)
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    Ok((sock, addr))
}

/// `udp://host:port[/…]` → (host, port); IPv6 literals in brackets; port
/// 80 when none is given.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let rest = url.split_once("://").map(|x| x.1).ok_or("no scheme")?;
    let authority = rest.find('/').map_or(rest, |i| &rest[..i]);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_matches(|c| c == '[' || c == ']').to_owned(),
            p.parse().map_err(|_| format!("bad port in {url}"))?,
        ),
        _ => (authority.to_owned(), 80),
    };
    if host.is_empty() {
        return Err(format!("no host in {url}"));
    }
    Ok((host, port))
}

async fn udp(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, String> {
    let (sock, addr) = udp_socket(url).await?;
    let mut buf = vec![0u8; 2048];
    let t1 = req.key ^ 0x1357_9bdf;
    let connection = exchange(&sock, &udp_connect_request(t1), &mut buf, |b| {
        udp_parse_connect(b, t1)
    })
    .await?;
    let t2 = t1.wrapping_add(1);
    let packet = udp_announce_request(connection, t2, req);
    exchange(&sock, &packet, &mut buf, |b| {
        udp_parse_announce(b, t2, addr.is_ipv6())
    })
    .await
}

/// Send `packet` and wait for an answer `parse` accepts, retrying.
async fn exchange<T>(
    sock: &UdpSocket,
    packet: &[u8],
    buf: &mut [u8],
    parse: impl Fn(&[u8]) -> Result<T, lodestone_wire::tracker::TrackerError>,
) -> Result<T, String> {
    for wait in UDP_TRIES {
        sock.send(packet)
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(format!("receive failed: {e}")),
                Ok(Ok(n)) => match parse(&buf[..n]) {
                    Ok(v) => return Ok(v),
                    Err(lodestone_wire::tracker::TrackerError::Failure(m)) => {
                        return Err(format!("tracker said: {m}"))
                    }
                    Err(_) => continue, // someone else's packet or garbage
                },
            }
        }
    }
    Err("no answer (UDP)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_tracker_urls() {
        assert_eq!(
            host_port("udp://t.example:8080/announce").unwrap(),
            ("t.example".into(), 8080)
        );
        assert_eq!(
            host_port("udp://127.0.0.1:6969").unwrap(),
            ("127.0.0.1".into(), 6969)
        );
        assert_eq!(host_port("udp://[::1]:7000").unwrap(), ("::1".into(), 7000));
        assert!(host_port("udp://:80/").is_err());
        assert_eq!(
            host_port("udp://t.example/").unwrap(),
            ("t.example".into(), 80)
        );
        assert!(host_port("udp://t.example:x/").is_err());
        assert!(host_port("t.example:80").is_err());
    }

    #[test]
    fn a_tier_between_announces_holds_little() {
        let base = AnnounceRequest {
            info_hash: lodestone_core::InfoHash([1; 20]),
            peer_id: lodestone_core::PeerId([2; 20]),
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: AnnounceEvent::Started,
            num_want: 50,
            key: 3,
        };
        let (_tx, progress) = watch::channel(Progress::default());
        let (input, _rx) = mpsc::channel(1);
        let tier = vec!["http://127.0.0.1:1/announce".to_owned()];
        let (_now_tx, now) = watch::channel(());
        let f = run_tier(
            tier,
            base,
            progress,
            input,
            crate::http::HttpClient::default(),
            now,
        );
        let size = std::mem::size_of_val(&f);
        assert!(size <= 2048, "{size} bytes");
    }
}
