//! `lodestone daemon`'s Transmission RPC over raw HTTP/1.1
//! (std::net::TcpStream): Sonarr's call sequence, the bad-input table of
//! transmission-daemon 3.00, and restarts on the same state directory.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{self, content, Daemon};
use common::http::{http, Rpc, RPC};
use common::Child;
use serde_json::{json, Value};

/// A daemon on free ports with its state in `<base>/state` and downloads
/// in `<base>/dl`, an empty configuration; returned once it serves.
fn start(base: &Path) -> Daemon {
    let (mut cmd, rpc, peer) = daemon::command(base, Path::new("/dev/null"));
    Daemon::spawn(&mut cmd, rpc, peer).drained()
}

const SONARR_FIELDS: &[&str] = &[
    "id",
    "hashString",
    "name",
    "downloadDir",
    "totalSize",
    "leftUntilDone",
    "isFinished",
    "eta",
    "status",
    "secondsDownloading",
    "secondsSeeding",
    "errorString",
    "uploadedEver",
    "downloadedEver",
    "seedRatioLimit",
    "seedRatioMode",
    "seedIdleLimit",
    "seedIdleMode",
    "fileCount",
    "file-count",
    "labels",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Warning,
    Queued,
    Completed,
    Downloading,
}

/// Sonarr's `TransmissionBase.GetItems` classification.
fn classify(t: &Value) -> Class {
    let status = t["status"].as_i64().unwrap();
    if !t["errorString"].as_str().unwrap_or("").is_empty() {
        Class::Warning
    } else if t["totalSize"].as_i64() == Some(0) {
        Class::Queued
    } else if (t["leftUntilDone"].as_i64() == Some(0) && [0, 5, 6].contains(&status))
        || (t["isFinished"].as_bool() == Some(true) && ![1, 2].contains(&status))
    {
        Class::Completed
    } else if status == 3 {
        Class::Queued
    } else {
        Class::Downloading
    }
}

fn find<'a>(list: &'a [Value], hash: &str) -> Option<&'a Value> {
    list.iter().find(|t| t["hashString"] == hash)
}

fn b64(path: &Path) -> String {
    base64(&std::fs::read(path).unwrap())
}

