//! The native API, `/api/v1/`: JSON over HTTP for scripts and the web
//! page, with an event stream (Server-Sent Events) that sends what
//! changed rather than the whole state. Documented in API.md.
//!
//! Every call that changes something must carry a JSON (or .torrent)
//! Content-Type: a browser cannot send those across origins without asking
//! first, and we never say yes (no CORS), so a page elsewhere cannot drive
//! the daemon.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lodestone_core::InfoHash;
use lodestone_engine::session::{Listed, TorrentId};
use lodestone_torrent::{FilePriority, PeerInfo, PeerSource, PieceState, SourceKind};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::book::Record;
use crate::daemon::{absolute, AddOutcome, AddRequest, AddSource, Change, Daemon};
use crate::progress::{display_name, progress};

/// Changes to one torrent are sent at most this often.
const COALESCE: Duration = Duration::from_secs(1);

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/api/v1/session", get(session))
        .route("/api/v1/torrents", get(list).post(add))
        .route("/api/v1/torrents/{id}", get(one).delete(remove))
        .route("/api/v1/torrents/{id}/{action}", post(act))
        .route("/api/v1/torrents/{id}/move", post(move_to))
        .route("/api/v1/torrents/{id}/sources", get(sources))
        .route("/api/v1/torrents/{id}/peers", get(peers))
        .route("/api/v1/torrents/{id}/files", get(files).post(set_files))
        .route("/api/v1/torrents/{id}/pieces", get(pieces))
        .route("/api/v1/events", get(events))
        .with_state(daemon)
}

/// An answer that went wrong: status and a sentence.
struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

type Answer = Result<Json<Value>, Problem>;

fn bad(message: String) -> Problem {
    Problem(StatusCode::BAD_REQUEST, message)
}

fn not_found(id: &str) -> Problem {
    Problem(StatusCode::NOT_FOUND, format!("no torrent {id}"))
}

/// A torrent by its id or its info hash (40 hex).
fn find(daemon: &Daemon, id: &str) -> Result<Listed, Problem> {
    let hit = if let Ok(n) = id.parse::<u64>() {
        daemon.session.get(TorrentId(n))
    } else if let Ok(ih) = id.parse::<InfoHash>() {
        daemon
            .session
            .find(ih)
            .and_then(|id| daemon.session.get(id))
    } else {
        None
    };
    hit.ok_or_else(|| not_found(id))
}

/// Changes need a Content-Type no cross-site form can send.
fn guard(headers: &HeaderMap) -> Result<(), Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json")
        || media.eq_ignore_ascii_case("application/x-bittorrent")
    {
        Ok(())
    } else {
        Err(Problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json (or application/x-bittorrent for a .torrent)"
                .to_owned(),
        ))
    }
}

/// One torrent as the list shows it.
pub fn summary(daemon: &Daemon, t: &Listed) -> Value {
    let meta = daemon.session.metainfo(t.id);
    let book = daemon.book();
    let none = Record::default();
    let record = book.get(&t.info_hash).unwrap_or(&none);
    let p = progress(t, meta.as_deref(), record);
    let stats = record.live.stats.as_ref();
    let name = display_name(t, record);
    json!({
        "id": t.id.0,
        "info_hash": t.info_hash.to_hex(),
        "name": name,
        "state": p.activity.name(),
        "has_metadata": t.has_metadata,
        "total_size": p.total_size,
        "wanted_size": p.size_when_done,
        "have": p.have_valid,
        "left": p.left_until_done,
        "progress": p.percent_done,
        "download_rate": p.download_rate,
        "upload_rate": p.upload_rate,
        "downloaded": record.downloaded_ever(),
        "uploaded": record.uploaded_ever(),
        "peers": stats.map_or(0, |s| s.peers),
        "seeds": stats.map_or(0, |s| s.seeds),
        "download_dir": t.download_dir.to_string_lossy(),
        "labels": record.labels,
        "added_at": t.added_at,
        "done_at": (record.done_date > 0).then_some(record.done_date),
        "error": p.error,
    })
}

