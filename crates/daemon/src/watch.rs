//! The watch directory: `.torrent` and `.magnet` files dropped into it are
//! added, then renamed to `<name>.added`, as Transmission does.
//!
//! [`Watcher::scan`] is meant to be called every few seconds (polling works
//! on NFS and CIFS, where change notification does not). It holds no
//! session: it hands back the bytes of files that are complete and parse,
//! and the caller adds them.
//!
//! - A file is taken only once its size and mtime are the same on two
//!   scans in a row, so a file still being written is left alone.
//! - A file that does not parse (or cannot be read) is tried again on the
//!   next [`MAX_ATTEMPTS`] - 1 scans, then reported once as a [`Problem`]
//!   and left alone until it changes.
//! - A file handed out is not handed out again until it changes: the
//!   caller renames it with [`Watcher::mark_added`] when it is added (or
//!   is a duplicate), or calls [`Watcher::forget`] to have it tried again.
//! - Files whose name starts with `.` (editors' and rsync's temporaries)
//!   and `*.added` files are skipped.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Tries before a file that will not parse is reported and left alone.
pub const MAX_ATTEMPTS: u8 = 3;
/// The largest `.torrent` read; bigger files are refused unread.
pub const MAX_TORRENT_LEN: u64 = 16 << 20;
/// The largest `.magnet` read.
pub const MAX_MAGNET_LEN: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot read watch directory {}: {source}", dir.display())]
    ReadDir { dir: PathBuf, source: io::Error },
    #[error("cannot read it: {0}")]
    Read(#[source] io::Error),
    #[error("{len} bytes is more than the {cap} bytes allowed for a {kind} file")]
    TooBig {
        kind: &'static str,
        len: u64,
        cap: u64,
    },
    #[error("not a torrent file: {0}")]
    Metainfo(#[from] lodestone_core::MetainfoError),
    #[error("the file is not UTF-8 text")]
    NotText,
    #[error("the file is empty (it should hold one magnet link)")]
    EmptyMagnet,
    #[error("not a magnet link: {0}")]
    Magnet(#[from] lodestone_core::MagnetError),
    #[error("cannot rename {} to {}: {source}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
}

/// What a watched file holds; checked to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The whole `.torrent` file.
    Torrent(Vec<u8>),
    /// The magnet link, trimmed.
    Magnet(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub kind: Kind,
}

/// A file given up on; reported once per version of the file.
#[derive(Debug)]
pub struct Problem {
    pub path: PathBuf,
    pub error: WatchError,
}

/// What one scan turned up.
#[derive(Debug, Default)]
pub struct Scan {
    pub found: Vec<Found>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Torrent,
    Magnet,
}

impl FileKind {
    fn of(name: &Path) -> Option<FileKind> {
        let ext = name.extension()?;
        if ext.eq_ignore_ascii_case("torrent") {
            Some(FileKind::Torrent)
        } else if ext.eq_ignore_ascii_case("magnet") {
            Some(FileKind::Magnet)
        } else {
            None
        }
    }

    fn cap(self) -> u64 {
        match self {
            FileKind::Torrent => MAX_TORRENT_LEN,
            FileKind::Magnet => MAX_MAGNET_LEN,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileKind::Torrent => ".torrent",
            FileKind::Magnet => ".magnet",
        }
    }
}

/// A version of a file: when either changes, it is a new file to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    len: u64,
    mtime: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Seen once at this version; taken if it is the same next scan.
    Settling,
    /// Failed to read or parse this many times.
    Failing(u8),
    /// Reported as bad: left alone.
    GivenUp,
    /// Handed to the caller: not handed out again.
    Handed,
}

/// Polls one directory. See the module docs for the rules.
#[derive(Debug)]
pub struct Watcher {
    dir: PathBuf,
    files: HashMap<OsString, (Version, State)>,
}

impl Watcher {
    pub fn new(dir: impl Into<PathBuf>) -> Watcher {
        Watcher {
            dir: dir.into(),
            files: HashMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One pass over the directory. Fails only if the directory itself
    /// cannot be listed (a missing directory is such an error: the caller
    /// reports it, and may create it).
    pub fn scan(&mut self) -> Result<Scan, WatchError> {
        let dir = self.dir.clone();
        let read_dir = |source| WatchError::ReadDir {
            dir: dir.clone(),
            source,
        };
        let mut scan = Scan::default();
        let mut present = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_dir)? {
            let entry = entry.map_err(read_dir)?;
            let name = entry.file_name();
            let Some(kind) = FileKind::of(Path::new(&name)) else {
                continue;
            };
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            // Follows symlinks: a link to a torrent elsewhere is fine.
            let Ok(meta) = fs::metadata(entry.path()) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let version = Version {
                len: meta.len(),
                mtime: meta.modified().ok(),
            };
            present.push(name.clone());
            let path = entry.path();
            match self.files.get(&name).copied() {
                Some((seen, state)) if seen == version => match state {
                    State::Settling => self.take(name, path, kind, version, 0, &mut scan),
                    State::Failing(n) => self.take(name, path, kind, version, n, &mut scan),
                    State::GivenUp | State::Handed => {}
                },
                // New, or changed since the last scan: wait one more.
                _ => {
                    self.files.insert(name, (version, State::Settling));
                }
            }
        }
        // Forget what is gone, so a file of the same name put back later is new.
        self.files.retain(|name, _| present.contains(name));
        scan.found.sort_by(|a, b| a.path.cmp(&b.path));
        scan.problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(scan)
    }

    /// Read and check a settled file; `failures` is how often it failed before.
    fn take(
        &mut self,
        name: OsString,
        path: PathBuf,
        kind: FileKind,
        version: Version,
        failures: u8,
        scan: &mut Scan,
    ) {
        match read(&path, kind, version.len) {
            Ok(kind) => {
                self.files.insert(name, (version, State::Handed));
                scan.found.push(Found { path, kind });
            }
            // Too big cannot get better without the file changing.
            Err(error @ WatchError::TooBig { .. }) => {
                self.files.insert(name, (version, State::GivenUp));
                scan.problems.push(Problem { path, error });
            }
            Err(error) => {
                let failures = failures.saturating_add(1);
                if failures >= MAX_ATTEMPTS {
                    self.files.insert(name, (version, State::GivenUp));
                    scan.problems.push(Problem { path, error });
                } else {
                    self.files.insert(name, (version, State::Failing(failures)));
                }
            }
        }
    }

    /// Rename an added file to `<name>.added` (replacing any such file, as
    /// Transmission does) and return the new path.
    pub fn mark_added(&mut self, path: &Path) -> Result<PathBuf, WatchError> {
        let mut to = path.as_os_str().to_owned();
        to.push(".added");
        let to = PathBuf::from(to);
        fs::rename(path, &to).map_err(|source| WatchError::Rename {
            from: path.to_owned(),
            to: to.clone(),
            source,
        })?;
        if let Some(name) = path.file_name() {
            self.files.remove(name);
        }
        Ok(to)
    }

    /// Treat a file as new again (e.g. adding it failed for a reason that
    /// may pass); it is taken on the next scan that sees it unchanged.
    pub fn forget(&mut self, path: &Path) {
        if let Some(name) = path.file_name() {
            self.files.remove(name);
        }
    }
}

/// Read at most `cap` bytes (the file may have grown since it was
/// measured) and check that they parse.
fn read(path: &Path, kind: FileKind, len: u64) -> Result<Kind, WatchError> {
    let cap = kind.cap();
    let too_big = |len| WatchError::TooBig {
        kind: kind.name(),
        len,
        cap,
    };
    if len > cap {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    fs::File::open(path)
        .and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
        .map_err(WatchError::Read)?;
    if bytes.len() as u64 > cap {
        return Err(too_big(bytes.len() as u64));
    }
    match kind {
        FileKind::Torrent => {
            lodestone_core::Metainfo::from_bytes(&bytes)?;
            Ok(Kind::Torrent(bytes))
        }
        FileKind::Magnet => {
            let text = String::from_utf8(bytes).map_err(|_| WatchError::NotText)?;
            let text = text.trim_start_matches('\u{feff}');
            // One link on the first line that has anything on it.
            let link = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .ok_or(WatchError::EmptyMagnet)?;
            link.parse::<lodestone_core::Magnet>()?;
            Ok(Kind::Magnet(link.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HASH: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    fn torrent() -> Vec<u8> {
        let info = lodestone_core::metainfo::single_file_info("t", 16384, b"hello");
        let mut t = b"d4:info".to_vec();
        t.extend_from_slice(&info);
        t.push(b'e');
        t
    }

    fn magnet() -> String {
        format!("magnet:?xt=urn:btih:{HASH}&dn=t")
    }

    fn setup() -> (tempfile::TempDir, Watcher) {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Watcher::new(dir.path());
        (dir, w)
    }

    fn scan(w: &mut Watcher) -> Scan {
        w.scan().expect("scan")
    }

    fn names(found: &[Found]) -> Vec<String> {
        found
            .iter()
            .map(|f| {
                f.path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    /// Give a file a distinct mtime, as a writer would, without sleeping.
    fn touch(path: &Path, secs: u64) {
        let f = fs::File::options().write(true).open(path).expect("open");
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs))
            .expect("set mtime");
    }

    #[test]
    fn takes_torrents_and_magnets_once_settled() {
        let (dir, mut w) = setup();
        fs::write(dir.path().join("a.torrent"), torrent()).expect("write");
        fs::write(
            dir.path().join("b.magnet"),
            format!("\u{feff}\n  {}  \n", magnet()),
        )
        .expect("write");
        fs::write(dir.path().join("c.txt"), "x").expect("write");
        fs::write(dir.path().join("d.torrent.added"), torrent()).expect("write");
        fs::write(dir.path().join(".e.torrent"), torrent()).expect("write");
        fs::create_dir(dir.path().join("f.torrent")).expect("mkdir");

        let first = scan(&mut w);
        assert!(first.found.is_empty() && first.problems.is_empty());
        let second = scan(&mut w);
        assert_eq!(names(&second.found), ["a.torrent", "b.magnet"]);
        assert_eq!(second.found[0].kind, Kind::Torrent(torrent()));
        assert_eq!(second.found[1].kind, Kind::Magnet(magnet()));
        assert!(second.problems.is_empty());
        // Handed out once only.
        assert!(scan(&mut w).found.is_empty());
    }

    #[test]
    fn a_file_still_changing_is_not_taken() {
        let (dir, mut w) = setup();
        let path = dir.path().join("a.torrent");
        let full = torrent();
        fs::write(&path, &full[..10]).expect("write");
        scan(&mut w);
        fs::write(&path, &full).expect("write");
        // Grew since the last scan: wait.
        assert!(scan(&mut w).found.is_empty());
        // Same length, new mtime: wait again.
        touch(&path, 1);
        assert!(scan(&mut w).found.is_empty());
        assert_eq!(names(&scan(&mut w).found), ["a.torrent"]);
    }

    #[test]
    fn a_bad_file_is_retried_then_reported_once() {
        let (dir, mut w) = setup();
        let path = dir.path().join("bad.torrent");
        fs::write(&path, b"d4:infoi3ee").expect("write");
        scan(&mut w); // settling
        for attempt in 1..MAX_ATTEMPTS {
            let s = scan(&mut w);
            assert!(
                s.found.is_empty() && s.problems.is_empty(),
                "attempt {attempt}"
            );
        }
        let s = scan(&mut w);
        assert_eq!(s.problems.len(), 1);
        assert_eq!(s.problems[0].path, path);
        assert!(matches!(s.problems[0].error, WatchError::Metainfo(_)));
        for _ in 0..5 {
            let s = scan(&mut w);
            assert!(s.found.is_empty() && s.problems.is_empty());
        }
        // Fixed in place: a new version, taken once settled.
        fs::write(&path, torrent()).expect("write");
        assert!(scan(&mut w).found.is_empty());
        assert_eq!(names(&scan(&mut w).found), ["bad.torrent"]);
    }

    #[test]
    fn a_file_that_parses_on_a_retry_is_taken() {
        let (dir, mut w) = setup();
        let path = dir.path().join("a.magnet");
        let good = magnet();
        // Half-written content of the final length with the final mtime
        // (coarse timestamps, or a writer that sets them): only a retry
        // catches it.
        fs::write(&path, "x".repeat(good.len())).expect("write");
        touch(&path, 5);
        scan(&mut w);
        assert!(scan(&mut w).found.is_empty()); // failure 1
        fs::write(&path, &good).expect("write");
        touch(&path, 5);
        let s = scan(&mut w);
        assert_eq!(names(&s.found), ["a.magnet"]);
        assert!(s.problems.is_empty());
    }

    #[test]
    fn bad_magnets_are_reported() {
        for (content, want) in [
            ("", "empty"),
            ("\n \n", "empty"),
            ("http://example.invalid/x.torrent", "magnet"),
        ] {
            let (dir, mut w) = setup();
            fs::write(dir.path().join("m.magnet"), content).expect("write");
            let mut problems = Vec::new();
            for _ in 0..=MAX_ATTEMPTS {
                problems.extend(scan(&mut w).problems);
            }
            assert_eq!(problems.len(), 1, "{content:?}");
            let msg = problems[0].error.to_string();
            assert!(msg.contains(want), "{content:?}: {msg}");
        }
        let (dir, mut w) = setup();
        fs::write(dir.path().join("m.magnet"), [0xff, 0xfe, 0x00]).expect("write");
        let mut problems = Vec::new();
        for _ in 0..=MAX_ATTEMPTS {
            problems.extend(scan(&mut w).problems);
        }
        assert!(matches!(
            problems[..],
            [Problem {
                error: WatchError::NotText,
                ..
            }]
        ));
    }

    #[test]
    fn files_over_the_cap_are_refused_unread() {
        let (dir, mut w) = setup();
        let path = dir.path().join("huge.magnet");
        // Sparse: the length says too big, and nothing is read.
        fs::File::create(&path)
            .and_then(|f| f.set_len(MAX_MAGNET_LEN + 1))
            .expect("sparse file");
        scan(&mut w);
        let s = scan(&mut w);
        assert!(matches!(
            s.problems[..],
            [Problem {
                error: WatchError::TooBig { len, .. },
                ..
            }] if len == MAX_MAGNET_LEN + 1
        ));
        assert!(scan(&mut w).problems.is_empty());
        let big = dir.path().join("huge.torrent");
        fs::File::create(&big)
            .and_then(|f| f.set_len(MAX_TORRENT_LEN + 1))
            .expect("sparse file");
        scan(&mut w);
        assert_eq!(scan(&mut w).problems.len(), 1);
    }

    #[test]
    fn mark_added_renames_and_overwrites() {
        let (dir, mut w) = setup();
        let path = dir.path().join("a.torrent");
        fs::write(&path, torrent()).expect("write");
        fs::write(dir.path().join("a.torrent.added"), "old").expect("write");
        scan(&mut w);
        let found = scan(&mut w).found;
        let added = w.mark_added(&found[0].path).expect("rename");
        assert_eq!(added, dir.path().join("a.torrent.added"));
        assert!(!path.exists());
        assert_eq!(fs::read(&added).expect("read"), torrent());
        // The same name dropped in again is a new file.
        fs::write(&path, torrent()).expect("write");
        scan(&mut w);
        assert_eq!(names(&scan(&mut w).found), ["a.torrent"]);
        assert!(matches!(
            w.mark_added(&dir.path().join("gone.torrent")),
            Err(WatchError::Rename { .. })
        ));
    }

    #[test]
    fn forget_hands_a_file_out_again() {
        let (dir, mut w) = setup();
        let path = dir.path().join("a.torrent");
        fs::write(&path, torrent()).expect("write");
        scan(&mut w);
        assert_eq!(scan(&mut w).found.len(), 1);
        w.forget(&path);
        scan(&mut w);
        assert_eq!(scan(&mut w).found.len(), 1);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Watcher::new(dir.path().join("nope"));
        let err = w.scan().expect_err("missing dir");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn upper_case_extensions_count() {
        let (dir, mut w) = setup();
        fs::write(dir.path().join("A.TORRENT"), torrent()).expect("write");
        scan(&mut w);
        assert_eq!(names(&scan(&mut w).found), ["A.TORRENT"]);
    }
}
