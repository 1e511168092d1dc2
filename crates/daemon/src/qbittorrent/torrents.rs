//! `torrents/*`: the list, one torrent's properties, files and trackers,
//! adding, removing, starting and stopping, categories and tags.
//!
//! A category is one of the daemon's categories (`Settings.categories`,
//! name → folder); a torrent's category is its first label that names
//! one (what the native API's add with `category` does), and its tags
//! are its other labels.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use axum::http::StatusCode;
use lodestone_core::{InfoHash, Magnet, Metainfo};
use lodestone_engine::session::{Listed, SessionError};
use lodestone_engine::torrent::TorrentSnapshot;
use lodestone_torrent::{Disabled, FilePriority, PeerSource, SourceKind, SourceState};
use serde_json::{json, Map, Value};

use super::params::Params;
use super::state::{filter_matches, state, Inputs};
use super::{done, json, lock, many, one, require, text, Answer, ApiError, Qbt, MAX_LOOSE_TAGS};
use crate::book::{GoalMode, Record};
use crate::daemon::{AddOutcome, AddRequest, AddSource, Daemon, Settings};
use crate::progress::{display_name, progress, Activity};

/// qBittorrent's "no estimate": 100 days.
pub const MAX_ETA: i64 = 8_640_000;

pub async fn handle(q: &Qbt, name: &str, p: &Params) -> Answer {
    let d = &q.daemon;
    match name {
        "torrents/info" => info(q, p),
        "torrents/count" => Ok(text(StatusCode::OK, d.session.len().to_string())),
        "torrents/properties" => properties(q, p).await,
        "torrents/files" => files(q, p).await,
        "torrents/trackers" => trackers(q, p).await,
        "torrents/webseeds" => {
            let t = one(d, p)?;
            let seeds = d
                .session
                .metainfo(t.id)
                .map(|m| m.web_seeds.clone())
                .unwrap_or_default();
            json(&json!(seeds
                .iter()
                .map(|u| json!({"url": u}))
                .collect::<Vec<_>>()))
        }
        "torrents/categories" => json(&categories(&d.settings())),
        "torrents/createCategory" => create_category(q, p),
        "torrents/editCategory" => edit_category(q, p),
        "torrents/removeCategories" => remove_categories(q, p),
        "torrents/setCategory" => set_category(q, p),
        "torrents/tags" => json(&json!(all_tags(q))),
        "torrents/createTags" => {
            require(p, &["tags"])?;
            let mut loose = lock(&q.loose_tags);
            for tag in tag_list(p.get("tags").unwrap_or_default()) {
                if loose.len() < MAX_LOOSE_TAGS {
                    loose.insert(tag);
                }
            }
            done()
        }
        "torrents/deleteTags" => delete_tags(q, p),
        "torrents/addTags" => add_tags(q, p),
        "torrents/removeTags" => remove_tags(q, p),
        "torrents/add" => add(q, p).await,
        "torrents/delete" => {
            require(p, &["hashes", "deleteFiles"])?;
            let delete = p.bool("deleteFiles").unwrap_or(false);
            for t in many(d, p.get("hashes").unwrap_or_default()) {
                // Gone meanwhile: nothing to do, as qBittorrent.
                let _ = d.remove(t.id, delete).await;
                lock(&q.forced).remove(&t.info_hash);
            }
            done()
        }
        "torrents/start" | "torrents/resume" => {
            for t in hashes(q, p)? {
                let _ = d.start(t.id).await;
            }
            done()
        }
        "torrents/stop" | "torrents/pause" => {
            for t in hashes(q, p)? {
                let _ = d.stop(t.id).await;
                lock(&q.forced).remove(&t.info_hash);
            }
            done()
        }
        "torrents/recheck" => {
            for t in hashes(q, p)? {
                let _ = d.verify(t.id).await;
            }
            done()
        }
        "torrents/reannounce" => {
            for t in hashes(q, p)? {
                // A stopped torrent cannot: skipped, as qBittorrent.
                let _ = d.session.reannounce(t.id).await;
            }
            done()
        }
        "torrents/setLocation" => set_location(q, p).await,
        "torrents/filePrio" => file_prio(q, p).await,
        "torrents/setShareLimits" => share_limits(q, p),
        "torrents/topPrio"
        | "torrents/bottomPrio"
        | "torrents/increasePrio"
        | "torrents/decreasePrio" => {
            require(p, &["hashes"])?;
            // Every torrent runs: there is no queue to move in.
            Err(ApiError::conflict("Torrent queueing must be enabled"))
        }
        "torrents/setForceStart" => {
            require(p, &["hashes", "value"])?;
            let value = p.bool("value").unwrap_or(false);
            for t in many(d, p.get("hashes").unwrap_or_default()) {
                if value {
                    lock(&q.forced).insert(t.info_hash);
                    let _ = d.start(t.id).await;
                } else {
                    lock(&q.forced).remove(&t.info_hash);
                }
            }
            done()
        }
        // The engine has no sequential mode, first-and-last-piece priority
        // or super seeding: accepted, nothing changes (seq_dl,
        // f_l_piece_prio and super_seeding stay false).
        "torrents/toggleSequentialDownload" | "torrents/toggleFirstLastPiecePrio" => {
            hashes(q, p)?;
            done()
        }
        "torrents/setSuperSeeding" => {
            require(p, &["hashes", "value"])?;
            done()
        }
        // A torrent's trackers are its metainfo's: the engine cannot
        // change them. The torrent must exist (404), then nothing happens.
        "torrents/addTrackers" | "torrents/removeTrackers" => {
            require(p, &["hash", "urls"])?;
            let h = p.get("hash").unwrap_or_default();
            if h != "*" {
                for hash in h.split('|').filter(|h| !h.is_empty() && *h != "*") {
                    super::find(d, hash).ok_or_else(ApiError::not_found)?;
                }
            }
            done()
        }
        "torrents/setUploadLimit" | "torrents/setDownloadLimit" => {
            require(p, &["hashes", "limit"])?;
            let limit = p.int("limit").unwrap_or(0);
            let up = name == "torrents/setUploadLimit";
            for t in many(d, p.get("hashes").unwrap_or_default()) {
                set_limit(d, &t, up, limit).await;
            }
            done()
        }
        _ => Err(ApiError(StatusCode::NOT_FOUND, "Not Found".to_owned())),
    }
}

