//! One Transmission RPC request body from anyone who reaches the port
//! (`lodestone_daemon::transmission::request`). Nothing panics; what
//! parses has a string method and an integer tag if any, prints back to a
//! body that parses to a request that means the same, and its `ids`,
//! `labels`, file index lists and flags keep their rules: no list longer
//! than `MAX_IDS`, labels trimmed, non-empty, without commas or repeats.

use lodestone_daemon::transmission::request::{
    flag, ids, index_list, labels, parse, IdRef, Ids, MAX_IDS,
};
use serde_json::{Map, Value};

/// The index lists `torrent-set` and `torrent-add` take.
const INDEX_KEYS: &[&str] = &[
    "files-wanted",
    "files-unwanted",
    "priority-high",
    "priority-low",
    "priority-normal",
];

/// The flags clients send.
const FLAGS: &[&str] = &["paused", "delete-local-data", "move", "seedRatioLimited"];

pub fn transmission_rpc(data: &[u8]) {
    let Ok(r) = parse(data) else {
        return;
    };
    // Only a JSON object with a string method parses.
    let v: Value = serde_json::from_slice(data).expect("what parses is JSON");
    assert_eq!(v["method"].as_str(), Some(r.method.as_str()));
    if let Some(t) = &r.tag {
        assert!(t.is_i64() || t.is_u64(), "tag {t}");
        assert_eq!(&v["tag"], t);
    }
    // Printed back, the request means the same. (Not the same values:
    // serde_json reads a float printed from a float it read to the nearest
    // bits only with its `float_roundtrip` feature, so 1.1844674407370957e20
    // may come back as ...955e20; no argument the daemon reads is a float.)
    let mut again = Map::new();
    again.insert("method".to_owned(), Value::String(r.method.clone()));
    again.insert("arguments".to_owned(), Value::Object(r.args.clone()));
    if let Some(t) = &r.tag {
        again.insert("tag".to_owned(), t.clone());
    }
    let printed = serde_json::to_vec(&again).expect("a request prints");
    let back = parse(&printed).expect("a printed request parses");
    assert_eq!((&back.method, &back.tag), (&r.method, &r.tag));
    assert!(back.args.keys().eq(r.args.keys()));
    assert_eq!(ids(&back.args), ids(&r.args));
    assert_eq!(labels(&back.args), labels(&r.args));
    for key in INDEX_KEYS {
        assert_eq!(index_list(&back.args, key), index_list(&r.args, key));
    }
    for key in FLAGS {
        assert_eq!(flag(&back.args, key), flag(&r.args, key));
    }

    check_ids(&r.args);
    check_labels(&r.args);
    for key in INDEX_KEYS {
        check_index_list(&r.args, key);
    }
    for key in FLAGS {
        let on = flag(&r.args, key);
        let expected = match r.args.get(*key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
            _ => false,
        };
        assert_eq!(on, expected, "flag {key}: {:?}", r.args.get(*key));
    }
}

fn check_ids(args: &Map<String, Value>) {
    let given = args.get("ids");
    match ids(args) {
        Ok(Ids::All) => assert!(given.is_none(), "All for {given:?}"),
        Ok(Ids::RecentlyActive) => {
            assert_eq!(given.and_then(Value::as_str), Some("recently-active"));
        }
        Ok(Ids::Some(list)) => {
            assert!(list.len() <= MAX_IDS, "{} ids", list.len());
            let at_most = given.and_then(Value::as_array).map_or(1, Vec::len);
            assert!(list.len() <= at_most, "{} ids from {at_most}", list.len());
            for id in &list {
                // Each names a torrent by a number or a hash it was given.
                let from = |v: &Value| match (id, v) {
                    (IdRef::Id(n), v) => v.as_u64() == Some(*n),
                    (IdRef::Hash(h), Value::String(s)) => s.parse().ok() == Some(*h),
                    _ => false,
                };
                let found = match given {
                    Some(Value::Array(a)) => a.iter().any(from),
                    Some(v) => from(v),
                    None => false,
                };
                assert!(found, "{id:?} is not in {given:?}");
            }
        }
        Err(e) => {
            let n = given.and_then(Value::as_array).map(Vec::len);
            assert!(n.is_some_and(|n| n > MAX_IDS), "{e} for {n:?} ids");
        }
    }
}

fn check_labels(args: &Map<String, Value>) {
    match labels(args) {
        Ok(None) => assert!(args.get("labels").is_none()),
        Ok(Some(list)) => {
            let given = args["labels"].as_array().expect("labels were a list");
            assert!(list.len() <= given.len().min(MAX_IDS));
            for (i, l) in list.iter().enumerate() {
                assert!(!l.is_empty(), "an empty label");
                assert!(!l.contains(','), "label {l:?} has a comma");
                assert_eq!(l.trim(), l, "label {l:?} is not trimmed");
                assert!(!list[..i].contains(l), "label {l:?} repeats: {list:?}");
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fn check_index_list(args: &Map<String, Value>, key: &str) {
    match index_list(args, key) {
        Ok(list) => {
            assert!(list.len() <= MAX_IDS, "{key}: {} entries", list.len());
            let given = args.get(key).and_then(Value::as_array).map_or(0, Vec::len);
            assert_eq!(list.len(), given, "{key}: every index or an error");
            if let Some(Value::Array(a)) = args.get(key) {
                for (n, v) in list.iter().zip(a) {
                    assert_eq!(v.as_u64(), u64::try_from(*n).ok());
                }
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}
