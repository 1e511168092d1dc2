//! Transmission's RPC, legacy dialect (what transmission-remote 3.00,
//! Sonarr, autobrr and the front-ends speak): one JSON request in, one
//! JSON answer out. Errors are HTTP 200 with `result` other than
//! "success", in the words transmission-daemon uses (scripts match them).

mod fields;
pub mod request;
mod session_keys;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use lodestone_engine::session::{Listed, TorrentId};
use serde_json::{json, Map, Value};

use crate::book::GoalMode;
use crate::daemon::{absolute, AddOutcome, AddRequest, AddSource, Daemon};
use request::{flag, index_list, labels, Failure, IdRef, Ids};

/// What we tell clients we are: Sonarr parses the leading version (it
/// wants >= 4.0 for labels), Tremotesf checks the RPC version window.
pub const VERSION: &str = concat!("4.0.6 (Lodestone ", env!("CARGO_PKG_VERSION"), ")");
pub const RPC_VERSION: i64 = 17;
pub const RPC_VERSION_MINIMUM: i64 = 14;
pub const RPC_VERSION_SEMVER: &str = "5.3.0";

/// A method's arguments: a JSON value, or JSON text already written
/// (`torrent-get` writes its rows straight out: 1,000 torrents as a tree
/// of values cost more than the rest of the request).
enum Arguments {
    Value(Value),
    Written(Vec<u8>),
}

/// Answer one request body with the bytes of the JSON answer.
pub async fn handle(daemon: &Arc<Daemon>, body: &[u8], session_id: &str) -> Vec<u8> {
    let req = match request::parse(body) {
        Ok(r) => r,
        Err(text) => return answer(&text, Arguments::Value(json!({})), None),
    };
    let args = &req.args;
    if req.method == "torrent-get" {
        let (result, arguments) = match torrent_get(daemon, args).await {
            Ok(got) => got,
            Err(text) => (text, Arguments::Value(json!({}))),
        };
        return answer(&result, arguments, req.tag);
    }
    let result = match req.method.as_str() {
        "session-get" => Ok(session_keys::get(daemon, args, session_id).await),
        "session-set" => session_keys::set(daemon, args),
        "session-stats" => Ok(session_keys::stats(daemon)),
        "session-close" => Ok(json!({})),
        "torrent-add" => torrent_add(daemon, args).await,
        "torrent-start" | "torrent-start-now" => each(daemon, args, Action::Start).await,
        "torrent-stop" => each(daemon, args, Action::Stop).await,
        "torrent-verify" => each(daemon, args, Action::Verify).await,
        "torrent-reannounce" => each(daemon, args, Action::Reannounce).await,
        "torrent-remove" => {
            let delete = flag(args, "delete-local-data");
            each(daemon, args, Action::Remove(delete)).await
        }
        "torrent-set" => torrent_set(daemon, args).await,
        "torrent-set-location" => set_location(daemon, args).await,
        // No queue: every torrent runs; the order asked for is accepted.
        "queue-move-top" | "queue-move-up" | "queue-move-down" | "queue-move-bottom" => {
            torrents(daemon, args).map(|_| json!({}))
        }
        "free-space" => free_space(args),
        "port-test" => {
            Err("port-test is not supported: this daemon does not ask outside hosts".to_owned())
        }
        "blocklist-update" => Err("no blocklist is configured".to_owned()),
        "group-get" => Ok(json!({"group": []})),
        "torrent-rename-path" => Err("renaming files is not supported yet".to_owned()),
        _ => Err("method name not recognized".to_owned()),
    };
    let (result, arguments) = match result {
        Ok(args) => ("success".to_owned(), args),
        Err(text) => (text, json!({})),
    };
    answer(&result, Arguments::Value(arguments), req.tag)
}

