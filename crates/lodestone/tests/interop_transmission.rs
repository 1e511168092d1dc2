//! Transfers with Transmission 3.00 (`transmission-cli`). Transmission
//! refuses loopback peers, so each test builds two network namespaces joined
//! by a veth pair (10.78.0.1 and 10.78.0.2, no route anywhere else) and
//! removes them afterwards. Needs root, `ip` and `transmission-cli`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    bin_path, create_torrent, transmission_cli, transmission_config, Child, NetnsPair, NS_A as A,
    NS_B as B,
};
use lodestone::payload;

fn available() -> bool {
    common::require_netns() && common::require_transmission()
}

fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    payload::write_multi(&src, "multi", 3 << 20, 256 << 10, "0").unwrap();
    let t = dir.join("multi.torrent");
    create_torrent(&src.join("multi"), &t, &["--piece-size", "256K"]);
    (src, t)
}

/// Non-empty files match (Transmission 3.00 does not create empty files).
fn assert_same_nonempty(src: &Path, dst: &Path) {
    for (rel, size) in payload::multi_layout(3 << 20, 256 << 10) {
        let a = std::fs::read(src.join(rel)).unwrap();
        if size == 0 {
            continue;
        }
        let b = std::fs::read(dst.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(a == b, "{rel} differs");
    }
}

/// One Transmission test at a time: they are slow to start and sensitive
/// to a loaded CPU (the DHT one most: Transmission paces its DHT start-up).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn info_hash(torrent: &Path) -> String {
    let o = Command::new(bin_path())
        .args(["info", "--json"])
        .arg(torrent)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    j["info_hash_v1"].as_str().unwrap().to_owned()
}

#[test]
fn download_from_transmission() {
    if !available() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let net = NetnsPair::new("d");
    let cfg = transmission_config(dir.path(), 51413, false, false, &[]);
    let mut tr = Child::spawn(&mut transmission_cli(&net, &cfg, &src, &torrent));
    // Transmission verifies its files first and serves only after that.
    tr.wait_for_line("Seeding", Duration::from_secs(60));
    let out = dir.path().join("dl");
    let o = Child::spawn(
        net.exec(&net.a, &bin_path())
            .args(["get", "--json", "-o"])
            .arg(&out)
            .arg(&torrent)
            .args(["--peer", &format!("{B}:51413")]),
    )
    .finish(Duration::from_secs(120));
    let stdout = common::success_stdout(&o);
    let client = format!("\"client\":\"{}\"", common::transmission_client_hint());
    assert!(stdout.contains(&client), "no {client}: {stdout}");
    assert_same_nonempty(&src.join("multi"), &out.join("multi"));
    assert!(
        out.join("multi/sub/deeper/empty.bin").exists(),
        "we create empty files"
    );
}

#[test]
fn seed_to_transmission() {
    if !available() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let net = NetnsPair::new("s");
    let cfg = transmission_config(dir.path(), 51414, true, false, &[]);
    let out = dir.path().join("dl");
    let tr = Child::spawn(&mut transmission_cli(&net, &cfg, &out, &torrent));
    // Transmission knows no peers: our seeder dials it.
    let _seeder = Child::spawn(
        net.exec(&net.a, &bin_path())
            .args([
                "seed",
                "--seed-time",
                "120",
                "--listen",
                &format!("{A}:27050"),
            ])
            .args(["--peer", &format!("{B}:51414")])
            .arg(&torrent)
            .arg(&src),
    );
    // With ratio limit 0, transmission-cli exits 0 once it has everything.
    common::transmission_done(tr, Duration::from_secs(150));
    assert_same_nonempty(&src.join("multi"), &out.join("multi"));
}

/// A DHT made only of Lodestone nodes (in one namespace) serves
/// Transmission (in the other): from a bare magnet it finds a Lodestone
/// seeder announced there and gets the metadata and the content from it.
/// Transmission searches only once it has at least 4 good nodes and 8 in
/// all, and waits 20-50 s before its first search.
#[test]
fn transmission_finds_a_seeder_through_a_lodestone_dht() {
    if !available() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let net = NetnsPair::new("t");
    let router = format!("{A}:26000");
    let _nodes = common::dht_nodes_with(|| net.exec(&net.a, &bin_path()), A, 26000, 14, 330);
    let mut seeder = Child::spawn(
        net.exec(&net.a, &bin_path())
            .args([
                "seed",
                "--json",
                "--seed-time",
                "330",
                "--listen",
                &format!("{A}:27060"),
            ])
            .args(["--bootstrap", &router])
            .arg(&torrent)
            .arg(&src),
    );
    seeder.wait_for_line("\"started\"", Duration::from_secs(30));
    let boot: Vec<String> = (0..8).map(|i| format!("{A}:{}", 26000 + i)).collect();
    let cfg = transmission_config(dir.path(), 51420, true, false, &boot);
    let out = dir.path().join("dl");
    // A bare magnet: Transmission finds the seeder in our DHT and takes the
    // metadata (BEP 9) from it too.
    let tr = Child::spawn(&mut transmission_cli(
        &net,
        &cfg,
        &out,
        format!("magnet:?xt=urn:btih:{}", info_hash(&torrent)),
    ));
    // Measured here: 47-68 s. Transmission waits 20-50 s before its first
    // DHT search and needs 8 nodes first; a loaded CI machine is slower.
    common::transmission_done(tr, Duration::from_secs(300));
    assert_same_nonempty(&src.join("multi"), &out.join("multi"));
}

/// The reverse: Transmission seeds (one namespace), announced only in a
/// DHT of Lodestone nodes (the other); `lodestone get` with a bare magnet
/// finds it there and takes the metadata and the content from it.
#[test]
fn bare_magnet_from_a_transmission_seeder_through_a_lodestone_dht() {
    if !available() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let ih = info_hash(&torrent);
    let net = NetnsPair::new("m");
    let _nodes = common::dht_nodes_with(|| net.exec(&net.a, &bin_path()), A, 26100, 14, 330);
    let boot: Vec<String> = (0..8).map(|i| format!("{A}:{}", 26100 + i)).collect();
    let cfg = transmission_config(dir.path(), 51430, false, false, &boot);
    let mut tr = Child::spawn(&mut transmission_cli(&net, &cfg, &src, &torrent));
    tr.wait_for_line("Seeding", Duration::from_secs(60));
    let out = dir.path().join("dl");
    let o = Child::spawn(
        net.exec(&net.a, &bin_path())
            .args(["get", "--json", &format!("magnet:?xt=urn:btih:{ih}"), "-o"])
            .arg(&out)
            // No --listen: we announce nothing, so Transmission cannot
            // dial us first; the seeder must come from our own lookup.
            .args(["--bootstrap", &format!("{A}:26103")]),
    )
    // Transmission announces once its own DHT is up (20-60 s here).
    .finish(Duration::from_secs(300));
    let stdout = common::success_stdout(&o);
    assert!(stdout.contains("\"event\":\"metadata\""), "{stdout}");
    let client = format!("\"client\":\"{}\"", common::transmission_client_hint());
    assert!(stdout.contains(&client), "no {client}: {stdout}");
    assert!(stdout.contains("\"source\":\"dht\""), "{stdout}");
    assert_same_nonempty(&src.join("multi"), &out.join("multi"));
}
