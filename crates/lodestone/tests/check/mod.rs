//! What a download folder holds, judged without asking Lodestone: each piece
//! hashed from the files on disk against the torrent's SHA-1 piece hashes,
//! a resume file's claims read with our own bencode walk, and a `get --json`
//! run read event by event with a deadline that holds even when the child
//! prints nothing.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use lodestone_core::{Metainfo, PieceIndex};
use sha1::{Digest, Sha1};

use crate::common::{Child, Lines};

pub fn load(torrent: &Path) -> Metainfo {
    let bytes = std::fs::read(torrent).expect("read the torrent");
    Metainfo::from_bytes(&bytes).expect("parse the torrent")
}

fn file_path(meta: &Metainfo, dir: &Path, i: usize) -> PathBuf {
    dir.join(meta.info.files[i].relative_path())
}

/// Which pieces are complete and correct under `dir` (the folder the
/// torrent was downloaded into): read from the files, hashed, compared
/// with the torrent's piece hashes. Missing or short files fail.
pub fn verified(meta: &Metainfo, dir: &Path) -> Vec<bool> {
    let info = &meta.info;
    let mut open: Vec<Option<Option<File>>> = (0..info.files.len()).map(|_| None).collect();
    let mut buf = Vec::new();
    (0..info.num_pieces())
        .map(|p| {
            let piece = PieceIndex(p);
            let mut h = Sha1::new();
            for s in info.layout.piece_slices(piece) {
                buf.resize(s.len as usize, 0);
                if info.files[s.file_index].attributes.pad {
                    buf.fill(0);
                } else {
                    let f = open[s.file_index]
                        .get_or_insert_with(|| File::open(file_path(meta, dir, s.file_index)).ok());
                    match f {
                        Some(f) if f.read_exact_at(&mut buf, s.offset_in_file).is_ok() => {}
                        _ => return false,
                    }
                }
                h.update(&buf);
            }
            Some(<[u8; 20]>::from(h.finalize())) == info.piece_hash(piece)
        })
        .collect()
}

pub fn count(bits: &[bool]) -> usize {
    bits.iter().filter(|&&b| b).count()
}

/// Bytes of the pieces not set in `have`.
pub fn missing_bytes(meta: &Metainfo, have: &[bool]) -> u64 {
    have.iter()
        .enumerate()
        .filter(|(_, &h)| !h)
        .map(|(p, _)| {
            u64::from(
                meta.info
                    .layout
                    .piece_len(PieceIndex(p as u32))
                    .unwrap_or(0),
            )
        })
        .sum()
}

/// A file's size and modification time (ns since the epoch), as the
/// resume file records them; a missing file is `(0, None)`.
pub type Stamp = (u64, Option<i64>);

pub fn disk_stamps(meta: &Metainfo, dir: &Path) -> Vec<Stamp> {
    (0..meta.info.files.len())
        .map(|i| match std::fs::metadata(file_path(meta, dir, i)) {
            Ok(m) => {
                let t = m.modified().expect("mtime");
                let ns = t.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as i64;
                (m.len(), Some(ns))
            }
            Err(_) => (0, None),
        })
        .collect()
}

/// What a resume file claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub have: Vec<bool>,
    pub stamps: Vec<Stamp>,
}

pub fn resume_path(meta: &Metainfo, dir: &Path) -> PathBuf {
    dir.join(".lodestone")
        .join(format!("{}.resume", meta.info_hashes.wire().to_hex()))
}

/// The resume file under `dir`, read with our own walk of its bencode
/// (version 2: `pieces` bitfield, `file-sizes`, `file-mtimes` with `""` for
/// a time not vouched for). `None` when there is none.
pub fn resume_claims(meta: &Metainfo, dir: &Path) -> Option<Claims> {
    let bytes = std::fs::read(resume_path(meta, dir)).ok()?;
    let v = lodestone_bencode::decode(&bytes).expect("resume file is bencode");
    let d = v.as_dict().expect("resume file is a dictionary");
    assert_eq!(d.get(b"version").and_then(|v| v.as_int()), Some(2));
    let bits = d.get(b"pieces").and_then(|v| v.as_bytes()).expect("pieces");
    let have = (0..meta.info.num_pieces() as usize)
        .map(|i| bits.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0))
        .collect();
    let list = |k: &[u8]| d.get(k).and_then(|v| v.as_list()).expect("file list");
    let stamps = list(b"file-sizes")
        .iter()
        .zip(list(b"file-mtimes"))
        .map(|(s, t)| (s.as_int().expect("size") as u64, t.as_int()))
        .collect();
    Some(Claims { have, stamps })
}

