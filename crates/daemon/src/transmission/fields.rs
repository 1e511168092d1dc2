//! `torrent-get`'s fields: the 66 that clients ask for (§1.7 of the
//! ecosystem notes), each from the session's list, the torrent's
//! metainfo, the daemon's book, and (only for the fields that need it) a
//! snapshot of the running torrent.

use std::sync::Arc;
use std::time::Instant;

use lodestone_core::{Magnet, Metainfo};
use lodestone_engine::session::{Listed, RunState};
use lodestone_engine::torrent::TorrentSnapshot;
use lodestone_torrent::{FilePriority, PeerSource, SourceKind, SourceState};
use serde_json::{json, Value};

use crate::book::{GoalMode, Record};
use crate::daemon::{Daemon, Settings};
use crate::progress::{display_name, progress, Activity, Progress};

/// Fields that need a snapshot of the running torrent.
const LIVE: &[&str] = &[
    "metadataPercentComplete",
    "pieces",
    "peers",
    "peersFrom",
    "files",
    "fileStats",
    "priorities",
    "wanted",
    "webseedsSendingToUs",
];

const KNOWN: &[&str] = &[
    "activityDate",
    "addedDate",
    "bandwidthPriority",
    "comment",
    "corruptEver",
    "creator",
    "dateCreated",
    "desiredAvailable",
    "doneDate",
    "downloadDir",
    "downloadedEver",
    "downloadLimit",
    "downloadLimited",
    "editDate",
    "error",
    "errorString",
    "eta",
    "etaIdle",
    "file-count",
    "files",
    "fileStats",
    "hashString",
    "haveUnchecked",
    "haveValid",
    "honorsSessionLimits",
    "id",
    "isFinished",
    "isPrivate",
    "isStalled",
    "labels",
    "leftUntilDone",
    "magnetLink",
    "manualAnnounceTime",
    "maxConnectedPeers",
    "metadataPercentComplete",
    "name",
    "peer-limit",
    "peers",
    "peersConnected",
    "peersFrom",
    "peersGettingFromUs",
    "peersSendingToUs",
    "percentComplete",
    "percentDone",
    "pieceCount",
    "pieceSize",
    "priorities",
    "primary-mime-type",
    "queuePosition",
    "rateDownload",
    "rateUpload",
    "recheckProgress",
    "secondsDownloading",
    "secondsSeeding",
    "seedIdleLimit",
    "seedIdleMode",
    "seedRatioLimit",
    "seedRatioMode",
    "sizeWhenDone",
    "startDate",
    "status",
    "totalSize",
    "torrentFile",
    "trackers",
    "trackerList",
    "trackerStats",
    "uploadedEver",
    "uploadLimit",
    "uploadLimited",
    "uploadRatio",
    "wanted",
    "webseeds",
    "webseedsSendingToUs",
    "sources",
];

pub fn is_known(name: &str) -> bool {
    KNOWN.contains(&name)
}

/// One torrent, everything known about it.
struct View<'a> {
    t: &'a Listed,
    meta: Option<&'a Metainfo>,
    r: &'a Record,
    snap: Option<&'a TorrentSnapshot>,
    p: Progress,
    name: String,
    /// The daemon's settings, read once per request.
    settings: &'a Settings,
}

/// The rows of `torrent-get`, written as JSON into `out`: an object per
/// torrent with the fields asked for (all known), or with `table` an array
/// of the field names then an array per torrent.
pub async fn write_rows(
    daemon: &Arc<Daemon>,
    torrents: &[Listed],
    names: &[&str],
    table: bool,
    out: &mut Vec<u8>,
) {
    let live = names.iter().any(|n| LIVE.contains(n));
    let settings = daemon.settings();
    let none = Record::default();
    out.push(b'[');
    if table {
        super::write(out, names);
    }
    for (i, t) in torrents.iter().enumerate() {
        let snap = if live && Daemon::is_running(t) {
            daemon.session.snapshot(t.id).await
        } else {
            None
        };
        let meta = daemon.session.metainfo(t.id);
        // The book is read in place (a record holds its sources table:
        // no copy per torrent per request).
        let book = daemon.book();
        let record = book.get(&t.info_hash).unwrap_or(&none);
        let view = View {
            t,
            p: progress(t, meta.as_deref(), record),
            meta: meta.as_deref(),
            r: record,
            snap: snap.as_ref(),
            name: display_name(t, record),
            settings: &settings,
        };
        if i > 0 || table {
            out.push(b',');
        }
        out.push(if table { b'[' } else { b'{' });
        for (j, &n) in names.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            if !table {
                super::write(out, n);
                out.push(b':');
            }
            super::write(out, &view.field(n).unwrap_or(Value::Null));
        }
        out.push(if table { b']' } else { b'}' });
        drop(book);
    }
    out.push(b']');
}

