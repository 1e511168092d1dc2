//! A magnet's two phases (metadata, then content) joined up: peers named
//! only by the magnet's `x.pe`, a peer that dials us while we still lack
//! the metadata, and `kill -9` in the middle of the metadata.
mod common;
mod fake_peer;

use std::path::Path;
use std::time::Duration;

use common::{
    assert_same_tree, bin, create_torrent, free_port, interop_script, require_libtorrent,
    spawn_seeder, Child, Lines,
};

use lodestone::payload;

/// A 3 MiB single file and its torrent: (content dir, torrent, info hash).
fn single_file(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let src = dir.join("src");
    payload::write_file(&src.join("x.bin"), "x.bin", 3 << 20, "phases").unwrap();
    let torrent = dir.join("x.torrent");
    let ih = create_torrent(&src.join("x.bin"), &torrent, &[]);
    (src, torrent, ih)
}

/// The events of a `get --json` run, parsed.
fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn event<'a>(evs: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    evs.iter().filter(|e| e["event"] == name).collect()
}

fn assert_ok(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "get failed ({:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// We listen on a fresh loopback port and know no peer: `get --json` of
/// the bare magnet of `ih` into `out`, without DHT or LPD. Returns the
/// child and the address it listens on.
fn get_listening(ih: &str, out: &Path) -> (Child, String) {
    let me = format!("127.0.0.1:{}", free_port());
    let get = Child::spawn(
        bin()
            .args(["get", "--json", &format!("magnet:?xt=urn:btih:{ih}")])
            .args(["--listen", &me, "--no-dht", "--no-lpd", "-o"])
            .arg(out),
    );
    (get, me)
}

/// `get` (from [`get_listening`]) ends within 60 s, having had the
/// metadata and the content from a peer that dialled it: an incoming
/// metadata peer with ut_metadata, a complete summary, the right bytes.
fn assert_a_dialling_peer_served_both_phases(get: Child, src: &Path, out: &Path) {
    let o = get.finish(Duration::from_secs(60));
    assert_ok(&o);
    let evs = events(&o.stdout);
    let meta_peers = event(&evs, "metadata_peer");
    assert!(
        meta_peers
            .iter()
            .any(|e| e["source"] == "incoming" && e["ut_metadata"] == true),
        "no incoming metadata peer: {meta_peers:?}"
    );
    assert_eq!(event(&evs, "summary")[0]["complete"], true);
    assert_same_tree(&src.join("x.bin"), &out.join("x.bin"));
}

/// Issue 11: the metadata came from the x.pe peer in 10 ms, then the
/// download sat at 0 peers for ever (x.pe was not carried into it).
#[test]
fn a_magnet_whose_only_peer_source_is_x_pe_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = single_file(dir.path());
    let (_seeder, seeder) = spawn_seeder(&torrent, &src, &[]);
    let out = dir.path().join("dl");
    let magnet = format!("magnet:?xt=urn:btih:{ih}&x.pe={seeder}");
    let o = Child::spawn(
        bin()
            .args(["get", "--json", &magnet, "--no-dht", "--no-lpd", "-o"])
            .arg(&out),
    )
    .finish(Duration::from_secs(60));
    assert_ok(&o);
    let evs = events(&o.stdout);
    // Both phases used the x.pe peer, and nothing else.
    let meta_peers = event(&evs, "metadata_peer");
    assert!(
        !meta_peers.is_empty() && meta_peers.iter().all(|e| e["addr"] == seeder.as_str()),
        "{meta_peers:?}"
    );
    let peers = event(&evs, "peer_connected");
    assert!(
        !peers.is_empty()
            && peers
                .iter()
                .all(|e| e["addr"] == seeder.as_str() && e["source"] == "manual"),
        "{peers:?}"
    );
    let summary = event(&evs, "summary");
    assert_eq!(summary.len(), 1, "{evs:?}");
    assert_eq!(summary[0]["complete"], true);
    assert_same_tree(&src.join("x.bin"), &out.join("x.bin"));
}

/// We listen and know no peer; a Lodestone seeder told our address dials
/// us while we still lack the metadata. Metadata and content must come.
#[test]
fn a_peer_that_dials_us_during_the_metadata_phase_serves_both_phases() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = single_file(dir.path());
    let out = dir.path().join("dl");
    let (get, me) = get_listening(&ih, &out);
    // It dials us, with backoff, until we answer.
    let (_seeder, _) = spawn_seeder(&torrent, &src, &["--peer", &me]);
    assert_a_dialling_peer_served_both_phases(get, &src, &out);
}

/// The same with a libtorrent seeder dialling us.
#[test]
fn a_libtorrent_seeder_that_dials_us_during_the_metadata_phase_serves_both_phases() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = single_file(dir.path());
    let out = dir.path().join("dl");
    let (get, me) = get_listening(&ih, &out);
    let mut lt = interop_script("lt_peer.py");
    lt.args(["seed", "--duration", "90", "--torrent"])
        .arg(&torrent)
        .arg("--content-dir")
        .arg(&src)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--peer", &me]);
    let _lt = Child::spawn(&mut lt);
    assert_a_dialling_peer_served_both_phases(get, &src, &out);
}

