//! qBittorrent's Web API v2 (`/api/v2/`), answering as qBittorrent 5.1.4
//! (WebAPI 2.11.4) does, for the tools that speak it (Sonarr and
//! friends, autobrr, cross-seed, Flood). Documented in API.md.
//!
//! Reads take GET or POST (cross-seed POSTs them), writes POST only (405
//! otherwise); parameters come from the query or the body, urlencoded or
//! multipart. Errors are plain text with qBittorrent's status and words.
//! The gate (server.rs) has already let the request in: with a session
//! cookie, Basic credentials, or no password configured; only
//! `auth/login` gets here without.

pub mod app;
pub mod auth;
pub mod params;
pub mod state;
pub mod sync;
pub mod torrents;

use std::collections::BTreeSet;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use lodestone_core::InfoHash;
use lodestone_engine::session::Listed;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::daemon::Daemon;
use auth::Auth;
use params::Params;

/// Tags created with `createTags` and on no torrent yet, kept at most.
const MAX_LOOSE_TAGS: usize = 1024;

/// The qBittorrent API's state beside the daemon's.
pub struct Qbt {
    pub daemon: Arc<Daemon>,
    pub auth: Arc<Auth>,
    /// (user, password) for `auth/login`; `None`: no password.
    credentials: Option<(String, String)>,
    /// Torrents started with `setForceStart` (every torrent runs anyway:
    /// only the state's name changes, `forcedDL`/`forcedUP`).
    forced: Mutex<HashSet<InfoHash>>,
    /// Tags created and not on any torrent (a torrent's tags are its labels).
    loose_tags: Mutex<BTreeSet<String>>,
    sync: Mutex<sync::Store>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Qbt {
    pub fn new(
        daemon: Arc<Daemon>,
        auth: Arc<Auth>,
        credentials: Option<(String, String)>,
    ) -> Arc<Self> {
        Arc::new(Self {
            daemon,
            auth,
            credentials,
            forced: Mutex::default(),
            loose_tags: Mutex::default(),
            sync: Mutex::default(),
        })
    }
}

pub fn router(qbt: Arc<Qbt>) -> Router {
    Router::new()
        .route("/api/v2/{scope}/{method}", any(handle))
        .with_state(qbt)
}

/// An error answer: status and qBittorrent's words, as plain text.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn bad(why: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, why.into())
    }
    pub fn conflict(why: impl Into<String>) -> Self {
        Self(StatusCode::CONFLICT, why.into())
    }
    /// qBittorrent's `APIError(NotFound)`: 404 with an empty body.
    pub fn not_found() -> Self {
        Self(StatusCode::NOT_FOUND, String::new())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        text(self.0, self.1)
    }
}

pub type Answer = Result<Response, ApiError>;

pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        body.into(),
    )
        .into_response()
}

/// 200 with an empty body: what qBittorrent's actions answer.
pub fn done() -> Answer {
    Ok(text(StatusCode::OK, ""))
}

pub fn json(v: &Value) -> Answer {
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response())
}

/// Fail with 400 unless every parameter in `names` is there.
pub fn require(p: &Params, names: &[&str]) -> Result<(), ApiError> {
    let missing: Vec<&str> = names.iter().copied().filter(|n| !p.has(n)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "Missing required parameters: {}",
            missing.join(", ")
        )))
    }
}

/// A torrent by its info hash (40 hex).
pub fn find(daemon: &Daemon, hash: &str) -> Option<Listed> {
    let ih: InfoHash = hash.trim().parse().ok()?;
    daemon
        .session
        .find(ih)
        .and_then(|id| daemon.session.get(id))
}

/// The parameter `hash` names a torrent we have: 404 otherwise.
pub fn one(daemon: &Daemon, p: &Params) -> Result<Listed, ApiError> {
    require(p, &["hash"])?;
    find(daemon, p.get("hash").unwrap_or_default()).ok_or_else(ApiError::not_found)
}

/// `hashes`: `|`-separated, or `all`. Unknown hashes are skipped, as
/// qBittorrent's `applyToTorrents` does.
pub fn many(daemon: &Daemon, hashes: &str) -> Vec<Listed> {
    if hashes == "all" {
        return daemon.session.list();
    }
    let mut seen = HashSet::new();
    hashes
        .split('|')
        .filter_map(|h| find(daemon, h))
        .filter(|t| seen.insert(t.id))
        .collect()
}

/// Who asks, for per-client state (`sync/*`): its session, else its address.
pub struct Client {
    pub peer: SocketAddr,
    pub sid: Option<Vec<u8>>,
}

impl Client {
    pub fn key(&self) -> String {
        match &self.sid {
            Some(sid) => format!("sid:{}", String::from_utf8_lossy(sid)),
            None => format!("ip:{}", self.peer.ip()),
        }
    }
}

