//! Magnet links: BEP 9, the magnet URI scheme, BEP 53 `so`, and the
//! parameters clients use in the wild (`x.pe`, `ws`, `xs`, `as`, `kt`, `xl`).

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::encoding::{percent_decode, percent_encode};
use crate::{InfoHash, InfoHashV2, InfoHashes};

/// Longest magnet link we parse; real ones are a few KiB at most.
pub const MAX_MAGNET_LEN: usize = 64 * 1024;

/// A peer address from `x.pe`: an IP literal or a host name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    Ip(SocketAddr),
    Host(String, u16),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => a.fmt(f),
            Self::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            if a.port() == 0 {
                return Err("port 0".into());
            }
            return Ok(Self::Ip(a));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("'{s}' is not host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("'{port}' is not a port"))?;
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
        if !valid_host {
            return Err(format!("'{host}' is not a host name or IP address"));
        }
        Ok(Self::Host(host.to_owned(), port))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet link: it must start with 'magnet:?'")]
    NotMagnet,
    #[error("magnet link is {0} bytes, longer than the {MAX_MAGNET_LEN}-byte limit")]
    TooLong(usize),
    #[error("parameter '{param}': {reason}")]
    Param { param: String, reason: String },
    #[error("no 'xt' parameter with a BitTorrent info hash (urn:btih or urn:btmh)")]
    NoInfoHash,
}

fn param_err(param: &str, reason: impl Into<String>) -> MagnetError {
    MagnetError::Param {
        param: param.to_owned(),
        reason: reason.into(),
    }
}

/// A parsed magnet link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hashes: InfoHashes,
    /// `dn`: display name.
    pub name: Option<String>,
    /// `tr`: trackers, in order.
    pub trackers: Vec<String>,
    /// `x.pe`: peers to dial straight away.
    pub peers: Vec<PeerAddr>,
    /// `ws`: web seeds (BEP 19).
    pub web_seeds: Vec<String>,
    /// `xs`: exact sources, URLs of the .torrent file.
    pub exact_sources: Vec<String>,
    /// `as`: acceptable sources (also .torrent URLs, as torcache served).
    pub acceptable_sources: Vec<String>,
    /// `kt`: keywords.
    pub keywords: Vec<String>,
    /// `xl`: exact length in bytes.
    pub exact_length: Option<u64>,
    /// `so` (BEP 53): file indices to download.
    pub select_only: Vec<RangeInclusive<u32>>,
    /// Parameters we do not interpret, kept (decoded) in order.
    pub other: Vec<(String, String)>,
}

impl Magnet {
    /// A magnet for just a v1 info hash.
    pub fn from_info_hash(h: InfoHash) -> Self {
        Self::from_info_hashes(InfoHashes::V1(h))
    }

    pub fn from_info_hashes(info_hashes: InfoHashes) -> Self {
        Self {
            info_hashes,
            name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            web_seeds: Vec::new(),
            exact_sources: Vec::new(),
            acceptable_sources: Vec::new(),
            keywords: Vec::new(),
            exact_length: None,
            select_only: Vec::new(),
            other: Vec::new(),
        }
    }

    /// The magnet link for a torrent: its hashes, name, trackers and web seeds.
    pub fn from_metainfo(m: &crate::Metainfo) -> Self {
        let mut magnet = Self::from_info_hashes(m.info_hashes);
        magnet.name = Some(m.info.name.clone());
        magnet.trackers = m.trackers.iter().flatten().cloned().collect();
        magnet.web_seeds = m.web_seeds.clone();
        magnet
    }

    /// Is file `index` selected by `so` (all are, when `so` is absent)?
    pub fn selects_file(&self, index: u32) -> bool {
        self.select_only.is_empty() || self.select_only.iter().any(|r| r.contains(&index))
    }
}

/// Parameter names may carry a `.N` suffix to number repeats (`xt.1`, `tr.2`).
fn base_name(key: &str) -> &str {
    match key.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => base,
        _ => key,
    }
}

fn text(param: &str, value: &str) -> Result<String, MagnetError> {
    let bytes = percent_decode(value)
        .map_err(|at| param_err(param, format!("bad percent-escape at character {at}")))?;
    String::from_utf8(bytes).map_err(|_| param_err(param, "not valid UTF-8 after percent-decoding"))
}

fn parse_so(param: &str, v: &str) -> Result<Vec<RangeInclusive<u32>>, MagnetError> {
    let num = |s: &str| -> Result<u32, MagnetError> {
        s.parse()
            .map_err(|_| param_err(param, format!("'{s}' is not a file index")))
    };
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(param_err(param, format!("range {a}-{b} is backwards")));
                }
                Ok(a..=b)
            }
            None => num(part).map(|n| n..=n),
        })
        .collect()
}

impl FromStr for Magnet {
    type Err = MagnetError;

    fn from_str(s: &str) -> Result<Self, MagnetError> {
        let s = s.trim();
        if s.len() > MAX_MAGNET_LEN {
            return Err(MagnetError::TooLong(s.len()));
        }
        let query = s
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("magnet:?"))
            .map(|_| &s[8..])
            .ok_or(MagnetError::NotMagnet)?;

