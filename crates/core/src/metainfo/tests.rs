use std::collections::BTreeMap;

use lodestone_bencode::OwnedValue as V;
use sha1::{Digest, Sha1};

use super::*;
use crate::sanitize::Fix;

fn d(entries: Vec<(&str, V)>) -> V {
    V::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn s(x: &str) -> V {
    V::str(x)
}

fn path(parts: &[&[u8]]) -> V {
    V::List(parts.iter().map(|p| V::Bytes(p.to_vec())).collect())
}

fn torrent(info: V, extra: Vec<(&str, V)>) -> Vec<u8> {
    let mut top = vec![("info", info)];
    top.extend(extra);
    d(top).encode()
}

fn single(len: i64, piece: i64) -> V {
    let n = (len + piece - 1) / piece;
    d(vec![
        ("length", V::Int(len)),
        ("name", s("file.bin")),
        ("piece length", V::Int(piece)),
        ("pieces", V::Bytes(vec![0xab; 20 * n as usize])),
    ])
}

#[test]
fn single_file() {
    let bytes = torrent(
        single(40000, 16384),
        vec![
            ("announce", s("http://t.example/a")),
            ("comment", s("hi")),
            ("creation date", V::Int(1_700_000_000)),
        ],
    );
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info.name, "file.bin");
    assert!(!m.info.multi_file);
    assert_eq!(m.info.version, TorrentVersion::V1);
    assert_eq!(m.info.num_pieces(), 3);
    assert_eq!(m.info.total_length(), 40000);
    assert_eq!(m.info.files[0].path, ["file.bin"]);
    assert_eq!(m.trackers, [["http://t.example/a"]]);
    assert_eq!(m.comment.as_deref(), Some("hi"));
    assert_eq!(m.creation_date, Some(1_700_000_000));
    assert_eq!(m.info.piece_hash(PieceIndex(2)), Some([0xab; 20]));
    assert_eq!(m.info.piece_hash(PieceIndex(3)), None);
    assert!(m.path_fixes.is_empty());
}

#[test]
fn infohash_is_sha1_of_the_raw_info_bytes() {
    let bytes = torrent(single(10, 16384), vec![]);
    let m = Metainfo::from_bytes(&bytes).unwrap();
    // Locate the info dict in the file independently of the parser.
    let start = bytes.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    let raw = &bytes[start..bytes.len() - 1];
    assert_eq!(m.info_bytes, raw);
    assert_eq!(
        m.info_hashes.v1().unwrap().0,
        <[u8; 20]>::from(Sha1::digest(raw))
    );
    // The info dict alone parses to the same torrent.
    let again = Metainfo::from_info_bytes(raw).unwrap();
    assert_eq!(again.info, m.info);
    assert_eq!(again.info_hashes, m.info_hashes);
}

fn multi(files: Vec<V>, total: i64, piece: i64) -> V {
    let n = (total + piece - 1) / piece;
    d(vec![
        ("files", V::List(files)),
        ("name", s("dir")),
        ("piece length", V::Int(piece)),
        ("pieces", V::Bytes(vec![1; 20 * n as usize])),
    ])
}

fn file(len: i64, p: &[&[u8]]) -> V {
    d(vec![("length", V::Int(len)), ("path", path(p))])
}

#[test]
fn multi_file_with_empty_file_and_tiers() {
    let info = multi(
        vec![
            file(100, &[b"a.txt"]),
            file(0, &[b"sub", b"empty"]),
            file(20000, &[b"sub", b"b.bin"]),
        ],
        20100,
        16384,
    );
    let bytes = torrent(
        info,
        vec![
            ("announce", s("http://ignored.example/")),
            (
                "announce-list",
                V::List(vec![
                    V::List(vec![s("http://a.example/"), s("udp://b.example:80")]),
                    V::List(vec![]),
                    V::List(vec![s("http://c.example/")]),
                ]),
            ),
            ("url-list", V::List(vec![s("http://ws.example/")])),
            (
                "nodes",
                V::List(vec![
                    V::List(vec![s("127.0.0.1"), V::Int(6881)]),
                    V::List(vec![s("bad")]),
                ]),
            ),
        ],
    );
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert!(m.info.multi_file);
    let paths: Vec<String> = m.info.files.iter().map(|f| f.display_path()).collect();
    assert_eq!(paths, ["dir/a.txt", "dir/sub/empty", "dir/sub/b.bin"]);
    assert_eq!(
        m.trackers,
        vec![
            vec![
                "http://a.example/".to_owned(),
                "udp://b.example:80".to_owned()
            ],
            vec!["http://c.example/".to_owned()]
        ]
    );
    assert_eq!(m.web_seeds, ["http://ws.example/"]);
    assert_eq!(m.dht_nodes, [("127.0.0.1".to_owned(), 6881)]);
    assert_eq!(m.info.layout.file_range(2), Some(100..20100));
}

