//! `lodestone daemon`'s qBittorrent Web API against the real binary, with
//! a password: Sonarr's qBittorrent call sequence (`QBittorrentProxyV2`,
//! `QBittorrent.cs`), replayed by our own HTTP client, each item
//! classified exactly as Sonarr does. Loopback only; every wait bounded.
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::daemon::{content, Daemon};
use common::http::{http, Response};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Warning,
    Paused,
    Queued,
    Completed,
    Downloading,
}

/// Sonarr's `QBittorrent.GetItems` state switch (both the 2.11 names
/// and the older paused ones), including its `metaDL` rule (Queued when
/// the client's DHT is on, a warning when it is off) and its check that
/// a completed item's content path is not its save path.
fn classify(t: &Value, dht_enabled: bool) -> Class {
    let class = match t["state"].as_str().unwrap() {
        "error" | "stalledDL" | "missingFiles" => Class::Warning,
        "pausedDL" | "stoppedDL" => Class::Paused,
        "queuedDL" | "checkingDL" | "checkingUP" | "checkingResumeData" => Class::Queued,
        "pausedUP" | "stoppedUP" | "uploading" | "stalledUP" | "queuedUP" | "forcedUP" => {
            Class::Completed
        }
        "metaDL" | "forcedMetaDL" if dht_enabled => Class::Queued,
        "metaDL" | "forcedMetaDL" => Class::Warning,
        // forcedDL, moving, downloading, and anything unknown.
        _ => Class::Downloading,
    };
    if class == Class::Completed && t["content_path"] == t["save_path"] {
        return Class::Warning;
    }
    class
}

/// Sonarr's client: the cookie from its login, sent back on each call.
struct Sonarr {
    port: u16,
    cookie: Option<String>,
}

impl Sonarr {
    fn send(&self, method: &str, path: &str, ct: Option<&str>, body: &[u8]) -> Response {
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = &self.cookie {
            h.push(("Cookie", c));
        }
        if let Some(ct) = ct {
            h.push(("Content-Type", ct));
        }
        http(self.port, method, path, &h, body)
    }

    fn get(&self, path: &str) -> Response {
        self.send("GET", path, None, b"")
    }

    fn post(&self, path: &str, form: &str) -> Response {
        self.send(
            "POST",
            path,
            Some("application/x-www-form-urlencoded"),
            form.as_bytes(),
        )
    }

    fn text(r: &Response) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    fn info(&self, category: &str) -> Vec<Value> {
        let r = self.get(&format!("/api/v2/torrents/info?category={category}"));
        assert_eq!(r.status, 200, "{}", Self::text(&r));
        r.json().as_array().unwrap().clone()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A hash nobody has: a magnet of it never gets its metadata.
const NOBODY: &str = "0123456789abcdef0123456789abcdef01234567";

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, value) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match filename {
            Some(f) => format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/x-bittorrent\r\n\r\n"
            ),
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[test]
fn sonarr_qbittorrent_call_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl");
    let d = Daemon::start(
        dir.path(),
        "[rpc]\nusername = \"sonarr\"\npassword = \"secret\"\n",
    );
    let done = content("episode", "s");
    let (_seeder, addr) = common::spawn_seeder(&done.torrent, &done.src, &[]);
    let other = content("other", "o");
    let mut s = Sonarr {
        port: d.rpc,
        cookie: None,
    };

    // 1. Which API: a 403 without a cookie means v2.
    let r = s.get("/api/v2/app/webapiVersion");
    assert_eq!(r.status, 403, "{}", Sonarr::text(&r));
    // 2. Login: "Ok." and the cookie.
    let r = s.post("/api/v2/auth/login", "username=sonarr&password=nope");
    assert_eq!((r.status, Sonarr::text(&r)), (200, "Fails.".to_owned()));
    let r = s.post("/api/v2/auth/login", "username=sonarr&password=secret");
    assert_eq!((r.status, Sonarr::text(&r)), (200, "Ok.".to_owned()));
    let cookie = r.header("set-cookie").expect("a cookie").to_owned();
    s.cookie = Some(cookie.split(';').next().unwrap().to_owned());
    // 3. Versions, preferences, categories.
    let v = Sonarr::text(&s.get("/api/v2/app/webapiVersion"));
    assert_eq!(v, "2.11.4");
    let v = Sonarr::text(&s.get("/api/v2/app/version"));
    assert_eq!(v.trim_start_matches('v'), "5.1.4");
    let prefs = s.get("/api/v2/app/preferences").json();
    assert_eq!(prefs["save_path"], dl.display().to_string());
    assert_eq!(prefs["queueing_enabled"], false);
    let dht = prefs["dht"].as_bool().unwrap();
    assert!(!dht, "the test daemon runs with --no-dht");
    let cats = s.get("/api/v2/torrents/categories").json();
    assert!(cats.get("tv-sonarr").is_none());
    let r = s.post(
        "/api/v2/torrents/createCategory",
        "category=tv-sonarr&savePath=",
    );
    assert_eq!(r.status, 200, "{}", Sonarr::text(&r));
    let cats = s.get("/api/v2/torrents/categories").json();
    let cat_dir = dl.join("tv-sonarr");
    assert_eq!(cats["tv-sonarr"]["savePath"], cat_dir.display().to_string());
    assert!(s.info("tv-sonarr").is_empty());

