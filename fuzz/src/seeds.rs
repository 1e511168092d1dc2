//! Seed inputs for the targets whose corpus started here, made by our own
//! encoders: `cargo test --test replay -- --ignored write_seeds` writes
//! them as `corpus/<target>/seed-<name>`, and the replay runs them too.

use std::net::SocketAddr;

use lodestone_core::InfoHash;
use lodestone_wire::extended::{ExtendedHandshake, UT_METADATA, UT_PEX};
use lodestone_wire::lpd::{Announce, GROUP_V4, GROUP_V6};
use lodestone_wire::metadata::MetadataMessage;
use lodestone_wire::pex::{PexFlags, PexMessage};
use lodestone_wire::tracker::{AnnounceResponse, ScrapeStats};

use crate::encode;
use crate::peer_extension::{first_handshake, record};
use crate::tracker_http::SCRAPE_HASH;

fn v4(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6881 + i))
}

fn v6(i: u16) -> SocketAddr {
    SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 51413 - i))
}

fn answer(peers: Vec<SocketAddr>) -> AnnounceResponse {
    AnnounceResponse {
        interval: 1800,
        min_interval: Some(900),
        seeders: Some(5),
        leechers: Some(12),
        peers,
        warning: None,
    }
}

/// `(name, bytes)` for each seed of `target`; empty for the older targets,
/// whose seeds are files only.
pub fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "lpd" => {
            let one = Announce {
                port: 6881,
                info_hashes: vec![InfoHash([0xab; 20])],
                cookie: None,
            };
            let many = Announce {
                port: 51413,
                info_hashes: (0..16).map(|i| InfoHash([i; 20])).collect(),
                cookie: Some("c00k1e".into()),
            };
            vec![
                ("one-v4", one.encode(GROUP_V4)),
                ("sixteen-cookie-v6", many.encode(GROUP_V6)),
            ]
        }
        "tracker_http" => {
            let mut warned = answer((0..3).map(v4).chain((0..2).map(v6)).collect());
            warned.warning = Some("slow down".into());
            let stats = ScrapeStats {
                seeders: 5,
                leechers: 10,
                completed: 50,
            };
            vec![
                ("announce-v4", encode::http_announce(&answer((0..4).map(v4).collect()))),
                ("announce-v4-v6-warning", encode::http_announce(&warned)),
                (
                    "announce-dict-peers",
                    b"d8:intervali60e5:peersld2:ip9:127.0.0.27:peer id20:xxxxxxxxxxxxxxxxxxxx4:porti7000eed2:ip3:::14:porti7001eeee"
                        .to_vec(),
                ),
                ("scrape", encode::http_scrape(&SCRAPE_HASH, &stats)),
                ("failure", encode::http_failure("torrent not registered")),
            ]
        }
        "tracker_udp" => {
            let t = 0x1234_5678;
            let stats = ScrapeStats {
                seeders: 3,
                leechers: 4,
                completed: 9,
            };
            vec![
                ("connect", encode::udp_connect(t, 0x0102_0304_0506_0708)),
                (
                    "announce-v4",
                    encode::udp_announce(t, &answer((0..5).map(v4).collect())),
                ),
                (
                    "announce-v6",
                    encode::udp_announce(t, &answer((0..3).map(v6).collect())),
                ),
                ("scrape", encode::udp_scrape(t, &stats)),
                ("error", encode::udp_error(t, "unknown torrent")),
            ]
        }
        "peer_extension" => {
            let pex = PexMessage {
                added: vec![
                    (v4(1), PexFlags(PexFlags::SEED | PexFlags::ENCRYPTION)),
                    (v4(2), PexFlags(0)),
                    (v6(1), PexFlags(PexFlags::REACHABLE)),
                ],
                dropped: vec![v4(3), v6(2)],
                truncated: false,
            };
            let full = PexMessage {
                added: (0..50).map(|i| (v4(i), PexFlags(0))).collect(),
                dropped: (50..100).map(v4).collect(),
                truncated: false,
            };
            let mut no_pex = first_handshake();
            no_pex.extensions.insert(UT_PEX.into(), 0);
            let mut moved = ExtendedHandshake {
                your_ip: Some("192.0.2.1".parse().expect("an address")),
                ipv6: Some("2001:db8::1".parse().expect("an address")),
                upload_only: true,
                ..Default::default()
            };
            moved.extensions.insert(UT_PEX.into(), 9);
            moved.extensions.insert(UT_METADATA.into(), 0);
            let request = MetadataMessage::Request { piece: 1 }.encode();
            let mut mixed = record(2, &pex.encode());
            mixed.extend(record(0, &no_pex.encode()));
            mixed.extend(record(1, &request));
            mixed.extend(record(0, &moved.encode()));
            mixed.extend(record(2, &full.encode()));
            mixed.extend(record(9, b"d1:xi1ee"));
            vec![
                ("pex", record(2, &pex.encode())),
                ("pex-full", record(2, &full.encode())),
                ("handshake-then-pex", mixed),
            ]
        }
        _ => Vec::new(),
    }
}
