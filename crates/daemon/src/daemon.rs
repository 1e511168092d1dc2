//! The daemon's state shared by its APIs: the session, the book of
//! records, the settings a user can change at run time, and the operations
//! every API offers (add, start, stop, remove...), so that Transmission's
//! RPC and the native API do the same thing the same way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lodestone_core::{InfoHash, Magnet, Metainfo};
use lodestone_engine::session::{
    Add, AddOptions, Listed, RunState, Session, SessionError, SessionEvent, SessionEvents,
    TorrentId,
};
use lodestone_engine::torrent::{MagnetStart, TorrentConfig, TorrentEvent};
use tokio::sync::broadcast;

use crate::book::{Book, Record};

/// How often the book is saved while something changed.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// Largest .torrent fetched from a URL or taken from an upload.
pub const MAX_TORRENT_BYTES: usize = 16 << 20;

/// Settings a user may change while the daemon runs (Transmission's
/// `session-set`, the config file on SIGHUP). Rates in bytes per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub download_dir: PathBuf,
    /// Content is downloaded here, then moved to its download folder.
    pub incomplete_dir: Option<PathBuf>,
    pub start_added_torrents: bool,
    pub speed_limit_down: Option<u64>,
    pub speed_limit_up: Option<u64>,
    pub alt_speed_down: Option<u64>,
    pub alt_speed_up: Option<u64>,
    pub alt_speed_enabled: bool,
    /// Stop seeding at this ratio (torrents whose mode is global).
    pub seed_ratio_limit: Option<f64>,
    /// Stop seeding after this many idle minutes (torrents whose mode is global).
    pub idle_seeding_limit: Option<u32>,
    pub peer_limit_global: usize,
    pub peer_limit_per_torrent: usize,
    pub peer_port: u16,
    pub dht_enabled: bool,
    pub pex_enabled: bool,
    pub lpd_enabled: bool,
    /// When the alternative limits apply by themselves.
    pub alt_schedule: crate::schedule::Schedule,
    pub alt_schedule_enabled: bool,
    /// Category name to its folder (`download_dir/<name>` unless set).
    pub categories: std::collections::BTreeMap<String, PathBuf>,
}

impl Settings {
    /// The settings a configuration file gives.
    pub fn from_config(c: &crate::config::Config) -> Self {
        let rate = |r: Option<crate::config::Rate>| r.map(|r| r.bytes_per_second());
        Self {
            download_dir: c.download_dir.clone(),
            incomplete_dir: c.incomplete_dir.clone(),
            start_added_torrents: c.start_added_torrents,
            speed_limit_down: rate(c.limits.download),
            speed_limit_up: rate(c.limits.upload),
            alt_speed_down: rate(c.limits.alt_download),
            alt_speed_up: rate(c.limits.alt_upload),
            alt_speed_enabled: c.limits.alt_enabled,
            seed_ratio_limit: c.seeding.ratio_limit.map(|r| r.get()),
            idle_seeding_limit: c.seeding.idle_limit_minutes.map(|m| m.get()),
            peer_limit_global: c.peers.max_connections.get() as usize,
            peer_limit_per_torrent: c.peers.max_peers_per_torrent.get() as usize,
            peer_port: c.peers.listen.port(),
            dht_enabled: c.dht.enabled,
            pex_enabled: c.peers.pex,
            lpd_enabled: c.peers.lpd,
            alt_schedule: c.limits.schedule.schedule(),
            alt_schedule_enabled: c.limits.schedule.enabled,
            categories: c
                .categories
                .keys()
                .filter_map(|name| {
                    let dir = c.category_dir(name.as_str())?;
                    Some((name.as_str().to_owned(), dir))
                })
                .collect(),
        }
    }
}

/// The settings a client may change at run time (`session-set`): kept
/// in the state directory so that they outlive a restart, until the
/// configuration file is reloaded (SIGHUP), which is then the word.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ClientSettings {
    download_dir: PathBuf,
    incomplete_dir: Option<PathBuf>,
    start_added_torrents: bool,
    speed_limit_down: Option<u64>,
    speed_limit_up: Option<u64>,
    alt_speed_down: Option<u64>,
    alt_speed_up: Option<u64>,
    alt_speed_enabled: bool,
    seed_ratio_limit: Option<f64>,
    idle_seeding_limit: Option<u32>,
    peer_limit_per_torrent: usize,
    /// Categories as clients left them (qBittorrent's `createCategory`);
    /// absent in files written before.
    #[serde(default)]
    categories: Option<std::collections::BTreeMap<String, PathBuf>>,
}

