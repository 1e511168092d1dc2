//! qBittorrent's Web API v2 driven in process (no socket): the gate's
//! authentication matrix, where parameters come from, each endpoint's
//! shape and errors, and sync/maindata's diffs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::Router;
use lodestone_daemon::server::{Access, Server};
use serde_json::Value;

const FORM: &str = "application/x-www-form-urlencoded";
const MAGNET: &str = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=a%20show";
const MAGNET_HASH: &str = "0123456789abcdef0123456789abcdef01234567";

use common::{call, Reply, LOCAL};

async fn server(dir: &std::path::Path, access: Access) -> Arc<Server> {
    common::server(dir, access, 7).await
}

fn with_password() -> Access {
    Access {
        credentials: Some(("user".into(), "pass".into())),
        ..Access::default()
    }
}

/// A client with (or without) a cookie.
struct Client<'a> {
    app: &'a Router,
    cookie: Option<String>,
}

impl Client<'_> {
    fn headers(&self) -> Vec<(&str, &str)> {
        match &self.cookie {
            Some(c) => vec![(header::COOKIE.as_str(), c.as_str())],
            None => vec![],
        }
    }

    async fn get(&self, path: &str) -> Reply {
        call(self.app, LOCAL, "GET", path, &self.headers(), Body::empty()).await
    }

    async fn post(&self, path: &str, form: &str) -> Reply {
        let mut h = self.headers();
        h.push((header::CONTENT_TYPE.as_str(), FORM));
        call(self.app, LOCAL, "POST", path, &h, form.to_owned()).await
    }

    async fn multipart(&self, path: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Reply {
        let boundary = "----lodestoneBoundary7MA4YWxk";
        let mut body = Vec::new();
        for (name, filename, value) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: application/x-bittorrent\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(value);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={boundary}");
        let mut h = self.headers();
        h.push((header::CONTENT_TYPE.as_str(), ct.as_str()));
        call(self.app, LOCAL, "POST", path, &h, body).await
    }
}

/// A one-file .torrent (a tracker, `size` bytes named `name`).
fn torrent(name: &str, size: u64) -> Vec<u8> {
    let pieces = size.div_ceil(16384).max(1) as usize;
    let mut b = Vec::new();
    b.extend_from_slice(b"d8:announce17:http://t/announce4:infod6:lengthi");
    b.extend_from_slice(size.to_string().as_bytes());
    b.extend_from_slice(format!("e4:name{}:{}", name.len(), name).as_bytes());
    b.extend_from_slice(b"12:piece lengthi16384e6:pieces");
    b.extend_from_slice(format!("{}:", pieces * 20).as_bytes());
    b.extend(std::iter::repeat_n(7u8, pieces * 20));
    b.extend_from_slice(b"ee");
    b
}

