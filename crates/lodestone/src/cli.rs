//! Command-line interface: argument parsing and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd;

/// Lodestone: a trackerless BitTorrent client.
///
/// Paste a magnet link, get the content: peers come from the DHT, peer
/// exchange and local discovery, with trackers as a secondary source.
#[derive(Debug, Parser)]
#[command(
    name = "lodestone",
    version,
    about,
    long_about,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a .torrent file or magnet link contains.
    ///
    /// Prints the name, info hash(es), BitTorrent version (v1, v2 or hybrid),
    /// size, pieces, the file tree, trackers, web seeds and a magnet link.
    /// File names that had to be changed to be safe on disk are listed.
    #[command(
        after_help = "Examples:\n  lodestone info ubuntu.torrent\n  lodestone info --json ubuntu.torrent | jq .info_hash_v1\n  lodestone info 'magnet:?xt=urn:btih:...'"
    )]
    Info(InfoArgs),
    /// Make a .torrent file from a file or a directory.
    ///
    /// Files are hashed on every core. Without --piece-size a power of two
    /// between 16 KiB and 16 MiB is chosen so the torrent has at most about
    /// 2048 pieces.
    #[command(
        after_help = "Examples:\n  lodestone create ./album -o album.torrent\n  lodestone create big.iso --piece-size 4M --tracker udp://tracker.example:1337\n  lodestone create ./dir --no-date   # byte-identical output for the same files"
    )]
    Create(CreateArgs),
    /// Ask a torrent's or magnet's trackers how many seeds and peers they
    /// know (BEP 48 over HTTP(S), BEP 15 over UDP).
    Scrape(ScrapeArgs),
    /// Download a torrent or a magnet link, then optionally seed it.
    ///
    /// Peers come from --peer, a magnet's x.pe, trackers, the DHT (public by
    /// default; --bootstrap for a private one) and LPD. For a magnet, the metadata
    /// is fetched from the peers first (BEP 9) and checked against the info
    /// hash. Pieces already on disk (from an earlier run's resume data, or found by
    /// hashing) are not fetched again. Ctrl-C stops cleanly and saves resume
    /// data. The exit code is 0 only when every wanted piece is verified.
    #[command(
        after_help = "Examples:\n  lodestone get ubuntu.torrent -o ~/Downloads --peer 192.0.2.7:6881\n  lodestone get big.torrent --only 0,3 --seed-time 600\n  lodestone get x.torrent --json | jq 'select(.event==\"summary\")'"
    )]
    Get(GetArgs),
    /// Seed content you already have.
    ///
    /// PATH is the folder that holds the content, or the content itself (the
    /// file or top directory named like the torrent). Its pieces are hashed
    /// first; then Lodestone serves them until stopped with Ctrl-C.
    Seed(SeedArgs),
    /// Use the Mainline DHT directly: run a node, ping, find or announce peers.
    ///
    /// Without --bootstrap, the public routers are used (router.bittorrent.com,
    /// dht.transmissionbt.com, router.utorrent.com, dht.libtorrent.org).
    Dht(DhtArgs),
    /// Run a self-contained swarm on this machine (127.0.0.1 only).
    ///
    /// Makes a payload and its torrent, starts a private DHT of Lodestone
    /// nodes and two seeders that announce there, then a leecher that knows
    /// only the torrent and one DHT node: it finds the seeders through the
    /// DHT, downloads, and the bytes are compared.
    Demo(DemoArgs),
    /// Run in the foreground as a daemon driven over HTTP.
    ///
    /// Holds many torrents in one session (DHT, LPD, PEX, one peer port),
    /// brings back every torrent of its state directory, and serves
    /// Transmission's RPC at /transmission/rpc (for transmission-remote,
    /// Sonarr, Radarr, autobrr...) on --rpc-bind, 127.0.0.1:9091 by default.
    /// SIGTERM or Ctrl-C saves and exits 0.
    ///
    /// Exit codes: 0 stopped cleanly, 1 runtime failure, 2 usage error,
    /// 3 bad configuration, 4 state directory locked or RPC port in use.
    #[command(
        after_help = "Examples:\n  lodestone daemon\n  lodestone daemon --state-dir /var/lib/lodestone --rpc-bind 127.0.0.1:9091\n  transmission-remote 9091 -a 'magnet:?xt=urn:btih:...'"
    )]
    Daemon(DaemonArgs),
    /// Drive a running daemon from the command line (its native API).
    ///
    /// Adds magnets, .torrent files and URLs, lists torrents, pauses,
    /// resumes, rechecks and removes them, and shows a torrent's sources.
    #[command(
        after_help = "Examples:\n  lodestone remote add 'magnet:?xt=urn:btih:...' ubuntu.torrent\n  lodestone remote list\n  lodestone remote --url http://nas:9091 --user me remove 3 --delete-data"
    )]
    Remote(RemoteArgs),
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The configuration file (default: $LODESTONE_CONFIG, then
    /// $XDG_CONFIG_HOME/lodestone/config.toml, then /etc/lodestone/config.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Keep the torrents, resume data and DHT table here (locked while the
    /// daemon runs; default: the configuration's, else $XDG_STATE_HOME/lodestone).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve the RPC on this address (default 127.0.0.1:9091).
    #[arg(long, value_name = "ADDR:PORT")]
    pub rpc_bind: Option<std::net::SocketAddr>,
    /// Accept peers on this address (default 0.0.0.0:51413).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Where new torrents' content goes.
    #[arg(long, value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// Join the DHT through this node instead of the configured ones; repeat
    /// for several.
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// Do not use the DHT.
    #[arg(long, conflicts_with = "bootstrap")]
    pub no_dht: bool,
    /// Do not use Local Peer Discovery.
    #[arg(long)]
    pub no_lpd: bool,
    /// No uTP (BEP 29): peers over TCP only.
    #[arg(long)]
    pub no_utp: bool,
    /// Serve the RPC on a non-loopback address without a password (refused
    /// otherwise: anyone who reaches the port could add and delete torrents).
    #[arg(long)]
    pub allow_unauthenticated_remote: bool,
    /// Print the configuration in effect (file and flags) and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, clap::Args)]
pub struct RemoteArgs {
    /// The daemon's address.
    #[arg(
        long,
        value_name = "URL",
        env = "LODESTONE_URL",
        default_value = "http://127.0.0.1:9091"
    )]
    pub url: String,
    /// The daemon's user name, when it has a password.
    #[arg(long, env = "LODESTONE_USER")]
    pub user: Option<String>,
    /// The daemon's password (better given in the environment).
    #[arg(long, env = "LODESTONE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[command(subcommand)]
    pub command: RemoteCommand,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add magnet links, info hashes, .torrent files or http(s) URLs.
    Add {
        #[arg(required = true, value_name = "MAGNET|FILE|URL")]
        inputs: Vec<String>,
        /// Where the content goes (an absolute path on the daemon's machine).
        #[arg(long, value_name = "DIR")]
        download_dir: Option<String>,
        /// Add without starting.
        #[arg(long)]
        paused: bool,
        /// A label; repeat for several.
        #[arg(long = "label", value_name = "LABEL")]
        labels: Vec<String>,
    },
    /// List the daemon's torrents.
    List {
        /// Print the daemon's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a torrent (it stays in the daemon).
    Pause { torrent: String },
    /// Start a stopped torrent.
    Resume { torrent: String },
    /// Hash a torrent's files again.
    Recheck { torrent: String },
    /// Take a torrent out of the daemon.
    Remove {
        torrent: String,
        /// Delete its files too.
        #[arg(long)]
        delete_data: bool,
    },
    /// Where a torrent's peers come from: its sources table.
    Sources { torrent: String },
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// A .torrent file, a magnet link, or a bare info hash (40 hex / 32 base32).
    pub input: String,
    /// Print JSON (the fields are documented in README.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The file or directory to share.
    pub path: PathBuf,
    /// Where to write the .torrent (default: <name>.torrent here).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Piece size: bytes, or with a suffix (256K, 1M). A power of two, at least 16K.
    #[arg(long, value_name = "SIZE", value_parser = crate::human::parse_size)]
    pub piece_size: Option<u64>,
    /// Mark the torrent private (BEP 27): no DHT, PEX or local discovery.
    #[arg(long)]
    pub private: bool,
    /// A tracker URL; repeat for several (each becomes its own tier).
    #[arg(long = "tracker", short = 't', value_name = "URL")]
    pub trackers: Vec<String>,
    /// A web seed URL (BEP 19); repeat for several.
    #[arg(long = "web-seed", short = 'w', value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// A free-text comment.
    #[arg(long, short = 'c')]
    pub comment: Option<String>,
    /// Leave out the creation date, so the same files give the same bytes.
    #[arg(long)]
    pub no_date: bool,
    /// Hashing threads (default: one per core).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    /// Overwrite the output file if it exists.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Print JSON describing the new torrent instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ScrapeArgs {
    /// A .torrent file or a magnet link.
    pub input: String,
    /// Scrape this tracker too (or instead, when the input names none).
    #[arg(long = "tracker", short = 't', value_name = "URL")]
    pub trackers: Vec<String>,
    /// Also trust the CA certificates in this PEM file for https:// trackers.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Print one JSON line per tracker.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// .torrent files, magnet links or bare info hashes: one is shown with
    /// a progress bar; several run in one session, a line per event. With
    /// --state-dir, the torrents kept there run too (none given: only those).
    #[arg(required_unless_present = "state_dir", value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// Folder to download into.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
    /// A peer to connect to (IP:PORT); repeat for several.
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<std::net::SocketAddr>,
    /// Accept incoming peers on this address (IP:PORT).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Seconds to keep seeding after the download completes (default 0,
    /// or until --seed-ratio when that is given).
    #[arg(long, value_name = "SECS")]
    pub seed_time: Option<u64>,
    /// Keep seeding until this run uploaded RATIO times the download (with
    /// --seed-time too: whichever comes first).
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub seed_ratio: Option<f64>,
    /// Download only these files (indices as listed by `lodestone info`).
    #[arg(long, value_name = "INDEX,...", value_delimiter = ',')]
    pub only: Vec<usize>,
    /// Fetch pieces in order (for streaming).
    #[arg(long)]
    pub sequential: bool,
    /// Hash the files on disk instead of trusting resume data.
    #[arg(long)]
    pub recheck: bool,
    #[command(flatten)]
    pub peer_limits: PeerLimitArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Largest metadata (info dictionary) accepted from a magnet's peers.
    #[arg(long, value_name = "SIZE", value_parser = crate::human::parse_size, default_value = "32M")]
    pub max_metadata_size: u64,
    /// Cap the download rate, in bytes per second (suffixes: K, M, G; 0: no cap).
    #[arg(long, value_name = "RATE", value_parser = crate::human::parse_size)]
    pub download_limit: Option<u64>,
    /// Cap the upload rate, in bytes per second (suffixes: K, M, G; 0: no cap).
    #[arg(long, value_name = "RATE", value_parser = crate::human::parse_size)]
    pub upload_limit: Option<u64>,
    /// Print newline-delimited JSON events; the last is a summary.
    #[arg(long)]
    pub json: bool,
    /// Tell what happens and why: every peer, metadata piece and source
    /// update, and the sources table every few seconds.
    #[arg(long)]
    pub explain: bool,
}