impl View<'_> {
    /// Transmission's status: 0 stopped, 2 checking, 4 downloading (also
    /// fetching metadata), 6 seeding.
    fn status(&self) -> i64 {
        match self.p.activity {
            Activity::Stopped => 0,
            Activity::Checking => 2,
            Activity::Metadata | Activity::Downloading => 4,
            Activity::Seeding => 6,
        }
    }

    /// Seconds to completion: -1 not available (stopped, done, no rate),
    /// -2 unknown (a running magnet without its metadata).
    fn eta(&self) -> i64 {
        if self.meta.is_none() {
            return if self.p.activity == Activity::Stopped {
                -1
            } else {
                -2
            };
        }
        let p = &self.p;
        if p.left_until_done == 0 || p.download_rate < 1.0 || p.activity != Activity::Downloading {
            return -1;
        }
        (p.left_until_done as f64 / p.download_rate) as i64
    }

    fn peers_counts(&self) -> (usize, usize, usize) {
        match self.snap {
            Some(s) => {
                let est = s.peers.iter().filter(|p| p.established);
                let connected = est.clone().count();
                let sending = est.clone().filter(|p| p.download_rate > 0.0).count();
                let getting = est.filter(|p| p.upload_rate > 0.0).count();
                (connected, sending, getting)
            }
            None => self
                .r
                .live
                .stats
                .as_ref()
                .map_or((0, 0, 0), |s| (s.peers, 0, 0)),
        }
    }

    fn files(&self) -> Vec<(String, u64, u64, FilePriority)> {
        let Some(m) = self.meta else {
            return Vec::new();
        };
        let prios = self.r.file_priorities(m.info.files.len());
        let complete = self.p.left_until_done == 0 && self.r.have_valid > 0;
        m.info
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let live = self.snap.and_then(|s| s.files.get(i));
                let done = match live {
                    Some(l) => l.done,
                    None if complete => f.length,
                    None => 0,
                };
                let prio = live.map_or(prios[i], |l| l.priority);
                (f.display_path(), f.length, done, prio)
            })
            .collect()
    }

    fn field(&self, name: &str) -> Option<Value> {
        let t = self.t;
        let r = self.r;
        let v = match name {
            "id" => json!(t.id.0),
            "hashString" => json!(t.info_hash.to_hex()),
            "name" => json!(self.name),
            "status" => json!(self.status()),
            "downloadDir" => json!(t.download_dir.to_string_lossy()),
            "addedDate" => json!(t.added_at),
            "activityDate" => json!(r.activity_date),
            "doneDate" => json!(r.done_date),
            "startDate" => json!(r.start_date),
            "editDate" => json!(0),
            "dateCreated" => json!(self.meta.and_then(|m| m.creation_date).unwrap_or(0)),
            "comment" => json!(self
                .meta
                .and_then(|m| m.comment.clone())
                .unwrap_or_default()),
            "creator" => json!(self
                .meta
                .and_then(|m| m.created_by.clone())
                .unwrap_or_default()),
            "totalSize" => json!(self.p.total_size),
            "sizeWhenDone" => json!(self.p.size_when_done),
            "leftUntilDone" => json!(self.p.left_until_done),
            "haveValid" => json!(self.p.have_valid),
            "haveUnchecked" => json!(0),
            "desiredAvailable" => json!(0),
            "percentDone" => json!(self.p.percent_done),
            "percentComplete" => json!(self.p.percent_done),
            "metadataPercentComplete" => json!(match (
                self.meta,
                self.snap.and_then(|s| s.metadata.as_ref())
            ) {
                (Some(_), _) => 1.0,
                (None, Some(m)) if m.pieces > 0 => m.pieces_done as f64 / m.pieces as f64,
                (None, _) => 0.0,
            }),
            "recheckProgress" => json!(0),
            "eta" => json!(self.eta()),
            "etaIdle" => json!(-1),
            "rateDownload" => json!(self.p.download_rate as u64),
            "rateUpload" => json!(self.p.upload_rate as u64),
            "downloadedEver" => json!(r.downloaded_ever()),
            "uploadedEver" => json!(r.uploaded_ever()),
            "corruptEver" => json!(r.corrupt),
            "uploadRatio" => {
                let down = r.downloaded_ever().max(self.p.have_valid);
                if down == 0 {
                    json!(-1)
                } else {
                    json!(r.uploaded_ever() as f64 / down as f64)
                }
            }
            "error" => json!(if self.p.error.is_some() { 3 } else { 0 }),
            "errorString" => json!(self.p.error.clone().unwrap_or_default()),
            "isFinished" => json!(
                !matches!(t.state, RunState::Running)
                    && self.meta.is_some()
                    && self.p.left_until_done == 0
                    && r.ratio_limit(self.settings.seed_ratio_limit)
                        .is_some_and(
                            |l| r.uploaded_ever() as f64 >= l * self.p.size_when_done as f64
                        )
            ),
            "isPrivate" => json!(self.meta.is_some_and(|m| m.info.private)),
            "isStalled" => json!(false),
            "labels" => json!(r.labels),
            "magnetLink" => json!(match self.meta {
                Some(m) => Magnet::from_metainfo(m).to_string(),
                None => {
                    let mut m = Magnet::from_info_hash(t.info_hash);
                    m.name = Some(self.name.clone());
                    m.to_string()
                }
            }),
            "manualAnnounceTime" => json!(-1),
            "maxConnectedPeers" | "peer-limit" => json!(50),
            "peersConnected" => json!(self.peers_counts().0),
            "peersSendingToUs" => json!(self.peers_counts().1),
            "peersGettingFromUs" => json!(self.peers_counts().2),
            "webseedsSendingToUs" => json!(0),
            "pieceCount" => json!(self.meta.map_or(0, |m| m.info.num_pieces())),
            "pieceSize" => json!(self.meta.map_or(0, |m| m.info.piece_length)),
            "pieces" => json!(self.pieces()),
            "primary-mime-type" => json!("application/octet-stream"),
            "queuePosition" => json!(t.id.0.saturating_sub(1)),
            "secondsDownloading" => json!(r.seconds(Instant::now()).0),
            "secondsSeeding" => json!(r.seconds(Instant::now()).1),
            // A torrent that follows the daemon's goal reports it, as
            // Transmission does (2 and 30 minutes when none is set).
            "seedRatioLimit" => json!(match r.seed_ratio_mode {
                GoalMode::Global => self.settings.seed_ratio_limit.unwrap_or(2.0),
                _ => r.seed_ratio_limit,
            }),
            "seedRatioMode" => json!(r.seed_ratio_mode.code()),
            "seedIdleLimit" => json!(match r.seed_idle_mode {
                GoalMode::Global => self.settings.idle_seeding_limit.unwrap_or(30),
                _ => r.seed_idle_limit,
            }),
            "seedIdleMode" => json!(r.seed_idle_mode.code()),
            "bandwidthPriority" => json!(r.bandwidth_priority),
            "honorsSessionLimits" => json!(true),
            "downloadLimit" => json!(r.download_limit / 1000),
            "downloadLimited" => json!(r.download_limited),
            "uploadLimit" => json!(r.upload_limit / 1000),
            "uploadLimited" => json!(r.upload_limited),
            "file-count" => json!(self.meta.map_or(0, |m| m.info.files.len())),
            "files" => json!(self
                .files()
                .into_iter()
                .map(|(name, length, done, _)| json!({
                    "name": name, "length": length, "bytesCompleted": done
                }))
                .collect::<Vec<_>>()),
            "fileStats" => json!(self
                .files()
                .into_iter()
                .map(|(_, _, done, p)| json!({
                    "bytesCompleted": done,
                    "wanted": p != FilePriority::Skip,
                    "priority": priority_code(p),
                }))
                .collect::<Vec<_>>()),
            "priorities" => json!(self
                .files()
                .into_iter()
                .map(|f| priority_code(f.3))
                .collect::<Vec<_>>()),
            "wanted" => json!(self
                .files()
                .into_iter()
                .map(|f| i64::from(f.3 != FilePriority::Skip))
                .collect::<Vec<_>>()),
            "trackers" => json!(self.trackers()),
            "trackerList" => json!(self.tracker_list()),
            "trackerStats" => json!(self.tracker_stats()),
            "webseeds" => json!(self.meta.map_or(Vec::new(), |m| m.web_seeds.clone())),
            "peers" => json!(self.peers()),
            "peersFrom" => self.peers_from(),
            "torrentFile" => json!(""),
            "sources" => json!(self.sources()),
            _ => return None,
        };
        Some(v)
    }

    /// The pieces we have as a base64 bitfield (BEP 3's order: the high
    /// bit of the first byte is piece 0). A stopped torrent's are known
    /// only when it is complete (the snapshot comes from a running one).
    fn pieces(&self) -> String {
        use base64::Engine;
        let n = self.meta.map_or(0, |m| m.info.num_pieces()) as usize;
        let mut bits = vec![0u8; n.div_ceil(8)];
        let complete = self.p.left_until_done == 0 && self.p.size_when_done > 0;
        for i in 0..n {
            let have = match self.snap {
                Some(s) if s.pieces.len() == n => {
                    s.pieces[i].state == lodestone_torrent::PieceState::Have
                }
                _ => complete,
            };
            if have {
                bits[i / 8] |= 0x80 >> (i % 8);
            }
        }
        base64::engine::general_purpose::STANDARD.encode(bits)
    }

    fn tiers(&self) -> Vec<(usize, &str)> {
        self.meta.map_or(Vec::new(), |m| {
            m.trackers
                .iter()
                .enumerate()
                .flat_map(|(tier, urls)| urls.iter().map(move |u| (tier, u.as_str())))
                .collect()
        })
    }

    fn trackers(&self) -> Vec<Value> {
        self.tiers()
            .into_iter()
            .enumerate()
            .map(|(id, (tier, url))| {
                json!({"announce": url, "id": id, "scrape": scrape_url(url), "sitename": host(url), "tier": tier})
            })
            .collect()
    }

    fn tracker_list(&self) -> String {
        let mut out = String::new();
        let mut last = None;
        for (tier, url) in self.tiers() {
            if last.is_some() && last != Some(tier) {
                out.push('\n');
            }
            out.push_str(url);
            out.push('\n');
            last = Some(tier);
        }
        out
    }

    fn tracker_stats(&self) -> Vec<Value> {
        let sources = self
            .snap
            .map_or(&self.r.live.sources[..], |s| &s.sources[..]);
        self.tiers()
            .into_iter()
            .enumerate()
            .map(|(id, (tier, url))| {
                let status = sources.iter().find_map(|s| match (&s.kind, &s.state) {
                    (SourceKind::Tracker(u), SourceState::Tracker(t)) if u == url => {
                        Some((s, Some(t)))
                    }
                    (SourceKind::Tracker(u), _) if u == url => Some((s, None)),
                    _ => None,
                });
                let (seeders, leechers, result, announced, next) = match status {
                    Some((s, Some(t))) => (
                        t.seeders.map_or(-1, i64::from),
                        t.leechers.map_or(-1, i64::from),
                        t.status.clone(),
                        true,
                        s.next_update.map_or(0, |d| d.as_secs()),
                    ),
                    _ => (-1, -1, String::new(), false, 0),
                };
                let next_time = if next > 0 {
                    crate::book::now_secs() + i64::try_from(next).unwrap_or(0)
                } else {
                    0
                };
                json!({
                    "announce": url, "announceState": if announced { 1 } else { 0 },
                    "downloadCount": -1, "hasAnnounced": announced, "hasScraped": false,
                    "host": host(url), "id": id, "isBackup": false,
                    "lastAnnouncePeerCount": status.map_or(0, |(s, _)| s.peers),
                    "lastAnnounceResult": result, "lastAnnounceStartTime": 0,
                    "lastAnnounceSucceeded": announced, "lastAnnounceTime": 0,
                    "lastAnnounceTimedOut": false, "lastScrapeResult": "",
                    "lastScrapeStartTime": 0, "lastScrapeSucceeded": false, "lastScrapeTime": 0,
                    "lastScrapeTimedOut": false, "leecherCount": leechers,
                    "nextAnnounceTime": next_time, "nextScrapeTime": 0,
                    "scrape": scrape_url(url), "scrapeState": 0, "seederCount": seeders,
                    "sitename": host(url), "tier": tier,
                })
            })
            .collect()
    }

    fn peers(&self) -> Vec<Value> {
        let Some(s) = self.snap else {
            return Vec::new();
        };
        let pieces = self.meta.map_or(1, |m| m.info.num_pieces().max(1));
        s.peers
            .iter()
            .filter(|p| p.established)
            .map(|p| {
                json!({
                    "address": p.addr.ip().to_string(),
                    "port": p.addr.port(),
                    "clientName": p.client,
                    "flagStr": flag_str(p),
                    "progress": f64::from(p.pieces) / f64::from(pieces),
                    "rateToClient": p.download_rate as u64,
                    "rateToPeer": p.upload_rate as u64,
                    "isEncrypted": p.encrypted,
                    "isUTP": p.utp,
                    "isIncoming": p.source == PeerSource::Incoming,
                    "isDownloadingFrom": !p.peer_choking && p.am_interested,
                    "isUploadingTo": !p.am_choking && p.peer_interested,
                    "clientIsChoked": p.peer_choking,
                    "clientIsInterested": p.am_interested,
                    "peerIsChoked": p.am_choking,
                    "peerIsInterested": p.peer_interested,
                    "bytesToClient": 0,
                    "bytesToPeer": 0,
                    // Ours: every source that named this peer.
                    "sources": p.found_by.iter().map(PeerSource::name).collect::<Vec<_>>(),
                })
            })
            .collect()
    }

    fn peers_from(&self) -> Value {
        let mut counts = [0usize; 6];
        if let Some(s) = self.snap {
            for p in s.peers.iter().filter(|p| p.established) {
                counts[p.source as usize] += 1;
            }
        }
        let n = |s: PeerSource| counts[s as usize];
        json!({
            "fromCache": 0,
            "fromDht": n(PeerSource::Dht),
            "fromIncoming": n(PeerSource::Incoming),
            "fromLpd": n(PeerSource::Lpd),
            "fromLtep": 0,
            "fromPex": n(PeerSource::Pex),
            "fromTracker": n(PeerSource::Tracker),
            // Ours: peers given by the user or the magnet's x.pe.
            "fromManual": n(PeerSource::Manual),
        })
    }

    fn sources(&self) -> Vec<Value> {
        let sources = self
            .snap
            .map_or(&self.r.live.sources[..], |s| &s.sources[..]);
        sources.iter().map(crate::json::source).collect()
    }
}

