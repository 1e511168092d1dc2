//! `lodestone get` and `seed` between two Lodestone processes: file
//! selection, a clean stop on Ctrl-C (SIGINT) with resume, and exit codes.
mod check;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use check::Run;
use common::{assert_same_tree, bin, create_torrent, spawn_seeder, Child};
use lodestone::payload;

fn setup(dir: &Path) -> (std::path::PathBuf, Child, String) {
    let src = dir.join("src");
    payload::write_multi(&src, "multi", 8 << 20, 256 << 10, "get").unwrap();
    let torrent = dir.join("multi.torrent");
    create_torrent(&src.join("multi"), &torrent, &["--piece-size", "256K"]);
    let (seeder, peer) = spawn_seeder(&torrent, &src, &[]);
    (torrent, seeder, peer)
}

/// One file of `size` bytes in `dir/src` and its torrent (256 KiB pieces).
fn single_file(dir: &Path, size: u64, tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    payload::write_file(&src.join("one.bin"), "one.bin", size, tag).unwrap();
    let torrent = dir.join("one.torrent");
    create_torrent(&src.join("one.bin"), &torrent, &["--piece-size", "256K"]);
    (src, torrent)
}

/// `lodestone get --json` of `torrent` from `peer` into `out`, started.
fn spawn_get(torrent: &Path, peer: &str, out: &Path, extra: &[&str]) -> Child {
    Child::spawn(
        bin()
            .args(["get", "--json", "--peer", peer, "-o"])
            .arg(out)
            .args(extra)
            .arg(torrent),
    )
}

/// Wait for a `get --json` to succeed; its summary.
fn summary_of(get: Child) -> serde_json::Value {
    let o = get.finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["complete"], true, "{summary}");
    summary
}

#[test]
fn only_selected_files_are_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, _seeder, peer) = setup(dir.path());
    let out = dir.path().join("dl");
    // File 3 is the 100-byte tiny.txt; file 1 is sub/b.bin (3 pieces + 17 bytes).
    let summary = summary_of(spawn_get(&torrent, &peer, &out, &["--only", "1,3"]));
    let src = dir.path().join("src/multi");
    for f in ["sub/b.bin", "sub/deeper/tiny.txt"] {
        assert_eq!(
            std::fs::read(src.join(f)).unwrap(),
            std::fs::read(out.join("multi").join(f)).unwrap(),
            "{f}"
        );
    }
    // The big file was not wanted: far less than the whole torrent came down.
    let downloaded = summary["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded < 2 << 20,
        "downloaded {downloaded} bytes for two small files"
    );
    // A bad index is refused up front.
    let o = bin()
        .args(["get", "--only", "9", "--peer", &peer])
        .arg(&torrent)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--only 9: the torrent has 5 files"));
}

#[test]
fn ctrl_c_stops_cleanly_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, _seeder, peer) = setup(dir.path());
    let meta = check::load(&torrent);
    let pieces = meta.info.num_pieces() as usize;
    let out = dir.path().join("dl");
    let mut first = Run::spawn(
        bin()
            .args(["get", "--json", "--download-limit", "2M"])
            .args(["--peer", &peer, "-o"])
            .arg(&out)
            .arg(&torrent),
        &dir.path().join("first.stderr"),
    );
    // Stopped a quarter of the way (8 MiB at 2 MiB/s: about 1 s in).
    first.until("a quarter downloaded", Duration::from_secs(60), |r| {
        assert!(r.find("completed").is_none(), "finished before Ctrl-C");
        r.events
            .iter()
            .any(|v| v["event"] == "progress" && v["have_pieces"].as_u64() >= Some(8))
    });
    interrupt(first.pid());
    let stderr = dir.path().join("first.stderr");
    let (status, summary) = first.finish(Duration::from_secs(30));
    // Interrupted before the end: not complete, so exit code 1, no panic.
    assert_eq!(status.code(), Some(1), "{summary}");
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(summary["complete"], false, "{summary}");
    assert_eq!(summary["stopped"], "asked to stop", "{summary}");
    // The clean stop saved only what is on disk, checked by hashing it (a
    // piece whose write was under way at the stop may be on disk unclaimed).
    let on_disk = check::verified(&meta, &out);
    let claims = check::resume_claims(&meta, &out).expect("a resume file after Ctrl-C");
    check::claims_hold(&claims, &on_disk);
    let have = check::count(&on_disk);
    assert!(have >= 8 && have < pieces, "{have}/{pieces} on disk");
    // Written just before the stop: times too fresh to vouch for.
    let changed = check::changed_files(&claims, &check::disk_stamps(&meta, &out));

    let get = spawn_get(&torrent, &peer, &out, &[]);
    let o = get.finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    let started: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(started["resume"], "resumed", "{started}");
    assert_eq!(started["changed_files"], changed.len(), "{started}");
    assert_eq!(started["have_pieces"], have, "{started}");
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["complete"], true, "{summary}");
    // Only what was missing came down again.
    let missing = check::missing_bytes(&meta, &on_disk);
    let downloaded = summary["downloaded_bytes"].as_u64().unwrap();
    eprintln!("stopped at {have}/{pieces} pieces; the resumed run fetched {downloaded} bytes for {missing} missing");
    assert!(
        downloaded >= missing && downloaded <= missing + 4 * (256 << 10),
        "fetched {downloaded} bytes for {missing} missing"
    );
    assert_eq!(check::count(&check::verified(&meta, &out)), pieces);
    assert_same_tree(&dir.path().join("src/multi"), &out.join("multi"));
}