impl ClientSettings {
    fn of(s: &Settings) -> Self {
        Self {
            download_dir: s.download_dir.clone(),
            incomplete_dir: s.incomplete_dir.clone(),
            start_added_torrents: s.start_added_torrents,
            speed_limit_down: s.speed_limit_down,
            speed_limit_up: s.speed_limit_up,
            alt_speed_down: s.alt_speed_down,
            alt_speed_up: s.alt_speed_up,
            alt_speed_enabled: s.alt_speed_enabled,
            seed_ratio_limit: s.seed_ratio_limit,
            idle_seeding_limit: s.idle_seeding_limit,
            peer_limit_per_torrent: s.peer_limit_per_torrent,
            categories: Some(s.categories.clone()),
        }
    }

    fn apply(self, s: &mut Settings) {
        s.download_dir = self.download_dir;
        s.incomplete_dir = self.incomplete_dir;
        s.start_added_torrents = self.start_added_torrents;
        s.speed_limit_down = self.speed_limit_down;
        s.speed_limit_up = self.speed_limit_up;
        s.alt_speed_down = self.alt_speed_down;
        s.alt_speed_up = self.alt_speed_up;
        s.alt_speed_enabled = self.alt_speed_enabled;
        s.seed_ratio_limit = self.seed_ratio_limit;
        s.idle_seeding_limit = self.idle_seeding_limit;
        s.peer_limit_per_torrent = self.peer_limit_per_torrent;
        if let Some(c) = self.categories {
            s.categories = c;
        }
    }
}

/// A torrent named in an answer.
#[derive(Debug, Clone)]
pub struct Brief {
    pub id: TorrentId,
    pub info_hash: InfoHash,
    pub name: String,
}

/// What `add` did.
#[derive(Debug, Clone)]
pub enum AddOutcome {
    Added(Brief),
    /// It was there already.
    Duplicate(Brief),
}

/// What to add.
#[derive(Debug, Clone)]
pub enum AddSource {
    /// A magnet link or a bare info hash.
    Magnet(String),
    /// The bytes of a .torrent.
    Metainfo(Vec<u8>),
    /// An http(s) URL of a .torrent.
    Url(String),
}

/// One add, with its options.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub source: AddSource,
    pub download_dir: Option<PathBuf>,
    /// `None`: the `start_added_torrents` setting decides.
    pub paused: Option<bool>,
    pub labels: Vec<String>,
    /// Who added it ("rpc", "api", "watch").
    pub origin: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The words are Transmission's (scripts match on them).
    #[error("invalid or corrupt torrent file: {0}")]
    Corrupt(String),
    #[error("cannot fetch the torrent: {0}")]
    Fetch(String),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A change worth telling the event stream's readers.
#[derive(Debug, Clone)]
pub enum Change {
    /// Added, started, stopped, finished, or its numbers moved.
    Torrent(TorrentId),
    Removed(TorrentId),
}

pub struct Daemon {
    pub session: Session,
    book: Mutex<Book>,
    book_path: Option<PathBuf>,
    /// The configuration new torrents start from.
    template: TorrentConfig,
    settings: Mutex<Settings>,
    started: Instant,
    changes: broadcast::Sender<Change>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The path must be absolute (Transmission's rule: a relative one would
/// depend on the daemon's working directory).
pub fn absolute(dir: &str) -> Option<PathBuf> {
    let p = PathBuf::from(dir);
    p.is_absolute().then_some(p)
}

impl Daemon {
    /// The daemon over `session`; its book is kept at `book_path`.
    pub fn new(
        session: Session,
        template: TorrentConfig,
        settings: Settings,
        book_path: Option<PathBuf>,
    ) -> Result<Arc<Self>, crate::book::BookError> {
        let now = Instant::now();
        let book = match &book_path {
            Some(p) => {
                let (book, set_aside) = Book::load_or_set_aside(p, now)?;
                if let Some(kept) = set_aside {
                    eprintln!(
                        "lodestone daemon: {} was damaged: kept as {}; labels, seed goals and totals start afresh",
                        p.display(),
                        kept.display()
                    );
                }
                book
            }
            None => Book::default(),
        };
        let (changes, _) = broadcast::channel(1024);
        let daemon = Arc::new(Self {
            session,
            book: Mutex::new(book),
            book_path,
            template,
            settings: Mutex::new(settings),
            started: now,
            changes,
        });
        {
            let mut book = lock(&daemon.book);
            for t in daemon.session.list() {
                book.track(t.id, t.info_hash, now);
                if t.state == RunState::Running {
                    book.started(&t.info_hash, now);
                }
            }
        }
        daemon.load_client_settings();
        daemon.apply_limits();
        Ok(daemon)
    }

    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// Change the settings; limits apply at once.
    pub fn update_settings(&self, f: impl FnOnce(&mut Settings)) {
        f(&mut lock(&self.settings));
        self.apply_limits();
    }

    /// A client changed settings (`session-set`): apply them, and keep
    /// them for the next start.
    pub fn client_settings(&self, f: impl FnOnce(&mut Settings)) {
        self.update_settings(f);
        if let Some(path) = self.client_settings_file() {
            let kept = ClientSettings::of(&self.settings());
            let bytes = serde_json::to_vec_pretty(&kept).unwrap_or_default();
            let tmp = path.with_extension("json.tmp");
            if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path))
            {
                eprintln!(
                    "lodestone daemon: cannot keep the settings in {}: {e}",
                    path.display()
                );
            }
        }
    }