/// Transmission's peer flags (`peer-mgr.cc`), the letters users look up.
fn flag_str(p: &lodestone_torrent::PeerInfo) -> String {
    let mut s = String::new();
    if !p.peer_choking && p.am_interested {
        s.push('D');
    } else if p.am_interested {
        s.push('d');
    }
    if !p.am_choking && p.peer_interested {
        s.push('U');
    } else if p.peer_interested {
        s.push('u');
    }
    if !p.peer_choking && !p.am_interested {
        s.push('K');
    }
    if !p.am_choking && !p.peer_interested {
        s.push('?');
    }
    if p.encrypted {
        s.push('E');
    }
    if p.utp {
        s.push('T');
    }
    match p.source {
        PeerSource::Dht => s.push('H'),
        PeerSource::Pex => s.push('X'),
        PeerSource::Incoming => s.push('I'),
        _ => {}
    }
    s
}

fn priority_code(p: FilePriority) -> i64 {
    match p {
        FilePriority::Low => -1,
        FilePriority::High => 1,
        FilePriority::Skip | FilePriority::Normal => 0,
    }
}

fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split(['/', '?']).next().unwrap_or("");
    hostport.to_owned()
}

fn scrape_url(url: &str) -> String {
    match url.rfind('/') {
        Some(i) if url[i + 1..].starts_with("announce") => {
            format!("{}scrape{}", &url[..=i], &url[i + 1 + "announce".len()..])
        }
        _ => String::new(),
    }
}
