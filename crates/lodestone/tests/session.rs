//! Many torrents in one process: `lodestone seed A.torrent B.torrent ...
//! DIR` holds them all in one session behind one listener, which routes
//! each peer to its torrent by the info hash of its handshake (plain or
//! MSE/PE).
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{bin, create_torrent, free_port, Child, Lines, LOCAL_ONLY};
use lodestone::payload;

/// `n` single-file torrents (`t<i>.bin`, sizes differing) with their
/// content in `dir/src`.
fn torrents(dir: &Path, n: usize) -> (PathBuf, Vec<PathBuf>) {
    let (src, list, _) = torrents_and_hashes(dir, n);
    (src, list)
}

/// [`torrents`], with each one's info hash.
fn torrents_and_hashes(dir: &Path, n: usize) -> (PathBuf, Vec<PathBuf>, Vec<String>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (mut out, mut hashes) = (Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("t{i}.bin");
        let size = (1 << 20) + 4096 * i as u64;
        payload::write_file(&src.join(&name), &name, size, &format!("session-{i}")).unwrap();
        let torrent = dir.join(format!("t{i}.torrent"));
        hashes.push(create_torrent(
            &src.join(&name),
            &torrent,
            &["--piece-size", "64K"],
        ));
        out.push(torrent);
    }
    (src, out, hashes)
}

/// One process seeding every torrent; returned once all of them seed.
fn seed_all(torrents: &[PathBuf], src: &Path) -> (Child, Lines, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut c = bin();
    c.env(LOCAL_ONLY.0, LOCAL_ONLY.1)
        .args(["seed", "--json", "--seed-time", "120", "--listen", &addr])
        .args(["--no-dht", "--no-lpd"])
        .args(torrents)
        .arg(src)
        .stdout(std::process::Stdio::piped());
    let mut seeder = Child::spawn(&mut c);
    let mut lines = Lines::stdout(&mut seeder.0).named("the session");
    lines.wait("all_seeding", Duration::from_secs(60), |l| {
        l.contains("\"all_seeding\"")
    });
    (seeder, lines, addr)
}

fn get(torrent: &Path, peer: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let o = bin()
        .env(LOCAL_ONLY.0, LOCAL_ONLY.1)
        .args([
            "get", "--json", "--no-dht", "--no-lpd", "--peer", peer, "-o",
        ])
        .arg(out)
        .args(extra)
        .arg(torrent)
        .output()
        .unwrap();
    let text = common::success_stdout(&o);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn one_process_seeds_many_torrents_behind_one_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (src, list) = torrents(dir.path(), 6);
    let (_seeder, lines, addr) = seed_all(&list, &src);
    // Each torrent said it seeds, once.
    let seeding = lines
        .seen
        .iter()
        .filter(|l| l.contains("\"event\":\"seeding\""))
        .count();
    assert_eq!(seeding, 6, "{:?}", lines.seen);
    // Every torrent is served from the one address: the listener routes
    // each leecher by its handshake's info hash.
    for (i, t) in list.iter().enumerate() {
        let out = dir.path().join(format!("dl{i}"));
        let s = get(t, &addr, &out, &[]);
        assert_eq!(s["complete"], true, "{s}");
        same_file(&src, &out, &format!("t{i}.bin"));
    }
}

#[test]
fn an_encrypted_libtorrent_leecher_is_served_through_the_session() {
    if !common::require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, list) = torrents(dir.path(), 3);
    let (_seeder, _lines, addr) = seed_all(&list, &src);
    // The MSE handshake hides the info hash until the session's listener
    // has answered it for the right torrent (see peer_io's test for a
    // peer that sends no handshake inside MSE). lt_peer.py's leecher asks
    // for encryption, --force-rc4 for RC4 as well.
    let out = dir.path().join("dl");
    let o = Child::spawn(
        common::interop_script("lt_peer.py")
            .args(["leech", "--timeout", "60", "--peer", &addr, "--force-rc4"])
            // Throttled (1 MiB at 500 kB/s): libtorrent looks at its
            // connections every 20 ms, and must see the one that carries it.
            .args(["--download-limit", "500000"])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--torrent")
            .arg(&list[2])
            .arg("--save")
            .arg(&out),
    )
    .finish(Duration::from_secs(90));
    let stdout = common::success_stdout(&o);
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let crypto = result["crypto"].to_string();
    assert!(crypto.contains("rc4"), "{result}");
    same_file(&src, &out, "t2.bin");
}

