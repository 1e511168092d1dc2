//! Lodestone's DHT in a private DHT of libtorrent nodes on 127.0.0.1: it
//! finds a libtorrent seeder, libtorrent finds what Lodestone announces,
//! and libtorrent nodes take Lodestone nodes into their routing tables.
mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    bin, create_torrent, free_port, interop_script, lodestone_dht_nodes, lt_dht_swarm, port_block,
    require_libtorrent, Child,
};
use lodestone::payload;

#[test]
fn lodestone_and_libtorrent_share_a_dht() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_file(&src.join("d.bin"), "d.bin", 1 << 20, "dht").unwrap();
    let torrent = dir.path().join("d.torrent");
    let ih = create_torrent(&src.join("d.bin"), &torrent, &[]);

    let base = port_block(9);
    let seed_port = base + 8;
    let dump = dir.path().join("lt-tables.json");
    let mut swarm = Child::spawn(
        lt_dht_swarm(8, base, &torrent, &src)
            .arg("--dump")
            .arg(&dump),
    );
    swarm.wait_for_line("READY", Duration::from_secs(60));
    let boot = format!("127.0.0.1:{base}");

    // 3. A Lodestone node joins: it learns the libtorrent nodes, and they
    // keep it in their routing tables (read back from libtorrent itself).
    // It joins first, while the tables hold only the libtorrent nodes
    // (joining after the short-lived nodes of steps 1-2, one per retry, it
    // was once still missing after 25 s on a loaded CI machine).
    let our_addr = format!("127.0.0.1:{}", free_port());
    let mut node = Child::spawn(bin().args([
        "dht",
        "node",
        "--json",
        "--listen",
        &our_addr,
        "--bootstrap",
        &boot,
        "--status-every",
        "1",
        "--duration",
        "150",
    ]));
    node.wait_for_line("\"health\"", Duration::from_secs(10));

    // 1. Lodestone finds the libtorrent seeder (retry: its announce lands every 2 s).
    let mut found = false;
    for _ in 0..10 {
        let o = bin()
            .args([
                "dht",
                "get-peers",
                &ih,
                "--json",
                "--listen",
                "127.0.0.1:0",
                "--bootstrap",
                &boot,
                "--timeout",
                "10",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        if text.contains(&format!("\"addr\":\"127.0.0.1:{seed_port}\"")) {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        found,
        "lodestone dht get-peers did not find the libtorrent seeder"
    );

    // 2. Lodestone announces; libtorrent's dht_get_peers finds it.
    let fake = "0123456789abcdef0123456789abcdef01234567";
    let o = bin()
        .args([
            "dht",
            "announce",
            fake,
            "--port",
            "31337",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &boot,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Child::spawn(interop_script("lt_dht.py").args([
        "lookup",
        "--info-hash",
        fake,
        "--bootstrap",
        &format!("127.0.0.1:{}", base + 3),
        "--timeout",
        "30",
    ]))
    .finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("127.0.0.1:31337"),
        "libtorrent did not find our announce: {text}"
    );

    // 2b. BEP 51: libtorrent nodes hand our announced hash out as a sample.
    let o = bin()
        .args(["dht", "sample", "--json", "--listen", "127.0.0.1:0"])
        .args(["--bootstrap", &format!("127.0.0.1:{}", base + 3)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains(fake),
        "dht sample: {text}"
    );

    // 3 (end). Read the tables back.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let mut tables = String::new();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        tables = std::fs::read_to_string(&dump).unwrap_or_default();
        if tables.contains(&format!("\"{our_addr}\"")) {
            break;
        }
    }
    assert!(
        tables.contains(&format!("\"{our_addr}\"")),
        "our node {our_addr} is in no libtorrent routing table: {tables}"
    );
}

/// aria2 with its DHT (IPv4 only) joined through `router`, peers on
/// `port`; no LPD, no PEX: the DHT is its only way to find anyone.
fn aria2_in_dht(port: u16, dht_port: u16, router: &str, dir: &std::path::Path) -> Command {
    let mut c = Command::new("aria2c");
    c.args([
        "--enable-dht=true",
        "--enable-dht6=false",
        "--disable-ipv6=true",
        &format!("--listen-port={port}"),
        &format!("--dht-listen-port={dht_port}"),
        &format!("--dht-entry-point={router}"),
        &format!("--dht-file-path={}", dir.join("dht.dat").display()),
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--file-allocation=none",
        "--console-log-level=warn",
        "--summary-interval=0",
    ]);
    c
}

/// A DHT made only of Lodestone nodes serves aria2: from a bare magnet it
/// finds a Lodestone seeder announced there, gets the metadata and the
/// content from it.
#[test]
fn aria2_finds_a_seeder_through_a_lodestone_dht() {
    if !common::require_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_file(&src.join("a.bin"), "a.bin", 3 << 20, "aria2-dht").unwrap();
    let torrent = dir.path().join("a.torrent");
    let ih = create_torrent(&src.join("a.bin"), &torrent, &[]);

    let base = port_block(12);
    let router = format!("127.0.0.1:{base}");
    let _nodes = lodestone_dht_nodes(base, 8, 120);
    let seed_port = base + 8;
    let mut seeder = Child::spawn(&mut common::seed_command(
        &format!("127.0.0.1:{seed_port}"),
        &torrent,
        &src,
        &[],
    ));
    seeder.wait_for_line("\"started\"", Duration::from_secs(30));
    let mut announced = false;
    for _ in 0..10 {
        let o = bin()
            .args([
                "dht",
                "announce",
                &ih,
                "--port",
                &seed_port.to_string(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--bootstrap", &format!("127.0.0.1:{}", base + 3)])
            .output()
            .unwrap();
        if o.status.success() {
            announced = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(announced, "announce into the Lodestone DHT failed");

    let out = dir.path().join("dl");
    let o = Child::spawn(
        aria2_in_dht(base + 9, base + 10, &router, dir.path())
            .args([
                "--seed-time=0",
                "--bt-stop-timeout=90",
                "--bt-save-metadata=false",
                "--dir",
            ])
            .arg(&out)
            // Only the info hash: aria2 gets the metadata from our seeder (BEP 9).
            .arg(format!("magnet:?xt=urn:btih:{ih}")),
    )
    .finish(Duration::from_secs(120));
    assert!(
        o.status.success(),
        "aria2: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        std::fs::read(src.join("a.bin")).unwrap(),
        std::fs::read(out.join("a.bin")).unwrap()
    );
}

/// BEP 32 with libtorrent on [::1]: Lodestone announces over IPv6 and
/// libtorrent's lookup finds the IPv6 peer; our lookup walks libtorrent's
/// `nodes6`; a dual-stack `dht node` lands in libtorrent's IPv6 tables.
#[test]
fn lodestone_and_libtorrent_share_an_ipv6_dht() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = port_block(9);
    let dump = dir.path().join("lt6-tables.json");
    let mut swarm = Child::spawn(
        interop_script("lt_dht.py")
            .args(["swarm", "--ipv6", "--n", "8", "--base-port"])
            .arg(base.to_string())
            .args(["--duration", "120", "--ready-nodes", "4", "--dump"])
            .arg(&dump),
    );
    swarm.wait_for_line("READY", Duration::from_secs(60));
    let boot = |i: u16| format!("[::1]:{}", base + i);

    let ih = "00112233445566778899aabbccddeeff00112233";
    let o = bin()
        .args([
            "dht", "announce", ih, "--port", "4242", "--listen", "[::1]:0",
        ])
        // Not node 1: libtorrent's second node often keeps an empty table.
        .args(["--bootstrap", &boot(3)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = Child::spawn(interop_script("lt_dht.py").args([
        "lookup",
        "--info-hash",
        ih,
        "--bootstrap",
        &boot(4),
        "--timeout",
        "30",
    ]))
    .finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("::1:4242"),
        "libtorrent did not find it: {text}"
    );

    let o = bin()
        .args(["dht", "get-peers", ih, "--json", "--listen", "[::1]:0"])
        .args(["--bootstrap", &boot(6), "--timeout", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("\"addr\":\"[::1]:4242\""), "{text}");

    // A dual-stack node: its IPv6 half joins libtorrent's IPv6 DHT.
    let port = free_port();
    let _node = Child::spawn(bin().args([
        "dht",
        "node",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--listen6",
        &format!("[::1]:{port}"),
        "--bootstrap",
        &boot(0),
        "--duration",
        "40",
    ]));
    let want = format!("\"::1:{port}\"");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut tables = String::new();
    while std::time::Instant::now() < deadline && !tables.contains(&want) {
        std::thread::sleep(Duration::from_secs(1));
        tables = std::fs::read_to_string(&dump).unwrap_or_default();
    }
    assert!(
        tables.contains(&want),
        "[::1]:{port} in no libtorrent table: {tables}"
    );
}

/// The reverse of the test above: aria2 seeds, announced only in a DHT
/// of Lodestone nodes; `lodestone get` with a bare magnet finds it there,
/// takes the metadata from aria2 (BEP 9) and the content.
#[test]
fn bare_magnet_from_an_aria2_seeder_through_a_lodestone_dht() {
    if !common::require_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_file(&src.join("s.bin"), "s.bin", 3 << 20, "aria2-seed").unwrap();
    let torrent = dir.path().join("s.torrent");
    let ih = create_torrent(&src.join("s.bin"), &torrent, &["--piece-size", "64K"]);

    let base = port_block(11);
    let router = format!("127.0.0.1:{base}");
    let _nodes = lodestone_dht_nodes(base, 8, 150);
    std::thread::sleep(Duration::from_secs(2));
    let _seeder = Child::spawn(
        aria2_in_dht(base + 8, base + 9, &router, dir.path())
            .args([
                "--seed-ratio=0.0",
                "--seed-time=3",
                "--check-integrity=true",
                "--dir",
            ])
            .arg(&src)
            .arg(&torrent),
    );
    let out = dir.path().join("dl");
    let o = Child::spawn(
        bin()
            .args(["get", "--json", &format!("magnet:?xt=urn:btih:{ih}"), "-o"])
            .arg(&out)
            .args(["--bootstrap", &format!("127.0.0.1:{}", base + 4)])
            .args(["--listen", &format!("127.0.0.1:{}", base + 10)]),
    )
    .finish(Duration::from_secs(120));
    let text = common::success_stdout(&o);
    assert!(text.contains("\"event\":\"metadata\""), "{text}");
    assert!(
        text.contains("\"client\":\"aria2/"),
        "no aria2 peer named in: {text}"
    );
    // Either we found aria2 through the DHT, or it found our announce there
    // first and dialled us (it has no other way to know us), on the
    // connection that then carries the content too.
    let dialled_us = text.contains("\"source\":\"incoming\"") && text.contains("announced to");
    assert!(text.contains("\"source\":\"dht\"") || dialled_us, "{text}");
    assert_eq!(
        std::fs::read(src.join("s.bin")).unwrap(),
        std::fs::read(out.join("s.bin")).unwrap()
    );
}