        let mut v1: Option<InfoHash> = None;
        let mut v2: Option<InfoHashV2> = None;
        let mut m = Magnet::from_info_hash(InfoHash([0; 20]));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            match base_name(key) {
                "xt" => {
                    let urn = text(key, raw)?;
                    let lower = urn.to_ascii_lowercase();
                    if let Some(h) = lower.strip_prefix("urn:btih:") {
                        let h: InfoHash = urn[urn.len() - h.len()..]
                            .parse()
                            .map_err(|e: crate::ParseHashError| param_err(key, e.to_string()))?;
                        if v1.is_some_and(|old| old != h) {
                            return Err(param_err(key, "two different btih info hashes"));
                        }
                        v1 = Some(h);
                    } else if let Some(mh) = lower.strip_prefix("urn:btmh:") {
                        let hex = mh.strip_prefix("1220").ok_or_else(|| {
                            param_err(key, "multihash must be SHA-256 (prefix 1220)")
                        })?;
                        let h: InfoHashV2 = hex.parse().map_err(|_| {
                            param_err(key, "btmh must be 1220 followed by 64 hex digits")
                        })?;
                        if v2.is_some_and(|old| old != h) {
                            return Err(param_err(key, "two different btmh info hashes"));
                        }
                        v2 = Some(h);
                    } else {
                        // Other URNs (ed2k, sha1 of a file) are not ours; keep them.
                        m.other.push((key.to_owned(), urn));
                    }
                }
                "dn" => m.name = Some(text(key, raw)?),
                "tr" => m.trackers.push(text(key, raw)?),
                "x.pe" => {
                    let addr = text(key, raw)?;
                    m.peers
                        .push(addr.parse().map_err(|e: String| param_err(key, e))?);
                }
                "ws" => m.web_seeds.push(text(key, raw)?),
                "xs" => m.exact_sources.push(text(key, raw)?),
                "as" => m.acceptable_sources.push(text(key, raw)?),
                "kt" => m.keywords.extend(
                    text(key, raw)?
                        .split([' ', '+'])
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned),
                ),
                "xl" => {
                    let t = text(key, raw)?;
                    m.exact_length = Some(
                        t.parse()
                            .map_err(|_| param_err(key, format!("'{t}' is not a byte count")))?,
                    );
                }
                "so" => m.select_only.extend(parse_so(key, &text(key, raw)?)?),
                _ => m.other.push((text(key, key)?, text(key, raw)?)),
            }
        }
        m.info_hashes = match (v1, v2) {
            (Some(a), Some(b)) => InfoHashes::Hybrid(a, b),
            (Some(a), None) => InfoHashes::V1(a),
            (None, Some(b)) => InfoHashes::V2(b),
            (None, None) => return Err(MagnetError::NoInfoHash),
        };
        Ok(m)
    }
}

