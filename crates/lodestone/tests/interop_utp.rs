//! uTP (BEP 29) with real clients that nobody here wrote: libtorrent-rasterbar
//! (python3-libtorrent) on 127.0.0.1, and Transmission 3.00 (libutp inside)
//! in network namespaces.
//!
//! Each test shows that the bytes really went over uTP, not just that they
//! arrived: the libtorrent peer has TCP off both ways (`lt_peer.py
//! --utp-only`: `enable_outgoing_tcp` and `enable_incoming_tcp` false), so
//! nothing else can carry them, and libtorrent itself says each connection
//! was a uTP socket (peer_info's `utp_socket` flag); Lodestone's own
//! `peer_connected` event names the transport too. With Transmission, TCP is
//! dropped on the wire by a `tc` filter in the namespaces, and Lodestone
//! runs with `--no-tcp`.
//!
//! Payloads are small (a few MiB): libtorrent's uTP is slow on loopback
//! (7 MiB/s lt to lt, /work/shared/interop/README.md).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    bin, bin_path, create_torrent, interop_script, port_block, require_libtorrent, Child, Lines,
    NetnsPair, NS_A, NS_B,
};
use lodestone::payload;
use serde_json::Value;

const SIZE: u64 = (3 << 20) + 4321;

/// One file of [`SIZE`] bytes under `dir/src` and its torrent (64 KiB pieces).
fn fixture(dir: &Path, seed: &str) -> (PathBuf, PathBuf, String) {
    let src = dir.join("src");
    payload::write_file(&src.join("u.bin"), "u.bin", SIZE, seed).unwrap();
    let torrent = dir.join("u.torrent");
    let ih = create_torrent(&src.join("u.bin"), &torrent, &["--piece-size", "64K"]);
    (src, torrent, ih)
}

fn same_file(a: &Path, b: &Path) {
    let x = std::fs::read(a).unwrap();
    let y = std::fs::read(b).unwrap_or_else(|e| panic!("{} missing: {e}", b.display()));
    assert!(x == y, "{} differs from {}", b.display(), a.display());
}

