//! The session's state directory: the torrent list and each torrent's
//! resume data, kept apart from the user's download folders (so a read-only
//! folder can be seeded) and safe against `kill -9` at any moment.
//!
//! Layout:
//!
//! ```text
//! <state dir>/lock                  flock'ed while open; holds the owner's pid
//! <state dir>/torrents/<hex>.entry    the options (a bencoded TorrentEntry)
//! <state dir>/torrents/<hex>.torrent  the raw .torrent, or, while a magnet
//! <state dir>/torrents/<hex>.magnet   has no metadata yet, its URI text
//! <state dir>/torrents/<hex>.resume   resume data (opaque bytes)
//! ```
//!
//! `<hex>` is the 40 lowercase hex digits of the torrent's [`InfoHash`]: the
//! SHA-1 of the raw info dictionary, or for a v2-only torrent the truncated
//! SHA-256 (what [`InfoHashes::wire`](lodestone_core::InfoHashes::wire) gives).
//!
//! Every file is written with [`write_atomic`] (temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves the old file or the new
//! one, never half of one; temporary files left by a killed write are removed
//! when the directory is opened. The `.entry` file is the commit point of a
//! torrent: add writes the `.torrent` (or `.magnet`) first and the entry
//! last, and [`StateDir::remove`] deletes the entry first. Files of an info
//! hash without an entry are therefore the remains of an interrupted add or
//! remove, and [`StateDir::load_all`] deletes them (and says so).
//!
//! One process at a time: [`StateDir::open`] takes an exclusive `flock` on
//! the `lock` file (released when the [`StateDir`] is dropped or the process
//! dies), so a second process, or a second open in the same one, fails with
//! [`StateDirError::Locked`].
//!
//! Sync std code; a driver calls it from a blocking thread.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use lodestone_bencode::{decode, DecodeError, OwnedValue as V};
use lodestone_core::magnet::MAX_MAGNET_LEN;
use lodestone_core::metainfo::MAX_TORRENT_BYTES;
use lodestone_core::{InfoHash, Magnet, MagnetError, Metainfo, MetainfoError};

use crate::fsutil::write_atomic;

/// Largest `.resume` file read or written.
pub const MAX_RESUME_BYTES: usize = 16 << 20;
/// Largest `.entry` file read or written. Each file priority takes 3 bytes
/// (`i1e`), so this holds the priorities of a 300 000-file torrent (the
/// largest .torrent files have ~100 000).
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Format version of `.entry` files; a newer one is refused, not misread.
pub const ENTRY_VERSION: i64 = 1;

const LOCK_FILE: &str = "lock";
const TORRENTS_DIR: &str = "torrents";

/// The kinds of per-torrent file, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Entry,
    Torrent,
    Magnet,
    Resume,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Entry, Kind::Torrent, Kind::Magnet, Kind::Resume];

    fn ext(self) -> &'static str {
        match self {
            Kind::Entry => "entry",
            Kind::Torrent => "torrent",
            Kind::Magnet => "magnet",
            Kind::Resume => "resume",
        }
    }

    fn from_ext(ext: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.ext() == ext)
    }

    fn cap(self) -> usize {
        match self {
            Kind::Entry => MAX_ENTRY_BYTES,
            Kind::Torrent => MAX_TORRENT_BYTES,
            Kind::Magnet => MAX_MAGNET_LEN,
            Kind::Resume => MAX_RESUME_BYTES,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Entry => "entry",
            Kind::Torrent => ".torrent",
            Kind::Magnet => "magnet link",
            Kind::Resume => "resume data",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("{}", locked_message(path, *holder_pid))]
    Locked {
        path: PathBuf,
        /// The pid the holder wrote into the lock file, when it could be read.
        holder_pid: Option<u32>,
    },
    // The io::Error is part of the message, not a `source`, as in `StorageError`.
    #[error("cannot {op} {}: {error}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("no default state directory: neither XDG_STATE_HOME nor HOME is set")]
    NoDefaultPath,
    #[error("{what} for {info_hash} is {len} bytes, more than the {cap}-byte limit")]
    TooLarge {
        info_hash: InfoHash,
        what: &'static str,
        len: usize,
        cap: usize,
    },
    #[error("the .torrent given for {info_hash} is not valid: {error}")]
    BadMetainfo {
        info_hash: InfoHash,
        error: MetainfoError,
    },
    #[error("the magnet link given for {info_hash} is not valid: {error}")]
    BadMagnet {
        info_hash: InfoHash,
        error: MagnetError,
    },
    #[error("the {what} given for {expected} is for info hash {found}")]
    HashMismatch {
        what: &'static str,
        expected: InfoHash,
        found: InfoHash,
    },
}

fn locked_message(path: &Path, holder_pid: Option<u32>) -> String {
    let path = path.display();
    match holder_pid {
        Some(pid) if pid == std::process::id() => {
            format!("state directory {path} is already open in this process (pid {pid})")
        }
        Some(pid) => {
            format!("state directory {path} is in use by another Lodestone process (pid {pid})")
        }
        None => format!("state directory {path} is in use by another Lodestone process"),
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateDirError + 'a {
    move |error| StateDirError::Io {
        op,
        path: path.to_owned(),
        error,
    }
}

/// A `.torrent` for `meta`: its info dictionary byte for byte (so the
/// info hash is the same), its trackers and web seeds. What a session
/// saves for a magnet once its metadata has arrived.
pub fn torrent_file(meta: &Metainfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(meta.info_bytes.len() + 256);
    let mut e = lodestone_bencode::Encoder::new(&mut out);
    let urls = |e: &mut lodestone_bencode::Encoder<'_>, list: &[String]| {
        e.begin_list();
        for u in list {
            e.bytes(u.as_bytes());
        }
        e.end();
    };
    // Keys in sorted order, as bencode wants.
    e.begin_dict();
    if let Some(first) = meta.trackers.first().and_then(|t| t.first()) {
        e.bytes(b"announce").bytes(first.as_bytes());
        e.bytes(b"announce-list").begin_list();
        for tier in &meta.trackers {
            urls(&mut e, tier);
        }
        e.end();
    }
    e.bytes(b"info").raw(&meta.info_bytes);
    if !meta.web_seeds.is_empty() {
        e.bytes(b"url-list");
        urls(&mut e, &meta.web_seeds);
    }
    e.end();
    out
}