impl fmt::Display for Magnet {
    /// The canonical form: btih in lowercase hex, then btmh, then the rest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep URLs readable: ':' and '/' are legal in a query component.
        let enc = |s: &str| percent_encode(s.as_bytes(), b":/@");
        f.write_str("magnet:?")?;
        let mut sep = "";
        let mut put = |f: &mut fmt::Formatter<'_>, k: &str, v: &str| -> fmt::Result {
            let r = write!(f, "{sep}{k}={v}");
            sep = "&";
            r
        };
        if let Some(h) = self.info_hashes.v1() {
            put(f, "xt", &format!("urn:btih:{h}"))?;
        }
        if let Some(h) = self.info_hashes.v2() {
            put(f, "xt", &format!("urn:btmh:{}", h.to_multihash_hex()))?;
        }
        if let Some(n) = &self.name {
            put(f, "dn", &enc(n))?;
        }
        if let Some(l) = self.exact_length {
            put(f, "xl", &l.to_string())?;
        }
        for t in &self.trackers {
            put(f, "tr", &enc(t))?;
        }
        for w in &self.web_seeds {
            put(f, "ws", &enc(w))?;
        }
        for x in &self.exact_sources {
            put(f, "xs", &enc(x))?;
        }
        for x in &self.acceptable_sources {
            put(f, "as", &enc(x))?;
        }
        if !self.keywords.is_empty() {
            put(f, "kt", &enc(&self.keywords.join(" ")))?;
        }
        for p in &self.peers {
            put(f, "x.pe", &enc(&p.to_string()))?;
        }
        if !self.select_only.is_empty() {
            let so: Vec<String> = self
                .select_only
                .iter()
                .map(|r| {
                    if r.start() == r.end() {
                        r.start().to_string()
                    } else {
                        format!("{}-{}", r.start(), r.end())
                    }
                })
                .collect();
            put(f, "so", &so.join(","))?;
        }
        for (k, v) in &self.other {
            put(f, &enc(k), &enc(v))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "46e9756a2d7332452e3d7726ace04821e94c2869";

    fn parse(s: &str) -> Magnet {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        s.parse::<Magnet>().unwrap_err().to_string()
    }

    #[test]
    fn minimal_hex_and_base32() {
        let m = parse(&format!("magnet:?xt=urn:btih:{HEX}"));
        assert_eq!(m.info_hashes.v1().unwrap().to_hex(), HEX);
        let b32 = crate::encoding::to_base32(m.info_hashes.v1().unwrap().as_bytes());
        let m2 = parse(&format!("magnet:?xt=urn:btih:{b32}"));
        assert_eq!(m2.info_hashes, m.info_hashes);
        assert_eq!(m.to_string(), format!("magnet:?xt=urn:btih:{HEX}"));
    }

    #[test]
    fn every_parameter() {
        let v2 = "a".repeat(64);
        let s = format!(
            "magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{v2}&dn=My+File%20%C3%A9&xl=1234\
             &tr=udp%3A%2F%2Ftracker.example%3A1337%2Fannounce&tr.1=http://t2.example/a?x=1\
             &x.pe=127.0.0.1:6881&x.pe=[::1]:51413&x.pe=peer.example:7000\
             &ws=http%3A%2F%2Fseed.example%2Ff&xs=http://cache.example/t.torrent\
             &as=http://cache2.example/t.torrent&kt=linux+iso&so=0,2,4-6&foo=bar"
        );
        let m = parse(&s);
        assert!(matches!(m.info_hashes, InfoHashes::Hybrid(..)));
        assert_eq!(m.name.as_deref(), Some("My File é"));
        assert_eq!(m.exact_length, Some(1234));
        assert_eq!(
            m.trackers,
            [
                "udp://tracker.example:1337/announce",
                "http://t2.example/a?x=1"
            ]
        );
        assert_eq!(
            m.peers,
            [
                PeerAddr::Ip("127.0.0.1:6881".parse().unwrap()),
                PeerAddr::Ip("[::1]:51413".parse().unwrap()),
                PeerAddr::Host("peer.example".into(), 7000)
            ]
        );
        assert_eq!(m.web_seeds, ["http://seed.example/f"]);
        assert_eq!(m.exact_sources, ["http://cache.example/t.torrent"]);
        assert_eq!(m.acceptable_sources, ["http://cache2.example/t.torrent"]);
        assert_eq!(m.keywords, ["linux", "iso"]);
        assert_eq!(m.select_only, [0..=0, 2..=2, 4..=6]);
        assert!(m.selects_file(5) && !m.selects_file(3));
        assert_eq!(m.other, [("foo".to_owned(), "bar".to_owned())]);
        // Round trip through the canonical string.
        let again = parse(&m.to_string());
        assert_eq!(again, m);
    }

    #[test]
    fn btmh_only() {
        let v2 = "0123456789abcdef".repeat(4);
        let m = parse(&format!("magnet:?xt=urn:btmh:1220{v2}"));
        assert_eq!(m.info_hashes.v2().unwrap().to_hex(), v2);
        assert_eq!(m.info_hashes.v1(), None);
        assert_eq!(parse(&m.to_string()), m);
    }

    #[test]
    fn errors_name_the_parameter() {
        assert_eq!(
            err("http://x"),
            "not a magnet link: it must start with 'magnet:?'"
        );
        assert_eq!(
            err("magnet:?dn=x"),
            "no 'xt' parameter with a BitTorrent info hash (urn:btih or urn:btmh)"
        );
        assert_eq!(
            err("magnet:?xt=urn:btih:abc"),
            "parameter 'xt': not an info hash: expected 40 hex or 32 base32 characters, got 3 characters"
        );
        assert!(err("magnet:?xt=urn:btmh:1114abcd").contains("prefix 1220"));
        assert!(
            err(&format!("magnet:?xt=urn:btih:{HEX}&x.pe=1.2.3.4")).starts_with("parameter 'x.pe'")
        );
        assert!(err(&format!("magnet:?xt=urn:btih:{HEX}&x.pe=1.2.3.4:0")).contains("x.pe"));
        assert!(err(&format!("magnet:?xt=urn:btih:{HEX}&so=5-2")).contains("backwards"));
        assert!(err(&format!("magnet:?xt=urn:btih:{HEX}&xl=-1")).contains("'xl'"));
        assert!(err(&format!("magnet:?xt=urn:btih:{HEX}&dn=%zz")).contains("'dn'"));
        assert!(err(&format!("magnet:?xt=urn:btih:{HEX}&dn=%ff")).contains("UTF-8"));
        let other = "b".repeat(40);
        assert!(
            err(&format!("magnet:?xt=urn:btih:{HEX}&xt.2=urn:btih:{other}"))
                .contains("two different")
        );
        assert!(matches!(
            "magnet:?".repeat(10_000).parse::<Magnet>(),
            Err(MagnetError::TooLong(_))
        ));
    }

    #[test]
    fn case_insensitive_scheme_and_urn() {
        let m = parse(&format!("MAGNET:?xt=URN:BTIH:{}", HEX.to_uppercase()));
        assert_eq!(m.info_hashes.v1().unwrap().to_hex(), HEX);
    }
}
