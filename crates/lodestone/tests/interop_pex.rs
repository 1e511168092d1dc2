//! Peer exchange (BEP 11) with libtorrent, both ways, and from aria2. The
//! last peer never has another way to learn the seeder than the middle
//! peer's ut_pex message.
mod common;

use std::time::Duration;

use common::{
    bin, create_torrent, free_port, interop_script, require_libtorrent, spawn_seeder, Child,
};
use lodestone::payload;

fn fixture(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = dir.join("src");
    payload::write_file(&src.join("p.bin"), "p.bin", 8 << 20, "pex").unwrap();
    let torrent = dir.join("p.torrent");
    create_torrent(&src.join("p.bin"), &torrent, &["--piece-size", "64K"]);
    (src, torrent)
}

/// S (Lodestone seeder) <- B (libtorrent, knows S) <- C (Lodestone, knows
/// only B): C must reach S through B's peer exchange.
#[test]
fn lodestone_learns_a_seeder_from_libtorrent_pex() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    // S speaks no PEX: otherwise B tells S about C, S dials C first, and
    // C never needs B's word about S (a race CI once lost).
    let (_s, seeder) = spawn_seeder(&torrent, &src, &["--no-pex"]);
    let b_addr = format!("127.0.0.1:{}", free_port());
    let mut b = Child::spawn(
        interop_script("lt_peer.py")
            // Slow, so B is still a leecher (libtorrent's PEX is for leechers).
            .args([
                "leech",
                "--timeout",
                "60",
                "--download-limit",
                "1000000",
                "--listen",
                &b_addr,
                "--peer",
                &seeder,
            ])
            .arg("--torrent")
            .arg(&torrent)
            .arg("--save")
            .arg(dir.path().join("b")),
    );
    b.wait_for_line("READY", Duration::from_secs(30));
    let listen = format!("127.0.0.1:{}", free_port());
    lodestone_reaches_seeder_by_pex(&b_addr, &listen, dir.path(), &src, &torrent, &seeder);
}

/// C, a slow Lodestone leecher (still downloading when the middle peer's
/// PEX message comes) that knows only `middle`, downloads into `dir/c`:
/// it must connect to `seeder` as a PEX peer and get the content.
fn lodestone_reaches_seeder_by_pex(
    middle: &str,
    listen: &str,
    dir: &std::path::Path,
    src: &std::path::Path,
    torrent: &std::path::Path,
    seeder: &str,
) {
    let o = Child::spawn(
        bin()
            .args(["get", "--json", "--download-limit", "1M", "--peer", middle])
            .args(["--listen", listen, "-o"])
            .arg(dir.join("c"))
            .arg(torrent),
    )
    .finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    let learned = text.lines().any(|l| {
        l.contains("\"peer_connected\"")
            && l.contains("\"source\":\"pex\"")
            && l.contains(&format!("\"addr\":\"{seeder}\""))
    });
    assert!(learned, "C never reached the seeder as a PEX peer:\n{text}");
    assert_eq!(
        std::fs::read(src.join("p.bin")).unwrap(),
        std::fs::read(dir.join("c/p.bin")).unwrap()
    );
}

/// S (libtorrent seeder) <- B (Lodestone, knows S) <- C (libtorrent, knows
/// only B): libtorrent must learn S from our ut_pex.
#[test]
fn libtorrent_learns_a_seeder_from_lodestone_pex() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let s_addr = format!("127.0.0.1:{}", free_port());
    let mut s = Child::spawn(
        interop_script("lt_peer.py")
            // S never dials: C can reach it only by learning it from B.
            .args([
                "seed",
                "--no-outgoing",
                "--duration",
                "90",
                "--listen",
                &s_addr,
            ])
            .arg("--torrent")
            .arg(&torrent)
            .arg("--content-dir")
            .arg(&src),
    );
    s.wait_for_line("READY", Duration::from_secs(30));
    let b_addr = format!("127.0.0.1:{}", free_port());
    // B downloads slowly, so it is still a leecher in the swarm when C comes.
    let _b = Child::spawn(
        bin()
            .args([
                "get",
                "--download-limit",
                "1M",
                "--seed-time",
                "60",
                "--peer",
                &s_addr,
                "--listen",
                &b_addr,
                "-o",
            ])
            .arg(dir.path().join("b"))
            .arg(&torrent),
    );
    std::thread::sleep(Duration::from_secs(1));
    let o = Child::spawn(
        interop_script("lt_peer.py")
            .args([
                "leech",
                "--timeout",
                "60",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--peer",
                &b_addr,
            ])
            .arg("--torrent")
            .arg(&torrent)
            .arg("--save")
            .arg(dir.path().join("c")),
    )
    .finish(Duration::from_secs(90));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    let result: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let sources = &result["peers"][&s_addr];
    assert!(
        sources
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "pex")),
        "libtorrent did not learn the seeder through PEX: {result}"
    );
}

/// S (Lodestone seeder, 127.0.0.1, announced in a DHT of Lodestone nodes)
/// <- A (aria2 on 127.0.0.2, finds and dials S through that DHT) <- C
/// (Lodestone on 127.0.0.3, knows only A): C must reach S through aria2's
/// ut_pex. aria2 only lists peers it dialed in the last 60 s and never one
/// with the recipient's IP, hence the three addresses and the timing.
#[test]
fn lodestone_learns_a_seeder_from_aria2_pex() {
    if !common::require_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let base = common::port_block(12);
    let router = format!("127.0.0.1:{base}");
    let _nodes = common::lodestone_dht_nodes(base, 8, 150);
    let seeder = format!("127.0.0.1:{}", base + 8);
    let mut s = Child::spawn(
        bin()
            .args(["seed", "--json", "--seed-time", "150", "--listen", &seeder])
            .args(["--bootstrap", &router])
            .arg(&torrent)
            .arg(&src),
    );
    // (One wait per child: S's stdout is watched below for aria2.)
    std::thread::sleep(Duration::from_secs(1));
    let a_port = base + 9;
    let _a = Child::spawn(
        std::process::Command::new("aria2c")
            .args([
                "--interface=127.0.0.2",
                "--enable-dht=true",
                "--enable-dht6=false",
                "--disable-ipv6=true",
                &format!("--listen-port={a_port}"),
                &format!("--dht-listen-port={}", base + 10),
                &format!("--dht-entry-point={router}"),
                &format!("--dht-file-path={}", dir.path().join("dht.dat").display()),
                "--enable-peer-exchange=true",
                "--bt-enable-lpd=false",
                // Slow, so A is still downloading (and S still fresh to it).
                "--max-download-limit=300K",
                "--seed-time=0",
                "--file-allocation=none",
                "--console-log-level=warn",
                "--summary-interval=0",
                "--dir",
            ])
            .arg(dir.path().join("a"))
            .arg(&torrent),
    );
    // Once aria2 has dialed S (found in the DHT), C connects to aria2.
    s.wait_for_line("\"addr\":\"127.0.0.2:", Duration::from_secs(90));
    lodestone_reaches_seeder_by_pex(
        &format!("127.0.0.2:{a_port}"),
        &format!("127.0.0.3:{}", base + 11),
        dir.path(),
        &src,
        &torrent,
        &seeder,
    );
}
