//! A full disk: the download pauses with a clear message and a non-zero
//! exit, keeps what it verified, and a later run with room finishes. The
//! small disk is a tmpfs mounted in a private mount namespace (needs root
//! and util-linux `unshare`).
mod common;

use std::process::Command;
use std::time::Duration;

use common::{create_torrent, require, spawn_seeder, Child};
use lodestone::payload;

/// How long each `lodestone get` may take (24 MiB over loopback takes a
/// second or two; this is for two busy cores).
const GET_SECS: u64 = 120;

#[test]
fn full_disk_pauses_cleanly_and_resumes_later() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !root && !require("root (for a private tmpfs)", &mut Command::new("false")) {
        return;
    }
    if !require("unshare", Command::new("unshare").arg("--version")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_file(&src.join("data.bin"), "data.bin", 24 << 20, "full").unwrap();
    let torrent = dir.path().join("data.torrent");
    create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "256K"]);
    let (_seeder, peer) = spawn_seeder(&torrent, &src, &[]);

    let out = dir.path().join("small");
    std::fs::create_dir_all(&out).unwrap();
    let exe = env!("CARGO_BIN_EXE_lodestone");
    // Each run is bounded on its own (`timeout` says 124 when it fires), so
    // a run that hangs on the full disk ends, and the shell after it.
    let get = format!(
        "timeout -k 5 {GET_SECS} {exe} get --peer {peer} -o {} {}",
        out.display(),
        torrent.display()
    );
    let script = format!(
        "set -u; mount -t tmpfs -o size=8m tmpfs {out} || exit 90; \
         {get}; echo \"first=$?\"; \
         mount -o remount,size=64m {out}; \
         {get}; echo \"second=$?\"; \
         cmp {out}/data.bin {src}/data.bin && echo same",
        out = out.display(),
        src = src.display()
    );
    let o = Child::spawn(
        Command::new("unshare")
            .env(common::LOCAL_ONLY.0, common::LOCAL_ONLY.1)
            .args(["-m", "sh", "-c", &script]),
    )
    .finish(Duration::from_secs(2 * GET_SECS + 60));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_ne!(
        o.status.code(),
        Some(90),
        "could not mount a tmpfs: {stderr}"
    );
    for run in ["first", "second"] {
        assert!(
            !stdout.contains(&format!("{run}=124")) && !stdout.contains(&format!("{run}=137")),
            "the {run} get was still running after {GET_SECS} s (a hang): {stdout}\n{stderr}"
        );
    }
    assert!(
        stdout.contains("first=1"),
        "first run must fail: {stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("paused: disk full while writing"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.contains("second=0"),
        "second run must finish: {stdout}\n{stderr}"
    );
    assert!(stdout.contains("same"), "content differs: {stdout}");
}
