//! Tracker protocols, codecs only: the HTTP announce (BEP 3, compact peers
//! of BEP 23, IPv6 `peers6` of BEP 7) and the UDP tracker protocol (BEP 15).

use std::net::{IpAddr, SocketAddr};

use lodestone_bencode::{DecodeOptions, Decoder};
use lodestone_core::{encoding::percent_encode, InfoHash, PeerId};

use crate::pex::decode_compact;

/// Peers accepted from one tracker answer.
pub const MAX_PEERS: usize = 200;
/// Largest HTTP tracker answer read.
pub const MAX_RESPONSE: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceEvent {
    None,
    Started,
    Completed,
    Stopped,
}

impl AnnounceEvent {
    fn http(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Started => Some("started"),
            Self::Completed => Some("completed"),
            Self::Stopped => Some("stopped"),
        }
    }

    fn udp(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Completed => 1,
            Self::Started => 2,
            Self::Stopped => 3,
        }
    }
}

/// What we tell a tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: AnnounceEvent,
    pub num_want: u32,
    /// BEP 15 `key` / HTTP `key`: lets the tracker recognise us across IPs.
    pub key: u32,
}

/// What a tracker answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    pub interval: u32,
    pub min_interval: Option<u32>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub peers: Vec<SocketAddr>,
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    #[error("tracker said: {0}")]
    Failure(String),
    #[error("tracker answer is not bencode: {0}")]
    Bencode(lodestone_bencode::DecodeError),
    #[error("tracker answer is malformed: {0}")]
    Malformed(&'static str),
}

/// The HTTP announce URL: the tracker's URL plus our query.
pub fn http_announce_url(base: &str, r: &AnnounceRequest) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut url = format!(
        "{base}{sep}info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
        percent_encode(&r.info_hash.0, b""),
        percent_encode(&r.peer_id.0, b""),
        r.port,
        r.uploaded,
        r.downloaded,
        r.left,
        r.num_want,
        r.key
    );
    if let Some(e) = r.event.http() {
        url.push_str("&event=");
        url.push_str(e);
    }
    url
}

fn text(v: &lodestone_bencode::Value<'_>) -> Option<String> {
    v.as_bytes()
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned())
}

/// Decode a tracker's bencoded answer, bounded in size and shape.
fn decode_answer(body: &[u8]) -> Result<lodestone_bencode::Value<'_>, TrackerError> {
    if body.len() > MAX_RESPONSE {
        return Err(TrackerError::Malformed("answer too large"));
    }
    let opts = DecodeOptions {
        max_depth: 8,
        max_values: 20_000,
        strict: false,
    };
    Decoder::new(body, opts)
        .decode_all()
        .map_err(TrackerError::Bencode)
}

/// The top dictionary of a decoded answer, or the tracker's own
/// `failure reason`.
fn answer_dict<'v, 'a>(
    v: &'v lodestone_bencode::Value<'a>,
) -> Result<&'v lodestone_bencode::Dict<'a>, TrackerError> {
    let d = v
        .as_dict()
        .ok_or(TrackerError::Malformed("not a dictionary"))?;
    match d.get(b"failure reason").and_then(text) {
        Some(reason) => Err(TrackerError::Failure(reason)),
        None => Ok(d),
    }
}

/// Parse an HTTP tracker's bencoded body.
pub fn parse_http_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let v = decode_answer(body)?;
    let d = answer_dict(&v)?;
    let int = |k: &[u8]| {
        d.get(k)
            .and_then(|v| v.as_int())
            .and_then(|i| u32::try_from(i).ok())
    };
    let mut r = AnnounceResponse {
        interval: int(b"interval").ok_or(TrackerError::Malformed("no interval"))?,
        min_interval: int(b"min interval"),
        seeders: int(b"complete"),
        leechers: int(b"incomplete"),
        peers: Vec::new(),
        warning: d.get(b"warning message").and_then(text),
    };
    match d.get(b"peers") {
        Some(p) if p.as_bytes().is_some() => {
            let b = p.as_bytes().unwrap_or_default();
            r.peers = decode_compact(&b[..b.len() - b.len() % 6], false).unwrap_or_default();
        }
        Some(p) => {
            // The original dictionary form: [{ip, port, peer id}, ...].
            for e in p.as_list().unwrap_or_default() {
                let Some(e) = e.as_dict() else { continue };
                let ip = e
                    .get(b"ip")
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse::<IpAddr>().ok());
                let port = e
                    .get(b"port")
                    .and_then(|v| v.as_int())
                    .and_then(|p| u16::try_from(p).ok());
                if let (Some(ip), Some(port)) = (ip, port) {
                    r.peers.push(SocketAddr::new(ip, port));
                }
            }
        }
        None => {}
    }
    if let Some(b) = d.get(b"peers6").and_then(|v| v.as_bytes()) {
        r.peers
            .extend(decode_compact(&b[..b.len() - b.len() % 18], true).unwrap_or_default());
    }
    r.peers.retain(|p| p.port() != 0);
    r.peers.truncate(MAX_PEERS);
    Ok(r)
}

