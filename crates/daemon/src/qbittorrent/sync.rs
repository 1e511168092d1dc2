//! `sync/maindata` and `sync/torrentPeers`: the whole state for `rid=0`
//! (or a `rid` we do not know), then only what changed since the answer
//! that gave the `rid` the client sends back.
//!
//! What was sent is kept per client (its session cookie, else its
//! address) as fingerprints, not values: 8 bytes per field of each
//! torrent (about 500 bytes a torrent), for the last two answers (a
//! client whose answer was lost asks again with the older rid, as
//! qBittorrent allows). At most [`MAX_CLIENTS`] such entries are kept;
//! the least recently used goes first, and its client then gets a full
//! update.
//!
//! `time_active` and `seeding_time` go in whole minutes here (qBittorrent's
//! pages show no finer), so that 1,000 running torrents do not all change
//! every second; `torrents/info` gives the seconds.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use lodestone_torrent::{PeerInfo, PeerSource};
use serde_json::{json, Map, Value};

use super::params::Params;
use super::torrents::{all_tags, categories, Lister};
use super::{json as answer, lock, one, Answer, Client, Qbt};
use crate::daemon::Daemon;

/// Clients (times endpoints: maindata, each torrent's peers) remembered.
pub const MAX_CLIENTS: usize = 16;
/// Answers remembered per client.
const KEPT: usize = 2;

/// A fingerprint per field of each keyed object, in the object's key order.
type Prints = HashMap<String, Vec<u64>>;

/// What one answer held.
#[derive(Default)]
pub struct Snapshot {
    items: Prints,
    categories: Prints,
    trackers: Prints,
    tags: BTreeSet<String>,
    server: Vec<u64>,
}

struct Entry {
    last_used: Instant,
    kept: VecDeque<(u64, Arc<Snapshot>)>,
}

#[derive(Default)]
pub struct Store {
    entries: HashMap<String, Entry>,
    last_rid: u64,
}

impl Store {
    fn find(&self, key: &str, rid: u64) -> Option<Arc<Snapshot>> {
        if rid == 0 {
            return None;
        }
        self.entries
            .get(key)?
            .kept
            .iter()
            .find(|(r, _)| *r == rid)
            .map(|(_, s)| s.clone())
    }

    /// Keep `snap` as the answer `rid` for `key`; returns the rid.
    fn keep(&mut self, key: String, snap: Snapshot, now: Instant) -> u64 {
        self.last_rid += 1;
        let rid = self.last_rid;
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_CLIENTS {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        let e = self.entries.entry(key).or_insert(Entry {
            last_used: now,
            kept: VecDeque::new(),
        });
        e.last_used = now;
        e.kept.push_back((rid, Arc::new(snap)));
        while e.kept.len() > KEPT {
            e.kept.pop_front();
        }
        rid
    }

    pub fn clients(&self) -> usize {
        self.entries.len()
    }
}

fn print(v: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    feed(v, &mut h);
    h.finish()
}

fn feed(v: &Value, h: &mut DefaultHasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => (2u8, n.to_string()).hash(h),
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(a) => {
            (4u8, a.len()).hash(h);
            a.iter().for_each(|x| feed(x, h));
        }
        Value::Object(m) => {
            (5u8, m.len()).hash(h);
            for (k, x) in m {
                k.hash(h);
                feed(x, h);
            }
        }
    }
}

/// An object's fields' fingerprints (a non-object: one for the whole).
fn prints(v: &Value) -> Vec<u64> {
    match v {
        Value::Object(m) => m.values().map(print).collect(),
        other => vec![print(other)],
    }
}

fn snapshot_of(m: &Map<String, Value>) -> Prints {
    m.iter().map(|(k, v)| (k.clone(), prints(v))).collect()
}

/// The changed keyed objects, and the keys gone. With `partial`, a
/// changed object carries only its changed fields (torrents, peers);
/// otherwise it is sent whole (categories, trackers).
fn diff(
    old: &Prints,
    new: &Map<String, Value>,
    partial: bool,
) -> (Map<String, Value>, Vec<String>) {
    let mut changed = Map::new();
    for (k, v) in new {
        let now = prints(v);
        match old.get(k) {
            Some(before) if *before == now => {}
            Some(before) if partial && before.len() == now.len() => {
                if let Value::Object(m) = v {
                    let fields: Map<String, Value> = m
                        .iter()
                        .zip(before.iter().zip(&now))
                        .filter(|(_, (a, b))| a != b)
                        .map(|((f, x), _)| (f.clone(), x.clone()))
                        .collect();
                    changed.insert(k.clone(), Value::Object(fields));
                }
            }
            _ => {
                changed.insert(k.clone(), v.clone());
            }
        }
    }
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (changed, removed)
}