/// The torrents named by the required `hashes`.
fn hashes(q: &Qbt, p: &Params) -> Result<Vec<Listed>, ApiError> {
    require(p, &["hashes"])?;
    Ok(many(&q.daemon, p.get("hashes").unwrap_or_default()))
}

/// A torrent's labels as qBittorrent's category (the first label naming
/// a category) and tags (the others).
pub fn category_and_tags<'a>(
    labels: &'a [String],
    cats: &BTreeMap<String, PathBuf>,
) -> (&'a str, Vec<&'a str>) {
    let cat = labels.iter().position(|l| cats.contains_key(l));
    let tags = labels
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != cat)
        .map(|(_, l)| l.as_str())
        .collect();
    (cat.map_or("", |i| labels[i].as_str()), tags)
}

/// What every torrent's object needs, read once per request.
pub struct Lister {
    pub settings: Settings,
    forced: HashSet<InfoHash>,
    now: Instant,
}

impl Lister {
    pub fn new(q: &Qbt) -> Self {
        Self {
            settings: q.daemon.settings(),
            forced: lock(&q.forced).clone(),
            now: Instant::now(),
        }
    }

    /// Every torrent as `torrents/info` shows it, in the session's order.
    pub fn all(&self, d: &Daemon) -> Vec<(Listed, Map<String, Value>)> {
        let list = d.session.list();
        let book = d.book();
        let none = Record::default();
        list.into_iter()
            .map(|t| {
                let meta = d.session.metainfo(t.id);
                let r = book.get(&t.info_hash).unwrap_or(&none);
                let o = self.object(&t, meta.as_deref(), r);
                (t, o)
            })
            .collect()
    }