/// Where `get` and `seed` look for peers besides --peer.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// Keep the torrents and their resume data in this state directory
    /// (locked to this process) instead of `<folder>/.lodestone/`: the
    /// content's folder may then be read-only.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Join the DHT through this node (HOST:PORT) instead of the public
    /// routers; repeat for several.
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// Use the public DHT (its well-known routers). On by default.
    #[arg(long, conflicts_with_all = ["bootstrap", "no_dht"])]
    pub dht: bool,
    /// Do not use the DHT.
    #[arg(long, conflicts_with = "bootstrap")]
    pub no_dht: bool,
    /// Local Peer Discovery (BEP 14): announce on the LAN's multicast
    /// groups and dial peers heard there. On by default when listening.
    #[arg(long, conflicts_with = "no_lpd")]
    pub lpd: bool,
    /// Do not use Local Peer Discovery.
    #[arg(long)]
    pub no_lpd: bool,
    /// No peer exchange (BEP 11): neither tell peers about others nor
    /// learn peers from them.
    #[arg(long)]
    pub no_pex: bool,
    /// Do not announce to the torrent's or magnet's trackers.
    #[arg(long)]
    pub no_trackers: bool,
    /// No uTP (BEP 29): peers only over TCP, and the DHT on a socket of
    /// its own.
    #[arg(long, conflicts_with = "no_tcp")]
    pub no_utp: bool,
    /// No TCP: peers only over uTP (dialled and accepted).
    #[arg(long)]
    pub no_tcp: bool,
    /// Also trust the CA certificates in this PEM file for https://
    /// trackers and .torrent URLs (Mozilla's roots are always trusted).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// The .torrent file(s), then the content (one torrent) or the folder
    /// that holds each torrent's content: `seed a.torrent b.torrent DIR`
    /// seeds both from one process.
    #[arg(value_name = "TORRENT... PATH", num_args = 2.., required = true)]
    pub inputs: Vec<PathBuf>,
    /// Accept incoming peers on this address (IP:PORT).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:6881")]
    pub listen: std::net::SocketAddr,
    /// A peer to connect to (IP:PORT); repeat for several.
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<std::net::SocketAddr>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub seed_time: Option<u64>,
    /// Stop once this run uploaded RATIO times the content (with
    /// --seed-time too: whichever comes first).
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub seed_ratio: Option<f64>,
    /// Hash the files instead of trusting resume data.
    #[arg(long)]
    pub recheck: bool,
    /// Cap the upload rate, in bytes per second (suffixes: K, M, G; 0: no cap).
    #[arg(long, value_name = "RATE", value_parser = crate::human::parse_size)]
    pub upload_limit: Option<u64>,
    #[command(flatten)]
    pub peer_limits: PeerLimitArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Print newline-delimited JSON events.
    #[arg(long)]
    pub json: bool,
}