pub async fn handle(q: &Qbt, name: &str, p: &Params, client: &Client) -> Answer {
    let rid = p
        .get("rid")
        .and_then(|r| r.trim().parse::<u64>().ok())
        .unwrap_or(0);
    match name {
        "sync/maindata" => answer(&maindata(q, rid, &client.key()).await),
        "sync/torrentPeers" => {
            let t = one(&q.daemon, p)?;
            let peers = match q.daemon.session.snapshot(t.id).await {
                Some(s) if Daemon::is_running(&t) => {
                    let pieces = q
                        .daemon
                        .session
                        .metainfo(t.id)
                        .map_or(1, |m| m.info.num_pieces().max(1));
                    s.peers
                        .iter()
                        .filter(|p| p.established)
                        .map(|p| (p.addr.to_string(), peer(p, pieces)))
                        .collect()
                }
                _ => Map::new(),
            };
            let key = format!("{}|peers|{}", client.key(), t.info_hash.to_hex());
            let now = Instant::now();
            let mut store = lock(&q.sync);
            let old = store.find(&key, rid);
            let snap = Snapshot {
                items: snapshot_of(&peers),
                ..Snapshot::default()
            };
            let mut out = Map::new();
            match old {
                None => {
                    out.insert("full_update".into(), json!(true));
                    out.insert("peers".into(), Value::Object(peers));
                }
                Some(old) => {
                    let (changed, removed) = diff(&old.items, &peers, true);
                    if !changed.is_empty() {
                        out.insert("peers".into(), Value::Object(changed));
                    }
                    if !removed.is_empty() {
                        out.insert("peers_removed".into(), json!(removed));
                    }
                }
            }
            out.insert("show_flags".into(), json!(true));
            let rid = store.keep(key, snap, now);
            out.insert("rid".into(), json!(rid));
            answer(&Value::Object(out))
        }
        _ => Err(super::ApiError(
            axum::http::StatusCode::NOT_FOUND,
            "Not Found".to_owned(),
        )),
    }
}

/// The `sync/maindata` answer for a client that last got `rid`.
pub async fn maindata(q: &Qbt, rid: u64, client: &str) -> Value {
    let d = &q.daemon;
    let lister = Lister::new(q);
    let mut torrents = Map::new();
    let mut trackers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (t, mut o) in lister.all(d) {
        let hash = t.info_hash.to_hex();
        o.remove("hash");
        // Whole minutes (what qBittorrent's pages show): a running
        // torrent's clock would otherwise change every torrent every second.
        for key in ["time_active", "seeding_time"] {
            if let Some(secs) = o.get(key).and_then(Value::as_u64) {
                o.insert(key.to_owned(), json!(secs - secs % 60));
            }
        }
        if let Some(meta) = d.session.metainfo(t.id) {
            for url in meta.trackers.iter().flatten() {
                let list = trackers.entry(url.clone()).or_default();
                if list.len() < 100_000 {
                    list.push(hash.clone());
                }
            }
        }
        torrents.insert(hash, Value::Object(o));
    }
    let trackers: Map<String, Value> = trackers.into_iter().map(|(k, v)| (k, json!(v))).collect();
    let cats = match categories(&lister.settings) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let tags: BTreeSet<String> = all_tags(q).into_iter().collect();
    let server = server_state(q, &lister).await;
    let snap = Snapshot {
        items: snapshot_of(&torrents),
        categories: snapshot_of(&cats),
        trackers: snapshot_of(&trackers),
        tags: tags.clone(),
        server: prints(&server),
    };
    let now = Instant::now();
    let mut store = lock(&q.sync);
    let old = store.find(client, rid);
    let mut out = Map::new();
    match old {
        None => {
            out.insert("full_update".into(), json!(true));
            out.insert("torrents".into(), Value::Object(torrents));
            out.insert("categories".into(), Value::Object(cats));
            out.insert("tags".into(), json!(tags));
            out.insert("trackers".into(), Value::Object(trackers));
            out.insert("server_state".into(), server);
        }
        Some(old) => {
            let mut section =
                |name: &str,
                 removed_name: &str,
                 (changed, removed): (Map<String, Value>, Vec<String>)| {
                    if !changed.is_empty() {
                        out.insert(name.to_owned(), Value::Object(changed));
                    }
                    if !removed.is_empty() {
                        out.insert(removed_name.to_owned(), json!(removed));
                    }
                };
            section(
                "torrents",
                "torrents_removed",
                diff(&old.items, &torrents, true),
            );
            section(
                "categories",
                "categories_removed",
                diff(&old.categories, &cats, false),
            );
            section(
                "trackers",
                "trackers_removed",
                diff(&old.trackers, &trackers, false),
            );
            let added: Vec<&String> = tags.difference(&old.tags).collect();
            let gone: Vec<&String> = old.tags.difference(&tags).collect();
            if !added.is_empty() {
                out.insert("tags".into(), json!(added));
            }
            if !gone.is_empty() {
                out.insert("tags_removed".into(), json!(gone));
            }
            if let Value::Object(m) = &server {
                let now = prints(&server);
                let changed: Map<String, Value> = m
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| old.server.get(*i) != now.get(*i))
                    .map(|(_, (k, v))| (k.clone(), v.clone()))
                    .collect();
                if !changed.is_empty() {
                    out.insert("server_state".into(), Value::Object(changed));
                }
            }
        }
    }
    let rid = store.keep(client.to_owned(), snap, now);
    out.insert("rid".into(), json!(rid));
    Value::Object(out)
}

