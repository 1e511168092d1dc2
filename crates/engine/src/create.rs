//! Making .torrent files (v1) from files on disk, hashing on every core.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lodestone_bencode::OwnedValue as V;
use lodestone_core::{Layout, Metainfo, PieceIndex};
use sha1::{Digest, Sha1};

/// Smallest and largest piece sizes chosen automatically.
const MIN_AUTO_PIECE: u32 = 16 << 10;
const MAX_AUTO_PIECE: u32 = 16 << 20;
/// Aim for at most this many pieces (about 40 KiB of hashes, as libtorrent does).
const TARGET_PIECES: u64 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{0}: file name is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("{0}: no files to put in a torrent (empty directory or only empty files)")]
    Empty(PathBuf),
    #[error("piece size {0} is not a power of two of at least 16 KiB")]
    BadPieceSize(u64),
    #[error("{0}: file changed size while it was being hashed")]
    Changed(PathBuf),
    #[error("layout: {0}")]
    Layout(lodestone_core::layout::LayoutError),
    #[error("the torrent we made does not parse back: {0}")]
    Invalid(lodestone_core::MetainfoError),
}

impl From<lodestone_core::layout::LayoutError> for CreateError {
    fn from(e: lodestone_core::layout::LayoutError) -> Self {
        Self::Layout(e)
    }
}

impl From<lodestone_core::MetainfoError> for CreateError {
    fn from(e: lodestone_core::MetainfoError) -> Self {
        Self::Invalid(e)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CreateError + '_ {
    move |error| CreateError::Io {
        path: path.to_owned(),
        error,
    }
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Piece size in bytes; chosen from the total size when `None`.
    pub piece_length: Option<u64>,
    pub private: bool,
    /// Each tracker becomes its own tier (as mktorrent and libtorrent do).
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    /// Seconds since the epoch; `None` leaves the key out (reproducible output).
    pub creation_date: Option<i64>,
    /// Hashing threads; 0 means one per core.
    pub threads: usize,
}

/// A file found on disk, relative to the torrent root.
#[derive(Debug, Clone)]
struct SourceFile {
    disk_path: PathBuf,
    components: Vec<String>,
    length: u64,
    executable: bool,
}

/// The piece size libtorrent-style tools would pick: a power of two from
/// 16 KiB to 16 MiB giving at most about 2048 pieces.
pub fn auto_piece_length(total: u64) -> u32 {
    let mut p = MIN_AUTO_PIECE;
    while p < MAX_AUTO_PIECE && total.div_ceil(u64::from(p)) > TARGET_PIECES {
        p *= 2;
    }
    p
}

/// Shared progress of a running hash: bytes done, and a cancel flag.
#[derive(Debug, Default)]
pub struct Progress {
    pub hashed: AtomicU64,
    pub cancel: AtomicBool,
}

/// Walk `root` and hash it into a .torrent. Returns the encoded file.
pub fn create_torrent(
    root: &Path,
    opts: &CreateOptions,
    progress: &Progress,
) -> Result<Vec<u8>, CreateError> {
    let meta = std::fs::metadata(root).map_err(io_err(root))?;
    // `.` or `dir/..` have no file name of their own: use the real directory's.
    let name_os = match root.file_name() {
        Some(n) => n.to_owned(),
        None => root
            .canonicalize()
            .map_err(io_err(root))?
            .file_name()
            .map(|n| n.to_owned())
            .ok_or_else(|| CreateError::Empty(root.to_owned()))?,
    };
    let name = name_os
        .into_string()
        .map_err(|_| CreateError::NotUtf8(root.to_owned()))?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        walk(root, &mut Vec::new(), &mut files)?;
        files.sort_by(|a, b| a.components.cmp(&b.components));
        files
    } else {
        vec![SourceFile {
            disk_path: root.to_owned(),
            components: Vec::new(),
            length: meta.len(),
            executable: meta.permissions().mode() & 0o100 != 0,
        }]
    };
    let total: u64 = files.iter().map(|f| f.length).sum();
    if total == 0 {
        return Err(CreateError::Empty(root.to_owned()));
    }
    let piece_length = match opts.piece_length {
        None => auto_piece_length(total),
        Some(p) if p >= 16384 && p.is_power_of_two() && p <= u64::from(u32::MAX) => p as u32,
        Some(p) => return Err(CreateError::BadPieceSize(p)),
    };
    let layout = Layout::contiguous(piece_length, files.iter().map(|f| f.length))?;
    let pieces = hash_pieces(&files, &layout, opts.threads, progress)?;