/// `cmd` started, its stdout read as it comes.
fn watched(who: &str, cmd: &mut Command) -> (Child, Lines) {
    let mut child = Child::spawn(cmd);
    let lines = Lines::stdout(&mut child.0).named(who);
    (child, lines)
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Lodestone's `peer_connected` events (from `--json`): (addr, transport).
fn lodestone_connections(lines: &[String]) -> Vec<(String, String)> {
    json_lines(lines)
        .into_iter()
        .filter(|v| v["event"] == "peer_connected")
        .map(|v| {
            (
                v["addr"].as_str().unwrap_or("").to_owned(),
                v["transport"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Lodestone connected to `ip` (any port: a peer that dialled us comes
/// from an ephemeral one) and every such connection was `transport`.
fn assert_lodestone_saw(lines: &[String], ip: &str, transport: &str) {
    let conns: Vec<_> = lodestone_connections(lines)
        .into_iter()
        .filter(|(a, _)| a.rsplit_once(':').map(|(h, _)| h) == Some(ip))
        .collect();
    assert!(
        !conns.is_empty(),
        "Lodestone has no peer_connected from {ip}:\n{}",
        lines.join("\n")
    );
    assert!(
        conns.iter().all(|(_, t)| t == transport),
        "Lodestone's connections with {ip}: {conns:?}, want all {transport}"
    );
}

/// In an `lt_peer.py` result or exit line, libtorrent's report on its
/// connections with `peer` (an IP:PORT, or just the IP for a peer that
/// dialled it): every one was a uTP socket, and at least one moved payload
/// (`dir`: "downloaded" or "uploaded"). The per-connection counts are
/// sampled every 20 ms, so they may miss the last bytes; the whole
/// transfer is checked on libtorrent's session totals (with TCP off,
/// those went over uTP too).
fn assert_lt_utp(report: &Value, peer: &str, dir: &str) {
    let t = report["transports"]
        .as_object()
        .unwrap_or_else(|| panic!("no transports report: {report}"));
    let matches = |addr: &str| addr == peer || addr.rsplit_once(':').map(|(h, _)| h) == Some(peer);
    let conns: Vec<_> = t.iter().filter(|(a, _)| matches(a)).collect();
    for (addr, c) in &conns {
        assert_eq!(
            c["transport"],
            serde_json::json!(["utp"]),
            "libtorrent says its connection {addr} ran over {}: {report}",
            c["transport"]
        );
    }
    assert!(
        conns.iter().any(|(_, c)| c[dir].as_u64().unwrap_or(0) > 0),
        "libtorrent saw no connection with {peer} carry payload ({dir}): {report}"
    );
}

/// libtorrent's session total `dir` ("downloaded", "uploaded") is at
/// least the payload.
fn assert_lt_total(report: &Value, dir: &str) {
    let n = report[dir].as_u64().unwrap_or(0);
    assert!(
        n >= SIZE,
        "libtorrent {dir} {n} bytes, want {SIZE}: {report}"
    );
}

/// A libtorrent seeder (`lt_peer.py seed`) on a fresh loopback port with
/// `extra` options, once it seeds.
fn lt_seeder(torrent: &Path, content: &Path, extra: &[&str]) -> (Child, Lines, String) {
    let addr = format!("127.0.0.1:{}", free_udp_tcp_port());
    let (child, mut lines) = watched(
        "the libtorrent seeder",
        interop_script("lt_peer.py")
            .args(["seed", "--duration", "100", "--listen", &addr])
            .args(extra)
            .arg("--torrent")
            .arg(torrent)
            .arg("--content-dir")
            .arg(content),
    );
    lines.wait("READY", Duration::from_secs(30), |l| l == "READY");
    (child, lines, addr)
}

/// Stop an `lt_peer.py seed` (SIGTERM) and return its exit line, with
/// libtorrent's word on each connection.
fn lt_seeder_report(child: Child, mut lines: Lines) -> Value {
    let ok = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success());
    lines.read_to_end(Duration::from_secs(20));
    drop(child);
    json_lines(&lines.seen)
        .into_iter()
        .find(|v| v["event"] == "exit")
        .unwrap_or_else(|| panic!("no exit line: {:?}", lines.seen))
}

/// A port free for both TCP and UDP on 127.0.0.1 (uTP and TCP share it).
fn free_udp_tcp_port() -> u16 {
    port_block(1)
}

/// `lodestone get --json` of `what` into `out` with `extra` options;
/// its stdout lines once it exits (it must succeed and be complete).
fn lodestone_get(what: &str, out: &Path, extra: &[&str], timeout: Duration) -> Vec<String> {
    let (child, mut lines) = watched(
        "lodestone get",
        bin()
            .args(["get", "--json", "--no-lpd", what, "-o"])
            .arg(out)
            .args(extra),
    );
    lines.read_to_end(timeout);
    let o = child.finish(Duration::from_secs(10));
    assert!(
        o.status.success(),
        "lodestone get failed:\n{}\n{}",
        lines.seen.join("\n"),
        String::from_utf8_lossy(&o.stderr)
    );
    let summary = json_lines(&lines.seen)
        .into_iter()
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary:\n{}", lines.seen.join("\n")));
    assert_eq!(summary["complete"], true, "{summary}");
    assert_eq!(summary["bytes"], SIZE, "{summary}");
    lines.seen
}

// ---- 1. libtorrent seeds over uTP only, Lodestone downloads ----

/// libtorrent seeds with TCP off; Lodestone (`--no-tcp`, so it dials over
/// uTP) downloads. libtorrent says it uploaded everything over a uTP
/// socket; Lodestone says its connection was uTP.
#[test]
fn download_from_a_utp_only_libtorrent() {
    if !require_libtorrent() {
        return;
    }
    let report = download_from_utp_only_libtorrent("utp-down", &["--no-tcp"]);
    assert_lt_utp(&report, "127.0.0.1", "uploaded");
    assert_lt_total(&report, "uploaded");
}

/// A uTP-only libtorrent seeder, a Lodestone `get` with `extra` flags:
/// the file arrives intact over uTP (Lodestone says so); the seeder's
/// report.
fn download_from_utp_only_libtorrent(name: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, _) = fixture(dir.path(), name);
    let (seeder, seeder_lines, addr) = lt_seeder(&torrent, &src, &["--utp-only"]);
    let out = dir.path().join("dl");
    let mut args = vec!["--peer", addr.as_str(), "--no-dht"];
    args.extend_from_slice(extra);
    let lines = lodestone_get(
        torrent.to_str().unwrap(),
        &out,
        &args,
        Duration::from_secs(60),
    );
    same_file(&src.join("u.bin"), &out.join("u.bin"));
    assert_lodestone_saw(&lines, "127.0.0.1", "utp");
    lt_seeder_report(seeder, seeder_lines)
}

/// The same seeder, Lodestone with its default transports (TCP and uTP).
/// On loopback Lodestone dials TCP first; libtorrent still listens on TCP
/// with `enable_incoming_tcp` off and closes each connection before the
/// BitTorrent handshake. Once a plain and an encrypted handshake were both
/// closed that way, the next dial goes over uTP first (this test found the
/// endless TCP redials that were there before).
#[test]
fn download_from_a_utp_only_libtorrent_with_default_transports() {
    if !require_libtorrent() {
        return;
    }
    download_from_utp_only_libtorrent("utp-down-default", &[]);
}

// ---- 2. Lodestone seeds, libtorrent downloads over uTP only ----

/// A default Lodestone seeder (TCP and uTP on one port); a libtorrent
/// leecher with TCP off dials it over uTP, gets every piece (its own hash
/// check passes) and says the connection was a uTP socket.
#[test]
fn seed_to_a_utp_only_libtorrent() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, _) = fixture(dir.path(), "utp-up");
    let addr = format!("127.0.0.1:{}", free_udp_tcp_port());
    let (_seeder, mut seeder_lines) = watched(
        "the Lodestone seeder",
        &mut common::seed_command(&addr, &torrent, &src, &["--no-dht", "--no-lpd"]),
    );
    seeder_lines.wait("started", Duration::from_secs(30), |l| {
        l.contains("\"event\":\"started\"")
    });
    let out = dir.path().join("dl");
    let o = Child::spawn(
        interop_script("lt_peer.py")
            .args(["leech", "--utp-only", "--timeout", "60", "--peer", &addr])
            // lt_peer.py samples each connection every 20 ms; unlimited,
            // our seeder moved the 3 MB between two samples (then the
            // connection closed) and the report had no uTP connection. At
            // 1 MB/s the transfer spans ~150 samples.
            .args(["--download-limit", "1000000"])
            .args(["--listen", &format!("127.0.0.1:{}", free_udp_tcp_port())])
            .arg("--torrent")
            .arg(&torrent)
            .arg("--save")
            .arg(&out),
    )
    .finish(Duration::from_secs(90));
    let text = common::success_stdout(&o);
    let result: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(result["ok"], true, "{result}");
    same_file(&src.join("u.bin"), &out.join("u.bin"));
    assert_lt_utp(&result, &addr, "downloaded");
    assert_lt_total(&result, "downloaded");
    seeder_lines.find("peer_connected", Duration::from_secs(5), |l| {
        l.contains("\"event\":\"peer_connected\"")
    });
    assert_lodestone_saw(&seeder_lines.seen, "127.0.0.1", "utp");
}

// ---- 3. A bare magnet through a private libtorrent DHT, over uTP ----

/// Eight libtorrent DHT nodes and a libtorrent seeder with TCP off that
/// announces itself there (its DHT and its uTP share one UDP port, as
/// ours do). Lodestone, given only the info hash and one node, finds the
/// seeder in the DHT and takes the metadata (BEP 9) and the content from
/// it over uTP: no other transport reaches that seeder.
#[test]
fn bare_magnet_through_a_libtorrent_dht_over_utp() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = fixture(dir.path(), "utp-magnet");
    let base = port_block(10);
    let mut swarm =
        Child::spawn(common::lt_dht_swarm(8, base, &torrent, &src).arg("--seed-utp-only"));
    swarm.wait_for_line("READY", Duration::from_secs(60));
    let out = dir.path().join("dl");
    let seeder = format!("127.0.0.1:{}", base + 8);
    let lines = lodestone_get(
        &format!("magnet:?xt=urn:btih:{ih}"),
        &out,
        &[
            "--no-tcp",
            "--bootstrap",
            &format!("127.0.0.1:{}", base + 3),
            "--listen",
            &format!("127.0.0.1:{}", base + 9),
        ],
        Duration::from_secs(90),
    );
    let events = json_lines(&lines);
    assert!(
        events
            .iter()
            .any(|v| v["event"] == "metadata_peer" && v["addr"] == seeder && v["source"] == "dht"),
        "the metadata did not come from the seeder found in the DHT:\n{}",
        lines.join("\n")
    );
    assert!(
        events.iter().any(|v| v["event"] == "peer_connected"
            && v["addr"] == seeder
            && v["source"] == "dht"
            && v["transport"] == "utp"
            && v["client"] == common::libtorrent_client_hint()),
        "no uTP connection to libtorrent {seeder} from the DHT:\n{}",
        lines.join("\n")
    );
    same_file(&src.join("u.bin"), &out.join("u.bin"));
}

// ---- 5. A mixed swarm: uTP-only and TCP-only libtorrent peers ----

/// A libtorrent seeder with TCP off, a libtorrent leecher with uTP off
/// and one with TCP off, and Lodestone (default transports) in the
/// middle. The TCP-only leecher and the uTP-only seeder share no transport,
/// so whatever it gets comes through Lodestone; Lodestone takes the uTP
/// seeder's dial and the TCP leecher's on the same port. Everyone finishes,
/// and each libtorrent says which transport each of its connections with
/// Lodestone ran over.
#[test]
fn mixed_swarm_of_utp_only_and_tcp_only_libtorrents() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, _) = fixture(dir.path(), "utp-mixed");
    let lode = format!("127.0.0.1:{}", free_udp_tcp_port());
    // Lodestone first, listening: the others dial it.
    let out = dir.path().join("dl-lodestone");
    let (lodestone, mut lode_lines) = watched(
        "lodestone get (middle)",
        bin()
            .args([
                "get",
                "--json",
                "--no-lpd",
                "--no-dht",
                "--seed-time",
                "100",
            ])
            .args(["--listen", &lode, "-o"])
            .arg(&out)
            .arg(&torrent),
    );
    lode_lines.wait("started", Duration::from_secs(30), |l| {
        l.contains("\"event\":\"started\"")
    });
    // Two leechers that know only Lodestone (the TCP one also the seeder,
    // which it cannot reach), then the seeder, which dials Lodestone.
    let leecher = |name: &str, mode: Option<&str>, peers: &[&str]| {
        let mut c = interop_script("lt_peer.py");
        c.args(["leech", "--timeout", "90", "--seed-after", "3"])
            .args(["--listen", &format!("127.0.0.1:{}", free_udp_tcp_port())])
            .arg("--torrent")
            .arg(&torrent)
            .arg("--save")
            .arg(dir.path().join(name));
        c.args(mode);
        for p in peers {
            c.args(["--peer", p]);
        }
        Child::spawn(&mut c)
    };
    let seed_addr = format!("127.0.0.1:{}", free_udp_tcp_port());
    let tcp_leecher = leecher("dl-tcp", None, &[&lode, &seed_addr]);
    let utp_leecher = leecher("dl-utp", Some("--utp-only"), &[&lode]);
    let (seeder, seeder_lines) = watched(
        "the libtorrent seeder",
        interop_script("lt_peer.py")
            .args(["seed", "--utp-only", "--duration", "100"])
            .args(["--listen", &seed_addr, "--peer", &lode])
            .arg("--torrent")
            .arg(&torrent)
            .arg("--content-dir")
            .arg(&src),
    );
    lode_lines.wait("completed", Duration::from_secs(90), |l| {
        l.contains("\"event\":\"completed\"")
    });
    same_file(&src.join("u.bin"), &out.join("u.bin"));
    let result = |child: Child, who: &str| -> Value {
        let o = child.finish(Duration::from_secs(120));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{who}: {text}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let tcp = result(tcp_leecher, "the TCP-only libtorrent leecher");
    let utp = result(utp_leecher, "the uTP-only libtorrent leecher");
    same_file(&src.join("u.bin"), &dir.path().join("dl-tcp/u.bin"));
    same_file(&src.join("u.bin"), &dir.path().join("dl-utp/u.bin"));
    // The TCP-only leecher got it all from Lodestone, over TCP.
    let t = &tcp["transports"][&lode];
    assert_eq!(t["transport"], serde_json::json!(["tcp"]), "{tcp}");
    assert!(t["downloaded"].as_u64().unwrap_or(0) > 0, "{tcp}");
    assert_lt_total(&tcp, "downloaded");
    // The uTP-only leecher's connection with Lodestone was uTP (it may
    // have taken most pieces from the seeder, heard of by PEX).
    let u = &utp["transports"][&lode];
    assert_eq!(u["transport"], serde_json::json!(["utp"]), "{utp}");
    // The seeder uploaded over uTP only (to Lodestone, and perhaps to the
    // uTP leecher it heard of by PEX).
    let report = lt_seeder_report(seeder, seeder_lines);
    assert_lt_utp(&report, "127.0.0.1", "uploaded");
    assert_lt_total(&report, "uploaded");
    // Lodestone's view: the seeder over uTP, the TCP leecher over TCP.
    lode_lines.pump(Duration::from_millis(100));
    let conns = lodestone_connections(&lode_lines.seen);
    assert!(
        conns.iter().any(|(a, t)| a == &seed_addr && t == "utp"),
        "Lodestone: {conns:?}"
    );
    assert!(
        conns.iter().any(|(_, t)| t == "tcp"),
        "Lodestone: {conns:?}"
    );
    drop(lodestone);
}

// ---- what the Transmission tests lean on ----

/// `--no-tcp` means no TCP either way (its help: "peers only over uTP
/// (dialled and accepted)"): a seeder with it should accept no TCP
/// connection on its listen port, while uTP on the same port serves.
#[test]
fn a_no_tcp_seeder_takes_no_tcp_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, _) = fixture(dir.path(), "no-tcp");
    let addr = format!("127.0.0.1:{}", free_udp_tcp_port());
    let (_seeder, mut lines) = watched(
        "the Lodestone seeder",
        &mut common::seed_command(&addr, &torrent, &src, &["--no-dht", "--no-lpd", "--no-tcp"]),
    );
    lines.wait("started", Duration::from_secs(30), |l| {
        l.contains("\"event\":\"started\"")
    });
    let tcp = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2));
    assert!(tcp.is_err(), "a --no-tcp seeder accepted TCP on {addr}");
    let out = dir.path().join("dl");
    let got = lodestone_get(
        torrent.to_str().unwrap(),
        &out,
        &["--peer", &addr, "--no-dht", "--no-tcp"],
        Duration::from_secs(60),
    );
    assert_lodestone_saw(&got, "127.0.0.1", "utp");
    same_file(&src.join("u.bin"), &out.join("u.bin"));
}

