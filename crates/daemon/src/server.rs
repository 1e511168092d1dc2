//! The daemon's one HTTP listener. Every request passes the same gate,
//! in Transmission's order (clients depend on it): IP allow-list 403,
//! authentication 401, Host allow-list 421, unknown path 404; then the
//! RPC's own checks, session id 409 and POST only 405. No CORS headers:
//! every legitimate client is same-origin, native or server-side.
//!
//! A request is authenticated when no password is set, or by Basic
//! credentials, or by a qBittorrent session cookie (`SID`, from
//! `/api/v2/auth/login`). Without, each API answers its own way:
//! qBittorrent's 403 for `/api/v2/` (but `auth/login` goes through), a
//! JSON 401 without a Basic challenge for `/api/v1/` (a browser's fetch
//! must not pop up a dialog), the web page's files go through (they hold
//! no data: the page shows a login form), and everything else gets
//! Transmission's 401 with its Basic challenge. qBittorrent's CSRF rule
//! (an `Origin` or `Referer` not of the request's `Host`: 401) guards
//! `/api/v2/` and `/api/v1/` called with a cookie.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::daemon::Daemon;
use crate::qbittorrent::{auth, Qbt};

/// Bodies past this get 413 (qBittorrent's cap on uploads too).
pub const MAX_BODY: usize = 64 << 20;

/// Transmission rotates its CSRF token hourly; clients handle a 409
/// mid-session by asking again.
const SESSION_ID_LIFETIME: Duration = Duration::from_secs(3600);

const SESSION_ID_HEADER: &str = "x-transmission-session-id";

type Check<T> = Box<dyn Fn(T) -> bool + Send + Sync>;
type HostCheck = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Who may use the daemon.
pub struct Access {
    /// Basic auth (user, password); `None`: no password.
    pub credentials: Option<(String, String)>,
    pub ip_allowed: Check<IpAddr>,
    /// Given the Host header without its port.
    pub host_allowed: HostCheck,
}

/// Localhost only, no password: the default.
impl Default for Access {
    fn default() -> Self {
        Self {
            credentials: None,
            ip_allowed: Box::new(|ip| ip.to_canonical().is_loopback()),
            host_allowed: Box::new(|_| false),
        }
    }
}

impl Access {
    /// What the configuration's `[rpc]` section allows.
    pub fn from_config(rpc: &crate::config::RpcConfig) -> Self {
        let credentials = match (&rpc.username, &rpc.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.expose().to_owned())),
            (None, Some(p)) => Some((String::new(), p.expose().to_owned())),
            _ => None,
        };
        let (ip, host) = (rpc.clone(), rpc.clone());
        Self {
            credentials,
            ip_allowed: Box::new(move |a| ip.ip_allowed(a)),
            host_allowed: Box::new(move |h| host.host_allowed(h)),
        }
    }
}

/// The CSRF token of Transmission's RPC, rotated hourly.
struct SessionId {
    id: String,
    since: Instant,
}

impl SessionId {
    fn new(now: Instant) -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut raw = [0u8; 48];
        // No OS randomness would leave a guessable token: refuse to run.
        getrandom::fill(&mut raw).expect("the OS random number generator");
        let id = raw
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        Self { id, since: now }
    }
}

pub struct Server {
    pub daemon: Arc<Daemon>,
    access: Access,
    session_id: Mutex<SessionId>,
    /// qBittorrent's Web API, with its sessions.
    pub qbt: Arc<Qbt>,
}

impl Server {
    pub fn new(daemon: Arc<Daemon>, access: Access) -> Arc<Self> {
        let qbt = Qbt::new(
            daemon.clone(),
            Arc::new(auth::Auth::default()),
            access.credentials.clone(),
        );
        Arc::new(Self {
            daemon,
            access,
            session_id: Mutex::new(SessionId::new(Instant::now())),
            qbt,
        })
    }

    /// The current session id (a new one once the old is an hour old).
    fn session_id(&self) -> String {
        let mut s = self.session_id.lock().unwrap_or_else(|p| p.into_inner());
        if s.since.elapsed() >= SESSION_ID_LIFETIME {
            *s = SessionId::new(Instant::now());
        }
        s.id.clone()
    }

    /// Start a new session id now (what an hour does; tests use it).
    pub fn rotate_session_id(&self) {
        *self.session_id.lock().unwrap_or_else(|p| p.into_inner()) = SessionId::new(Instant::now());
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let rpc = Router::new()
            .route("/transmission/rpc", any(rpc))
            .route("/transmission/rpc/", any(rpc))
            .with_state(self.clone());
        rpc.merge(crate::api::router(self.daemon.clone()))
            .merge(crate::metrics::router(self.daemon.clone()))
            .merge(crate::qbittorrent::router(self.qbt.clone()))
            .merge(crate::web::router())
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), gate))
            .layer(DefaultBodyLimit::max(MAX_BODY))
    }

    /// Serve on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let app = self.router();
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=ISO-8859-1")],
        body,
    )
        .into_response()
}

/// Credentials in an `Authorization: Basic` header match.
fn authorized(headers: &HeaderMap, user: &str, password: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    let expected = format!("{user}:{password}");
    // Constant time: the comparison must not tell how much matched.
    decoded.len() == expected.len() && bool::from(decoded.ct_eq(expected.as_bytes()))
}