// ---- UDP (BEP 15) ----

pub const UDP_PROTOCOL_ID: u64 = 0x0417_2710_1980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;

pub fn udp_connect_request(transaction: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&UDP_PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    b[12..16].copy_from_slice(&transaction.to_be_bytes());
    b
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The connection id from a connect response for `transaction`.
pub fn udp_parse_connect(b: &[u8], transaction: u32) -> Result<u64, TrackerError> {
    udp_check(b, transaction, ACTION_CONNECT)?;
    let id = b
        .get(8..16)
        .ok_or(TrackerError::Malformed("short connect response"))?;
    Ok(u64::from_be_bytes(
        id.try_into()
            .map_err(|_| TrackerError::Malformed("short"))?,
    ))
}

fn udp_check(b: &[u8], transaction: u32, action: u32) -> Result<(), TrackerError> {
    let got = u32_at(b, 0).ok_or(TrackerError::Malformed("short response"))?;
    if u32_at(b, 4) != Some(transaction) {
        return Err(TrackerError::Malformed("wrong transaction id"));
    }
    if got == ACTION_ERROR {
        let msg = String::from_utf8_lossy(&b[8.min(b.len())..b.len().min(8 + 512)]).into_owned();
        return Err(TrackerError::Failure(msg));
    }
    if got != action {
        return Err(TrackerError::Malformed("unexpected action"));
    }
    Ok(())
}

pub fn udp_announce_request(connection: u64, transaction: u32, r: &AnnounceRequest) -> [u8; 98] {
    let mut b = [0u8; 98];
    b[..8].copy_from_slice(&connection.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    b[12..16].copy_from_slice(&transaction.to_be_bytes());
    b[16..36].copy_from_slice(&r.info_hash.0);
    b[36..56].copy_from_slice(&r.peer_id.0);
    b[56..64].copy_from_slice(&r.downloaded.to_be_bytes());
    b[64..72].copy_from_slice(&r.left.to_be_bytes());
    b[72..80].copy_from_slice(&r.uploaded.to_be_bytes());
    b[80..84].copy_from_slice(&r.event.udp().to_be_bytes());
    // 84..88: IP address 0 = the sender's.
    b[88..92].copy_from_slice(&r.key.to_be_bytes());
    b[92..96].copy_from_slice(&r.num_want.to_be_bytes());
    b[96..98].copy_from_slice(&r.port.to_be_bytes());
    b
}

/// Parse an announce response; `v6` says which address family the peers are.
pub fn udp_parse_announce(
    b: &[u8],
    transaction: u32,
    v6: bool,
) -> Result<AnnounceResponse, TrackerError> {
    udp_check(b, transaction, ACTION_ANNOUNCE)?;
    let interval = u32_at(b, 8).ok_or(TrackerError::Malformed("short announce response"))?;
    let leechers = u32_at(b, 12).ok_or(TrackerError::Malformed("short announce response"))?;
    let seeders = u32_at(b, 16).ok_or(TrackerError::Malformed("short announce response"))?;
    let rest = &b[20.min(b.len())..];
    let size = if v6 { 18 } else { 6 };
    let mut peers = decode_compact(&rest[..rest.len() - rest.len() % size], v6).unwrap_or_default();
    peers.retain(|p| p.port() != 0);
    peers.truncate(MAX_PEERS);
    Ok(AnnounceResponse {
        interval,
        min_interval: None,
        seeders: Some(seeders),
        leechers: Some(leechers),
        peers,
        warning: None,
    })
}

// ---- Scrape (BEP 48 over HTTP, BEP 15 over UDP) ----

/// What a tracker knows about one torrent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    /// Peers with the whole torrent (`complete`).
    pub seeders: u32,
    /// Peers still downloading (`incomplete`).
    pub leechers: u32,
    /// Completed downloads the tracker counted (`downloaded`).
    pub completed: u32,
}

const ACTION_SCRAPE: u32 = 2;

/// The scrape URL of an HTTP announce URL, by the convention of BEP 48:
/// the last path segment's `announce` becomes `scrape`. `None` when the
/// tracker does not follow it (then it does not support scrape).
pub fn http_scrape_url(announce: &str, info_hash: &InfoHash) -> Option<String> {
    let (path, query) = match announce.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (announce, None),
    };
    let slash = path.rfind('/')?;
    let last = &path[slash + 1..];
    let rest = last.strip_prefix("announce")?;
    let mut url = format!("{}/scrape{rest}", &path[..slash]);
    url.push('?');
    if let Some(q) = query {
        url.push_str(q);
        url.push('&');
    }
    url.push_str("info_hash=");
    url.push_str(&percent_encode(&info_hash.0, b""));
    Some(url)
}

