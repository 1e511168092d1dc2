//! The web page at `/`: plain ES modules and CSS embedded in the binary,
//! served with a strict Content-Security-Policy.

use axum::Router;

pub fn router() -> Router {
    Router::new()
}
