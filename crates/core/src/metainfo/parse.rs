use lodestone_bencode::{DecodeOptions, Decoder, Dict, Value};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::{
    FileAttributes, FileEntry, Info, Metainfo, MetainfoError as E, TorrentVersion,
    MAX_PIECE_LENGTH, MAX_TORRENT_BYTES,
};
use crate::layout::Layout;
use crate::sanitize::{self, Fix, PathFix};
use crate::{InfoHash, InfoHashV2, InfoHashes};

fn options() -> DecodeOptions {
    DecodeOptions {
        // A file tree nests one level per directory; leave room for deep trees.
        max_depth: 128,
        max_values: 8_000_000,
        strict: true,
    }
}

pub(super) fn metainfo(bytes: &[u8]) -> Result<Metainfo, E> {
    if bytes.len() > MAX_TORRENT_BYTES {
        return Err(E::TooLarge(bytes.len()));
    }
    let root = Decoder::new(bytes, options()).decode_all()?;
    let top = dict(&root, "torrent")?;
    let info_value = top.get(b"info").ok_or(E::MissingKey("info"))?;
    let mut m = from_info(info_value)?;

    m.trackers = trackers(top)?;
    m.web_seeds = web_seeds(top)?;
    m.dht_nodes = dht_nodes(top)?;
    m.comment =
        opt_text(top, b"comment.utf-8", "comment.utf-8")?.or(opt_text(top, b"comment", "comment")?);
    m.created_by = opt_text(top, b"created by", "created by")?;
    m.creation_date = opt_int(top, b"creation date", "creation date")?;
    Ok(m)
}

pub(super) fn info_only(bytes: &[u8]) -> Result<Metainfo, E> {
    if bytes.len() > MAX_TORRENT_BYTES {
        return Err(E::TooLarge(bytes.len()));
    }
    let v = Decoder::new(bytes, options()).decode_all()?;
    from_info(&v)
}

