//! "Why is my magnet stuck": each main diagnosis provoked on loopback
//! (no way to find peers, nobody known, a DHT that knows no peer, peers
//! that never answer, peers without ut_metadata, a peer that hides the
//! size, half the metadata, a liar, an oversized claim), and `--explain`'s
//! timeline against a plain run.
mod common;
mod fake_peer;

use std::time::Duration;

use common::{
    bin, create_torrent, free_port, lodestone_dht_nodes, port_block, spawn_seeder, Child, Lines,
};
use fake_peer::{FakePeer, Metadata};
use lodestone::payload;

/// Diagnoses come every 5 s; the first that shows a settled state comes
/// well within this, even on busy cores.
const DIAGNOSIS_WAIT: Duration = Duration::from_secs(30);

/// An info hash nobody has, distinct per test.
fn nobody_has(tag: &str) -> String {
    use sha1::Digest;
    fake_peer::hex(&sha1::Sha1::digest(format!("lodestone explain {tag}")))
}

/// A running `get --json <magnet> <args>` into a folder of its own.
struct Get {
    _child: Child,
    _out: tempfile::TempDir,
}

/// `get --json <magnet> <args>`, its stdout read line by line.
fn get_json(magnet: &str, args: &[&str]) -> (Get, Lines) {
    let out = tempfile::tempdir().unwrap();
    let mut c = Child::spawn(
        bin()
            .args(["get", "--json", magnet, "-o"])
            .arg(out.path())
            .args(args),
    );
    let lines = Lines::stdout(&mut c.0);
    (
        Get {
            _child: c,
            _out: out,
        },
        lines,
    )
}

fn has(d: &[String], needle: &str) -> bool {
    d.iter().any(|s| s.contains(needle))
}

/// A 200 KiB file's torrent (one metadata piece): (content dir, torrent, hash).
fn small(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let src = dir.join("src");
    payload::write_file(&src.join("s.bin"), "s.bin", 200 << 10, "explain").unwrap();
    let torrent = dir.join("s.torrent");
    let ih = create_torrent(&src.join("s.bin"), &torrent, &[]);
    (src, torrent, ih)
}

