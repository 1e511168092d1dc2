//! `session-get`, `session-set`, `session-stats`: the daemon's settings
//! under Transmission's kebab-case names (rates in kB/s of 1000 bytes).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::{
    absolute, flag, Failure, RPC_VERSION, RPC_VERSION_MINIMUM, RPC_VERSION_SEMVER, VERSION,
};
use crate::book::Totals;
use crate::daemon::Daemon;

fn kb(rate: Option<u64>) -> u64 {
    rate.map_or(100, |r| r / 1000)
}

pub async fn get(daemon: &Arc<Daemon>, args: &Map<String, Value>, session_id: &str) -> Value {
    // Our extension, what transgui #1018 asked for: the DHT routing
    // table's size (null with the DHT off).
    let dht_nodes = match daemon.dht() {
        Some(dht) => Some(dht.health().await.nodes),
        None => None,
    };
    let s = daemon.settings();
    let dir = s.download_dir.to_string_lossy().into_owned();
    let schedule = s.alt_schedule.to_transmission();
    let free = crate::fs::space(&s.download_dir)
        .map_or(-1, |(free, _)| i64::try_from(free).unwrap_or(i64::MAX));
    let all = json!({
        "alt-speed-down": kb(s.alt_speed_down),
        "alt-speed-enabled": s.alt_speed_enabled,
        "alt-speed-time-begin": schedule.begin,
        "alt-speed-time-day": schedule.day,
        "alt-speed-time-enabled": s.alt_schedule_enabled,
        "alt-speed-time-end": schedule.end,
        "alt-speed-up": kb(s.alt_speed_up),
        "blocklist-enabled": false,
        "blocklist-size": 0,
        "blocklist-url": "",
        "cache-size-mb": 4,
        "config-dir": "",
        "default-trackers": "",
        "dht-enabled": s.dht_enabled,
        "download-dir": dir,
        "download-dir-free-space": free,
        "download-queue-enabled": false,
        "download-queue-size": 5,
        "encryption": "preferred",
        "idle-seeding-limit": s.idle_seeding_limit.unwrap_or(30),
        "idle-seeding-limit-enabled": s.idle_seeding_limit.is_some(),
        "incomplete-dir": s.incomplete_dir.as_ref().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default(),
        "incomplete-dir-enabled": s.incomplete_dir.is_some(),
        "lpd-enabled": s.lpd_enabled,
        "peer-limit-global": s.peer_limit_global,
        "peer-limit-per-torrent": s.peer_limit_per_torrent,
        "peer-port": s.peer_port,
        "peer-port-random-on-start": false,
        "pex-enabled": s.pex_enabled,
        "port-forwarding-enabled": false,
        "queue-stalled-enabled": false,
        "queue-stalled-minutes": 30,
        "rename-partial-files": false,
        "rpc-version": RPC_VERSION,
        "rpc-version-minimum": RPC_VERSION_MINIMUM,
        "rpc-version-semver": RPC_VERSION_SEMVER,
        "script-torrent-added-enabled": false,
        "script-torrent-added-filename": "",
        "script-torrent-done-enabled": false,
        "script-torrent-done-filename": "",
        "script-torrent-done-seeding-enabled": false,
        "script-torrent-done-seeding-filename": "",
        "seed-queue-enabled": false,
        "seed-queue-size": 10,
        "seedRatioLimit": s.seed_ratio_limit.unwrap_or(2.0),
        "seedRatioLimited": s.seed_ratio_limit.is_some(),
        "session-id": session_id,
        "speed-limit-down": kb(s.speed_limit_down),
        "speed-limit-down-enabled": s.speed_limit_down.is_some(),
        "speed-limit-up": kb(s.speed_limit_up),
        "speed-limit-up-enabled": s.speed_limit_up.is_some(),
        "start-added-torrents": s.start_added_torrents,
        "trash-original-torrent-files": false,
        "units": {
            "speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"],
            "speed-bytes": 1000,
            "size-units": ["kB", "MB", "GB", "TB"],
            "size-bytes": 1000,
            "memory-units": ["KiB", "MiB", "GiB", "TiB"],
            "memory-bytes": 1024
        },
        "utp-enabled": false,
        "version": VERSION,
        "dht-nodes": dht_nodes,
    });
    match args.get("fields").and_then(Value::as_array) {
        Some(fields) => {
            let mut out = Map::new();
            for f in fields.iter().filter_map(Value::as_str) {
                if let Some(v) = all.get(f) {
                    out.insert(f.to_owned(), v.clone());
                }
            }
            Value::Object(out)
        }
        None => all,
    }
}

/// A rate given in kB/s, with its "-enabled" switch.
fn rate(args: &Map<String, Value>, key: &str, enabled: &str, now: Option<u64>) -> Option<u64> {
    let value = args
        .get(key)
        .and_then(Value::as_u64)
        .map(|k| k.saturating_mul(1000))
        .or(now);
    match args.get(enabled) {
        Some(_) if flag(args, enabled) => Some(value.unwrap_or(100_000)),
        Some(_) => None,
        None => now.map(|_| value.unwrap_or(100_000)),
    }
}

