//! The binary as a user meets it: help, errors, create and info.
mod common;

use common::run;
use std::fs;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_version() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for sub in ["info", "create", "demo"] {
        assert!(out.contains(sub), "help lists {sub}");
    }
    let o = run(&["create", "--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("--piece-size"));
    let o = run(&["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("lodestone "));
    let o = run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bad_inputs_give_clear_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "input ends inside a value"),
        (b"d4:infod".to_vec(), "byte 8"),
        (
            [vec![b'l'; 100_000], vec![b'e'; 100_000]].concat(),
            "nesting deeper",
        ),
        (
            b"d4:info99999999999:x".to_vec(),
            "declares 99999999999 bytes",
        ),
        (b"d4:infodee".to_vec(), "missing key"),
        (b"i1e".to_vec(), "should be a dictionary"),
    ];
    for (i, (bytes, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("{i}.torrent"));
        fs::write(&p, bytes).unwrap();
        let o = run(&["info", p.to_str().unwrap()]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "case {i}: {e}");
        assert!(e.starts_with("error: "), "case {i}: {e}");
        assert!(e.contains(want), "case {i}: wanted {want:?} in {e}");
        assert!(!e.contains("panicked"), "case {i}: {e}");
    }
    let o = run(&["info", "magnet:?xt=urn:btih:nothex"]);
    assert!(stderr(&o).contains("parameter 'xt'"));
    let o = run(&["info", "/no/such/file.torrent"]);
    assert!(stderr(&o).contains("cannot read /no/such/file.torrent"));
}

#[test]
fn create_then_info() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("stuff");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("d/x.bin"), vec![7u8; 100_000]).unwrap();
    fs::write(root.join("y.txt"), b"hello").unwrap();
    let out = dir.path().join("stuff.torrent");
    let o = run(&[
        "create",
        root.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--piece-size",
        "32K",
        "--tracker",
        "http://t.example/announce",
        "--web-seed",
        "http://ws.example/",
        "--comment",
        "hi",
        "--private",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Refuses to overwrite without --force.
    let again = run(&[
        "create",
        root.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(stderr(&again).contains("already exists"));

    let o = run(&["info", "--json", out.to_str().unwrap()]);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["name"], "stuff");
    assert_eq!(j["version"], "v1");
    assert_eq!(j["total_size"], 100_005);
    assert_eq!(j["piece_length"], 32768);
    assert_eq!(j["num_pieces"], 4);
    assert_eq!(j["private"], true);
    assert_eq!(j["files"][0]["path"], "stuff/d/x.bin");
    assert_eq!(j["trackers"][0][0], "http://t.example/announce");
    assert_eq!(j["web_seeds"][0], "http://ws.example/");
    assert_eq!(j["comment"], "hi");
    let ih = j["info_hash_v1"].as_str().unwrap().to_owned();
    assert_eq!(ih.len(), 40);
    let magnet = j["magnet"].as_str().unwrap().to_owned();
    assert!(magnet.starts_with(&format!("magnet:?xt=urn:btih:{ih}&dn=stuff")));

    // The magnet and the bare hash inspect to the same hash.
    for input in [magnet.as_str(), ih.as_str()] {
        let o = run(&["info", "--json", input]);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["source"], "magnet");
        assert_eq!(j["info_hash_v1"], ih.as_str());
    }
    // Human output carries the essentials.
    let o = run(&["info", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [ih.as_str(), "stuff/", "x.bin", "4 × 32.0 KiB", "magnet:?"] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
}

#[test]
fn create_is_reproducible_without_date() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.bin");
    fs::write(&f, vec![1u8; 50_000]).unwrap();
    let a = dir.path().join("a.torrent");
    let b = dir.path().join("b.torrent");
    for (out, threads) in [(&a, "1"), (&b, "2")] {
        let o = run(&[
            "create",
            f.to_str().unwrap(),
            "--no-date",
            "--threads",
            threads,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(fs::read(a).unwrap(), fs::read(b).unwrap());
}

#[test]
fn demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["demo", "--dir", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // The leecher starts from a bare magnet: the DHT gives it the peers,
    // the peers the metadata, and the same connections the content.
    assert!(out.contains("magnet:?xt=urn:btih:"), "{out}");
    assert!(out.contains("found via dht"), "{out}");
    assert!(out.contains("metadata: demo"), "{out}");
    assert!(out.contains("on the same connection"), "{out}");
    assert!(out.contains("where the time went"), "{out}");
    assert!(
        out.contains("content identical to the seeders': yes"),
        "{out}"
    );
}
