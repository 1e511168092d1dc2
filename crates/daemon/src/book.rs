//! What the daemon knows of each torrent beyond the session: the user's
//! labels and seed goals, totals across runs, dates, and the latest
//! numbers its events said. The APIs answer from here without asking each
//! torrent (1,000 torrents in one `torrent-get` cost no round trips), and
//! the part worth keeping is saved in the state directory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use lodestone_engine::session::{SessionEvent, TorrentId};
use lodestone_engine::torrent::{Stats, TorrentEvent};
use lodestone_torrent::{FilePriority, Source};
use serde::{Deserialize, Serialize};

/// How long a removed torrent is reported in `recently-active` answers,
/// and how long a change keeps a torrent there (Transmission's 60 s).
pub const RECENT: Duration = Duration::from_secs(60);

/// Where a running torrent is in its run, as its events said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Started, nothing said yet (its files are being checked).
    #[default]
    Checking,
    /// A magnet fetching its metadata.
    Metadata,
    Downloading,
    Seeding,
}

/// How a seed goal applies: Transmission's `seedRatioMode`/`seedIdleMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoalMode {
    /// The daemon's setting.
    #[default]
    Global,
    /// This torrent's own.
    Single,
    Unlimited,
}

impl GoalMode {
    pub fn code(self) -> i64 {
        match self {
            GoalMode::Global => 0,
            GoalMode::Single => 1,
            GoalMode::Unlimited => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(GoalMode::Global),
            1 => Some(GoalMode::Single),
            2 => Some(GoalMode::Unlimited),
            _ => None,
        }
    }
}

/// One torrent's record. The saved part is plain data; `live` is what
/// this process saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// A magnet's `dn` until its metadata names it.
    pub name: Option<String>,
    pub labels: Vec<String>,
    pub seed_ratio_limit: f64,
    pub seed_ratio_mode: GoalMode,
    /// Minutes without peers taking data before seeding stops.
    pub seed_idle_limit: u32,
    pub seed_idle_mode: GoalMode,
    /// -1 low, 0 normal, 1 high (kept and reported; the engine has one class).
    pub bandwidth_priority: i64,
    /// Seconds since the epoch; 0: never.
    pub done_date: i64,
    pub activity_date: i64,
    pub start_date: i64,
    /// Payload bytes moved by earlier runs.
    pub downloaded_before: u64,
    pub uploaded_before: u64,
    /// Bytes of pieces that failed their hash check.
    pub corrupt: u64,
    /// Verified bytes and wanted bytes, as last known (a paused torrent
    /// reports these).
    pub have_valid: u64,
    pub size_when_done: u64,
    pub left_until_done: u64,
    pub seconds_downloading: u64,
    pub seconds_seeding: u64,
    /// The last error that stopped it (disk full, files gone).
    pub error: Option<String>,
    /// Per-torrent limits in bytes per second, and whether each applies
    /// (Transmission keeps the value while the limit is off).
    pub download_limit: u64,
    pub download_limited: bool,
    pub upload_limit: u64,
    pub upload_limited: bool,
    /// One per file: 0 skip, 1 low, 2 normal, 3 high (empty: all normal).
    pub file_priorities: Vec<u8>,
    /// Where the content goes once complete, while it is downloaded in
    /// the incomplete folder.
    pub final_dir: Option<PathBuf>,
    #[serde(skip)]
    pub live: Live,
}

/// What this process saw of a torrent's current run.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub phase: Phase,
    pub stats: Option<Stats>,
    pub sources: Vec<Source>,
    /// Payload bytes of this run, as last said.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Last time anything about it changed (for `recently-active`).
    pub changed: Option<Instant>,
    /// When the seconds of the current phase were last counted.
    pub counted: Option<Instant>,
}

impl Record {
    pub fn downloaded_ever(&self) -> u64 {
        self.downloaded_before.saturating_add(self.live.downloaded)
    }

    pub fn uploaded_ever(&self) -> u64 {
        self.uploaded_before.saturating_add(self.live.uploaded)
    }

    /// Seconds a seeding torrent has gone without uploading, counted from
    /// its last upload or its start, whichever came later (0 when it is
    /// not seeding).
    pub fn seeding_idle_for(&self, now_secs: i64) -> i64 {
        if self.live.phase != Phase::Seeding {
            return 0;
        }
        now_secs - self.activity_date.max(self.start_date)
    }