pub fn set(daemon: &Arc<Daemon>, args: &Map<String, Value>) -> Result<Value, Failure> {
    let dir = match args.get("download-dir").and_then(Value::as_str) {
        Some(d) => Some(absolute(d).ok_or("download directory path is not absolute")?),
        None => None,
    };
    let incomplete = match args.get("incomplete-dir").and_then(Value::as_str) {
        Some(d) => Some(absolute(d).ok_or("incomplete directory path is not absolute")?),
        None => None,
    };
    daemon.client_settings(|s| {
        if let Some(d) = dir {
            s.download_dir = d;
        }
        if let Some(d) = incomplete {
            if args
                .get("incomplete-dir-enabled")
                .is_none_or(|_| flag(args, "incomplete-dir-enabled"))
            {
                s.incomplete_dir = Some(d);
            }
        } else if args.contains_key("incomplete-dir-enabled")
            && !flag(args, "incomplete-dir-enabled")
        {
            s.incomplete_dir = None;
        }
        s.speed_limit_down = rate(
            args,
            "speed-limit-down",
            "speed-limit-down-enabled",
            s.speed_limit_down,
        );
        s.speed_limit_up = rate(
            args,
            "speed-limit-up",
            "speed-limit-up-enabled",
            s.speed_limit_up,
        );
        if let Some(v) = args.get("alt-speed-down").and_then(Value::as_u64) {
            s.alt_speed_down = Some(v.saturating_mul(1000));
        }
        if let Some(v) = args.get("alt-speed-up").and_then(Value::as_u64) {
            s.alt_speed_up = Some(v.saturating_mul(1000));
        }
        if args.contains_key("alt-speed-enabled") {
            s.alt_speed_enabled = flag(args, "alt-speed-enabled");
        }
        if args.contains_key("start-added-torrents") {
            s.start_added_torrents = flag(args, "start-added-torrents");
        }
        let ratio = args.get("seedRatioLimit").and_then(Value::as_f64);
        match args.get("seedRatioLimited") {
            Some(_) if flag(args, "seedRatioLimited") => {
                s.seed_ratio_limit = Some(ratio.or(s.seed_ratio_limit).unwrap_or(2.0).max(0.0));
            }
            Some(_) => s.seed_ratio_limit = None,
            None => {
                if let (Some(r), Some(_)) = (ratio, s.seed_ratio_limit) {
                    s.seed_ratio_limit = Some(r.max(0.0));
                }
            }
        }
        let idle = args
            .get("idle-seeding-limit")
            .and_then(Value::as_u64)
            .map(|m| u32::try_from(m).unwrap_or(u32::MAX));
        match args.get("idle-seeding-limit-enabled") {
            Some(_) if flag(args, "idle-seeding-limit-enabled") => {
                s.idle_seeding_limit = Some(idle.or(s.idle_seeding_limit).unwrap_or(30));
            }
            Some(_) => s.idle_seeding_limit = None,
            None => {
                if let (Some(m), Some(_)) = (idle, s.idle_seeding_limit) {
                    s.idle_seeding_limit = Some(m);
                }
            }
        }
        if let Some(n) = args.get("peer-limit-per-torrent").and_then(Value::as_u64) {
            s.peer_limit_per_torrent = usize::try_from(n).unwrap_or(usize::MAX).max(1);
        }
    });
    Ok(json!({}))
}

fn totals(t: &Totals) -> Value {
    json!({
        "uploadedBytes": t.uploaded_bytes,
        "downloadedBytes": t.downloaded_bytes,
        "filesAdded": t.files_added,
        "sessionCount": t.session_count,
        "secondsActive": t.seconds_active,
    })
}

pub fn stats(daemon: &Arc<Daemon>) -> Value {
    let now = Instant::now();
    let list = daemon.session.list();
    let running = list.iter().filter(|t| Daemon::is_running(t)).count();
    let book = daemon.book();
    let (mut down, mut up) = (0.0, 0.0);
    let (mut cur_down, mut cur_up) = (0u64, 0u64);
    for t in &list {
        if let Some(r) = book.get(&t.info_hash) {
            if let Some(s) = &r.live.stats {
                down += s.download_rate;
                up += s.upload_rate;
            }
            cur_down += r.live.downloaded;
            cur_up += r.live.uploaded;
        }
    }
    let mut current = book.current_totals(now);
    current.downloaded_bytes += cur_down;
    current.uploaded_bytes += cur_up;
    let mut cumulative = book.cumulative(now);
    cumulative.downloaded_bytes += cur_down;
    cumulative.uploaded_bytes += cur_up;
    json!({
        "activeTorrentCount": running,
        "pausedTorrentCount": list.len() - running,
        "torrentCount": list.len(),
        "downloadSpeed": down as u64,
        "uploadSpeed": up as u64,
        "current-stats": totals(&current),
        "cumulative-stats": totals(&cumulative),
    })
}