/// `lodestone seed --json --state-dir STATE` of the torrents from `src`,
/// with its stdout lines.
fn seed_with_state(torrents: &[PathBuf], src: &Path, state: &Path) -> (Child, Lines) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut c = bin();
    c.env(LOCAL_ONLY.0, LOCAL_ONLY.1)
        .args(["seed", "--json", "--seed-time", "120", "--listen", &addr])
        .args(["--no-dht", "--no-lpd", "--state-dir"])
        .arg(state)
        .args(torrents)
        .arg(src)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut seeder = Child::spawn(&mut c);
    let lines = Lines::stdout(&mut seeder.0).named("the seeder");
    (seeder, lines)
}

#[test]
fn a_state_directory_keeps_the_resume_data_out_of_a_read_only_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (src, list, hashes) = torrents_and_hashes(dir.path(), 3);
    let state = dir.path().join("state");
    // Read-only for anyone but root (root writes anyway: the check below
    // is that nothing is written there).
    let ro = |mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    ro(0o555);
    let (mut first, mut lines) = seed_with_state(&list, &src, &state);
    lines.wait("all_seeding", Duration::from_secs(60), |l| {
        l.contains("\"all_seeding\"")
    });
    // A second process on the same state directory is refused, and says
    // who holds it.
    let o = bin()
        .env(LOCAL_ONLY.0, LOCAL_ONLY.1)
        .args([
            "seed",
            "--no-dht",
            "--no-lpd",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&state)
        .args(&list)
        .arg(&src)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("in use by another Lodestone process"), "{err}");
    // Resume data is saved a moment after the check: give it that, then stop.
    let resume: Vec<PathBuf> = hashes
        .iter()
        .map(|ih| state.join("torrents").join(format!("{ih}.resume")))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !resume.iter().all(|p| p.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(resume.iter().all(|p| p.exists()), "{resume:?}");
    unsafe_sigint(&first);
    let _ = first.0.wait();
    assert!(
        !src.join(".lodestone").exists(),
        "wrote into the content folder"
    );
    // The restart trusts the state directory's resume data: no hashing.
    let (_second, mut lines) = seed_with_state(&list, &src, &state);
    lines.wait("all_seeding", Duration::from_secs(60), |l| {
        l.contains("\"all_seeding\"")
    });
    let resumed = lines
        .seen
        .iter()
        .filter(|l| l.contains("\"event\":\"seeding\"") && l.contains("\"resume\":\"resumed\""))
        .count();
    assert_eq!(resumed, 3, "{:?}", lines.seen);
    ro(0o755);
}

/// Ask a child to stop as Ctrl-C does.
fn unsafe_sigint(c: &Child) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &c.0.id().to_string()])
        .status();
}