    /// The seed ratio that applies, if any: its own, or the daemon's
    /// (`global`).
    pub fn ratio_limit(&self, global: Option<f64>) -> Option<f64> {
        match self.seed_ratio_mode {
            GoalMode::Single => Some(self.seed_ratio_limit),
            GoalMode::Global => global,
            GoalMode::Unlimited => None,
        }
    }

    /// The idle-seeding limit that applies, in minutes, if any: its own,
    /// or the daemon's (`global`).
    pub fn idle_limit(&self, global: Option<u32>) -> Option<u32> {
        match self.seed_idle_mode {
            GoalMode::Single => Some(self.seed_idle_limit),
            GoalMode::Global => global,
            GoalMode::Unlimited => None,
        }
    }

    /// The limits that apply (down, up).
    pub fn limits(&self) -> (Option<u64>, Option<u64>) {
        (
            self.download_limited.then_some(self.download_limit),
            self.upload_limited.then_some(self.upload_limit),
        )
    }

    pub fn file_priorities(&self, files: usize) -> Vec<FilePriority> {
        let mut out: Vec<FilePriority> = self
            .file_priorities
            .iter()
            .map(|&c| match c {
                0 => FilePriority::Skip,
                1 => FilePriority::Low,
                3 => FilePriority::High,
                _ => FilePriority::Normal,
            })
            .collect();
        out.resize(files, FilePriority::Normal);
        out
    }

    pub fn set_file_priorities(&mut self, p: &[FilePriority]) {
        self.file_priorities = p
            .iter()
            .map(|p| match p {
                FilePriority::Skip => 0,
                FilePriority::Low => 1,
                FilePriority::Normal => 2,
                FilePriority::High => 3,
            })
            .collect();
    }

    /// Count the seconds spent in the current phase up to `now`.
    fn count_time(&mut self, now: Instant) {
        if let Some(since) = self.live.counted {
            let secs = now.saturating_duration_since(since).as_secs();
            if secs == 0 {
                return;
            }
            match self.live.phase {
                Phase::Downloading | Phase::Metadata => self.seconds_downloading += secs,
                Phase::Seeding => self.seconds_seeding += secs,
                Phase::Checking => {}
            }
            self.live.counted = Some(since + Duration::from_secs(secs));
        } else {
            self.live.counted = Some(now);
        }
    }

    /// Seconds spent downloading and seeding, up to `now`.
    pub fn seconds(&self, now: Instant) -> (u64, u64) {
        let more = self
            .live
            .counted
            .map_or(0, |since| now.saturating_duration_since(since).as_secs());
        let (down, seed) = (self.seconds_downloading, self.seconds_seeding);
        match self.live.phase {
            Phase::Downloading | Phase::Metadata => (down + more, seed),
            Phase::Seeding => (down, seed + more),
            Phase::Checking => (down, seed),
        }
    }

    /// The run ended: fold its totals into the record's.
    fn end_run(&mut self, now: Instant) {
        self.count_time(now);
        self.downloaded_before = self.downloaded_ever();
        self.uploaded_before = self.uploaded_ever();
        self.live = Live {
            changed: Some(now),
            ..Live::default()
        };
    }
}

/// Whether an event changes what a client sees of a torrent: its numbers
/// ticking with nothing moved, a sources table, a peer coming or going do
/// not (a client polling `recently-active` would get every torrent back).
fn changes(r: &Record, event: &TorrentEvent) -> bool {
    match event {
        TorrentEvent::Progress(s) => {
            s.downloaded != r.live.downloaded
                || s.uploaded != r.live.uploaded
                || r.live
                    .stats
                    .as_ref()
                    .is_none_or(|old| old.bytes_left != s.bytes_left)
        }
        TorrentEvent::Sources(_)
        | TorrentEvent::Metadata(..)
        | TorrentEvent::PeerConnected { .. }
        | TorrentEvent::PeerDisconnected { .. } => false,
        _ => true,
    }
}

/// The last DHT lookup's numbers, from a sources table (its countdown
/// left out: that moves between two tables of the same lookup).
type Round = (u32, u32, u32, Option<(u32, u32)>);

fn dht_round(sources: &[Source]) -> Option<Round> {
    sources.iter().find_map(|s| match &s.state {
        lodestone_torrent::SourceState::DhtRound(r) => {
            Some((r.queries, r.responses, r.peers, r.announced))
        }
        _ => None,
    })
}

