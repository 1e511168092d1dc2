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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

use crate::peer_io::{PeerInput, PeerSource};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
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

/// What the torrent reports to trackers, kept current by the torrent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
}

/// One tracker's line in the sources table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerStatus {
    pub url: String,
    pub status: String,
    pub next_in: Option<Duration>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub peers: usize,
}

/// Announce one tier until the task is dropped.
pub async fn run_tier(
    tier: Vec<String>,
    base: AnnounceRequest,
    progress: watch::Receiver<Progress>,
    input: mpsc::Sender<PeerInput>,
) {
    let mut order = tier;
    let mut event = AnnounceEvent::Started;
    let mut retry = FIRST_RETRY;
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
            match announce(&url, &req).await {
                Ok(r) => {
                    let interval = Duration::from_secs(u64::from(
                        r.min_interval.unwrap_or(r.interval).max(r.interval),
                    ))
                    .clamp(MIN_INTERVAL, MAX_INTERVAL);
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
        tokio::time::sleep(wait).await;
    }
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
        .send(PeerInput::TrackerStatus(status))
        .await
        .map_err(|_| ())
}

/// One announce to `url`, whatever its scheme. Errors are sentences.
pub async fn announce(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") {
        http(url, req).await
    } else if lower.starts_with("udp://") {
        udp(url, req).await
    } else if lower.starts_with("https://") {
        Err("https trackers are not supported yet".into())
    } else {
        Err("unknown tracker URL scheme".into())
    }
}

/// `scheme://host:port/path` → (host, port, path-and-query).
fn split_url(url: &str, default_port: u16) -> Result<(String, u16, String), String> {
    let rest = url.split_once("://").map(|x| x.1).ok_or("no scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_matches(|c| c == '[' || c == ']').to_owned(),
            p.parse().map_err(|_| format!("bad port in {url}"))?,
        ),
        _ => (authority.to_owned(), default_port),
    };
    if host.is_empty() {
        return Err(format!("no host in {url}"));
    }
    Ok((host, port, path.to_owned()))
}

async fn http(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, String> {
    let full = http_announce_url(url, req);
    let (host, port, path) = split_url(&full, 80)?;
    let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| "connection timed out".to_owned())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Lodestone/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let body = tokio::time::timeout(HTTP_TIMEOUT, async {
        s.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_RESPONSE + 16384 {
                return Err(std::io::Error::other("answer too large"));
            }
        }
        Ok(buf)
    })
    .await
    .map_err(|_| "no answer in time".to_owned())?
    .map_err(|e| format!("read failed: {e}"))?;
    let body = http_body(&body)?;
    parse_http_response(&body).map_err(|e| e.to_string())
}

/// The body of an HTTP/1.x response (plain or chunked); non-200 is an error.
fn http_body(raw: &[u8]) -> Result<Vec<u8>, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!(
            "HTTP {}",
            status.split_once(' ').map_or(status, |x| x.1)
        ));
    }
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let nl = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunked body")?;
        let size_text = String::from_utf8_lossy(&rest[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        rest = &rest[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

async fn udp(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, String> {
    let (host, port, _) = split_url(url, 80)?;
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
    fn urls() {
        assert_eq!(
            split_url("http://t.example:8080/a?b=c", 80).unwrap(),
            ("t.example".into(), 8080, "/a?b=c".into())
        );
        assert_eq!(
            split_url("udp://127.0.0.1:6969", 80).unwrap(),
            ("127.0.0.1".into(), 6969, "/".into())
        );
        assert_eq!(
            split_url("http://[::1]:7000/ann", 80).unwrap(),
            ("::1".into(), 7000, "/ann".into())
        );
        assert_eq!(
            split_url("http://t.example/ann", 80).unwrap(),
            ("t.example".into(), 80, "/ann".into())
        );
        assert!(split_url("http://:80/", 80).is_err());
    }

    #[test]
    fn http_bodies() {
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nde").unwrap(),
            b"de"
        );
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nd\r\n1\r\ne\r\n0\r\n\r\n").unwrap(),
            b"de"
        );
        assert_eq!(
            http_body(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err(),
            "HTTP 404 Not Found"
        );
        assert!(http_body(b"garbage").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