    /// One torrent's object (keys sorted, as qBittorrent's).
    pub fn object(&self, t: &Listed, meta: Option<&Metainfo>, r: &Record) -> Map<String, Value> {
        let s = &self.settings;
        let p = progress(t, meta, r);
        let name = display_name(t, r);
        let (category, tags) = category_and_tags(&r.labels, &s.categories);
        let complete = meta.is_some() && p.left_until_done == 0;
        let forced = self.forced.contains(&t.info_hash);
        let st = state(Inputs {
            activity: p.activity,
            has_metadata: t.has_metadata,
            complete,
            error: p.error.is_some(),
            forced,
            download_rate: p.download_rate,
            upload_rate: p.upload_rate,
        });
        let paths = paths(t, meta, r);
        let stats = r.live.stats.as_ref();
        let (seeds, peers) = stats.map_or((0, 0), |s| (s.seeds, s.peers));
        let (swarm_seeds, swarm_leechers) = swarm(r);
        let (down_s, seed_s) = r.seconds(self.now);
        let downloaded = r.downloaded_ever();
        let uploaded = r.uploaded_ever();
        let ratio = ratio(r, p.have_valid);
        let eta = if p.activity == Activity::Downloading
            && p.download_rate >= 1.0
            && p.left_until_done > 0
        {
            ((p.left_until_done as f64 / p.download_rate) as i64).min(MAX_ETA)
        } else {
            MAX_ETA
        };
        let trackers = tracker_urls(t, meta, r);
        let working_tracker = r
            .live
            .sources
            .iter()
            .find_map(|src| match (&src.kind, &src.state) {
                (SourceKind::Tracker(u), SourceState::Tracker(ts))
                    if ts.status.starts_with("working") =>
                {
                    Some(u.clone())
                }
                _ => None,
            });
        let reannounce = r
            .live
            .sources
            .iter()
            .filter(|s| matches!(s.kind, SourceKind::Tracker(_)))
            .filter_map(|s| s.next_update)
            .min()
            .map_or(0, |d| d.as_secs());
        let (down_limit, up_limit) = r.limits();
        let date = |secs: i64| if secs > 0 { secs } else { -1 };
        let v = json!({
            "added_on": t.added_at,
            "amount_left": p.left_until_done,
            "auto_tmm": false,
            "availability": if Daemon::is_running(t) && meta.is_some() { seeds as f64 } else { -1.0 },
            "category": category,
            "comment": meta.and_then(|m| m.comment.clone()).unwrap_or_default(),
            "completed": p.have_valid,
            "completion_on": date(r.done_date),
            "content_path": paths.content.to_string_lossy(),
            "dl_limit": down_limit.unwrap_or(0),
            "dlspeed": p.download_rate as u64,
            "download_path": paths.download.as_deref().map(Path::to_string_lossy).unwrap_or_default(),
            "downloaded": downloaded,
            "downloaded_session": r.live.downloaded,
            "eta": eta,
            "f_l_piece_prio": false,
            "force_start": forced,
            "has_metadata": t.has_metadata,
            "hash": t.info_hash.to_hex(),
            "inactive_seeding_time_limit": goal_code(r.seed_idle_mode, i64::from(r.seed_idle_limit)),
            "infohash_v1": t.info_hash.to_hex(),
            "infohash_v2": "",
            "last_activity": r.activity_date.max(t.added_at),
            "magnet_uri": magnet_uri(t, meta, &name),
            "max_inactive_seeding_time": r.idle_limit(s.idle_seeding_limit).map_or(-1, i64::from),
            "max_ratio": r.ratio_limit(s.seed_ratio_limit).unwrap_or(-1.0),
            "max_seeding_time": -1,
            "name": name,
            "num_complete": swarm_seeds.max(seeds as i64),
            "num_incomplete": swarm_leechers.max(peers.saturating_sub(seeds) as i64),
            "num_leechs": peers.saturating_sub(seeds),
            "num_seeds": seeds,
            "popularity": 0,
            "priority": 0,
            "private": meta.map(|m| m.info.private),
            "progress": p.percent_done,
            "ratio": ratio,
            "ratio_limit": match r.seed_ratio_mode {
                GoalMode::Global => -2.0,
                GoalMode::Unlimited => -1.0,
                GoalMode::Single => r.seed_ratio_limit,
            },
            "reannounce": reannounce,
            "root_path": if meta.is_some_and(|m| m.info.multi_file) { paths.content.to_string_lossy().into_owned() } else { String::new() },
            "save_path": paths.save.to_string_lossy(),
            "seeding_time": seed_s,
            "seeding_time_limit": -2,
            "seen_complete": date(r.done_date),
            "seq_dl": false,
            "size": p.size_when_done,
            "state": st,
            "super_seeding": false,
            "tags": tags.join(", "),
            "time_active": down_s + seed_s,
            "total_size": p.total_size,
            "tracker": working_tracker.unwrap_or_default(),
            "trackers_count": trackers.len(),
            "up_limit": up_limit.unwrap_or(0),
            "uploaded": uploaded,
            "uploaded_session": r.live.uploaded,
            "upspeed": p.upload_rate as u64,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

/// qBittorrent's per-torrent goal codes: -2 the global one, -1 none.
fn goal_code(mode: GoalMode, own: i64) -> i64 {
    match mode {
        GoalMode::Global => -2,
        GoalMode::Unlimited => -1,
        GoalMode::Single => own,
    }
}

fn ratio(r: &Record, have: u64) -> f64 {
    let down = r.downloaded_ever().max(have);
    if down == 0 {
        0.0
    } else {
        r.uploaded_ever() as f64 / down as f64
    }
}

/// Seeders and leechers the trackers report (-1: none said).
fn swarm(r: &Record) -> (i64, i64) {
    let mut out = (-1i64, -1i64);
    for s in &r.live.sources {
        if let SourceState::Tracker(t) = &s.state {
            out.0 = out.0.max(t.seeders.map_or(-1, i64::from));
            out.1 = out.1.max(t.leechers.map_or(-1, i64::from));
        }
    }
    out
}

pub struct Paths {
    /// Where the content ends up (qBittorrent's save path).
    pub save: PathBuf,
    /// Where it is fetched meanwhile (the incomplete folder), if elsewhere.
    pub download: Option<PathBuf>,
    /// The content itself: its file, or its top folder.
    pub content: PathBuf,
}

pub fn paths(t: &Listed, meta: Option<&Metainfo>, r: &Record) -> Paths {
    let (save, download) = match &r.final_dir {
        Some(fin) => (fin.clone(), Some(t.download_dir.clone())),
        None => (t.download_dir.clone(), None),
    };
    let content = match meta {
        Some(m) => t.download_dir.join(&m.info.name),
        None => t.download_dir.clone(),
    };
    Paths {
        save,
        download,
        content,
    }
}

fn magnet_uri(t: &Listed, meta: Option<&Metainfo>, name: &str) -> String {
    match meta {
        Some(m) => Magnet::from_metainfo(m).to_string(),
        None => {
            let mut m = Magnet::from_info_hash(t.info_hash);
            m.name = Some(name.to_owned());
            m.to_string()
        }
    }
}

/// The torrent's trackers with their tiers: its metainfo's, else (a
/// magnet) the sources table's.
fn tracker_urls(t: &Listed, meta: Option<&Metainfo>, r: &Record) -> Vec<(usize, String)> {
    let _ = t;
    match meta {
        Some(m) => m
            .trackers
            .iter()
            .enumerate()
            .flat_map(|(tier, urls)| urls.iter().map(move |u| (tier, u.clone())))
            .collect(),
        None => r
            .live
            .sources
            .iter()
            .filter_map(|s| match &s.kind {
                SourceKind::Tracker(u) => Some((0, u.clone())),
                _ => None,
            })
            .collect(),
    }
}

fn info(q: &Qbt, p: &Params) -> Answer {
    let lister = Lister::new(q);
    let filter = p.get("filter").unwrap_or("");
    let category = p.get("category");
    let tag = p.get("tag");
    let wanted: Option<HashSet<String>> = p
        .get("hashes")
        .filter(|h| !h.is_empty())
        .map(|h| h.split('|').map(str::to_ascii_lowercase).collect());
    let private = p.bool("private");
    let mut rows: Vec<Map<String, Value>> = lister
        .all(&q.daemon)
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| {
            let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
            let f = |k: &str| o.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            filter_matches(filter, s("state"), f("dlspeed"), f("upspeed"))
                && category.is_none_or(|c| s("category") == c)
                && tag.is_none_or(|t| {
                    let tags = s("tags");
                    if t.is_empty() {
                        tags.is_empty()
                    } else {
                        tags.split(", ").any(|x| x == t)
                    }
                })
                && wanted.as_ref().is_none_or(|w| w.contains(s("hash")))
                && private.is_none_or(|pv| o.get("private").and_then(Value::as_bool) == Some(pv))
        })
        .collect();
    if rows.is_empty() {
        return json(&json!([]));
    }
    if let Some(key) = p.get("sort").filter(|k| !k.is_empty()) {
        if !rows[0].contains_key(key) {
            return Err(ApiError::bad("'sort' parameter is invalid"));
        }
        let reverse = p.bool("reverse").unwrap_or(false);
        rows.sort_by(|a, b| {
            let o = compare(a.get(key), b.get(key));
            if reverse {
                o.reverse()
            } else {
                o
            }
        });
    }
    let len = rows.len() as i64;
    let mut offset = p.int("offset").unwrap_or(0);
    if offset < 0 {
        offset = (len + offset).max(0);
    }
    let limit = p.int("limit").filter(|l| *l > 0);
    let rows: Vec<Value> = rows
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX)))
        .map(Value::Object)
        .collect();
    json(&Value::Array(rows))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// A running torrent's snapshot (None when stopped).
async fn snapshot(d: &Daemon, t: &Listed) -> Option<TorrentSnapshot> {
    if Daemon::is_running(t) {
        d.session.snapshot(t.id).await
    } else {
        None
    }
}

async fn properties(q: &Qbt, p: &Params) -> Answer {
    let d = &q.daemon;
    let t = one(d, p)?;
    let meta = d.session.metainfo(t.id);
    let snap = snapshot(d, &t).await;
    let lister = Lister::new(q);
    let book = d.book();
    let none = Record::default();
    let r = book.get(&t.info_hash).unwrap_or(&none);
    let o = lister.object(&t, meta.as_deref(), r);
    let pr = progress(&t, meta.as_deref(), r);
    let (down_s, seed_s) = r.seconds(Instant::now());
    let active = down_s + seed_s;
    let (down_limit, up_limit) = r.limits();
    let stats = r.live.stats.as_ref();
    let m = meta.as_deref();
    let connections = snap
        .as_ref()
        .map_or(0, |s| s.peers.iter().filter(|p| p.established).count());
    let v = json!({
        "addition_date": t.added_at,
        "comment": o["comment"],
        "completion_date": o["completion_on"],
        "created_by": m.and_then(|m| m.created_by.clone()).unwrap_or_default(),
        "creation_date": m.and_then(|m| m.creation_date).unwrap_or(-1),
        "dl_limit": down_limit.map_or(-1, |l| l as i64),
        "dl_speed": o["dlspeed"],
        "dl_speed_avg": r.downloaded_ever().checked_div(down_s).map_or(-1, |v| v as i64),
        "download_path": o["download_path"],
        "eta": o["eta"],
        "has_metadata": t.has_metadata,
        "hash": o["hash"],
        "infohash_v1": o["infohash_v1"],
        "infohash_v2": "",
        "is_private": m.is_some_and(|m| m.info.private),
        "last_seen": o["seen_complete"],
        "name": o["name"],
        "nb_connections": connections,
        "nb_connections_limit": d.settings().peer_limit_per_torrent,
        "peers": o["num_leechs"],
        "peers_total": o["num_incomplete"],
        "piece_size": m.map_or(0, |m| i64::from(m.info.piece_length)),
        "pieces_have": stats.map_or(if pr.left_until_done == 0 && m.is_some() { m.map_or(0, |m| m.info.num_pieces()) } else { 0 }, |s| s.have_pieces),
        "pieces_num": m.map_or(0, |m| m.info.num_pieces()),
        "popularity": 0,
        "private": m.map(|m| m.info.private),
        "progress": pr.percent_done,
        "reannounce": o["reannounce"],
        "save_path": o["save_path"],
        "seeding_time": seed_s,
        "seeds": o["num_seeds"],
        "seeds_total": o["num_complete"],
        "share_ratio": o["ratio"],
        "time_elapsed": active,
        "total_downloaded": r.downloaded_ever(),
        "total_downloaded_session": r.live.downloaded,
        "total_size": pr.total_size,
        "total_uploaded": r.uploaded_ever(),
        "total_uploaded_session": r.live.uploaded,
        "total_wasted": r.corrupt,
        "up_limit": up_limit.map_or(-1, |l| l as i64),
        "up_speed": o["upspeed"],
        "up_speed_avg": r.uploaded_ever().checked_div(active).map_or(-1, |v| v as i64),
    });
    drop(book);
    json(&v)
}

/// Our priorities as qBittorrent's: 0 do not download, 1 normal, 6 high
/// (our low shows as normal: qBittorrent has nothing lower).
pub fn priority_code(p: FilePriority) -> i64 {
    match p {
        FilePriority::Skip => 0,
        FilePriority::Low | FilePriority::Normal => 1,
        FilePriority::High => 6,
    }
}

/// qBittorrent's priorities as ours: 7 (maximum) is our high too.
pub fn priority_of(code: i64) -> Option<FilePriority> {
    match code {
        0 => Some(FilePriority::Skip),
        1 => Some(FilePriority::Normal),
        6 | 7 => Some(FilePriority::High),
        _ => None,
    }
}

async fn files(q: &Qbt, p: &Params) -> Answer {
    let d = &q.daemon;
    let t = one(d, p)?;
    let Some(meta) = d.session.metainfo(t.id) else {
        return json(&json!([]));
    };
    let n = meta.info.files.len();
    let indexes: Vec<usize> = match p.get("indexes") {
        None => (0..n).collect(),
        Some(list) => list
            .split('|')
            .map(|s| match s.trim().parse::<usize>() {
                Ok(i) if i < n => Ok(i),
                Ok(_) => Err(ApiError::conflict(format!("Index {s} is out of bounds."))),
                Err(_) => Err(ApiError::conflict(format!(
                    "\"{s}\" is not a valid file index."
                ))),
            })
            .collect::<Result<_, _>>()?,
    };
    let snap = snapshot(d, &t).await;
    let (saved, complete) = {
        let book = d.book();
        let r = book.get(&t.info_hash);
        (
            r.map_or_else(|| vec![FilePriority::Normal; n], |r| r.file_priorities(n)),
            r.is_some_and(|r| r.left_until_done == 0 && r.have_valid > 0),
        )
    };
    let piece = u64::from(meta.info.piece_length.max(1));
    let mut offsets = Vec::with_capacity(n);
    let mut at = 0u64;
    for f in &meta.info.files {
        offsets.push(at);
        at += f.length;
    }
    let finished = snap
        .as_ref()
        .and_then(|s| s.stats.as_ref())
        .map_or(complete, |s| s.bytes_left == 0);
    // Which pieces peers have is not known here: a connected seed has
    // every file (1), else 0; -1 for a stopped torrent.
    let availability = match &snap {
        Some(s) if s.peers.iter().any(|p| p.established && p.seed) => 1.0,
        Some(_) => 0.0,
        None => -1.0,
    };
    let rows: Vec<Value> = indexes
        .into_iter()
        .map(|i| {
            let f = &meta.info.files[i];
            let live = snap.as_ref().and_then(|s| s.files.get(i));
            let done = match live {
                Some(l) => l.done,
                None if complete => f.length,
                None => 0,
            };
            let prio = live.map_or(saved[i], |l| l.priority);
            let first = offsets[i] / piece;
            let last = (offsets[i] + f.length.max(1) - 1) / piece;
            let mut row = json!({
                "index": i,
                "name": f.display_path(),
                "size": f.length,
                "progress": if f.length == 0 { 1.0 } else { done as f64 / f.length as f64 },
                "priority": priority_code(prio),
                "piece_range": [first, last],
                "availability": availability,
            });
            if i == 0 {
                row["is_seed"] = json!(finished);
            }
            row
        })
        .collect();
    json(&Value::Array(rows))
}

async fn file_prio(q: &Qbt, p: &Params) -> Answer {
    let d = &q.daemon;
    require(p, &["hash", "id", "priority"])?;
    let code = p
        .int("priority")
        .ok_or_else(|| ApiError::bad("Priority must be an integer"))?;
    let prio = priority_of(code).ok_or_else(|| ApiError::bad("Priority is not valid"))?;
    let t = one(d, p)?;
    let meta = d
        .session
        .metainfo(t.id)
        .ok_or_else(|| ApiError::conflict("Torrent's metadata has not yet downloaded"))?;
    let n = meta.info.files.len();
    let mut prios = match snapshot(d, &t).await {
        Some(s) if s.files.len() == n => s.files.iter().map(|f| f.priority).collect(),
        _ => d
            .book()
            .get(&t.info_hash)
            .map_or_else(|| vec![FilePriority::Normal; n], |r| r.file_priorities(n)),
    };
    for id in p.get("id").unwrap_or_default().split('|') {
        let i: i64 = id
            .trim()
            .parse()
            .map_err(|_| ApiError::bad("File IDs must be integers"))?;
        let i = usize::try_from(i)
            .ok()
            .filter(|i| *i < n)
            .ok_or_else(|| ApiError::conflict("File ID is not valid"))?;
        prios[i] = prio;
    }
    d.edit(t.id, |r| r.set_file_priorities(&prios));
    d.session
        .set_file_priorities(t.id, prios)
        .await
        .map_err(|e| ApiError::conflict(e.to_string()))?;
    done()
}

async fn trackers(q: &Qbt, p: &Params) -> Answer {
    let d = &q.daemon;
    let t = one(d, p)?;
    let meta = d.session.metainfo(t.id);
    let snap = snapshot(d, &t).await;
    let (sources, urls) = {
        let book = d.book();
        let none = Record::default();
        let r = book.get(&t.info_hash).unwrap_or(&none);
        let sources = match snap.as_ref().filter(|s| !s.sources.is_empty()) {
            Some(s) => s.sources.clone(),
            None => r.live.sources.clone(),
        };
        (sources, tracker_urls(&t, meta.as_deref(), r))
    };
    let private = meta.as_deref().is_some_and(|m| m.info.private);
    let settings = d.settings();
    let on = [
        settings.dht_enabled,
        settings.pex_enabled,
        settings.lpd_enabled,
    ];
    let peers = snap.as_ref().map_or(&[][..], |s| &s.peers[..]);
    json(&Value::Array(tracker_rows(
        &sources,
        peers,
        &urls,
        private,
        on,
        Daemon::is_running(&t),
    )))
}

/// `torrents/trackers`' rows: first qBittorrent's three sticky rows
/// (DHT, PeX, LSD; tier -1, status 2 working or 0 disabled), with our
/// sources table's numbers (peers found; connected seeds and leeches
/// each source found), then a row per tracker.
pub fn tracker_rows(
    sources: &[lodestone_torrent::Source],
    peers: &[lodestone_torrent::PeerInfo],
    urls: &[(usize, String)],
    private: bool,
    on: [bool; 3],
    running: bool,
) -> Vec<Value> {
    // Connected peers by the sources that found them: (seeds, leeches).
    let connected = |src: PeerSource| -> (usize, usize) {
        peers
            .iter()
            .filter(|p| p.established && p.found_by.contains(src))
            .fold(
                (0, 0),
                |(se, le), p| {
                    if p.seed {
                        (se + 1, le)
                    } else {
                        (se, le + 1)
                    }
                },
            )
    };
    let mut rows = Vec::new();
    for ((label, kind, src), on) in [
        ("** [DHT] **", SourceKind::Dht, PeerSource::Dht),
        ("** [PeX] **", SourceKind::Pex, PeerSource::Pex),
        ("** [LSD] **", SourceKind::Lpd, PeerSource::Lpd),
    ]
    .into_iter()
    .zip(on)
    {
        let row = sources.iter().find(|s| s.kind == kind);
        let disabled = match row.map(|r| &r.state) {
            Some(SourceState::Disabled(_)) => true,
            Some(_) => false,
            None => !on,
        };
        let (seeds, leeches) = connected(src);
        rows.push(json!({
            "url": label,
            "tier": -1,
            "status": if disabled || private { 0 } else { 2 },
            "msg": if private {
                "This torrent is private".to_owned()
            } else {
                row.map(source_message).unwrap_or_default()
            },
            // Ours, where qBittorrent says 0: the peers this source found.
            "num_peers": row.map_or(0, |r| r.peers),
            "num_seeds": seeds.max(row.map_or(0, |r| r.seeds)),
            "num_leeches": leeches,
            "num_downloaded": 0,
            "next_announce": row.and_then(|r| r.next_update).map_or(0, |n| n.as_secs()),
        }));
    }
    for (tier, url) in urls {
        let row = sources
            .iter()
            .find(|s| matches!(&s.kind, SourceKind::Tracker(u) if u == url));
        // qBittorrent's TrackerEndpointState: 0 disabled, 1 not contacted,
        // 2 working, 3 updating, 4 not working.
        let (status, msg, seeds, leeches) = match row.map(|r| &r.state) {
            Some(SourceState::Tracker(ts)) => (
                if ts.status.starts_with("working") {
                    2
                } else {
                    4
                },
                ts.status.clone(),
                ts.seeders.map_or(-1, i64::from),
                ts.leechers.map_or(-1, i64::from),
            ),
            Some(SourceState::Disabled(_)) => (0, String::new(), -1, -1),
            Some(SourceState::Starting) if running => (3, String::new(), -1, -1),
            _ => (1, String::new(), -1, -1),
        };
        rows.push(json!({
            "url": url,
            "tier": tier,
            "status": status,
            "msg": msg,
            "num_peers": row.map_or(0, |r| r.peers),
            "num_seeds": seeds,
            "num_leeches": leeches,
            "num_downloaded": -1,
            "next_announce": row.and_then(|r| r.next_update).map_or(0, |n| n.as_secs()),
        }));
    }
    rows
}

/// A DHT/PEX/LSD row's state in words.
fn source_message(s: &lodestone_torrent::Source) -> String {
    match &s.state {
        SourceState::DhtRound(r) => format!(
            "last lookup: {} of {} nodes answered, {} peers",
            r.responses, r.queries, r.peers
        ),
        SourceState::NoPexPeer => "no connected peer speaks PEX".to_owned(),
        SourceState::Exchanging(n) => format!("exchanging with {n} peers"),
        SourceState::Reported(text) => text.clone(),
        SourceState::Starting => "starting".to_owned(),
        SourceState::Disabled(Disabled::Off) => "switched off".to_owned(),
        SourceState::Disabled(Disabled::NeedsListen) => "needs a listening port".to_owned(),
        _ => String::new(),
    }
}

pub fn categories(s: &Settings) -> Value {
    let mut out = Map::new();
    for (name, dir) in &s.categories {
        out.insert(
            name.clone(),
            json!({"name": name, "savePath": dir.to_string_lossy(), "download_path": Value::Null}),
        );
    }
    Value::Object(out)
}

/// qBittorrent's `isValidCategoryName`: no empty part between slashes.
fn valid_category(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name.contains('\\')
        && !name.contains(['\r', '\n'])
}

/// A category's folder: `savePath` if given (relative to the download
/// folder), else `<download folder>/<name>`.
fn category_dir(s: &Settings, name: &str, save_path: &str) -> PathBuf {
    let save_path = save_path.trim();
    if save_path.is_empty() {
        s.download_dir.join(name)
    } else {
        s.download_dir.join(save_path)
    }
}

fn create_category(q: &Qbt, p: &Params) -> Answer {
    require(p, &["category"])?;
    let name = p.get("category").unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad("Category cannot be empty"));
    }
    if !valid_category(name) {
        return Err(ApiError::conflict("Incorrect category name"));
    }
    let s = q.daemon.settings();
    if s.categories.contains_key(name) {
        return Err(ApiError::conflict("Unable to create category"));
    }
    let dir = category_dir(&s, name, p.get("savePath").unwrap_or_default());
    q.daemon.client_settings(|s| {
        s.categories.insert(name.to_owned(), dir);
    });
    done()
}

