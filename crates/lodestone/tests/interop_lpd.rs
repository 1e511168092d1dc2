//! Local Peer Discovery (BEP 14) with libtorrent and with aria2 between two
//! network namespaces joined by a veth pair: no DHT, no peer addresses,
//! only the multicast announces. Both directions with each.
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
    let _seeder = lt_lpd_seeder(&net, &format!("{NS_A}:27900"), &src, &torrent);
    let text = lpd_leech(&net, &format!("{NS_B}:27901"), dir.path(), &src, &torrent);
    assert!(text.contains("\"source\":\"lpd\""), "{text}");
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
    lt_lpd_leech(
        &net,
        &format!("{NS_B}:27903"),
        dir.path(),
        &src,
        &torrent,
        "l.bin",
    );
}

/// A libtorrent leecher in namespace B with LPD only (listening on
/// `listen`) fetches `torrent` into `dir/dl`; its `name` must equal the
/// source's.
fn lt_lpd_leech(net: &NetnsPair, listen: &str, dir: &Path, src: &Path, torrent: &Path, name: &str) {
    let out = dir.join("dl");
    let o = Child::spawn(
        lt_peer(net, &net.b)
            .args(["leech", "--lsd", "--timeout", "60", "--listen", listen])
            .arg("--torrent")
            .arg(torrent)
            .arg("--save")
            .arg(&out),
    )
    .finish(Duration::from_secs(90));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert_eq!(
        std::fs::read(src.join(name)).unwrap(),
        std::fs::read(out.join(name)).unwrap()
    );
}

/// aria2 in a namespace: LPD on, no DHT, no PEX, nothing else to find peers.
fn aria2(net: &NetnsPair, ns: &str, port: u16, extra: &[&str]) -> Command {
    let mut c = net.exec(ns, Path::new("aria2c"));
    c.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--enable-peer-exchange=false",
        "--bt-enable-lpd=true",
        "--disable-ipv6=true",
        "--file-allocation=none",
        "--console-log-level=warn",
        "--summary-interval=0",
        &format!("--listen-port={port}"),
    ])
    .args(extra);
    c
}

#[test]
fn lodestone_finds_an_aria2_seeder_by_lpd() {
    if !require_netns() || !common::require_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let net = NetnsPair::new("l3");
    let _seeder = Child::spawn(
        aria2(
            &net,
            &net.a,
            27904,
            &[
                "--seed-ratio=0.0",
                "--seed-time=2",
                "--check-integrity=true",
                "--dir",
            ],
        )
        .arg(&src)
        .arg(&torrent),
    );
    let text = lpd_leech(&net, &format!("{NS_B}:27905"), dir.path(), &src, &torrent);
    assert!(text.contains("\"source\":\"lpd\""), "{text}");
    assert!(text.contains("\"client\":\"aria2/"), "{text}");
}

#[test]
fn aria2_finds_a_lodestone_seeder_by_lpd() {
    if !require_netns() || !common::require_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let net = NetnsPair::new("l4");
    let mut seeder = Child::spawn(
        lodestone(&net, &net.a)
            .args(["seed", "--json", "--lpd", "--seed-time", "90"])
            .args(["--listen", &format!("{NS_A}:27906")])
            .arg(&torrent)
            .arg(&src),
    );
    seeder.wait_for_line("\"started\"", Duration::from_secs(30));
    let out = dir.path().join("dl");
    let o = Child::spawn(
        aria2(
            &net,
            &net.b,
            27907,
            &["--seed-time=0", "--bt-stop-timeout=80", "--dir"],
        )
        .arg(&out)
        .arg(&torrent),
    )
    .finish(Duration::from_secs(100));
    assert!(
        o.status.success(),
        "aria2: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(src.join("l.bin")).unwrap(),
        std::fs::read(out.join("l.bin")).unwrap()
    );
}

/// BEP 14 over IPv6 (ff15::efc0:988f): both ends listen on one IPv6
/// address only, so the IPv4 announces lead nowhere and only the IPv6 ones
/// bring them together.
#[test]
fn lodestone_finds_a_lodestone_seeder_by_ipv6_lpd() {
    if !require_netns() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let net = NetnsPair::new("l5");
    let mut seeder = Child::spawn(
        lodestone(&net, &net.a)
            .args(["seed", "--json", "--lpd", "--seed-time", "60"])
            .args(["--listen", &format!("[{}]:27908", common::NS6_A)])
            .arg(&torrent)
            .arg(&src),
    );
    seeder.wait_for_line("\"started\"", Duration::from_secs(30));
    let text = lpd_leech(
        &net,
        &format!("[{}]:27909", common::NS6_B),
        dir.path(),
        &src,
        &torrent,
    );
    let connected = text
        .lines()
        .find(|l| l.contains("\"event\":\"peer_connected\""))
        .unwrap_or_else(|| panic!("no peer connected: {text}"));
    // Both listen on one IPv6 address only and know of each other only
    // through LPD: whichever dialed first heard the other's IPv6 announce.
    assert!(
        connected.contains("\"source\":\"lpd\"") || connected.contains("\"source\":\"incoming\""),
        "{connected}"
    );
    assert!(
        connected.contains("\"addr\":\"[fd78::"),
        "not an IPv6 peer: {connected}"
    );
    assert!(text.contains("over IPv4 and IPv6"), "{text}");
}