async fn session(State(d): State<Arc<Daemon>>) -> Answer {
    let dht = match d.dht() {
        Some(dht) => {
            let h = dht.health().await;
            json!({"enabled": true, "nodes": h.nodes, "good_nodes": h.good})
        }
        None => json!({"enabled": false, "nodes": 0, "good_nodes": 0}),
    };
    let list = d.session.list();
    let now = Instant::now();
    let book = d.book();
    let (mut down, mut up) = (0.0, 0.0);
    for t in &list {
        if let Some(s) = book.get(&t.info_hash).and_then(|r| r.live.stats.as_ref()) {
            down += s.download_rate;
            up += s.upload_rate;
        }
    }
    let totals = book.cumulative(now);
    drop(book);
    let s = d.settings();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": d.uptime().as_secs(),
        "torrents": list.len(),
        "running": d.session.running(),
        "connections": d.session.connections(),
        "dht": dht,
        "download_rate": down,
        "upload_rate": up,
        "download_dir": s.download_dir.to_string_lossy(),
        "limits": {"download": s.speed_limit_down, "upload": s.speed_limit_up,
                   "alt_download": s.alt_speed_down, "alt_upload": s.alt_speed_up,
                   "alt_enabled": s.alt_speed_enabled},
        "totals": {"downloaded": totals.downloaded_bytes, "uploaded": totals.uploaded_bytes,
                   "added": totals.files_added, "starts": totals.session_count,
                   "seconds_active": totals.seconds_active},
    })))
}

async fn list(State(d): State<Arc<Daemon>>) -> Answer {
    let all: Vec<Value> = d.session.list().iter().map(|t| summary(&d, t)).collect();
    Ok(Json(json!({"torrents": all})))
}

