//! The web page as the daemon serves it, in process: `/` and every `/ui/`
//! file with its type, the page's Content-Security-Policy and nosniff;
//! every module the page imports is there; and nothing in the files needs
//! what that policy forbids (inline scripts or styles, eval, markup built
//! from strings).

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::Router;
use lodestone_daemon::server::Access;
use lodestone_daemon::web::{ASSETS, CSP, INDEX};

use common::{Reply, LOCAL};

async fn app(dir: &std::path::Path) -> Router {
    common::server(dir, Access::default(), 11).await.router()
}

async fn get(app: &Router, path: &str) -> Reply {
    send(app, "GET", path, None).await
}

async fn send(app: &Router, method: &str, path: &str, json: Option<&str>) -> Reply {
    let body = json.map_or_else(Body::empty, |j| Body::from(j.to_owned()));
    let ct = [(header::CONTENT_TYPE.as_str(), "application/json")];
    common::call(app, LOCAL, method, path, &ct, body).await
}

fn header_of(r: &Reply, name: header::HeaderName) -> &str {
    r.header(name)
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_their_type_and_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let mut paths = vec![("/".to_owned(), "text/html; charset=utf-8", INDEX.as_bytes())];
    for (name, ty, body) in ASSETS {
        paths.push((format!("/ui/{name}"), ty, body));
    }
    for (path, ty, body) in paths {
        let r = get(&app, &path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(header_of(&r, header::CONTENT_TYPE), ty, "{path}");
        // The page's own policy, not the gate's looser default.
        assert_eq!(
            header_of(&r, header::CONTENT_SECURITY_POLICY),
            CSP,
            "{path}"
        );
        assert_eq!(
            header_of(&r, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff",
            "{path}"
        );
        assert_eq!(r.body, body, "{path}");
    }
    for (name, ty, _) in ASSETS {
        let want = match name.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("{name}: no type known for {other:?}"),
        };
        assert_eq!(*ty, want, "{name}");
    }
    for path in [
        "/ui/nope.js",
        "/ui/",
        "/ui/app.js.map",
        "/ui/..%2fCargo.toml",
    ] {
        let r = get(&app, path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let policy = CSP;
    for must in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(must), "{policy} lacks {must}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
}

/// `src="/ui/x"` and `href="/ui/x"` in the HTML.
fn html_refs(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"/ui/", "href=\"/ui/"] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let end = rest.find('"').unwrap();
            out.push(rest[..end].to_owned());
        }
    }
    out
}

/// The modules a JS file imports (`import ... from './x.js'`, and
/// `import './x.js'`), as file names under /ui/.
fn js_imports(js: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in js.lines() {
        let l = line.trim();
        if !(l.starts_with("import ") || l.starts_with("} from ") || l.starts_with("export ")) {
            continue;
        }
        if let Some(at) = l.find("'./").or_else(|| l.find("\"./")) {
            let rest = &l[at + 3..];
            let end = rest.find(['\'', '"']).unwrap();
            out.push(rest[..end].to_owned());
        } else if l.starts_with("import ") && (l.contains("from '") || l.contains("from \"")) {
            panic!("an import from outside the page's folder: {l}");
        }
    }
    out
}

#[test]
fn every_file_the_page_uses_is_served_and_every_served_file_is_used() {
    let served: BTreeSet<&str> = ASSETS.iter().map(|(n, _, _)| *n).collect();
    let mut used = BTreeSet::new();
    let mut todo = html_refs(INDEX);
    assert!(todo.contains(&"app.js".to_owned()), "{todo:?}");
    assert!(todo.contains(&"style.css".to_owned()), "{todo:?}");
    while let Some(f) = todo.pop() {
        assert!(
            served.contains(f.as_str()),
            "the page uses /ui/{f}: not served"
        );
        if !used.insert(f.clone()) {
            continue;
        }
        let body = ASSETS.iter().find(|(n, _, _)| *n == f).unwrap().2;
        if f.ends_with(".js") {
            todo.extend(js_imports(text(body)));
        }
    }
    let unused: Vec<_> = served.iter().filter(|f| !used.contains(**f)).collect();
    assert!(unused.is_empty(), "served but never used: {unused:?}");
    // And nothing in the folder is left out of the binary.
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for e in std::fs::read_dir(&folder).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            name == "index.html" || served.contains(name.as_str()),
            "web/{name} is not in web.rs's ASSETS"
        );
    }
}