    // 4. Grab: a magnet nobody serves (stopped=false), the magnet the
    // local seeder serves, and a .torrent uploaded stopped.
    let magnet = format!("magnet:?xt=urn:btih:{NOBODY}&dn=Show.S01E01");
    for m in [
        magnet,
        format!("magnet:?xt=urn:btih:{}&x.pe={addr}", done.hash),
    ] {
        let r = s.post(
            "/api/v2/torrents/add",
            &format!("urls={}&category=tv-sonarr&stopped=false", encode(&m)),
        );
        assert_eq!(Sonarr::text(&r), "Ok.");
    }
    let file = std::fs::read(&other.torrent).unwrap();
    let boundary = "----SonarrBoundary0123";
    let body = multipart(
        boundary,
        &[
            ("torrents", Some("other.torrent"), &file),
            ("category", None, b"tv-sonarr"),
            ("stopped", None, b"true"),
        ],
    );
    let r = s.send(
        "POST",
        "/api/v2/torrents/add",
        Some(&format!("multipart/form-data; boundary={boundary}")),
        &body,
    );
    assert_eq!(Sonarr::text(&r), "Ok.");
    // Then, for each, properties until found, share limits, topPrio
    // (409 tolerated), force start off.
    for h in [NOBODY, done.hash.as_str(), other.hash.as_str()] {
        let r = s.get(&format!("/api/v2/torrents/properties?hash={h}"));
        assert_eq!(r.status, 200, "{h}: {}", Sonarr::text(&r));
        let r = s.post(
            "/api/v2/torrents/setShareLimits",
            &format!("hashes={h}&ratioLimit=-2&seedingTimeLimit=-2&inactiveSeedingTimeLimit=-2"),
        );
        assert_eq!(r.status, 200);
        let r = s.post("/api/v2/torrents/topPrio", &format!("hashes={h}"));
        assert_eq!(r.status, 409);
    }

    // 5. Poll the category's items until the served one is Completed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let list = loop {
        let list = s.info("tv-sonarr");
        assert_eq!(list.len(), 3, "{list:?}");
        let t = list
            .iter()
            .find(|t| t["hash"] == done.hash.as_str())
            .unwrap();
        let class = classify(t, dht);
        if seen.last() != Some(&class) {
            seen.push(class);
        }
        if class == Class::Completed {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "not Completed in 60 s (classes {seen:?}): {t}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let by = |h: &str| list.iter().find(|t| t["hash"] == h).unwrap().clone();
    let nobody = by(NOBODY);
    assert_eq!(nobody["state"], "metaDL", "{nobody}");
    assert_eq!(nobody["size"], 0);
    // Sonarr's two readings of metaDL: Queued with DHT on, a warning
    // ("cannot resolve magnet link with DHT disabled") with it off, as here.
    assert_eq!(classify(&nobody, true), Class::Queued);
    assert_eq!(classify(&nobody, dht), Class::Warning);
    let stopped = by(&other.hash);
    assert_eq!(stopped["state"], "stoppedDL", "{stopped}");
    assert_eq!(classify(&stopped, dht), Class::Paused);
    let t = by(&done.hash);
    assert_eq!(t["progress"], 1.0);
    assert_eq!(t["save_path"], cat_dir.display().to_string());
    let content_path = PathBuf::from(t["content_path"].as_str().unwrap());
    assert_eq!(content_path, cat_dir.join("episode"));
    common::assert_same_tree(&done.src, &content_path);
    assert_eq!(t["name"], "episode");
    assert_eq!(t["category"], "tv-sonarr");
    assert_eq!(t["eta"], 8_640_000);

    // Per completed item: properties and files.
    let p = s
        .get(&format!("/api/v2/torrents/properties?hash={}", done.hash))
        .json();
    assert_eq!(p["save_path"], cat_dir.display().to_string());
    assert!(p["seeding_time"].is_u64());
    let files = s
        .get(&format!("/api/v2/torrents/files?hash={}", done.hash))
        .json();
    let files = files.as_array().unwrap();
    assert!(!files.is_empty());
    for f in files {
        assert!(f["name"].as_str().unwrap().starts_with("episode/"), "{f}");
        assert_eq!(f["progress"], 1.0);
        assert!(cat_dir.join(f["name"].as_str().unwrap()).is_file());
    }

    // 6. After import: a new category, then remove with the data.
    s.post("/api/v2/torrents/createCategory", "category=tv-imported");
    let r = s.post(
        "/api/v2/torrents/setCategory",
        &format!("hashes={}&category=tv-imported", done.hash),
    );
    assert_eq!(r.status, 200);
    assert_eq!(s.info("tv-imported").len(), 1);
    assert_eq!(s.info("tv-sonarr").len(), 2);
    let r = s.post(
        "/api/v2/torrents/delete",
        &format!("hashes={}&deleteFiles=true", done.hash),
    );
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while content_path.exists() || !s.info("tv-imported").is_empty() {
        assert!(Instant::now() < deadline, "not removed in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Logged out, the cookie is refused again.
    s.post("/api/v2/auth/logout", "");
    assert_eq!(s.get("/api/v2/app/version").status, 403);
}
