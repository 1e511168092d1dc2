//! Downloads from and uploads to real clients over loopback TCP:
//! libtorrent-rasterbar (python3-libtorrent) and aria2. Content is compared
//! byte for byte (and the other client checks every piece hash itself).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    assert_same_tree, bin, create_torrent, free_port, interop_script, require_aria2,
    require_libtorrent, spawn_seeder, Child,
};
use lodestone::payload;

/// A single-file and a multi-file torrent (with an empty file) under `dir/src`.
fn fixtures(dir: &Path) -> Vec<(PathBuf, String)> {
    let src = dir.join("src");
    payload::write_file(&src.join("single.bin"), "single.bin", (6 << 20) + 123, "0").unwrap();
    payload::write_multi(&src, "multi", 4 << 20, 256 << 10, "0").unwrap();
    let mut out = Vec::new();
    for name in ["single.bin", "multi"] {
        let t = dir.join(format!("{name}.torrent"));
        create_torrent(&src.join(name), &t, &["--piece-size", "256K"]);
        out.push((t, name.to_owned()));
    }
    out
}

/// Run `lodestone get` and check its JSON summary.
/// A libtorrent leecher of `torrent` that dials `seeder` and saves into
/// `out`, with `extra` options; its output once it exits.
fn lt_leech(torrent: &Path, seeder: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    Child::spawn(
        interop_script("lt_peer.py")
            .args(["leech", "--timeout", "60", "--peer", seeder])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(extra)
            .arg("--torrent")
            .arg(torrent)
            .arg("--save")
            .arg(out),
    )
    .finish(Duration::from_secs(90))
}

fn lodestone_get(torrent: &Path, out: &Path, peer: &str, expect_bytes: u64) {
    let o = Child::spawn(
        bin()
            .args(["get", "--json", "-o"])
            .arg(out)
            .arg(torrent)
            .args(["--peer", peer]),
    )
    .finish(Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "lodestone get failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["bytes"], expect_bytes);
    assert!(summary["downloaded_bytes"].as_u64().unwrap() >= expect_bytes);
    let first = summary["first_byte_s"].as_f64().expect("first_byte_s");
    let done = summary["time_to_complete_s"]
        .as_f64()
        .expect("time_to_complete_s");
    assert!(
        first <= done,
        "first byte at {first} s, complete at {done} s"
    );
}

fn size_of(torrent: &Path) -> u64 {
    let o = bin()
        .args(["info", "--json"])
        .arg(torrent)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    j["total_size"].as_u64().unwrap()
}

/// A libtorrent seeder of `torrent` from `content`, seeding; its address.
fn lt_seeder(torrent: &Path, content: &Path, extra: &[&str]) -> (Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut seeder = Child::spawn(
        interop_script("lt_peer.py")
            .args(["seed", "--duration", "60", "--listen", &addr])
            .args(extra)
            .arg("--torrent")
            .arg(torrent)
            .arg("--content-dir")
            .arg(content),
    );
    seeder.wait_for_line("READY", Duration::from_secs(30));
    (seeder, addr)
}

#[test]
fn download_from_libtorrent() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (torrent, name) in fixtures(dir.path()) {
        let (_seeder, addr) = lt_seeder(&torrent, &dir.path().join("src"), &[]);
        let out = dir.path().join(format!("dl-lt-{name}"));
        lodestone_get(&torrent, &out, &addr, size_of(&torrent));
        assert_same_tree(&dir.path().join("src").join(&name), &out.join(&name));
    }
}

/// A libtorrent seeder that takes only RC4-encrypted peers: our plain dial
/// is refused, the next one speaks MSE/PE (initiator side), and the
/// download goes through.
#[test]
fn download_from_libtorrent_that_requires_encryption() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (torrent, name) = fixtures(dir.path()).remove(0);
    let (_seeder, addr) = lt_seeder(&torrent, &dir.path().join("src"), &["--force-rc4"]);
    let out = dir.path().join("dl-lt-rc4");
    lodestone_get(&torrent, &out, &addr, size_of(&torrent));
    assert_same_tree(&dir.path().join("src").join(&name), &out.join(&name));
}

#[test]
fn seed_to_libtorrent() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (torrent, name) in fixtures(dir.path()) {
        let (_seeder, seeder_addr) = spawn_seeder(&torrent, &dir.path().join("src"), &[]);
        let out = dir.path().join(format!("dl-{name}"));
        let o = lt_leech(&torrent, &seeder_addr, &out, &[]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "libtorrent leecher: {stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let result: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(result["ok"], true);
        assert!(result["downloaded"].as_u64().unwrap() >= size_of(&torrent));
        assert_same_tree(&dir.path().join("src").join(&name), &out.join(&name));
    }
}

fn aria2(args: &[&str]) -> Command {
    let mut c = Command::new("aria2c");
    c.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--file-allocation=none",
        "--console-log-level=warn",
        "--summary-interval=0",
    ]);
    c.args(args);
    c
}