#[test]
fn a_magnet_with_no_way_to_find_peers_is_refused_with_the_ways() {
    let o = bin()
        .args([
            "get",
            &format!("magnet:?xt=urn:btih:{}", nobody_has("none")),
        ])
        .args(["--no-dht", "--no-lpd", "-o"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // Each way is an item of its own ("--lpd with --listen" does not name
    // --listen alone): the first word of each item after "give".
    let list = err.split("give ").nth(1).unwrap_or_else(|| panic!("{err}"));
    let firsts: Vec<&str> = list
        .split([',', ';'])
        .flat_map(|item| item.split(" or "))
        .filter_map(|item| item.split_whitespace().next())
        .collect();
    for way in ["--peer", "--bootstrap", "--dht", "--listen", "--lpd"] {
        assert!(
            firsts.contains(&way),
            "{way} not named as a way ({firsts:?}): {err}"
        );
    }
    assert!(err.contains("trackers"), "{err}");
}

/// Listening, nobody known: both the DHT and the peers are named, in the
/// JSON event and in the words a person sees on stderr.
#[test]
fn listening_with_no_source_says_that_no_peer_is_known() {
    let magnet = format!("magnet:?xt=urn:btih:{}", nobody_has("listen"));
    let me = format!("127.0.0.1:{}", free_port());
    let (_get, mut lines) = get_json(&magnet, &["--listen", &me, "--no-dht", "--no-lpd"]);
    let d = lines.diagnosis(DIAGNOSIS_WAIT, |_| true);
    assert!(has(&d, "DHT: off"), "{d:?}");
    assert!(has(&d, "no peer addresses known yet"), "{d:?}");

    let me = format!("127.0.0.1:{}", free_port());
    let out = tempfile::tempdir().unwrap();
    let mut text = Child::spawn(
        bin()
            .args([
                "get", &magnet, "--listen", &me, "--no-dht", "--no-lpd", "-o",
            ])
            .arg(out.path()),
    );
    let mut err = Lines::stderr(&mut text.0);
    err.wait("the stuck notice", DIAGNOSIS_WAIT, |l| {
        l.starts_with("no metadata after ")
    });
    err.wait("its reason", Duration::from_secs(5), |l| {
        l.trim() == "no peer addresses known yet"
    });
}

#[test]
fn a_peer_that_refuses_connections_is_named_as_unreachable() {
    let magnet = format!("magnet:?xt=urn:btih:{}", nobody_has("refused"));
    // Nothing listens there.
    let dead = format!("127.0.0.1:{}", free_port());
    let (_get, mut lines) = get_json(&magnet, &["--peer", &dead, "--no-lpd"]);
    let d = lines.diagnosis(DIAGNOSIS_WAIT, |_| true);
    let s = d
        .iter()
        .find(|s| s.contains("none completed a BitTorrent handshake"))
        .unwrap_or_else(|| panic!("{d:?}"));
    assert!(s.starts_with("1 peers found, "), "{s}");
    // Every attempt so far failed (one may still be under way).
    let n = |word: &str| -> u32 {
        let before = s.split(word).next().unwrap();
        before.rsplit(", ").next().unwrap().trim().parse().unwrap()
    };
    assert!(n(" connection attempts") >= 1, "{s}");
    assert!(n(" failed") >= 1, "{s}");
}

#[test]
fn a_dht_that_knows_no_peer_for_the_hash_says_so() {
    let base = port_block(4);
    let _nodes = lodestone_dht_nodes(base, 4, 90);
    let magnet = format!("magnet:?xt=urn:btih:{}", nobody_has("dht"));
    let boot = format!("127.0.0.1:{base}");
    let (_get, mut lines) = get_json(&magnet, &["--bootstrap", &boot, "--no-lpd"]);
    let d = lines.diagnosis(Duration::from_secs(45), |d| {
        has(d, "none knows a peer for this info hash")
    });
    let s = d.iter().find(|s| s.starts_with("DHT: ")).unwrap();
    let answered: u32 = s["DHT: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{s}"));
    assert!((1..=4).contains(&answered), "{s}");
    assert!(has(&d, "no peer addresses known yet"), "{d:?}");
}

/// The DHT hands out a peer that refuses connections: the diagnosis counts
/// it as found (not "no peer addresses known") and says none answered.
#[test]
fn a_dht_peer_that_refuses_connections_is_counted_as_found() {
    let base = port_block(4);
    let _nodes = lodestone_dht_nodes(base, 4, 90);
    let ih = nobody_has("dht-dead-peer");
    let boot = format!("127.0.0.1:{base}");
    let dead = free_port().to_string();
    let o = Child::spawn(bin().args([
        "dht",
        "announce",
        &ih,
        "--port",
        &dead,
        "--listen",
        "127.0.0.1:0",
        "--bootstrap",
        &boot,
        "--timeout",
        "20",
    ]))
    .finish(Duration::from_secs(40));
    assert!(
        o.status.success(),
        "announce: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let magnet = format!("magnet:?xt=urn:btih:{ih}");
    let (_get, mut lines) = get_json(&magnet, &["--bootstrap", &boot, "--no-lpd"]);
    let d = lines.diagnosis(Duration::from_secs(45), |d| {
        has(d, "nodes answered, ") && has(d, "peers returned")
    });
    assert!(
        has(&d, "1 peers found, ") && has(&d, "none completed a BitTorrent handshake"),
        "{d:?}"
    );
}

#[test]
fn peers_without_ut_metadata_are_counted_and_named() {
    let ih = nobody_has("no-ut-metadata");
    // One without the extension protocol at all, one with it but no ut_metadata.
    let plain = FakePeer::spawn(fake_peer::unhex(&ih), false, Metadata::Unsupported);
    let pex_only = FakePeer::spawn(fake_peer::unhex(&ih), true, Metadata::Unsupported);
    let magnet = format!("magnet:?xt=urn:btih:{ih}");
    let (a, b) = (plain.addr.to_string(), pex_only.addr.to_string());
    let (_get, mut lines) = get_json(&magnet, &["--peer", &a, "--peer", &b, "--no-lpd"]);
    let d = lines.diagnosis(DIAGNOSIS_WAIT, |_| true);
    assert!(
        has(&d, "2 peers connected, none supports ut_metadata (BEP 9)"),
        "{d:?}"
    );
    // The one with the extension protocol was seen saying so.
    assert!(
        lines
            .seen
            .iter()
            .any(|l| l.contains("\"event\":\"metadata_peer\"")
                && l.contains(&b)
                && l.contains("\"ut_metadata\":false")),
        "{:?}",
        lines.seen
    );
}

#[test]
fn a_peer_that_does_not_tell_the_size_is_named() {
    let ih = nobody_has("no-size");
    let p = FakePeer::spawn(fake_peer::unhex(&ih), true, Metadata::NoSize);
    let magnet = format!("magnet:?xt=urn:btih:{ih}&x.pe={}", p.addr);
    let (_get, mut lines) = get_json(&magnet, &["--no-lpd"]);
    let d = lines.diagnosis(DIAGNOSIS_WAIT, |_| true);
    assert!(
        has(
            &d,
            "1 peers support ut_metadata but none told the metadata size"
        ),
        "{d:?}"
    );
}

#[test]
fn half_the_metadata_is_reported_as_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (_src, _torrent, ih, pieces, p) = fake_peer::withholding_last_piece(dir.path());
    let magnet = format!("magnet:?xt=urn:btih:{ih}&x.pe={}", p.addr);
    let (_get, mut lines) = get_json(&magnet, &["--no-lpd"]);
    let d = lines.diagnosis(DIAGNOSIS_WAIT, |_| true);
    let want = format!(
        "metadata {}/{pieces} pieces from 1 peers with ut_metadata",
        pieces - 1
    );
    assert!(has(&d, &want), "{want} not in {d:?}");
}

#[test]
fn a_peer_that_sent_bad_metadata_is_banned_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let (_src, torrent, ih) = small(dir.path());
    let liar = FakePeer::spawn(
        fake_peer::unhex(&ih),
        true,
        Metadata::Serve {
            info: fake_peer::info_bytes(&torrent),
            withhold_last: false,
            corrupt: true,
        },
    );
    let magnet = format!("magnet:?xt=urn:btih:{ih}&x.pe={}", liar.addr);
    let (_get, mut lines) = get_json(&magnet, &["--no-lpd"]);
    let d = lines.diagnosis(DIAGNOSIS_WAIT, |_| true);
    assert!(has(&d, "1 peer(s) banned for bad metadata"), "{d:?}");
    let banned = format!("\"addr\":\"{}\"", liar.addr);
    assert!(
        lines
            .seen
            .iter()
            .any(|l| l.contains("\"event\":\"peer_banned\"") && l.contains(&banned)),
        "{:?}",
        lines.seen
    );
}

