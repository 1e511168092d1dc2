//! Peer exchange (BEP 11) from Lodestone to aria2 and to Transmission:
//! a Lodestone leecher B, connected to a Lodestone seeder S, dials the
//! client and tells it about S in a ut_pex message. S never dials anyone
//! and speaks no PEX, the client has no DHT, no LPD and no tracker, and B
//! downloads too slowly to serve the content itself: the client can get
//! the content only by dialling S, which it can know of only through B's
//! PEX. S's own log names the client's connection, S's upload counts
//! what it served, and the client's files are compared byte for byte.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, create_torrent, free_port, require_aria2, Child, Lines, NetnsPair, NS_A, NS_B};
use lodestone::payload;
use serde_json::Value;

const SIZE: u64 = 4 << 20;

/// A child whose JSON lines on stdout are collected as they come; killed
/// when dropped.
struct JsonLog {
    _child: Child,
    lines: Lines,
}

impl JsonLog {
    fn spawn(cmd: &mut Command) -> Self {
        let mut child = Child(
            cmd.stderr(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn child"),
        );
        let lines = Lines::stdout(&mut child.0);
        Self {
            _child: child,
            lines,
        }
    }

    /// Every JSON line printed so far.
    fn snapshot(&mut self) -> Vec<Value> {
        self.lines.pump(Duration::ZERO);
        (self.lines.seen.iter())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait (bounded) for a line, printed so far or to come, that satisfies
    /// `ok`.
    fn wait_for(&mut self, what: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let l = self.lines.find(what, timeout, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| ok(&v))
        });
        serde_json::from_str(&l).expect("just parsed")
    }

    /// The last progress line's counter `key`.
    fn last_progress(&mut self, key: &str) -> u64 {
        self.snapshot()
            .iter()
            .rev()
            .find(|v| v["event"] == "progress")
            .and_then(|v| v[key].as_u64())
            .unwrap_or(0)
    }
}

fn tail(v: &[Value]) -> Vec<String> {
    v.iter()
        .filter(|l| l["event"] != "progress" && l["event"] != "sources")
        .rev()
        .take(20)
        .map(|l| l.to_string())
        .collect()
}

/// Wait (bounded) for the client to exit; on a timeout the test fails
/// with what S and B logged.
fn client_exit(
    mut client: Child,
    name: &str,
    timeout: Duration,
    s: &mut JsonLog,
    b: &mut JsonLog,
) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while client.0.try_wait().ok().flatten().is_none() {
        if Instant::now() >= deadline {
            let b_sources = b
                .snapshot()
                .into_iter()
                .rev()
                .find(|v| v["event"] == "sources");
            panic!(
                "{name} still running after {timeout:?}\nS: {:?}\nB: {:?}\nB's sources: {b_sources:?}",
                tail(&s.snapshot()),
                tail(&b.snapshot())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    client.finish(Duration::from_secs(5))
}

fn connected_from(ip: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| {
        v["event"] == "peer_connected"
            && v["addr"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("{ip}:")))
    }
}

fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    payload::write_file(&src.join("x.bin"), "x.bin", SIZE, "pex-clients").unwrap();
    let torrent = dir.join("x.torrent");
    create_torrent(&src.join("x.bin"), &torrent, &["--piece-size", "64K"]);
    (src, torrent)
}

/// What the seeder and the slow middle peer did, checked once the client
/// has the content: the client came to S, S served most of the content,
/// B got (and so could give) little of it, and the bytes match.
fn assert_client_got_it_from_s(
    s: &mut JsonLog,
    b: &mut JsonLog,
    client_ip: &str,
    src: &Path,
    got: &Path,
) {
    s.wait_for(
        "the seeder saw a connection from the client",
        Duration::from_secs(1),
        connected_from(client_ip),
    );
    let from_b = b.last_progress("downloaded_bytes");
    assert!(
        from_b < SIZE / 4,
        "B downloaded {from_b} bytes: it could have served the client itself"
    );
    let served = s.wait_for(
        "the seeder's progress shows what it served",
        Duration::from_secs(10),
        |v| v["event"] == "progress" && v["uploaded_bytes"].as_u64() >= Some(SIZE - SIZE / 4),
    );
    eprintln!(
        "S uploaded {} bytes; B downloaded {from_b}",
        served["uploaded_bytes"]
    );
    assert_eq!(
        std::fs::read(src.join("x.bin")).unwrap(),
        std::fs::read(got).unwrap_or_else(|e| panic!("{}: {e}", got.display())),
        "the client's file differs"
    );
}