/// Parse an HTTP scrape answer: `files` → {info hash → counts}.
pub fn parse_http_scrape(body: &[u8], info_hash: &InfoHash) -> Result<ScrapeStats, TrackerError> {
    let v = decode_answer(body)?;
    let d = answer_dict(&v)?;
    let files = d
        .get(b"files")
        .and_then(|f| f.as_dict())
        .ok_or(TrackerError::Malformed("no files dictionary"))?;
    let Some(entry) = files.get(&info_hash.0).and_then(|e| e.as_dict()) else {
        // Trackers leave out torrents they do not know.
        return Ok(ScrapeStats::default());
    };
    let int = |k: &[u8]| {
        entry
            .get(k)
            .and_then(|v| v.as_int())
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0)
    };
    Ok(ScrapeStats {
        seeders: int(b"complete"),
        leechers: int(b"incomplete"),
        completed: int(b"downloaded"),
    })
}

/// A UDP scrape request for one torrent.
pub fn udp_scrape_request(connection: u64, transaction: u32, info_hash: &InfoHash) -> [u8; 36] {
    let mut b = [0u8; 36];
    b[..8].copy_from_slice(&connection.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_SCRAPE.to_be_bytes());
    b[12..16].copy_from_slice(&transaction.to_be_bytes());
    b[16..36].copy_from_slice(&info_hash.0);
    b
}