fn edit_category(q: &Qbt, p: &Params) -> Answer {
    require(p, &["category", "savePath"])?;
    let name = p.get("category").unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad("Category cannot be empty"));
    }
    let s = q.daemon.settings();
    if !s.categories.contains_key(name) {
        return Err(ApiError::conflict("Unable to edit category"));
    }
    let dir = category_dir(&s, name, p.get("savePath").unwrap_or_default());
    q.daemon.client_settings(|s| {
        s.categories.insert(name.to_owned(), dir);
    });
    done()
}

fn remove_categories(q: &Qbt, p: &Params) -> Answer {
    require(p, &["categories"])?;
    let names: Vec<&str> = p
        .get("categories")
        .unwrap_or_default()
        .split('\n')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let d = &q.daemon;
    let cats = d.settings().categories;
    // The torrents in it lose their category (the label).
    for t in d.session.list() {
        let has = d.book().get(&t.info_hash).is_some_and(|r| {
            let cat = category_and_tags(&r.labels, &cats).0;
            !cat.is_empty() && names.contains(&cat)
        });
        if has {
            d.edit(t.id, |r| {
                let (cat, _) = category_and_tags(&r.labels, &cats);
                let cat = cat.to_owned();
                if let Some(i) = r.labels.iter().position(|l| *l == cat) {
                    r.labels.remove(i);
                }
            });
        }
    }
    d.client_settings(|s| {
        for n in &names {
            s.categories.remove(*n);
        }
    });
    done()
}