// ---- 4. Transmission 3.00 (libutp) in network namespaces ----

/// One Transmission test at a time (they are slow to start).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn transmission_available() -> bool {
    common::require_netns() && common::require_transmission()
}

/// [`common::transmission_config`] with uTP on.
fn transmission_utp_config(dir: &Path, port: u16, stop_when_done: bool) -> PathBuf {
    let cfg = common::transmission_config(dir, port, stop_when_done, false, &[]);
    let file = cfg.join("settings.json");
    let mut s: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    s["utp-enabled"] = Value::Bool(true);
    std::fs::write(&file, s.to_string()).unwrap();
    cfg
}

/// Every connection Lodestone had (its `peer_connected` events) was with
/// Transmission and over uTP, and there was at least one.
fn assert_only_utp_with_transmission(lines: &[String]) {
    let events: Vec<Value> = json_lines(lines)
        .into_iter()
        .filter(|v| v["event"] == "peer_connected")
        .collect();
    assert!(
        !events.is_empty(),
        "no peer_connected:\n{}",
        lines.join("\n")
    );
    let hint = common::transmission_client_hint();
    for v in &events {
        assert_eq!(v["transport"], "utp", "{v}");
        assert_eq!(v["client"], hint.as_str(), "{v}");
    }
}

/// Transmission seeds (uTP on, TCP on: it has no switch for TCP);
/// Lodestone downloads with `--no-tcp` and no `--listen`, so it neither
/// dials nor accepts TCP: the bytes can only have come over uTP, and
/// Lodestone says its connection with Transmission was uTP.
#[test]
fn download_from_transmission_over_utp() {
    if !transmission_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, _) = fixture(dir.path(), "utp-tr-down");
    let net = NetnsPair::new("ud");
    let cfg = transmission_utp_config(dir.path(), 51441, false);
    let mut tr = Child::spawn(&mut common::transmission_cli(&net, &cfg, &src, &torrent));
    tr.wait_for_line("Seeding", Duration::from_secs(60));
    let out = dir.path().join("dl");
    let (child, mut lines) = watched(
        "lodestone get (netns)",
        net.exec(&net.a, &bin_path())
            .args(["get", "--json", "--no-dht", "--no-lpd", "--no-tcp", "-o"])
            .arg(&out)
            .arg(&torrent)
            .args(["--peer", &format!("{NS_B}:51441")]),
    );
    lines.read_to_end(Duration::from_secs(120));
    let o = child.finish(Duration::from_secs(10));
    assert!(o.status.success(), "{}", lines.seen.join("\n"));
    same_file(&src.join("u.bin"), &out.join("u.bin"));
    assert_only_utp_with_transmission(&lines.seen);
}