#[tokio::test]
async fn the_gate_asks_each_api_for_its_own_login() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), with_password()).await;
    let app = server.router();
    let anon = Client {
        app: &app,
        cookie: None,
    };
    // qBittorrent's answer before login: 403 (Sonarr takes it for "v2").
    let r = anon.get("/api/v2/app/webapiVersion").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::FORBIDDEN, "Forbidden")
    );
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    // The native API: JSON 401 and no challenge (no browser dialog).
    let r = anon.get("/api/v1/session").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::WWW_AUTHENTICATE).is_none());
    assert!(r.json()["error"].is_string());
    // Transmission's RPC and /metrics keep the Basic challenge.
    for path in ["/transmission/rpc", "/metrics"] {
        let r = anon.post(path, "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            r.headers[header::WWW_AUTHENTICATE],
            "Basic realm=\"Transmission\""
        );
    }
    // The web page's files pass (they hold no data).
    let r = anon.get("/index.html").await;
    assert_ne!(r.status, StatusCode::UNAUTHORIZED);
    assert_ne!(r.status, StatusCode::FORBIDDEN);
    // Wrong password: 200 Fails., no cookie.
    let r = anon
        .post("/api/v2/auth/login", "username=user&password=nope")
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "Fails."));
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    // Right one: Ok. and qBittorrent's cookie.
    let r = anon
        .post("/api/v2/auth/login", "username=user&password=pass")
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "Ok."));
    let set_cookie = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("SID="), "{set_cookie}");
    assert!(set_cookie.ends_with("; HttpOnly; SameSite=Lax; path=/"));
    let sid = set_cookie
        .trim_start_matches("SID=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(sid.len() >= 32);
    // The cookie back, with the attributes pasted after it (cross-seed).
    let me = Client {
        app: &app,
        cookie: Some(set_cookie.clone()),
    };
    let r = me.get("/api/v2/app/webapiVersion").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "2.11.4"));
    // The cookie opens the native API too.
    let r = me.get("/api/v1/session").await;
    assert_eq!(r.status, StatusCode::OK);
    // CSRF: an Origin or Referer of another host is refused; ours is fine.
    let cookie = format!("SID={sid}");
    for (h, v, want) in [
        ("origin", "http://evil.example", StatusCode::UNAUTHORIZED),
        (
            "referer",
            "http://evil.example:9091/x",
            StatusCode::UNAUTHORIZED,
        ),
        ("origin", "http://127.0.0.1:9091", StatusCode::OK),
        (
            "referer",
            "http://127.0.0.1:9091/index.html",
            StatusCode::OK,
        ),
    ] {
        for path in ["/api/v2/app/version", "/api/v1/session"] {
            let r = call(
                &app,
                LOCAL,
                "GET",
                path,
                &[("cookie", cookie.as_str()), (h, v)],
                Body::empty(),
            )
            .await;
            assert_eq!(r.status, want, "{path} {h}: {v}");
            if want == StatusCode::UNAUTHORIZED {
                assert_eq!(r.text(), "Unauthorized");
            }
        }
    }
    // Basic credentials work on /api/v2 too.
    let r = call(
        &app,
        LOCAL,
        "GET",
        "/api/v2/app/version",
        &[("authorization", "Basic dXNlcjpwYXNz")],
        Body::empty(),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "v5.1.4"));
    // Sessions end an hour after their last use.
    let now = Instant::now();
    assert!(server.qbt.auth.check(sid.as_bytes(), now));
    assert!(!server
        .qbt
        .auth
        .check(sid.as_bytes(), now + Duration::from_secs(3601)));
    // Logout ends the session.
    let r = anon
        .multipart(
            "/api/v2/auth/login",
            &[("username", None, b"user"), ("password", None, b"pass")],
        )
        .await;
    assert_eq!(r.text(), "Ok.", "a multipart login");
    let c = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    let me = Client {
        app: &app,
        cookie: Some(c),
    };
    assert_eq!(me.get("/api/v2/app/version").await.status, StatusCode::OK);
    assert_eq!(
        me.post("/api/v2/auth/logout", "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        me.get("/api/v2/app/version").await.status,
        StatusCode::FORBIDDEN
    );
    // A made-up cookie is nobody.
    let fake = Client {
        app: &app,
        cookie: Some("SID=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
    };
    assert_eq!(
        fake.get("/api/v2/app/version").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn five_failed_logins_ban_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), with_password()).await.router();
    let login = |from: &'static str, pw: &'static str| {
        let app = app.clone();
        async move {
            call(
                &app,
                from,
                "POST",
                "/api/v2/auth/login",
                &[("content-type", FORM)],
                format!("username=user&password={pw}"),
            )
            .await
        }
    };
    for _ in 0..5 {
        assert_eq!(login("127.0.0.2:1", "nope").await.text(), "Fails.");
    }
    let r = login("127.0.0.2:1", "pass").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.text(),
        "Your IP address has been banned after too many failed authentication attempts."
    );
    // Another address is not banned.
    assert_eq!(login("127.0.0.3:1", "pass").await.text(), "Ok.");
}