/// An aria2 leecher of `torrent` into `out` on a fresh port, with `extra`
/// options. It knows no peers: the seeder must dial the returned address.
fn aria2_leecher(torrent: &Path, out: &Path, extra: &[&str]) -> (Child, String) {
    let port = free_port();
    let leecher = Child::spawn(
        aria2(&[
            &format!("--listen-port={port}"),
            "--seed-time=0",
            "--bt-stop-timeout=60",
        ])
        .args(extra)
        .arg("--dir")
        .arg(out)
        .arg(torrent),
    );
    (leecher, format!("127.0.0.1:{port}"))
}

fn assert_success(who: &str, o: std::process::Output) {
    assert!(
        o.status.success(),
        "{who} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn download_from_aria2() {
    if !require_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (torrent, name) in fixtures(dir.path()) {
        let port = free_port();
        let src = dir.path().join("src");
        let mut seeder = Child::spawn(
            aria2(&[
                &format!("--listen-port={port}"),
                "--seed-ratio=0.0",
                "--seed-time=2",
                "--check-integrity=true",
                "--dir",
                src.to_str().unwrap(),
            ])
            .arg(&torrent),
        );
        // aria2 prints nothing useful when ready: wait until it listens.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "aria2 never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = dir.path().join(format!("dl-aria2-{name}"));
        lodestone_get(
            &torrent,
            &out,
            &format!("127.0.0.1:{port}"),
            size_of(&torrent),
        );
        assert_same_tree(&src.join(&name), &out.join(&name));
        drop(seeder.0.kill());
    }
}

#[test]
fn seed_to_aria2() {
    if !require_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (torrent, name) in fixtures(dir.path()) {
        let out = dir.path().join(format!("dl-{name}"));
        let (leecher, aria) = aria2_leecher(&torrent, &out, &[]);
        let _seeder = spawn_seeder(&torrent, &dir.path().join("src"), &["--peer", &aria]);
        assert_success("aria2", leecher.finish(Duration::from_secs(90)));
        assert_same_tree(&dir.path().join("src").join(&name), &out.join(&name));
    }
}

/// libtorrent opens with MSE/PE (its default), and with RC4 forced for the
/// whole stream: our seeder answers both. libtorrent itself says how each
/// connection that carried payload ran: RC4 when forced; an MSE/PE
/// handshake (RC4 or a plain stream after it) by default, never a plain
/// BitTorrent retry after a failed MSE handshake (libtorrent falls back to
/// one when not forced, so the bytes alone would not show it).
#[test]
fn seed_to_libtorrent_over_mse() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (torrent, name) = fixtures(dir.path()).remove(1);
    let (_seeder, seeder_addr) = spawn_seeder(&torrent, &dir.path().join("src"), &[]);
    for force_rc4 in [true, false] {
        let out = dir.path().join(format!("dl-mse-{force_rc4}"));
        // Throttled (4 MiB at 2 MB/s) so that libtorrent's 20 ms look at
        // its connections sees the one that carries the payload.
        let mut extra = vec!["--download-limit", "2000000"];
        if force_rc4 {
            extra.push("--force-rc4");
        }
        let o = lt_leech(&torrent, &seeder_addr, &out, &extra);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "force_rc4 {force_rc4}: {stdout}");
        assert_same_tree(&dir.path().join("src").join(&name), &out.join(&name));
        let result: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let allowed: &[&str] = if force_rc4 {
            &["rc4"]
        } else {
            &["rc4", "mse_plaintext"]
        };
        assert_connections_ran_over(&result, &seeder_addr, allowed);
    }
}

/// In a `lt_peer.py leech` result, libtorrent's report on its connections
/// to `peer`: at least one delivered payload, and every one that did ran
/// over one of `allowed` ("rc4", "mse_plaintext", "none").
fn assert_connections_ran_over(result: &serde_json::Value, peer: &str, allowed: &[&str]) {
    let crypto = result["crypto"]
        .as_object()
        .unwrap_or_else(|| panic!("no crypto report: {result}"));
    let ip = peer.rsplit_once(':').map_or(peer, |(ip, _)| ip);
    let carried: Vec<_> = crypto
        .iter()
        .filter(|(addr, c)| {
            addr.rsplit_once(':').map(|(a, _)| a) == Some(ip)
                && c["downloaded"].as_u64().unwrap_or(0) > 0
        })
        .collect();
    assert!(
        !carried.is_empty(),
        "libtorrent saw no connection to {peer} carry payload: {result}"
    );
    for (addr, c) in carried {
        let kinds = c["crypto"].as_array().expect("crypto list");
        assert!(
            !kinds.is_empty() && kinds.iter().all(|k| allowed.iter().any(|a| k == a)),
            "libtorrent says its connection {addr} ran over {kinds:?}, want only {allowed:?}: {result}"
        );
    }
}

/// aria2 requiring RC4 encryption: our plain dial is refused, so the next
/// dial speaks MSE/PE (initiator side) and the transfer goes through.
#[test]
fn seed_to_aria2_that_requires_encryption() {
    if !require_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (torrent, name) = fixtures(dir.path()).remove(0);
    let out = dir.path().join("dl-crypto");
    let (leecher, aria) = aria2_leecher(
        &torrent,
        &out,
        &["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"],
    );
    let _seeder = spawn_seeder(&torrent, &dir.path().join("src"), &["--peer", &aria]);
    assert_success("aria2", leecher.finish(Duration::from_secs(90)));
    assert_same_tree(&dir.path().join("src").join(&name), &out.join(&name));
}