/// The options of one torrent, as the session last saved them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentEntry {
    /// Where the content is (or goes); stored as raw bytes, so any Unix path
    /// round-trips.
    pub download_dir: PathBuf,
    pub paused: bool,
    /// When the torrent was added, in seconds since the Unix epoch.
    pub added_at: i64,
    /// One per file, in the torrent's file order; the session decides what
    /// the numbers mean. Empty: all default.
    pub file_priorities: Vec<u8>,
    /// Bytes per second; `None`: no per-torrent limit.
    pub download_limit: Option<u64>,
    pub upload_limit: Option<u64>,
    pub max_peers: Option<u32>,
    /// Free text: who added it and how ("cli", "api", a watched folder...).
    pub source: String,
}

/// Why an `.entry` file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("not valid bencode: {0}")]
    Bencode(DecodeError),
    #[error("not a dictionary")]
    NotDict,
    #[error("missing key '{0}'")]
    MissingKey(&'static str),
    #[error("key '{key}' should be {expected}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("written in format {0}, newer than this version reads ({ENTRY_VERSION})")]
    NewerVersion(i64),
}

impl TorrentEntry {
    /// An entry with default options, added at `added_at`.
    pub fn new(download_dir: impl Into<PathBuf>, added_at: i64) -> Self {
        Self {
            download_dir: download_dir.into(),
            paused: false,
            added_at,
            file_priorities: Vec::new(),
            download_limit: None,
            upload_limit: None,
            max_peers: None,
            source: String::new(),
        }
    }

    /// The bencoded form. Absent limits are left out.
    pub fn encode(&self) -> Vec<u8> {
        let int = |n: u64| V::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let mut d = BTreeMap::new();
        let mut put = |k: &str, v: V| {
            d.insert(k.as_bytes().to_vec(), v);
        };
        put("version", V::Int(ENTRY_VERSION));
        put(
            "download_dir",
            V::Bytes(self.download_dir.as_os_str().as_bytes().to_vec()),
        );
        put("paused", V::Int(i64::from(self.paused)));
        put("added_at", V::Int(self.added_at));
        put(
            "file_priorities",
            V::List(
                self.file_priorities
                    .iter()
                    .map(|&p| V::Int(i64::from(p)))
                    .collect(),
            ),
        );
        if let Some(n) = self.download_limit {
            put("download_limit", int(n));
        }
        if let Some(n) = self.upload_limit {
            put("upload_limit", int(n));
        }
        if let Some(n) = self.max_peers {
            put("max_peers", int(u64::from(n)));
        }
        put("source", V::str(&self.source));
        V::Dict(d).encode()
    }

    /// Parse an entry. Unknown keys are ignored (a later version may add
    /// some); a missing or wrongly typed key is an error naming it.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let v = decode(bytes).map_err(EntryError::Bencode)?;
        let d = v.as_dict().ok_or(EntryError::NotDict)?;
        let get = |key: &'static str| d.get(key.as_bytes()).ok_or(EntryError::MissingKey(key));
        let int = |key: &'static str| {
            get(key)?.as_int().ok_or(EntryError::WrongType {
                key,
                expected: "an integer",
            })
        };
        let opt = |key: &'static str, max: u64| -> Result<Option<u64>, EntryError> {
            match d.get(key.as_bytes()) {
                None => Ok(None),
                Some(v) => v
                    .as_int()
                    .and_then(|n| u64::try_from(n).ok())
                    .filter(|&n| n <= max)
                    .map(Some)
                    .ok_or(EntryError::WrongType {
                        key,
                        expected: "a non-negative integer in range",
                    }),
            }
        };

        let version = int("version")?;
        if version > ENTRY_VERSION {
            return Err(EntryError::NewerVersion(version));
        }
        let download_dir = get("download_dir")?
            .as_bytes()
            .map(|b| PathBuf::from(OsString::from_vec(b.to_vec())))
            .ok_or(EntryError::WrongType {
                key: "download_dir",
                expected: "a string",
            })?;
        let paused = match int("paused")? {
            0 => false,
            1 => true,
            _ => {
                return Err(EntryError::WrongType {
                    key: "paused",
                    expected: "0 or 1",
                })
            }
        };
        let added_at = int("added_at")?;
        let file_priorities = get("file_priorities")?
            .as_list()
            .and_then(|l| {
                l.iter()
                    .map(|p| p.as_int().and_then(|n| u8::try_from(n).ok()))
                    .collect::<Option<Vec<u8>>>()
            })
            .ok_or(EntryError::WrongType {
                key: "file_priorities",
                expected: "a list of integers from 0 to 255",
            })?;
        let source = get("source")?
            .as_str()
            .ok_or(EntryError::WrongType {
                key: "source",
                expected: "a UTF-8 string",
            })?
            .to_owned();
        Ok(Self {
            download_dir,
            paused,
            added_at,
            file_priorities,
            download_limit: opt("download_limit", u64::MAX)?,
            upload_limit: opt("upload_limit", u64::MAX)?,
            max_peers: opt("max_peers", u64::from(u32::MAX))?
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            source,
        })
    }
}

