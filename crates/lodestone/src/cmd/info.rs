//! `lodestone info`: inspect a .torrent or a magnet link.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use lodestone_core::{InfoHash, Magnet, Metainfo};
use serde::Serialize;

use crate::cli::InfoArgs;
use crate::human;

/// `lodestone info --json` for a .torrent. Field names are stable.
#[derive(Debug, Serialize)]
pub struct TorrentJson {
    pub source: &'static str,
    pub name: String,
    pub info_hash_v1: Option<String>,
    pub info_hash_v2: Option<String>,
    pub version: lodestone_core::TorrentVersion,
    pub total_size: u64,
    pub piece_length: u32,
    pub num_pieces: u32,
    pub private: bool,
    pub multi_file: bool,
    pub files: Vec<FileJson>,
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub dht_nodes: Vec<(String, u16)>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    pub magnet: String,
    pub path_fixes: Vec<PathFixJson>,
}

#[derive(Debug, Serialize)]
pub struct FileJson {
    pub path: String,
    pub length: u64,
    #[serde(flatten)]
    pub attributes: lodestone_core::FileAttributes,
}

#[derive(Debug, Serialize)]
pub struct PathFixJson {
    pub file_index: usize,
    pub original: String,
    pub sanitized: String,
    pub reasons: Vec<String>,
}

/// `lodestone info --json` for a magnet link.
#[derive(Debug, Serialize)]
pub struct MagnetJson {
    pub source: &'static str,
    pub name: Option<String>,
    pub info_hash_v1: Option<String>,
    pub info_hash_v2: Option<String>,
    pub trackers: Vec<String>,
    pub peers: Vec<String>,
    pub web_seeds: Vec<String>,
    pub exact_sources: Vec<String>,
    pub acceptable_sources: Vec<String>,
    pub keywords: Vec<String>,
    pub exact_length: Option<u64>,
    pub select_only: Vec<String>,
    pub other: Vec<(String, String)>,
    pub magnet: String,
}

pub fn torrent_json(m: &Metainfo) -> TorrentJson {
    TorrentJson {
        source: "torrent",
        name: m.info.name.clone(),
        info_hash_v1: m.info_hashes.v1().map(|h| h.to_hex()),
        info_hash_v2: m.info_hashes.v2().map(|h| h.to_hex()),
        version: m.info.version,
        total_size: m.info.content_length(),
        piece_length: m.info.piece_length,
        num_pieces: m.info.num_pieces(),
        private: m.info.private,
        multi_file: m.info.multi_file,
        files: m
            .info
            .files
            .iter()
            .map(|f| FileJson {
                path: f.display_path(),
                length: f.length,
                attributes: f.attributes,
            })
            .collect(),
        trackers: m.trackers.clone(),
        web_seeds: m.web_seeds.clone(),
        dht_nodes: m.dht_nodes.clone(),
        comment: m.comment.clone(),
        created_by: m.created_by.clone(),
        creation_date: m.creation_date,
        magnet: Magnet::from_metainfo(m).to_string(),
        path_fixes: m
            .path_fixes
            .iter()
            .map(|f| PathFixJson {
                file_index: f.file_index,
                original: f.original.clone(),
                sanitized: f.sanitized.clone(),
                reasons: f.fixes.iter().map(|x| x.to_string()).collect(),
            })
            .collect(),
    }
}

fn magnet_json(m: &Magnet) -> MagnetJson {
    MagnetJson {
        source: "magnet",
        name: m.name.clone(),
        info_hash_v1: m.info_hashes.v1().map(|h| h.to_hex()),
        info_hash_v2: m.info_hashes.v2().map(|h| h.to_hex()),
        trackers: m.trackers.clone(),
        peers: m.peers.iter().map(|p| p.to_string()).collect(),
        web_seeds: m.web_seeds.clone(),
        exact_sources: m.exact_sources.clone(),
        acceptable_sources: m.acceptable_sources.clone(),
        keywords: m.keywords.clone(),
        exact_length: m.exact_length,
        select_only: m
            .select_only
            .iter()
            .map(|r| format!("{}-{}", r.start(), r.end()))
            .collect(),
        other: m.other.clone(),
        magnet: m.to_string(),
    }
}

/// What the user gave us: a magnet, a bare info hash, or a file.
pub enum Input {
    Magnet(Box<Magnet>),
    Torrent(Box<Metainfo>),
}