/// Every file under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// `kill -9` while half the metadata is in (a peer serves the first
/// metadata piece and withholds the second), then a restart against a real
/// seeder: it completes with the right bytes, and the killed run left
/// nothing on disk that the restart could trust.
#[test]
fn kill_9_during_the_metadata_phase_then_a_restart_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih, _, slow) = fake_peer::withholding_last_piece(dir.path());
    let out = dir.path().join("dl");
    let magnet = format!("magnet:?xt=urn:btih:{ih}&x.pe={}", slow.addr);
    let mut get = Child::spawn(
        bin()
            .args(["get", "--json", &magnet, "--no-dht", "--no-lpd", "-o"])
            .arg(&out),
    );
    let mut lines = Lines::stdout(&mut get.0);
    lines.wait("metadata_piece 1/2", Duration::from_secs(30), |l| {
        l.contains("\"event\":\"metadata_piece\"") && l.contains("\"done\":1")
    });
    // SIGKILL, as kill -9 does.
    get.0.kill().unwrap();
    get.0.wait().unwrap();
    assert!(
        !lines
            .seen
            .iter()
            .any(|l| l.contains("\"event\":\"metadata\"")),
        "the metadata was complete before the kill: {:?}",
        lines.seen
    );
    let left = files_under(&out);
    assert!(left.is_empty(), "the killed metadata phase left {left:?}");
    drop(slow);

    let (_seeder, seeder) = spawn_seeder(&torrent, &src, &[]);
    let o = Child::spawn(
        bin()
            .args(["get", "--json", &magnet, "--no-dht", "--no-lpd"])
            .args(["--peer", &seeder, "-o"])
            .arg(&out),
    )
    .finish(Duration::from_secs(90));
    assert_ok(&o);
    let evs = events(&o.stdout);
    let started = event(&evs, "started");
    assert_eq!(started[0]["resume"], "fresh", "{started:?}");
    assert_eq!(started[0]["have_pieces"], 0, "{started:?}");
    assert_eq!(event(&evs, "summary")[0]["complete"], true);
    assert_same_tree(&src.join("many"), &out.join("many"));
}

/// Peers that dial us during the metadata phase are held to the phase's
/// peer cap (40): a crowd of 50 metadata peers that never answer gets at
/// most 40 sessions (they hear our handshake) and the rest are closed
/// unanswered, instead of a session each.
#[test]
fn peers_dialling_us_during_the_metadata_phase_are_capped() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (_src, _torrent, ih) = single_file(dir.path());
    let (_get, me) = get_listening(&ih, &dir.path().join("dl"));
    // Listening once a connection is taken (bounded: 30 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&me).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "get did not listen on {me} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut handshake = Vec::with_capacity(68);
    handshake.push(19u8);
    handshake.extend_from_slice(b"BitTorrent protocol");
    handshake.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
    handshake.extend_from_slice(&fake_peer::unhex(&ih));
    // One at a time, each waiting for its first answer (our handshake) or
    // its close, so the listener's table of pending handshakes never fills.
    let mut crowd = Vec::new();
    for i in 0..50u8 {
        let mut s = std::net::TcpStream::connect(&me).expect("connect to the get");
        let mut h = handshake.clone();
        h.extend_from_slice(b"-XX0000-crowd-member");
        h[68 - 1] = i;
        // An extension handshake offering ut_metadata: a metadata peer
        // that never answers requests keeps its session.
        let ext = b"d1:md11:ut_metadatai1ee13:metadata_sizei1000ee";
        h.extend_from_slice(&(ext.len() as u32 + 2).to_be_bytes());
        h.extend_from_slice(&[20, 0]);
        h.extend_from_slice(ext);
        s.write_all(&h).expect("send a handshake");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("crowd member {i} heard neither a handshake nor a close: {e}"),
        }
        s.set_nonblocking(true).expect("nonblocking");
        crowd.push(s);
    }
    // Those over the cap are closed; the rest stay open. Drain every
    // connection until at least the 10 over the cap are seen closed
    // (bounded: 15 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut closed = vec![false; crowd.len()];
    loop {
        for (s, c) in crowd.iter_mut().zip(closed.iter_mut()) {
            let mut buf = [0u8; 4096];
            while !*c {
                match s.read(&mut buf) {
                    Ok(0) => *c = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => *c = true,
                }
            }
        }
        let n = closed.iter().filter(|c| **c).count();
        if n >= 10 {
            eprintln!("crowd of 50: {n} closed, {} open", 50 - n);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 50 incoming metadata peers still have a session after 15 s (cap 40)",
            50 - n
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