#[test]
fn a_peer_claiming_metadata_over_the_limit_is_refused_and_said() {
    let ih = nobody_has("too-big");
    let p = FakePeer::spawn(fake_peer::unhex(&ih), true, Metadata::Claim(5 << 20));
    let magnet = format!("magnet:?xt=urn:btih:{ih}&x.pe={}", p.addr);
    let (_get, mut lines) = get_json(&magnet, &["--no-lpd", "--max-metadata-size", "1M"]);
    let d = lines.diagnosis(DIAGNOSIS_WAIT, |_| true);
    assert!(
        has(&d, "1 peer(s) refused: metadata size above the limit"),
        "{d:?}"
    );
    // It did tell a size (redials count once, too).
    assert!(!has(&d, "none told the metadata size"), "{d:?}");
    assert_eq!(p.requests.load(std::sync::atomic::Ordering::Acquire), 0);
}

/// Positions in `lines` of the first line containing each needle, in
/// order; fails naming the first one missing or out of order.
fn in_order(lines: &[&str], needles: &[&str]) -> Vec<usize> {
    let mut from = 0;
    let mut at = Vec::new();
    for n in needles {
        let i = lines[from..]
            .iter()
            .position(|l| l.contains(n))
            .unwrap_or_else(|| panic!("{n:?} not found after line {from}:\n{}", lines.join("\n")));
        at.push(from + i);
        from += i + 1;
    }
    at
}

