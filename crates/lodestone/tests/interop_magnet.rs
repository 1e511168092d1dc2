//! Magnet links with real clients: Lodestone fetches the metadata (BEP 9)
//! and the content from libtorrent found through a private libtorrent DHT;
//! libtorrent fetches both from a Lodestone seeder given only a magnet.
mod common;

use std::time::Duration;

use common::{
    bin, create_torrent, free_port, interop_script, lt_dht_swarm, port_block, require_libtorrent,
    spawn_seeder, Child,
};
use lodestone::payload;

fn fixture(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let src = dir.join("src");
    payload::write_multi(&src, "mag", 3 << 20, 64 << 10, "magnet").unwrap();
    let torrent = dir.join("mag.torrent");
    let ih = create_torrent(&src.join("mag"), &torrent, &["--piece-size", "64K"]);
    (src, torrent, ih)
}

fn same(src: &std::path::Path, dst: &std::path::Path) {
    for (rel, _) in payload::multi_layout(3 << 20, 64 << 10) {
        assert_eq!(
            std::fs::read(src.join(rel)).unwrap(),
            std::fs::read(dst.join(rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn bare_magnet_from_a_libtorrent_seeder_via_its_dht() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = fixture(dir.path());
    let base = port_block(9);
    let mut swarm = Child::spawn(&mut lt_dht_swarm(8, base, &torrent, &src));
    swarm.wait_for_line("READY", Duration::from_secs(60));
    let out = dir.path().join("dl");
    let o = Child::spawn(
        bin()
            .args(["get", "--json", &format!("magnet:?xt=urn:btih:{ih}"), "-o"])
            .arg(&out)
            .args([
                "--bootstrap",
                &format!("127.0.0.1:{base}"),
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
            ]),
    )
    .finish(Duration::from_secs(90));
    let text = common::success_stdout(&o);
    assert!(text.contains("\"event\":\"metadata\""), "{text}");
    let client = format!("\"client\":\"{}\"", common::libtorrent_client_hint());
    assert!(text.contains(&client), "no {client}: {text}");
    assert!(text.contains("\"source\":\"dht\""), "{text}");
    same(&src.join("mag"), &out.join("mag"));
}

#[test]
fn libtorrent_gets_metadata_and_content_from_a_lodestone_seeder() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = fixture(dir.path());
    let (_seeder, seeder_addr) = spawn_seeder(&torrent, &src, &[]);
    let out = dir.path().join("dl");
    let o = Child::spawn(
        interop_script("lt_peer.py")
            .args([
                "leech",
                "--timeout",
                "60",
                "--magnet",
                &format!("magnet:?xt=urn:btih:{ih}"),
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--peer",
                &seeder_addr,
            ])
            .arg("--save")
            .arg(&out),
    )
    .finish(Duration::from_secs(90));
    common::success_stdout(&o);
    same(&src.join("mag"), &out.join("mag"));
}

/// The reverse of the first test: a Lodestone seeder announced in a DHT
/// of Lodestone nodes; libtorrent, given the bare magnet and one of those
/// nodes, finds it there and takes the metadata and the content.
#[test]
fn libtorrent_finds_a_lodestone_seeder_through_a_lodestone_dht() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = fixture(dir.path());
    let base = port_block(10);
    let _nodes = common::lodestone_dht_nodes(base, 8, 120);
    let seeder_port = base + 8;
    let mut seeder = Child::spawn(
        bin()
            .args(["seed", "--json", "--seed-time", "120"])
            .args(["--listen", &format!("127.0.0.1:{seeder_port}")])
            .args(["--bootstrap", &format!("127.0.0.1:{base}")])
            .arg(&torrent)
            .arg(&src),
    );
    seeder.wait_for_line("\"started\"", Duration::from_secs(30));
    let out = dir.path().join("dl");
    let o = Child::spawn(
        interop_script("lt_peer.py")
            .args(["leech", "--timeout", "80"])
            .args(["--magnet", &format!("magnet:?xt=urn:btih:{ih}")])
            .args(["--listen", &format!("127.0.0.1:{}", base + 9)])
            .args(["--dht", &format!("127.0.0.1:{}", base + 5)])
            .arg("--save")
            .arg(&out),
    )
    .finish(Duration::from_secs(100));
    let text = common::success_stdout(&o);
    // lt_peer.py lists each peer with the sources libtorrent names.
    assert!(
        text.contains(&format!("\"127.0.0.1:{seeder_port}\": [\"dht\"]")),
        "libtorrent did not find our seeder by DHT: {text}"
    );
    same(&src.join("mag"), &out.join("mag"));
}