fn from_info(value: &Value<'_>) -> Result<Metainfo, E> {
    let d = dict(value, "info")?;
    let raw = value.raw();

    let mut fixes = Vec::new();
    let name_raw = match d.get(b"name.utf-8") {
        Some(v) => bytes(v, "name.utf-8")?,
        None => req_bytes(d, b"name", "name")?,
    };
    let name = sanitize::component(name_raw, &mut fixes).unwrap_or_else(|| "_".to_owned());
    let mut path_fixes = Vec::new();
    if !fixes.is_empty() {
        path_fixes.push(PathFix {
            file_index: 0,
            original: String::from_utf8_lossy(name_raw).into_owned(),
            sanitized: name.clone(),
            fixes,
        });
    }

    let piece_length = req_int(d, b"piece length", "piece length")?;
    let piece_length = u32::try_from(piece_length)
        .ok()
        .filter(|&p| p > 0 && p <= MAX_PIECE_LENGTH)
        .ok_or_else(|| {
            E::invalid(
                "piece length",
                format!("{piece_length} is not between 1 and {MAX_PIECE_LENGTH}"),
            )
        })?;

    let private = opt_int(d, b"private", "private")? == Some(1);
    let meta_version = opt_int(d, b"meta version", "meta version")?;
    let has_v1 = d.contains_key(b"pieces");
    let file_tree = d.get(b"file tree");
    let version = match (meta_version, has_v1) {
        (None, true) => TorrentVersion::V1,
        (None, false) => return Err(E::MissingKey("pieces")),
        (Some(2), has_v1) => {
            if file_tree.is_none() {
                return Err(E::MissingKey("file tree"));
            }
            if has_v1 {
                TorrentVersion::Hybrid
            } else {
                TorrentVersion::V2
            }
        }
        (Some(v), _) => {
            return Err(E::invalid(
                "meta version",
                format!("version {v} is not supported"),
            ))
        }
    };
    if version != TorrentVersion::V1 && (!piece_length.is_power_of_two() || piece_length < 16384) {
        return Err(E::invalid(
            "piece length",
            format!("v2 needs a power of two of at least 16 KiB, got {piece_length}"),
        ));
    }

    let v2_files = match file_tree {
        Some(t) => Some(v2_file_tree(t)?),
        None => None,
    };

    let (raw_files, multi_file) = if has_v1 {
        v1_files(d)?
    } else {
        v2_entries(v2_files.as_deref().unwrap_or_default(), name_raw)
    };

    if let (TorrentVersion::Hybrid, Some(tree)) = (version, &v2_files) {
        check_hybrid(&raw_files, tree, multi_file, name_raw)?;
    }

    // Sanitise paths (below the sanitised name) and record what changed.
    let mut file_fixes: Vec<Vec<Fix>> = vec![Vec::new(); raw_files.len()];
    let mut paths: Vec<Vec<String>> = Vec::with_capacity(raw_files.len());
    for ((raw, _), fx) in raw_files.iter().zip(file_fixes.iter_mut()) {
        let mut p = vec![name.clone()];
        if multi_file {
            p.extend(sanitize::path(raw.iter().copied(), fx));
        }
        paths.push(p);
    }
    let skip: Vec<bool> = raw_files.iter().map(|(_, f)| f.attributes.pad).collect();
    sanitize::dedupe(&mut paths, &skip, &mut file_fixes);
    let mut files = Vec::with_capacity(raw_files.len());
    for (i, (((raw, mut f), p), fx)) in raw_files.into_iter().zip(paths).zip(file_fixes).enumerate()
    {
        f.path = p;
        if !fx.is_empty() {
            let original: Vec<String> = std::iter::once(String::from_utf8_lossy(name_raw))
                .chain(raw.iter().map(|c| String::from_utf8_lossy(c)))
                .map(|c| c.into_owned())
                .collect();
            path_fixes.push(PathFix {
                file_index: i,
                original: original.join("/"),
                sanitized: f.display_path(),
                fixes: fx,
            });
        }
        files.push(f);
    }

    let lengths = files.iter().map(|f| f.length);
    let layout = if has_v1 {
        Layout::contiguous(piece_length, lengths)?
    } else {
        Layout::piece_aligned(piece_length, lengths)?
    };

    let pieces = if has_v1 {
        let p = req_bytes(d, b"pieces", "pieces")?;
        if p.len() % 20 != 0 {
            return Err(E::invalid(
                "pieces",
                format!("length {} is not a multiple of 20", p.len()),
            ));
        }
        let expected = layout.num_pieces() as usize;
        if p.len() / 20 != expected {
            return Err(E::invalid(
                "pieces",
                format!(
                    "{} hashes for {} bytes in {}-byte pieces, which need {expected}",
                    p.len() / 20,
                    layout.total_length(),
                    piece_length
                ),
            ));
        }
        p.to_vec()
    } else {
        Vec::new()
    };

    let v1 = InfoHash(Sha1::digest(raw).into());
    let v2 = InfoHashV2(Sha256::digest(raw).into());
    let info_hashes = match version {
        TorrentVersion::V1 => InfoHashes::V1(v1),
        TorrentVersion::V2 => InfoHashes::V2(v2),
        TorrentVersion::Hybrid => InfoHashes::Hybrid(v1, v2),
    };

    Ok(Metainfo {
        info: Info {
            name,
            piece_length,
            pieces,
            files,
            private,
            version,
            multi_file,
            layout,
        },
        info_bytes: raw.to_vec(),
        info_hashes,
        trackers: Vec::new(),
        web_seeds: Vec::new(),
        dht_nodes: Vec::new(),
        comment: None,
        created_by: None,
        creation_date: None,
        path_fixes,
    })
}

/// A file with its raw path below the torrent's name (empty for the
/// single-file form); `FileEntry::path` is filled in after sanitising.
type RawFile<'a> = (Vec<&'a [u8]>, FileEntry);

fn entry(length: u64, attributes: FileAttributes) -> FileEntry {
    FileEntry {
        path: Vec::new(),
        length,
        attributes,
        symlink_target: None,
        pieces_root: None,
    }
}

/// Files of a v1 (or hybrid) info dict.
fn v1_files<'a>(d: &Dict<'a>) -> Result<(Vec<RawFile<'a>>, bool), E> {
    match (d.get(b"length"), d.get(b"files")) {
        (Some(_), Some(_)) => Err(E::invalid(
            "info",
            "has both 'length' (single file) and 'files' (multi-file)",
        )),
        (None, None) => Err(E::MissingKey("length")),
        (Some(len), None) => {
            let length = length(len, "length")?;
            Ok((vec![(Vec::new(), entry(length, attributes(d)?))], false))
        }
        (None, Some(files)) => {
            let list = files.as_list().ok_or(E::WrongType {
                key: "files",
                expected: "list",
                found: files.type_name(),
            })?;
            let mut out = Vec::with_capacity(list.len());
            for f in list {
                let fd = dict(f, "files")?;
                let length = length(fd.get(b"length").ok_or(E::MissingKey("length"))?, "length")?;
                let path_value = match fd.get(b"path.utf-8") {
                    Some(p) => p,
                    None => fd.get(b"path").ok_or(E::MissingKey("path"))?,
                };
                let path = path_list(path_value, "path")?;
                let mut f = entry(length, attributes(fd)?);
                if f.attributes.symlink {
                    let target = fd
                        .get(b"symlink path")
                        .ok_or(E::MissingKey("symlink path"))?;
                    let raw = path_list(target, "symlink path")?;
                    let mut ignored = Vec::new();
                    f.symlink_target = Some(sanitize::path(raw, &mut ignored));
                }
                out.push((path, f));
            }
            Ok((out, true))
        }
    }
}