/// `--explain` prints the metadata timeline (each peer and what it speaks,
/// each metadata piece) and the sources table while it runs; a plain run
/// prints neither.
#[test]
fn explain_prints_the_timeline_a_plain_run_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = small(dir.path());
    let (_seeder, seeder) = spawn_seeder(&torrent, &src, &[]);
    let magnet = format!("magnet:?xt=urn:btih:{ih}");
    let run = |explain: bool| -> String {
        let out = dir.path().join(if explain { "explained" } else { "plain" });
        let mut c = bin();
        c.args(["get", &magnet, "--peer", &seeder, "--no-lpd", "-o"])
            .arg(&out);
        if explain {
            c.arg("--explain");
        }
        let o = Child::spawn(&mut c).finish(Duration::from_secs(60));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        assert_eq!(
            std::fs::read(src.join("s.bin")).unwrap(),
            std::fs::read(out.join("s.bin")).unwrap()
        );
        err
    };
    let explained = run(true);
    let lines: Vec<&str> = explained.lines().collect();
    let at = in_order(
        &lines,
        &[
            &format!("peer {seeder} (manual): has ut_metadata"),
            "metadata 1/1 pieces",
            "metadata received in",
            "new download: 0/",
            "[DHT]",
            "download complete in",
        ],
    );
    // The table came while it ran, not only in the final summary.
    assert!(at[4] < at[5], "{explained}");

    let plain = run(false);
    assert!(!plain.contains("has ut_metadata"), "{plain}");
    assert!(!plain.contains("metadata 1/1 pieces"), "{plain}");
    let lines: Vec<&str> = plain.lines().collect();
    let done = in_order(&lines, &["download complete in"])[0];
    assert!(
        !lines[..done].iter().any(|l| l.contains("[DHT]")),
        "a plain run printed the table before the end:\n{plain}"
    );
}

/// `--explain --json`: the summary's times all count from the process
/// start (the download's own clock starts once the metadata is in), and
/// its `timeline` lists the milestones in order of time.
#[test]
fn explain_json_gives_the_timeline_from_the_process_start() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = small(dir.path());
    let (_seeder, seeder) = spawn_seeder(&torrent, &src, &[]);
    let magnet = format!("magnet:?xt=urn:btih:{ih}");
    let out = dir.path().join("dl");
    let o = Child::spawn(
        bin()
            .args(["get", "--json", "--explain", &magnet, "--peer", &seeder])
            .args(["--no-lpd", "-o"])
            .arg(&out),
    )
    .finish(Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(src.join("s.bin")).unwrap(),
        std::fs::read(out.join("s.bin")).unwrap()
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let summary = events.last().expect("a summary");
    assert_eq!(summary["event"], "summary", "{summary}");
    let secs = |v: &serde_json::Value, key: &str| {
        v[key].as_f64().unwrap_or_else(|| panic!("no {key} in {v}"))
    };
    let (metadata, first_byte, complete) = (
        secs(summary, "metadata_s"),
        secs(summary, "first_byte_s"),
        secs(summary, "time_to_complete_s"),
    );
    assert!(
        0.0 <= metadata && metadata <= first_byte && first_byte <= complete,
        "metadata at {metadata} s, first byte at {first_byte} s, complete at {complete} s"
    );
    // The engine's own clock (the completed event's after_s) starts with
    // its run, metadata phase included, a moment after the process: the
    // summary's counts from before that.
    let completed = events
        .iter()
        .find(|e| e["event"] == "completed")
        .expect("a completed event");
    let engine = secs(completed, "after_s");
    assert!(
        complete + 1e-6 >= engine && engine > 0.0,
        "complete at {complete} s, but the engine's clock says {engine} s"
    );
    // The metadata event counts from the fetch's start, after the
    // process's: no later than the summary's.
    let fetched = events
        .iter()
        .find(|e| e["event"] == "metadata")
        .expect("a metadata event");
    assert!(secs(fetched, "t") <= metadata, "{fetched} vs {metadata}");

    let timeline = summary["timeline"].as_array().expect("a timeline");
    let at = |name: &str| {
        let e = timeline
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} in the timeline {timeline:?}"));
        secs(e, "at_s")
    };
    let times: Vec<f64> = timeline.iter().map(|e| secs(e, "at_s")).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timeline out of order: {timeline:?}"
    );
    // The milestones, in the order they must come.
    let order = [
        "first_peer",
        "metadata",
        "download_started",
        "first_byte",
        "complete",
        "end",
    ];
    for w in order.windows(2) {
        assert!(
            at(w[0]) <= at(w[1]),
            "{} after {}: {timeline:?}",
            w[0],
            w[1]
        );
    }
    assert!(at("metadata") >= 0.0, "{timeline:?}");
    assert_eq!(at("metadata"), metadata, "{timeline:?}");
    assert_eq!(at("complete"), complete, "{timeline:?}");
    assert_eq!(at("first_byte"), first_byte, "{timeline:?}");
    let first_peer = timeline
        .iter()
        .find(|e| e["event"] == "first_peer")
        .expect("first_peer");
    assert_eq!(first_peer["addr"], seeder.as_str(), "{first_peer}");
}
