//! The daemon's HTTP surface driven in process (no socket): the gate's
//! order of checks, the RPC's session id, the native API's guard, the
//! event stream and /metrics.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use lodestone_daemon::server::{Access, Server};
use tower::ServiceExt;

use common::{request as req, send, Reply, LOCAL};

async fn server(dir: &std::path::Path, access: Access) -> Arc<Server> {
    common::server(dir, access, 7).await
}

/// One request from a loopback address: method, path, headers, body.
async fn call(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Reply {
    common::call(app, LOCAL, method, path, headers, body).await
}

async fn call_from(
    from: &str,
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Reply {
    common::call(app, from, method, path, headers, body).await
}

#[tokio::test]
async fn checks_come_in_transmissions_order() {
    let dir = tempfile::tempdir().unwrap();
    let access = Access {
        credentials: Some(("user".into(), "pass".into())),
        ..Access::default()
    };
    let app = server(dir.path(), access).await.router();
    // An address outside the allow-list: 403 before anything else.
    let r = call_from(
        "192.0.2.1:5000",
        &app,
        "GET",
        "/nowhere",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // No credentials: 401 with the challenge transmission-remote waits for.
    let r = call(&app, "POST", "/transmission/rpc", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers[header::WWW_AUTHENTICATE],
        "Basic realm=\"Transmission\""
    );
    let wrong = "Basic dXNlcjpwYXNz"; // user:pass
    let bad = "Basic dXNlcjpub3Bl"; // user:nope
    let r = call(
        &app,
        "POST",
        "/transmission/rpc",
        &[(header::AUTHORIZATION.as_str(), bad)],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // With a password any Host is fine; an unknown path is 404.
    let r = call(
        &app,
        "GET",
        "/nowhere",
        &[
            (header::HOST.as_str(), "evil.example"),
            (header::AUTHORIZATION.as_str(), wrong),
        ],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The RPC without a session id: 409 and the id, for a GET too (Sonarr's first call).
    let r = call(
        &app,
        "GET",
        "/transmission/rpc",
        &[(header::AUTHORIZATION.as_str(), wrong)],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let id = r.headers["x-transmission-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 48);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    // With the id: GET is 405, POST is answered.
    let r = call(
        &app,
        "GET",
        "/transmission/rpc",
        &[
            (header::AUTHORIZATION.as_str(), wrong),
            ("X-Transmission-Session-Id", id.as_str()),
        ],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let body =
        r#"{"method":"session-get","arguments":{"fields":["version","rpc-version"]},"tag":3}"#;
    let r = call(
        &app,
        "POST",
        "/transmission/rpc/",
        &[
            (header::AUTHORIZATION.as_str(), wrong),
            ("X-Transmission-Session-Id", id.as_str()),
            (
                header::CONTENT_TYPE.as_str(),
                "application/x-www-form-urlencoded",
            ),
        ],
        Body::from(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["result"], "success");
    assert_eq!(j["tag"], 3);
    assert_eq!(j["arguments"]["rpc-version"], 17);
    assert!(j["arguments"]["version"]
        .as_str()
        .unwrap()
        .starts_with("4.0.6 (Lodestone"));
}

#[tokio::test]
async fn without_a_password_only_local_names_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let get = |host: &str| {
        Request::builder()
            .uri("/transmission/rpc")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    for host in [
        "evil.example",
        "evil.example:9091",
        "localhost.evil.example",
    ] {
        let r = send(&app, LOCAL, get(host)).await;
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
    }
    for host in ["localhost:9091", "127.0.0.1", "[::1]:9091", "localhost."] {
        let r = send(&app, LOCAL, get(host)).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{host}");
    }
    // A second Host header (a local one after a foreign one) does not pass.
    let mut two = get("evil.example");
    two.headers_mut()
        .append(header::HOST, "127.0.0.1".parse().unwrap());
    assert_eq!(
        send(&app, LOCAL, two).await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
}

#[tokio::test]
async fn a_rotated_session_id_is_refused_with_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), Access::default()).await;
    let app = server.router();
    let first = call(&app, "POST", "/transmission/rpc", &[], Body::empty()).await;
    let old = first.headers["x-transmission-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    server.rotate_session_id();
    let r = call(
        &app,
        "POST",
        "/transmission/rpc",
        &[("X-Transmission-Session-Id", &old)],
        Body::from("{}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let new = r.headers["x-transmission-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(old, new);
    let r = call(
        &app,
        "POST",
        "/transmission/rpc",
        &[("X-Transmission-Session-Id", &new)],
        Body::from("{}"),
    )
    .await;
    assert_eq!(r.json()["result"], "no method name");
}

#[tokio::test]
async fn bodies_past_64_mib_get_413() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let big = vec![b' '; (64 << 20) + 1];
    let r = call(
        &app,
        "POST",
        "/api/v1/torrents",
        &[(header::CONTENT_TYPE.as_str(), "application/json")],
        Body::from(big),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_native_api_adds_lists_pauses_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let magnet = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=a%20name";
    // A form post (what a cross-site page can send) is refused.
    let r = call(
        &app,
        "POST",
        "/api/v1/torrents",
        &[(
            header::CONTENT_TYPE.as_str(),
            "application/x-www-form-urlencoded",
        )],
        Body::from("magnet=x"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let add = serde_json::json!({"magnet": magnet, "labels": ["tv"]}).to_string();
    let r = call(
        &app,
        "POST",
        "/api/v1/torrents",
        &[(header::CONTENT_TYPE.as_str(), "application/json")],
        Body::from(add.clone()),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let id = r.json()["id"].as_u64().unwrap();
    let r = call(
        &app,
        "POST",
        "/api/v1/torrents",
        &[(header::CONTENT_TYPE.as_str(), "application/json")],
        Body::from(add),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["new"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let r = call(&app, "GET", "/api/v1/torrents", &[], Body::empty()).await;
    let list = r.json();
    let t = &list["torrents"][0];
    assert_eq!(t["name"], "a name");
    assert_eq!(t["state"], "metadata");
    assert_eq!(t["labels"], serde_json::json!(["tv"]));
    assert_eq!(t["total_size"], 0);
    // By hash too.
    let by_hash = "/api/v1/torrents/0123456789abcdef0123456789abcdef01234567";
    let r = call(&app, "GET", by_hash, &[], Body::empty()).await;
    assert_eq!(r.json()["id"].as_u64(), Some(id));
    let r = call(
        &app,
        "POST",
        &format!("/api/v1/torrents/{id}/pause"),
        &[(header::CONTENT_TYPE.as_str(), "application/json")],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["state"], "stopped");
    assert_eq!(
        r.json()["error"],
        serde_json::Value::Null,
        "a pause is no error"
    );
    let r = call(
        &app,
        "DELETE",
        &format!("/api/v1/torrents/{id}"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &app,
        "GET",
        &format!("/api/v1/torrents/{id}"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Hostile input is refused with words, not a panic.
    for body in [
        "{",
        "[]",
        r#"{"magnet":"magnet:?xt=urn:btih:zz"}"#,
        r#"{"magnet":"x","url":"y"}"#,
        r#"{"nope":1}"#,
    ] {
        let r = call(
            &app,
            "POST",
            "/api/v1/torrents",
            &[(header::CONTENT_TYPE.as_str(), "application/json")],
            Body::from(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let r = call(
        &app,
        "POST",
        "/api/v1/torrents",
        &[(header::CONTENT_TYPE.as_str(), "application/x-bittorrent")],
        Body::from("d4:infoi3ee"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid or corrupt torrent file"));
}

#[tokio::test]
async fn the_event_stream_sends_changes() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let mut stream = {
        let mut r = req("GET", "/api/v1/events").body(Body::empty()).unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(LOCAL.parse::<SocketAddr>().unwrap()));
        app.clone()
            .oneshot(r)
            .await
            .unwrap()
            .into_body()
            .into_data_stream()
    };
    let add = r#"{"magnet":"magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567"}"#;
    call(
        &app,
        "POST",
        "/api/v1/torrents",
        &[(header::CONTENT_TYPE.as_str(), "application/json")],
        Body::from(add),
    )
    .await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    use futures_util::StreamExt;
    let mut removed = false;
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("events within 10 s; got {seen:?}"));
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
        if seen.contains("event: removed") {
            break;
        }
        // The add was said; now remove it (within the same second it
        // would only be said removed).
        if seen.contains("event: torrent") && !removed {
            assert!(seen.contains("\"state\":\"metadata\""), "{seen}");
            call(&app, "DELETE", "/api/v1/torrents/1", &[], Body::empty()).await;
            removed = true;
        }
    }
    assert!(seen.contains("data: {\"id\":1}"), "{seen}");
}

#[tokio::test]
async fn metrics_have_one_name_each() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let r = call(&app, "GET", "/metrics", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body).unwrap();
    let mut types = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(types.insert(name.to_owned()), "{name} twice");
        assert!(name.starts_with("lodestone_"));
        if line.ends_with(" counter") {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
    assert!(text.contains("lodestone_torrents{state=\"seeding\"} 0"));
}

/// An RPC request with the 409 handshake done; the answer's raw text.
async fn rpc(app: &Router, body: &str) -> String {
    let first = call(app, "POST", "/transmission/rpc", &[], Body::empty()).await;
    let id = first.headers["x-transmission-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = call(
        app,
        "POST",
        "/transmission/rpc",
        &[("X-Transmission-Session-Id", id.as_str())],
        Body::from(body.to_owned()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    String::from_utf8(r.body).unwrap()
}

#[tokio::test]
async fn torrent_get_writes_the_fields_asked_in_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), Access::default()).await.router();
    let add = r#"{"method":"torrent-add","arguments":{"filename":"magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=a%20name"}}"#;
    assert!(rpc(&app, add).await.contains(r#""result":"success""#));
    // Objects: the known fields once each, in the order asked; the tag kept.
    let get = r#"{"method":"torrent-get","tag":5,"arguments":{"fields":["name","id","bogus","id","totalSize"]}}"#;
    assert_eq!(
        rpc(&app, get).await,
        r#"{"arguments":{"torrents":[{"name":"a name","id":1,"totalSize":0}]},"result":"success","tag":5}"#
    );
    // A table: the names, then a row per torrent.
    let get = r#"{"method":"torrent-get","arguments":{"format":"table","fields":["id","name"]}}"#;
    assert_eq!(
        rpc(&app, get).await,
        r#"{"arguments":{"torrents":[["id","name"],[1,"a name"]]},"result":"success"}"#
    );
    // recently-active: the one just added, and the removed list.
    let get = r#"{"method":"torrent-get","arguments":{"ids":"recently-active","fields":["id"]}}"#;
    assert_eq!(
        rpc(&app, get).await,
        r#"{"arguments":{"torrents":[{"id":1}],"removed":[]},"result":"success"}"#
    );
    let get = r#"{"method":"torrent-get","arguments":{"ids":[7],"fields":["id"]}}"#;
    assert_eq!(
        rpc(&app, get).await,
        r#"{"arguments":{"torrents":[]},"result":"success"}"#
    );
}
