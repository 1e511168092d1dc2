//! `lodestone remote`: a running daemon driven over its native API
//! (`/api/v1`, see API.md).

use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};

use super::get::runtime;
use crate::cli::{RemoteArgs, RemoteCommand};
use crate::human::bytes;

/// Largest answer read from the daemon (a list of many thousand torrents).
const MAX_ANSWER: usize = 256 << 20;

struct Daemon {
    base: String,
    auth: Option<String>,
    http: lodestone_engine::http::HttpClient,
}

impl Daemon {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut headers = Vec::new();
        if let Some(a) = &self.auth {
            headers.push(("Authorization", a.as_str()));
        }
        let body = match body {
            Some((content_type, b)) => {
                headers.push(("Content-Type", content_type));
                b
            }
            None if method != "GET" && method != "DELETE" => {
                // Changes carry a JSON content type (the daemon's guard
                // against cross-site forms), even without a body.
                headers.push(("Content-Type", "application/json"));
                Vec::new()
            }
            None => Vec::new(),
        };
        let (status, answer) = self
            .http
            .send(method, &url, &headers, body, MAX_ANSWER)
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        let v: Value = serde_json::from_slice(&answer).unwrap_or_else(
            |_| json!({"error": String::from_utf8_lossy(&answer).trim().to_owned()}),
        );
        match status {
            200 | 201 => Ok(v),
            401 => bail!(
                "{url}: the daemon wants a user name and password (--user, LODESTONE_PASSWORD)"
            ),
            _ => bail!(
                "{url}: {status}: {}",
                v["error"].as_str().unwrap_or("no explanation")
            ),
        }
    }
}