/// `{"arguments":...,"result":...,"tag":...}`, the legacy answer.
fn answer(result: &str, arguments: Arguments, tag: Option<Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"arguments\":");
    match arguments {
        Arguments::Value(v) => write(&mut out, &v),
        Arguments::Written(bytes) => out.extend_from_slice(&bytes),
    }
    out.extend_from_slice(b",\"result\":");
    write(&mut out, result);
    if let Some(tag) = tag {
        out.extend_from_slice(b",\"tag\":");
        write(&mut out, &tag);
    }
    out.push(b'}');
    out
}

/// JSON into a byte buffer (which cannot fail: values and strings only).
fn write(out: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) {
    let _ = serde_json::to_writer(out, v);
}

/// The torrents a request names; unknown ones are left out.
fn torrents(daemon: &Daemon, args: &Map<String, Value>) -> Result<Vec<Listed>, Failure> {
    let all = daemon.session.list();
    Ok(match request::ids(args)? {
        Ids::All => all,
        Ids::RecentlyActive => {
            let now = Instant::now();
            let book = daemon.book();
            all.into_iter()
                .filter(|t| book.recently_active(&t.info_hash, now))
                .collect()
        }
        Ids::Some(refs) => all
            .into_iter()
            .filter(|t| {
                refs.iter().any(|r| match r {
                    IdRef::Id(n) => t.id == TorrentId(*n),
                    IdRef::Hash(h) => t.info_hash == *h,
                })
            })
            .collect(),
    })
}

async fn torrent_get(
    daemon: &Arc<Daemon>,
    args: &Map<String, Value>,
) -> Result<(String, Arguments), Failure> {
    let recently = args.get("ids").and_then(Value::as_str) == Some("recently-active");
    let torrents = torrents(daemon, args)?;
    let Some(names) = args.get("fields").and_then(Value::as_array) else {
        // transmission-daemon answers with an empty list beside the error.
        let empty = Arguments::Value(json!({"torrents": []}));
        return Ok(("no fields specified".to_owned(), empty));
    };
    // Known fields, each once, in the order asked (unknown ones are left
    // out, as Transmission does).
    let mut fields: Vec<&str> = Vec::new();
    for n in names.iter().filter_map(Value::as_str) {
        if fields::is_known(n) && !fields.contains(&n) {
            fields.push(n);
        }
    }
    let table = args.get("format").and_then(Value::as_str) == Some("table");
    let mut out = b"{\"torrents\":".to_vec();
    fields::write_rows(daemon, &torrents, &fields, table, &mut out).await;
    if recently {
        let now = Instant::now();
        let removed: Vec<u64> = daemon.book().recently_removed(now).map(|id| id.0).collect();
        out.extend_from_slice(b",\"removed\":");
        write(&mut out, &removed);
    }
    out.push(b'}');
    Ok(("success".to_owned(), Arguments::Written(out)))
}

async fn torrent_add(daemon: &Arc<Daemon>, args: &Map<String, Value>) -> Result<Value, Failure> {
    let source = if let Some(b64) = args.get("metainfo").and_then(Value::as_str) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim().replace(['\n', '\r'], ""))
            .map_err(|e| format!("invalid or corrupt torrent file: bad base64: {e}"))?;
        AddSource::Metainfo(bytes)
    } else if let Some(f) = args.get("filename").and_then(Value::as_str) {
        if f.starts_with("magnet:") || f.len() == 40 || f.len() == 32 {
            AddSource::Magnet(f.to_owned())
        } else if f.starts_with("http://") || f.starts_with("https://") {
            AddSource::Url(f.to_owned())
        } else {
            // A path on the daemon's machine, as transmission-daemon takes.
            let bytes = read_local_torrent(f)?;
            AddSource::Metainfo(bytes)
        }
    } else {
        return Err("no filename or metainfo specified".to_owned());
    };
    let download_dir = match args.get("download-dir").and_then(Value::as_str) {
        Some(d) => Some(absolute(d).ok_or("download directory path is not absolute")?),
        None => None,
    };
    let paused = args.get("paused").map(|_| flag(args, "paused"));
    let labels = labels(args)?;
    let outcome = daemon
        .add(AddRequest {
            source,
            download_dir,
            paused,
            labels: labels.unwrap_or_default(),
            origin: "rpc",
        })
        .await
        .map_err(|e| e.to_string())?;
    let (key, b) = match outcome {
        AddOutcome::Added(b) => ("torrent-added", b),
        AddOutcome::Duplicate(b) => ("torrent-duplicate", b),
    };
    // File choices given with the add.
    if key == "torrent-added" {
        if let Some(t) = daemon.session.get(b.id) {
            apply_file_choices(daemon, &t, args).await?;
        }
    }
    Ok(json!({key: {"id": b.id.0, "hashString": b.info_hash.to_hex(), "name": b.name}}))
}

