//! The web page at `/`: plain ES modules and CSS embedded in the binary,
//! served with a strict Content-Security-Policy. No build step: the files
//! in `crates/daemon/web/` are what the browser gets.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Nothing inline, nothing from elsewhere: a torrent's name that slips
/// into markup still cannot run.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
frame-ancestors 'none'";

/// The page's files: name under `/ui/`, Content-Type, bytes.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", JS, include_bytes!("../web/app.js")),
    ("api.js", JS, include_bytes!("../web/api.js")),
    ("dom.js", JS, include_bytes!("../web/dom.js")),
    ("format.js", JS, include_bytes!("../web/format.js")),
    ("list.js", JS, include_bytes!("../web/list.js")),
    ("detail.js", JS, include_bytes!("../web/detail.js")),
    ("words.js", JS, include_bytes!("../web/words.js")),
    ("dialogs.js", JS, include_bytes!("../web/dialogs.js")),
    ("style.css", CSS, include_bytes!("../web/style.css")),
    ("icon.svg", SVG, include_bytes!("../web/icon.svg")),
];

pub const INDEX: &str = include_str!("../web/index.html");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const HTML: &str = "text/html; charset=utf-8";

pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(asset))
}

fn page(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Embedded in the binary: a new daemon is a new page, so ask each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    page(HTML, INDEX.as_bytes())
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, ty, body)) => page(ty, body),
        None => {
            let mut r = (StatusCode::NOT_FOUND, "no such file").into_response();
            r.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        }
    }
}
