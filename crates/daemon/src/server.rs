//! The daemon's one HTTP listener. Every request passes the same gate,
//! in Transmission's order (clients depend on it): IP allow-list 403,
//! Basic auth 401, Host allow-list 421, unknown path 404; then the RPC's
//! own checks, session id 409 and POST only 405. No CORS headers: every
//! legitimate client is same-origin, native or server-side.

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
}

impl Server {
    pub fn new(daemon: Arc<Daemon>, access: Access) -> Arc<Self> {
        Arc::new(Self {
            daemon,
            access,
            session_id: Mutex::new(SessionId::new(Instant::now())),
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
            .merge(crate::qbittorrent::router(self.daemon.clone()))
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
    if let Some((user, password)) = &access.credentials {
        if !authorized(request.headers(), user, password) {
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
    } else {
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