/// Standard base64 with padding (no dependency for a test).
fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A hash nobody has: a magnet of it never gets its metadata.
const NOBODY: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn sonarr_call_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl");
    let d = start(dir.path());
    let done = content("episode", "s");
    let (_seeder, addr) = common::spawn_seeder(&done.torrent, &done.src, &[]);
    let other = content("other", "o");

    let mut rpc = Rpc::handshake(d.rpc);
    let s = rpc.ok("session-get", json!({}));
    assert!(s["version"].as_str().unwrap().starts_with("4.0.6"), "{s}");
    assert_eq!(s["rpc-version"], 17);
    assert_eq!(s["download-dir"], dl.display().to_string());
    for k in [
        "seedRatioLimit",
        "seedRatioLimited",
        "idle-seeding-limit",
        "idle-seeding-limit-enabled",
    ] {
        assert!(s.get(k).is_some(), "session-get lacks {k}: {s}");
    }
    assert!(rpc.torrents(json!({"fields": SONARR_FIELDS})).is_empty());

    // Grab: a magnet nobody serves, with Sonarr's label.
    let magnet = format!("magnet:?xt=urn:btih:{NOBODY}&dn=Show.S01E01");
    let a = rpc.ok(
        "torrent-add",
        json!({"filename": magnet, "paused": false, "labels": ["tv-sonarr"]}),
    );
    assert_eq!(a["torrent-added"]["hashString"], NOBODY, "{a}");
    // A .torrent by metainfo (no peer has it: it stays Downloading).
    let a = rpc.ok(
        "torrent-add",
        json!({"metainfo": b64(&other.torrent), "paused": false, "labels": ["tv-sonarr"]}),
    );
    assert_eq!(a["torrent-added"]["hashString"], other.hash, "{a}");
    assert_eq!(a["torrent-added"]["name"], "other", "{a}");
    // The one that completes: a magnet naming the local seeder.
    let a = rpc.ok(
        "torrent-add",
        json!({"filename": format!("magnet:?xt=urn:btih:{}&x.pe={addr}", done.hash),
               "paused": false, "labels": ["tv-sonarr"]}),
    );
    assert_eq!(a["torrent-added"]["hashString"], done.hash, "{a}");
    // Addressed by hash at once, also the magnet without metadata.
    for h in [NOBODY, other.hash.as_str(), done.hash.as_str()] {
        rpc.ok(
            "torrent-set",
            json!({"ids": [h], "seedRatioLimit": 1.5, "seedRatioMode": 1,
                   "seedIdleLimit": 30, "seedIdleMode": 1}),
        );
        rpc.ok("queue-move-top", json!({"ids": [h]}));
    }

    let deadline = Instant::now() + Duration::from_secs(45);
    let mut seen = Vec::new();
    let list = loop {
        let list = rpc.torrents(json!({"fields": SONARR_FIELDS}));
        assert_eq!(list.len(), 3, "{list:?}");
        let t = find(&list, &done.hash).unwrap();
        let class = classify(t);
        if seen.last() != Some(&class) {
            seen.push(class);
        }
        if class == Class::Completed {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "not Completed in 45 s (classes {seen:?}): {t}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(!seen.contains(&Class::Warning), "{seen:?}");
    for t in &list {
        assert_eq!(t["labels"], json!(["tv-sonarr"]), "{t}");
        assert_eq!(t["seedRatioLimit"], 1.5, "{t}");
        assert_eq!(t["seedRatioMode"], 1, "{t}");
        assert_eq!(t["seedIdleLimit"], 30, "{t}");
        assert_eq!(t["seedIdleMode"], 1, "{t}");
        assert_eq!(t["downloadDir"], dl.display().to_string(), "{t}");
        assert_eq!(t["errorString"], "", "{t}");
    }
    let q = find(&list, NOBODY).unwrap();
    assert_eq!(classify(q), Class::Queued, "{q}");
    assert_eq!(q["totalSize"], 0, "{q}");
    assert_eq!(q["status"], 4, "{q}");
    assert_eq!(q["eta"], -2, "{q}");
    assert_eq!(q["leftUntilDone"], 0, "{q}");
    assert_eq!(q["file-count"], 0, "{q}");
    assert_eq!(q["name"], "Show.S01E01", "{q}");
    let o = find(&list, &other.hash).unwrap();
    assert_eq!(classify(o), Class::Downloading, "{o}");
    assert_eq!(o["file-count"], 5, "{o}");
    let c = find(&list, &done.hash).unwrap();
    assert_eq!(c["leftUntilDone"], 0, "{c}");
    assert_eq!(c["name"], "episode", "{c}");
    // Output path = downloadDir + name.
    let out = Path::new(c["downloadDir"].as_str().unwrap()).join("episode");
    common::assert_same_tree(&done.src, &out);

    // A stale id mid-session: 409 with the current id, then the retry works.
    let current = rpc.sid.clone();
    rpc.sid = "x".repeat(48);
    let r = rpc.raw(br#"{"method":"session-get"}"#);
    assert_eq!(r.status, 409);
    assert_eq!(
        r.header("X-Transmission-Session-Id"),
        Some(current.as_str())
    );
    rpc.sid = current;
    assert_eq!(
        rpc.call(json!({"method": "session-get"}))["result"],
        "success"
    );

    // After import: look it up by hash, swap the label, remove with data.
    let one = rpc.torrents(json!({"ids": [done.hash], "fields": SONARR_FIELDS}));
    assert_eq!(one.len(), 1);
    rpc.ok(
        "torrent-set",
        json!({"ids": [done.hash], "labels": ["tv-imported"]}),
    );
    let one = rpc.torrents(json!({"ids": [done.hash], "fields": ["labels"]}));
    assert_eq!(one[0]["labels"], json!(["tv-imported"]));
    rpc.ok(
        "torrent-remove",
        json!({"ids": [done.hash], "delete-local-data": true}),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = rpc.torrents(json!({"fields": ["hashString"]}));
        let gone = find(&list, &done.hash).is_none() && !out.join("a.bin").exists();
        if gone {
            assert_eq!(list.len(), 2);
            break;
        }
        assert!(Instant::now() < deadline, "not removed: {list:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);
}

#[test]
fn bad_input_as_transmission_daemon_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let with_meta = content("meta", "m");
    let mut rpc = Rpc::handshake(d.rpc);
    let mut wrong = Vec::new();
    let mut expect = |what: &str, ok: bool, got: &dyn std::fmt::Display| {
        if !ok {
            wrong.push(format!("{what}: got {got}"));
        }
    };
    let raw_json = |rpc: &Rpc, body: &[u8]| {
        let r = rpc.raw(body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };

    // transmission-daemon 3.00 answers {"arguments":{},"result":"no method name"}.
    for (what, body) in [
        ("invalid JSON", &b"{nope"[..]),
        ("empty body", b""),
        ("JSON array", b"[1,2]"),
        ("no method", br#"{"arguments":{}}"#),
    ] {
        let v = raw_json(&rpc, body);
        expect(what, v["result"] == "no method name", &v);
        expect(
            &format!("{what}: arguments {{}} as 3.00"),
            v["arguments"] == json!({}),
            &v,
        );
    }
    let v = rpc.call(json!({"method": "no-such-method", "tag": 7}));
    expect(
        "unknown method",
        v["result"] == "method name not recognized" && v["tag"] == 7,
        &v,
    );
    let v = rpc.call(json!({"method": "torrent-get", "arguments": {}}));
    expect(
        "torrent-get without fields",
        v["result"] == "no fields specified",
        &v,
    );
    expect(
        "torrent-get without fields: torrents [] as 3.00",
        v["arguments"]["torrents"] == json!([]),
        &v,
    );

    let a = rpc.ok(
        "torrent-add",
        json!({"metainfo": b64(&with_meta.torrent), "paused": true}),
    );
    let id = a["torrent-added"]["id"].clone();
    let v = rpc.ok(
        "torrent-get",
        json!({"ids": [id], "fields": ["id", "noSuchField"]}),
    );
    expect(
        "unknown field omitted",
        v["torrents"] == json!([{"id": id}]),
        &v,
    );
    for ids in [json!([NOBODY]), json!([]), json!("1"), json!(-1)] {
        let v = rpc.ok("torrent-get", json!({"ids": ids, "fields": ["id"]}));
        expect(&format!("ids {ids}"), v["torrents"] == json!([]), &v);
    }
    let v = rpc.call(json!({"method": "torrent-add", "arguments": {}}));
    expect(
        "torrent-add {}",
        v["result"] == "no filename or metainfo specified",
        &v,
    );
    for (what, args) in [
        ("bad base64", json!({"metainfo": "!!!not base64"})),
        ("not a torrent", json!({"metainfo": base64(b"hello")})),
        ("bare garbage", json!({"filename": "garbage"})),
        ("bad magnet", json!({"filename": "magnet:?xt=urn:btih:zz"})),
    ] {
        let v = rpc.call(json!({"method": "torrent-add", "arguments": args}));
        expect(
            what,
            v["result"]
                .as_str()
                .unwrap_or("")
                .starts_with("invalid or corrupt torrent file"),
            &v,
        );
    }
    let m = format!("magnet:?xt=urn:btih:{NOBODY}");
    rpc.ok("torrent-add", json!({"filename": m}));
    let m2 = format!("magnet:?xt=urn:btih:{}", NOBODY.to_uppercase());
    let v = rpc.ok("torrent-add", json!({"filename": m2}));
    expect(
        "same magnet twice",
        v["torrent-duplicate"]["hashString"] == NOBODY,
        &v,
    );
    let v = rpc
        .call(json!({"method": "torrent-set", "arguments": {"ids": [id], "files-wanted": [99]}}));
    expect(
        "files-wanted [99]",
        v["result"] == "file index out of range",
        &v,
    );
    let v = rpc.call(json!({"method": "torrent-set-location",
        "arguments": {"ids": [id], "location": "relative/dir", "move": true}}));
    expect(
        "set-location relative",
        v["result"] == "new location path is not absolute",
        &v,
    );
    let v = rpc.call(json!({"method": "free-space", "arguments": {"path": "relative"}}));
    expect(
        "free-space relative",
        v["result"] == "directory path is not absolute",
        &v,
    );
    let v = rpc.call(json!({"method": "torrent-remove", "arguments": {"ids": [9999]}}));
    expect("remove unknown id", v["result"] == "success", &v);
    let v = rpc.call(json!({"method": "session-get", "tag": "abc"}));
    expect(
        "tag \"abc\"",
        v["result"] == "success" && v.get("tag").is_none(),
        &v,
    );

    // Over the cap: 413 (3.00 has no cap; ours is 64 MiB).
    let big = vec![b' '; 65 << 20];
    let r = rpc.raw(&big);
    expect("65 MiB body", r.status == 413, &r.status);
    // JSON nested 100000 deep: an answer, no crash.
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let r = rpc.raw(deep.as_bytes());
    expect("deep JSON answered", r.status == 200, &r.status);
    let v = rpc.call(json!({"method": "session-get"}));
    expect("still answers", v["result"] == "success", &v);

    let sid = rpc.sid.clone();
    let h = [("X-Transmission-Session-Id", sid.as_str())];
    let r = http(d.rpc, "POST", "/transmission/foo", &h, b"{}");
    expect("POST /transmission/foo", r.status == 404, &r.status);
    let r = http(d.rpc, "GET", RPC, &h, b"");
    expect("GET with a valid id", r.status == 405, &r.status);
    let r = http(
        d.rpc,
        "POST",
        RPC,
        &[h[0], ("Host", "evil.example")],
        br#"{"method":"session-get"}"#,
    );
    expect("Host: evil.example", r.status == 421, &r.status);
    let r = http(d.rpc, "POST", RPC, &[], br#"{"method":"session-get"}"#);
    expect(
        "no id: 409 + header",
        r.status == 409 && r.header("X-Transmission-Session-Id") == Some(sid.as_str()),
        &r.status,
    );
    drop(d);
    assert!(
        wrong.is_empty(),
        "{} answers differ from transmission-daemon 3.00's:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The (status class, labels, percentDone) of each torrent, by hash.
fn states(rpc: &mut Rpc) -> Vec<(String, Class, Value, Value, i64)> {
    let mut v: Vec<_> = rpc
        .torrents(
            json!({"fields": ["hashString", "status", "labels", "percentDone",
            "totalSize", "leftUntilDone", "isFinished", "errorString"]}),
        )
        .iter()
        .map(|t| {
            (
                t["hashString"].as_str().unwrap().to_owned(),
                classify(t),
                t["labels"].clone(),
                t["percentDone"].clone(),
                t["status"].as_i64().unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The states once no torrent is checking its files (a restarted
/// daemon checks its torrents' resume data first, as Transmission does:
/// status 1 or 2 meanwhile), within 30 s.
fn settled_states(rpc: &mut Rpc) -> Vec<(String, Class, Value, Value, i64)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = states(rpc);
        if s.iter().all(|t| t.4 != 1 && t.4 != 2) || std::time::Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn restart_keeps_torrents_and_state_dir_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let done = content("finished", "f");
    let paused = content("paused", "p");
    let (_seeder, addr) = common::spawn_seeder(&done.torrent, &done.src, &[]);
    let d = start(dir.path());
    let mut rpc = Rpc::handshake(d.rpc);
    rpc.ok(
        "torrent-add",
        json!({"filename": format!("magnet:?xt=urn:btih:{}&x.pe={addr}", done.hash)}),
    );
    rpc.ok(
        "torrent-add",
        json!({"metainfo": b64(&paused.torrent), "paused": true, "labels": ["keep", "x"]}),
    );
    rpc.ok(
        "torrent-add",
        json!({"filename": format!("magnet:?xt=urn:btih:{NOBODY}"), "labels": ["tv"]}),
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    while rpc.torrents(json!({"ids": [done.hash], "fields": ["percentDone"]}))[0]["percentDone"]
        != 1.0
    {
        assert!(Instant::now() < deadline, "not complete in 40 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = states(&mut rpc);
    let find = |v: &[(String, Class, Value, Value, i64)], h: &str| {
        v.iter().find(|t| t.0 == h).cloned().unwrap()
    };
    assert_eq!(find(&before, &done.hash).1, Class::Completed, "{before:?}");
    assert_eq!(find(&before, &paused.hash).4, 0, "{before:?}");
    assert_eq!(find(&before, &paused.hash).2, json!(["keep", "x"]));
    assert_eq!(find(&before, NOBODY).1, Class::Queued, "{before:?}");
    assert_eq!(find(&before, NOBODY).2, json!(["tv"]));

    // A second daemon on the same state directory: exit code 4.
    let second = Child::spawn(&mut daemon::command(dir.path(), Path::new("/dev/null")).0)
        .finish(Duration::from_secs(30));
    assert_eq!(
        second.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let o = d.stop();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let d = start(dir.path());
    let mut rpc = Rpc::handshake(d.rpc);
    // Ids may be given anew: compare by hash.
    assert_eq!(
        settled_states(&mut rpc),
        before,
        "after SIGTERM and a start"
    );

    // kill -9, then start again: the same.
    drop(d);
    let d = start(dir.path());
    let mut rpc = Rpc::handshake(d.rpc);
    assert_eq!(
        settled_states(&mut rpc),
        before,
        "after kill -9 and a start"
    );
    drop(d);
}

/// What a client sets with `session-set` outlives a restart (Transmission
/// keeps its settings.json too).
#[test]
fn session_set_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut rpc = Rpc::handshake(d.rpc);
    let other = dir.path().join("elsewhere");
    rpc.ok(
        "session-set",
        json!({"speed-limit-down": 50, "speed-limit-down-enabled": true,
               "download-dir": other, "seedRatioLimit": 1.5, "seedRatioLimited": true}),
    );
    let keys = [
        "speed-limit-down",
        "speed-limit-down-enabled",
        "download-dir",
        "seedRatioLimit",
        "seedRatioLimited",
    ];
    let before = rpc.ok("session-get", json!({"fields": keys}));
    assert_eq!(before["speed-limit-down"], 50);
    assert_eq!(before["download-dir"], json!(other));
    assert_eq!(d.stop().status.code(), Some(0));
    let d = start(dir.path());
    let mut rpc = Rpc::handshake(d.rpc);
    assert_eq!(rpc.ok("session-get", json!({"fields": keys})), before);
}