#[test]
fn hostile_paths_are_sanitised_and_reported() {
    let info = multi(
        vec![
            file(1, &[b"..", b"..", b"etc", b"passwd"]),
            file(1, &[b"/abs"]),
            file(1, &[b"nul\0byte"]),
            file(1, &[b"CON"]),
            file(1, &[b"ok"]),
            file(1, &[b"ok"]),
        ],
        6,
        16384,
    );
    let m = Metainfo::from_bytes(&torrent(info, vec![])).unwrap();
    let paths: Vec<String> = m.info.files.iter().map(|f| f.display_path()).collect();
    assert_eq!(
        paths,
        [
            "dir/etc/passwd",
            "dir/_abs",
            "dir/nul_byte",
            "dir/_CON",
            "dir/ok",
            "dir/ok.1"
        ]
    );
    for f in &m.info.files {
        let p = f.relative_path();
        assert!(p.is_relative());
        assert!(p
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_))));
    }
    let fixed: Vec<usize> = m.path_fixes.iter().map(|f| f.file_index).collect();
    assert_eq!(fixed, [0, 1, 2, 3, 5]);
    assert_eq!(m.path_fixes[0].original, "dir/../../etc/passwd");
    assert!(m.path_fixes[0].to_string().contains("'..'"));
    assert_eq!(m.path_fixes[4].fixes, [Fix::Duplicate]);
}

#[test]
fn hostile_name() {
    let mut info = single(1, 16384);
    if let V::Dict(ref mut m) = info {
        m.insert(b"name".to_vec(), s(".."));
    }
    let m = Metainfo::from_bytes(&torrent(info, vec![])).unwrap();
    assert_eq!(m.info.name, "_");
    assert_eq!(m.info.files[0].path, ["_"]);
    assert_eq!(m.path_fixes.len(), 1);
}

#[test]
fn utf8_keys_preferred() {
    let info = d(vec![
        (
            "files",
            V::List(vec![d(vec![
                ("length", V::Int(3)),
                ("path", path(&[b"\xff\xfe"])),
                ("path.utf-8", path(&["Über.txt".as_bytes()])),
            ])]),
        ),
        ("name", V::Bytes(b"\xe9t\xe9".to_vec())),
        ("name.utf-8", s("été")),
        ("piece length", V::Int(16384)),
        ("pieces", V::Bytes(vec![0; 20])),
    ]);
    let m = Metainfo::from_bytes(&torrent(info, vec![])).unwrap();
    assert_eq!(m.info.files[0].display_path(), "été/Über.txt");
    assert!(m.path_fixes.is_empty());
}

#[test]
fn pad_files_and_attributes() {
    let info = multi(
        vec![
            d(vec![
                ("attr", s("x")),
                ("length", V::Int(10)),
                ("path", path(&[b"run.sh"])),
            ]),
            d(vec![
                ("attr", s("p")),
                ("length", V::Int(16374)),
                ("path", path(&[b".pad", b"16374"])),
            ]),
            file(5, &[b"z"]),
        ],
        16389,
        16384,
    );
    let m = Metainfo::from_bytes(&torrent(info, vec![])).unwrap();
    assert!(m.info.files[0].attributes.executable);
    assert!(m.info.files[1].attributes.pad);
    assert_eq!(m.info.content_length(), 15);
    assert_eq!(m.info.layout.file_range(2), Some(16384..16389));
}

fn leaf(len: i64) -> V {
    let mut e = vec![("length", V::Int(len))];
    if len > 0 {
        e.push(("pieces root", V::Bytes(vec![9; 32])));
    }
    d(vec![("", d(e))])
}

