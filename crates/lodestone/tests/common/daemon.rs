//! `lodestone daemon` in tests: always with a configuration file of the
//! test's own (never the machine's), on free ports, and stopped with it.
#![allow(dead_code)] // each test binary uses its part

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::{bin, free_port, Child, Lines};

/// A running daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub rpc: u16,
    pub peer: u16,
    pub err: Option<Lines>,
}

/// `lodestone daemon --config CONFIG` with a state and a download folder
/// under `base`, DHT and LPD off, peers and RPC on free loopback ports.
pub fn command(base: &Path, config: &Path) -> (Command, u16, u16) {
    let (rpc, peer) = (free_port(), free_port());
    let mut c = bin();
    c.arg("daemon")
        .arg("--config")
        .arg(config)
        .args(["--no-dht", "--no-lpd", "--state-dir"])
        .arg(base.join("state"))
        .arg("--download-dir")
        .arg(base.join("dl"))
        .args(["--listen", &format!("127.0.0.1:{peer}")])
        .args(["--rpc-bind", &format!("127.0.0.1:{rpc}")]);
    // systemd's socket only where a test sets it.
    c.env_remove("NOTIFY_SOCKET");
    (c, rpc, peer)
}

impl Daemon {
    /// A daemon with `config` (TOML text) written under `base`, returned
    /// once it serves; its stderr is drained in the background.
    pub fn start(base: &Path, config: &str) -> Self {
        std::fs::create_dir_all(base).unwrap();
        let file = base.join("config.toml");
        std::fs::write(&file, config).unwrap();
        let (mut cmd, rpc, peer) = command(base, &file);
        Self::spawn(&mut cmd, rpc, peer).drained()
    }

    /// Its stderr read in the background from now on (it never blocks on
    /// a full pipe).
    pub fn drained(mut self) -> Self {
        if let Some(mut err) = self.err.take() {
            std::thread::spawn(move || while err.pump(Duration::from_secs(3600)) {});
        }
        self
    }

    /// Its stderr, unless drained.
    pub fn err(&mut self) -> &mut Lines {
        self.err.as_mut().expect("stderr is being drained")
    }

    /// `cmd` started, returned once it says it serves (30 s); its stderr
    /// is the caller's to read.
    pub fn spawn(cmd: &mut Command, rpc: u16, peer: u16) -> Self {
        let mut child = Child::spawn(cmd);
        let mut err = Lines::stderr(&mut child.0).named("lodestone daemon");
        err.wait("its RPC line", Duration::from_secs(30), |l| {
            l.contains("lodestone daemon: RPC on http://")
        });
        Self {
            child,
            rpc,
            peer,
            err: Some(err),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{sig}");
    }

    /// SIGTERM, then its exit (30 s).
    pub fn stop(self) -> Output {
        self.signal("TERM");
        self.child.finish(Duration::from_secs(30))
    }
}

/// A torrent's content (a few files, 2 MiB) and its .torrent, in a temp
/// dir kept as long as this is.
pub struct Content {
    _dir: tempfile::TempDir,
    pub src: std::path::PathBuf,
    pub torrent: std::path::PathBuf,
    pub hash: String,
}

pub fn content(name: &str, seed: &str) -> Content {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    lodestone::payload::write_multi(&src, name, 2 << 20, 256 << 10, seed).unwrap();
    let torrent = dir.path().join(format!("{name}.torrent"));
    let hash = super::create_torrent(&src.join(name), &torrent, &["--piece-size", "256K"]);
    Content {
        _dir: dir,
        src: src.join(name),
        torrent,
        hash,
    }
}