async fn server_state(q: &Qbt, lister: &Lister) -> Value {
    let d = &q.daemon;
    let mut v = super::app::transfer_info(q).await;
    let s = &lister.settings;
    let totals = d.book().cumulative(Instant::now());
    let free = crate::fs::space(&s.download_dir).map_or(0, |(free, _)| free);
    let ratio = if totals.downloaded_bytes > 0 {
        totals.uploaded_bytes as f64 / totals.downloaded_bytes as f64
    } else {
        0.0
    };
    if let Value::Object(m) = &mut v {
        m.insert("alltime_dl".into(), json!(totals.downloaded_bytes));
        m.insert("alltime_ul".into(), json!(totals.uploaded_bytes));
        m.insert("free_space_on_disk".into(), json!(free));
        m.insert("global_ratio".into(), json!(format!("{ratio:.2}")));
        m.insert("queueing".into(), json!(false));
        m.insert("refresh_interval".into(), json!(1500));
        m.insert(
            "total_peer_connections".into(),
            json!(d.session.connections()),
        );
        m.insert("use_alt_speed_limits".into(), json!(s.alt_speed_enabled));
        m.insert("use_subcategories".into(), json!(false));
    }
    v
}

/// One peer as qBittorrent's peer list shows it. H, X and L say which
/// of the DHT, PEX and LSD found it (any of them, not only the first).
fn peer(p: &PeerInfo, pieces: u32) -> Value {
    let (flags, desc) = flags(p);
    json!({
        "client": p.client,
        "connection": "BT",
        "country": "",
        "country_code": "",
        "dl_speed": p.download_rate as u64,
        "downloaded": 0,
        "files": "",
        "flags": flags,
        "flags_desc": desc,
        "ip": p.addr.ip().to_string(),
        "peer_id_client": p.client,
        "port": p.addr.port(),
        "progress": f64::from(p.pieces) / f64::from(pieces),
        "relevance": 0,
        "up_speed": p.upload_rate as u64,
        "uploaded": 0,
    })
}

/// qBittorrent's flag letters (`peerinfo.cpp`), space-separated, and
/// their legend.
fn flags(p: &PeerInfo) -> (String, String) {
    let mut f: Vec<(&str, &str)> = Vec::new();
    if p.am_interested {
        if p.peer_choking {
            f.push(("d", "Interested (local) and choked (peer)"));
        } else {
            f.push(("D", "Interested (local) and unchoked (peer)"));
        }
    }
    if p.peer_interested {
        if p.am_choking {
            f.push(("u", "Interested (peer) and choked (local)"));
        } else {
            f.push(("U", "Interested (peer) and unchoked (local)"));
        }
    }
    if !p.am_interested && !p.peer_choking {
        f.push(("K", "Not interested (local) and unchoked (peer)"));
    }
    if !p.peer_interested && !p.am_choking {
        f.push(("?", "Not interested (peer) and unchoked (local)"));
    }
    if p.snubbed {
        f.push(("S", "Peer snubbed"));
    }
    if p.source == PeerSource::Incoming {
        f.push(("I", "Incoming connection"));
    }
    if p.found_by.contains(PeerSource::Dht) {
        f.push(("H", "Peer from DHT"));
    }
    if p.found_by.contains(PeerSource::Pex) {
        f.push(("X", "Peer from PEX"));
    }
    if p.found_by.contains(PeerSource::Lpd) {
        f.push(("L", "Peer from LSD"));
    }
    if p.encrypted {
        f.push(("E", "Encrypted traffic"));
    }
    if p.utp {
        f.push(("P", "μTP"));
    }
    let letters: Vec<&str> = f.iter().map(|(l, _)| *l).collect();
    let desc: Vec<String> = f.iter().map(|(l, d)| format!("{l} = {d}")).collect();
    (letters.join(" "), desc.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_sends_changed_fields_and_removals() {
        let old: Map<String, Value> = serde_json::from_value(json!({
            "a": {"state": "downloading", "size": 5},
            "b": {"state": "stalledUP", "size": 7},
        }))
        .unwrap();
        let new: Map<String, Value> = serde_json::from_value(json!({
            "a": {"state": "stoppedDL", "size": 5},
            "c": {"state": "metaDL", "size": 0},
        }))
        .unwrap();
        let (changed, removed) = diff(&snapshot_of(&old), &new, true);
        assert_eq!(changed["a"], json!({"state": "stoppedDL"}));
        assert_eq!(changed["c"], json!({"state": "metaDL", "size": 0}));
        assert_eq!(removed, vec!["b".to_owned()]);
    }

    #[test]
    fn the_store_is_bounded() {
        let mut s = Store::default();
        let now = Instant::now();
        for i in 0..(MAX_CLIENTS + 5) {
            s.keep(
                format!("c{i}"),
                Snapshot::default(),
                now + std::time::Duration::from_millis(i as u64),
            );
        }
        assert_eq!(s.clients(), MAX_CLIENTS);
        assert!(s.find("c0", 1).is_none());
    }
}