pub fn load(input: &str) -> anyhow::Result<Input> {
    if input.len() >= 7 && input[..7].eq_ignore_ascii_case("magnet:") {
        return Ok(Input::Magnet(Box::new(input.parse()?)));
    }
    let path = Path::new(input);
    if !path.exists() {
        if let Ok(h) = input.parse::<InfoHash>() {
            return Ok(Input::Magnet(Box::new(Magnet::from_info_hash(h))));
        }
    }
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {input}"))?
        .len();
    if len > lodestone_core::metainfo::MAX_TORRENT_BYTES as u64 {
        anyhow::bail!(
            "{input}: {len} bytes is too large for a .torrent file (limit {} bytes)",
            lodestone_core::metainfo::MAX_TORRENT_BYTES
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {input}"))?;
    let m =
        Metainfo::from_bytes(&bytes).with_context(|| format!("{input} is not a valid .torrent"))?;
    Ok(Input::Torrent(Box::new(m)))
}

pub fn run(a: &InfoArgs) -> anyhow::Result<ExitCode> {
    match load(&a.input)? {
        Input::Magnet(m) if a.json => {
            crate::outln!("{}", serde_json::to_string_pretty(&magnet_json(&m))?)
        }
        Input::Magnet(m) => print_magnet(&m),
        Input::Torrent(m) if a.json => {
            crate::outln!("{}", serde_json::to_string_pretty(&torrent_json(&m))?)
        }
        Input::Torrent(m) => crate::human::emit(&render_torrent(&m)),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_magnet(m: &Magnet) {
    crate::outln!("magnet link");
    if let Some(n) = &m.name {
        crate::outln!("name:        {n}");
    }
    if let Some(h) = m.info_hashes.v1() {
        crate::outln!("info hash:   {h} (v1)");
    }
    if let Some(h) = m.info_hashes.v2() {
        crate::outln!("info hash:   {h} (v2)");
    }
    if let Some(l) = m.exact_length {
        crate::outln!("size:        {} ({l} bytes)", human::bytes(l));
    }
    let lists: [(&str, Vec<String>); 6] = [
        ("trackers", m.trackers.clone()),
        ("peers", m.peers.iter().map(|p| p.to_string()).collect()),
        ("web seeds", m.web_seeds.clone()),
        (
            "sources",
            m.exact_sources
                .iter()
                .chain(&m.acceptable_sources)
                .cloned()
                .collect(),
        ),
        ("keywords", m.keywords.clone()),
        (
            "other",
            m.other.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ),
    ];
    for (label, items) in lists {
        for (i, item) in items.iter().enumerate() {
            let l = if i == 0 {
                format!("{label}:")
            } else {
                String::new()
            };
            crate::outln!("{l:<13}{item}");
        }
    }
    if !m.select_only.is_empty() {
        let so: Vec<String> = m
            .select_only
            .iter()
            .map(|r| format!("{}-{}", r.start(), r.end()))
            .collect();
        crate::outln!("only files:  {}", so.join(", "));
    }
    crate::outln!("magnet:      {m}");
}

pub fn render_torrent(m: &Metainfo) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let i = &m.info;
    let _ = writeln!(s, "name:        {}", i.name);
    if let Some(h) = m.info_hashes.v1() {
        let _ = writeln!(s, "info hash:   {h} (v1, SHA-1)");
    }
    if let Some(h) = m.info_hashes.v2() {
        let _ = writeln!(s, "info hash:   {h} (v2, SHA-256)");
    }
    let _ = writeln!(s, "version:     {}", i.version);
    let files = i.files.iter().filter(|f| !f.attributes.pad).count();
    let size = i.content_length();
    let _ = writeln!(
        s,
        "size:        {} ({size} bytes) in {files} file{}",
        human::bytes(size),
        if files == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "pieces:      {} × {}",
        i.num_pieces(),
        human::bytes(u64::from(i.piece_length))
    );
    let _ = writeln!(
        s,
        "private:     {}",
        if i.private {
            "yes (no DHT, PEX or LPD)"
        } else {
            "no"
        }
    );
    if let Some(c) = &m.comment {
        let _ = writeln!(s, "comment:     {c}");
    }
    if let Some(c) = &m.created_by {
        let _ = writeln!(s, "created by:  {c}");
    }
    if let Some(d) = m.creation_date {
        let _ = writeln!(s, "created:     {d} (unix time)");
    }
    for (n, tier) in m.trackers.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:<13}{}",
            if n == 0 { "trackers:" } else { "" },
            tier.join("  ")
        );
    }
    for (n, w) in m.web_seeds.iter().enumerate() {
        let _ = writeln!(s, "{:<13}{w}", if n == 0 { "web seeds:" } else { "" });
    }
    for (n, (h, p)) in m.dht_nodes.iter().enumerate() {
        let _ = writeln!(s, "{:<13}{h}:{p}", if n == 0 { "DHT nodes:" } else { "" });
    }
    let _ = writeln!(s, "files:");
    s.push_str(&file_tree(m));
    for f in &m.path_fixes {
        let _ = writeln!(s, "renamed:     {f}");
    }
    let _ = writeln!(s, "magnet:      {}", Magnet::from_metainfo(m));
    s
}

/// The files as an indented tree, pad files left out.
fn file_tree(m: &Metainfo) -> String {
    #[derive(Default)]
    struct Dir<'a> {
        dirs: BTreeMap<&'a str, Dir<'a>>,
        files: Vec<(&'a str, u64)>,
    }
    let mut root = Dir::default();
    for f in m.info.files.iter().filter(|f| !f.attributes.pad) {
        let (last, parents) = match f.path.split_last() {
            Some(x) => x,
            None => continue,
        };
        let mut d = &mut root;
        for p in parents {
            d = d.dirs.entry(p.as_str()).or_default();
        }
        d.files.push((last.as_str(), f.length));
    }
    fn walk(d: &Dir<'_>, indent: usize, out: &mut String) {
        for (name, sub) in &d.dirs {
            out.push_str(&format!("  {:indent$}{name}/\n", ""));
            walk(sub, indent + 2, out);
        }
        for (name, len) in &d.files {
            out.push_str(&format!(
                "  {:indent$}{name}  ({})\n",
                "",
                human::bytes(*len)
            ));
        }
    }
    let mut out = String::new();
    walk(&root, 0, &mut out);
    out
}