pub fn run(a: &RemoteArgs) -> anyhow::Result<ExitCode> {
    let auth = match (&a.user, &a.password) {
        (None, None) => None,
        (u, p) => {
            let pair = format!(
                "{}:{}",
                u.as_deref().unwrap_or(""),
                p.as_deref().unwrap_or("")
            );
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
    };
    let d = Daemon {
        base: a.url.trim_end_matches('/').to_owned(),
        auth,
        http: lodestone_engine::http::HttpClient::default(),
    };
    runtime()?.block_on(command(&d, &a.command))
}

async fn command(d: &Daemon, c: &RemoteCommand) -> anyhow::Result<ExitCode> {
    match c {
        RemoteCommand::Add {
            inputs,
            download_dir,
            paused,
            labels,
        } => {
            let mut failed = false;
            for input in inputs {
                match add(d, input, download_dir.as_deref(), *paused, labels).await {
                    Ok(v) => {
                        let how = if v["new"].as_bool() == Some(false) {
                            "already there"
                        } else {
                            "added"
                        };
                        println!(
                            "{how}: {} {} ({})",
                            v["id"],
                            v["name"].as_str().unwrap_or(""),
                            v["info_hash"].as_str().unwrap_or("")
                        );
                    }
                    Err(e) => {
                        eprintln!("{input}: {e:#}");
                        failed = true;
                    }
                }
            }
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        RemoteCommand::List { json } => {
            let v = d.call("GET", "/torrents", None).await?;
            if *json {
                println!("{v}");
            } else {
                print_list(&v);
            }
        }
        RemoteCommand::Pause { torrent } => show(
            &d.call("POST", &format!("/torrents/{torrent}/pause"), None)
                .await?,
        ),
        RemoteCommand::Resume { torrent } => show(
            &d.call("POST", &format!("/torrents/{torrent}/resume"), None)
                .await?,
        ),
        RemoteCommand::Recheck { torrent } => show(
            &d.call("POST", &format!("/torrents/{torrent}/recheck"), None)
                .await?,
        ),
        RemoteCommand::Remove {
            torrent,
            delete_data,
        } => {
            d.call(
                "DELETE",
                &format!("/torrents/{torrent}?delete_data={delete_data}"),
                None,
            )
            .await?;
            println!(
                "removed {torrent}{}",
                if *delete_data { " and its files" } else { "" }
            );
        }
        RemoteCommand::Sources { torrent } => {
            let v = d
                .call("GET", &format!("/torrents/{torrent}/sources"), None)
                .await?;
            print_sources(&v);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn add(
    d: &Daemon,
    input: &str,
    dir: Option<&str>,
    paused: bool,
    labels: &[String],
) -> anyhow::Result<Value> {
    let is_url = input.starts_with("http://") || input.starts_with("https://");
    let is_magnet = input.starts_with("magnet:")
        || (matches!(input.len(), 32 | 40) && !std::path::Path::new(input).exists());
    if is_url || is_magnet {
        let key = if is_url { "url" } else { "magnet" };
        let mut body = json!({key: input, "paused": paused, "labels": labels});
        if let Some(dir) = dir {
            body["download_dir"] = json!(dir);
        }
        return d
            .call(
                "POST",
                "/torrents",
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await;
    }
    if !labels.is_empty() {
        bail!("labels go with magnets and URLs for now; add the .torrent, then label it from a client");
    }
    let bytes = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let mut query = format!("?paused={paused}");
    if let Some(dir) = dir {
        query.push_str("&download_dir=");
        query.push_str(&percent(dir));
    }
    d.call(
        "POST",
        &format!("/torrents{query}"),
        Some(("application/x-bittorrent", bytes)),
    )
    .await
}

/// A query value, percent-encoded (paths may hold spaces and `&`).
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn show(t: &Value) {
    println!(
        "{} {}: {}",
        t["id"],
        t["name"].as_str().unwrap_or(""),
        t["state"].as_str().unwrap_or("")
    );
}

fn rate(v: &Value) -> String {
    format!("{}/s", bytes(v.as_f64().unwrap_or(0.0) as u64))
}

fn print_list(v: &Value) {
    let empty = Vec::new();
    let list = v["torrents"].as_array().unwrap_or(&empty);
    println!(
        "{:>4}  {:>6}  {:<11}  {:>10}  {:>11}  {:>11}  {:>5}  Name",
        "ID", "Done", "State", "Size", "Down", "Up", "Peers"
    );
    for t in list {
        let size = t["wanted_size"].as_u64().unwrap_or(0);
        let done = if t["has_metadata"].as_bool() == Some(true) {
            format!("{:.1}%", t["progress"].as_f64().unwrap_or(0.0) * 100.0)
        } else {
            "n/a".to_owned()
        };
        println!(
            "{:>4}  {:>6}  {:<11}  {:>10}  {:>11}  {:>11}  {:>5}  {}",
            t["id"].as_u64().unwrap_or(0),
            done,
            t["state"].as_str().unwrap_or(""),
            if size > 0 {
                bytes(size)
            } else {
                "?".to_owned()
            },
            rate(&t["download_rate"]),
            rate(&t["upload_rate"]),
            t["peers"].as_u64().unwrap_or(0),
            t["name"].as_str().unwrap_or(""),
        );
        if let Some(e) = t["error"].as_str() {
            println!("{:>4}  error: {e}", "");
        }
    }
    let n = list.len();
    println!("{n} torrent{}", if n == 1 { "" } else { "s" });
}

fn print_sources(v: &Value) {
    let empty = Vec::new();
    println!(
        "{:<32}  {:>7}  {:>6}  {:>6}  Status",
        "Source", "Next in", "Peers", "Seeds"
    );
    for s in v["sources"].as_array().unwrap_or(&empty) {
        let name = match s["url"].as_str() {
            Some(u) => u.to_owned(),
            None => s["kind"].as_str().unwrap_or("").to_uppercase(),
        };
        let next = s["next_update_s"]
            .as_f64()
            .map(|n| format!("{n:.0} s"))
            .unwrap_or_default();
        let state = &s["state"];
        let mut status = state["status"].as_str().unwrap_or("").to_owned();
        for key in ["why", "message"] {
            if let Some(t) = state[key].as_str() {
                status = format!("{status} ({t})");
            }
        }
        println!(
            "{name:<32}  {next:>7}  {:>6}  {:>6}  {status}",
            s["peers"].as_u64().unwrap_or(0),
            s["seeds"].as_u64().unwrap_or(0)
        );
    }
    if let Some(m) = v["metadata"].as_object() {
        println!(
            "metadata: {} peers found, {} connected, {} with ut_metadata, {}/{} pieces",
            m["peers_found"], m["handshaken"], m["with_ut_metadata"], m["pieces_done"], m["pieces"]
        );
    }
}