fn read_local_torrent(path: &str) -> Result<Vec<u8>, Failure> {
    let corrupt = |why: String| format!("invalid or corrupt torrent file: {why}");
    let f = std::fs::File::open(path).map_err(|e| corrupt(format!("{path}: {e}")))?;
    let mut bytes = Vec::new();
    use std::io::Read;
    f.take(crate::daemon::MAX_TORRENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(format!("{path}: {e}")))?;
    Ok(bytes)
}

enum Action {
    Start,
    Stop,
    Verify,
    Reannounce,
    Remove(bool),
}

async fn each(
    daemon: &Arc<Daemon>,
    args: &Map<String, Value>,
    action: Action,
) -> Result<Value, Failure> {
    for t in torrents(daemon, args)? {
        let r = match action {
            Action::Start => daemon.start(t.id).await,
            Action::Stop => daemon.stop(t.id).await,
            Action::Verify => daemon.verify(t.id).await,
            // Ask the trackers (and the DHT) now. A torrent that cannot
            // (stopped, or gone meanwhile) is skipped and the call still
            // succeeds, as Transmission's tr_torrentCanManualUpdate does;
            // so is a tracker whose `min interval` has not passed.
            Action::Reannounce => {
                use lodestone_engine::session::SessionError;
                match daemon.session.reannounce(t.id).await {
                    Err(SessionError::NotRunning(_) | SessionError::Unknown(_)) => Ok(()),
                    r => r,
                }
            }
            Action::Remove(delete) => daemon.remove(t.id, delete).await,
        };
        r.map_err(|e| e.to_string())?;
    }
    Ok(json!({}))
}

fn kbps(v: &Value) -> Option<u64> {
    v.as_u64().map(|k| k.saturating_mul(1000))
}