/// Lodestone seeds with `--no-tcp` and dials Transmission (uTP on), which
/// downloads and exits once complete. Lodestone says every connection it
/// had with Transmission was uTP. (Lodestone's TCP listener stays up
/// despite `--no-tcp`, see `a_no_tcp_seeder_takes_no_tcp_peer`; a TCP
/// connection from Transmission would show as a "tcp" peer_connected.)
#[test]
fn seed_to_transmission_over_utp() {
    if !transmission_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, _) = fixture(dir.path(), "utp-tr-up");
    let net = NetnsPair::new("uu");
    let cfg = transmission_utp_config(dir.path(), 51442, true);
    let out = dir.path().join("dl");
    let tr = Child::spawn(&mut common::transmission_cli(&net, &cfg, &out, &torrent));
    let (_seeder, mut lines) = watched(
        "lodestone seed (netns)",
        net.exec(&net.a, &bin_path())
            .args([
                "seed",
                "--json",
                "--seed-time",
                "150",
                "--no-dht",
                "--no-lpd",
            ])
            .args(["--no-tcp", "--listen", &format!("{NS_A}:27070")])
            .args(["--peer", &format!("{NS_B}:51442")])
            .arg(&torrent)
            .arg(&src),
    );
    common::transmission_done(tr, Duration::from_secs(150));
    same_file(&src.join("u.bin"), &out.join("u.bin"));
    lines.pump(Duration::from_millis(200));
    assert_only_utp_with_transmission(&lines.seen);
}
