//! `kill -9` in the middle of a 256 MiB download, then a restart: the
//! second run claims exactly the pieces that verify on disk, finishes,
//! fetches little more than what was missing, and the content is exact.
//! Its one file is being written at the kill, so the restart hashes it
//! whatever the resume file says; `resume.rs` covers the files a restart
//! trusts without hashing.
mod check;
mod common;

use std::time::Duration;

use check::Run;
use common::{assert_same_tree, bin, create_torrent, spawn_seeder, Child};
use lodestone::payload;

const SIZE: u64 = 256 << 20;
const PIECE: u64 = 256 << 10;

#[test]
fn kill_9_mid_download_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_file(&src.join("big.bin"), "big.bin", SIZE, "crash").unwrap();
    let torrent = dir.path().join("big.torrent");
    create_torrent(&src.join("big.bin"), &torrent, &["--piece-size", "256K"]);
    let pieces = SIZE / PIECE;
    let meta = check::load(&torrent);
    let (_seeder, peer) = spawn_seeder(&torrent, &src, &[]);
    let out = dir.path().join("dl");

    // First run, rate-limited so there is a middle to kill it in. The
    // deadline holds whether or not the child prints anything.
    let mut first = Run::spawn(
        bin()
            .args([
                "get",
                "--json",
                "--download-limit",
                "48M",
                "--peer",
                &peer,
                "-o",
            ])
            .arg(&out)
            .arg(&torrent),
        &dir.path().join("first.stderr"),
    );
    let have = |r: &Run| {
        r.events
            .iter()
            .rev()
            .find(|v| v["event"] == "progress")
            .and_then(|v| v["have_pieces"].as_u64())
            .unwrap_or(0)
    };
    first.until(
        "the first run reaching 40%",
        Duration::from_secs(120),
        |r| {
            assert!(
                r.find("completed").is_none(),
                "finished before it could be killed"
            );
            have(r) * 100 >= pieces * 40
        },
    );
    let have_at_kill = have(&first);
    first.kill9(); // SIGKILL: no clean shutdown, no final resume save
    assert!(
        have_at_kill > 0 && have_at_kill < pieces,
        "killed mid-way ({have_at_kill}/{pieces})"
    );
    // What is on disk, hashed by the test: the restart must claim exactly it.
    let on_disk = check::count(&check::verified(&meta, &out)) as u64;

    // Second run: resumes, hashes what the resume file missed, fetches the rest.
    let o = Child::spawn(
        bin()
            .args(["get", "--json", "--peer", &peer, "-o"])
            .arg(&out)
            .arg(&torrent),
    )
    .finish(Duration::from_secs(120));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let started = lines.iter().find(|v| v["event"] == "started").unwrap();
    assert_eq!(started["resume"], "resumed", "{started}");
    let have_at_start = started["have_pieces"].as_u64().unwrap();
    assert_eq!(
        have_at_start, on_disk,
        "the restart claims other pieces than those that verify on disk"
    );
    assert!(
        have_at_start >= have_at_kill,
        "{have_at_start} < {have_at_kill}"
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["complete"], true);
    let downloaded = summary["downloaded_bytes"].as_u64().unwrap();
    let missing = (pieces - have_at_start) * PIECE;
    eprintln!(
        "killed at {have_at_kill}/{pieces} pieces; restart found {have_at_start}; fetched {} MiB for {} MiB missing",
        downloaded >> 20,
        missing >> 20
    );
    assert!(
        downloaded <= missing + 4 * PIECE,
        "re-downloaded too much: {downloaded} > {missing}"
    );
    assert_same_tree(&src.join("big.bin"), &out.join("big.bin"));
}