/// `lodestone get` of several inputs (a .torrent and a bare magnet) runs
/// them in one session; killed with `kill -9` halfway, `lodestone get
/// --state-dir STATE` with no input brings both back from the state
/// directory (the magnet with the metadata it had fetched) and finishes
/// them, every byte checked.
#[test]
fn get_of_several_inputs_comes_back_from_its_state_directory_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (src, list, hashes) = torrents_and_hashes(dir.path(), 2);
    let (_seeder, _lines, addr) = seed_all(&list, &src);
    let state = dir.path().join("state");
    let out = dir.path().join("dl");
    let magnet = format!("magnet:?xt=urn:btih:{}&x.pe={addr}", hashes[1]);
    let get = |inputs: &[&str]| {
        let mut c = bin();
        c.env(LOCAL_ONLY.0, LOCAL_ONLY.1)
            .args(["get", "--json", "--no-dht", "--no-lpd", "--peer", &addr])
            // 1 MiB each at 128 KiB/s: still running when it is killed
            // (the limit is kept with each torrent in the state directory).
            .args(["--download-limit", "128K", "-o"])
            .arg(&out)
            .arg("--state-dir")
            .arg(&state)
            .args(inputs)
            .stdout(std::process::Stdio::piped());
        c
    };
    let first_torrent = list[0].to_str().unwrap();
    let mut first = Child::spawn(&mut get(&[first_torrent, &magnet]));
    let mut lines = Lines::stdout(&mut first.0).named("the first get");
    lines.wait("the magnet's metadata", Duration::from_secs(30), |l| {
        l.contains("\"event\":\"metadata\"")
    });
    // Let both write some pieces and save resume data, then kill -9.
    std::thread::sleep(Duration::from_secs(3));
    first.0.kill().unwrap();
    let _ = first.0.wait();
    let on_disk = |i: usize| {
        std::fs::metadata(out.join(format!("t{i}.bin")))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    assert!(on_disk(0) > 0 && on_disk(1) > 0, "nothing written");
    let saved = state
        .join("torrents")
        .join(format!("{}.torrent", hashes[1]));
    assert!(saved.exists(), "the magnet's metadata was not kept");

    // A damaged entry beside them is reported, and the others load.
    let bad = state
        .join("torrents")
        .join(format!("{}.entry", "ab".repeat(20)));
    std::fs::write(&bad, b"d7:versioni1e").unwrap();

    // No input: what the state directory holds.
    let o = get(&[]).output().unwrap();
    let text = common::success_stdout(&o);
    assert!(
        text.lines()
            .any(|l| l.contains("\"event\":\"state_problem\"") && l.contains(&"ab".repeat(20))),
        "{text}"
    );
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["torrents"], 2, "{text}");
    assert_eq!(summary["complete"], 2, "{text}");
    assert!(
        !text.contains("\"event\":\"metadata\""),
        "fetched the metadata again: {text}"
    );
    for i in 0..2 {
        same_file(&src, &out, &format!("t{i}.bin"));
    }
}

/// `name` is the same in both folders.
fn same_file(a: &Path, b: &Path, name: &str) {
    assert_eq!(
        std::fs::read(a.join(name)).unwrap(),
        std::fs::read(b.join(name)).unwrap(),
        "{name}"
    );
}

/// With a state directory, the DHT's routing table is kept there: a `get`
/// that joined a private DHT saves it on the way out, and the next `get`
/// on that state directory starts from it with no `--bootstrap`.
#[test]
fn the_state_directory_keeps_the_dht_routing_table() {
    let dir = tempfile::tempdir().unwrap();
    let (src, list) = torrents(dir.path(), 2);
    let (_seeder, _lines, addr) = seed_all(&list, &src);
    // The first node of a private DHT on 127.0.0.1.
    let node_addr = format!("127.0.0.1:{}", common::port_block(1));
    let mut node = Child::spawn(
        bin()
            .env(LOCAL_ONLY.0, LOCAL_ONLY.1)
            .args(["dht", "node", "--json", "--status-every", "1"])
            .args(["--duration", "60", "--listen", &node_addr]),
    );
    Lines::stdout(&mut node.0)
        .named("the dht node")
        .wait("health", Duration::from_secs(10), |l| {
            l.contains("\"nodes\"")
        });
    let state = dir.path().join("state");
    let get = |extra: &[&str]| {
        let o = bin()
            .env(LOCAL_ONLY.0, LOCAL_ONLY.1)
            .args(["get", "--json", "--no-lpd", "--peer", &addr, "-o"])
            .arg(dir.path().join("dl"))
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .output()
            .unwrap();
        common::success_stdout(&o)
    };
    let text = get(&["--bootstrap", &node_addr, list[0].to_str().unwrap()]);
    assert!(text.contains("\"complete\":1"), "{text}");
    let table = state.join("dht.nodes");
    let saved = std::fs::read_to_string(&table).unwrap_or_default();
    assert!(saved.contains(&node_addr), "saved table: {saved:?}");
    // Make it look old; the next run, given no bootstrap node, runs a DHT
    // from it (and saves it again on the way out).
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&table)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let text = get(&[]);
    assert!(text.contains("\"complete\":1"), "{text}");
    let modified = std::fs::metadata(&table).unwrap().modified().unwrap();
    assert!(
        modified > hour_ago + Duration::from_secs(60),
        "not saved again"
    );
    let saved = std::fs::read_to_string(&table).unwrap();
    assert!(saved.contains(&node_addr), "saved table: {saved:?}");
}