async fn one(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Answer {
    let t = find(&d, &id)?;
    let mut v = summary(&d, &t);
    if let Some(m) = d.session.metainfo(t.id) {
        v["piece_size"] = json!(m.info.piece_length);
        v["pieces"] = json!(m.info.num_pieces());
        v["private"] = json!(m.info.private);
        v["comment"] = json!(m.comment);
        v["created_by"] = json!(m.created_by);
        v["creation_date"] = json!(m.creation_date);
        v["trackers"] = json!(m.trackers);
        v["web_seeds"] = json!(m.web_seeds);
        v["magnet"] = json!(lodestone_core::Magnet::from_metainfo(&m).to_string());
    }
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddJson {
    magnet: Option<String>,
    url: Option<String>,
    download_dir: Option<String>,
    /// A configured category: its folder, and its name as a label.
    category: Option<String>,
    paused: Option<bool>,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AddQuery {
    download_dir: Option<String>,
    paused: Option<bool>,
}

async fn add(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<AddQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    guard(&headers)?;
    let is_torrent = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-bittorrent"));
    let (source, dir, paused, labels) = if is_torrent {
        (
            AddSource::Metainfo(body.to_vec()),
            q.download_dir,
            q.paused,
            Vec::new(),
        )
    } else {
        let a: AddJson = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        let source = match (a.magnet, a.url) {
            (Some(m), None) => AddSource::Magnet(m),
            (None, Some(u)) => AddSource::Url(u),
            _ => return Err(bad("give one of \"magnet\" or \"url\"".to_owned())),
        };
        let mut labels = a.labels;
        let dir = match a.category {
            None => a.download_dir,
            Some(c) => {
                let s = d.settings();
                let dir = s
                    .categories
                    .get(&c)
                    .ok_or_else(|| bad(format!("no category '{c}' in the configuration")))?;
                labels.insert(0, c);
                Some(dir.to_string_lossy().into_owned())
            }
        };
        (source, dir, a.paused, labels)
    };
    let download_dir: Option<PathBuf> = match dir {
        Some(d) => Some(absolute(&d).ok_or_else(|| bad(format!("{d}: not an absolute path")))?),
        None => None,
    };
    let outcome = d
        .add(AddRequest {
            source,
            download_dir,
            paused,
            labels,
            origin: "api",
        })
        .await
        .map_err(|e| bad(e.to_string()))?;
    let (status, b, new) = match outcome {
        AddOutcome::Added(b) => (StatusCode::CREATED, b, true),
        AddOutcome::Duplicate(b) => (StatusCode::OK, b, false),
    };
    Ok((
        status,
        Json(json!({"id": b.id.0, "info_hash": b.info_hash.to_hex(), "name": b.name, "new": new})),
    ))
}

fn failed(e: impl std::fmt::Display) -> Problem {
    Problem(StatusCode::CONFLICT, e.to_string())
}

/// `POST /torrents/{id}/pause|resume|recheck`.
async fn act(
    State(d): State<Arc<Daemon>>,
    Path((id, action)): Path<(String, String)>,
    h: HeaderMap,
) -> Answer {
    guard(&h)?;
    let t = find(&d, &id)?;
    match action.as_str() {
        "pause" => d.stop(t.id).await,
        "resume" => d.start(t.id).await,
        "recheck" => d.verify(t.id).await,
        _ => {
            return Err(Problem(
                StatusCode::NOT_FOUND,
                format!("no action '{action}'"),
            ))
        }
    }
    .map_err(failed)?;
    Ok(Json(summary(&d, &find(&d, &id)?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    #[serde(default)]
    delete_data: bool,
}

async fn remove(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Answer {
    // DELETE is never sent across origins without asking first.
    let t = find(&d, &id)?;
    d.remove(t.id, q.delete_data).await.map_err(failed)?;
    Ok(Json(
        json!({"removed": t.id.0, "deleted_data": q.delete_data}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveJson {
    dir: String,
}

async fn move_to(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Answer {
    guard(&h)?;
    let t = find(&d, &id)?;
    let m: MoveJson = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let dir = absolute(&m.dir).ok_or_else(|| {
        Problem(
            StatusCode::BAD_REQUEST,
            format!("{}: not an absolute path", m.dir),
        )
    })?;
    d.move_to(t.id, dir).await.map_err(failed)?;
    Ok(Json(summary(&d, &find(&d, &id)?)))
}

async fn sources(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Answer {
    let t = find(&d, &id)?;
    let snap = d.session.snapshot(t.id).await;
    let rows: Vec<Value> = match snap.as_ref().filter(|s| !s.sources.is_empty()) {
        Some(s) => s
            .sources
            .iter()
            .map(|row| {
                let mut v = crate::json::source(row);
                v["connected"] = connected(&row.kind, &s.peers);
                v
            })
            .collect(),
        None => d
            .book()
            .get(&t.info_hash)
            .map(|r| r.live.sources.iter().map(crate::json::source).collect())
            .unwrap_or_default(),
    };
    let metadata = snap.and_then(|s| s.metadata).map(|m| {
        json!({
            "peers_found": m.found, "attempts": m.attempts, "failed": m.failed,
            "handshaken": m.handshaken, "with_ut_metadata": m.with_ut_metadata,
            "refused_size": m.refused_size, "banned": m.banned, "size": m.size,
            "pieces_done": m.pieces_done, "pieces": m.pieces,
            "dht_enabled": m.dht_enabled,
            "dht": m.dht.map(|r| json!({
                "queries": r.queries, "responses": r.responses, "peers": r.peers,
                "announced": r.announced.map(|(of, ok)| json!({"ok": ok, "of": of})),
            })),
        })
    });
    Ok(Json(
        json!({"id": t.id.0, "sources": rows, "metadata": metadata}),
    ))
}

/// Established connections counted under a source, seeds and leechers
/// apart (null for a tracker row: connections count under "tracker", not
/// under one URL).
fn connected(kind: &SourceKind, peers: &[PeerInfo]) -> Value {
    let source = match kind {
        SourceKind::Dht => PeerSource::Dht,
        SourceKind::Pex => PeerSource::Pex,
        SourceKind::Lpd => PeerSource::Lpd,
        SourceKind::Given => PeerSource::Manual,
        SourceKind::Incoming => PeerSource::Incoming,
        SourceKind::Tracker(_) => return Value::Null,
    };
    let (mut seeds, mut leechers) = (0, 0);
    for p in peers.iter().filter(|p| p.established && p.source == source) {
        if p.seed {
            seeds += 1;
        } else {
            leechers += 1;
        }
    }
    json!({"seeds": seeds, "leechers": leechers})
}

async fn peers(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Answer {
    let t = find(&d, &id)?;
    let peers: Vec<Value> = d
        .session
        .snapshot(t.id)
        .await
        .map(|s| s.peers.iter().map(crate::json::peer).collect())
        .unwrap_or_default();
    Ok(Json(json!({"id": t.id.0, "peers": peers})))
}

fn priority_name(p: FilePriority) -> &'static str {
    match p {
        FilePriority::Skip => "skip",
        FilePriority::Low => "low",
        FilePriority::Normal => "normal",
        FilePriority::High => "high",
    }
}

async fn files(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Answer {
    let t = find(&d, &id)?;
    let Some(meta) = d.session.metainfo(t.id) else {
        return Ok(Json(json!({"id": t.id.0, "files": []})));
    };
    let snap = d.session.snapshot(t.id).await;
    let saved = d
        .book()
        .get(&t.info_hash)
        .map(|r| r.file_priorities(meta.info.files.len()))
        .unwrap_or_else(|| vec![FilePriority::Normal; meta.info.files.len()]);
    let files: Vec<Value> = meta
        .info
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let live = snap.as_ref().and_then(|s| s.files.get(i));
            json!({
                "index": i,
                "path": f.display_path(),
                "length": f.length,
                "done": live.map(|l| l.done),
                "priority": priority_name(live.map_or(saved[i], |l| l.priority)),
            })
        })
        .collect();
    Ok(Json(json!({"id": t.id.0, "files": files})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesJson {
    priorities: Vec<String>,
}

async fn set_files(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Answer {
    guard(&h)?;
    let t = find(&d, &id)?;
    let f: FilesJson = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let prios = f
        .priorities
        .iter()
        .map(|p| match p.as_str() {
            "skip" => Ok(FilePriority::Skip),
            "low" => Ok(FilePriority::Low),
            "normal" => Ok(FilePriority::Normal),
            "high" => Ok(FilePriority::High),
            other => Err(bad(format!(
                "priority '{other}': one of skip, low, normal, high"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    d.session
        .set_file_priorities(t.id, prios.clone())
        .await
        .map_err(|e| bad(e.to_string()))?;
    d.edit(t.id, |r| r.set_file_priorities(&prios));
    files(State(d), Path(id)).await
}

async fn pieces(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Answer {
    let t = find(&d, &id)?;
    let states: String = d
        .session
        .snapshot(t.id)
        .await
        .map(|s| {
            s.pieces
                .iter()
                .map(|p| match p.state {
                    PieceState::Have => 'h',
                    PieceState::Downloading => 'd',
                    PieceState::Missing => '.',
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({
        "id": t.id.0,
        "count": states.len(),
        "legend": {"h": "have", "d": "downloading", ".": "missing"},
        "states": states,
    })))
}

/// The event stream: `torrent` with a torrent's summary when it changed
/// (at most once a second each), `removed` with its id.
async fn events(State(d): State<Arc<Daemon>>) -> impl IntoResponse {
    let rx = d.subscribe();
    let state = (d, rx, BTreeSet::<TorrentId>::new(), Vec::<Event>::new());
    let stream =
        futures_util::stream::unfold(state, |(d, mut rx, mut dirty, mut out)| async move {
            loop {
                if let Some(e) = out.pop() {
                    return Some((Ok::<Event, Infallible>(e), (d, rx, dirty, out)));
                }
                // Gather changes for a moment, then send each torrent once.
                let deadline = tokio::time::Instant::now() + COALESCE;
                loop {
                    let got = tokio::time::timeout_at(deadline, rx.recv()).await;
                    match got {
                        Err(_) => break,
                        Ok(Ok(Change::Torrent(id))) => {
                            dirty.insert(id);
                        }
                        Ok(Ok(Change::Removed(id))) => {
                            dirty.remove(&id);
                            out.push(
                                Event::default()
                                    .event("removed")
                                    .data(json!({"id": id.0}).to_string()),
                            );
                        }
                        // Fell behind: say so, the reader fetches the list again.
                        Ok(Err(RecvError::Lagged(_))) => {
                            out.push(Event::default().event("resync").data("{}"));
                        }
                        Ok(Err(RecvError::Closed)) => return None,
                    }
                }
                let list = d.session.list();
                for id in std::mem::take(&mut dirty) {
                    if let Some(t) = list.iter().find(|t| t.id == id) {
                        out.push(
                            Event::default()
                                .event("torrent")
                                .data(summary(&d, t).to_string()),
                        );
                    }
                }
                out.reverse();
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
