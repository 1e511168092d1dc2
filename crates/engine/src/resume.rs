//! Resume data: which pieces are verified on disk, so a restart (even after
//! `kill -9`) does not download them again. Written atomically; a file that
//! is unreadable, for another torrent, or disagrees with the files on disk
//! is not trusted (the caller rechecks instead).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lodestone_bencode::{decode, OwnedValue as V};
use lodestone_core::{Bitfield, InfoHash};

use crate::fsutil::write_atomic;

const VERSION: i64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeData {
    pub info_hash: InfoHash,
    pub have: Bitfield,
    /// Size of each file when the resume data was written.
    pub file_sizes: Vec<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error("resume file is damaged: {0}")]
    Damaged(&'static str),
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
            V::List(self.file_sizes.iter().map(|&s| V::Int(s as i64)).collect()),
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
        if d.get(b"version").and_then(|v| v.as_int()) != Some(VERSION) {
            return Err(ResumeError::Damaged("unknown version"));
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
        let sizes = d
            .get(b"file-sizes")
            .and_then(|v| v.as_list())
            .ok_or(ResumeError::Damaged("file-sizes"))?;
        let file_sizes = sizes
            .iter()
            .map(|s| s.as_int().and_then(|i| u64::try_from(i).ok()))
            .collect::<Option<Vec<u64>>>()
            .ok_or(ResumeError::Damaged("file-sizes"))?;
        if file_sizes.len() != num_files {
            return Err(ResumeError::Mismatch {
                got: file_sizes.len() as u64,
                want: num_files as u64,
            });
        }
        Ok(Self {
            info_hash: *info_hash,
            have,
            file_sizes,
        })
    }

    /// The files on disk still hold at least what they held when this was
    /// written (they only grow while we download; shrinking or vanishing
    /// means someone else changed them).
    pub fn matches_disk(&self, current_sizes: &[u64]) -> bool {
        current_sizes.len() == self.file_sizes.len()
            && current_sizes
                .iter()
                .zip(&self.file_sizes)
                .all(|(now, then)| now >= then)
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
            file_sizes: vec![100, 0],
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
        assert!(r.matches_disk(&[100, 5]));
        assert!(!r.matches_disk(&[99, 0]));
        assert!(!r.matches_disk(&[100]));

        let dir = tempfile::tempdir().unwrap();
        let p = path_for(dir.path(), &ih);
        r.save(&p).unwrap();
        assert_eq!(
            ResumeData::decode(&std::fs::read(&p).unwrap(), &ih, 10, 2),
            Ok(r)
        );
    }
}