/// The Host header without its port (and without an IPv6 literal's brackets).
fn host_of(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all(header::HOST).iter();
    let h = all.next()?.to_str().ok()?;
    if all.next().is_some() {
        // Two Host headers: which one a proxy looked at is anyone's guess.
        return None;
    }
    let host = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':').map_or(h, |(host, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                host
            } else {
                h
            }
        })
    };
    Some(host.to_ascii_lowercase())
}

async fn gate(
    State(server): State<Arc<Server>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let access = &server.access;
    if !(access.ip_allowed)(peer.ip()) {
        return plain(
            StatusCode::FORBIDDEN,
            "<h1>403: Forbidden</h1><p>Unauthorized IP Address.</p><p>Either disable the IP address whitelist or add your address to it.</p>",
        );
    }
    let path = request.uri().path();
    let v2 = path.starts_with("/api/v2/") || path == "/api/v2";
    let v1 = path.starts_with("/api/v1/") || path == "/api/v1";
    let headers = request.headers();
    let basic = access
        .credentials
        .as_ref()
        .is_some_and(|(user, password)| authorized(headers, user, password));
    let cookie = auth::sid_from_cookies(
        headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes),
    )
    .is_some_and(|sid| server.qbt.auth.check(sid, Instant::now()));
    if (v2 || (v1 && cookie && !basic)) && !same_origin(headers) {
        return qbt_text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let authenticated = access.credentials.is_none() || basic || cookie;
    if !authenticated {
        if v2 {
            if path != "/api/v2/auth/login" {
                return qbt_text(StatusCode::FORBIDDEN, "Forbidden");
            }
        } else if is_page(path) {
            // The web page's own files: no data in them.
        } else if v1 {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":"log in first (POST /api/v2/auth/login) or send Basic credentials"}"#,
            )
                .into_response();
        } else {
            let mut r = plain(
                StatusCode::UNAUTHORIZED,
                "<h1>401: Unauthorized</h1>Unauthorized User",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Transmission\""),
            );
            return r;
        }
    } else if access.credentials.is_none() {
        // Without a password, a DNS rebinding page could reach us under
        // its own name: only IP literals, localhost, or allowed names.
        let host = host_of(request.headers()).unwrap_or_default();
        let ok = host.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host == "localhost."
            || (access.host_allowed)(&host);
        if !ok {
            return plain(
                StatusCode::MISDIRECTED_REQUEST,
                "<h1>421: Misdirected Request</h1><p>Transmission received your request, but the hostname was unrecognized.</p>",
            );
        }
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    // The web page sets its own, stricter policy.
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("frame-ancestors 'self'"));
    response
}

fn qbt_text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// The web page's files, served to anyone (the page asks for a login).
fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/index.html" | "/favicon.ico") || path.starts_with("/ui/")
}

/// `host[:port]` of a URL, with the scheme's port when none is written.
fn authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let auth = rest.split(['/', '?', '#']).next()?;
    let auth = auth.rsplit_once('@').map_or(auth, |(_, a)| a);
    if auth.is_empty() {
        return None;
    }
    Some(with_port(auth, default_port(scheme)))
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
}

fn with_port(auth: &str, port: u16) -> String {
    let auth = auth.to_ascii_lowercase();
    let has_port = match auth.rfind(']') {
        Some(close) => auth[close..].contains(':'),
        None => auth.contains(':'),
    };
    if has_port {
        auth
    } else {
        format!("{auth}:{port}")
    }
}

/// qBittorrent's CSRF rule: an `Origin` (else a `Referer`) must name the
/// host and port the request was sent to (its `Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h| headers.get(h).and_then(|v| v.to_str().ok());
    let Some(claimed) = get(header::ORIGIN).or_else(|| get(header::REFERER)) else {
        return true;
    };
    let Some(host) = get(header::HOST) else {
        return false;
    };
    authority(claimed.trim()).is_some_and(|a| a == with_port(host.trim(), 80))
}

async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "<h1>404: Not Found</h1>")
}

async fn rpc(
    State(server): State<Arc<Server>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = server.session_id();
    let given = headers
        .get(SESSION_ID_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !(given.len() == id.len() && bool::from(given.ct_eq(id.as_bytes()))) {
        let body = format!(
            "<h1>409: Conflict</h1><p>Your request had an invalid session-id header.</p>\
             <p>To fix this, follow these steps:<ol><li> When reading a response, get its \
             X-Transmission-Session-Id header and remember it<li> Add the updated header to \
             your outgoing requests<li> When you get this 409 error message, resend your \
             request with the updated header</ol></p><p>This requirement has been added to \
             help prevent <a href=\"https://en.wikipedia.org/wiki/Cross-site_request_forgery\">CSRF</a> \
             attacks.</p><p><code>X-Transmission-Session-Id: {id}</code></p>"
        );
        let mut r = (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/html; charset=ISO-8859-1")],
            body,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&id) {
            r.headers_mut().insert(SESSION_ID_HEADER, v);
        }
        return r;
    }
    if method != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "<h1>405: Method Not Allowed</h1>",
        );
    }
    // Read as JSON whatever the Content-Type: transmission-remote sends
    // application/x-www-form-urlencoded.
    let bytes = crate::transmission::handle(&server.daemon, &body, &id).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        bytes,
    )
        .into_response()
}
