//! Torrents made by Lodestone and by libtorrent-rasterbar (python3-libtorrent)
//! from the same files must have the same info hash; torrents made by
//! libtorrent (including hybrid v1+v2) must parse to libtorrent's hashes.
mod common;

use std::path::Path;
use std::process::Command;

use common::{repo_root, require_libtorrent, run};
use lodestone::payload;

fn lt_create(path: &Path, piece: u64, hybrid_out: Option<&Path>) -> String {
    let script = repo_root().join("tests/interop/lt_create.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg(path).arg(piece.to_string());
    if let Some(out) = hybrid_out {
        cmd.arg("--hybrid").arg(out);
    }
    let o = cmd.output().expect("run python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

fn ours(path: &Path, piece: u64, out: &Path) -> serde_json::Value {
    let o = run(&[
        "create",
        path.to_str().unwrap(),
        "--no-date",
        "--force",
        "--json",
        "--piece-size",
        &piece.to_string(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn same_info_hash_as_libtorrent() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Single file with a short last piece.
    payload::write_file(&root.join("single.bin"), "single.bin", 3 * 65536 + 123, "0").unwrap();
    // The harness's multi-file layout: boundaries inside pieces, an empty file, a tiny one.
    payload::write_multi(root, "multi", 2 << 20, 65536, "0").unwrap();
    // Non-ASCII names and an empty file in the middle.
    let uni = root.join("Ünïcødé 日本");
    payload::write_file(&uni.join("é/ß.bin"), "a", 70_000, "1").unwrap();
    payload::write_file(&uni.join("零"), "b", 0, "1").unwrap();
    payload::write_file(&uni.join("z.txt"), "c", 10, "1").unwrap();

    let cases = [
        (root.join("single.bin"), 65536),
        (root.join("multi"), 65536),
        (root.join("multi"), 16384),
        (uni.clone(), 32768),
    ];
    for (path, piece) in cases {
        let want = lt_create(&path, piece, None);
        let got = ours(&path, piece, &root.join("out.torrent"));
        assert_eq!(
            got["info_hash_v1"].as_str(),
            Some(want.as_str()),
            "{} with {piece}-byte pieces",
            path.display()
        );
    }
}

#[test]
fn parses_libtorrent_hybrid_torrents() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    payload::write_multi(root, "multi", 1 << 20, 16384, "0").unwrap();
    payload::write_file(&root.join("one.bin"), "one.bin", 100_000, "0").unwrap();
    for (path, name) in [
        (root.join("multi"), "multi"),
        (root.join("one.bin"), "one.bin"),
    ] {
        let t = root.join(format!("{name}.hybrid.torrent"));
        let hashes = lt_create(&path, 16384, Some(&t));
        let (v1, v2) = hashes.split_once(' ').unwrap();
        let o = run(&["info", "--json", t.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["version"], "hybrid", "{name}");
        assert_eq!(j["info_hash_v1"], v1, "{name}");
        assert_eq!(j["info_hash_v2"], v2, "{name}");
        // Pad files are recognised and not counted as content.
        let total = if name == "multi" {
            payload::multi_layout(1 << 20, 16384)
                .iter()
                .map(|f| f.1)
                .sum::<u64>()
        } else {
            100_000
        };
        assert_eq!(j["total_size"], total, "{name}");
        let magnet = j["magnet"].as_str().unwrap();
        assert!(magnet.contains(&format!("urn:btmh:1220{v2}")), "{magnet}");
    }
}