/// Every piece the resume file claims verifies on disk.
pub fn claims_hold(claims: &Claims, verified: &[bool]) {
    for (p, _) in claims.have.iter().enumerate().filter(|(_, &h)| h) {
        assert!(
            verified[p],
            "the resume file claims piece {p}, which does not verify on disk"
        );
    }
}

/// The files whose stamp on disk differs from the resume file's: the ones
/// a restart must hash again.
pub fn changed_files(claims: &Claims, disk: &[Stamp]) -> Vec<usize> {
    claims
        .stamps
        .iter()
        .zip(disk)
        .enumerate()
        .filter(|(_, (c, d))| c != d)
        .map(|(i, _)| i)
        .collect()
}

/// Every piece of file `i` is claimed.
pub fn file_claimed(meta: &Metainfo, claims: &Claims, i: usize) -> bool {
    meta.info
        .layout
        .file_pieces(i)
        .all(|p| claims.have[p as usize])
}

/// Bytes read by process `pid` so far (`rchar` in /proc/PID/io).
pub fn bytes_read(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
}

/// A `lodestone get --json` (or `seed --json`) whose stdout is read line by
/// line on a thread ([`Lines`]); waits are bounded whether or not lines
/// arrive.
pub struct Run {
    pub child: Child,
    lines: Lines,
    /// Every event so far (a line that is not JSON as a `not json` event).
    pub events: Vec<serde_json::Value>,
    stderr: PathBuf,
}

impl Run {
    /// Start `cmd`; its stderr goes to `stderr` (shown when a wait fails).
    pub fn spawn(cmd: &mut Command, stderr: &Path) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(File::create(stderr).expect("create the stderr log"))
            .spawn()
            .expect("spawn lodestone");
        let lines = Lines::stdout(&mut child);
        Self {
            child: Child(child),
            lines,
            events: Vec::new(),
            stderr: stderr.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Take in the events printed so far, waiting at most `wait` for one.
    /// False once stdout has closed (the child ended).
    pub fn pump(&mut self, wait: Duration) -> bool {
        let open = self.lines.pump(wait);
        for line in &self.lines.seen[self.events.len()..] {
            let v = serde_json::from_str(line).unwrap_or_else(
                |e| serde_json::json!({"event": "not json", "line": line, "error": e.to_string()}),
            );
            self.events.push(v);
        }
        open
    }

    pub fn find(&self, event: &str) -> Option<&serde_json::Value> {
        self.events.iter().find(|v| v["event"] == event)
    }

    /// What went wrong, with what the child said.
    pub fn fail(&self, what: &str) -> ! {
        let tail: Vec<String> = self
            .events
            .iter()
            .rev()
            .take(8)
            .rev()
            .map(|v| v.to_string())
            .collect();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        panic!(
            "{what}\n--- last events ---\n{}\n--- stderr ---\n{}",
            tail.join("\n"),
            &err[err.len().saturating_sub(3000)..]
        );
    }

    /// Wait (bounded by `timeout`) until `done` holds for the events so far
    /// (checked at least every 1 ms, line or no line); fails with `what`.
    pub fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("{what}: not within {timeout:?}"));
            }
            if !self.pump(Duration::from_millis(1)) && !done(self) {
                self.fail(&format!("{what}: the process ended first"));
            }
        }
    }

    /// Wait for the event named `event`.
    pub fn wait_event(&mut self, event: &str, timeout: Duration) -> serde_json::Value {
        self.until(&format!("waiting for '{event}'"), timeout, |r| {
            r.find(event).is_some()
        });
        self.find(event).cloned().expect("just seen")
    }

    /// SIGKILL: no clean shutdown, no last resume save.
    pub fn kill9(mut self) -> Vec<serde_json::Value> {
        self.child.0.kill().expect("kill -9");
        self.child.0.wait().expect("reap");
        while self.pump(Duration::from_millis(100)) {}
        self.events
    }

    /// Wait for the child to end by itself: its exit status and its
    /// summary (the last event).
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, serde_json::Value) {
        self.until("waiting for the summary", timeout, |r| {
            r.find("summary").is_some()
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                self.fail("the process did not exit after its summary");
            }
            self.pump(Duration::from_millis(10));
        };
        (status, self.find("summary").cloned().expect("just seen"))
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}