/// A path as a list of raw components.
fn path_list<'a>(v: &Value<'a>, key: &'static str) -> Result<Vec<&'a [u8]>, E> {
    let list = v.as_list().ok_or(E::WrongType {
        key,
        expected: "list",
        found: v.type_name(),
    })?;
    list.iter().map(|c| bytes(c, key)).collect()
}

/// Keep valid UTF-8; map invalid bytes through lossy decoding (the
/// sanitiser will see U+FFFD and the file is still reachable).
fn lossless_or_lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn attributes(d: &Dict<'_>) -> Result<FileAttributes, E> {
    let Some(v) = d.get(b"attr") else {
        return Ok(FileAttributes::default());
    };
    let a = bytes(v, "attr")?;
    Ok(FileAttributes {
        pad: a.contains(&b'p'),
        executable: a.contains(&b'x'),
        hidden: a.contains(&b'h'),
        symlink: a.contains(&b'l'),
    })
}

/// A v2 file tree flattened to (path, length, pieces root), in tree order.
type TreeFile<'a> = (Vec<&'a [u8]>, u64, Option<[u8; 32]>);

fn v2_file_tree<'a>(tree: &Value<'a>) -> Result<Vec<TreeFile<'a>>, E> {
    let mut out = Vec::new();
    let mut stack: Vec<&'a [u8]> = Vec::new();
    walk_tree(tree, &mut stack, &mut out)?;
    if out.is_empty() {
        return Err(E::invalid("file tree", "has no files"));
    }
    Ok(out)
}

fn walk_tree<'a>(
    node: &Value<'a>,
    path: &mut Vec<&'a [u8]>,
    out: &mut Vec<TreeFile<'a>>,
) -> Result<(), E> {
    let d = dict(node, "file tree")?;
    for (key, child) in d.iter() {
        if key.is_empty() {
            // A leaf: {"": {length, pieces root}}.
            if path.is_empty() {
                return Err(E::invalid("file tree", "a file with no name"));
            }
            let leaf = dict(child, "file tree")?;
            let len = length(
                leaf.get(b"length").ok_or(E::MissingKey("length"))?,
                "length",
            )?;
            let root = match leaf.get(b"pieces root") {
                Some(r) => Some(
                    <[u8; 32]>::try_from(bytes(r, "pieces root")?)
                        .map_err(|_| E::invalid("pieces root", "not 32 bytes"))?,
                ),
                None if len > 0 => return Err(E::MissingKey("pieces root")),
                None => None,
            };
            out.push((path.clone(), len, root));
        } else {
            path.push(key);
            walk_tree(child, path, out)?;
            path.pop();
        }
    }
    Ok(())
}

fn v2_entries<'a>(tree: &[TreeFile<'a>], name: &[u8]) -> (Vec<RawFile<'a>>, bool) {
    // A single file whose name is the torrent's name is the single-file form.
    let single = tree.len() == 1 && tree[0].0.len() == 1 && tree[0].0[0] == name;
    let files = tree
        .iter()
        .map(|(p, len, root)| {
            let mut f = entry(*len, FileAttributes::default());
            f.pieces_root = *root;
            (if single { Vec::new() } else { p.clone() }, f)
        })
        .collect();
    (files, !single)
}