#[test]
fn v2_only_and_hybrid() {
    let tree = d(vec![("a", leaf(20000)), ("b", d(vec![("c", leaf(0))]))]);
    let v2 = d(vec![
        ("file tree", tree.clone()),
        ("meta version", V::Int(2)),
        ("name", s("t")),
        ("piece length", V::Int(16384)),
    ]);
    let m = Metainfo::from_bytes(&torrent(v2, vec![])).unwrap();
    assert_eq!(m.info.version, TorrentVersion::V2);
    assert!(m.info_hashes.v1().is_none());
    let raw = m.info_bytes.clone();
    assert_eq!(
        m.info_hashes.v2().unwrap().0,
        <[u8; 32]>::from(sha2::Sha256::digest(&raw))
    );
    let paths: Vec<String> = m.info.files.iter().map(|f| f.display_path()).collect();
    assert_eq!(paths, ["t/a", "t/b/c"]);
    assert_eq!(m.info.files[0].pieces_root, Some([9; 32]));
    assert_eq!(m.info.num_pieces(), 2);

    // Hybrid: the same files in v1 form, pad file included.
    let hybrid = d(vec![
        (
            "files",
            V::List(vec![
                file(20000, &[b"a"]),
                d(vec![
                    ("attr", s("p")),
                    ("length", V::Int(12768)),
                    ("path", path(&[b".pad", b"12768"])),
                ]),
                file(0, &[b"b", b"c"]),
            ]),
        ),
        ("file tree", tree),
        ("meta version", V::Int(2)),
        ("name", s("t")),
        ("piece length", V::Int(16384)),
        ("pieces", V::Bytes(vec![0; 40])),
    ]);
    let m = Metainfo::from_bytes(&torrent(hybrid.clone(), vec![])).unwrap();
    assert_eq!(m.info.version, TorrentVersion::Hybrid);
    assert!(m.info_hashes.v1().is_some() && m.info_hashes.v2().is_some());

    // A hybrid whose two file lists disagree is refused.
    let mut bad = hybrid;
    if let V::Dict(ref mut m) = bad {
        m.insert(b"file tree".to_vec(), d(vec![("a", leaf(20001))]));
    }
    let e = Metainfo::from_bytes(&torrent(bad, vec![])).unwrap_err();
    assert!(e.to_string().contains("differ"), "{e}");
}

#[test]
fn clear_errors_for_bad_input() {
    let err = |b: &[u8]| Metainfo::from_bytes(b).unwrap_err().to_string();
    assert_eq!(
        err(b"i1e"),
        "key 'torrent' should be a dictionary, found a integer"
    );
    assert_eq!(err(b"de"), "missing key 'info'");
    assert_eq!(
        err(b"d4:infod"),
        "not valid bencode: bencode error at byte 8: input ends inside a value"
    );
    let mut no_pieces = single(10, 16384);
    if let V::Dict(ref mut m) = no_pieces {
        m.remove(b"pieces".as_slice());
    }
    assert_eq!(err(&torrent(no_pieces, vec![])), "missing key 'pieces'");
    let mut short = single(40000, 16384);
    if let V::Dict(ref mut m) = short {
        m.insert(b"pieces".to_vec(), V::Bytes(vec![0; 40]));
    }
    assert!(err(&torrent(short, vec![])).contains("2 hashes for 40000 bytes"));
    let mut neg = single(10, 16384);
    if let V::Dict(ref mut m) = neg {
        m.insert(b"length".to_vec(), V::Int(-5));
    }
    assert_eq!(
        err(&torrent(neg, vec![])),
        "invalid 'length': -5 is negative"
    );
    let mut zero = single(10, 16384);
    if let V::Dict(ref mut m) = zero {
        m.insert(b"piece length".to_vec(), V::Int(0));
    }
    assert!(err(&torrent(zero, vec![])).starts_with("invalid 'piece length'"));
    let mut v3 = single(10, 16384);
    if let V::Dict(ref mut m) = v3 {
        m.insert(b"meta version".to_vec(), V::Int(3));
    }
    assert_eq!(
        err(&torrent(v3, vec![])),
        "invalid 'meta version': version 3 is not supported"
    );
    // Sizes that overflow.
    let huge = multi(
        vec![file(i64::MAX, &[b"a"]), file(i64::MAX, &[b"b"])],
        1,
        16384,
    );
    assert!(err(&torrent(huge, vec![])).contains("overflows"));
    let mut unsorted = b"d4:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:".to_vec();
    unsorted.extend_from_slice(&[0; 20]);
    unsorted.extend_from_slice(b"e1:ai1ee");
    assert!(err(&unsorted).contains("not sorted"));
}