/// SIGINT, as Ctrl-C sends.
fn interrupt(pid: u32) {
    let pid = pid.to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
}

/// One `seed` run, stopped (Ctrl-C) once it has started: its `started` event.
fn seed_once(torrent: &Path, content: &Path, extra: &[&str]) -> serde_json::Value {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let log = content.with_extension("seed.log");
    let mut child = bin()
        .args(["seed", "--json", "--listen", &addr])
        .args(extra)
        .arg(torrent)
        .arg(content)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = |text: &str| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "started")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let event = loop {
        if let Some(v) = started(&std::fs::read_to_string(&log).unwrap_or_default()) {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "seed never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    // A clean stop writes the resume file.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "seed did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    event
}

#[test]
fn seed_starts_from_its_resume_file_and_hashes_only_modified_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_multi(&src, "multi", 8 << 20, 256 << 10, "seed-resume").unwrap();
    let torrent = dir.path().join("multi.torrent");
    create_torrent(&src.join("multi"), &torrent, &["--piece-size", "256K"]);
    let pieces = 8 * 4;
    // Content written a minute ago: a time from the last 2 s is not
    // trusted (it could change again within the same timestamp tick).
    let minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
    let mut dirs = vec![src.join("multi")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let f = std::fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(minute_ago).unwrap();
            }
        }
    }

    // No resume file yet: every file is hashed, and the result saved.
    let first = seed_once(&torrent, &src, &[]);
    assert_eq!(
        first["resume"], "rechecked: files exist but there is no resume data",
        "{first}"
    );
    assert_eq!(first["have_pieces"], pieces, "{first}");
    // The next start trusts it.
    let second = seed_once(&torrent, &src, &[]);
    assert_eq!(second["resume"], "resumed", "{second}");
    assert_eq!(second["changed_files"], 0, "{second}");
    assert_eq!(second["have_pieces"], pieces, "{second}");

    // One byte of one file changed in place, same size: that file's pieces
    // are hashed again and the damaged one is no longer claimed.
    let edited = src.join("multi/sub/b.bin");
    let mut bytes = std::fs::read(&edited).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&edited, &bytes).unwrap();
    let third = seed_once(&torrent, &src, &[]);
    assert_eq!(third["resume"], "resumed", "{third}");
    assert_eq!(third["changed_files"], 1, "{third}");
    assert_eq!(third["have_pieces"], pieces - 1, "{third}");
    // Edited just now: its time is too fresh to vouch for, so the next
    // start hashes that file again (and only it).
    let fourth = seed_once(&torrent, &src, &[]);
    assert_eq!(fourth["changed_files"], 1, "{fourth}");
    assert_eq!(fourth["have_pieces"], pieces - 1, "{fourth}");

    // --recheck hashes everything whatever the resume file says.
    let forced = seed_once(&torrent, &src, &["--recheck"]);
    assert_eq!(
        forced["resume"], "rechecked: a recheck was asked for",
        "{forced}"
    );
    assert_eq!(forced["have_pieces"], pieces - 1, "{forced}");
}

#[test]
fn upload_limit_holds_the_seeder_to_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = single_file(dir.path(), 2 << 20, "upload-limit");
    let (_seeder, peer) = spawn_seeder(&torrent, &src, &["--upload-limit", "512K"]);
    let out = dir.path().join("dl");
    let summary = summary_of(spawn_get(&torrent, &peer, &out, &[]));
    // 2 MiB at 512 KiB/s, after at most one second's burst: 3 s at least
    // (a lower bound the limiter guarantees, not a speed measurement).
    let took = summary["time_to_complete_s"].as_f64().unwrap();
    assert!(
        took >= 2.5,
        "2 MiB came in {took} s through a 512 KiB/s limit"
    );
    assert_eq!(
        std::fs::read(src.join("one.bin")).unwrap(),
        std::fs::read(out.join("one.bin")).unwrap()
    );
}

