//! Reading one RPC request, hostile or not: the method, its arguments,
//! its tag, and the arguments' common shapes (`ids`, `labels`, file
//! index lists). Pure functions over the body, fuzzed as they are.

use lodestone_core::InfoHash;
use serde_json::{Map, Value};

/// More ids (or file indices) than this in one request is refused: no
/// client holds that many torrents; a list this long is an attack or a bug.
pub const MAX_IDS: usize = 100_000;

/// A body with more values than this is not parsed: a 64 MiB body of
/// `[0,0,0...` would otherwise take a gigabyte as JSON values.
const MAX_VALUES: usize = 1_000_000;

/// A request's failure: the `result` text clients see.
pub type Failure = String;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub args: Map<String, Value>,
    /// Echoed back when it is an integer (3.00 drops other tags).
    pub tag: Option<Value>,
}

/// The request in `body`, or transmission-daemon's answer to junk.
pub fn parse(body: &[u8]) -> Result<Request, Failure> {
    let no_method = || "no method name".to_owned();
    // Each value but the first follows a comma: a cheap bound before parsing.
    if body.iter().filter(|&&b| b == b',').count() > MAX_VALUES {
        return Err(no_method());
    }
    // serde_json refuses nesting past 128 levels, so deep input is an
    // error, not a stack overflow.
    let mut v: Value = serde_json::from_slice(body).map_err(|_| no_method())?;
    let obj = v.as_object_mut().ok_or_else(no_method)?;
    let tag = obj.get("tag").filter(|t| t.is_i64() || t.is_u64()).cloned();
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(no_method()),
    };
    let args = match obj.remove("arguments") {
        Some(Value::Object(a)) => a,
        _ => Map::new(),
    };
    Ok(Request { method, args, tag })
}

/// Which torrents a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ids {
    All,
    /// Changed in the last minute (and the ones removed then).
    RecentlyActive,
    /// These (unknown ones match nothing).
    Some(Vec<IdRef>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRef {
    Id(u64),
    Hash(InfoHash),
}

fn id_ref(v: &Value) -> Option<IdRef> {
    match v {
        Value::Number(n) => n.as_u64().map(IdRef::Id),
        Value::String(s) => s.parse().ok().map(IdRef::Hash),
        _ => None,
    }
}

/// `ids`: absent (all), an id, a hash, a list of either, or
/// "recently-active". Whatever names no torrent (`-1`, `"1"`) matches none.
pub fn ids(args: &Map<String, Value>) -> Result<Ids, Failure> {
    match args.get("ids") {
        None => Ok(Ids::All),
        Some(Value::String(s)) if s == "recently-active" => Ok(Ids::RecentlyActive),
        Some(Value::Array(list)) => {
            if list.len() > MAX_IDS {
                return Err(format!("too many ids ({}; at most {MAX_IDS})", list.len()));
            }
            Ok(Ids::Some(list.iter().filter_map(id_ref).collect()))
        }
        Some(v) => Ok(Ids::Some(id_ref(v).into_iter().collect())),
    }
}

/// A boolean as clients send it: `true` or a non-zero number.
pub fn flag(args: &Map<String, Value>, key: &str) -> bool {
    match args.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
        _ => false,
    }
}

/// `labels`: a list of strings without commas (Transmission's rule),
/// trimmed, empty ones and repeats left out.
pub fn labels(args: &Map<String, Value>) -> Result<Option<Vec<String>>, Failure> {
    let Some(v) = args.get("labels") else {
        return Ok(None);
    };
    let list = v.as_array().ok_or("labels must be a list")?;
    if list.len() > MAX_IDS {
        return Err("too many labels".to_owned());
    }
    let mut out: Vec<String> = Vec::new();
    for l in list {
        let s = l.as_str().ok_or("labels must be strings")?.trim();
        if s.contains(',') {
            return Err("labels cannot contain comma (,) character".to_owned());
        }
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    Ok(Some(out))
}

/// A list of file indices (`files-wanted`, `priority-high`...).
pub fn index_list(args: &Map<String, Value>, key: &str) -> Result<Vec<usize>, Failure> {
    let Some(v) = args.get(key) else {
        return Ok(Vec::new());
    };
    let list = v
        .as_array()
        .ok_or_else(|| format!("{key} must be a list"))?;
    if list.len() > MAX_IDS {
        return Err(format!("{key}: too many entries"));
    }
    list.iter()
        .map(|n| {
            n.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| "file index out of range".to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_gets_no_method_name() {
        let deep = "[".repeat(100_000);
        let commas = format!("[{}0]", "0,".repeat(MAX_VALUES + 1));
        for body in [
            "",
            "{",
            "[]",
            "null",
            "{\"method\":3}",
            "{\"arguments\":{}}",
            &deep,
            &commas,
        ] {
            assert_eq!(
                parse(body.as_bytes()).unwrap_err(),
                "no method name",
                "{:.40}",
                body
            );
        }
        let r = parse(br#"{"method":"torrent-get","tag":7,"arguments":[1]}"#).unwrap();
        assert_eq!(
            (r.method.as_str(), r.tag, r.args.len()),
            ("torrent-get", Some(Value::from(7)), 0)
        );
        assert_eq!(parse(br#"{"method":"x","tag":"abc"}"#).unwrap().tag, None);
    }

    #[test]
    fn ids_take_every_form_clients_send() {
        let args = |v: Value| v.as_object().unwrap().clone();
        let h = "0123456789abcdef0123456789abcdef01234567";
        let ih: InfoHash = h.parse().unwrap();
        assert_eq!(ids(&args(serde_json::json!({}))).unwrap(), Ids::All);
        assert_eq!(
            ids(&args(serde_json::json!({"ids": "recently-active"}))).unwrap(),
            Ids::RecentlyActive
        );
        assert_eq!(
            ids(&args(serde_json::json!({"ids": 3}))).unwrap(),
            Ids::Some(vec![IdRef::Id(3)])
        );
        assert_eq!(
            ids(&args(serde_json::json!({"ids": [1, h, -1, "1", null]}))).unwrap(),
            Ids::Some(vec![IdRef::Id(1), IdRef::Hash(ih)])
        );
        assert_eq!(
            ids(&args(serde_json::json!({"ids": -1}))).unwrap(),
            Ids::Some(vec![])
        );
        let many: Vec<u64> = (0..=MAX_IDS as u64).collect();
        assert!(ids(&args(serde_json::json!({ "ids": many }))).is_err());
    }

    #[test]
    fn labels_follow_transmissions_rules() {
        let args = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            labels(&args(
                serde_json::json!({"labels": [" tv ", "tv", "", "hd"]})
            ))
            .unwrap(),
            Some(vec!["tv".to_owned(), "hd".to_owned()])
        );
        assert!(labels(&args(serde_json::json!({"labels": ["a,b"]}))).is_err());
        assert!(labels(&args(serde_json::json!({"labels": "tv"}))).is_err());
        assert_eq!(
            index_list(
                &args(serde_json::json!({"files-wanted": [0, -1]})),
                "files-wanted"
            )
            .unwrap_err(),
            "file index out of range"
        );
    }
}
