//! The daemon's configuration file (TOML).
//!
//! Every key has a default, so an empty file (or none) is a valid
//! configuration; unknown keys are errors that name the file and line.
//! `crates/daemon/config.example.toml` shows every key.
//!
//! Where the file is ([`Config::locate`]): `--config PATH`, else
//! `$LODESTONE_CONFIG` (both must exist), else the first that exists of
//! `$XDG_CONFIG_HOME/lodestone/config.toml` (`~/.config/lodestone/config.toml`)
//! and `/etc/lodestone/config.toml`; if none, the defaults.
//!
//! Top level:
//! - `state_dir`: resume data, .torrent copies, the DHT table. Default
//!   `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else
//!   `$XDG_STATE_HOME/lodestone`, else `~/.local/state/lodestone`.
//! - `download_dir`: where content goes. Default `~/Downloads`, or
//!   `<state_dir>/downloads` when there is no home.
//! - `incomplete_dir`: if set, content is downloaded here and moved to
//!   `download_dir` (or its category's directory) when complete.
//! - `watch_dir`: if set, `.torrent` and `.magnet` files put here are added.
//! - `start_added_torrents` (true): start torrents as they are added.
//!
//! All four directories must be absolute paths (`~` is not expanded).
//!
//! `[rpc]`, the HTTP server (Transmission's RPC, the native API, metrics):
//! - `bind` (`127.0.0.1:9091`).
//! - `username`, `password`: HTTP Basic credentials; both or neither.
//! - `whitelist` (`["127.0.0.1", "::1"]`): client addresses allowed, `*`
//!   matching any run of characters (`"192.168.*.*"`); `whitelist_enabled`
//!   (true) turns the check on.
//! - `host_whitelist` (`[]`): host names accepted in `Host:` when no password
//!   is set (against DNS rebinding); IP literals and `localhost` always are.
//! - `allow_unauthenticated_remote` (false): a `bind` other than loopback
//!   without a password is refused unless this is set.
//!
//! `[peers]`: `listen` (`0.0.0.0:51413`), `max_connections` (500),
//! `max_peers_per_torrent` (50), `upload_slots` (8), `pex` (true), `lpd`
//! (true), `encryption` (`"prefer"`, `"require"` or `"allow"`).
//!
//! `[dht]`: `enabled` (true), `bootstrap` (`"host:port"` routers; default the
//! public ones), `listen` (default: `peers.listen`).
//!
//! `[limits]`: `download`, `upload`, `alt_download`, `alt_upload`: bytes per
//! second as an integer or a string with a unit (`"10 MiB/s"`, `"500 kB/s"`,
//! `"20 Mbit/s"`); absent is unlimited. `alt_enabled` (false) turns the
//! alternative limits on. `[limits.schedule]`: `enabled` (false), `begin`
//! (`"09:00"`), `end` (`"17:00"`), `days` (`"all"`, `"weekdays"`,
//! `"weekends"`, a day `"mon"`, or a list of those) turn them on by time;
//! see [`crate::schedule`] for windows past midnight.
//!
//! `[seeding]`: `ratio_limit` (a number >= 0), `idle_limit_minutes` (> 0):
//! stop seeding past either; absent is no limit.
//!
//! `[categories.<name>]`: `path` (default: the name), relative to
//! `download_dir` or absolute: where torrents of that category go.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroU64};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

use crate::schedule::{DaySet, MinuteOfDay, Schedule};

/// Where the system-wide file is.
pub const SYSTEM_CONFIG: &str = "/etc/lodestone/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: no such config file", path.display())]
    Missing { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A bad key or value; `line` is 1-based, `None` when toml gave no place.
    #[error("{}: {message}", at(path, *line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        /// Dotted, e.g. `peers.listen`; empty if unknown.
        key: String,
        message: String,
    },
    /// No value set and none to derive from the environment.
    #[error("{}: {key} is not set and has no default here: {why}", path.display())]
    NoDefault {
        path: PathBuf,
        key: &'static str,
        why: &'static str,
    },
}

fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// The environment the defaults come from, passed in so that tests do not
/// read the real one.
#[derive(Debug, Clone)]
pub struct Env {
    vars: BTreeMap<String, OsString>,
    system_config: PathBuf,
    /// The command line's `--allow-unauthenticated-remote`: the file's
    /// open `[rpc] bind` without a password is then accepted too.
    allow_unauthenticated_remote: bool,
}

impl Env {
    const VARS: [&'static str; 5] = [
        "LODESTONE_CONFIG",
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
        "HOME",
        "STATE_DIRECTORY",
    ];

    /// No variables set; the system file at [`SYSTEM_CONFIG`].
    pub fn empty() -> Env {
        Env {
            vars: BTreeMap::new(),
            system_config: PathBuf::from(SYSTEM_CONFIG),
            allow_unauthenticated_remote: false,
        }
    }

    /// The variables this module reads, from the process.
    pub fn from_process() -> Env {
        let mut env = Env::empty();
        for name in Self::VARS {
            if let Some(v) = std::env::var_os(name) {
                env.vars.insert(name.to_owned(), v);
            }
        }
        env
    }

    pub fn with_var(mut self, name: &str, value: impl Into<OsString>) -> Env {
        self.vars.insert(name.to_owned(), value.into());
        self
    }

    /// What `--allow-unauthenticated-remote` says.
    pub fn allowing_unauthenticated_remote(mut self, allow: bool) -> Env {
        self.allow_unauthenticated_remote = allow;
        self
    }

    pub fn with_system_config(mut self, path: impl Into<PathBuf>) -> Env {
        self.system_config = path.into();
        self
    }