/// Calls that only read (GET or POST); every other known call is a write
/// (POST only).
const READS: &[&str] = &[
    "app/version",
    "app/webapiVersion",
    "app/buildInfo",
    "app/preferences",
    "app/defaultSavePath",
    "transfer/info",
    "transfer/speedLimitsMode",
    "transfer/downloadLimit",
    "transfer/uploadLimit",
    "sync/maindata",
    "sync/torrentPeers",
    "torrents/info",
    "torrents/count",
    "torrents/properties",
    "torrents/files",
    "torrents/trackers",
    "torrents/webseeds",
    "torrents/categories",
    "torrents/tags",
];

const WRITES: &[&str] = &[
    "auth/login",
    "auth/logout",
    "app/setPreferences",
    "app/shutdown",
    "transfer/toggleSpeedLimitsMode",
    "transfer/setSpeedLimitsMode",
    "transfer/setDownloadLimit",
    "transfer/setUploadLimit",
    "torrents/add",
    "torrents/delete",
    "torrents/start",
    "torrents/stop",
    "torrents/pause",
    "torrents/resume",
    "torrents/recheck",
    "torrents/reannounce",
    "torrents/setLocation",
    "torrents/filePrio",
    "torrents/createCategory",
    "torrents/editCategory",
    "torrents/removeCategories",
    "torrents/setCategory",
    "torrents/createTags",
    "torrents/deleteTags",
    "torrents/addTags",
    "torrents/removeTags",
    "torrents/setShareLimits",
    "torrents/topPrio",
    "torrents/bottomPrio",
    "torrents/increasePrio",
    "torrents/decreasePrio",
    "torrents/setForceStart",
    "torrents/toggleSequentialDownload",
    "torrents/toggleFirstLastPiecePrio",
    "torrents/setSuperSeeding",
    "torrents/addTrackers",
    "torrents/removeTrackers",
    "torrents/setUploadLimit",
    "torrents/setDownloadLimit",
];

async fn handle(
    State(q): State<Arc<Qbt>>,
    Path((scope, method)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    verb: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let name = format!("{scope}/{method}");
    let read = READS.contains(&name.as_str());
    if !read && !WRITES.contains(&name.as_str()) {
        return text(StatusCode::NOT_FOUND, "Not Found");
    }
    let allowed = verb == Method::POST || (read && verb == Method::GET);
    if !allowed {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let p = match Params::parse(uri.query(), content_type, &body) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let client = Client {
        peer,
        sid: auth::sid_from_cookies(headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()))
            .map(<[u8]>::to_vec),
    };
    let answer = match name.as_str() {
        "auth/login" => Ok(login(&q, &p, &client, Instant::now())),
        "auth/logout" => {
            if let Some(sid) = &client.sid {
                q.auth.end(sid);
            }
            done()
        }
        n if n.starts_with("app/") || n.starts_with("transfer/") => app::handle(&q, n, &p).await,
        n if n.starts_with("sync/") => sync::handle(&q, n, &p, &client).await,
        n => torrents::handle(&q, n, &p).await,
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// `auth/login`: `Ok.` and a cookie, or `Fails.`; a banned address gets 403.
fn login(q: &Qbt, p: &Params, client: &Client, now: Instant) -> Response {
    let ip = client.peer.ip().to_canonical();
    if q.auth.is_banned(ip, now) {
        return text(StatusCode::FORBIDDEN, auth::BANNED);
    }
    // A live session logs in again without a new cookie, as qBittorrent.
    if client
        .sid
        .as_deref()
        .is_some_and(|sid| q.auth.check(sid, now))
    {
        return text(StatusCode::OK, "Ok.");
    }
    let user = p.get("username").unwrap_or_default().as_bytes();
    let password = p.get("password").unwrap_or_default().as_bytes();
    let ok = match &q.credentials {
        None => true,
        Some((u, pw)) => {
            // Both compared whatever the first says (constant time each).
            let user_ok =
                u.is_empty() || (user.len() == u.len() && bool::from(user.ct_eq(u.as_bytes())));
            let pw_ok = password.len() == pw.len() && bool::from(password.ct_eq(pw.as_bytes()));
            user_ok & pw_ok
        }
    };
    if !ok {
        q.auth.failed(ip, now);
        return text(StatusCode::OK, "Fails.");
    }
    q.auth.succeeded(ip);
    let sid = q.auth.start(now);
    let mut r = text(StatusCode::OK, "Ok.");
    if let Ok(v) = HeaderValue::from_str(&format!("SID={sid}; HttpOnly; SameSite=Lax; path=/")) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
