//! An HTTP tracker's bencoded body, read both as an announce answer and as
//! a scrape answer. What parses stays within the caps (at most 200 peers,
//! none on port 0, texts of bounded size) and, written back as a tracker
//! would, parses to the same answer.

use std::net::SocketAddr;

use lodestone_core::InfoHash;
use lodestone_wire::tracker::{parse_http_response, parse_http_scrape, TrackerError, MAX_PEERS};

use crate::encode;

/// The info hash scraped: the seeds use it, and the fuzzer finds it.
pub const SCRAPE_HASH: InfoHash = InfoHash([0x41; 20]);
/// `text()` keeps 512 bytes; invalid UTF-8 in them may triple on the way
/// to a `String`.
const MAX_TEXT: usize = 3 * 512;

pub fn tracker_http(data: &[u8]) {
    match parse_http_response(data) {
        Ok(r) => {
            check_peers(&r.peers);
            let warning_fits = r.warning.as_ref().is_none_or(|w| w.len() <= 512);
            assert!(r.warning.as_ref().is_none_or(|w| w.len() <= MAX_TEXT));
            let again = parse_http_response(&encode::http_announce(&r))
                .expect("our own announce answer parses");
            // Written back, IPv4 peers go in `peers` and IPv6 in `peers6`.
            let mut want = r.clone();
            want.peers.sort_by_key(SocketAddr::is_ipv6);
            if !warning_fits {
                want.warning.clone_from(&again.warning);
            }
            assert_eq!(again, want);
        }
        Err(TrackerError::Failure(reason)) => assert!(reason.len() <= MAX_TEXT),
        Err(_) => {}
    }
    match parse_http_scrape(data, &SCRAPE_HASH) {
        Ok(s) => {
            let again = parse_http_scrape(&encode::http_scrape(&SCRAPE_HASH, &s), &SCRAPE_HASH)
                .expect("our own scrape answer parses");
            assert_eq!(again, s);
        }
        Err(TrackerError::Failure(reason)) => assert!(reason.len() <= MAX_TEXT),
        Err(_) => {}
    }
}

/// What any tracker answer may hand the torrent.
pub(crate) fn check_peers(peers: &[SocketAddr]) {
    assert!(peers.len() <= MAX_PEERS, "{} peers", peers.len());
    assert!(peers.iter().all(|p| p.port() != 0), "a peer on port 0");
}