#[test]
fn no_file_needs_what_the_policy_forbids() {
    let mut files: Vec<(String, &str)> = vec![("index.html".into(), INDEX)];
    for (name, _, body) in ASSETS {
        if !name.ends_with(".svg") {
            files.push(((*name).to_owned(), text(body)));
        }
    }
    for (name, body) in &files {
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "javascript:",
            "setAttribute('style'",
            "setAttribute(\"style\"",
        ] {
            assert!(!body.contains(bad), "{name} contains {bad}");
        }
    }
    // The HTML: every script has a src and no body; no style attribute,
    // no inline handler, no <style> element.
    let lower = INDEX.to_ascii_lowercase();
    let mut rest = lower.as_str();
    let mut scripts = 0;
    while let Some(at) = rest.find("<script") {
        rest = &rest[at..];
        let open_end = rest.find('>').unwrap();
        let open = &rest[..open_end];
        assert!(open.contains(" src=\""), "an inline script: {open}");
        let close = rest.find("</script>").unwrap();
        assert_eq!(close, open_end + 1, "a script with a body: {open}");
        rest = &rest[close..];
        scripts += 1;
    }
    assert!(scripts > 0);
    assert!(!lower.contains("<style"), "a <style> element in index.html");
    assert!(
        !lower.contains(" style="),
        "a style attribute in index.html"
    );
    for tag_rest in lower.split('<').skip(1) {
        let tag = tag_rest.split('>').next().unwrap();
        for word in tag.split_whitespace().skip(1) {
            assert!(
                !(word.starts_with("on") && word.contains('=')),
                "an inline handler in index.html: <{tag}>"
            );
        }
    }
}

#[tokio::test]
async fn the_session_tells_the_page_about_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let r = get(&app, "/api/v1/session").await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v["dht"],
        serde_json::json!({"enabled": false, "nodes": 0, "good_nodes": 0}),
        "{v}"
    );
}

/// What the Sources tab reads beside the rows: a magnet's fetch with the
/// DHT's part (off here), and each row's connected seeds and leechers.
#[tokio::test]
async fn the_sources_call_gives_the_numbers_the_page_words() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let add = r#"{"magnet":"magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567"}"#;
    let r = send(&app, "POST", "/api/v1/torrents", Some(add)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", text(&r.body));
    let id: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let path = format!("/api/v1/torrents/{}/sources", id["id"]);
    // The torrent's first snapshot comes from its task: a bounded wait.
    let mut v = serde_json::Value::Null;
    for _ in 0..200 {
        let r = get(&app, &path).await;
        assert_eq!(r.status, StatusCode::OK);
        v = serde_json::from_slice(&r.body).unwrap();
        if !v["metadata"].is_null() && v["sources"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let m = &v["metadata"];
    assert_eq!(m["dht_enabled"], false, "{v}");
    assert!(m["dht"].is_null(), "{v}");
    for k in [
        "peers_found",
        "attempts",
        "failed",
        "handshaken",
        "with_ut_metadata",
    ] {
        assert_eq!(m[k], 0, "{k}: {v}");
    }
    let rows = v["sources"].as_array().unwrap();
    let dht = rows.iter().find(|r| r["kind"] == "dht").expect("a DHT row");
    assert_eq!(dht["state"]["status"], "disabled", "{v}");
    assert_eq!(
        dht["connected"],
        serde_json::json!({"seeds": 0, "leechers": 0}),
        "{v}"
    );
}
