//! Tracker answers written as a tracker would write them: the other half
//! of the round trips, and the seeds' source.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use lodestone_bencode::OwnedValue as V;
use lodestone_core::InfoHash;
use lodestone_wire::pex::encode_compact;
use lodestone_wire::tracker::{AnnounceResponse, ScrapeStats};

/// An HTTP announce answer: compact `peers` and `peers6`.
pub fn http_announce(r: &AnnounceResponse) -> Vec<u8> {
    let mut d = BTreeMap::new();
    let int = |i: u32| V::Int(i64::from(i));
    d.insert(b"interval".to_vec(), int(r.interval));
    if let Some(i) = r.min_interval {
        d.insert(b"min interval".to_vec(), int(i));
    }
    if let Some(i) = r.seeders {
        d.insert(b"complete".to_vec(), int(i));
    }
    if let Some(i) = r.leechers {
        d.insert(b"incomplete".to_vec(), int(i));
    }
    if let Some(w) = &r.warning {
        d.insert(b"warning message".to_vec(), V::str(w));
    }
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    encode_compact(r.peers.iter().copied().filter(SocketAddr::is_ipv4), &mut v4);
    encode_compact(r.peers.iter().copied().filter(SocketAddr::is_ipv6), &mut v6);
    d.insert(b"peers".to_vec(), V::Bytes(v4));
    if !v6.is_empty() {
        d.insert(b"peers6".to_vec(), V::Bytes(v6));
    }
    V::Dict(d).encode()
}

/// An HTTP scrape answer about one torrent.
pub fn http_scrape(ih: &InfoHash, s: &ScrapeStats) -> Vec<u8> {
    let int = |i: u32| V::Int(i64::from(i));
    let entry = BTreeMap::from([
        (b"complete".to_vec(), int(s.seeders)),
        (b"downloaded".to_vec(), int(s.completed)),
        (b"incomplete".to_vec(), int(s.leechers)),
    ]);
    let files = BTreeMap::from([(ih.0.to_vec(), V::Dict(entry))]);
    V::Dict(BTreeMap::from([(b"files".to_vec(), V::Dict(files))])).encode()
}

/// A tracker's failure, over HTTP.
pub fn http_failure(reason: &str) -> Vec<u8> {
    V::Dict(BTreeMap::from([(
        b"failure reason".to_vec(),
        V::str(reason),
    )]))
    .encode()
}

fn udp_head(action: u32, transaction: u32) -> Vec<u8> {
    let mut b = action.to_be_bytes().to_vec();
    b.extend_from_slice(&transaction.to_be_bytes());
    b
}

/// BEP 15 connect response.
pub fn udp_connect(transaction: u32, connection: u64) -> Vec<u8> {
    let mut b = udp_head(0, transaction);
    b.extend_from_slice(&connection.to_be_bytes());
    b
}

/// BEP 15 announce response; the peers must all be of one family.
pub fn udp_announce(transaction: u32, r: &AnnounceResponse) -> Vec<u8> {
    let mut b = udp_head(1, transaction);
    b.extend_from_slice(&r.interval.to_be_bytes());
    b.extend_from_slice(&r.leechers.unwrap_or(0).to_be_bytes());
    b.extend_from_slice(&r.seeders.unwrap_or(0).to_be_bytes());
    encode_compact(r.peers.iter().copied(), &mut b);
    b
}

/// BEP 15 scrape response for one torrent.
pub fn udp_scrape(transaction: u32, s: &ScrapeStats) -> Vec<u8> {
    let mut b = udp_head(2, transaction);
    for i in [s.seeders, s.completed, s.leechers] {
        b.extend_from_slice(&i.to_be_bytes());
    }
    b
}

/// BEP 15 error response.
pub fn udp_error(transaction: u32, message: &str) -> Vec<u8> {
    let mut b = udp_head(3, transaction);
    b.extend_from_slice(message.as_bytes());
    b
}