    let mut info = BTreeMap::new();
    if meta.is_dir() {
        let list = files
            .iter()
            .map(|f| {
                let mut d = BTreeMap::new();
                if f.executable {
                    d.insert(b"attr".to_vec(), V::str("x"));
                }
                d.insert(b"length".to_vec(), V::Int(f.length as i64));
                d.insert(
                    b"path".to_vec(),
                    V::List(f.components.iter().map(|c| V::str(c)).collect()),
                );
                V::Dict(d)
            })
            .collect();
        info.insert(b"files".to_vec(), V::List(list));
    } else {
        if files[0].executable {
            info.insert(b"attr".to_vec(), V::str("x"));
        }
        info.insert(b"length".to_vec(), V::Int(total as i64));
    }
    info.insert(b"name".to_vec(), V::str(&name));
    info.insert(b"piece length".to_vec(), V::Int(i64::from(piece_length)));
    info.insert(b"pieces".to_vec(), V::Bytes(pieces));
    if opts.private {
        info.insert(b"private".to_vec(), V::Int(1));
    }

    let mut top = BTreeMap::new();
    top.insert(b"info".to_vec(), V::Dict(info));
    if let Some(first) = opts.trackers.first() {
        top.insert(b"announce".to_vec(), V::str(first));
        if opts.trackers.len() > 1 {
            let tiers = opts
                .trackers
                .iter()
                .map(|t| V::List(vec![V::str(t)]))
                .collect();
            top.insert(b"announce-list".to_vec(), V::List(tiers));
        }
    }
    if !opts.web_seeds.is_empty() {
        let list = opts.web_seeds.iter().map(|w| V::str(w)).collect();
        top.insert(b"url-list".to_vec(), V::List(list));
    }
    if let Some(c) = &opts.comment {
        top.insert(b"comment".to_vec(), V::str(c));
    }
    if let Some(c) = &opts.created_by {
        top.insert(b"created by".to_vec(), V::str(c));
    }
    if let Some(d) = opts.creation_date {
        top.insert(b"creation date".to_vec(), V::Int(d));
    }
    let bytes = V::Dict(top).encode();
    // Parse our own output: it must be a torrent we accept unchanged.
    Metainfo::from_bytes(&bytes)?;
    Ok(bytes)
}

fn walk(
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<SourceFile>,
) -> Result<(), CreateError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| CreateError::NotUtf8(path.clone()))?;
        // Symlinks are not followed: they could leave the tree or loop.
        let ft = entry.file_type().map_err(io_err(&path))?;
        if ft.is_dir() {
            prefix.push(name);
            walk(&path, prefix, out)?;
            prefix.pop();
        } else if ft.is_file() {
            let meta = entry.metadata().map_err(io_err(&path))?;
            let mut components = prefix.clone();
            components.push(name);
            out.push(SourceFile {
                disk_path: path,
                components,
                length: meta.len(),
                executable: meta.permissions().mode() & 0o100 != 0,
            });
        }
    }
    Ok(())
}

/// Hash every piece. The pieces are split into one contiguous run per
/// thread, so each thread reads its files sequentially (good read-ahead)
/// and no data crosses threads.
fn hash_pieces(
    files: &[SourceFile],
    layout: &Layout,
    threads: usize,
    progress: &Progress,
) -> Result<Vec<u8>, CreateError> {
    let n = layout.num_pieces();
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    }
    .clamp(1, n.max(1) as usize);
    let mut out = vec![0u8; n as usize * 20];
    let per = (n as usize).div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * 20)
            .enumerate()
            .map(|(t, chunk)| {
                let first = (t * per) as u32;
                s.spawn(move || hash_run(files, layout, first, chunk, progress))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })?;
    Ok(out)
}