/// How many peers each torrent keeps and serves at once.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct PeerLimitArgs {
    /// Peers connected at once per torrent (default 60).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_peers: Option<u32>,
    /// Peers uploaded to at once per torrent, besides the optimistic
    /// unchoke (default 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub upload_slots: Option<u32>,
}

impl PeerLimitArgs {
    pub fn apply(&self, cfg: &mut lodestone_engine::torrent::TorrentConfig) {
        if let Some(n) = self.max_peers {
            cfg.max_peers = n as usize;
        }
        if let Some(n) = self.upload_slots {
            cfg.upload_slots = n as usize;
        }
    }
}

/// A share ratio: a positive finite number such as 1.5.
fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("'{s}' is not a positive ratio (such as 1.5)")),
    }
}

/// A 40-hex DHT node id on the command line.
#[derive(Debug, Clone, Copy)]
pub struct NodeIdArg(pub [u8; 20]);

impl std::str::FromStr for NodeIdArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        lodestone_core::encoding::from_hex::<20>(s)
            .map(NodeIdArg)
            .ok_or_else(|| format!("'{s}' is not 40 hex digits"))
    }
}

#[derive(Debug, clap::Args)]
pub struct DhtArgs {
    #[command(subcommand)]
    pub command: DhtCommand,
}

