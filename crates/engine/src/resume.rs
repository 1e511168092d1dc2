//! Resume data: which pieces are verified on disk, so a restart (even after
//! `kill -9`) does not download them again. Written atomically; a file that
//! is unreadable, for another torrent, or disagrees with the files on disk
//! is not trusted (the caller rechecks instead). Each file's size and
//! modification time are recorded: a file modified since (by us after the
//! last save, or by someone else) has its pieces hashed again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lodestone_bencode::{decode, OwnedValue as V};
use lodestone_core::{Bitfield, InfoHash};

use crate::fsutil::write_atomic;

/// Version 2 added the modification times.
const VERSION: i64 = 2;

/// A file as seen on disk: its size and when it was last modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    /// Nanoseconds since the Unix epoch (negative before it); `None` when
    /// the file does not exist or its time was too recent to vouch for.
    pub mtime_ns: Option<i64>,
}

impl FileStamp {
    pub const MISSING: Self = Self {
        size: 0,
        mtime_ns: None,
    };

    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: meta.modified().ok().map(nanos),
        }
    }

    /// This stamp as resume data written at `now` records it. A time within
    /// [`RACY`] of `now` is left out: the file could change again within the
    /// same timestamp tick without its time moving, so the next start
    /// hashes it rather than trust it.
    pub fn vouched_at(self, now: SystemTime) -> Self {
        let recent = self
            .mtime_ns
            .is_some_and(|t| t > nanos(now).saturating_sub(RACY_NS));
        Self {
            mtime_ns: if recent { None } else { self.mtime_ns },
            ..self
        }
    }
}

/// How recent a modification time must not be to be trusted (file systems
/// keep times in ticks of up to 2 s).
pub const RACY: Duration = Duration::from_secs(2);
const RACY_NS: i64 = RACY.as_nanos() as i64;

/// Nanoseconds since the Unix epoch (negative before it).
fn nanos(t: SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeData {
    pub info_hash: InfoHash,
    pub have: Bitfield,
    /// Each file when the resume data was written.
    pub files: Vec<FileStamp>,
}

/// What the files on disk say about resume data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskCheck {
    /// Usable; the files listed (by index) changed since it was written,
    /// so their pieces must be hashed again.
    Trusted { changed: Vec<usize> },
    /// A file shrank or vanished: someone else changed the files.
    Untrusted,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error("resume file is damaged: {0}")]
    Damaged(&'static str),
    #[error("resume file is from an older Lodestone (version {0})")]
    OldVersion(i64),
    #[error("resume file belongs to another torrent")]
    OtherTorrent,
    #[error("resume file lists {got} pieces/files, the torrent has {want}")]
    Mismatch { got: u64, want: u64 },
}

/// Where the resume file of a torrent downloading into `dir` lives.
pub fn path_for(dir: &Path, info_hash: &InfoHash) -> PathBuf {
    dir.join(".lodestone").join(format!("{info_hash}.resume"))
}

impl ResumeData {
    pub fn encode(&self) -> Vec<u8> {
        let mut d = BTreeMap::new();
        d.insert(
            b"file-sizes".to_vec(),
            V::List(self.files.iter().map(|f| V::Int(f.size as i64)).collect()),
        );
        // A missing file is an empty string: any integer is a valid time.
        let mtime = |f: &FileStamp| f.mtime_ns.map_or(V::Bytes(Vec::new()), V::Int);
        d.insert(
            b"file-mtimes".to_vec(),
            V::List(self.files.iter().map(mtime).collect()),
        );
        d.insert(b"info-hash".to_vec(), V::Bytes(self.info_hash.0.to_vec()));
        d.insert(b"pieces".to_vec(), V::Bytes(self.have.as_bytes().to_vec()));
        d.insert(b"version".to_vec(), V::Int(VERSION));
        V::Dict(d).encode()
    }

