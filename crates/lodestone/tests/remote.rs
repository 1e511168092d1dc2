//! `lodestone remote` against a running daemon: add (magnet, hash,
//! .torrent file), list, pause, resume, sources, remove; and a daemon with
//! a password, refused without it.
mod common;

use std::process::Output;

use common::daemon::Daemon;
use common::{bin, create_torrent};
use lodestone::payload;

fn remote(d: &Daemon, args: &[&str]) -> Output {
    bin()
        .args(["remote", "--url", &d.url()])
        .args(args)
        .env_remove("LODESTONE_PASSWORD")
        .env_remove("LODESTONE_USER")
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const MAGNET: &str =
    "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=from%20remote";

#[test]
fn add_list_pause_resume_remove() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"), "");
    let src = dir.path().join("src");
    payload::write_file(&src.join("one.bin"), "one.bin", 256 << 10, "r").unwrap();
    let torrent = dir.path().join("one.torrent");
    create_torrent(&src.join("one.bin"), &torrent, &[]);

    let o = remote(&d, &["add", MAGNET, torrent.to_str().unwrap(), "--paused"]);
    assert!(o.status.success(), "{}", out(&o));
    let text = out(&o);
    assert!(text.contains("added: 1 from remote"), "{text}");
    assert!(text.contains("added: 2 one.bin"), "{text}");
    // The same again: said, not added twice.
    let o = remote(&d, &["add", MAGNET]);
    assert!(out(&o).contains("already there: 1"), "{}", out(&o));
    // A missing file fails that input, with its name, and exit 1.
    let o = remote(&d, &["add", "/nonexistent/x.torrent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("/nonexistent/x.torrent"), "{}", out(&o));

    let o = remote(&d, &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let states: Vec<&str> = v["torrents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["stopped", "stopped"], "--paused adds stopped");
    let o = remote(&d, &["resume", "1"]);
    assert!(out(&o).contains("1 from remote: metadata"), "{}", out(&o));
    let o = remote(&d, &["list"]);
    let text = out(&o);
    assert!(
        text.contains("2 torrents") && text.contains("metadata"),
        "{text}"
    );
    // A fetching magnet has its sources table.
    let o = remote(&d, &["sources", "1"]);
    assert!(out(&o).contains("PEX"), "{}", out(&o));
    let o = remote(&d, &["pause", "0123456789abcdef0123456789abcdef01234567"]);
    assert!(out(&o).contains("stopped"), "{}", out(&o));
    let o = remote(&d, &["remove", "2", "--delete-data"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = remote(&d, &["remove", "9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("404: no torrent 9"), "{}", out(&o));
    let o = remote(&d, &["list"]);
    assert!(out(&o).contains("1 torrent\n"), "{}", out(&o));
}

#[test]
fn a_password_is_asked_for_and_taken() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        "[rpc]\nusername = \"me\"\npassword = \"secret\"\n",
    );
    let o = remote(&d, &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("wants a user name and password"),
        "{}",
        out(&o)
    );
    let o = bin()
        .args(["remote", "--url", &d.url(), "--user", "me", "list"])
        .env("LODESTONE_PASSWORD", "secret")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let o = remote(&d, &["--user", "me", "--password", "wrong", "list"]);
    assert_eq!(o.status.code(), Some(1));
}
