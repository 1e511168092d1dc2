//! `app/*` and `transfer/info`: versions, preferences from the daemon's
//! settings, and the transfer totals.

use std::time::Instant;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::params::Params;
use super::{done, json, require, text, Answer, ApiError, Qbt};
use crate::daemon::Settings;

pub const VERSION: &str = "v5.1.4";
pub const WEBAPI_VERSION: &str = "2.11.4";

pub async fn handle(q: &Qbt, name: &str, p: &Params) -> Answer {
    match name {
        "app/version" => Ok(text(StatusCode::OK, VERSION)),
        "app/webapiVersion" => Ok(text(StatusCode::OK, WEBAPI_VERSION)),
        "app/buildInfo" => json(&json!({
            "qt": "6.7.3",
            "libtorrent": "2.0.11.0",
            "boost": "1.86.0",
            "openssl": "3.4.1",
            "zlib": "1.3.1",
            "bitness": 64,
            "platform": "linux",
            // Ours: who really answers.
            "lodestone": env!("CARGO_PKG_VERSION"),
        })),
        "app/preferences" => json(&preferences(&q.daemon.settings())),
        "app/setPreferences" => set_preferences(q, p),
        "app/defaultSavePath" => Ok(text(
            StatusCode::OK,
            q.daemon.settings().download_dir.to_string_lossy(),
        )),
        // The daemon is stopped by its service manager, not by a client.
        "app/shutdown" => Err(ApiError(StatusCode::FORBIDDEN, "Forbidden".to_owned())),
        "transfer/info" => json(&transfer_info(q).await),
        "transfer/speedLimitsMode" => {
            let on = q.daemon.settings().alt_speed_enabled;
            Ok(text(StatusCode::OK, if on { "1" } else { "0" }))
        }
        "transfer/toggleSpeedLimitsMode" => {
            q.daemon
                .client_settings(|s| s.alt_speed_enabled = !s.alt_speed_enabled);
            done()
        }
        "transfer/setSpeedLimitsMode" => {
            require(p, &["mode"])?;
            let on = match p.get("mode").unwrap_or_default().trim() {
                "0" => false,
                "1" => true,
                _ => return Err(ApiError::bad("'mode' parameter should be either 0 or 1")),
            };
            q.daemon.client_settings(|s| s.alt_speed_enabled = on);
            done()
        }
        "transfer/downloadLimit" | "transfer/uploadLimit" => {
            let (down, up) = q.daemon.session.global_limits();
            let l = if name == "transfer/downloadLimit" {
                down
            } else {
                up
            };
            Ok(text(StatusCode::OK, l.unwrap_or(0).to_string()))
        }
        "transfer/setDownloadLimit" | "transfer/setUploadLimit" => {
            require(p, &["limit"])?;
            let limit = p
                .int("limit")
                .and_then(|l| u64::try_from(l).ok())
                .filter(|l| *l > 0);
            let down = name == "transfer/setDownloadLimit";
            // The limits in force: the alternative ones while they are on.
            q.daemon
                .client_settings(|s| match (down, s.alt_speed_enabled) {
                    (true, false) => s.speed_limit_down = limit,
                    (false, false) => s.speed_limit_up = limit,
                    (true, true) => s.alt_speed_down = limit,
                    (false, true) => s.alt_speed_up = limit,
                });
            done()
        }
        _ => Err(ApiError(StatusCode::NOT_FOUND, "Not Found".to_owned())),
    }
}

/// qBittorrent's rate units are bytes per second, 0 for no limit.
fn rate(r: Option<u64>) -> u64 {
    r.unwrap_or(0)
}

pub fn preferences(s: &Settings) -> Value {
    let cats = s.categories.len();
    json!({
        "save_path": s.download_dir.to_string_lossy(),
        "temp_path_enabled": s.incomplete_dir.is_some(),
        "temp_path": s.incomplete_dir.as_deref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
        "create_subfolder_enabled": true,
        "torrent_content_layout": "Original",
        "add_stopped_enabled": !s.start_added_torrents,
        "start_paused_enabled": !s.start_added_torrents,
        "auto_tmm_enabled": false,
        "max_ratio_enabled": s.seed_ratio_limit.is_some(),
        "max_ratio": s.seed_ratio_limit.unwrap_or(-1.0),
        "max_seeding_time_enabled": false,
        "max_seeding_time": -1,
        "max_inactive_seeding_time_enabled": s.idle_seeding_limit.is_some(),
        "max_inactive_seeding_time": s.idle_seeding_limit.map_or(-1, i64::from),
        // 0: stop the torrent (what the daemon does at a goal).
        "max_ratio_act": 0,
        // Every torrent runs: no queue.
        "queueing_enabled": false,
        "max_active_downloads": -1,
        "max_active_uploads": -1,
        "max_active_torrents": -1,
        "dht": s.dht_enabled,
        "pex": s.pex_enabled,
        "lsd": s.lpd_enabled,
        "encryption": 0,
        "anonymous_mode": false,
        "listen_port": s.peer_port,
        "random_port": false,
        "upnp": false,
        "max_connec": s.peer_limit_global,
        "max_connec_per_torrent": s.peer_limit_per_torrent,
        "max_uploads": -1,
        "max_uploads_per_torrent": -1,
        "dl_limit": rate(s.speed_limit_down),
        "up_limit": rate(s.speed_limit_up),
        "alt_dl_limit": rate(s.alt_speed_down),
        "alt_up_limit": rate(s.alt_speed_up),
        "scheduler_enabled": s.alt_schedule_enabled,
        "resume_data_storage_type": "Legacy",
        "locale": "en",
        "web_ui_address": "*",
        "web_ui_upnp": false,
        "bypass_local_auth": false,
        "use_https": false,
        "categories_count": cats,
    })
}

