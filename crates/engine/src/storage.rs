//! The files of one torrent on disk: positional reads and writes of pieces,
//! a bounded cache of open handles, and hashing what is already there.
//!
//! Files are created sparse when first written (no preallocation); empty
//! files are created up front; pad files (BEP 47) are never written and read
//! back as zeros.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::resume::FileStamp;
use bytes::Bytes;
use lodestone_core::{Bitfield, Layout, Metainfo, PieceIndex};
use sha1::{Digest, Sha1};

/// Open file handles kept at once (a torrent of 10 000 files must not hit
/// the process's descriptor limit).
pub const MAX_OPEN_FILES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    #[error("cannot {op} {path}: {error}")]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("piece {0} is out of range")]
    BadPiece(u32),
}

impl StorageError {
    fn io(op: &'static str, path: &Path, error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::StorageFull || error.raw_os_error() == Some(28) {
            Self::DiskFull {
                path: path.to_owned(),
            }
        } else {
            Self::Io {
                op,
                path: path.to_owned(),
                error,
            }
        }
    }
}

#[derive(Debug)]
struct StorageFile {
    path: PathBuf,
    length: u64,
    pad: bool,
}

/// A small LRU of open handles, shared by the hashing threads.
#[derive(Debug, Default)]
struct HandleCache {
    /// Most recently used last.
    open: Vec<(usize, Arc<File>)>,
}

#[derive(Debug)]
pub struct Storage {
    files: Vec<StorageFile>,
    /// Its layout and piece hashes, shared with the torrent (not copied:
    /// a large torrent's hashes are megabytes).
    meta: Arc<Metainfo>,
    handles: Mutex<HandleCache>,
}