#[test]
fn download_limit_holds_the_leecher_to_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = single_file(dir.path(), 2 << 20, "download-limit");
    let (_seeder, peer) = spawn_seeder(&torrent, &src, &[]);
    let out = dir.path().join("dl");
    let summary = summary_of(spawn_get(
        &torrent,
        &peer,
        &out,
        &["--download-limit", "512K"],
    ));
    // 2 MiB requested at 512 KiB/s, after at most one second's budget: 3 s
    // at least (a lower bound the limiter guarantees, not a speed
    // measurement).
    let took = summary["time_to_complete_s"].as_f64().unwrap();
    assert!(
        took >= 2.5,
        "2 MiB came in {took} s through a 512 KiB/s download limit"
    );
    assert_eq!(summary["downloaded_bytes"], 2 << 20, "{summary}");
    assert_eq!(
        std::fs::read(src.join("one.bin")).unwrap(),
        std::fs::read(out.join("one.bin")).unwrap()
    );
}

#[test]
fn a_seeder_stops_at_its_seed_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 2 << 20;
    let (src, torrent) = single_file(dir.path(), size, "seed-ratio");
    let meta = check::load(&torrent);
    // Half a copy uploaded (--seed-time 120 too: the ratio comes first).
    // Uploaded bytes count every block sent, repeats too, so only a ratio
    // under one says for sure the leecher cannot have finished before it.
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut seeder = Run::spawn(
        &mut common::seed_command(&addr, &torrent, &src, &["--seed-ratio", "0.5"]),
        &dir.path().join("seed.stderr"),
    );
    seeder.wait_event("started", Duration::from_secs(60));
    let out = dir.path().join("dl");
    let leecher = Run::spawn(
        bin()
            .args(["get", "--json", "--peer", &addr, "-o"])
            .arg(&out)
            .arg(&torrent),
        &dir.path().join("get.stderr"),
    );
    // The seeder ends by itself, successfully (its content is complete),
    // and says why: its ratio, having uploaded at least half a copy.
    let (status, seeded) = seeder.finish(Duration::from_secs(30));
    assert!(status.success(), "{seeded}");
    assert_eq!(seeded["stopped"], "seed ratio reached", "{seeded}");
    let uploaded = seeded["uploaded_bytes"].as_u64().unwrap();
    assert!(uploaded >= size / 2, "uploaded {uploaded} of {size} bytes");

    // The leecher, left without a peer, is stopped: what it holds is what
    // the seeder sent, and every piece it claims is right on disk.
    interrupt(leecher.pid());
    let (status, leeched) = leecher.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{leeched}");
    assert_eq!(leeched["stopped"], "asked to stop", "{leeched}");
    let downloaded = leeched["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded <= uploaded,
        "the leecher got {downloaded} bytes, the seeder sent {uploaded}"
    );
    let on_disk = check::verified(&meta, &out);
    let claims = check::resume_claims(&meta, &out).expect("the leecher's resume file");
    check::claims_hold(&claims, &on_disk);
    let have = check::count(&on_disk) as u64;
    eprintln!("seeder uploaded {uploaded} bytes; leecher got {downloaded}, {have} pieces verified");
    assert!(
        have >= 1 && have * (256 << 10) <= downloaded,
        "{have} pieces verified from {downloaded} bytes"
    );

    let o = bin()
        .args(["seed", "--seed-ratio", "0"])
        .arg(&torrent)
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a positive ratio"));
}

#[test]
fn an_upload_limit_is_shared_between_leechers() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent) = single_file(dir.path(), 2 << 20, "shared-limit");
    // No PEX: the two leechers can only get the content from the seeder.
    let (_seeder, peer) = spawn_seeder(&torrent, &src, &["--upload-limit", "1M", "--no-pex"]);
    let leech = |name: &str| spawn_get(&torrent, &peer, &dir.path().join(name), &["--no-pex"]);
    let (a, b) = (leech("a"), leech("b"));
    let took = |get: Child| summary_of(get)["time_to_complete_s"].as_f64().unwrap();
    let (ta, tb) = (took(a), took(b));
    // Both finish with the right bytes; 4 MiB through one 1 MiB/s limit
    // (after at most one second's burst) takes the later one 3 s at least.
    // How evenly the two share it is a benchmark: bench/upload_share.py.
    let slow = ta.max(tb);
    assert!(
        slow >= 2.5,
        "two leechers had 2 MiB each in {ta:.2} s and {tb:.2} s through a 1 MiB/s limit"
    );
    for name in ["a", "b"] {
        assert_eq!(
            std::fs::read(src.join("one.bin")).unwrap(),
            std::fs::read(dir.path().join(name).join("one.bin")).unwrap(),
            "{name}"
        );
    }
}