async fn torrent_set(daemon: &Arc<Daemon>, args: &Map<String, Value>) -> Result<Value, Failure> {
    let torrents = torrents(daemon, args)?;
    let labels = labels(args)?;
    for t in &torrents {
        apply_file_choices(daemon, t, args).await?;
        let mut limits_changed = false;
        daemon.edit(t.id, |r| {
            if let Some(l) = &labels {
                r.labels = l.clone();
            }
            if let Some(v) = args.get("seedRatioLimit").and_then(Value::as_f64) {
                r.seed_ratio_limit = v.max(0.0);
            }
            if let Some(m) = args
                .get("seedRatioMode")
                .and_then(Value::as_i64)
                .and_then(GoalMode::from_code)
            {
                r.seed_ratio_mode = m;
            }
            if let Some(v) = args.get("seedIdleLimit").and_then(Value::as_u64) {
                r.seed_idle_limit = u32::try_from(v).unwrap_or(u32::MAX);
            }
            if let Some(m) = args
                .get("seedIdleMode")
                .and_then(Value::as_i64)
                .and_then(GoalMode::from_code)
            {
                r.seed_idle_mode = m;
            }
            if let Some(p) = args.get("bandwidthPriority").and_then(Value::as_i64) {
                r.bandwidth_priority = p.clamp(-1, 1);
            }
            if let Some(v) = args.get("downloadLimit").and_then(kbps) {
                r.download_limit = v;
                limits_changed = true;
            }
            if let Some(v) = args.get("uploadLimit").and_then(kbps) {
                r.upload_limit = v;
                limits_changed = true;
            }
            if args.contains_key("downloadLimited") {
                r.download_limited = flag(args, "downloadLimited");
                limits_changed = true;
            }
            if args.contains_key("uploadLimited") {
                r.upload_limited = flag(args, "uploadLimited");
                limits_changed = true;
            }
        });
        if limits_changed {
            let (down, up) = daemon
                .book()
                .get(&t.info_hash)
                .map(|r| r.limits())
                .unwrap_or_default();
            daemon
                .session
                .set_limits(t.id, down, up)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(json!({}))
}

/// `files-wanted`, `files-unwanted`, `priority-high|normal|low`.
async fn apply_file_choices(
    daemon: &Arc<Daemon>,
    t: &Listed,
    args: &Map<String, Value>,
) -> Result<(), Failure> {
    use lodestone_torrent::FilePriority as P;
    let wanted = index_list(args, "files-wanted")?;
    let unwanted = index_list(args, "files-unwanted")?;
    let high = index_list(args, "priority-high")?;
    let low = index_list(args, "priority-low")?;
    let normal = index_list(args, "priority-normal")?;
    let all = [&wanted, &unwanted, &high, &low, &normal];
    if all.iter().all(|l| l.is_empty()) {
        return Ok(());
    }
    let Some(meta) = daemon.session.metainfo(t.id) else {
        return Err("file index out of range".to_owned());
    };
    let n = meta.info.files.len();
    if all.iter().flat_map(|l| l.iter()).any(|&i| i >= n) {
        return Err("file index out of range".to_owned());
    }
    // Start from what the torrent has now.
    let mut prios: Vec<P> = match daemon.session.snapshot(t.id).await {
        Some(s) if s.files.len() == n => s.files.iter().map(|f| f.priority).collect(),
        _ => daemon
            .book()
            .get(&t.info_hash)
            .map_or_else(|| vec![P::Normal; n], |r| r.file_priorities(n)),
    };
    // The level a file gets back when wanted again.
    let mut level: Vec<P> = prios
        .iter()
        .map(|&p| if p == P::Skip { P::Normal } else { p })
        .collect();
    for &i in &high {
        level[i] = P::High;
    }
    for &i in &low {
        level[i] = P::Low;
    }
    for &i in &normal {
        level[i] = P::Normal;
    }
    for (i, p) in prios.iter_mut().enumerate() {
        if *p != P::Skip {
            *p = level[i];
        }
    }
    for &i in &wanted {
        prios[i] = level[i];
    }
    for &i in &unwanted {
        prios[i] = P::Skip;
    }
    daemon.edit(t.id, |r| r.set_file_priorities(&prios));
    daemon
        .session
        .set_file_priorities(t.id, prios)
        .await
        .map_err(|e| e.to_string())
}

async fn set_location(daemon: &Arc<Daemon>, args: &Map<String, Value>) -> Result<Value, Failure> {
    let location = args
        .get("location")
        .and_then(Value::as_str)
        .ok_or("no location")?;
    let dir: PathBuf = absolute(location).ok_or("new location path is not absolute")?;
    if !flag(args, "move") {
        return Err("setting a location without moving the data is not supported yet".to_owned());
    }
    for t in torrents(daemon, args)? {
        daemon
            .move_to(t.id, dir.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(json!({}))
}

fn free_space(args: &Map<String, Value>) -> Result<Value, Failure> {
    let path = args
        .get("path")
        .and_then(Value::as_str)
        .ok_or("directory path is not absolute")?;
    let dir = absolute(path).ok_or("directory path is not absolute")?;
    let (free, total) = crate::fs::space(&dir).map_err(|e| format!("{path}: {e}"))?;
    Ok(json!({"path": path, "size-bytes": free, "total_size": total}))
}