/// What a torrent was added from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TorrentSource {
    /// The metadata is known: the parsed `.torrent`.
    Metainfo(Box<Metainfo>),
    /// A magnet whose metadata has not arrived yet.
    Magnet(Box<Magnet>),
}

/// One torrent as [`StateDir::load_all`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedTorrent {
    pub info_hash: InfoHash,
    pub entry: TorrentEntry,
    pub source: TorrentSource,
    /// `None` when there was none or it could not be read (then `problems`
    /// says why): the caller rechecks the content.
    pub resume: Option<Vec<u8>>,
}

/// Everything [`StateDir::load_all`] found: the torrents that load, in the
/// order they were added, and every file it skipped, with the reason.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub torrents: Vec<LoadedTorrent>,
    pub problems: Vec<(PathBuf, String)>,
}

/// An open, locked state directory.
///
/// The methods that write take `&mut self`: [`write_atomic`] names its
/// temporary file after the process, so two writes of one file at once in
/// one process would share it. A caller with several threads puts the
/// `StateDir` behind a mutex.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    torrents: PathBuf,
    /// Holds the flock; closing it releases the lock.
    _lock: File,
    /// Temporary files of interrupted writes, removed by `open`.
    removed_temp: Vec<PathBuf>,
}

impl StateDir {
    /// The default location: `$XDG_STATE_HOME/lodestone` when
    /// `XDG_STATE_HOME` is set to an absolute path, else
    /// `$HOME/.local/state/lodestone` (the XDG Base Directory default).
    pub fn default_path() -> Result<PathBuf, StateDirError> {
        default_path_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
            .ok_or(StateDirError::NoDefaultPath)
    }

    /// Open (creating it, mode 0700, if needed) and lock the state directory
    /// at `path`, and remove the temporary files of writes a crash
    /// interrupted. Fails with [`StateDirError::Locked`] while another
    /// `StateDir` (in this process or another) has it open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateDirError> {
        let root = path.as_ref().to_owned();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(io_err("create", &root))?;

