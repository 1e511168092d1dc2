//! Local Peer Discovery (BEP 14) with libtorrent between two network
//! namespaces joined by a veth pair: no DHT, no peer addresses, only the
//! multicast announces. Both directions.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    create_torrent, repo_root, require_libtorrent, require_netns, Child, NetnsPair, NS_A, NS_B,
};
use lodestone::payload;

fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    payload::write_file(&src.join("l.bin"), "l.bin", 4 << 20, "lpd").unwrap();
    let torrent = dir.join("l.torrent");
    create_torrent(&src.join("l.bin"), &torrent, &["--piece-size", "64K"]);
    (src, torrent)
}

fn lt_peer(net: &NetnsPair, ns: &str) -> Command {
    let mut c = net.exec(ns, Path::new("/usr/bin/python3"));
    c.arg(repo_root().join("tests/interop/lt_peer.py"));
    c
}

fn lodestone(net: &NetnsPair, ns: &str) -> Command {
    net.exec(ns, Path::new(env!("CARGO_BIN_EXE_lodestone")))
}

#[test]
fn lodestone_finds_a_libtorrent_seeder_by_lpd() {
    if !require_netns() || !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let net = NetnsPair::new("l1");
    let mut seeder = Child::spawn(
        lt_peer(&net, &net.a)
            // It never dials: we must hear its announce and dial it.
            .args([
                "seed",
                "--lsd",
                "--no-outgoing",
                "--duration",
                "60",
                "--listen",
                &format!("{NS_A}:27900"),
            ])
            .arg("--torrent")
            .arg(&torrent)
            .arg("--content-dir")
            .arg(&src),
    );
    seeder.wait_for_line("READY", Duration::from_secs(30));
    let out = dir.path().join("dl");
    let o = Child::spawn(
        lodestone(&net, &net.b)
            .args([
                "get",
                "--json",
                "--lpd",
                "--listen",
                &format!("{NS_B}:27901"),
                "-o",
            ])
            .arg(&out)
            .arg(&torrent),
    )
    .finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("\"source\":\"lpd\""), "{text}");
    assert_eq!(
        std::fs::read(src.join("l.bin")).unwrap(),
        std::fs::read(out.join("l.bin")).unwrap()
    );
}

#[test]
fn libtorrent_finds_a_lodestone_seeder_by_lpd() {
    if !require_netns() || !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let net = NetnsPair::new("l2");
    let mut seeder = Child::spawn(
        lodestone(&net, &net.a)
            .args([
                "seed",
                "--json",
                "--lpd",
                "--seed-time",
                "60",
                "--listen",
                &format!("{NS_A}:27902"),
            ])
            .arg(&torrent)
            .arg(&src),
    );
    seeder.wait_for_line("\"started\"", Duration::from_secs(30));
    let out = dir.path().join("dl");
    let o = Child::spawn(
        lt_peer(&net, &net.b)
            .args([
                "leech",
                "--lsd",
                "--timeout",
                "60",
                "--listen",
                &format!("{NS_B}:27903"),
            ])
            .arg("--torrent")
            .arg(&torrent)
            .arg("--save")
            .arg(&out),
    )
    .finish(Duration::from_secs(90));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert_eq!(
        std::fs::read(src.join("l.bin")).unwrap(),
        std::fs::read(out.join("l.bin")).unwrap()
    );
}