/// Options every `dht` command takes.
#[derive(Debug, clap::Args)]
pub struct DhtCommon {
    /// UDP address to bind.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:0")]
    pub listen: std::net::SocketAddr,
    /// Also run a node of the other address family on ADDR (BEP 32: IPv4
    /// and IPv6 are separate DHTs). Without it, one starts on the
    /// unspecified address when a --bootstrap node is of the other family.
    #[arg(long, value_name = "ADDR")]
    pub listen6: Option<std::net::SocketAddr>,
    /// A node to join through (HOST:PORT); repeat for several.
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// Load the routing table from FILE at start and save it there at exit.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// BEP 43 read-only: ask, never answer (one-shot commands such as
    /// get-peers, get and put always are; this matters for `dht node`).
    #[arg(long)]
    pub read_only: bool,
    /// BEP 42: keep nodes whose id does not match their IP out of the
    /// routing table (local addresses are exempt).
    #[arg(long)]
    pub enforce_node_id: bool,
    /// Use this node id (40 hex) instead of a random one (for tests and
    /// debugging: a node placed next to a torrent's info hash).
    #[arg(long, value_name = "HEX")]
    pub node_id: Option<NodeIdArg>,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DhtCommand {
    /// Run a DHT node and print its routing-table health.
    Node {
        #[command(flatten)]
        common: DhtCommon,
        /// Seconds between health lines.
        #[arg(long, default_value_t = 10)]
        status_every: u64,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
    },
    /// Ping one node.
    Ping {
        addr: std::net::SocketAddr,
        #[command(flatten)]
        common: DhtCommon,
    },
    /// Find peers for an info hash (or a magnet link).
    GetPeers {
        info_hash: String,
        #[command(flatten)]
        common: DhtCommon,
        /// Show every hop: node, RTT, shared bits, what it returned.
        #[arg(long)]
        trace: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Look up N times with the same node and report each lookup's time
        /// to the first peer (the first is cold, the rest warm).
        #[arg(long, value_name = "N")]
        repeat: Option<u32>,
    },
    /// Announce that a peer for INFO_HASH listens on --port.
    Announce {
        info_hash: String,
        /// The TCP port to announce (default: the DHT's own UDP port, implied_port).
        #[arg(long)]
        port: Option<u16>,
        #[command(flatten)]
        common: DhtCommon,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// BEP 51: ask the nodes on the way to random targets (or --target)
    /// for samples of the info hashes they store, and list them.
    Sample {
        /// Walk towards this id (40 hex) instead of random ones.
        #[arg(long, value_name = "HEX")]
        target: Option<NodeIdArg>,
        /// Walks towards random targets (ignored with --target).
        #[arg(long, default_value_t = 4)]
        walks: u32,
        #[command(flatten)]
        common: DhtCommon,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// BEP 44: fetch an item. Immutable: give its target (40 hex, the
    /// SHA-1 of its value). Mutable: give --key (and --salt).
    Get {
        /// Target of an immutable item (40 hex).
        #[arg(required_unless_present = "key", conflicts_with = "key")]
        target: Option<NodeIdArg>,
        /// Public key of a mutable item (64 hex).
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
        /// Salt of a mutable item (text).
        #[arg(long, default_value = "", requires = "key")]
        salt: String,
        #[command(flatten)]
        common: DhtCommon,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// BEP 44: store VALUE (a text string, or with --bencoded any bencoded
    /// value) as an immutable item, or with --key-file as a mutable one.
    Put {
        value: String,
        /// VALUE is already bencoded (e.g. `d3:fooi1ee`); it must be canonical.
        #[arg(long)]
        bencoded: bool,
        /// Make a mutable item signed with the ed25519 secret key (32-byte
        /// seed, hex) in FILE; a new key is written there if FILE does not exist.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Salt of a mutable item (text, at most 64 bytes).
        #[arg(long, default_value = "", requires = "key_file")]
        salt: String,
        /// Sequence number of a mutable item (default: one above the newest
        /// found in the DHT, or 1).
        #[arg(long, requires = "key_file")]
        seq: Option<i64>,
        #[command(flatten)]
        common: DhtCommon,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the generated files in this folder instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info(a) => cmd::info::run(&a),
        Command::Create(a) => cmd::create::run(&a),
        Command::Scrape(a) => cmd::scrape::run(&a),
        Command::Get(a) => cmd::get::run_get(&a),
        Command::Seed(a) => cmd::get::run_seed(&a),
        Command::Dht(a) => cmd::dht::run(&a),
        Command::Demo(a) => cmd::demo::run(&a),
        Command::Daemon(a) => cmd::daemon::run(&a),
        Command::Remote(a) => cmd::remote::run(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
