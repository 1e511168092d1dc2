//! A daemon over a session in the test's process (no listener, no state
//! directory), for the daemon crate's integration tests.
#![allow(dead_code)] // each test binary uses its part

use std::path::Path;
use std::sync::Arc;

use lodestone_daemon::daemon::{Daemon, Settings};
use lodestone_engine::session::{Session, SessionConfig};
use lodestone_engine::torrent::TorrentConfig;

/// Settings with no limits, downloads in `dir`, one category `tv`.
pub fn settings(dir: &Path) -> Settings {
    Settings {
        download_dir: dir.to_owned(),
        incomplete_dir: None,
        start_added_torrents: true,
        speed_limit_down: None,
        speed_limit_up: None,
        alt_speed_down: None,
        alt_speed_up: None,
        alt_speed_enabled: false,
        seed_ratio_limit: None,
        idle_seeding_limit: None,
        peer_limit_global: 100,
        peer_limit_per_torrent: 50,
        peer_port: 0,
        dht_enabled: false,
        pex_enabled: false,
        lpd_enabled: false,
        alt_schedule: lodestone_daemon::schedule::Schedule::DEFAULT,
        alt_schedule_enabled: false,
        categories: [("tv".to_owned(), dir.join("tv"))].into(),
    }
}

/// The configuration new torrents start from: content in `dir`.
pub fn template(dir: &Path, seed: u64) -> TorrentConfig {
    TorrentConfig::new(
        dir.to_owned(),
        lodestone_core::PeerId::generate([seed as u8; 12]),
        seed,
    )
}

/// A daemon over a new session, its events pumped into its book.
pub async fn daemon(dir: &Path, template: TorrentConfig) -> Arc<Daemon> {
    let (session, events) = Session::start(SessionConfig {
        listen: None,
        threads: 1,
        seed: template.seed,
        state: None,
        max_connections: 100,
        utp: None,
        tcp: true,
    })
    .await
    .unwrap();
    let daemon = Daemon::new(session, template, settings(dir), None).unwrap();
    tokio::spawn(daemon.clone().pump(events));
    daemon
}

/// The loopback address requests come from unless a test says otherwise.
pub const LOCAL: &str = "127.0.0.1:40000";

/// The HTTP server over a new daemon (no trackers, no PEX).
pub async fn server(
    dir: &Path,
    access: lodestone_daemon::server::Access,
    seed: u64,
) -> Arc<lodestone_daemon::server::Server> {
    let mut template = template(dir, seed);
    template.trackers = false;
    template.pex = false;
    lodestone_daemon::server::Server::new(daemon(dir, template).await, access)
}

/// An answer, read whole.
pub struct Reply {
    pub status: axum::http::StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// A header that must be there.
    pub fn header(&self, name: axum::http::header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
    }
}

/// A request to the daemon's Host, as a browser or client would send it.
pub fn request(method: &str, path: &str) -> axum::http::request::Builder {
    axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header(axum::http::header::HOST, "127.0.0.1:9091")
}

/// Send `req` through the router as if it came from `from`.
pub async fn send(
    app: &axum::Router,
    from: &str,
    mut req: axum::http::Request<axum::body::Body>,
) -> Reply {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let addr: std::net::SocketAddr = from.parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// One request from `from`: method, path, headers, body.
pub async fn call(
    app: &axum::Router,
    from: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<axum::body::Body>,
) -> Reply {
    let mut r = request(method, path);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    send(app, from, r.body(body.into()).unwrap()).await
}