    /// A variable holding an absolute path; relative or empty ones are
    /// ignored, as the XDG spec says.
    fn dir(&self, name: &str) -> Option<PathBuf> {
        let v = self.vars.get(name)?;
        let p = PathBuf::from(v);
        p.is_absolute().then_some(p)
    }
}

// ---------------------------------------------------------------------------
// Value types

/// A rate in bytes per second; never zero (no limit is written as no key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate(NonZeroU64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a rate (expected bytes per second, or a number and a unit such as \"10 MiB/s\", \"500 kB/s\", \"20 Mbit/s\"; 0 is not allowed: leave the key out for no limit)")]
pub struct RateError(String);

impl Rate {
    const UNITS: [(&'static str, u64); 13] = [
        ("", 1),
        ("B", 1),
        ("kB", 1_000),
        ("KB", 1_000),
        ("KiB", 1 << 10),
        ("MB", 1_000_000),
        ("MiB", 1 << 20),
        ("GB", 1_000_000_000),
        ("GiB", 1 << 30),
        ("kbit", 125),
        ("Kbit", 125),
        ("Mbit", 125_000),
        ("Gbit", 125_000_000),
    ];

    pub fn new(bytes_per_second: u64) -> Option<Rate> {
        NonZeroU64::new(bytes_per_second).map(Rate)
    }

    pub fn bytes_per_second(self) -> u64 {
        self.0.get()
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Rate, RateError> {
        let bad = || RateError(s.to_owned());
        let t = s.trim();
        let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = (&t[..split], t[split..].trim());
        if number.is_empty() || number.starts_with('.') {
            return Err(bad());
        }
        let (_, scale) = Rate::UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .ok_or_else(bad)?;
        let scale = *scale;
        let bytes = if let Ok(n) = number.parse::<u64>() {
            n.checked_mul(scale).ok_or_else(bad)?
        } else {
            let n: f64 = number.parse().map_err(|_| bad())?;
            let b = (n * scale as f64).round();
            if !(b.is_finite() && b < u64::MAX as f64) {
                return Err(bad());
            }
            b as u64
        };
        Rate::new(bytes).ok_or_else(bad)
    }
}

/// The largest unit that divides exactly (binary first), so that
/// `--print-config` reads as a person would write it.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes_per_second();
        for (unit, scale) in [
            ("GiB", 1u64 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
            ("GB", 1_000_000_000),
            ("MB", 1_000_000),
            ("kB", 1_000),
        ] {
            if b % scale == 0 {
                return write!(f, "{} {unit}/s", b / scale);
            }
        }
        write!(f, "{b} B/s")
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes per second, or a string such as \"10 MiB/s\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rate, E> {
                u64::try_from(v)
                    .ok()
                    .and_then(Rate::new)
                    .ok_or_else(|| E::custom(RateError(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rate, E> {
                Rate::new(v).ok_or_else(|| E::custom(RateError(v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A seeding ratio: finite and not negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Ratio(f64);

impl Ratio {
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Ratio {
    type Error = String;
    fn try_from(v: f64) -> Result<Ratio, String> {
        if v.is_finite() && v >= 0.0 {
            Ok(Ratio(v))
        } else {
            Err(format!(
                "{v} is not a ratio (expected a number of at least 0)"
            ))
        }
    }
}

impl From<Ratio> for f64 {
    fn from(r: Ratio) -> f64 {
        r.0
    }
}

/// A `host:port` (`[v6]:port` for IPv6 literals).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// The host without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(s: String) -> Result<HostPort, String> {
        let bad = || format!("'{s}' is not host:port");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(v6) => {
                let v6 = v6.strip_suffix(']').ok_or_else(bad)?;
                v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
                v6
            }
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl From<HostPort> for String {
    fn from(h: HostPort) -> String {
        h.to_string()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An entry of `rpc.whitelist`: an address, or a pattern where `*`
/// matches any run of characters of the address as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum IpPattern {
    Exact(IpAddr),
    Wildcard(String),
}

impl IpPattern {
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self {
            IpPattern::Exact(p) => *p == ip,
            IpPattern::Wildcard(p) => glob(p, &ip.to_string()),
        }
    }
}

impl TryFrom<String> for IpPattern {
    type Error = String;
    fn try_from(s: String) -> Result<IpPattern, String> {
        let t = s.trim().to_ascii_lowercase();
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(IpPattern::Exact(ip.to_canonical()));
        }
        let ok_chars = t
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '*'));
        if t.contains('*') && ok_chars {
            Ok(IpPattern::Wildcard(t))
        } else {
            Err(format!(
                "'{s}' is not an address or pattern (e.g. \"127.0.0.1\", \"192.168.*.*\", \"::1\")"
            ))
        }
    }
}

impl From<IpPattern> for String {
    fn from(p: IpPattern) -> String {
        match p {
            IpPattern::Exact(ip) => ip.to_string(),
            IpPattern::Wildcard(s) => s,
        }
    }
}

/// `*` matches any run of characters; ASCII case is ignored.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A password: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A category name: usable as one path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CategoryName(String);

impl CategoryName {
    pub fn new(name: &str) -> Result<CategoryName, String> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            Err(format!(
                "'{name}' is not a category name (it must not be empty, '.', '..' or contain '/')"
            ))
        } else {
            Ok(CategoryName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// ---------------------------------------------------------------------------
// Sections

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    #[serde(serialize_with = "lossy_path")]
    pub state_dir: PathBuf,
    #[serde(serialize_with = "lossy_path")]
    pub download_dir: PathBuf,
    #[serde(
        serialize_with = "lossy_opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub incomplete_dir: Option<PathBuf>,
    #[serde(
        serialize_with = "lossy_opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub watch_dir: Option<PathBuf>,
    pub start_added_torrents: bool,
    pub rpc: RpcConfig,
    pub peers: PeersConfig,
    pub dht: DhtConfig,
    pub limits: LimitsConfig,
    pub seeding: SeedingConfig,
    pub categories: BTreeMap<CategoryName, Category>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcConfig {
    pub bind: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    pub whitelist: Vec<IpPattern>,
    pub whitelist_enabled: bool,
    pub host_whitelist: Vec<String>,
    pub allow_unauthenticated_remote: bool,
}

impl RpcConfig {
    /// Whether a client at `ip` may talk to the server at all.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        !self.whitelist_enabled || self.whitelist.iter().any(|p| p.matches(ip))
    }

    /// Transmission's `Host:` check against DNS rebinding: with a password
    /// any host goes; without, only an IP literal, `localhost` or a name in
    /// `host_whitelist`. `host` is the header's value, port and all.
    pub fn host_allowed(&self, host: &str) -> bool {
        if self.password.is_some() {
            return true;
        }
        let host = host.trim();
        let name = if let Some(rest) = host.strip_prefix('[') {
            match rest.split_once(']') {
                Some((v6, _port)) => v6,
                None => return false,
            }
        } else if host.parse::<IpAddr>().is_ok() {
            host
        } else {
            host.rsplit_once(':').map_or(host, |(name, _port)| name)
        };
        if name.is_empty() {
            return false;
        }
        name.parse::<IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || name.eq_ignore_ascii_case("localhost.")
            || self.host_whitelist.iter().any(|p| glob(p, name))
    }

    pub fn requires_auth(&self) -> bool {
        self.password.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// Offer encryption, accept plaintext.
    #[default]
    Prefer,
    /// Encrypted connections only.
    Require,
    /// Plaintext first, encryption when the peer asks.
    Allow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    pub listen: SocketAddr,
    pub max_connections: NonZeroU32,
    pub max_peers_per_torrent: NonZeroU32,
    pub upload_slots: NonZeroU32,
    pub pex: bool,
    pub lpd: bool,
    pub encryption: Encryption,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 51413)),
            max_connections: nonzero(500),
            max_peers_per_torrent: nonzero(50),
            upload_slots: nonzero(8),
            pex: true,
            lpd: true,
            encryption: Encryption::Prefer,
        }
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DhtConfig {
    pub enabled: bool,
    pub bootstrap: Vec<HostPort>,
    pub listen: SocketAddr,
}

/// The public DHT routers.
pub const DHT_ROUTERS: [(&str, u16); 4] = [
    ("router.bittorrent.com", 6881),
    ("dht.transmissionbt.com", 6881),
    ("router.utorrent.com", 6881),
    ("dht.libtorrent.org", 25401),
];

fn default_bootstrap() -> Vec<HostPort> {
    DHT_ROUTERS
        .iter()
        .map(|(host, port)| HostPort {
            host: (*host).to_owned(),
            port: *port,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt_download: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt_upload: Option<Rate>,
    pub alt_enabled: bool,
    pub schedule: ScheduleConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub enabled: bool,
    pub begin: MinuteOfDay,
    pub end: MinuteOfDay,
    pub days: DaySet,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        let s = Schedule::DEFAULT;
        ScheduleConfig {
            enabled: false,
            begin: s.begin,
            end: s.end,
            days: s.days,
        }
    }
}

impl ScheduleConfig {
    /// The schedule, enabled or not (Transmission's RPC reports both).
    pub fn schedule(&self) -> Schedule {
        Schedule {
            begin: self.begin,
            end: self.end,
            days: self.days,
        }
    }

    /// The schedule if it is enabled.
    pub fn active(&self) -> Option<Schedule> {
        self.enabled.then(|| self.schedule())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeedingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_limit: Option<Ratio>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_limit_minutes: Option<NonZeroU32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Category {
    /// Relative to `download_dir`, or absolute; `None` is the name.
    #[serde(
        serialize_with = "lossy_opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub path: Option<PathBuf>,
}

fn lossy_path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    // TOML strings are UTF-8; a path from the environment might not be.
    s.serialize_str(&p.to_string_lossy())
}

fn lossy_opt_path<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => lossy_path(p, s),
        None => s.serialize_none(),
    }
}

// ---------------------------------------------------------------------------
// The file as written: spans kept where a check needs a line number.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    state_dir: Option<Spanned<PathBuf>>,
    download_dir: Option<Spanned<PathBuf>>,
    incomplete_dir: Option<Spanned<PathBuf>>,
    watch_dir: Option<Spanned<PathBuf>>,
    start_added_torrents: Option<bool>,
    rpc: RawRpc,
    peers: PeersConfig,
    dht: RawDht,
    limits: LimitsConfig,
    seeding: SeedingConfig,
    categories: BTreeMap<Spanned<String>, RawCategory>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawRpc {
    bind: Option<Spanned<SocketAddr>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<Secret>>,
    whitelist: Option<Vec<IpPattern>>,
    whitelist_enabled: Option<bool>,
    host_whitelist: Vec<Spanned<String>>,
    allow_unauthenticated_remote: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawDht {
    enabled: Option<bool>,
    bootstrap: Option<Vec<HostPort>>,
    listen: Option<SocketAddr>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawCategory {
    path: Option<Spanned<PathBuf>>,
}

/// Turns spans into `file:line` errors.
struct Source<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            line: Some(self.line(span.start)),
            key: key.to_owned(),
            message: format!("{key}: {message}"),
        }
    }

    /// The `[table]` in force on lines before `line` (1-based); "" at the top.
    fn table_before(&self, line: usize) -> String {
        let mut table = String::new();
        for l in self.text.lines().take(line.saturating_sub(1)) {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix('[') {
                let rest = rest.trim_start_matches('[');
                if let Some((name, _)) = rest.split_once(']') {
                    table = name.trim().to_owned();
                }
            }
        }
        table
    }

    /// The key set on `line`, or on the nearest line above it that sets one
    /// (for values spread over several lines).
    fn key_at(&self, line: usize) -> Option<String> {
        let lines: Vec<&str> = self.text.lines().take(line).collect();
        for l in lines.iter().rev() {
            let l = l.trim();
            if l.starts_with('[') {
                return None;
            }
            if let Some((key, _)) = l.split_once('=') {
                let key = key.trim().trim_matches('"');
                if !key.is_empty() && !key.starts_with('#') {
                    return Some(key.to_owned());
                }
            }
        }
        None
    }

    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let line = err.span().map(|s| self.line(s.start));
        let table = line.map(|l| self.table_before(l)).unwrap_or_default();
        let msg = err.message().trim();
        let section = if table.is_empty() {
            "the top level".to_owned()
        } else {
            format!("[{table}]")
        };
        let dotted = |key: &str| {
            if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            }
        };
        let (key, message) = if let Some(rest) = msg.strip_prefix("unknown field `") {
            let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
            let expected = tail.trim_start_matches([',', ' ']).replace('`', "'");
            let hint = if expected.is_empty() {
                String::new()
            } else {
                format!(" ({expected})")
            };
            (
                dotted(name),
                format!("unknown key '{name}' in {section}{hint}"),
            )
        } else if let Some(key) = line.and_then(|l| self.key_at(l)) {
            let key = dotted(&key);
            (key.clone(), format!("{key}: {msg}"))
        } else {
            (String::new(), msg.to_owned())
        };
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            line,
            key,
            message,
        }
    }

    fn absolute(
        &self,
        key: &str,
        p: Option<Spanned<PathBuf>>,
    ) -> Result<Option<PathBuf>, ConfigError> {
        match p {
            None => Ok(None),
            Some(p) if p.get_ref().is_absolute() => Ok(Some(p.into_inner())),
            Some(p) => Err(self.invalid(
                p.span(),
                key,
                format!(
                    "\"{}\" is a relative path; write it in full (`~` is not expanded)",
                    p.get_ref().display()
                ),
            )),
        }
    }
}

impl Config {
    /// Which file to read: see the module docs. `Ok(None)` means none
    /// exists and the defaults apply.
    pub fn locate(explicit: Option<&Path>, env: &Env) -> Result<Option<PathBuf>, ConfigError> {
        let named = explicit.map(Path::to_path_buf).or_else(|| {
            env.vars
                .get("LODESTONE_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        if let Some(path) = named {
            // Asked for by name: a typo must not fall back to defaults.
            return if path.exists() {
                Ok(Some(path))
            } else {
                Err(ConfigError::Missing { path })
            };
        }
        let user = env
            .dir("XDG_CONFIG_HOME")
            .or_else(|| env.dir("HOME").map(|h| h.join(".config")))
            .map(|d| d.join("lodestone").join("config.toml"));
        Ok(user
            .into_iter()
            .chain([env.system_config.clone()])
            .find(|p| p.exists()))
    }

    /// [`Config::locate`] then [`Config::load`], or the defaults; with the
    /// file read, if any.
    pub fn discover(
        explicit: Option<&Path>,
        env: &Env,
    ) -> Result<(Config, Option<PathBuf>), ConfigError> {
        match Config::locate(explicit, env)? {
            Some(path) => Ok((Config::load(&path, env)?, Some(path))),
            None => Ok((Config::defaults(env)?, None)),
        }
    }

    pub fn load(path: &Path, env: &Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, path, env)
    }

    /// The configuration with no file.
    pub fn defaults(env: &Env) -> Result<Config, ConfigError> {
        Config::from_toml_str("", Path::new("(defaults)"), env)
    }

    /// Parse `text`; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path, env: &Env) -> Result<Config, ConfigError> {
        let src = Source { text, origin };
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        Config::resolve(raw, &src, env)
    }

    fn resolve(raw: RawConfig, src: &Source<'_>, env: &Env) -> Result<Config, ConfigError> {
        let no_default = |key, why| ConfigError::NoDefault {
            path: src.origin.to_owned(),
            key,
            why,
        };
        let state_dir = match src.absolute("state_dir", raw.state_dir)? {
            Some(p) => p,
            None => env
                .vars
                .get("STATE_DIRECTORY")
                .and_then(|v| std::env::split_paths(v).next())
                .filter(|p| p.is_absolute())
                .or_else(|| env.dir("XDG_STATE_HOME").map(|d| d.join("lodestone")))
                .or_else(|| env.dir("HOME").map(|h| h.join(".local/state/lodestone")))
                .ok_or_else(|| {
                    no_default(
                        "state_dir",
                        "none of STATE_DIRECTORY, XDG_STATE_HOME and HOME is set to an absolute path",
                    )
                })?,
        };
        let download_dir = match src.absolute("download_dir", raw.download_dir)? {
            Some(p) => p,
            None => env
                .dir("HOME")
                .map(|h| h.join("Downloads"))
                .unwrap_or_else(|| state_dir.join("downloads")),
        };
        let incomplete_dir = src.absolute("incomplete_dir", raw.incomplete_dir)?;
        let watch_dir = src.absolute("watch_dir", raw.watch_dir)?;

        let rpc = Config::resolve_rpc(raw.rpc, src, env)?;

        let mut categories = BTreeMap::new();
        for (name, cat) in raw.categories {
            let key = format!("categories.{}", name.get_ref());
            let cname =
                CategoryName::new(name.get_ref()).map_err(|m| src.invalid(name.span(), &key, m))?;
            let path = match cat.path {
                None => None,
                Some(p) => {
                    let bad = p.get_ref().as_os_str().is_empty()
                        || p.get_ref().components().any(|c| c == Component::ParentDir);
                    if bad {
                        return Err(src.invalid(
                            p.span(),
                            &format!("{key}.path"),
                            format!(
                                "\"{}\" must not be empty or contain '..'",
                                p.get_ref().display()
                            ),
                        ));
                    }
                    Some(p.into_inner())
                }
            };
            categories.insert(cname, Category { path });
        }

        Ok(Config {
            state_dir,
            download_dir,
            incomplete_dir,
            watch_dir,
            start_added_torrents: raw.start_added_torrents.unwrap_or(true),
            rpc,
            dht: DhtConfig {
                enabled: raw.dht.enabled.unwrap_or(true),
                bootstrap: raw.dht.bootstrap.unwrap_or_else(default_bootstrap),
                listen: raw.dht.listen.unwrap_or(raw.peers.listen),
            },
            peers: raw.peers,
            limits: raw.limits,
            seeding: raw.seeding,
            categories,
        })
    }

    fn resolve_rpc(mut raw: RawRpc, src: &Source<'_>, env: &Env) -> Result<RpcConfig, ConfigError> {
        raw.allow_unauthenticated_remote |= env.allow_unauthenticated_remote;
        match (&raw.username, &raw.password) {
            (Some(u), None) => {
                return Err(src.invalid(
                    u.span(),
                    "rpc.username",
                    "is set but rpc.password is not: set both or neither".to_owned(),
                ))
            }
            (None, Some(p)) => {
                return Err(src.invalid(
                    p.span(),
                    "rpc.password",
                    "is set but rpc.username is not: set both or neither".to_owned(),
                ))
            }
            _ => {}
        }
        let default_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 9091));
        let bind = match raw.bind {
            Some(b) => {
                let open = !b.get_ref().ip().to_canonical().is_loopback();
                if open && raw.password.is_none() && !raw.allow_unauthenticated_remote {
                    return Err(src.invalid(
                        b.span(),
                        "rpc.bind",
                        format!(
                            "{} can be reached from other hosts and no password is set: set rpc.username \
                             and rpc.password, bind to 127.0.0.1, or set allow_unauthenticated_remote = true \
                             if something else guards it",
                            b.get_ref()
                        ),
                    ));
                }
                b.into_inner()
            }
            None => default_bind,
        };
        let mut host_whitelist = Vec::new();
        for h in raw.host_whitelist {
            let bad = h.get_ref().trim().is_empty()
                || h.get_ref().chars().any(|c| c.is_whitespace() || c == '/');
            if bad {
                return Err(src.invalid(
                    h.span(),
                    "rpc.host_whitelist",
                    format!("'{}' is not a host name pattern", h.get_ref()),
                ));
            }
            host_whitelist.push(h.into_inner());
        }
        Ok(RpcConfig {
            bind,
            username: raw.username.map(Spanned::into_inner),
            password: raw.password.map(Spanned::into_inner),
            whitelist: raw.whitelist.unwrap_or_else(|| {
                vec![
                    IpPattern::Exact(Ipv4Addr::LOCALHOST.into()),
                    IpPattern::Exact(std::net::Ipv6Addr::LOCALHOST.into()),
                ]
            }),
            whitelist_enabled: raw.whitelist_enabled.unwrap_or(true),
            host_whitelist,
            allow_unauthenticated_remote: raw.allow_unauthenticated_remote,
        })
    }

    /// The effective configuration as TOML (`--print-config`): every value
    /// written out, so reading it back gives the same configuration.
    pub fn to_toml(&self) -> String {
        match toml::to_string(self) {
            Ok(s) => s,
            // Only maps with non-string keys fail, and there are none.
            Err(e) => format!("# cannot print the configuration: {e}\n"),
        }
    }

    /// Where a torrent of `category` goes, if the category exists.
    pub fn category_dir(&self, category: &str) -> Option<PathBuf> {
        let name = CategoryName::new(category).ok()?;
        let cat = self.categories.get(&name)?;
        Some(match &cat.path {
            Some(p) => self.download_dir.join(p),
            None => self.download_dir.join(name.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ORIGIN: &str = "/etc/lodestone/config.toml";

    fn env() -> Env {
        Env::empty()
            .with_var("HOME", "/home/u")
            .with_system_config("/nonexistent/lodestone.toml")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new(ORIGIN), &env())
    }

    fn ok(text: &str) -> Config {
        match parse(text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let c = ok("");
        assert_eq!(c.state_dir, Path::new("/home/u/.local/state/lodestone"));
        assert_eq!(c.download_dir, Path::new("/home/u/Downloads"));
        assert_eq!(c.incomplete_dir, None);
        assert!(c.start_added_torrents);
        assert_eq!(
            c.rpc.bind,
            "127.0.0.1:9091".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(c.peers.max_connections.get(), 500);
        assert_eq!(c.peers.upload_slots.get(), 8);
        assert_eq!(c.peers.encryption, Encryption::Prefer);
        assert_eq!(c.dht.listen, c.peers.listen);
        assert_eq!(c.dht.bootstrap.len(), 4);
        assert_eq!(c.dht.bootstrap[3].to_string(), "dht.libtorrent.org:25401");
        assert_eq!(c.limits.schedule.schedule(), Schedule::DEFAULT);
        assert_eq!(c.limits.schedule.active(), None);
        assert!(c.categories.is_empty());
    }

    #[test]
    fn default_dirs_follow_the_environment() {
        let xdg = Env::empty()
            .with_var("XDG_STATE_HOME", "/x/state")
            .with_var("HOME", "/h");
        let c = Config::defaults(&xdg).expect("defaults");
        assert_eq!(c.state_dir, Path::new("/x/state/lodestone"));
        let systemd = xdg
            .clone()
            .with_var("STATE_DIRECTORY", "/var/lib/lodestone:/var/lib/other");
        let c = Config::defaults(&systemd).expect("defaults");
        assert_eq!(c.state_dir, Path::new("/var/lib/lodestone"));
        // A relative XDG value is ignored, as the spec says.
        let rel = Env::empty()
            .with_var("XDG_STATE_HOME", "rel")
            .with_var("HOME", "/h");
        let c = Config::defaults(&rel).expect("defaults");
        assert_eq!(c.state_dir, Path::new("/h/.local/state/lodestone"));
        // No home: downloads go under the state dir.
        let bare = Env::empty().with_var("STATE_DIRECTORY", "/var/lib/lodestone");
        let c = Config::defaults(&bare).expect("defaults");
        assert_eq!(c.download_dir, Path::new("/var/lib/lodestone/downloads"));
        let none = Config::defaults(&Env::empty()).expect_err("no state dir");
        assert!(none.to_string().contains("state_dir"), "{none}");
    }

    #[test]
    fn unknown_keys_name_file_line_and_section() {
        let e =
            err("[rpc]\nbind = \"127.0.0.1:9091\"\n\n[peers]\npex = true\n\nmax_conections = 3\n");
        assert!(
            e.starts_with("/etc/lodestone/config.toml:7: unknown key 'max_conections' in [peers] (expected one of"),
            "{e}"
        );
        assert!(e.contains("'max_connections'"), "{e}");
        let e = err("watchdir = \"/w\"\n");
        assert!(
            e.starts_with(&format!(
                "{ORIGIN}:1: unknown key 'watchdir' in the top level"
            )),
            "{e}"
        );
        let e = err("[limits.schedule]\nbegin = \"09:00\"\nstart = \"1\"\n");
        assert!(
            e.starts_with(&format!(
                "{ORIGIN}:3: unknown key 'start' in [limits.schedule]"
            )),
            "{e}"
        );
        let e = err("[peer]\n");
        assert!(
            e.starts_with(&format!("{ORIGIN}:1: unknown key 'peer'")),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let cases = [
            ("[seeding]\nratio_limit = -1\n", 2, "seeding.ratio_limit"),
            (
                "[limits.schedule]\n\nbegin = \"25:00\"\n",
                3,
                "limits.schedule.begin",
            ),
            (
                "[limits.schedule]\ndays = [\"mon\",\n \"funday\"]\n",
                2,
                "limits.schedule.days",
            ),
            ("[limits.schedule]\ndays = []\n", 2, "limits.schedule.days"),
            ("[limits]\ndownload = \"fast\"\n", 2, "limits.download"),
            ("[limits]\nupload = 0\n", 2, "limits.upload"),
            ("[peers]\nencryption = \"always\"\n", 2, "peers.encryption"),
            ("[peers]\nmax_connections = 0\n", 2, "peers.max_connections"),
            ("[peers]\nlisten = \"nowhere\"\n", 2, "peers.listen"),
            ("[rpc]\nwhitelist = [\"10.0.0.x\"]\n", 2, "rpc.whitelist"),
            (
                "[dht]\nbootstrap = [\"router.example\"]\n",
                2,
                "dht.bootstrap",
            ),
            ("download_dir = \"Downloads\"\n", 1, "download_dir"),
            ("\nstate_dir = \"~/state\"\n", 2, "state_dir"),
            ("incomplete_dir = \"./inc\"\n", 1, "incomplete_dir"),
            ("watch_dir = \"w\"\n", 1, "watch_dir"),
            ("[rpc]\nusername = \"u\"\n", 2, "rpc.username"),
            (
                "[rpc]\nhost_whitelist = [\"a b\"]\n",
                2,
                "rpc.host_whitelist",
            ),
            ("[categories.\"a/b\"]\n", 1, "categories.a/b"),
            (
                "[categories.tv]\npath = \"../tv\"\n",
                2,
                "categories.tv.path",
            ),
            (
                "start_added_torrents = \"yes\"\n",
                1,
                "start_added_torrents",
            ),
        ];
        for (text, line, key) in cases {
            match parse(text) {
                Ok(_) => panic!("accepted {text:?}"),
                Err(e @ ConfigError::Invalid { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.starts_with(&format!("{ORIGIN}:{line}: {key}")),
                        "{text:?}: {msg}"
                    );
                }
                Err(e) => panic!("{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn an_open_bind_needs_a_password_or_a_waiver() {
        let e = err("[rpc]\nbind = \"0.0.0.0:9091\"\n");
        assert!(e.starts_with(&format!("{ORIGIN}:2: rpc.bind:")), "{e}");
        assert!(e.contains("no password"), "{e}");
        ok("[rpc]\nbind = \"0.0.0.0:9091\"\nusername = \"u\"\npassword = \"p\"\n");
        ok("[rpc]\nbind = \"0.0.0.0:9091\"\nallow_unauthenticated_remote = true\n");
        ok("[rpc]\nbind = \"[::1]:9091\"\n");
        ok("[rpc]\nbind = \"[::ffff:127.0.0.1]:9091\"\n");
    }

    #[test]
    fn rates_take_integers_and_units() {
        let c = ok("[limits]\ndownload = 1000\nupload = \"10 MiB/s\"\nalt_download = \"500 kB/s\"\nalt_upload = \"20Mbit/s\"\n");
        assert_eq!(c.limits.download.map(Rate::bytes_per_second), Some(1000));
        assert_eq!(c.limits.upload.map(Rate::bytes_per_second), Some(10 << 20));
        assert_eq!(
            c.limits.alt_download.map(Rate::bytes_per_second),
            Some(500_000)
        );
        assert_eq!(
            c.limits.alt_upload.map(Rate::bytes_per_second),
            Some(2_500_000)
        );
        for (s, want) in [
            ("1.5 MiB/s", 1_572_864),
            ("2 KiB", 2048),
            ("7 B/s", 7),
            ("3GB/s", 3_000_000_000),
        ] {
            assert_eq!(
                s.parse::<Rate>().map(Rate::bytes_per_second),
                Ok(want),
                "{s}"
            );
        }
        for s in [
            "",
            "MiB/s",
            "-1",
            "1 mib/s",
            "0",
            "0.1 B/s",
            "1e3",
            ".5 MB",
            "99999999999 GiB",
        ] {
            assert!(s.parse::<Rate>().is_err(), "{s}");
        }
        assert_eq!(
            Rate::new(10 << 20).map(|r| r.to_string()).as_deref(),
            Some("10 MiB/s")
        );
        assert_eq!(
            Rate::new(1234).map(|r| r.to_string()).as_deref(),
            Some("1234 B/s")
        );
    }

    #[test]
    fn ip_whitelist() {
        let c = ok("[rpc]\nwhitelist = [\"127.0.0.1\", \"192.168.*.*\", \"::1\", \"fe80::*\"]\n");
        let allowed = |ip: &str| c.rpc.ip_allowed(ip.parse().expect("ip"));
        assert!(allowed("127.0.0.1"));
        assert!(allowed("::ffff:127.0.0.1"));
        assert!(allowed("192.168.1.20"));
        assert!(allowed("::ffff:192.168.0.1"));
        assert!(allowed("::1"));
        assert!(allowed("fe80::1"));
        assert!(!allowed("10.0.0.1"));
        assert!(!allowed("127.0.0.2"));
        assert!(!allowed("192.169.1.1"));
        let off = ok("[rpc]\nwhitelist_enabled = false\n");
        assert!(off.rpc.ip_allowed("8.8.8.8".parse().expect("ip")));
        let defaults = ok("");
        assert!(defaults.rpc.ip_allowed("::1".parse().expect("ip")));
        assert!(!defaults.rpc.ip_allowed("192.168.0.1".parse().expect("ip")));
    }

    #[test]
    fn host_check_follows_transmission() {
        let c = ok("[rpc]\nhost_whitelist = [\"nas.lan\", \"*.example.org\"]\n");
        let r = &c.rpc;
        for host in [
            "localhost",
            "LOCALHOST:9091",
            "localhost.",
            "127.0.0.1:9091",
            "[::1]:9091",
            "[::1]",
            "::1",
            "10.1.2.3",
            "nas.lan:9091",
            "NAS.lan",
            "box.example.org:9091",
        ] {
            assert!(r.host_allowed(host), "{host}");
        }
        for host in [
            "evil.com",
            "localhost.evil.com",
            "",
            ":9091",
            "[::1",
            "example.org",
            "nas.lan.evil",
        ] {
            assert!(!r.host_allowed(host), "{host}");
        }
        let auth = ok("[rpc]\nusername = \"u\"\npassword = \"p\"\n");
        assert!(auth.rpc.host_allowed("evil.com"));
        assert!(auth.rpc.requires_auth());
    }

    #[test]
    fn glob_matches() {
        assert!(glob("*", ""));
        assert!(glob("a*c", "abbbc"));
        assert!(glob("*.b.*", "a.b.c"));
        assert!(!glob("a*c", "abcd"));
        assert!(glob("a**", "a"));
        assert!(!glob("", "a"));
    }

    #[test]
    fn days_and_schedule() {
        let c = ok("[limits.schedule]\nenabled = true\nbegin = \"22:00\"\nend = \"06:30\"\ndays = \"weekdays\"\n");
        let s = c.limits.schedule.active().expect("enabled");
        assert_eq!(s.to_transmission().day, 62);
        assert_eq!(s.end.get(), 6 * 60 + 30);
        let c = ok("[limits.schedule]\ndays = [\"Sat\", \"sunday\", \"fri\"]\n");
        assert_eq!(c.limits.schedule.days.transmission_mask(), 1 | 32 | 64);
        let c = ok("[limits.schedule]\ndays = [\"weekends\", \"mon\"]\n");
        assert_eq!(c.limits.schedule.days.transmission_mask(), 1 | 2 | 64);
    }

    #[test]
    fn categories_resolve_under_the_download_dir() {
        let c = ok("download_dir = \"/data\"\n[categories.tv]\n[categories.movies]\npath = \"films/hd\"\n[categories.abs]\npath = \"/srv/abs\"\n");
        assert_eq!(c.category_dir("tv"), Some(PathBuf::from("/data/tv")));
        assert_eq!(
            c.category_dir("movies"),
            Some(PathBuf::from("/data/films/hd"))
        );
        assert_eq!(c.category_dir("abs"), Some(PathBuf::from("/srv/abs")));
        assert_eq!(c.category_dir("music"), None);
        assert_eq!(c.category_dir("../tv"), None);
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let c = ok("[rpc]\nusername = \"u\"\npassword = \"hunter2\"\n");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.rpc.password.as_ref().map(Secret::expose), Some("hunter2"));
    }

    #[test]
    fn to_toml_round_trips() {
        let defaults = ok("");
        assert_eq!(ok(&defaults.to_toml()), defaults);
        let full = ok(&uncommented_example());
        let printed = full.to_toml();
        assert_eq!(ok(&printed), full, "{printed}");
        // Values from the environment are written out, so the printed file
        // means the same under another environment.
        let elsewhere = Env::empty().with_var("HOME", "/other");
        assert_eq!(
            Config::from_toml_str(&defaults.to_toml(), Path::new("p"), &elsewhere).expect("parse"),
            defaults
        );
    }

    const EXAMPLE: &str = include_str!("../config.example.toml");

    /// The example with every `#key = value` line turned on (prose is
    /// `# text`, with a space).
    fn uncommented_example() -> String {
        EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn keys(text: &str) -> std::collections::BTreeSet<String> {
        let mut table = String::new();
        let mut out = std::collections::BTreeSet::new();
        for l in text.lines().map(str::trim) {
            if let Some(t) = l.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                table = t.to_owned();
                out.insert(format!("[{table}]"));
            } else if let Some((k, _)) = l.split_once('=').filter(|_| !l.starts_with('#')) {
                out.insert(format!("{table}.{}", k.trim()));
            }
        }
        out
    }

    #[test]
    fn the_example_parses_as_is_and_uncommented() {
        assert_eq!(ok(EXAMPLE), ok(""));
        let full = ok(&uncommented_example());
        // Uncommented, it sets every optional key...
        assert!(full.incomplete_dir.is_some() && full.watch_dir.is_some());
        assert!(full.rpc.username.is_some() && full.rpc.password.is_some());
        let l = &full.limits;
        assert!(
            l.download.is_some()
                && l.upload.is_some()
                && l.alt_download.is_some()
                && l.alt_upload.is_some()
        );
        assert!(full.seeding.ratio_limit.is_some() && full.seeding.idle_limit_minutes.is_some());
        assert!(!full.categories.is_empty());
        // ...and shows every key the configuration has.
        assert_eq!(keys(&uncommented_example()), keys(&full.to_toml()));
    }

    #[test]
    fn locate_prefers_explicit_then_env_then_user_then_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let system = d.join("etc.toml");
        let user = d.join("xdg/lodestone/config.toml");
        let named = d.join("named.toml");
        let env = Env::empty()
            .with_var("XDG_CONFIG_HOME", d.join("xdg"))
            .with_system_config(&system);
        assert_eq!(Config::locate(None, &env).expect("locate"), None);
        std::fs::write(&system, "").expect("write");
        assert_eq!(
            Config::locate(None, &env).expect("locate"),
            Some(system.clone())
        );
        std::fs::create_dir_all(d.join("xdg/lodestone")).expect("mkdir");
        std::fs::write(&user, "").expect("write");
        assert_eq!(
            Config::locate(None, &env).expect("locate"),
            Some(user.clone())
        );
        // $LODESTONE_CONFIG must exist.
        let with_var = env.clone().with_var("LODESTONE_CONFIG", &named);
        assert!(matches!(
            Config::locate(None, &with_var),
            Err(ConfigError::Missing { .. })
        ));
        std::fs::write(&named, "").expect("write");
        assert_eq!(
            Config::locate(None, &with_var).expect("locate"),
            Some(named.clone())
        );
        // --config beats everything, and must exist too.
        assert_eq!(
            Config::locate(Some(&system), &with_var).expect("locate"),
            Some(system.clone())
        );
        let typo = d.join("typo.toml");
        let e = Config::locate(Some(&typo), &env).expect_err("missing");
        assert!(e.to_string().contains("typo.toml"), "{e}");
        // HOME stands in for XDG_CONFIG_HOME.
        let home = Env::empty()
            .with_var("HOME", d.join("home"))
            .with_system_config(&system);
        std::fs::create_dir_all(d.join("home/.config/lodestone")).expect("mkdir");
        std::fs::write(d.join("home/.config/lodestone/config.toml"), "").expect("write");
        assert_eq!(
            Config::locate(None, &home).expect("locate"),
            Some(d.join("home/.config/lodestone/config.toml"))
        );
    }

    #[test]
    fn load_reports_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[peers]\nlisten = \"0.0.0.0:6881\"\n").expect("write");
        let (c, from) = Config::discover(Some(&path), &env()).expect("discover");
        assert_eq!(from.as_deref(), Some(path.as_path()));
        assert_eq!(c.peers.listen.port(), 6881);
        assert_eq!(c.dht.listen.port(), 6881);
        std::fs::write(&path, "\n\n[dht]\nenable = true\n").expect("write");
        let e = Config::load(&path, &env()).expect_err("bad key");
        assert!(
            e.to_string().starts_with(&format!(
                "{}:4: unknown key 'enable' in [dht]",
                path.display()
            )),
            "{e}"
        );
        let e = Config::load(&dir.path().join("none.toml"), &env()).expect_err("missing");
        assert!(matches!(e, ConfigError::Read { .. }));
    }

    proptest! {
        #[test]
        fn rate_display_round_trips(b in 1u64..u64::MAX / 2) {
            let r = Rate::new(b).expect("nonzero");
            prop_assert_eq!(r.to_string().parse::<Rate>(), Ok(r));
        }

        #[test]
        fn glob_without_stars_is_equality(a in "[a-c.]{0,6}", b in "[a-c.]{0,6}") {
            prop_assert_eq!(glob(&a, &b), a == b);
        }
    }
}