#[tokio::test]
async fn without_a_password_login_still_gives_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let anon = Client {
        app: &app,
        cookie: None,
    };
    let r = anon
        .post("/api/v2/auth/login", "username=x&password=y")
        .await;
    assert_eq!(r.text(), "Ok.");
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .starts_with("SID="));
    assert_eq!(anon.get("/api/v2/app/version").await.text(), "v5.1.4");
    // Transmission's RPC behaves as before: its 409 handshake.
    let r = anon.post("/transmission/rpc", "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.headers.contains_key("x-transmission-session-id"));
    // And the native API.
    assert_eq!(anon.get("/api/v1/session").await.status, StatusCode::OK);
}

#[tokio::test]
async fn app_endpoints_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let c = Client {
        app: &app,
        cookie: None,
    };
    assert_eq!(c.get("/api/v2/app/version").await.text(), "v5.1.4");
    // cross-seed POSTs its reads as forms.
    assert_eq!(
        c.post("/api/v2/app/webapiVersion", "").await.text(),
        "2.11.4"
    );
    assert!(c.get("/api/v2/app/buildInfo").await.json()["libtorrent"].is_string());
    let prefs = c.get("/api/v2/app/preferences").await.json();
    for key in [
        "save_path",
        "max_ratio_enabled",
        "max_ratio",
        "max_seeding_time_enabled",
        "max_seeding_time",
        "max_inactive_seeding_time_enabled",
        "max_inactive_seeding_time",
        "max_ratio_act",
        "queueing_enabled",
        "dht",
        "pex",
        "lsd",
        "resume_data_storage_type",
        "listen_port",
        "up_limit",
        "dl_limit",
    ] {
        assert!(prefs.get(key).is_some(), "preferences lack {key}");
    }
    assert_eq!(prefs["queueing_enabled"], false);
    assert_eq!(prefs["save_path"], dir.path().to_string_lossy().as_ref());
    assert_eq!(
        c.get("/api/v2/app/defaultSavePath").await.text(),
        dir.path().to_string_lossy()
    );
    // setPreferences: our keys apply, others are ignored.
    let r = c
        .post(
            "/api/v2/app/setPreferences",
            "json=%7B%22dl_limit%22%3A2048000%2C%22max_ratio_enabled%22%3Atrue%2C%22max_ratio%22%3A1.5%2C%22web_ui_clickjacking_protection_enabled%22%3Atrue%7D",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let prefs = c.get("/api/v2/app/preferences").await.json();
    assert_eq!(prefs["dl_limit"], 2048000);
    assert_eq!(prefs["max_ratio_enabled"], true);
    assert_eq!(prefs["max_ratio"], 1.5);
    assert_eq!(
        c.post("/api/v2/app/setPreferences", "").await.status,
        StatusCode::BAD_REQUEST
    );
    let t = c.get("/api/v2/transfer/info").await.json();
    for key in [
        "dl_info_speed",
        "dl_info_data",
        "up_info_speed",
        "up_info_data",
        "dl_rate_limit",
        "up_rate_limit",
        "dht_nodes",
        "connection_status",
    ] {
        assert!(t.get(key).is_some(), "transfer/info lacks {key}");
    }
    assert_eq!(t["dl_rate_limit"], 2048000);
    // The alternative limits, as qBittorrent's speed limits mode.
    assert_eq!(c.get("/api/v2/transfer/speedLimitsMode").await.text(), "0");
    assert_eq!(
        c.get("/api/v2/transfer/downloadLimit").await.text(),
        "2048000"
    );
    c.post("/api/v2/transfer/toggleSpeedLimitsMode", "").await;
    assert_eq!(c.get("/api/v2/transfer/speedLimitsMode").await.text(), "1");
    c.post("/api/v2/transfer/setDownloadLimit", "limit=5000")
        .await;
    assert_eq!(c.get("/api/v2/transfer/downloadLimit").await.text(), "5000");
    c.post("/api/v2/transfer/setSpeedLimitsMode", "mode=0")
        .await;
    assert_eq!(
        c.get("/api/v2/transfer/downloadLimit").await.text(),
        "2048000"
    );
    // A write by GET: 405; an unknown call: 404.
    let r = c
        .get("/api/v2/torrents/delete?hashes=all&deleteFiles=false")
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
    );
    assert_eq!(
        c.get("/api/v2/torrents/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(c.get("/api/v2/nope").await.status, StatusCode::NOT_FOUND);
    let r = c.put_like().await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

impl Client<'_> {
    /// One torrent as torrents/info shows it.
    async fn one(&self, hash: &str) -> Value {
        self.get(&format!("/api/v2/torrents/info?hashes={hash}"))
            .await
            .json()[0]
            .clone()
    }

    async fn put_like(&self) -> Reply {
        call(
            self.app,
            LOCAL,
            "PUT",
            "/api/v2/app/version",
            &[],
            Body::empty(),
        )
        .await
    }
}

#[tokio::test]
async fn torrents_add_list_change_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let c = Client {
        app: &app,
        cookie: None,
    };
    // Categories: Sonarr creates its own.
    let cats = c.get("/api/v2/torrents/categories").await.json();
    assert_eq!(cats["tv"]["name"], "tv");
    let r = c
        .post(
            "/api/v2/torrents/createCategory",
            "category=tv-sonarr&savePath=",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = c
        .post("/api/v2/torrents/createCategory", "category=tv-sonarr")
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::CONFLICT, "Unable to create category")
    );
    assert_eq!(
        c.post("/api/v2/torrents/createCategory", "category=")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.post("/api/v2/torrents/createCategory", "savePath=x")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let r = c
        .post("/api/v2/torrents/editCategory", "category=nope&savePath=x")
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let cats = c.get("/api/v2/torrents/categories").await.json();
    let sonarr_dir = dir.path().join("tv-sonarr");
    assert_eq!(
        cats["tv-sonarr"]["savePath"],
        sonarr_dir.to_string_lossy().as_ref()
    );
    // A magnet, stopped, in the category (Sonarr's urlencoded add).
    let form = format!(
        "urls={}&category=tv-sonarr&stopped=true&ratioLimit=1.5",
        form_encode(MAGNET)
    );
    let r = c.post("/api/v2/torrents/add", &form).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "Ok."));
    // The same again: qBittorrent fails a duplicate.
    assert_eq!(c.post("/api/v2/torrents/add", &form).await.text(), "Fails.");
    // A .torrent in a multipart add with tags (cross-seed's way).
    let file = torrent("episode.mkv", 40000);
    let r = c
        .multipart(
            "/api/v2/torrents/add",
            &[
                ("torrents", Some("episode.torrent"), &file),
                ("tags", None, b"cross-seed, x"),
                ("paused", None, b"true"),
                ("skip_checking", None, b"true"),
            ],
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "Ok."));
    // Not a torrent: 415.
    let r = c
        .multipart(
            "/api/v2/torrents/add",
            &[("torrents", Some("bad.torrent"), b"nope")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        r.text(),
        "Error: 'bad.torrent' is not a valid torrent file."
    );
    assert_eq!(
        c.post("/api/v2/torrents/add", "urls=").await.text(),
        "Fails."
    );

    let all = c.get("/api/v2/torrents/info").await.json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let list = c
        .get("/api/v2/torrents/info?category=tv-sonarr")
        .await
        .json();
    let m = &list[0];
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(m["hash"], MAGNET_HASH);
    assert_eq!(m["name"], "a show");
    assert_eq!(m["state"], "stoppedDL");
    assert_eq!(m["size"], 0);
    assert_eq!(m["category"], "tv-sonarr");
    assert_eq!(m["ratio_limit"], 1.5);
    assert_eq!(m["seeding_time_limit"], -2);
    assert_eq!(m["save_path"], sonarr_dir.to_string_lossy().as_ref());
    assert_eq!(m["content_path"], m["save_path"]);
    for key in [
        "hash",
        "name",
        "size",
        "progress",
        "eta",
        "state",
        "category",
        "tags",
        "save_path",
        "content_path",
        "ratio",
        "ratio_limit",
        "seeding_time_limit",
        "inactive_seeding_time_limit",
        "last_activity",
        "added_on",
        "completion_on",
        "dlspeed",
        "upspeed",
        "downloaded",
        "uploaded",
        "num_seeds",
        "num_leechs",
        "num_complete",
        "num_incomplete",
        "amount_left",
        "total_size",
        "magnet_uri",
        "priority",
        "seq_dl",
        "f_l_piece_prio",
        "force_start",
        "super_seeding",
        "infohash_v1",
        "infohash_v2",
        "tracker",
        "trackers_count",
        "seeding_time",
        "time_active",
        "availability",
        "dl_limit",
        "up_limit",
        "completed",
        "auto_tmm",
        "download_path",
        "max_ratio",
        "max_seeding_time",
        "private",
    ] {
        assert!(m.get(key).is_some(), "torrents/info lacks {key}");
    }
    let ep = c.get("/api/v2/torrents/info?tag=cross-seed").await.json();
    let ep = &ep[0];
    assert_eq!(ep["name"], "episode.mkv");
    assert_eq!(ep["tags"], "cross-seed, x");
    assert_eq!(ep["category"], "");
    assert_eq!(ep["size"], 40000);
    assert_eq!(ep["trackers_count"], 1);
    assert_eq!(
        ep["content_path"],
        dir.path().join("episode.mkv").to_string_lossy().as_ref()
    );
    let hash = ep["hash"].as_str().unwrap().to_owned();
    // Filters, hashes, sort, limit and offset.
    assert_eq!(
        c.get("/api/v2/torrents/info?filter=stopped")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        c.get("/api/v2/torrents/info?filter=paused")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        c.get("/api/v2/torrents/info?filter=seeding")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        c.get("/api/v2/torrents/info?category=").await.json()[0]["hash"],
        hash.as_str()
    );
    assert_eq!(
        c.get("/api/v2/torrents/info?tag=").await.json()[0]["hash"],
        MAGNET_HASH
    );
    let one = c
        .get(&format!("/api/v2/torrents/info?hashes={hash}"))
        .await
        .json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    let sorted = c.get("/api/v2/torrents/info?sort=name").await.json();
    assert_eq!(sorted[0]["name"], "a show");
    let sorted = c
        .get("/api/v2/torrents/info?sort=name&reverse=true")
        .await
        .json();
    assert_eq!(sorted[0]["name"], "episode.mkv");
    let page = c
        .get("/api/v2/torrents/info?sort=name&limit=1&offset=1")
        .await
        .json();
    assert_eq!(
        (page.as_array().unwrap().len(), page[0]["name"].clone()),
        (1, "episode.mkv".into())
    );
    let r = c.get("/api/v2/torrents/info?sort=bogus").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::BAD_REQUEST, "'sort' parameter is invalid")
    );
    assert_eq!(c.get("/api/v2/torrents/count").await.text(), "2");

    // Properties, files, trackers.
    assert_eq!(
        c.get("/api/v2/torrents/properties").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.get("/api/v2/torrents/properties?hash=ffffffffffffffffffffffffffffffffffffffff")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let p = c
        .get(&format!("/api/v2/torrents/properties?hash={hash}"))
        .await
        .json();
    assert_eq!(p["save_path"], dir.path().to_string_lossy().as_ref());
    assert_eq!(p["total_size"], 40000);
    assert_eq!(p["pieces_num"], 3);
    assert_eq!(p["piece_size"], 16384);
    assert!(p["seeding_time"].is_u64());
    let f = c
        .get(&format!("/api/v2/torrents/files?hash={hash}"))
        .await
        .json();
    assert_eq!(f[0]["index"], 0);
    assert_eq!(f[0]["name"], "episode.mkv");
    assert_eq!(f[0]["size"], 40000);
    assert_eq!(f[0]["priority"], 1);
    assert_eq!(f[0]["piece_range"], serde_json::json!([0, 2]));
    assert_eq!(f[0]["is_seed"], false);
    assert_eq!(
        c.get(&format!("/api/v2/torrents/files?hash={MAGNET_HASH}"))
            .await
            .json(),
        serde_json::json!([])
    );
    let r = c
        .post(
            "/api/v2/torrents/filePrio",
            &format!("hash={MAGNET_HASH}&id=0&priority=0"),
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::CONFLICT,
            "Torrent's metadata has not yet downloaded"
        )
    );
    // A priority qBittorrent has not, a file it has not, then high.
    for (form, want) in [
        ("id=0&priority=3", StatusCode::BAD_REQUEST),
        ("id=x&priority=6", StatusCode::BAD_REQUEST),
        ("id=1&priority=6", StatusCode::CONFLICT),
        ("id=0&priority=6", StatusCode::OK),
    ] {
        let r = c
            .post("/api/v2/torrents/filePrio", &format!("hash={hash}&{form}"))
            .await;
        assert_eq!(r.status, want, "{form}: {}", r.text());
    }
    let f = c
        .get(&format!("/api/v2/torrents/files?hash={hash}"))
        .await
        .json();
    assert_eq!(f[0]["priority"], 6);
    let tr = c
        .get(&format!("/api/v2/torrents/trackers?hash={hash}"))
        .await
        .json();
    let urls: Vec<&str> = tr
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "** [DHT] **",
            "** [PeX] **",
            "** [LSD] **",
            "http://t/announce"
        ]
    );
    assert_eq!(tr[0]["tier"], -1);
    // DHT is off in this daemon: the row says so.
    assert_eq!(tr[0]["status"], 0);
    assert_eq!(tr[3]["tier"], 0);
    assert_eq!(tr[3]["status"], 1);

    // Category and tags.
    let r = c
        .post(
            "/api/v2/torrents/setCategory",
            &format!("hashes={hash}&category=nope"),
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::CONFLICT, "Incorrect category name")
    );
    assert_eq!(
        c.post(
            "/api/v2/torrents/setCategory",
            &format!("hashes={hash}&category=tv")
        )
        .await
        .status,
        StatusCode::OK
    );
    let ep = &c.one(&hash).await;
    assert_eq!(
        (ep["category"].clone(), ep["tags"].clone()),
        ("tv".into(), "cross-seed, x".into())
    );
    c.post(
        "/api/v2/torrents/setCategory",
        &format!("hashes={hash}&category="),
    )
    .await;
    assert_eq!(c.one(&hash).await["category"], "");
    c.post(
        "/api/v2/torrents/addTags",
        &format!("hashes={hash}|{MAGNET_HASH}&tags=new"),
    )
    .await;
    c.post(
        "/api/v2/torrents/removeTags",
        &format!("hashes={hash}&tags=x"),
    )
    .await;
    c.post("/api/v2/torrents/createTags", "tags=loose,other")
        .await;
    let tags = c.get("/api/v2/torrents/tags").await.json();
    assert_eq!(
        tags,
        serde_json::json!(["cross-seed", "loose", "new", "other"])
    );
    c.post("/api/v2/torrents/deleteTags", "tags=new,loose")
        .await;
    assert_eq!(
        c.get("/api/v2/torrents/tags").await.json(),
        serde_json::json!(["cross-seed", "other"])
    );
    assert_eq!(
        c.get("/api/v2/torrents/info?category=tv-sonarr")
            .await
            .json()[0]["tags"],
        ""
    );

    // Share limits, queue, force start, the engine's no-ops.
    assert_eq!(
        c.post(
            "/api/v2/torrents/setShareLimits",
            &format!("hashes={hash}&ratioLimit=2&seedingTimeLimit=-2&inactiveSeedingTimeLimit=30")
        )
        .await
        .status,
        StatusCode::OK
    );
    let ep = &c.one(&hash).await;
    assert_eq!(
        (
            ep["ratio_limit"].clone(),
            ep["inactive_seeding_time_limit"].clone()
        ),
        (2.0.into(), 30.into())
    );
    let r = c
        .post("/api/v2/torrents/topPrio", &format!("hashes={hash}"))
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::CONFLICT, "Torrent queueing must be enabled")
    );
    assert_eq!(
        c.post("/api/v2/torrents/topPrio", "").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.post(
            "/api/v2/torrents/toggleSequentialDownload",
            &format!("hashes={hash}")
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        c.post(
            "/api/v2/torrents/addTrackers",
            &format!("hash={hash}&urls=http://u/announce")
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        c.post(
            "/api/v2/torrents/addTrackers",
            "hash=ffffffffffffffffffffffffffffffffffffffff&urls=x"
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    c.post(
        "/api/v2/torrents/setForceStart",
        &format!("hashes={hash}&value=true"),
    )
    .await;
    let ep = &c.one(&hash).await;
    assert_eq!(ep["force_start"], true);
    // Start and stop by both names.
    assert_eq!(
        c.post("/api/v2/torrents/stop", &format!("hashes={hash}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(c.one(&hash).await["state"], "stoppedDL");
    assert_eq!(
        c.post("/api/v2/torrents/resume", "hashes=all").await.status,
        StatusCode::OK
    );
    let m = &c.one(MAGNET_HASH).await;
    assert_eq!(m["state"], "metaDL");
    assert_eq!(
        c.post("/api/v2/torrents/pause", "hashes=all").await.status,
        StatusCode::OK
    );
    let r = c
        .post(
            "/api/v2/torrents/setLocation",
            &format!("hashes={hash}&location="),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Delete: both parameters are needed; unknown hashes are skipped.
    assert_eq!(
        c.post("/api/v2/torrents/delete", &format!("hashes={hash}"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let r = c
        .post(
            "/api/v2/torrents/delete",
            &format!("hashes={hash}|ffffffffffffffffffffffffffffffffffffffff&deleteFiles=true"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let list = c.get("/api/v2/torrents/info").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn maindata_sends_everything_then_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let c = Client {
        app: &app,
        cookie: None,
    };
    let a = torrent("a.bin", 1000);
    let b = torrent("b.bin", 2000);
    for f in [&a, &b] {
        let r = c
            .multipart(
                "/api/v2/torrents/add",
                &[
                    ("torrents", Some("x.torrent"), f),
                    ("stopped", None, b"true"),
                ],
            )
            .await;
        assert_eq!(r.text(), "Ok.");
    }
    let full = c.get("/api/v2/sync/maindata?rid=0").await.json();
    assert_eq!(full["full_update"], true);
    let torrents = full["torrents"].as_object().unwrap();
    assert_eq!(torrents.len(), 2);
    let (hash_a, ta) = torrents.iter().find(|(_, t)| t["name"] == "a.bin").unwrap();
    let hash_a = hash_a.clone();
    assert_eq!(ta["state"], "stoppedDL");
    assert!(ta.get("hash").is_none());
    assert!(full["categories"]["tv"].is_object());
    assert!(full["server_state"]["dl_info_speed"].is_number());
    assert!(full["trackers"]["http://t/announce"].is_array());
    let rid = full["rid"].as_u64().unwrap();
    // Nothing changed: nothing but the rid.
    let same = c
        .get(&format!("/api/v2/sync/maindata?rid={rid}"))
        .await
        .json();
    assert!(same.get("full_update").is_none(), "{same}");
    assert!(same.get("torrents").is_none(), "{same}");
    let rid = same["rid"].as_u64().unwrap();
    // A change to one torrent: only its changed fields.
    c.post(
        "/api/v2/torrents/setShareLimits",
        &format!("hashes={hash_a}&ratioLimit=3&seedingTimeLimit=-2"),
    )
    .await;
    let diff = c
        .get(&format!("/api/v2/sync/maindata?rid={rid}"))
        .await
        .json();
    let changed = diff["torrents"].as_object().unwrap();
    assert_eq!(changed.len(), 1, "{diff}");
    let fields = changed[&hash_a].as_object().unwrap();
    assert_eq!(fields["ratio_limit"], 3.0);
    assert!(
        fields.get("name").is_none() && fields.get("save_path").is_none(),
        "{diff}"
    );
    let rid2 = diff["rid"].as_u64().unwrap();
    // Started: its state changes (a .torrent with no peer: stalledDL or checking).
    c.post("/api/v2/torrents/start", &format!("hashes={hash_a}"))
        .await;
    let diff = c
        .get(&format!("/api/v2/sync/maindata?rid={rid2}"))
        .await
        .json();
    let st = diff["torrents"][&hash_a]["state"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(st.ends_with("DL"), "{diff}");
    assert!(diff["torrents"][&hash_a].get("name").is_none());
    let rid3 = diff["rid"].as_u64().unwrap();
    // Removed: in torrents_removed; a new category: in categories.
    c.post(
        "/api/v2/torrents/delete",
        &format!("hashes={hash_a}&deleteFiles=false"),
    )
    .await;
    c.post("/api/v2/torrents/createCategory", "category=films")
        .await;
    c.post("/api/v2/torrents/removeCategories", "categories=tv")
        .await;
    let diff = c
        .get(&format!("/api/v2/sync/maindata?rid={rid3}"))
        .await
        .json();
    assert_eq!(
        diff["torrents_removed"],
        serde_json::json!([hash_a]),
        "{diff}"
    );
    assert!(diff["categories"]["films"].is_object(), "{diff}");
    assert_eq!(diff["categories_removed"], serde_json::json!(["tv"]));
    // A rid we never gave: everything again.
    let again = c.get("/api/v2/sync/maindata?rid=999999").await.json();
    assert_eq!(again["full_update"], true);
    assert_eq!(again["torrents"].as_object().unwrap().len(), 1);
    // The older of the last two answers still works (a lost answer).
    let r1 = again["rid"].as_u64().unwrap();
    let r2 = c
        .get(&format!("/api/v2/sync/maindata?rid={r1}"))
        .await
        .json()["rid"]
        .as_u64()
        .unwrap();
    assert!(r2 > r1);
    let back = c
        .get(&format!("/api/v2/sync/maindata?rid={r1}"))
        .await
        .json();
    assert!(back.get("full_update").is_none(), "{back}");
}

#[tokio::test]
async fn torrent_peers_answer_with_rids() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let c = Client {
        app: &app,
        cookie: None,
    };
    c.post(
        "/api/v2/torrents/add",
        &format!("urls={}", form_encode(MAGNET)),
    )
    .await;
    let r = c
        .get(&format!(
            "/api/v2/sync/torrentPeers?hash={MAGNET_HASH}&rid=0"
        ))
        .await
        .json();
    assert_eq!(r["full_update"], true);
    assert_eq!(r["peers"], serde_json::json!({}));
    assert_eq!(r["show_flags"], true);
    let rid = r["rid"].as_u64().unwrap();
    let r = c
        .get(&format!(
            "/api/v2/sync/torrentPeers?hash={MAGNET_HASH}&rid={rid}"
        ))
        .await
        .json();
    assert!(r.get("full_update").is_none());
    assert_eq!(
        c.get("/api/v2/sync/torrentPeers?hash=ffffffffffffffffffffffffffffffffffffffff")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}
