//! One qBittorrent Web API request's parameters from anyone who reaches
//! the port (`lodestone_daemon::qbittorrent::params`), and the `SID`
//! cookie found in its Cookie header (`qbittorrent::auth`).
//!
//! Input: byte 0 picks the Content-Type (multipart with boundary `B`,
//! urlencoded, none, or the next line of the input as the Content-Type);
//! byte 1 is the query's length; then the query, then the body. Nothing
//! panics; the counts stay under their caps; `get` is the last value of
//! a name; an uploaded file's bytes are a piece of the body; and what
//! parses, written again (urlencoded, or multipart with a fresh
//! boundary), parses to the same parameters. The cookie found is a piece
//! of the header, trimmed, without `;` or `,`.

use lodestone_daemon::qbittorrent::auth::sid_from_cookies;
use lodestone_daemon::qbittorrent::params::{Params, MAX_FIELDS, MAX_FILES};

const BOUNDARY: &str = "lodestone-fuzz-roundtrip-7f3a9c";

pub fn qbittorrent_params(data: &[u8]) {
    cookie(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((&qlen, rest)) = rest.split_first() else {
        return;
    };
    let qlen = usize::from(qlen).min(rest.len());
    let (query, mut body) = rest.split_at(qlen);
    let query = String::from_utf8_lossy(query).into_owned();
    let owned_ct;
    let ct = match mode % 4 {
        0 => Some("multipart/form-data; boundary=B"),
        1 => Some("application/x-www-form-urlencoded"),
        2 => None,
        _ => {
            let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
            owned_ct = String::from_utf8_lossy(&body[..end]).into_owned();
            body = body.get(end + 1..).unwrap_or_default();
            Some(owned_ct.as_str())
        }
    };
    let Ok(p) = Params::parse(Some(&query), ct, body) else {
        return;
    };
    let fields: Vec<(String, String)> = p
        .fields()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(fields.len() <= MAX_FIELDS);
    assert!(p.files.len() <= MAX_FILES);
    for (k, _) in &fields {
        let last = fields
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str());
        assert_eq!(p.get(k), last);
    }
    let file_bytes: usize = p.files.iter().map(|f| f.bytes.len()).sum();
    assert!(file_bytes <= body.len());
    for f in &p.files {
        assert!(
            f.bytes.is_empty() || body.windows(f.bytes.len()).any(|w| w == f.bytes),
            "a file's bytes come from the body"
        );
    }
    // Written again as a form, the fields parse the same.
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &fields {
        form.append_pair(k, v);
    }
    let again = Params::parse(
        None,
        Some("application/x-www-form-urlencoded"),
        form.finish().as_bytes(),
    )
    .expect("a form we wrote parses");
    let back: Vec<(&str, &str)> = again.fields().collect();
    let want: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(back, want);
    assert!(again.files.is_empty());
    // And as multipart with files, when our boundary and quoting allow.
    let plain = |s: &str| !s.contains(['"', '\\', '\r', '\n', ';']) && !s.contains(BOUNDARY);
    if fields
        .iter()
        .all(|(k, v)| plain(k) && !v.contains(BOUNDARY))
        && p.files.iter().all(|f| {
            plain(&f.filename)
                && !f
                    .bytes
                    .windows(BOUNDARY.len())
                    .any(|w| w == BOUNDARY.as_bytes())
        })
        && fields.len() + p.files.len() <= MAX_FIELDS
    {
        let mut body = Vec::new();
        for (k, v) in &fields {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        for f in &p.files {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"torrents\"; filename=\"{}\"\r\n\r\n",
                    f.filename
                )
                .as_bytes(),
            );
            body.extend_from_slice(&f.bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={BOUNDARY}");
        let again =
            Params::parse(None, Some(&ct), &body).expect("a multipart body we wrote parses");
        let back: Vec<(&str, &str)> = again.fields().collect();
        assert_eq!(back, want);
        assert_eq!(again.files, p.files);
    }
}

/// The `SID` in a Cookie header: a trimmed piece of it, no separators.
fn cookie(data: &[u8]) {
    let Some(sid) = sid_from_cookies([data]) else {
        return;
    };
    assert!(!sid.contains(&b';') && !sid.contains(&b','));
    assert!(sid.first().is_none_or(|b| !b.is_ascii_whitespace()));
    assert!(sid.last().is_none_or(|b| !b.is_ascii_whitespace()));
    let start = sid.as_ptr() as usize - data.as_ptr() as usize;
    assert!(
        start + sid.len() <= data.len(),
        "the SID is a piece of the header"
    );
}