    /// The configuration file was reloaded: its settings are the word,
    /// and what clients changed before is forgotten.
    pub fn reload_settings(&self, settings: Settings) {
        if let Some(path) = self.client_settings_file() {
            let _ = std::fs::remove_file(path);
        }
        self.update_settings(|s| *s = settings);
    }

    /// Where the settings clients changed are kept, beside the book.
    fn client_settings_file(&self) -> Option<PathBuf> {
        Some(self.book_path.as_ref()?.with_file_name("settings.json"))
    }

    /// Take the settings clients changed in an earlier run, if any.
    fn load_client_settings(&self) {
        let Some(path) = self.client_settings_file() else {
            return;
        };
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        match serde_json::from_slice::<ClientSettings>(&bytes) {
            Ok(kept) => self.update_settings(|s| kept.apply(s)),
            Err(e) => eprintln!("lodestone daemon: {} ignored: {e}", path.display()),
        }
    }

    fn apply_limits(&self) {
        let s = self.settings();
        let (down, up) = if s.alt_speed_enabled {
            (s.alt_speed_down, s.alt_speed_up)
        } else {
            (s.speed_limit_down, s.speed_limit_up)
        };
        self.session.set_global_limits(down, up);
    }

    /// The session's DHT node, when it has one.
    pub fn dht(&self) -> Option<&lodestone_engine::dht::Dht> {
        self.template.dht.as_ref()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Read the book.
    pub fn book(&self) -> MutexGuard<'_, Book> {
        lock(&self.book)
    }

    /// Readers of what changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Add a torrent or magnet.
    pub async fn add(&self, req: AddRequest) -> Result<AddOutcome, AddError> {
        let (add, peers, name) = match req.source {
            AddSource::Magnet(text) => magnet(&text)?,
            AddSource::Metainfo(bytes) => torrent(&bytes)?,
            AddSource::Url(url) => {
                let bytes = self
                    .template
                    .http
                    .get(&url, MAX_TORRENT_BYTES)
                    .await
                    .map_err(AddError::Fetch)?;
                torrent(&bytes)?
            }
        };
        let settings = self.settings();
        let dir = req
            .download_dir
            .unwrap_or_else(|| settings.download_dir.clone());
        let mut cfg = self.template.clone();
        // With an incomplete folder, content is fetched there and moved
        // when its download completes.
        let final_dir = settings.incomplete_dir.clone().map(|inc| {
            cfg.output_dir = inc;
            dir.clone()
        });
        if final_dir.is_none() {
            cfg.output_dir = dir;
        }
        cfg.peers = peers;
        cfg.max_peers = settings.peer_limit_per_torrent;
        let paused = req.paused.unwrap_or(!settings.start_added_torrents);
        let info_hash = add.info_hash();
        let added = self.session.add_with(
            add,
            cfg,
            AddOptions {
                paused,
                source: req.origin.to_owned(),
            },
        )?;
        let now = Instant::now();
        let listed_name = self.session.get(added.id).and_then(|t| t.name);
        let brief = |name: Option<String>| Brief {
            id: added.id,
            info_hash,
            name: name.unwrap_or_else(|| info_hash.to_hex()),
        };
        if !added.new {
            let known = self.book().get(&info_hash).and_then(|r| r.name.clone());
            return Ok(AddOutcome::Duplicate(brief(listed_name.or(known))));
        }
        {
            let mut book = self.book();
            let r = book.added(added.id, info_hash, now);
            r.name = name.clone();
            r.labels = req.labels;
            r.final_dir = final_dir;
            if !paused {
                book.started(&info_hash, now);
            }
        }
        self.changed(Change::Torrent(added.id));
        Ok(AddOutcome::Added(brief(listed_name.or(name))))
    }

