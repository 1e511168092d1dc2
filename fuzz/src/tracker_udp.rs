//! A UDP tracker's datagram (BEP 15), read as the answer to a connect, an
//! announce (IPv4 and IPv6 peers) and a scrape, for the transaction id it
//! carries and for another one. Each parser must agree with a plain
//! reading of the BEP's byte layout written out below, stay within the
//! caps, and parse what our encoder makes of its answer to the same answer.

use std::net::SocketAddr;

use lodestone_wire::pex::decode_compact;
use lodestone_wire::tracker::{
    udp_parse_announce, udp_parse_connect, udp_parse_scrape, AnnounceResponse, ScrapeStats,
    TrackerError, MAX_PEERS,
};

use crate::encode;
use crate::tracker_http::check_peers;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// BEP 15: action (4 bytes), transaction id (4), then the action's fields;
/// action 3 is an error whose text is the rest (we keep 512 bytes).
/// `Err(None)` stands for "malformed", whatever the words.
fn header(b: &[u8], t: u32, action: u32) -> Result<(), Option<String>> {
    let got = u32_at(b, 0).ok_or(None)?;
    if u32_at(b, 4) != Some(t) {
        return Err(None);
    }
    if got == 3 {
        let text = &b[8..b.len().min(8 + 512)];
        return Err(Some(String::from_utf8_lossy(text).into_owned()));
    }
    if got != action {
        return Err(None);
    }
    Ok(())
}

fn same<T: PartialEq + std::fmt::Debug>(
    got: &Result<T, TrackerError>,
    want: &Result<T, Option<String>>,
) {
    match (got, want) {
        (Ok(g), Ok(w)) => assert_eq!(g, w),
        (Err(TrackerError::Failure(g)), Err(Some(w))) => assert_eq!(g, w),
        (Err(TrackerError::Malformed(_)), Err(None)) => {}
        _ => panic!("parser says {got:?}, the layout says {want:?}"),
    }
}

fn announce_model(b: &[u8], t: u32, v6: bool) -> Result<AnnounceResponse, Option<String>> {
    header(b, t, 1)?;
    let (interval, leechers, seeders) = (
        u32_at(b, 8).ok_or(None)?,
        u32_at(b, 12).ok_or(None)?,
        u32_at(b, 16).ok_or(None)?,
    );
    let size = if v6 { 18 } else { 6 };
    let peers: Vec<SocketAddr> = b[20..]
        .chunks_exact(size)
        .flat_map(|c| decode_compact(c, v6).unwrap_or_default())
        .filter(|p| p.port() != 0)
        .take(MAX_PEERS)
        .collect();
    Ok(AnnounceResponse {
        interval,
        min_interval: None,
        seeders: Some(seeders),
        leechers: Some(leechers),
        peers,
        warning: None,
    })
}

pub fn tracker_udp(data: &[u8]) {
    let t = u32_at(data, 4).unwrap_or(0);
    for t in [t, t.wrapping_add(1)] {
        let connect = udp_parse_connect(data, t);
        let want = header(data, t, 0).and_then(|()| {
            let id = data.get(8..16).ok_or(None)?;
            Ok(u64::from_be_bytes(id.try_into().map_err(|_| None)?))
        });
        same(&connect, &want);
        if let Ok(id) = connect {
            assert_eq!(udp_parse_connect(&encode::udp_connect(t, id), t), Ok(id));
        }

        for v6 in [false, true] {
            let r = udp_parse_announce(data, t, v6);
            same(&r, &announce_model(data, t, v6));
            if let Ok(r) = r {
                check_peers(&r.peers);
                assert!(r.peers.iter().all(|p| p.is_ipv6() == v6));
                let again = udp_parse_announce(&encode::udp_announce(t, &r), t, v6);
                assert_eq!(again, Ok(r));
            }
        }

        let scrape = udp_parse_scrape(data, t);
        let want = header(data, t, 2).and_then(|()| {
            Ok(ScrapeStats {
                seeders: u32_at(data, 8).ok_or(None)?,
                completed: u32_at(data, 12).ok_or(None)?,
                leechers: u32_at(data, 16).ok_or(None)?,
            })
        });
        same(&scrape, &want);
        match scrape {
            Ok(s) => assert_eq!(udp_parse_scrape(&encode::udp_scrape(t, &s), t), Ok(s)),
            Err(TrackerError::Failure(m)) if m.len() <= 512 => assert_eq!(
                udp_parse_scrape(&encode::udp_error(t, &m), t),
                Err(TrackerError::Failure(m))
            ),
            Err(_) => {}
        }
    }
}