        let lock_path = root.join(LOCK_FILE);
        // Not truncated before it is locked: that would erase the holder's pid.
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StateDirError::Locked {
                    path: root,
                    holder_pid: read_pid(&mut lock),
                })
            }
            Err(e) => return Err(io_err("lock", &lock_path)(e.into())),
        }
        lock.set_len(0)
            .and_then(|()| {
                use std::os::unix::fs::FileExt;
                lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
            })
            .map_err(io_err("write", &lock_path))?;

        let torrents = root.join(TORRENTS_DIR);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&torrents)
            .map_err(io_err("create", &torrents))?;

        let mut removed_temp = Vec::new();
        for dir in [&root, &torrents] {
            let listing = fs::read_dir(dir).map_err(io_err("list", dir))?;
            for item in listing {
                let item = item.map_err(io_err("list", dir))?;
                if is_temp_name(&item.file_name()) {
                    let p = item.path();
                    fs::remove_file(&p).map_err(io_err("remove", &p))?;
                    removed_temp.push(p);
                }
            }
        }
        removed_temp.sort();
        if !removed_temp.is_empty() {
            sync_dir(&root)?;
            sync_dir(&torrents)?;
        }
        Ok(Self {
            root,
            torrents,
            _lock: lock,
            removed_temp,
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Temporary files of interrupted writes that `open` removed.
    pub fn removed_temp_files(&self) -> &[PathBuf] {
        &self.removed_temp
    }

    /// Where a torrent's resume data lives (a torrent's driver writes it
    /// there itself, atomically, as it runs).
    pub fn resume_path(&self, info_hash: InfoHash) -> PathBuf {
        self.file(info_hash, Kind::Resume)
    }

    fn file(&self, info_hash: InfoHash, kind: Kind) -> PathBuf {
        self.torrents
            .join(format!("{}.{}", info_hash.to_hex(), kind.ext()))
    }

    fn write(&self, info_hash: InfoHash, kind: Kind, bytes: &[u8]) -> Result<(), StateDirError> {
        if bytes.len() > kind.cap() {
            return Err(StateDirError::TooLarge {
                info_hash,
                what: kind.what(),
                len: bytes.len(),
                cap: kind.cap(),
            });
        }
        let path = self.file(info_hash, kind);
        write_atomic(&path, bytes).map_err(io_err("write", &path))
    }

    /// Save a torrent's options. An add saves its `.torrent` or magnet
    /// first and then this: the entry is what makes the torrent exist.
    pub fn save_entry(
        &mut self,
        info_hash: InfoHash,
        entry: &TorrentEntry,
    ) -> Result<(), StateDirError> {
        self.write(info_hash, Kind::Entry, &entry.encode())
    }

    /// Save the raw `.torrent`, after checking that it parses and is for
    /// `info_hash`; a saved magnet link for it is then removed.
    pub fn save_metainfo(
        &mut self,
        info_hash: InfoHash,
        bytes: &[u8],
    ) -> Result<(), StateDirError> {
        if bytes.len() > MAX_TORRENT_BYTES {
            return Err(StateDirError::TooLarge {
                info_hash,
                what: Kind::Torrent.what(),
                len: bytes.len(),
                cap: MAX_TORRENT_BYTES,
            });
        }
        let m = Metainfo::from_bytes(bytes)
            .map_err(|error| StateDirError::BadMetainfo { info_hash, error })?;
        let found = m.info_hashes.wire();
        if found != info_hash {
            return Err(StateDirError::HashMismatch {
                what: Kind::Torrent.what(),
                expected: info_hash,
                found,
            });
        }
        self.write(info_hash, Kind::Torrent, bytes)?;
        // A crash here leaves both; load_all prefers the .torrent.
        self.remove_files(info_hash, &[Kind::Magnet])
    }

    /// Save a magnet link (for a torrent whose metadata has not arrived),
    /// after checking that it parses and is for `info_hash`.
    pub fn save_magnet(&mut self, info_hash: InfoHash, uri: &str) -> Result<(), StateDirError> {
        let m: Magnet = uri
            .parse()
            .map_err(|error| StateDirError::BadMagnet { info_hash, error })?;
        let found = m.info_hashes.wire();
        if found != info_hash {
            return Err(StateDirError::HashMismatch {
                what: Kind::Magnet.what(),
                expected: info_hash,
                found,
            });
        }
        self.write(info_hash, Kind::Magnet, uri.trim().as_bytes())
    }

    /// Save resume data: opaque bytes, at most [`MAX_RESUME_BYTES`].
    pub fn save_resume(&mut self, info_hash: InfoHash, bytes: &[u8]) -> Result<(), StateDirError> {
        self.write(info_hash, Kind::Resume, bytes)
    }

    /// Delete every file of a torrent (the entry first). Files that are
    /// already gone are not an error.
    pub fn remove(&mut self, info_hash: InfoHash) -> Result<(), StateDirError> {
        self.remove_files(info_hash, &Kind::ALL)
    }

    fn remove_files(&self, info_hash: InfoHash, kinds: &[Kind]) -> Result<(), StateDirError> {
        let mut removed = false;
        for &kind in kinds {
            let p = self.file(info_hash, kind);
            match fs::remove_file(&p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &p)(e)),
            }
        }
        if removed {
            sync_dir(&self.torrents)?;
        }
        Ok(())
    }

    /// Read every torrent. A bad file is reported in `problems` with the
    /// reason and skipped; the other torrents load. In detail:
    /// - an entry that cannot be read or decoded, or that has neither a
    ///   `.torrent` nor a `.magnet` that loads: the torrent is skipped, its
    ///   files kept;
    /// - a `.torrent` that does not parse or is for another info hash: the
    ///   torrent loads from its `.magnet` if there is one, else is skipped;
    /// - resume data that cannot be read: the torrent loads with `resume: None`;
    /// - files of an info hash without an entry (an add or remove that was
    ///   interrupted): deleted;
    /// - any other file: reported and left alone;
    /// - temporary files that `open` removed are reported too.
    pub fn load_all(&mut self) -> LoadReport {
        let mut report = LoadReport::default();
        for p in &self.removed_temp {
            report.problems.push((
                p.clone(),
                "temporary file of an interrupted write; removed".to_owned(),
            ));
        }

        let mut found: BTreeMap<InfoHash, Vec<Kind>> = BTreeMap::new();
        let listing = match fs::read_dir(&self.torrents) {
            Ok(l) => l,
            Err(e) => {
                report
                    .problems
                    .push((self.torrents.clone(), format!("cannot list: {e}")));
                return report;
            }
        };
        for item in listing {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    report
                        .problems
                        .push((self.torrents.clone(), format!("cannot list: {e}")));
                    break;
                }
            };
            let name = item.file_name();
            if is_temp_name(&name) {
                // A write of this process in flight (open removed the old ones).
                continue;
            }
            match parse_name(&name) {
                Some((h, kind)) => found.entry(h).or_default().push(kind),
                None => report.problems.push((
                    item.path(),
                    "not a file of the state directory (expected <40 hex digits>.entry, \
                     .torrent, .magnet or .resume); ignored"
                        .to_owned(),
                )),
            }
        }

        for (h, kinds) in found {
            if !kinds.contains(&Kind::Entry) {
                for kind in kinds {
                    let p = self.file(h, kind);
                    let why = match fs::remove_file(&p) {
                        Ok(()) => {
                            "no .entry beside it (an add or a remove was interrupted); removed"
                                .to_owned()
                        }
                        Err(e) => format!("no .entry beside it, and cannot remove it: {e}"),
                    };
                    report.problems.push((p, why));
                }
                continue;
            }
            if let Some(t) = self.load_one(h, &kinds, &mut report.problems) {
                report.torrents.push(t);
            }
        }
        report
            .torrents
            .sort_by_key(|t| (t.entry.added_at, t.info_hash));
        report
    }

    fn load_one(
        &self,
        h: InfoHash,
        kinds: &[Kind],
        problems: &mut Vec<(PathBuf, String)>,
    ) -> Option<LoadedTorrent> {
        let has = |k| kinds.contains(&k);
        let entry_path = self.file(h, Kind::Entry);
        let entry = match read_capped(&entry_path, Kind::Entry)
            .and_then(|b| TorrentEntry::decode(&b).map_err(|e| format!("undecodable entry: {e}")))
        {
            Ok(e) => e,
            Err(why) => {
                problems.push((entry_path, format!("{why}; torrent skipped")));
                return None;
            }
        };

        let mut source = None;
        if has(Kind::Torrent) {
            let p = self.file(h, Kind::Torrent);
            match read_capped(&p, Kind::Torrent).and_then(|b| {
                let m = Metainfo::from_bytes(&b).map_err(|e| format!("bad .torrent: {e}"))?;
                match m.info_hashes.wire() {
                    found if found == h => Ok(m),
                    found => Err(format!(".torrent is for info hash {found}, not {h}")),
                }
            }) {
                Ok(m) => source = Some(TorrentSource::Metainfo(Box::new(m))),
                Err(why) => {
                    let then = if has(Kind::Magnet) {
                        "loading the magnet link instead"
                    } else {
                        "torrent skipped"
                    };
                    problems.push((p, format!("{why}; {then}")));
                }
            }
        }
        if source.is_none() && has(Kind::Magnet) {
            let p = self.file(h, Kind::Magnet);
            match read_capped(&p, Kind::Magnet).and_then(|b| {
                let text = std::str::from_utf8(&b).map_err(|_| "magnet link is not UTF-8")?;
                let m: Magnet = text.parse().map_err(|e| format!("bad magnet link: {e}"))?;
                match m.info_hashes.wire() {
                    found if found == h => Ok(m),
                    found => Err(format!("magnet link is for info hash {found}, not {h}")),
                }
            }) {
                Ok(m) => source = Some(TorrentSource::Magnet(Box::new(m))),
                Err(why) => problems.push((p, format!("{why}; torrent skipped"))),
            }
        }
        let Some(source) = source else {
            if !has(Kind::Torrent) && !has(Kind::Magnet) {
                problems.push((
                    entry_path,
                    "entry without a .torrent or .magnet; torrent skipped".to_owned(),
                ));
            }
            return None;
        };

        let resume = if has(Kind::Resume) {
            let p = self.file(h, Kind::Resume);
            match read_capped(&p, Kind::Resume) {
                Ok(b) => Some(b),
                Err(why) => {
                    problems.push((p, format!("{why}; loaded without resume data")));
                    None
                }
            }
        } else {
            None
        };
        Some(LoadedTorrent {
            info_hash: h,
            entry,
            source,
            resume,
        })
    }
}