/// Totals of the daemon's life, for `session-stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
    pub files_added: u64,
    pub session_count: u64,
    pub seconds_active: u64,
    /// Pieces that failed their check, peers banned, DHT lookups started.
    pub hash_failures: u64,
    pub bans: u64,
    pub dht_lookups: u64,
}

/// The saved form.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Saved {
    torrents: BTreeMap<String, Record>,
    totals: Totals,
}

/// Every torrent's record, keyed by info hash (ids change across restarts).
#[derive(Debug, Default)]
pub struct Book {
    records: HashMap<InfoHash, Record>,
    ids: HashMap<TorrentId, InfoHash>,
    /// Removed torrents, newest last, for `recently-active`.
    removed: VecDeque<(TorrentId, Instant)>,
    /// This process's totals (the cumulative ones add the saved ones).
    pub current: Totals,
    pub cumulative_before: Totals,
    started: Option<Instant>,
    /// Something worth saving changed since the last save.
    dirty: bool,
}

/// Why the book could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is damaged: {error}")]
    Damaged {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Seconds since the Unix epoch (the dates Transmission's RPC reports).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Book {
    /// The book saved at `path`, or an empty one if there is none.
    pub fn load(path: &Path, now: Instant) -> Result<Self, BookError> {
        let mut book = Book {
            started: Some(now),
            ..Book::default()
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                book.current.session_count = 1;
                return Ok(book);
            }
            Err(error) => {
                return Err(BookError::Read {
                    path: path.to_owned(),
                    error,
                })
            }
        };
        let saved: Saved = serde_json::from_slice(&bytes).map_err(|error| BookError::Damaged {
            path: path.to_owned(),
            error,
        })?;
        for (hex, record) in saved.torrents {
            if let Ok(ih) = hex.parse::<InfoHash>() {
                book.records.insert(ih, record);
            }
        }
        book.cumulative_before = saved.totals;
        book.current.session_count = 1;
        Ok(book)
    }

    /// The book at `path`; a damaged one is renamed `<path>.damaged` (its
    /// new name returned) and an empty book starts: the torrents themselves
    /// are in the state directory, only the daemon's notes on them are lost.
    pub fn load_or_set_aside(
        path: &Path,
        now: Instant,
    ) -> Result<(Self, Option<PathBuf>), BookError> {
        match Self::load(path, now) {
            Err(BookError::Damaged { .. }) => {
                let aside = path.with_extension("json.damaged");
                std::fs::rename(path, &aside).map_err(|error| BookError::Write {
                    path: aside.clone(),
                    error,
                })?;
                let mut book = Self::load(path, now)?;
                book.dirty = true;
                Ok((book, Some(aside)))
            }
            other => other.map(|b| (b, None)),
        }
    }

    /// Write the book (atomically: a crash leaves the old or the new one).
    pub fn save(&mut self, path: &Path, now: Instant) -> Result<(), BookError> {
        let saved = Saved {
            torrents: self
                .records
                .iter()
                .map(|(ih, r)| (ih.to_hex(), r.clone()))
                .collect(),
            totals: self.cumulative(now),
        };
        let bytes = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        let tmp = path.with_extension("json.tmp");
        let write = |p: &Path, b: &[u8]| -> std::io::Result<()> {
            std::fs::write(p, b)?;
            std::fs::rename(p, path)
        };
        write(&tmp, &bytes).map_err(|error| BookError::Write {
            path: path.to_owned(),
            error,
        })?;
        self.dirty = false;
        Ok(())
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The daemon's totals over every run, this one included.
    pub fn cumulative(&self, now: Instant) -> Totals {
        let b = &self.cumulative_before;
        let c = self.current_totals(now);
        Totals {
            uploaded_bytes: b.uploaded_bytes + c.uploaded_bytes,
            downloaded_bytes: b.downloaded_bytes + c.downloaded_bytes,
            files_added: b.files_added + c.files_added,
            session_count: b.session_count + c.session_count,
            seconds_active: b.seconds_active + c.seconds_active,
            hash_failures: b.hash_failures + c.hash_failures,
            bans: b.bans + c.bans,
            dht_lookups: b.dht_lookups + c.dht_lookups,
        }
    }

    /// This process's totals.
    pub fn current_totals(&self, now: Instant) -> Totals {
        let mut t = self.current.clone();
        t.seconds_active = self
            .started
            .map_or(0, |s| now.saturating_duration_since(s).as_secs());
        t
    }

    /// A torrent the session holds: its record (made if new).
    pub fn track(&mut self, id: TorrentId, ih: InfoHash, now: Instant) -> &mut Record {
        self.ids.insert(id, ih);
        let r = self.records.entry(ih).or_default();
        r.live.changed.get_or_insert(now);
        r
    }

    /// A torrent just added by a user (not restored).
    pub fn added(&mut self, id: TorrentId, ih: InfoHash, now: Instant) -> &mut Record {
        self.current.files_added += 1;
        self.dirty = true;
        // A torrent added again after its removal starts afresh.
        self.records.remove(&ih);
        let r = self.track(id, ih, now);
        r.live.changed = Some(now);
        r
    }

    pub fn get(&self, ih: &InfoHash) -> Option<&Record> {
        self.records.get(ih)
    }

    /// Change a record (marks it changed and worth saving).
    pub fn edit(&mut self, ih: &InfoHash, now: Instant) -> Option<&mut Record> {
        let r = self.records.get_mut(ih)?;
        r.live.changed = Some(now);
        self.dirty = true;
        Some(r)
    }

    /// Removed from the session in the last [`RECENT`].
    pub fn recently_removed(&self, now: Instant) -> impl Iterator<Item = TorrentId> + '_ {
        self.removed
            .iter()
            .filter(move |(_, at)| now.saturating_duration_since(*at) < RECENT)
            .map(|(id, _)| *id)
    }

    /// Changed in the last [`RECENT`]: moved bytes, started, stopped,
    /// finished, or was edited (Transmission's `recently-active`; a running
    /// torrent that moves nothing is not active).
    pub fn recently_active(&self, ih: &InfoHash, now: Instant) -> bool {
        self.records.get(ih).is_some_and(|r| {
            r.live
                .changed
                .is_some_and(|c| now.saturating_duration_since(c) < RECENT)
        })
    }

    /// Fold one session event in.
    pub fn apply(&mut self, event: &SessionEvent, now: Instant) {
        match event {
            SessionEvent::Torrent {
                id,
                info_hash,
                event,
            } => {
                match event {
                    TorrentEvent::HashFailed { .. } => self.current.hash_failures += 1,
                    TorrentEvent::PeerBanned { .. } => self.current.bans += 1,
                    _ => {}
                }
                let r = self.track(*id, *info_hash, now);
                r.count_time(now);
                if changes(r, event) {
                    r.live.changed = Some(now);
                }
                let round_before = dht_round(&r.live.sources);
                let became = Self::torrent_event(r, event);
                // Other numbers in the DHT row: another lookup finished.
                if let TorrentEvent::Sources(_) = event {
                    let after = dht_round(&r.live.sources);
                    if after.is_some() && after != round_before {
                        self.current.dht_lookups += 1;
                    }
                }
                if became {
                    self.dirty = true;
                }
            }
            SessionEvent::Ended {
                id,
                info_hash,
                result,
            } => {
                let r = self.track(*id, *info_hash, now);
                if let Ok(summary) = result {
                    r.live.downloaded = summary.stats.downloaded;
                    r.live.uploaded = summary.stats.uploaded;
                    Self::take_stats(r, &summary.stats);
                    if let Some(why) = &summary.paused {
                        r.error = Some(why.clone());
                    }
                } else if let Err(e) = result {
                    // Stopped by a user or at exit is no error.
                    use lodestone_engine::magnet::FetchError;
                    use lodestone_engine::torrent::EngineError;
                    if !matches!(
                        e,
                        EngineError::Stopped | EngineError::Metadata(FetchError::Stopped)
                    ) {
                        r.error = Some(e.to_string());
                    }
                }
                let (down, up) = (r.live.downloaded, r.live.uploaded);
                r.end_run(now);
                self.current.downloaded_bytes += down;
                self.current.uploaded_bytes += up;
                self.dirty = true;
            }
            SessionEvent::Removed { id, info_hash } => {
                self.ids.remove(id);
                if let Some(r) = self.records.remove(info_hash) {
                    self.current.downloaded_bytes += r.live.downloaded;
                    self.current.uploaded_bytes += r.live.uploaded;
                }
                while self
                    .removed
                    .front()
                    .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= RECENT)
                {
                    self.removed.pop_front();
                }
                self.removed.push_back((*id, now));
                self.dirty = true;
            }
            SessionEvent::Warning { .. } => {}
        }
    }

    /// True when something worth saving changed.
    fn torrent_event(r: &mut Record, event: &TorrentEvent) -> bool {
        let now = now_secs();
        match event {
            TorrentEvent::Metadata(..) => {
                r.live.phase = Phase::Metadata;
                false
            }
            TorrentEvent::MetadataReady { meta, .. } => {
                r.name = Some(meta.info.name.clone());
                r.live.phase = Phase::Checking;
                true
            }
            TorrentEvent::Started {
                have, num_pieces, ..
            } => {
                r.error = None;
                r.live.phase = if have == num_pieces {
                    Phase::Seeding
                } else {
                    Phase::Downloading
                };
                true
            }
            TorrentEvent::Progress(stats) => {
                if stats.downloaded > r.live.downloaded || stats.uploaded > r.live.uploaded {
                    r.activity_date = now;
                }
                r.live.downloaded = stats.downloaded;
                r.live.uploaded = stats.uploaded;
                Self::take_stats(r, stats);
                false
            }
            TorrentEvent::Completed { .. } => {
                r.done_date = now;
                r.live.phase = Phase::Seeding;
                true
            }
            TorrentEvent::Paused { reason } => {
                r.error = Some(reason.clone());
                true
            }
            TorrentEvent::Sources(s) => {
                r.live.sources = s.clone();
                false
            }
            // Counted by the book's totals (`apply`), not per record.
            TorrentEvent::HashFailed { .. }
            | TorrentEvent::PeerBanned { .. }
            | TorrentEvent::PeerConnected { .. }
            | TorrentEvent::PeerDisconnected { .. }
            | TorrentEvent::ReadFailed { .. } => false,
        }
    }

    fn take_stats(r: &mut Record, stats: &Stats) {
        r.size_when_done = stats.wanted_bytes;
        r.left_until_done = stats.bytes_left;
        r.have_valid = stats.wanted_bytes.saturating_sub(stats.bytes_left);
        if stats.bytes_left == 0 && r.live.phase == Phase::Downloading {
            r.live.phase = Phase::Seeding;
        }
        r.live.stats = Some(stats.clone());
    }

    /// A hash failure costs a piece: count its bytes.
    pub fn add_corrupt(&mut self, ih: &InfoHash, bytes: u64) {
        if let Some(r) = self.records.get_mut(ih) {
            r.corrupt = r.corrupt.saturating_add(bytes);
        }
    }

    /// A torrent (re)started now: its start date, and its time counted
    /// from now.
    pub fn started(&mut self, ih: &InfoHash, now: Instant) {
        if let Some(r) = self.records.get_mut(ih) {
            r.start_date = now_secs();
            r.live.counted = Some(now);
            r.live.changed = Some(now);
        }
    }

    /// Take the numbers of a snapshot (after a start or a recheck, before
    /// the torrent says its progress).
    pub fn take_snapshot(&mut self, ih: &InfoHash, stats: &Stats) {
        if let Some(r) = self.records.get_mut(ih) {
            Self::take_stats(r, stats);
        }
    }

    /// Forget the live numbers of a torrent whose run is not going (a
    /// paused torrent reports no rates).
    pub fn stopped(&mut self, ih: &InfoHash, now: Instant) {
        if let Some(r) = self.records.get_mut(ih) {
            r.count_time(now);
            r.live.stats = None;
            r.live.changed = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(b: u8) -> InfoHash {
        InfoHash([b; 20])
    }

    fn progress(down: u64, up: u64, left: u64) -> TorrentEvent {
        TorrentEvent::Progress(Stats {
            have_pieces: 0,
            num_pieces: 4,
            wanted_bytes: 100,
            bytes_left: left,
            downloaded: down,
            uploaded: up,
            wasted: 0,
            download_rate: 0.0,
            upload_rate: 0.0,
            peers: 0,
            seeds: 0,
        })
    }

    fn ev(id: u64, h: u8, event: TorrentEvent) -> SessionEvent {
        SessionEvent::Torrent {
            id: TorrentId(id),
            info_hash: ih(h),
            event,
        }
    }

    #[test]
    fn totals_add_up_across_runs_and_survive_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        let t0 = Instant::now();
        let mut book = Book::load(&path, t0).unwrap();
        book.added(TorrentId(1), ih(1), t0);
        book.apply(&ev(1, 1, progress(60, 10, 40)), t0);
        // A run ends (paused): its bytes are folded in; the next run counts from 0.
        book.apply(
            &SessionEvent::Ended {
                id: TorrentId(1),
                info_hash: ih(1),
                result: Err(lodestone_engine::torrent::EngineError::Stopped),
            },
            t0,
        );
        book.apply(&ev(1, 1, progress(40, 5, 0)), t0);
        let r = book.get(&ih(1)).unwrap();
        assert_eq!((r.downloaded_ever(), r.uploaded_ever()), (100, 15));
        assert_eq!((r.have_valid, r.left_until_done), (100, 0));
        book.save(&path, t0).unwrap();
        let again = Book::load(&path, t0).unwrap();
        let r = again.get(&ih(1)).unwrap();
        // The live run's bytes are not in the saved "before" totals until it ends.
        assert_eq!(r.downloaded_before, 60);
        assert_eq!(r.have_valid, 100);
        assert_eq!(again.cumulative(t0).files_added, 1);
    }

    #[test]
    fn only_a_change_makes_a_torrent_recently_active() {
        let t0 = Instant::now();
        let mut book = Book::default();
        book.added(TorrentId(1), ih(1), t0);
        let later = t0 + RECENT;
        assert!(!book.recently_active(&ih(1), later));
        // Its numbers said again with nothing moved: still quiet.
        book.apply(&ev(1, 1, progress(0, 0, 100)), later);
        book.apply(&ev(1, 1, progress(0, 0, 100)), later + RECENT);
        assert!(!book.recently_active(&ih(1), later + RECENT));
        // Bytes moved: active for a minute.
        let t = later + RECENT * 2;
        book.apply(&ev(1, 1, progress(10, 0, 90)), t);
        assert!(book.recently_active(&ih(1), t + RECENT / 2));
        assert!(!book.recently_active(&ih(1), t + RECENT));
    }

    #[test]
    fn a_damaged_book_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        std::fs::write(&path, b"{\"torrents\": [").unwrap();
        let (book, aside) = Book::load_or_set_aside(&path, Instant::now()).unwrap();
        assert_eq!(
            aside.as_deref(),
            Some(dir.path().join("daemon.json.damaged").as_path())
        );
        assert!(book.get(&ih(1)).is_none());
        assert_eq!(
            std::fs::read(dir.path().join("daemon.json.damaged")).unwrap(),
            b"{\"torrents\": ["
        );
        // A sound one loads as it is.
        let (_, aside) =
            Book::load_or_set_aside(&dir.path().join("none.json"), Instant::now()).unwrap();
        assert!(aside.is_none());
    }

    #[test]
    fn removed_torrents_are_recent_for_a_minute() {
        let t0 = Instant::now();
        let mut book = Book::default();
        book.added(TorrentId(3), ih(3), t0);
        book.apply(
            &SessionEvent::Removed {
                id: TorrentId(3),
                info_hash: ih(3),
            },
            t0,
        );
        assert_eq!(
            book.recently_removed(t0).collect::<Vec<_>>(),
            [TorrentId(3)]
        );
        assert!(book.get(&ih(3)).is_none());
        let later = t0 + RECENT;
        assert_eq!(book.recently_removed(later).count(), 0);
    }

    #[test]
    fn idle_seeding_counts_from_the_last_upload_or_the_start() {
        let mut r = Record {
            start_date: 1_000,
            activity_date: 400,
            ..Record::default()
        };
        assert_eq!(r.seeding_idle_for(1_600), 0, "not seeding: never idle");
        r.live.phase = Phase::Seeding;
        assert_eq!(r.seeding_idle_for(1_600), 600);
        r.activity_date = 1_500;
        assert_eq!(r.seeding_idle_for(1_600), 100);
    }

    #[test]
    fn seconds_are_counted_per_phase() {
        let t0 = Instant::now();
        let mut book = Book::default();
        book.added(TorrentId(1), ih(1), t0);
        book.apply(
            &ev(
                1,
                1,
                TorrentEvent::Started {
                    state: lodestone_engine::torrent::StartState::Fresh,
                    have: 0,
                    num_pieces: 4,
                    after: Duration::ZERO,
                },
            ),
            t0,
        );
        let t1 = t0 + Duration::from_secs(30);
        book.apply(
            &ev(
                1,
                1,
                TorrentEvent::Completed {
                    after: Duration::ZERO,
                },
            ),
            t1,
        );
        let t2 = t1 + Duration::from_secs(12);
        book.apply(&ev(1, 1, progress(100, 0, 0)), t2);
        let r = book.get(&ih(1)).unwrap();
        assert_eq!((r.seconds_downloading, r.seconds_seeding), (30, 12));
        assert!(r.done_date > 0);
    }
}
