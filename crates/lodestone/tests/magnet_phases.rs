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