fn set_category(q: &Qbt, p: &Params) -> Answer {
    require(p, &["hashes", "category"])?;
    let cat = p.get("category").unwrap_or_default().to_owned();
    let d = &q.daemon;
    let cats = d.settings().categories;
    if !cat.is_empty() && !cats.contains_key(&cat) {
        return Err(ApiError::conflict("Incorrect category name"));
    }
    for t in many(d, p.get("hashes").unwrap_or_default()) {
        d.edit(t.id, |r| {
            let (old, _) = category_and_tags(&r.labels, &cats);
            let old = old.to_owned();
            if let Some(i) = r.labels.iter().position(|l| !old.is_empty() && *l == old) {
                r.labels.remove(i);
            }
            if !cat.is_empty() {
                r.labels.retain(|l| *l != cat);
                r.labels.insert(0, cat.clone());
            }
        });
    }
    done()
}

/// `a, b,c` → `["a", "b", "c"]`.
fn tag_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every tag: those on torrents, and those created and on none.
pub fn all_tags(q: &Qbt) -> Vec<String> {
    let d = &q.daemon;
    let cats = d.settings().categories;
    let mut tags: BTreeSet<String> = lock(&q.loose_tags).clone();
    let book = d.book();
    for t in d.session.list() {
        if let Some(r) = book.get(&t.info_hash) {
            tags.extend(
                category_and_tags(&r.labels, &cats)
                    .1
                    .into_iter()
                    .map(str::to_owned),
            );
        }
    }
    tags.into_iter().collect()
}

