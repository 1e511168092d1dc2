//! `lodestone get` and `seed` between two Lodestone processes: file
//! selection, a clean stop on Ctrl-C (SIGINT) with resume, and exit codes.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{bin, create_torrent, spawn_seeder, Child};
use lodestone::payload;

fn setup(dir: &Path) -> (std::path::PathBuf, Child, String) {
    let src = dir.join("src");
    payload::write_multi(&src, "multi", 8 << 20, 256 << 10, "get").unwrap();
    let torrent = dir.join("multi.torrent");
    create_torrent(&src.join("multi"), &torrent, &["--piece-size", "256K"]);
    let (seeder, peer) = spawn_seeder(&torrent, &src, &[]);
    (torrent, seeder, peer)
}

#[test]
fn only_selected_files_are_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, _seeder, peer) = setup(dir.path());
    let out = dir.path().join("dl");
    // File 3 is the 100-byte tiny.txt; file 1 is sub/b.bin (3 pieces + 17 bytes).
    let o = Child::spawn(
        bin()
            .args(["get", "--json", "--only", "1,3", "--peer", &peer, "-o"])
            .arg(&out)
            .arg(&torrent),
    )
    .finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["complete"], true);
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
    let out = dir.path().join("dl");
    let mut first = Child::spawn(
        bin()
            .args([
                "get",
                "--json",
                "--download-limit",
                "2M",
                "--peer",
                &peer,
                "-o",
            ])
            .arg(&out)
            .arg(&torrent),
    );
    first.wait_for_line("\"peer_connected\"", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    let pid = first.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let o = first.finish(Duration::from_secs(30));
    // Interrupted before the end: not complete, so exit code 1, no panic.
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));

    let o = Child::spawn(
        bin()
            .args(["get", "--json", "--peer", &peer, "-o"])
            .arg(&out)
            .arg(&torrent),
    )
    .finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    let started: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(started["resume"], "resumed", "{started}");
    assert!(started["have_pieces"].as_u64().unwrap() > 0, "{started}");
}
