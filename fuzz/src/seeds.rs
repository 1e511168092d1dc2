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
        "utp_packet" => {
            let header = |kind, seq| lodestone_utp::packet::Header {
                kind,
                conn_id: 0x1234,
                timestamp_us: 1_000_000,
                timestamp_diff_us: 25_000,
                wnd_size: 1 << 20,
                seq_nr: lodestone_utp::seq::Seq(seq),
                ack_nr: lodestone_utp::seq::Seq(41),
            };
            use lodestone_utp::packet::Kind;
            let mut syn = Vec::new();
            header(Kind::Syn, 1).encode(None, &mut syn);
            let mut state = Vec::new();
            header(Kind::State, 7).encode(Some(&[0b101, 0, 0, 0x80]), &mut state);
            let mut data = Vec::new();
            header(Kind::Data, 65535).encode(Some(&[1, 0, 0, 0, 0, 0, 0, 2]), &mut data);
            data.extend_from_slice(b"hello, uTP");
            vec![
                ("syn", syn),
                ("state-sack", state),
                ("data-sack-wrap", data),
            ]
        }
        "utp_endpoint" => {
            // connect to peer 0 and send, answer its SYN with a STATE built
            // from what it sent, write, step to deadlines, a SYN from peer 1
            // and its follow-up, raw junk, a read and a close.
            let connect_and_write = vec![
                0x07, 0x0f, // connect to peer 0, drain
                0x03, 0x02, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 100, // STATE answering the SYN
                0x08, 0, 0x10, 0x00, // write 4096 bytes
                0x06, 0x06, 0x06, // deadlines
                0x03, 0x02, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 200, // ack
                0x05, 0x03, 0xe8, // one second
                0x0b, 0, // close
                0x06, 0x06,
            ];
            let incoming = vec![
                0x14, 0x04, 0x33, 0x33, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, // SYN from peer 1
                0x1f, 0x11, 0x00, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 4, 0xaa,
                0xbb, // DATA, 32 bytes
                0x0a, 0, // read
                0x20, 5, 1, 2, 3, 4, 5, // junk from peer 2
                0x05, 0xff, 0xff, // 65 s
            ];
            vec![
                ("connect-and-write", connect_and_write),
                ("incoming", incoming),
            ]
        }
        _ => Vec::new(),
    }
}
