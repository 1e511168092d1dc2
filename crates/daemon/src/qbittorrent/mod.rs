//! qBittorrent's Web API v2 (`/api/v2/`), answering as qBittorrent 5.1
//! does, for the tools that speak it (Sonarr and friends, autobrr,
//! cross-seed, Flood).

use std::sync::Arc;

use axum::Router;

use crate::daemon::Daemon;

pub fn router(_daemon: Arc<Daemon>) -> Router {
    Router::new()
}
