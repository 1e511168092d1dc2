//! A running `lodestone seed` re-announces itself in the DHT on its own:
//! its one DHT node is a stand-in in this test (a UDP socket on 127.0.0.1
//! that answers KRPC by hand and knows no peer), which records every
//! `announce_peer`. The rule itself (20 s while alone, ..., 5 minutes) is
//! tested on virtual time in `crates/sim/tests/dht_reannounce.rs`; this
//! checks that the engine's task follows it with no one asking.
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{bin, create_torrent, free_port, Child};
use lodestone::payload;
use lodestone_bencode::{DecodeOptions, Decoder, Encoder};

/// An `announce_peer` the stand-in node received.
#[derive(Debug)]
struct Announce {
    at: Instant,
    info_hash: Vec<u8>,
    port: Option<i64>,
    implied_port: Option<i64>,
}

/// Answer KRPC queries on `sock` until `deadline` or until `want`
/// announces of `ih` came: every query gets our id, get_peers a token and
/// no nodes or values (so the seeder stays alone in its DHT).
fn stand_in_node(sock: &UdpSocket, ih: &[u8], want: usize, deadline: Instant) -> Vec<Announce> {
    let id = [0x42u8; 20];
    let mut announces = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && announces.len() < want {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(v) = Decoder::new(&buf[..n], DecodeOptions::lenient()).decode_all() else {
            continue;
        };
        let Some(d) = v.as_dict() else { continue };
        let (Some(t), Some(q)) = (
            d.get(b"t").and_then(|v| v.as_bytes()),
            d.get(b"q").and_then(|v| v.as_bytes()),
        ) else {
            continue;
        };
        let a = d.get(b"a").and_then(|v| v.as_dict());
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out);
        e.begin_dict().bytes(b"r").begin_dict();
        e.bytes(b"id").bytes(&id);
        if q == b"get_peers" || q == b"find_node" {
            e.bytes(b"nodes").bytes(b"");
        }
        if q == b"get_peers" {
            e.bytes(b"token").bytes(b"tok");
        }
        e.end().bytes(b"t").bytes(t).bytes(b"y").bytes(b"r").end();
        let _ = sock.send_to(&out, from);
        if q == b"announce_peer" {
            let a = a.expect("announce_peer has arguments");
            let info_hash = a
                .get(b"info_hash")
                .and_then(|v| v.as_bytes())
                .unwrap_or(&[])
                .to_vec();
            if info_hash == ih {
                announces.push(Announce {
                    at: Instant::now(),
                    info_hash,
                    port: a.get(b"port").and_then(|v| v.as_int()),
                    implied_port: a.get(b"implied_port").and_then(|v| v.as_int()),
                });
            }
        }
    }
    announces
}

#[test]
fn a_seeder_reannounces_in_the_dht_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("r.bin");
    payload::write_file(&src, "r.bin", 256 << 10, "reannounce").unwrap();
    let torrent = dir.path().join("r.torrent");
    let ih_hex = create_torrent(&src, &torrent, &["--piece-size", "64K"]);
    let ih = lodestone_core::encoding::from_hex::<20>(&ih_hex).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let node: SocketAddr = sock.local_addr().unwrap();
    let port = free_port();
    let _seeder = Child::spawn(
        bin()
            .args(["seed", "--json", "--seed-time", "120"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--bootstrap", &node.to_string()])
            .arg(&torrent)
            .arg(&src),
    );
    // Round 0 at start, then (no peer found) the rule's 20 s after it ends.
    let announces = stand_in_node(&sock, &ih, 2, Instant::now() + Duration::from_secs(75));
    assert_eq!(
        announces.len(),
        2,
        "the seeder announced {} times in 75 s, not twice: {announces:?}",
        announces.len()
    );
    for a in &announces {
        assert_eq!(a.info_hash, ih);
        assert_eq!(a.port, Some(i64::from(port)), "{a:?}");
        assert_ne!(a.implied_port, Some(1), "{a:?}");
    }
    let gap = announces[1].at - announces[0].at;
    assert!(
        gap >= Duration::from_secs(19) && gap <= Duration::from_secs(50),
        "second announce {gap:?} after the first (the rule says 20 s after a round that found no peer)"
    );
}