/// `app/setPreferences` (`json`): the keys that are our settings apply
/// (and are kept, as `session-set`'s); the others are accepted and
/// ignored, as qBittorrent ignores keys it does not know.
fn set_preferences(q: &Qbt, p: &Params) -> Answer {
    require(p, &["json"])?;
    let v: Value = serde_json::from_str(p.get("json").unwrap_or_default())
        .map_err(|_| ApiError::bad("Invalid JSON"))?;
    let Some(m) = v.as_object() else {
        return Err(ApiError::bad("Invalid JSON"));
    };
    let limit = |k: &str| -> Option<Option<u64>> {
        let v = m.get(k)?.as_i64()?;
        Some(u64::try_from(v).ok().filter(|v| *v > 0))
    };
    q.daemon.client_settings(|s| {
        if let Some(dir) = m.get("save_path").and_then(Value::as_str) {
            if let Some(dir) = crate::daemon::absolute(dir) {
                s.download_dir = dir;
            }
        }
        let temp_on = m.get("temp_path_enabled").and_then(Value::as_bool);
        let temp = m
            .get("temp_path")
            .and_then(Value::as_str)
            .and_then(crate::daemon::absolute);
        match (temp_on, temp) {
            (Some(false), _) => s.incomplete_dir = None,
            (Some(true), Some(t)) => s.incomplete_dir = Some(t),
            (None, Some(t)) if s.incomplete_dir.is_some() => s.incomplete_dir = Some(t),
            _ => {}
        }
        for k in ["add_stopped_enabled", "start_paused_enabled"] {
            if let Some(b) = m.get(k).and_then(Value::as_bool) {
                s.start_added_torrents = !b;
            }
        }
        if let Some(v) = limit("dl_limit") {
            s.speed_limit_down = v;
        }
        if let Some(v) = limit("up_limit") {
            s.speed_limit_up = v;
        }
        if let Some(v) = limit("alt_dl_limit") {
            s.alt_speed_down = v;
        }
        if let Some(v) = limit("alt_up_limit") {
            s.alt_speed_up = v;
        }
        let ratio_on = m.get("max_ratio_enabled").and_then(Value::as_bool);
        let ratio = m
            .get("max_ratio")
            .and_then(Value::as_f64)
            .filter(|r| *r >= 0.0);
        match (ratio_on, ratio) {
            (Some(false), _) => s.seed_ratio_limit = None,
            (Some(true), Some(r)) => s.seed_ratio_limit = Some(r),
            (None, Some(r)) if s.seed_ratio_limit.is_some() => s.seed_ratio_limit = Some(r),
            _ => {}
        }
        let idle_on = m
            .get("max_inactive_seeding_time_enabled")
            .and_then(Value::as_bool);
        let idle = m
            .get("max_inactive_seeding_time")
            .and_then(Value::as_i64)
            .and_then(|v| u32::try_from(v).ok());
        match (idle_on, idle) {
            (Some(false), _) => s.idle_seeding_limit = None,
            (Some(true), Some(v)) => s.idle_seeding_limit = Some(v),
            (None, Some(v)) if s.idle_seeding_limit.is_some() => s.idle_seeding_limit = Some(v),
            _ => {}
        }
        if let Some(n) = m
            .get("max_connec_per_torrent")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
        {
            s.peer_limit_per_torrent = usize::try_from(n).unwrap_or(usize::MAX);
        }
    });
    done()
}

/// Rates now and the bytes moved since the daemon started.
pub async fn transfer_info(q: &Qbt) -> Value {
    let d = &q.daemon;
    let (mut down, mut up) = (0.0, 0.0);
    let totals = {
        let book = d.book();
        for t in d.session.list() {
            if let Some(s) = book.get(&t.info_hash).and_then(|r| r.live.stats.as_ref()) {
                down += s.download_rate;
                up += s.upload_rate;
            }
        }
        book.current_totals(Instant::now())
    };
    let (down_limit, up_limit) = d.session.global_limits();
    let dht_nodes = match d.dht() {
        Some(dht) => dht.health().await.nodes,
        None => 0,
    };
    json!({
        "dl_info_speed": down as u64,
        "dl_info_data": totals.downloaded_bytes,
        "up_info_speed": up as u64,
        "up_info_data": totals.uploaded_bytes,
        "dl_rate_limit": down_limit.unwrap_or(0),
        "up_rate_limit": up_limit.unwrap_or(0),
        "dht_nodes": dht_nodes,
        "connection_status": "connected",
    })
}