/// BEP 52: a hybrid torrent's v1 files (less pad files) must be the v2 files.
fn check_hybrid(
    v1: &[RawFile<'_>],
    tree: &[TreeFile<'_>],
    multi_file: bool,
    name: &[u8],
) -> Result<(), E> {
    let real: Vec<&RawFile<'_>> = v1.iter().filter(|(_, f)| !f.attributes.pad).collect();
    let mismatch = || {
        E::invalid(
            "file tree",
            "v1 and v2 file lists of a hybrid torrent differ",
        )
    };
    if real.len() != tree.len() {
        return Err(mismatch());
    }
    for ((path, f), (p, len, _)) in real.iter().zip(tree) {
        let same_path = if multi_file {
            path == p
        } else {
            p.len() == 1 && p[0] == name
        };
        if !same_path || f.length != *len {
            return Err(mismatch());
        }
    }
    Ok(())
}

fn trackers(top: &Dict<'_>) -> Result<Vec<Vec<String>>, E> {
    let mut tiers = Vec::new();
    if let Some(list) = top.get(b"announce-list") {
        let list = list.as_list().ok_or(E::WrongType {
            key: "announce-list",
            expected: "list",
            found: list.type_name(),
        })?;
        for tier in list {
            let urls = tier.as_list().ok_or(E::WrongType {
                key: "announce-list",
                expected: "list of lists",
                found: tier.type_name(),
            })?;
            let tier: Vec<String> = urls
                .iter()
                .filter_map(|u| u.as_str())
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if !tier.is_empty() {
                tiers.push(tier);
            }
        }
    }
    // BEP 12: with an announce-list, `announce` is ignored.
    if tiers.is_empty() {
        if let Some(a) = opt_text(top, b"announce", "announce")? {
            if !a.trim().is_empty() {
                tiers.push(vec![a.trim().to_owned()]);
            }
        }
    }
    Ok(tiers)
}

fn web_seeds(top: &Dict<'_>) -> Result<Vec<String>, E> {
    match top.get(b"url-list") {
        None => Ok(Vec::new()),
        Some(v) => {
            if let Some(s) = v.as_str() {
                return Ok(if s.is_empty() {
                    vec![]
                } else {
                    vec![s.to_owned()]
                });
            }
            let list = v.as_list().ok_or(E::WrongType {
                key: "url-list",
                expected: "string or list",
                found: v.type_name(),
            })?;
            Ok(list
                .iter()
                .filter_map(|u| u.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        }
    }
}

fn dht_nodes(top: &Dict<'_>) -> Result<Vec<(String, u16)>, E> {
    let Some(v) = top.get(b"nodes") else {
        return Ok(Vec::new());
    };
    let list = v.as_list().ok_or(E::WrongType {
        key: "nodes",
        expected: "list",
        found: v.type_name(),
    })?;
    // Entries that are not [host, port] are skipped, as libtorrent does.
    Ok(list
        .iter()
        .filter_map(|n| {
            let pair = n.as_list()?;
            let host = pair.first()?.as_str()?;
            let port = u16::try_from(pair.get(1)?.as_int()?).ok()?;
            (port != 0 && !host.is_empty()).then(|| (host.to_owned(), port))
        })
        .collect())
}

fn dict<'v, 'a>(v: &'v Value<'a>, key: &'static str) -> Result<&'v Dict<'a>, E> {
    v.as_dict().ok_or(E::WrongType {
        key,
        expected: "dictionary",
        found: v.type_name(),
    })
}

fn bytes<'a>(v: &Value<'a>, key: &'static str) -> Result<&'a [u8], E> {
    v.as_bytes().ok_or(E::WrongType {
        key,
        expected: "string",
        found: v.type_name(),
    })
}

fn length(v: &Value<'_>, key: &'static str) -> Result<u64, E> {
    let i = v.as_int().ok_or(E::WrongType {
        key,
        expected: "integer",
        found: v.type_name(),
    })?;
    u64::try_from(i).map_err(|_| E::invalid(key, format!("{i} is negative")))
}

fn req_bytes<'a>(d: &Dict<'a>, k: &[u8], key: &'static str) -> Result<&'a [u8], E> {
    bytes(d.get(k).ok_or(E::MissingKey(key))?, key)
}

fn req_int(d: &Dict<'_>, k: &[u8], key: &'static str) -> Result<i64, E> {
    opt_int(d, k, key)?.ok_or(E::MissingKey(key))
}

fn opt_int(d: &Dict<'_>, k: &[u8], key: &'static str) -> Result<Option<i64>, E> {
    d.get(k)
        .map(|v| {
            v.as_int().ok_or(E::WrongType {
                key,
                expected: "integer",
                found: v.type_name(),
            })
        })
        .transpose()
}

fn opt_text(d: &Dict<'_>, k: &[u8], key: &'static str) -> Result<Option<String>, E> {
    d.get(k)
        .map(|v| bytes(v, key).map(lossless_or_lossy))
        .transpose()
}