impl Storage {
    /// Lay out `meta`'s files under `dir`. Creates directories and empty
    /// files.
    pub fn new(dir: &Path, meta: Arc<Metainfo>) -> Result<Self, StorageError> {
        let info = &meta.info;
        let files: Vec<StorageFile> = info
            .files
            .iter()
            .map(|f| StorageFile {
                path: dir.join(f.relative_path()),
                length: f.length,
                pad: f.attributes.pad,
            })
            .collect();
        for f in files.iter().filter(|f| !f.pad) {
            if let Some(parent) = f.path.parent() {
                fs::create_dir_all(parent).map_err(|e| StorageError::io("create", parent, e))?;
            }
            if f.length == 0 {
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&f.path)
                    .map_err(|e| StorageError::io("create", &f.path, e))?;
            }
        }
        Ok(Self {
            files,
            meta,
            handles: Mutex::new(HandleCache::default()),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.meta.info.layout
    }

    fn handle(&self, index: usize, write: bool) -> Result<Arc<File>, StorageError> {
        let mut cache = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pos) = cache.open.iter().position(|(i, _)| *i == index) {
            let entry = cache.open.remove(pos);
            let f = entry.1.clone();
            cache.open.push(entry);
            return Ok(f);
        }
        let path = &self.files[index].path;
        // Always open read-write so one handle serves both directions;
        // when only reading (seeding from a read-only copy), fall back.
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(write)
            .truncate(false)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if !write && e.kind() == io::ErrorKind::PermissionDenied => {
                File::open(path).map_err(|e| StorageError::io("open", path, e))?
            }
            Err(e) => return Err(StorageError::io("open", path, e)),
        };
        let file = Arc::new(file);
        if cache.open.len() >= MAX_OPEN_FILES {
            cache.open.remove(0);
        }
        cache.open.push((index, file.clone()));
        Ok(file)
    }

    /// Write a whole verified piece given as its blocks in order (slices of
    /// the buffers they were received in): one `pwritev` per file the
    /// piece touches, no copy into a piece buffer first.
    pub fn write_blocks(&self, piece: PieceIndex, blocks: &[Bytes]) -> Result<(), StorageError> {
        let total: usize = blocks.iter().map(|b| b.len()).sum();
        if self.layout().piece_len(piece) != Some(total as u32) || total > u32::MAX as usize {
            return Err(StorageError::BadPiece(piece.0));
        }
        let mut rest = blocks.iter().map(|b| &b[..]);
        let mut current: &[u8] = &[];
        for s in self.layout().piece_slices(piece) {
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut need = s.len as usize;
            while need > 0 {
                if current.is_empty() {
                    current = rest.next().ok_or(StorageError::BadPiece(piece.0))?;
                    continue;
                }
                let (part, after) = current.split_at(need.min(current.len()));
                parts.push(part);
                current = after;
                need -= part.len();
            }
            let f = &self.files[s.file_index];
            if f.pad {
                continue;
            }
            let file = self.handle(s.file_index, true)?;
            write_all_vectored_at(&file, &parts, s.offset_in_file)
                .map_err(|e| StorageError::io("write", &f.path, e))?;
        }
        Ok(())
    }

    /// Read `len` bytes at `begin` of `piece` into `buf`, which ends up
    /// exactly that long. A reused `buf` is not zeroed first: every byte is
    /// overwritten by the read.
    pub fn read(
        &self,
        piece: PieceIndex,
        begin: u32,
        len: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        let range = self
            .layout()
            .piece_range(piece)
            .ok_or(StorageError::BadPiece(piece.0))?;
        let start = range.start + u64::from(begin);
        let end = start + u64::from(len);
        if end > range.end {
            return Err(StorageError::BadPiece(piece.0));
        }
        buf.truncate(len as usize);
        buf.resize(len as usize, 0);
        let mut at = 0usize;
        for s in self.layout().slices(start..end) {
            let dst = &mut buf[at..at + s.len as usize];
            at += s.len as usize;
            let f = &self.files[s.file_index];
            if f.pad {
                dst.fill(0);
                continue;
            }
            self.handle(s.file_index, false)?
                .read_exact_at(dst, s.offset_in_file)
                .map_err(|e| StorageError::io("read", &f.path, e))?;
        }
        Ok(())
    }

    /// The expected SHA-1 of a piece.
    pub fn expected_hash(&self, piece: PieceIndex) -> Option<&[u8]> {
        let i = piece.as_usize() * 20;
        self.meta.info.pieces.get(i..i + 20)
    }

    /// Hash a piece held in memory and compare with the torrent.
    pub fn check(&self, piece: PieceIndex, data: &[u8]) -> bool {
        self.expected_hash(piece)
            .is_some_and(|want| Sha1::digest(data).as_slice() == want)
    }

    /// [`Storage::check`] for a piece given as its blocks in order.
    pub fn check_blocks(&self, piece: PieceIndex, blocks: &[Bytes]) -> bool {
        let mut h = Sha1::new();
        for b in blocks {
            h.update(b);
        }
        self.expected_hash(piece)
            .is_some_and(|want| h.finalize().as_slice() == want)
    }

    /// Which pieces on disk are already complete and correct. Missing or
    /// short files simply make their pieces absent. Runs on `threads` threads.
    pub fn recheck(&self, threads: usize) -> Bitfield {
        let never = AtomicBool::new(false);
        self.recheck_missing(&Bitfield::new(self.layout().num_pieces()), threads, &never)
    }

    /// `known` plus every piece not in it that is complete and correct on
    /// disk: after a crash, the pieces written since the last resume save.
    /// Once `stop` is set, no further piece is read (a torrent removed
    /// while it checks); what was found by then is returned.
    pub fn recheck_missing(&self, known: &Bitfield, threads: usize, stop: &AtomicBool) -> Bitfield {
        let candidates: Vec<PieceIndex> = (0..self.layout().num_pieces())
            .map(PieceIndex)
            .filter(|&p| !known.get(p))
            .collect();
        let threads = threads.clamp(1, candidates.len().max(1));
        let per = candidates.len().div_ceil(threads).max(1);
        let mut have = known.clone();
        let results: Vec<Vec<PieceIndex>> = std::thread::scope(|s| {
            let handles: Vec<_> = candidates
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        let mut good = Vec::new();
                        let mut buf = Vec::new();
                        for &p in chunk {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let len = self.layout().piece_len(p).unwrap_or(0);
                            if self.read(p, 0, len, &mut buf).is_ok() && self.check(p, &buf) {
                                good.push(p);
                            }
                        }
                        good
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for p in results.into_iter().flatten() {
            have.set(p);
        }
        have
    }

    /// Flush written data to the disk (before a resume file claims it).
    pub fn sync(&self) -> Result<(), StorageError> {
        let cache = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        for (i, f) in &cache.open {
            f.sync_data()
                .map_err(|e| StorageError::io("sync", &self.files[*i].path, e))?;
        }
        Ok(())
    }

    /// Each file's size and modification time on disk: the resume file
    /// records these to notice files changed behind our back.
    pub fn file_stamps(&self) -> Vec<FileStamp> {
        self.files
            .iter()
            .map(|f| fs::metadata(&f.path).map_or(FileStamp::MISSING, |m| FileStamp::of(&m)))
            .collect()
    }

    pub fn num_files(&self) -> usize {
        self.files.len()
    }
}

/// Most buffers one `pwritev` takes (Linux's IOV_MAX is 1024).
const MAX_IOV: usize = 512;

/// Write every byte of `parts`, in order, at `offset`: `pwritev` until done.
fn write_all_vectored_at(file: &File, mut parts: &[&[u8]], mut offset: u64) -> io::Result<()> {
    // Bytes of parts[0] already written.
    let mut skip = 0;
    loop {
        // Empty parts never reach the kernel's count: step over them.
        while parts.first().is_some_and(|p| p.len() == skip) {
            parts = &parts[1..];
            skip = 0;
        }
        let Some(first) = parts.first() else {
            return Ok(());
        };
        let iov: Vec<io::IoSlice<'_>> = std::iter::once(&first[skip..])
            .chain(parts[1..].iter().copied())
            .take(MAX_IOV)
            .map(io::IoSlice::new)
            .collect();
        let mut n = match rustix::io::pwritev(file, &iov, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        offset += n as u64;
        while n > 0 {
            let left = parts[0].len() - skip;
            if n >= left {
                n -= left;
                parts = &parts[1..];
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create_torrent, CreateOptions, Progress};
    use lodestone_core::Metainfo;

    fn fixture() -> (tempfile::TempDir, Metainfo) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src/t");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("a"), vec![1u8; 20_000]).unwrap();
        fs::write(src.join("d/empty"), b"").unwrap();
        fs::write(
            src.join("d/b"),
            (0..50_000u32).map(|i| i as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        let opts = CreateOptions {
            piece_length: Some(16384),
            ..Default::default()
        };
        let bytes = create_torrent(&src, &opts, &Progress::default()).unwrap();
        (dir, Metainfo::from_bytes(&bytes).unwrap())
    }

    #[test]
    fn write_read_and_recheck() {
        let (dir, m) = fixture();
        let src = Storage::new(&dir.path().join("src"), Arc::new(m.clone())).unwrap();
        assert!(src.recheck(2).is_full());
        let dst = Storage::new(&dir.path().join("dst"), Arc::new(m.clone())).unwrap();
        // Empty files exist before any data arrives.
        assert!(dir.path().join("dst/t/d/empty").exists());
        assert!(dst.recheck(2).none());
        let mut buf = Vec::new();
        for p in (0..m.info.num_pieces()).map(PieceIndex).rev() {
            let len = m.info.layout.piece_len(p).unwrap();
            src.read(p, 0, len, &mut buf).unwrap();
            assert!(dst.check(p, &buf));
            dst.write_blocks(p, &[Bytes::from(buf.clone())]).unwrap();
        }
        dst.sync().unwrap();
        assert!(dst.recheck(1).is_full());
        for f in ["a", "d/b", "d/empty"] {
            assert_eq!(
                fs::read(dir.path().join("src/t").join(f)).unwrap(),
                fs::read(dir.path().join("dst/t").join(f)).unwrap()
            );
        }
        // A block that straddles files.
        src.read(PieceIndex(1), 3000, 2000, &mut buf).unwrap();
        assert_eq!(buf[..616], vec![1u8; 616][..]);
        assert_eq!(buf[616], 0);
        assert!(src.read(PieceIndex(4), 0, 16384, &mut buf).is_err());
        assert!(!dst.check(PieceIndex(0), &[0u8; 16384]));
    }

    #[test]
    fn pieces_written_from_blocks() {
        let (dir, m) = fixture();
        let src = Storage::new(&dir.path().join("src"), Arc::new(m.clone())).unwrap();
        let dst = Storage::new(&dir.path().join("dst"), Arc::new(m.clone())).unwrap();
        let mut buf = Vec::new();
        for p in (0..m.info.num_pieces()).map(PieceIndex) {
            let len = m.info.layout.piece_len(p).unwrap();
            src.read(p, 0, len, &mut buf).unwrap();
            // Uneven blocks, some across a file boundary, one empty.
            let whole = Bytes::from(buf.clone());
            let cut = (len as usize).min(7000);
            let blocks = [
                whole.slice(..cut / 3),
                whole.slice(cut / 3..cut),
                Bytes::new(),
                whole.slice(cut..),
            ];
            assert!(dst.check_blocks(p, &blocks));
            assert!(!dst.check_blocks(p, &blocks[1..]));
            dst.write_blocks(p, &blocks).unwrap();
            // Short or long data is refused, not written in part.
            assert!(matches!(
                dst.write_blocks(p, &blocks[..1]),
                Err(StorageError::BadPiece(_))
            ));
            let mut long = blocks.to_vec();
            long.push(Bytes::from_static(b"x"));
            assert!(matches!(
                dst.write_blocks(p, &long),
                Err(StorageError::BadPiece(_))
            ));
        }
        dst.sync().unwrap();
        assert!(dst.recheck(1).is_full());
        for f in ["a", "d/b"] {
            assert_eq!(
                fs::read(dir.path().join("src/t").join(f)).unwrap(),
                fs::read(dir.path().join("dst/t").join(f)).unwrap()
            );
        }
    }

    /// BEP 47 pad files read back as zeros, also into a reused buffer
    /// that held other data (reads do not zero it first).
    #[test]
    fn pad_files_read_as_zeros_into_a_dirty_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let b = vec![7u8; 5000];
        let mut content = a.clone();
        content.resize(32_768, 0);
        content.extend(&b);
        let pieces: Vec<u8> = content
            .chunks(16384)
            .flat_map(|c| Sha1::digest(c).to_vec())
            .collect();
        let mut info = b"d5:filesl".to_vec();
        info.extend(b"d6:lengthi20000e4:pathl1:aee");
        info.extend(b"d4:attr1:p6:lengthi12768e4:pathl4:.pad5:12768ee");
        info.extend(b"d6:lengthi5000e4:pathl1:bee");
        info.extend(b"e4:name1:t12:piece lengthi16384e6:pieces");
        info.extend(format!("{}:", pieces.len()).as_bytes());
        info.extend(&pieces);
        info.push(b'e');
        let mut torrent = b"d4:info".to_vec();
        torrent.extend(&info);
        torrent.push(b'e');
        let m = Metainfo::from_bytes(&torrent).unwrap();
        fs::create_dir_all(dir.path().join("t")).unwrap();
        fs::write(dir.path().join("t/a"), &a).unwrap();
        fs::write(dir.path().join("t/b"), &b).unwrap();
        let s = Storage::new(dir.path(), Arc::new(m.clone())).unwrap();
        assert!(!dir.path().join("t/.pad").exists());
        let mut buf = vec![0xffu8; 16384];
        s.read(PieceIndex(1), 0, 16384, &mut buf).unwrap();
        assert_eq!(buf, content[16384..32768]);
        assert!(s.check(PieceIndex(1), &buf));
        assert!(s.recheck(1).is_full());
    }

    #[test]
    fn vectored_writes_past_the_iovec_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let parts: Vec<Vec<u8>> = (0..3 * MAX_IOV).map(|i| vec![i as u8; i % 5]).collect();
        let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        write_all_vectored_at(&file, &slices, 10).unwrap();
        let mut want = vec![0u8; 10];
        want.extend(parts.concat());
        assert_eq!(fs::read(&path).unwrap(), want);
    }

    #[test]
    fn corrupt_and_missing_data_is_found() {
        let (dir, m) = fixture();
        let root = dir.path().join("src");
        let mut b = fs::read(root.join("t/d/b")).unwrap();
        b[40_000] ^= 1;
        fs::write(root.join("t/d/b"), b).unwrap();
        let s = Storage::new(&root, Arc::new(m.clone())).unwrap();
        let have = s.recheck(2);
        // Byte 20 000 + 40 000 lies in piece 3.
        assert!(!have.get(PieceIndex(3)));
        assert_eq!(have.count(), m.info.num_pieces() - 1);
        fs::remove_file(root.join("t/a")).unwrap();
        let s = Storage::new(&root, Arc::new(m.clone())).unwrap();
        assert!(!s.recheck(2).get(PieceIndex(0)));
    }

    #[test]
    fn handle_cache_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("many");
        for i in 0..(MAX_OPEN_FILES * 3) {
            fs::create_dir_all(&src).unwrap();
            fs::write(src.join(format!("{i:04}")), [i as u8; 100]).unwrap();
        }
        let opts = CreateOptions {
            piece_length: Some(16384),
            ..Default::default()
        };
        let bytes = create_torrent(&src, &opts, &Progress::default()).unwrap();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        let s = Storage::new(dir.path(), Arc::new(m.clone())).unwrap();
        assert!(s.recheck(1).is_full());
        assert!(s.handles.lock().unwrap().open.len() <= MAX_OPEN_FILES);
    }
}