    /// Start a torrent (a running one is left alone).
    pub async fn start(&self, id: TorrentId) -> Result<(), SessionError> {
        if let Some(ih) = self.hash_of(id) {
            if let Some(r) = self.book().edit(&ih, Instant::now()) {
                r.error = None;
            }
        }
        self.session.resume(id).await?;
        if let Some(ih) = self.hash_of(id) {
            self.book().started(&ih, Instant::now());
        }
        self.changed(Change::Torrent(id));
        Ok(())
    }

    pub async fn stop(&self, id: TorrentId) -> Result<(), SessionError> {
        self.session.pause(id).await?;
        if let Some(ih) = self.hash_of(id) {
            self.book().stopped(&ih, Instant::now());
        }
        self.changed(Change::Torrent(id));
        Ok(())
    }

    pub async fn verify(&self, id: TorrentId) -> Result<(), SessionError> {
        self.session.recheck(id).await?;
        self.changed(Change::Torrent(id));
        Ok(())
    }

    pub async fn remove(&self, id: TorrentId, delete_data: bool) -> Result<(), SessionError> {
        self.session.remove(id, delete_data).await
    }

    pub async fn move_to(&self, id: TorrentId, dir: PathBuf) -> Result<(), SessionError> {
        self.session.move_storage(id, dir).await?;
        self.changed(Change::Torrent(id));
        Ok(())
    }

    /// Change a torrent's record (labels, seed goals...).
    pub fn edit(&self, id: TorrentId, f: impl FnOnce(&mut Record)) {
        if let Some(ih) = self.hash_of(id) {
            if let Some(r) = self.book().edit(&ih, Instant::now()) {
                f(r);
            }
        }
        self.changed(Change::Torrent(id));
    }

    pub fn hash_of(&self, id: TorrentId) -> Option<InfoHash> {
        self.session.get(id).map(|t| t.info_hash)
    }

    fn changed(&self, c: Change) {
        let _ = self.changes.send(c);
    }