    pub fn decode(
        bytes: &[u8],
        info_hash: &InfoHash,
        num_pieces: u32,
        num_files: usize,
    ) -> Result<Self, ResumeError> {
        let v = decode(bytes).map_err(|_| ResumeError::Damaged("not bencode"))?;
        let d = v
            .as_dict()
            .ok_or(ResumeError::Damaged("not a dictionary"))?;
        match d.get(b"version").and_then(|v| v.as_int()) {
            Some(VERSION) => {}
            Some(v @ 1..VERSION) => return Err(ResumeError::OldVersion(v)),
            _ => return Err(ResumeError::Damaged("unknown version")),
        }
        let ih = d
            .get(b"info-hash")
            .and_then(|v| v.as_bytes())
            .and_then(|b| <[u8; 20]>::try_from(b).ok())
            .ok_or(ResumeError::Damaged("info-hash"))?;
        if ih != info_hash.0 {
            return Err(ResumeError::OtherTorrent);
        }
        let bits = d
            .get(b"pieces")
            .and_then(|v| v.as_bytes())
            .ok_or(ResumeError::Damaged("pieces"))?;
        let have = Bitfield::from_bytes(bits, num_pieces).map_err(|_| ResumeError::Mismatch {
            got: bits.len() as u64 * 8,
            want: u64::from(num_pieces),
        })?;
        let list = |key: &'static str| {
            d.get(key.as_bytes())
                .and_then(|v| v.as_list())
                .ok_or(ResumeError::Damaged(key))
        };
        let sizes = list("file-sizes")?;
        let mtimes = list("file-mtimes")?;
        if let Some(list) = [sizes, mtimes].into_iter().find(|l| l.len() != num_files) {
            return Err(ResumeError::Mismatch {
                got: list.len() as u64,
                want: num_files as u64,
            });
        }
        let files = sizes
            .iter()
            .zip(mtimes)
            .map(|(s, m)| {
                let size = s.as_int().and_then(|i| u64::try_from(i).ok())?;
                let mtime_ns = match (m.as_int(), m.as_bytes()) {
                    (Some(t), _) => Some(t),
                    (None, Some(b"")) => None,
                    _ => return None,
                };
                Some(FileStamp { size, mtime_ns })
            })
            .collect::<Option<Vec<FileStamp>>>()
            .ok_or(ResumeError::Damaged("file-sizes/file-mtimes"))?;
        Ok(Self {
            info_hash: *info_hash,
            have,
            files,
        })
    }

    /// Compare with the files on disk now. They only grow while we
    /// download; one that shrank or vanished was changed by someone else.
    pub fn check_disk(&self, now: &[FileStamp]) -> DiskCheck {
        if now.len() != self.files.len()
            || now.iter().zip(&self.files).any(|(n, t)| n.size < t.size)
        {
            return DiskCheck::Untrusted;
        }
        let changed = now
            .iter()
            .zip(&self.files)
            .enumerate()
            .filter(|(_, (n, t))| n != t)
            .map(|(i, _)| i)
            .collect();
        DiskCheck::Trusted { changed }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_atomic(path, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestone_core::PieceIndex;

    #[test]
    fn roundtrip_and_validation() {
        let ih = InfoHash([3; 20]);
        let mut have = Bitfield::new(10);
        have.set(PieceIndex(2));
        have.set(PieceIndex(9));
        let r = ResumeData {
            info_hash: ih,
            have,
            files: vec![
                FileStamp {
                    size: 100,
                    mtime_ns: Some(-5),
                },
                FileStamp::MISSING,
            ],
        };
        let bytes = r.encode();
        assert_eq!(ResumeData::decode(&bytes, &ih, 10, 2), Ok(r.clone()));
        assert_eq!(
            ResumeData::decode(&bytes, &InfoHash([4; 20]), 10, 2),
            Err(ResumeError::OtherTorrent)
        );
        assert!(matches!(
            ResumeData::decode(&bytes, &ih, 20, 2),
            Err(ResumeError::Mismatch { .. })
        ));
        assert!(matches!(
            ResumeData::decode(&bytes, &ih, 10, 3),
            Err(ResumeError::Mismatch { .. })
        ));
        assert_eq!(
            ResumeData::decode(&bytes[..bytes.len() - 1], &ih, 10, 2),
            Err(ResumeError::Damaged("not bencode"))
        );
        let at = |size, t| FileStamp {
            size,
            mtime_ns: Some(t),
        };
        let same = [at(100, -5), FileStamp::MISSING];
        assert_eq!(r.check_disk(&same), DiskCheck::Trusted { changed: vec![] });
        // Touched, grown, or created since: hashed again.
        assert_eq!(
            r.check_disk(&[at(100, 7), at(5, 9)]),
            DiskCheck::Trusted {
                changed: vec![0, 1]
            }
        );
        assert_eq!(
            r.check_disk(&[at(99, -5), FileStamp::MISSING]),
            DiskCheck::Untrusted
        );
        assert_eq!(r.check_disk(&same[..1]), DiskCheck::Untrusted);
        // A time too recent to vouch for is not recorded.
        let now = SystemTime::now();
        let fresh = FileStamp {
            size: 9,
            mtime_ns: Some(nanos(now) - 1_000),
        };
        assert_eq!(fresh.vouched_at(now).mtime_ns, None);
        let old = FileStamp {
            size: 9,
            mtime_ns: Some(nanos(now - Duration::from_secs(3))),
        };
        assert_eq!(old.vouched_at(now), old);
        // A version 1 file (no times) is not trusted: a recheck follows.
        let mut v1 = bytes.clone();
        let at = v1.windows(12).position(|w| w == b"7:versioni2e").unwrap();
        v1[at + 10] = b'1';
        assert_eq!(
            ResumeData::decode(&v1, &ih, 10, 2),
            Err(ResumeError::OldVersion(1))
        );

        let dir = tempfile::tempdir().unwrap();
        let p = path_for(dir.path(), &ih);
        r.save(&p).unwrap();
        assert_eq!(
            ResumeData::decode(&std::fs::read(&p).unwrap(), &ih, 10, 2),
            Ok(r)
        );
    }
}