fn add_tags(q: &Qbt, p: &Params) -> Answer {
    require(p, &["hashes", "tags"])?;
    let tags = tag_list(p.get("tags").unwrap_or_default());
    for t in many(&q.daemon, p.get("hashes").unwrap_or_default()) {
        q.daemon.edit(t.id, |r| {
            for tag in &tags {
                if !r.labels.contains(tag) {
                    r.labels.push(tag.clone());
                }
            }
        });
    }
    done()
}

fn remove_tags(q: &Qbt, p: &Params) -> Answer {
    require(p, &["hashes"])?;
    let tags = tag_list(p.get("tags").unwrap_or_default());
    let cats = q.daemon.settings().categories;
    for t in many(&q.daemon, p.get("hashes").unwrap_or_default()) {
        q.daemon.edit(t.id, |r| {
            let (cat, _) = category_and_tags(&r.labels, &cats);
            let cat = cat.to_owned();
            // The category's label stays (it is not a tag).
            let mut kept_cat = false;
            r.labels.retain(|l| {
                if *l == cat && !kept_cat {
                    kept_cat = true;
                    return true;
                }
                !(tags.is_empty() || tags.contains(l))
            });
        });
    }
    done()
}

fn delete_tags(q: &Qbt, p: &Params) -> Answer {
    require(p, &["tags"])?;
    let tags = tag_list(p.get("tags").unwrap_or_default());
    {
        let mut loose = lock(&q.loose_tags);
        for t in &tags {
            loose.remove(t);
        }
    }
    let d = &q.daemon;
    let cats = d.settings().categories;
    for t in d.session.list() {
        let has = d.book().get(&t.info_hash).is_some_and(|r| {
            category_and_tags(&r.labels, &cats)
                .1
                .iter()
                .any(|l| tags.iter().any(|t| t == l))
        });
        if has {
            d.edit(t.id, |r| {
                let (cat, _) = category_and_tags(&r.labels, &cats);
                let cat = cat.to_owned();
                r.labels.retain(|l| *l == cat || !tags.contains(l));
            });
        }
    }
    done()
}

