//! `kill -9` in the middle of a 256 MiB download, then a restart: the
//! second run finishes, fetches little more than what was missing, and the
//! content is exact.
mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

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
    let (_seeder, peer) = spawn_seeder(&torrent, &src, &[]);
    let out = dir.path().join("dl");

    // First run, rate-limited so there is a middle to kill it in.
    let mut first = bin()
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
        .arg(&torrent)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = first.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut have_at_kill = 0;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        assert!(Instant::now() < deadline, "first run made no progress");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "progress" {
            have_at_kill = v["have_pieces"].as_u64().unwrap();
            if have_at_kill * 100 >= pieces * 40 {
                first.kill().unwrap(); // SIGKILL: no clean shutdown, no final resume save
                break;
            }
        }
        assert_ne!(
            v["event"], "completed",
            "finished before it could be killed"
        );
    }
    first.wait().unwrap();
    assert!(
        have_at_kill > 0 && have_at_kill < pieces,
        "killed mid-way ({have_at_kill}/{pieces})"
    );

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