/// IPv6 LPD with libtorrent: its seeder listens on IPv6 only and never
/// dials; Lodestone hears its ff15::efc0:988f announce and fetches.
#[test]
fn lodestone_finds_a_libtorrent_seeder_by_ipv6_lpd() {
    if !require_netns() || !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let net = NetnsPair::new("l6");
    let _seeder = lt_lpd_seeder(&net, &format!("[{}]:27910", common::NS6_A), &src, &torrent);
    let text = lpd_leech(
        &net,
        &format!("[{}]:27911", common::NS6_B),
        dir.path(),
        &src,
        &torrent,
    );
    let connected = text
        .lines()
        .find(|l| l.contains("\"event\":\"peer_connected\""))
        .unwrap_or_else(|| panic!("no peer connected: {text}"));
    assert!(connected.contains("\"source\":\"lpd\""), "{connected}");
    assert!(connected.contains("\"addr\":\"["), "not IPv6: {connected}");
}

/// A libtorrent seeder in namespace a with LPD on, listening on `listen`,
/// ready. It never dials: a leecher must hear its announce and dial it.
fn lt_lpd_seeder(net: &NetnsPair, listen: &str, src: &Path, torrent: &Path) -> Child {
    let mut seeder = Child::spawn(
        lt_peer(net, &net.a)
            .args(["seed", "--lsd", "--no-outgoing", "--duration", "60"])
            .args(["--listen", listen])
            .arg("--torrent")
            .arg(torrent)
            .arg("--content-dir")
            .arg(src),
    );
    seeder.wait_for_line("READY", Duration::from_secs(30));
    seeder
}

/// `lodestone get --lpd` in namespace b, listening on `listen` and knowing
/// no peer: it must find the seeder by LPD. Checks that it finished and
/// that the content matches; returns its JSON output.
fn lpd_leech(net: &NetnsPair, listen: &str, dir: &Path, src: &Path, torrent: &Path) -> String {
    let out = dir.join("dl");
    let o = Child::spawn(
        lodestone(net, &net.b)
            .args(["get", "--json", "--lpd", "--listen", listen, "-o"])
            .arg(&out)
            .arg(torrent),
    )
    .finish(Duration::from_secs(90));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{text}");
    assert_eq!(
        std::fs::read(src.join("l.bin")).unwrap(),
        std::fs::read(out.join("l.bin")).unwrap()
    );
    text
}

/// A session seeding two torrents has one LPD service, announcing both
/// info hashes in one announce (BEP 14's several `Infohash:` headers):
/// a libtorrent leecher of the second finds it through it.
#[test]
fn libtorrent_finds_a_lodestone_session_by_its_shared_lpd_announce() {
    if !require_netns() || !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, first) = fixture(dir.path());
    payload::write_file(&src.join("m.bin"), "m.bin", 2 << 20, "lpd-2").unwrap();
    let second = dir.path().join("m.torrent");
    create_torrent(&src.join("m.bin"), &second, &["--piece-size", "64K"]);
    let net = NetnsPair::new("l7");
    // Listen to the group from the other namespace: the first announce
    // heard must name both torrents.
    let listener = Child::spawn(net.exec(&net.b, Path::new("/usr/bin/python3")).args([
        "-c",
        "import socket, struct, sys\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('', 6771))\n\
         s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, \
             struct.pack('4s4s', socket.inet_aton('239.192.152.143'), socket.inet_aton('0.0.0.0')))\n\
         s.settimeout(30)\n\
         print(s.recv(2000).decode(errors='replace'), flush=True)\n",
    ]));
    std::thread::sleep(Duration::from_millis(300));
    let mut seeder = Child::spawn(
        lodestone(&net, &net.a)
            .args(["seed", "--json", "--lpd", "--seed-time", "60"])
            .args(["--listen", &format!("{NS_A}:27912")])
            .arg(&first)
            .arg(&second)
            .arg(&src),
    );
    seeder.wait_for_line("\"all_seeding\"", Duration::from_secs(30));
    let heard = listener.finish(Duration::from_secs(40));
    let announce = String::from_utf8_lossy(&heard.stdout).to_lowercase();
    for t in [&first, &second] {
        let m = lodestone_core::Metainfo::from_bytes(&std::fs::read(t).unwrap()).unwrap();
        let hex = m.info_hashes.wire().to_hex();
        assert!(announce.contains(&hex), "{hex} not in {announce}");
    }
    lt_lpd_leech(
        &net,
        &format!("{NS_B}:27913"),
        dir.path(),
        &src,
        &second,
        "m.bin",
    );
}