fn hash_run(
    files: &[SourceFile],
    layout: &Layout,
    first: u32,
    out: &mut [u8],
    progress: &Progress,
) -> Result<(), CreateError> {
    let mut buf = vec![0u8; layout.piece_length() as usize];
    let mut open: Option<(usize, File)> = None;
    for (i, slot) in out.chunks_mut(20).enumerate() {
        if progress.cancel.load(Ordering::Relaxed) {
            return Err(CreateError::Io {
                path: PathBuf::new(),
                error: io::Error::new(io::ErrorKind::Interrupted, "cancelled"),
            });
        }
        let piece = PieceIndex(first + i as u32);
        let mut filled = 0usize;
        for slice in layout.piece_slices(piece) {
            let f = &files[slice.file_index];
            if open.as_ref().map(|(i, _)| *i) != Some(slice.file_index) {
                let file = File::open(&f.disk_path).map_err(io_err(&f.disk_path))?;
                open = Some((slice.file_index, file));
            }
            let Some((_, file)) = &open else {
                unreachable!("opened above")
            };
            let dst = &mut buf[filled..filled + slice.len as usize];
            read_exact_at(file, dst, slice.offset_in_file).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    CreateError::Changed(f.disk_path.clone())
                } else {
                    io_err(&f.disk_path)(e)
                }
            })?;
            filled += slice.len as usize;
        }
        slot.copy_from_slice(&Sha1::digest(&buf[..filled]));
        progress.hashed.fetch_add(filled as u64, Ordering::Relaxed);
    }
    Ok(())
}

fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn make(dir: &Path, rel: &str, len: usize) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + rel.len()) as u8).collect();
        fs::write(p, data).unwrap();
    }

    #[test]
    fn auto_piece_sizes() {
        assert_eq!(auto_piece_length(1), 16384);
        assert_eq!(auto_piece_length(32 << 20), 16384);
        assert_eq!(auto_piece_length((32 << 20) + 1), 32768);
        assert_eq!(auto_piece_length(1 << 30), 512 << 10);
        assert_eq!(auto_piece_length(1 << 50), 16 << 20);
    }

    #[test]
    fn multi_file_torrent_verifies_against_its_content() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pack");
        make(&root, "b/z.bin", 50_000);
        make(&root, "a.txt", 10);
        make(&root, "b/empty", 0);
        make(&root, "c.bin", 16384 * 3);
        for threads in [1, 2, 3, 7] {
            let opts = CreateOptions {
                piece_length: Some(16384),
                threads,
                ..Default::default()
            };
            let bytes = create_torrent(&root, &opts, &Progress::default()).unwrap();
            let m = Metainfo::from_bytes(&bytes).unwrap();
            let paths: Vec<String> = m.info.files.iter().map(|f| f.display_path()).collect();
            assert_eq!(
                paths,
                ["pack/a.txt", "pack/b/empty", "pack/b/z.bin", "pack/c.bin"]
            );
            // Check each piece hash against the concatenated content.
            let mut all = Vec::new();
            for p in ["a.txt", "b/empty", "b/z.bin", "c.bin"] {
                all.extend(fs::read(root.join(p)).unwrap());
            }
            for (i, chunk) in all.chunks(16384).enumerate() {
                let want: [u8; 20] = Sha1::digest(chunk).into();
                assert_eq!(
                    m.info.piece_hash(PieceIndex(i as u32)),
                    Some(want),
                    "piece {i}"
                );
            }
            assert_eq!(m.info.num_pieces() as usize, all.len().div_ceil(16384));
        }
    }

    #[test]
    fn single_file_with_trackers_and_seeds() {
        let tmp = tempfile::tempdir().unwrap();
        make(tmp.path(), "one.bin", 70_000);
        let opts = CreateOptions {
            private: true,
            trackers: vec![
                "http://a.example/announce".into(),
                "udp://b.example:1".into(),
            ],
            web_seeds: vec!["http://ws.example/one.bin".into()],
            comment: Some("c".into()),
            creation_date: Some(5),
            ..Default::default()
        };
        let bytes =
            create_torrent(&tmp.path().join("one.bin"), &opts, &Progress::default()).unwrap();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert!(m.info.private);
        assert!(!m.info.multi_file);
        assert_eq!(m.trackers.len(), 2);
        assert_eq!(m.web_seeds, ["http://ws.example/one.bin"]);
        assert_eq!(m.creation_date, Some(5));
        assert_eq!(m.info.total_length(), 70_000);
    }

    #[test]
    fn refuses_empty_and_bad_piece_sizes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("e");
        make(&root, "x", 0);
        let e = create_torrent(&root, &CreateOptions::default(), &Progress::default()).unwrap_err();
        assert!(matches!(e, CreateError::Empty(_)));
        make(&root, "y", 5);
        let opts = CreateOptions {
            piece_length: Some(1000),
            ..Default::default()
        };
        let e = create_torrent(&root, &opts, &Progress::default()).unwrap_err();
        assert!(matches!(e, CreateError::BadPieceSize(1000)));
        let e =
            create_torrent(&tmp.path().join("missing"), &opts, &Progress::default()).unwrap_err();
        assert!(e.to_string().contains("missing"));
    }
}