fn share_limits(q: &Qbt, p: &Params) -> Answer {
    require(p, &["hashes", "ratioLimit", "seedingTimeLimit"])?;
    let ratio = p.float("ratioLimit").unwrap_or(-2.0);
    let idle = p.int("inactiveSeedingTimeLimit");
    for t in many(&q.daemon, p.get("hashes").unwrap_or_default()) {
        q.daemon.edit(t.id, |r| apply_goals(r, Some(ratio), idle));
    }
    done()
}

/// qBittorrent's share limits as the book's seed goals: -2 the daemon's,
/// -1 none, else this torrent's (ratio; idle minutes). Its total seeding
/// time limit has no counterpart here and is ignored.
fn apply_goals(r: &mut Record, ratio: Option<f64>, idle_minutes: Option<i64>) {
    match ratio {
        Some(v) if v <= -2.0 + f64::EPSILON && v > -2.5 => r.seed_ratio_mode = GoalMode::Global,
        Some(v) if v < 0.0 => r.seed_ratio_mode = GoalMode::Unlimited,
        Some(v) => {
            r.seed_ratio_mode = GoalMode::Single;
            r.seed_ratio_limit = v;
        }
        None => {}
    }
    match idle_minutes {
        Some(-2) => r.seed_idle_mode = GoalMode::Global,
        Some(v) if v < 0 => r.seed_idle_mode = GoalMode::Unlimited,
        Some(v) => {
            r.seed_idle_mode = GoalMode::Single;
            r.seed_idle_limit = u32::try_from(v).unwrap_or(u32::MAX);
        }
        None => {}
    }
}

async fn set_limit(d: &Daemon, t: &Listed, up: bool, limit: i64) {
    let bytes = u64::try_from(limit).ok().filter(|l| *l > 0);
    d.edit(t.id, |r| {
        if up {
            r.upload_limited = bytes.is_some();
            r.upload_limit = bytes.unwrap_or(0);
        } else {
            r.download_limited = bytes.is_some();
            r.download_limit = bytes.unwrap_or(0);
        }
    });
    let (down, up) = d
        .book()
        .get(&t.info_hash)
        .map(Record::limits)
        .unwrap_or_default();
    let _ = d.session.set_limits(t.id, down, up).await;
}

async fn set_location(q: &Qbt, p: &Params) -> Answer {
    require(p, &["hashes", "location"])?;
    let location = p.get("location").unwrap_or_default().trim();
    if location.is_empty() {
        return Err(ApiError::bad("Save path cannot be empty"));
    }
    let d = &q.daemon;
    let dir = d.settings().download_dir.join(location);
    if std::fs::create_dir_all(&dir).is_err() {
        return Err(ApiError::conflict("Cannot make save path"));
    }
    for t in many(d, p.get("hashes").unwrap_or_default()) {
        match d.move_to(t.id, dir.clone()).await {
            Ok(()) | Err(SessionError::Unknown(_)) => {}
            Err(e) => return Err(ApiError::conflict(e.to_string())),
        }
    }
    done()
}