/// `$XDG_STATE_HOME/lodestone` (if absolute) or `$HOME/.local/state/lodestone`.
fn default_path_from(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(base) = absolute(xdg_state_home) {
        return Some(base.join("lodestone"));
    }
    absolute(home).map(|h| h.join(".local").join("state").join("lodestone"))
}

/// `<name>.tmp-<digits>`: what [`write_atomic`] writes before its rename.
fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    let name = name.as_bytes();
    let marker = b".tmp-";
    match name.windows(marker.len()).rposition(|w| w == marker) {
        Some(i) => {
            let pid = &name[i + marker.len()..];
            i > 0 && !pid.is_empty() && pid.iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

/// `<40 lowercase hex digits>.<kind>`.
fn parse_name(name: &std::ffi::OsStr) -> Option<(InfoHash, Kind)> {
    let (stem, ext) = name.to_str()?.split_once('.')?;
    let kind = Kind::from_ext(ext)?;
    let h: InfoHash = stem.parse().ok().filter(|_| stem.len() == 40)?;
    // One spelling per hash, so no torrent is found twice.
    (h.to_hex() == stem).then_some((h, kind))
}

/// Read a regular file of at most `kind.cap()` bytes; the size is checked
/// before anything is allocated for it.
fn read_capped(path: &Path, kind: Kind) -> Result<Vec<u8>, String> {
    let cap = kind.cap();
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    let too_large = |len: u64| {
        format!(
            "{} is {len} bytes, more than the {cap}-byte limit",
            kind.what()
        )
    };
    if meta.len() > cap as u64 {
        return Err(too_large(meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the stat: read one byte past the cap at most.
    f.take(cap as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() > cap {
        return Err(too_large(buf.len() as u64));
    }
    Ok(buf)
}

/// The pid a holder wrote into the lock file, if it is there yet.
fn read_pid(lock: &mut File) -> Option<u32> {
    let mut buf = Vec::new();
    lock.take(32).read_to_end(&mut buf).ok()?;
    std::str::from_utf8(&buf).ok()?.trim().parse().ok()
}

fn sync_dir(dir: &Path) -> Result<(), StateDirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(entries: Vec<(&str, V)>) -> V {
        V::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// A small single-file .torrent named `name`, and its info hash.
    fn torrent(name: &str) -> (Vec<u8>, InfoHash) {
        let info = d(vec![
            ("length", V::Int(1000)),
            ("name", V::str(name)),
            ("piece length", V::Int(16384)),
            ("pieces", V::Bytes(vec![0xab; 20])),
        ]);
        let bytes = d(vec![
            ("announce", V::str("http://t.invalid/a")),
            ("info", info),
        ])
        .encode();
        let h = Metainfo::from_bytes(&bytes).unwrap().info_hashes.wire();
        (bytes, h)
    }

    fn entry(dir: &str, added_at: i64) -> TorrentEntry {
        TorrentEntry {
            source: "test".to_owned(),
            ..TorrentEntry::new(dir, added_at)
        }
    }

    fn problem_for<'a>(r: &'a LoadReport, path: &Path) -> &'a str {
        r.problems
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, why)| why.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "no problem reported for {}: {:?}",
                    path.display(),
                    r.problems
                )
            })
    }

    #[test]
    fn info_hash_is_the_sha1_of_the_raw_info_dict() {
        use sha1::{Digest, Sha1};
        let (bytes, h) = torrent("a");
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(h.0, <[u8; 20]>::from(Sha1::digest(&m.info_bytes)));
    }

    #[test]
    fn entry_codec_round_trips_and_refuses_bad_fields() {
        let full = TorrentEntry {
            download_dir: PathBuf::from(OsString::from_vec(b"/data/\xffodd name".to_vec())),
            paused: true,
            added_at: 1_700_000_000,
            file_priorities: vec![0, 1, 2, 255],
            download_limit: Some(5 << 20),
            upload_limit: Some(0),
            max_peers: Some(80),
            source: "api: watch folder".to_owned(),
        };
        assert_eq!(TorrentEntry::decode(&full.encode()), Ok(full.clone()));
        let bare = TorrentEntry::new("/d", 0);
        assert_eq!(TorrentEntry::decode(&bare.encode()), Ok(bare));

        // Unknown keys (from a later version) are ignored.
        let mut with_extra = full.encode();
        with_extra.pop();
        with_extra.extend_from_slice(b"6:zz_newi1ee");
        assert_eq!(TorrentEntry::decode(&with_extra), Ok(full));

        assert_eq!(
            TorrentEntry::decode(b"d7:versioni1ee"),
            Err(EntryError::MissingKey("download_dir"))
        );
        assert_eq!(
            TorrentEntry::decode(b"d7:versioni9ee"),
            Err(EntryError::NewerVersion(9))
        );
        assert!(matches!(
            TorrentEntry::decode(b"d7:versi"),
            Err(EntryError::Bencode(_))
        ));
        assert_eq!(TorrentEntry::decode(b"li1ee"), Err(EntryError::NotDict));
    }

    #[test]
    fn round_trip_of_entries_metainfo_magnet_and_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        let (t_bytes, t_hash) = torrent("one");
        let m_hash = InfoHash([0x11; 20]);
        let magnet = format!("magnet:?xt=urn:btih:{}&dn=two", m_hash.to_hex());
        let t_entry = TorrentEntry {
            paused: true,
            // As many files as the largest torrents have.
            file_priorities: vec![1; 100_000],
            upload_limit: Some(1000),
            ..entry("/dl/one", 20)
        };
        {
            let mut s = StateDir::open(&path).unwrap();
            s.save_metainfo(t_hash, &t_bytes).unwrap();
            s.save_entry(t_hash, &t_entry).unwrap();
            s.save_resume(t_hash, b"resume bytes").unwrap();
            s.save_magnet(m_hash, &magnet).unwrap();
            s.save_entry(m_hash, &entry("/dl/two", 10)).unwrap();
        }
        let mode = fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );

        let mut s = StateDir::open(&path).unwrap();
        let r = s.load_all();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.torrents.len(), 2);
        // In the order they were added.
        let (m, t) = (&r.torrents[0], &r.torrents[1]);
        assert_eq!(m.info_hash, m_hash);
        assert_eq!(m.entry, entry("/dl/two", 10));
        assert_eq!(m.resume, None);
        match &m.source {
            TorrentSource::Magnet(mag) => assert_eq!(mag.name.as_deref(), Some("two")),
            other => panic!("expected a magnet, got {other:?}"),
        }
        assert_eq!(t.info_hash, t_hash);
        assert_eq!(t.entry, t_entry);
        assert_eq!(t.resume.as_deref(), Some(&b"resume bytes"[..]));
        match &t.source {
            TorrentSource::Metainfo(mi) => assert_eq!(mi.info.name, "one"),
            other => panic!("expected a .torrent, got {other:?}"),
        }

        // A .torrent for another info hash is refused.
        let (t2_bytes, _) = torrent("one");
        assert!(matches!(
            s.save_metainfo(m_hash, &t2_bytes),
            Err(StateDirError::HashMismatch { .. })
        ));
        s.save_resume(t_hash, b"newer").unwrap();
        let r = s.load_all();
        assert_eq!(r.torrents[1].resume.as_deref(), Some(&b"newer"[..]));
    }

    #[test]
    fn save_metainfo_replaces_the_magnet() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = StateDir::open(tmp.path()).unwrap();
        let (bytes, h) = torrent("m");
        s.save_magnet(h, &format!("magnet:?xt=urn:btih:{h}"))
            .unwrap();
        s.save_entry(h, &entry("/d", 1)).unwrap();
        s.save_metainfo(h, &bytes).unwrap();
        assert!(!s.file(h, Kind::Magnet).exists());
        let r = s.load_all();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(matches!(r.torrents[0].source, TorrentSource::Metainfo(_)));
    }

    #[test]
    fn saves_refuse_wrong_hashes_and_oversized_data() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = StateDir::open(tmp.path()).unwrap();
        let (bytes, h) = torrent("x");
        let other = InfoHash([9; 20]);
        let err = s.save_metainfo(other, &bytes).unwrap_err();
        assert!(
            matches!(err, StateDirError::HashMismatch { expected, found, .. } if expected == other && found == h)
        );
        assert!(matches!(
            s.save_metainfo(h, &bytes[..bytes.len() - 1]),
            Err(StateDirError::BadMetainfo { .. })
        ));
        assert!(matches!(
            s.save_magnet(h, &format!("magnet:?xt=urn:btih:{other}")),
            Err(StateDirError::HashMismatch { .. })
        ));
        assert!(matches!(
            s.save_magnet(h, "http://not.a/magnet"),
            Err(StateDirError::BadMagnet { .. })
        ));
        assert!(matches!(
            s.save_resume(h, &vec![0; MAX_RESUME_BYTES + 1]),
            Err(StateDirError::TooLarge { .. })
        ));
        assert_eq!(
            fs::read_dir(tmp.path().join(TORRENTS_DIR)).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_second_open_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateDir::open(tmp.path()).unwrap();
        let err = StateDir::open(tmp.path()).unwrap_err();
        let pid = std::process::id();
        match &err {
            StateDirError::Locked { path, holder_pid } => {
                assert_eq!(path, tmp.path());
                assert_eq!(*holder_pid, Some(pid));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
        assert!(msg.contains(&format!("(pid {pid})")), "{msg}");

        // As another process would see it.
        let other = StateDirError::Locked {
            path: PathBuf::from("/x"),
            holder_pid: Some(pid + 1),
        };
        assert_eq!(
            other.to_string(),
            format!(
                "state directory /x is in use by another Lodestone process (pid {})",
                pid + 1
            )
        );

        drop(first);
        let again = StateDir::open(tmp.path()).unwrap();
        drop(again);
    }

    #[test]
    fn corrupt_and_half_written_entries_are_reported_and_the_rest_load() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = StateDir::open(tmp.path()).unwrap();
        let dir = tmp.path().join(TORRENTS_DIR);

        // Two good torrents.
        let (good_bytes, good) = torrent("good");
        s.save_metainfo(good, &good_bytes).unwrap();
        s.save_entry(good, &entry("/g", 1)).unwrap();
        s.save_resume(good, b"ok").unwrap();
        let (bad_resume_bytes, bad_resume) = torrent("bad resume");
        s.save_metainfo(bad_resume, &bad_resume_bytes).unwrap();
        s.save_entry(bad_resume, &entry("/r", 2)).unwrap();
        // Resume data that cannot be read (a directory in its place).
        fs::create_dir(s.file(bad_resume, Kind::Resume)).unwrap();

        // A corrupt entry.
        let (c_bytes, corrupt) = torrent("corrupt");
        s.save_metainfo(corrupt, &c_bytes).unwrap();
        fs::write(s.file(corrupt, Kind::Entry), b"d7:versioni1e8:download").unwrap();

        // A truncated .torrent.
        let (t_bytes, truncated) = torrent("truncated");
        s.save_entry(truncated, &entry("/t", 3)).unwrap();
        fs::write(
            s.file(truncated, Kind::Torrent),
            &t_bytes[..t_bytes.len() / 2],
        )
        .unwrap();

        // A .torrent under another torrent's name.
        let (other_bytes, other) = torrent("other");
        let mismatched = InfoHash([0x42; 20]);
        s.save_entry(mismatched, &entry("/m", 4)).unwrap();
        fs::write(s.file(mismatched, Kind::Torrent), &other_bytes).unwrap();

        // An entry with neither .torrent nor .magnet.
        let bare = InfoHash([0x43; 20]);
        s.save_entry(bare, &entry("/b", 5)).unwrap();

        // Stray files.
        fs::write(dir.join("notes.txt"), b"hello").unwrap();
        fs::write(
            dir.join(format!("{}.entry", good.to_hex().to_uppercase())),
            b"x",
        )
        .unwrap();

        let r = s.load_all();
        let loaded: Vec<_> = r.torrents.iter().map(|t| t.info_hash).collect();
        assert_eq!(loaded, vec![good, bad_resume]);
        assert_eq!(r.torrents[0].resume.as_deref(), Some(&b"ok"[..]));
        assert_eq!(r.torrents[1].resume, None);

        assert!(problem_for(&r, &s.file(bad_resume, Kind::Resume)).contains("not a regular file"));
        assert!(problem_for(&r, &s.file(corrupt, Kind::Entry)).starts_with("undecodable entry"));
        assert!(problem_for(&r, &s.file(truncated, Kind::Torrent)).starts_with("bad .torrent"));
        let why = problem_for(&r, &s.file(mismatched, Kind::Torrent));
        assert!(why.contains(&format!("is for info hash {other}")), "{why}");
        assert!(
            problem_for(&r, &s.file(bare, Kind::Entry)).contains("without a .torrent or .magnet")
        );
        assert!(problem_for(&r, &dir.join("notes.txt")).contains("ignored"));
        problem_for(
            &r,
            &dir.join(format!("{}.entry", good.to_hex().to_uppercase())),
        );
        assert_eq!(r.problems.len(), 7, "{:?}", r.problems);

        // Skipped torrents keep their files (for whoever wants to look).
        assert!(s.file(corrupt, Kind::Torrent).exists());
        assert!(s.file(truncated, Kind::Entry).exists());
    }

    #[test]
    fn a_bad_torrent_falls_back_to_the_magnet() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = StateDir::open(tmp.path()).unwrap();
        let (bytes, h) = torrent("fallback");
        s.save_magnet(h, &format!("magnet:?xt=urn:btih:{h}"))
            .unwrap();
        s.save_entry(h, &entry("/f", 1)).unwrap();
        fs::write(s.file(h, Kind::Torrent), &bytes[..10]).unwrap();
        let r = s.load_all();
        assert_eq!(r.torrents.len(), 1);
        assert!(matches!(r.torrents[0].source, TorrentSource::Magnet(_)));
        assert!(
            problem_for(&r, &s.file(h, Kind::Torrent)).contains("loading the magnet link instead")
        );
    }

    #[test]
    fn oversized_files_are_refused_before_reading() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = StateDir::open(tmp.path()).unwrap();
        let (bytes, big_resume) = torrent("big resume");
        s.save_metainfo(big_resume, &bytes).unwrap();
        s.save_entry(big_resume, &entry("/a", 1)).unwrap();
        // Sparse files: nothing is written, only the size says "huge".
        File::create(s.file(big_resume, Kind::Resume))
            .unwrap()
            .set_len(MAX_RESUME_BYTES as u64 + 1)
            .unwrap();
        let (bytes, big_entry) = torrent("big entry");
        s.save_metainfo(big_entry, &bytes).unwrap();
        File::create(s.file(big_entry, Kind::Entry))
            .unwrap()
            .set_len(MAX_ENTRY_BYTES as u64 + 1)
            .unwrap();

        let r = s.load_all();
        assert_eq!(r.torrents.len(), 1);
        assert_eq!(r.torrents[0].info_hash, big_resume);
        assert_eq!(r.torrents[0].resume, None);
        assert!(problem_for(&r, &s.file(big_resume, Kind::Resume))
            .contains(&format!("more than the {MAX_RESUME_BYTES}-byte limit")));
        assert!(problem_for(&r, &s.file(big_entry, Kind::Entry))
            .contains(&format!("more than the {MAX_ENTRY_BYTES}-byte limit")));
    }

    #[test]
    fn leftover_temp_files_are_removed_on_open_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let (bytes, h) = torrent("t");
        let stray = {
            let mut s = StateDir::open(tmp.path()).unwrap();
            s.save_metainfo(h, &bytes).unwrap();
            s.save_entry(h, &entry("/t", 1)).unwrap();
            // What a write killed before its rename leaves (another pid).
            let p = s.file(h, Kind::Entry).with_extension("entry.tmp-4242");
            fs::write(&p, b"d7:vers").unwrap();
            p
        };
        let root_stray = tmp.path().join("dht.dat.tmp-77");
        fs::write(&root_stray, b"x").unwrap();

        let mut s = StateDir::open(tmp.path()).unwrap();
        assert!(!stray.exists() && !root_stray.exists());
        assert_eq!(s.removed_temp_files(), [root_stray.clone(), stray.clone()]);
        let r = s.load_all();
        assert_eq!(r.torrents.len(), 1);
        assert!(problem_for(&r, &stray).contains("interrupted write; removed"));
        problem_for(&r, &root_stray);
        assert_eq!(r.problems.len(), 2);
    }

    #[test]
    fn remove_deletes_every_file_and_orphans_are_cleaned_up() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = StateDir::open(tmp.path()).unwrap();
        let (bytes, h) = torrent("gone");
        let m = InfoHash([7; 20]);
        s.save_metainfo(h, &bytes).unwrap();
        s.save_entry(h, &entry("/x", 1)).unwrap();
        s.save_resume(h, b"r").unwrap();
        s.save_magnet(m, &format!("magnet:?xt=urn:btih:{m}"))
            .unwrap();
        s.save_entry(m, &entry("/y", 2)).unwrap();
        s.save_resume(m, b"r").unwrap();

        s.remove(h).unwrap();
        s.remove(m).unwrap();
        s.remove(m).unwrap(); // already gone: fine
        assert_eq!(
            fs::read_dir(tmp.path().join(TORRENTS_DIR)).unwrap().count(),
            0
        );

        // An add killed before its entry was written (or a remove after it
        // deleted the entry): the files left are deleted at load.
        s.save_metainfo(h, &bytes).unwrap();
        s.save_resume(h, b"r").unwrap();
        let r = s.load_all();
        assert!(r.torrents.is_empty());
        assert!(problem_for(&r, &s.file(h, Kind::Torrent)).contains("no .entry"));
        assert!(problem_for(&r, &s.file(h, Kind::Resume)).contains("removed"));
        assert_eq!(
            fs::read_dir(tmp.path().join(TORRENTS_DIR)).unwrap().count(),
            0
        );
    }

    const CHILD_ENV: &str = "LODESTONE_STATE_DIR_KILL_CHILD";

    fn resume_payload(big: bool) -> Vec<u8> {
        if big {
            vec![0xbb; 3 << 20]
        } else {
            vec![0xaa; 1 << 20]
        }
    }

    /// The writer that `kill_9_at_any_moment_leaves_the_old_or_the_new_file`
    /// runs in a child process and kills.
    #[test]
    #[ignore = "child process of kill_9_at_any_moment_leaves_the_old_or_the_new_file"]
    fn kill_9_child() {
        use std::io::Write;
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let mut s = StateDir::open(&dir).unwrap();
        let (bytes, h) = torrent("killed");
        s.save_metainfo(h, &bytes).unwrap();
        let mut out = std::io::stdout();
        for k in 0..10_000u32 {
            let big = k % 2 == 1;
            let e = TorrentEntry {
                paused: big,
                ..entry("/k", 1)
            };
            s.save_entry(h, &e).unwrap();
            s.save_resume(h, &resume_payload(big)).unwrap();
            writeln!(out, "wrote {k}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn kill_9_at_any_moment_leaves_the_old_or_the_new_file() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let tmp = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        for round in 0..6 {
            let mut child = Command::new(&exe)
                .args(["--exact", "state_dir::tests::kill_9_child", "--ignored"])
                .args(["--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, tmp.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = io::BufReader::new(child.stdout.take().unwrap()).lines();
            // Let it get through a different number of writes each round:
            // the kill lands somewhere in the next ones.
            let mut written = 0;
            while written <= round {
                match lines.next() {
                    Some(Ok(l)) if l.starts_with("wrote ") => written += 1,
                    Some(Ok(_)) => {}
                    other => panic!("the child ended before writing: {other:?}"),
                }
            }
            // Another process holds the directory: refused, naming it.
            match StateDir::open(tmp.path()) {
                Err(StateDirError::Locked { holder_pid, .. }) => {
                    assert_eq!(holder_pid, Some(child.id()))
                }
                other => panic!("expected Locked, got {other:?}"),
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();

            // Its death released the lock; every file is whole.
            let mut s = StateDir::open(tmp.path()).unwrap();
            let r = s.load_all();
            assert!(
                r.problems
                    .iter()
                    .all(|(_, why)| why.contains("interrupted write; removed")),
                "round {round}: {:?}",
                r.problems
            );
            assert_eq!(r.torrents.len(), 1, "round {round}");
            let resume = r.torrents[0].resume.as_deref().unwrap();
            assert!(
                resume == resume_payload(false) || resume == resume_payload(true),
                "round {round}: torn resume data of {} bytes",
                resume.len()
            );
        }
    }

    #[test]
    fn names_and_default_path() {
        assert!(is_temp_name("a.entry.tmp-123".as_ref()));
        assert!(!is_temp_name("a.entry.tmp-".as_ref()));
        assert!(!is_temp_name(".tmp-12".as_ref()));
        assert!(!is_temp_name("a.tmp-12x".as_ref()));
        let h = InfoHash([0xab; 20]);
        assert_eq!(
            parse_name(format!("{h}.resume").as_ref()),
            Some((h, Kind::Resume))
        );
        assert_eq!(parse_name(format!("{h}.resume.bak").as_ref()), None);
        assert_eq!(parse_name("lock".as_ref()), None);

        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            default_path_from(os("/xdg"), os("/home/u")),
            Some(PathBuf::from("/xdg/lodestone"))
        );
        assert_eq!(
            default_path_from(os("relative"), os("/home/u")),
            Some(PathBuf::from("/home/u/.local/state/lodestone"))
        );
        assert_eq!(
            default_path_from(None, os("/home/u")),
            Some(PathBuf::from("/home/u/.local/state/lodestone"))
        );
        assert_eq!(default_path_from(os(""), None), None);
    }
}