/// Parse a UDP scrape answer for the one torrent asked about.
pub fn udp_parse_scrape(b: &[u8], transaction: u32) -> Result<ScrapeStats, TrackerError> {
    udp_check(b, transaction, ACTION_SCRAPE)?;
    let field = |at| u32_at(b, at).ok_or(TrackerError::Malformed("short scrape response"));
    Ok(ScrapeStats {
        seeders: field(8)?,
        completed: field(12)?,
        leechers: field(16)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_urls_follow_bep48() {
        let ih = InfoHash([0x41; 20]);
        assert_eq!(
            http_scrape_url("http://t.example/announce", &ih).unwrap(),
            "http://t.example/scrape?info_hash=AAAAAAAAAAAAAAAAAAAA"
        );
        assert_eq!(
            http_scrape_url("https://t.example/x/announce.php?passkey=k", &ih).unwrap(),
            "https://t.example/x/scrape.php?passkey=k&info_hash=AAAAAAAAAAAAAAAAAAAA"
        );
        assert_eq!(http_scrape_url("http://t.example/a", &ih), None);
        assert_eq!(http_scrape_url("http://t.example/announce/x", &ih), None);
    }

    #[test]
    fn scrape_answers() {
        let ih = InfoHash([0x41; 20]);
        let body =
            b"d5:filesd20:AAAAAAAAAAAAAAAAAAAAd8:completei5e10:downloadedi50e10:incompletei10eeee";
        assert_eq!(
            parse_http_scrape(body, &ih).unwrap(),
            ScrapeStats {
                seeders: 5,
                leechers: 10,
                completed: 50
            }
        );
        assert_eq!(
            parse_http_scrape(b"d5:filesdee", &ih).unwrap(),
            ScrapeStats::default()
        );
        assert!(parse_http_scrape(b"d14:failure reason4:nopee", &ih).is_err());
        assert!(parse_http_scrape(b"de", &ih).is_err());
        let mut udp = vec![0, 0, 0, 2, 0, 0, 0, 9];
        udp.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 50, 0, 0, 0, 10]);
        assert_eq!(
            udp_parse_scrape(&udp, 9).unwrap(),
            ScrapeStats {
                seeders: 5,
                leechers: 10,
                completed: 50
            }
        );
        assert!(udp_parse_scrape(&udp[..12], 9).is_err());
        assert!(udp_parse_scrape(&udp, 8).is_err());
        let r = udp_scrape_request(7, 9, &ih);
        assert_eq!(&r[8..12], &[0, 0, 0, 2]);
        assert_eq!(&r[16..], &[0x41; 20]);
    }

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([0x12; 20]),
            peer_id: PeerId(*b"-LS0100-abcdefghijkl"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: AnnounceEvent::Started,
            num_want: 50,
            key: 0xdead_beef,
        }
    }

    #[test]
    fn http_url() {
        let u = http_announce_url("http://t.example/announce", &req());
        assert!(
            u.starts_with("http://t.example/announce?info_hash=%12%12"),
            "{u}"
        );
        assert!(u.contains(
            "&peer_id=-LS0100-abcdefghijkl&port=6881&uploaded=1&downloaded=2&left=3&compact=1"
        ));
        assert!(u.ends_with("&key=deadbeef&event=started"));
        assert!(http_announce_url("http://t/a?passkey=x", &req())
            .starts_with("http://t/a?passkey=x&info_hash="));
    }

    #[test]
    fn http_responses() {
        let body = b"d8:completei5e10:incompletei3e8:intervali1800e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x00e";
        let r = parse_http_response(body).unwrap();
        assert_eq!(r.interval, 1800);
        assert_eq!((r.seeders, r.leechers), (Some(5), Some(3)));
        assert_eq!(
            r.peers,
            vec!["127.0.0.1:6881".parse::<SocketAddr>().unwrap()],
            "port 0 dropped"
        );
        let dict = b"d8:intervali60e5:peersld2:ip9:127.0.0.27:peer id20:xxxxxxxxxxxxxxxxxxxx4:porti7000eeee";
        assert_eq!(
            parse_http_response(dict).unwrap().peers,
            vec!["127.0.0.2:7000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            parse_http_response(b"d14:failure reason21:Requested download ise"),
            Err(TrackerError::Failure("Requested download is".into()))
        );
        assert!(matches!(
            parse_http_response(b"<html>garbage"),
            Err(TrackerError::Bencode(_))
        ));
        assert_eq!(
            parse_http_response(b"de"),
            Err(TrackerError::Malformed("no interval"))
        );
    }

    #[test]
    fn udp_roundtrip() {
        let c = udp_connect_request(7);
        assert_eq!(&c[..8], &UDP_PROTOCOL_ID.to_be_bytes());
        let mut resp = vec![0, 0, 0, 0, 0, 0, 0, 7];
        resp.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(udp_parse_connect(&resp, 7), Ok(42));
        assert!(udp_parse_connect(&resp, 8).is_err());
        let a = udp_announce_request(42, 9, &req());
        assert_eq!(&a[96..98], &6881u16.to_be_bytes());
        let mut ann = vec![0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 60, 0, 0, 0, 2, 0, 0, 0, 1];
        ann.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
        let r = udp_parse_announce(&ann, 9, false).unwrap();
        assert_eq!((r.interval, r.seeders, r.leechers), (60, Some(1), Some(2)));
        assert_eq!(r.peers.len(), 1);
        let mut err = vec![0, 0, 0, 3, 0, 0, 0, 9];
        err.extend_from_slice(b"nope");
        assert_eq!(
            udp_parse_announce(&err, 9, false),
            Err(TrackerError::Failure("nope".into()))
        );
        assert!(udp_parse_announce(&[0, 0, 0, 1], 9, false).is_err());
    }
}