/// `torrents/add`: `Ok.` when at least one was added, `Fails.` when none
/// was (a torrent we have already counts as a failure, as in
/// qBittorrent); 415 for an upload that is not a torrent.
async fn add(q: &Qbt, p: &Params) -> Answer {
    let d = &q.daemon;
    // Every upload must be a torrent before anything is added.
    for f in &p.files {
        if crate::daemon::parse_torrent(&f.bytes).is_err() {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Error: '{}' is not a valid torrent file.", f.filename),
            ));
        }
    }
    let mut sources: Vec<AddSource> = p
        .get("urls")
        .unwrap_or_default()
        .split('\n')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            if u.starts_with("http://") || u.starts_with("https://") {
                AddSource::Url(u.to_owned())
            } else {
                AddSource::Magnet(u.to_owned())
            }
        })
        .collect();
    sources.extend(p.files.iter().map(|f| AddSource::Metainfo(f.bytes.clone())));
    let mut category = p.get("category").unwrap_or_default().trim().to_owned();
    let settings = d.settings();
    if !category.is_empty() && !settings.categories.contains_key(&category) {
        // qBittorrent creates a category it is given.
        if valid_category(&category) {
            let dir = category_dir(&settings, &category, "");
            d.client_settings(|s| {
                s.categories.insert(category.clone(), dir);
            });
        } else {
            category.clear();
        }
    }
    let settings = d.settings();
    let save = p.get("savepath").map(str::trim).filter(|s| !s.is_empty());
    let download_dir = match (save, settings.categories.get(&category)) {
        (Some(s), _) => Some(settings.download_dir.join(s)),
        (None, Some(dir)) if !category.is_empty() => Some(dir.clone()),
        _ => None,
    };
    let paused = p.bool("stopped").or_else(|| p.bool("paused"));
    let mut labels = Vec::new();
    if !category.is_empty() {
        labels.push(category.clone());
    }
    for t in tag_list(p.get("tags").unwrap_or_default()) {
        if !labels.contains(&t) {
            labels.push(t);
        }
    }
    let ratio = p.float("ratioLimit");
    let idle = p.int("inactiveSeedingTimeLimit");
    let forced = p.bool("forced").unwrap_or(false);
    let (up, down) = (p.int("upLimit"), p.int("dlLimit"));
    let mut any = false;
    for source in sources {
        let added = d
            .add(AddRequest {
                source,
                download_dir: download_dir.clone(),
                paused: if forced { Some(false) } else { paused },
                labels: labels.clone(),
                origin: "qbittorrent",
            })
            .await;
        let Ok(AddOutcome::Added(b)) = added else {
            continue;
        };
        any = true;
        if ratio.is_some() || idle.is_some() {
            d.edit(b.id, |r| apply_goals(r, ratio, idle));
        }
        if forced {
            lock(&q.forced).insert(b.info_hash);
        }
        if let Some(t) = d.session.get(b.id) {
            if let Some(l) = up.filter(|l| *l > 0) {
                set_limit(d, &t, true, l).await;
            }
            if let Some(l) = down.filter(|l| *l > 0) {
                set_limit(d, &t, false, l).await;
            }
        }
    }
    Ok(text(StatusCode::OK, if any { "Ok." } else { "Fails." }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestone_torrent::{DhtRound, PeerInfo, Source, SourceSet, TrackerStatus};
    use std::time::Duration;

    fn peer(port: u16, seed: bool, found_by: &[PeerSource]) -> PeerInfo {
        let mut set = SourceSet::default();
        for s in found_by {
            set.insert(*s);
        }
        PeerInfo {
            addr: ([127, 0, 0, 1], port).into(),
            client: String::new(),
            source: found_by[0],
            found_by: set,
            established: true,
            seed,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            snubbed: false,
            encrypted: false,
            utp: false,
            download_rate: 0.0,
            upload_rate: 0.0,
            pieces: 0,
            requests_out: 0,
            requests_in: 0,
        }
    }

    #[test]
    fn sticky_rows_come_first_with_our_counts() {
        let sources = vec![
            Source {
                kind: SourceKind::Dht,
                state: SourceState::DhtRound(DhtRound {
                    queries: 8,
                    responses: 6,
                    peers: 5,
                    announced: None,
                    next_in: Duration::from_secs(60),
                }),
                next_update: Some(Duration::from_secs(60)),
                seeds: 1,
                peers: 5,
            },
            Source {
                kind: SourceKind::Pex,
                state: SourceState::Exchanging(1),
                next_update: None,
                seeds: 0,
                peers: 2,
            },
            Source {
                kind: SourceKind::Lpd,
                state: SourceState::Disabled(Disabled::Off),
                next_update: None,
                seeds: 0,
                peers: 0,
            },
            Source {
                kind: SourceKind::Tracker("http://t/announce".into()),
                state: SourceState::Tracker(TrackerStatus {
                    url: "http://t/announce".into(),
                    status: "working".into(),
                    next_in: Some(Duration::from_secs(1800)),
                    seeders: Some(10),
                    leechers: Some(3),
                    peers: 7,
                }),
                next_update: Some(Duration::from_secs(1800)),
                seeds: 0,
                peers: 7,
            },
        ];
        let peers = vec![
            peer(1, true, &[PeerSource::Dht]),
            peer(2, false, &[PeerSource::Dht, PeerSource::Pex]),
        ];
        let urls = vec![(0, "http://t/announce".to_owned())];
        let rows = tracker_rows(&sources, &peers, &urls, false, [true, true, false], true);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0]["url"], "** [DHT] **");
        assert_eq!(rows[0]["tier"], -1);
        assert_eq!(rows[0]["status"], 2);
        assert_eq!(rows[0]["num_peers"], 5);
        assert_eq!(rows[0]["num_seeds"], 1);
        assert_eq!(rows[0]["num_leeches"], 1);
        assert_eq!(rows[0]["next_announce"], 60);
        assert_eq!(rows[1]["url"], "** [PeX] **");
        assert_eq!(
            (rows[1]["num_peers"].clone(), rows[1]["num_leeches"].clone()),
            (json!(2), json!(1))
        );
        assert_eq!(rows[2]["url"], "** [LSD] **");
        assert_eq!(rows[2]["status"], 0);
        assert_eq!(rows[3]["url"], "http://t/announce");
        assert_eq!(rows[3]["status"], 2);
        assert_eq!(rows[3]["num_seeds"], 10);
        assert_eq!(rows[3]["num_peers"], 7);
        // A private torrent: the three are off, and say why.
        let rows = tracker_rows(&sources, &peers, &urls, true, [true, true, true], true);
        for r in &rows[..3] {
            assert_eq!(r["status"], 0);
            assert_eq!(r["msg"], "This torrent is private");
        }
    }

    #[test]
    fn priorities_map_both_ways() {
        for code in [0, 1, 6] {
            assert_eq!(priority_code(priority_of(code).unwrap()), code);
        }
        assert_eq!(priority_of(7), Some(FilePriority::High));
        assert_eq!(priority_of(3), None);
        assert_eq!(priority_code(FilePriority::Low), 1);
    }
}