    /// Fold the session's events into the book until the session ends;
    /// saves the book now and then, and enforces the seed goals.
    pub async fn pump(self: Arc<Self>, mut events: SessionEvents) {
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    // After a start or a completion the torrent may not say
                    // its numbers for a while (an idle one ticks every 30 s).
                    if let SessionEvent::Torrent {
                        id,
                        info_hash,
                        event: TorrentEvent::Started { .. } | TorrentEvent::Completed { .. },
                    } = &ev
                    {
                        let (daemon, id, ih) = (self.clone(), *id, *info_hash);
                        tokio::spawn(async move {
                            if let Some(stats) = daemon.session.snapshot(id).await.and_then(|s| s.stats) {
                                daemon.book().take_snapshot(&ih, &stats);
                                daemon.changed(Change::Torrent(id));
                            }
                        });
                    }
                    if let Some((id, dir)) = self.take(&ev) {
                        let daemon = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = daemon.move_to(id, dir.clone()).await {
                                eprintln!("lodestone daemon: cannot move torrent {} to {}: {e}", id.0, dir.display());
                            }
                        });
                    }
                }
                _ = save.tick() => {
                    self.stop_idle_seeds();
                    self.save_if_dirty();
                }
            }
        }
        self.save();
    }

    /// Fold one event in; returns a completed torrent to move out of the
    /// incomplete folder.
    fn take(&self, ev: &SessionEvent) -> Option<(TorrentId, PathBuf)> {
        let now = Instant::now();
        let mut move_out = None;
        if let SessionEvent::Torrent {
            id,
            info_hash,
            event: TorrentEvent::Completed { .. },
        } = ev
        {
            if let Some(r) = self.book().edit(info_hash, now) {
                move_out = r.final_dir.take().map(|d| (*id, d));
            }
        }
        let (id, goal_met) = {
            let mut book = self.book();
            book.apply(ev, now);
            match ev {
                SessionEvent::Torrent {
                    id,
                    info_hash,
                    event: TorrentEvent::HashFailed { .. },
                } => {
                    if let Some(meta) = self.session.metainfo(*id) {
                        book.add_corrupt(info_hash, u64::from(meta.info.piece_length));
                    }
                    (Some(*id), false)
                }
                SessionEvent::Torrent { id, info_hash, .. } => {
                    let met = book
                        .get(info_hash)
                        .is_some_and(|r| self.ratio_met(r) && r.live.stats.is_some());
                    (Some(*id), met)
                }
                SessionEvent::Ended { id, .. } => (Some(*id), false),
                SessionEvent::Removed { id, .. } => {
                    self.changed(Change::Removed(*id));
                    (None, false)
                }
                SessionEvent::Warning { id, .. } => (Some(*id), false),
            }
        };
        if let Some(id) = id {
            if goal_met {
                // Transmission stops a torrent whose seed ratio is reached.
                let _ = self.session.stop(id);
            }
            self.changed(Change::Torrent(id));
        }
        move_out
    }

    /// Stop the seeding torrents nobody took data from for their idle
    /// limit (Transmission's `seedIdleLimit`), counted from the later of
    /// their last upload and their start.
    fn stop_idle_seeds(&self) {
        let now = crate::book::now_secs();
        let settings = self.settings();
        let idle: Vec<TorrentId> = {
            let book = self.book();
            self.session
                .list()
                .into_iter()
                .filter(|t| t.state == RunState::Running)
                .filter(|t| {
                    book.get(&t.info_hash).is_some_and(|r| {
                        r.idle_limit(settings.idle_seeding_limit)
                            .is_some_and(|m| r.seeding_idle_for(now) >= i64::from(m) * 60)
                    })
                })
                .map(|t| t.id)
                .collect()
        };
        for id in idle {
            let _ = self.session.stop(id);
        }
    }

    fn ratio_met(&self, r: &Record) -> bool {
        let Some(limit) = r.ratio_limit(self.settings().seed_ratio_limit) else {
            return false;
        };
        r.left_until_done == 0
            && r.size_when_done > 0
            && r.uploaded_ever() as f64 >= limit * r.size_when_done as f64
    }

    fn save_if_dirty(&self) {
        if self.book().is_dirty() {
            self.save();
        }
    }

    /// Write the book now (at exit, say).
    pub fn save(&self) {
        if let Some(path) = &self.book_path {
            if let Err(e) = self.book().save(path, Instant::now()) {
                eprintln!("lodestone daemon: {e}");
            }
        }
    }

    /// Whether a torrent runs, as `RunState` says.
    pub fn is_running(t: &Listed) -> bool {
        t.state == RunState::Running
    }

    /// Where the state directory keeps the book.
    pub fn book_file(state_dir: &Path) -> PathBuf {
        state_dir.join("daemon.json")
    }
}

/// A .torrent's bytes, parsed, with Transmission's words on failure.
pub fn parse_torrent(bytes: &[u8]) -> Result<Metainfo, AddError> {
    if bytes.len() > MAX_TORRENT_BYTES {
        return Err(AddError::Corrupt(format!(
            "{} bytes, more than the {MAX_TORRENT_BYTES}-byte limit",
            bytes.len()
        )));
    }
    Metainfo::from_bytes(bytes).map_err(|e| AddError::Corrupt(e.to_string()))
}

/// What the session is given to add: the add, the peers to dial, a name.
type ToAdd = (Add, Vec<std::net::SocketAddr>, Option<String>);

/// A .torrent's bytes as the session adds them.
fn torrent(bytes: &[u8]) -> Result<ToAdd, AddError> {
    let meta = parse_torrent(bytes)?;
    let name = meta.info.name.clone();
    Ok((Add::Torrent(Arc::new(meta)), Vec::new(), Some(name)))
}

/// A magnet link or a bare info hash, as the session adds it: the add,
/// the peers it names, and its display name.
fn magnet(text: &str) -> Result<ToAdd, AddError> {
    let text = text.trim();
    let m: Magnet = if text.starts_with("magnet:") {
        text.parse()
            .map_err(|e: lodestone_core::magnet::MagnetError| AddError::Corrupt(e.to_string()))?
    } else {
        let ih: InfoHash = text
            .parse()
            .map_err(|e: lodestone_core::ParseHashError| AddError::Corrupt(e.to_string()))?;
        Magnet::from_info_hash(ih)
    };
    let peers = m
        .peers
        .iter()
        .filter_map(|p| match p {
            lodestone_core::magnet::PeerAddr::Ip(a) => Some(*a),
            lodestone_core::magnet::PeerAddr::Host(..) => None,
        })
        .collect();
    let add = Add::Magnet(MagnetStart {
        info_hashes: m.info_hashes,
        trackers: m.trackers.clone(),
        max_metadata_size: lodestone_engine::magnet::DEFAULT_MAX_METADATA,
        torrent_file: None,
    });
    Ok((add, peers, m.name))
}