/// S (Lodestone seeder, 127.0.0.1) <- B (Lodestone on 127.0.0.3, slow,
/// dials S and aria2) -> A (aria2 on 127.0.0.2, no DHT, no LPD, no
/// tracker): aria2 must dial S, learned from B's ut_pex.
#[test]
fn aria2_learns_a_seeder_from_lodestone_pex() {
    if !require_aria2() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let s_addr = format!("127.0.0.1:{}", free_port());
    let mut s = JsonLog::spawn(
        bin()
            .args(["seed", "--json", "--no-pex", "--seed-time", "120"])
            .args(["--listen", &s_addr])
            .arg(&torrent)
            .arg(&src),
    );
    s.wait_for("the seeder starts", Duration::from_secs(30), |v| {
        v["event"] == "started"
    });
    let a_port = free_port();
    let aria2 = Child::spawn(
        common::aria2_on_127_0_0_2(a_port)
            .args(["--enable-dht=false", "--dir"])
            .arg(dir.path().join("a"))
            .arg(&torrent),
    );
    // B dials S and aria2 (again after a back-off if aria2 does not
    // listen yet).
    let mut b = JsonLog::spawn(
        bin()
            .args(["get", "--json", "--download-limit", "16K"])
            .args(["--listen", &format!("127.0.0.3:{}", free_port())])
            .args(["--peer", &s_addr])
            .args(["--peer", &format!("127.0.0.2:{a_port}")])
            .arg("-o")
            .arg(dir.path().join("b"))
            .arg(&torrent),
    );
    b.wait_for(
        "B connects to aria2",
        Duration::from_secs(60),
        connected_from("127.0.0.2"),
    );
    let out = client_exit(aria2, "aria2c", Duration::from_secs(90), &mut s, &mut b);
    assert!(
        out.status.success(),
        "aria2c: {}\n{}\nS: {:?}\nB: {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&s.snapshot()),
        tail(&b.snapshot())
    );
    assert_client_got_it_from_s(
        &mut s,
        &mut b,
        "127.0.0.2",
        &src,
        &dir.path().join("a/x.bin"),
    );
}

/// S (Lodestone seeder, 10.78.0.3) and B (Lodestone, 10.78.0.1, slow,
/// dials S and Transmission) in one namespace, Transmission T (10.78.0.2,
/// PEX on, DHT, LPD and trackers off) in the other: T must dial S, learned
/// from B's ut_pex. Transmission refuses 127.0.0.0/8 (hence the
/// namespaces) and keeps one peer per IP address (hence S and B on two).
#[test]
fn transmission_learns_a_seeder_from_lodestone_pex() {
    if !(common::require_netns() && common::require_transmission()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = fixture(dir.path());
    let tag = "x";
    let net = NetnsPair::new(tag);
    const S_IP: &str = "10.78.0.3";
    let dev = format!("va{}{tag}", std::process::id());
    let o = Command::new("ip")
        .args([
            "-n",
            &net.a,
            "addr",
            "add",
            &format!("{S_IP}/24"),
            "dev",
            &dev,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let s_addr = format!("{S_IP}:27070");
    let mut s = JsonLog::spawn(
        net.exec(&net.a, &common::bin_path())
            .args(["seed", "--json", "--no-pex", "--seed-time", "300"])
            .args(["--listen", &s_addr])
            .arg(&torrent)
            .arg(&src),
    );
    s.wait_for("the seeder starts", Duration::from_secs(30), |v| {
        v["event"] == "started"
    });
    let t_port = 51440;
    let cfg = common::transmission_config(dir.path(), t_port, true, true, &[]);
    let out = dir.path().join("t");
    let tr = Child::spawn(&mut common::transmission_cli(&net, &cfg, &out, &torrent));
    let mut b = JsonLog::spawn(
        net.exec(&net.a, &common::bin_path())
            .args(["get", "--json", "--download-limit", "16K"])
            .args(["--listen", &format!("{NS_A}:27071")])
            .args(["--peer", &s_addr])
            .args(["--peer", &format!("{NS_B}:{t_port}")])
            .arg("-o")
            .arg(dir.path().join("b"))
            .arg(&torrent),
    );
    b.wait_for(
        "B connects to Transmission",
        Duration::from_secs(60),
        connected_from(NS_B),
    );
    // With ratio limit 0, transmission-cli exits 0 once it has everything.
    let o = client_exit(
        tr,
        "transmission-cli",
        Duration::from_secs(120),
        &mut s,
        &mut b,
    );
    assert!(
        o.status.success(),
        "transmission-cli: {}\nS: {:?}\nB: {:?}",
        String::from_utf8_lossy(&o.stderr),
        tail(&s.snapshot()),
        tail(&b.snapshot())
    );
    assert_client_got_it_from_s(&mut s, &mut b, NS_B, &src, &out.join("x.bin"));
}
