//! The daemon's web page in a real browser: Debian's chromium driven by
//! playwright-core (tests/web/e2e.mjs), against a daemon and a local swarm
//! on 127.0.0.1 (four Lodestone DHT nodes and a `lodestone seed` that
//! announces itself there). The page adds a bare magnet, watches it fetch
//! the metadata and complete, reads the sources table, changes a file's
//! priority, stops and removes it, shows a hostile torrent name as text,
//! and leaves screenshots in `target/web-ui-screenshots/`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use common::{bin, create_torrent, free_port, port_block, record_skip, repo_root, strict, Child};
use lodestone::payload;

/// The hostile name: markup that would run if the page used innerHTML.
const XSS_NAME: &str = "<img src=x onerror=alert(1)>";
/// The password daemon's: what a form encoding must carry intact.
const LOCKED_PASSWORD: &str = "sécret&=+ %";

/// Node, the test's node_modules (scripts/install-test-deps.sh runs
/// `npm ci --prefix tests/web`) and Debian's chromium; what is missing
/// fails the test in strict mode and is recorded as a skip elsewhere.
fn require_browser() -> bool {
    let mut missing = Vec::new();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node {
        missing.push("node");
    }
    if !repo_root()
        .join("tests/web/node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push("tests/web/node_modules/playwright-core (npm ci --prefix tests/web)");
    }
    if !Path::new("/usr/bin/chromium").is_file() {
        missing.push("/usr/bin/chromium");
    }
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    if strict() {
        panic!(
            "{what} missing in strict mode (LODESTONE_STRICT=1 or CI=true); \
             scripts/install-test-deps.sh installs them"
        );
    }
    record_skip(&format!("{what} missing"));
    false
}

fn quoted(p: &Path) -> String {
    let s = p.to_str().expect("a UTF-8 temporary path");
    assert!(!s.contains(['"', '\\']), "{s}");
    format!("\"{s}\"")
}

/// Where CI keeps the screenshots: `target/web-ui-screenshots/`.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("web-ui-screenshots");
    // Only this run's pictures.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_page_fetches_a_bare_magnet_and_shows_its_sources() {
    if !require_browser() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The content: a few files, so that the Files tab has choices.
    let src = dir.path().join("src");
    payload::write_multi(&src, "album", 3 << 20, 256 << 10, "web").unwrap();
    let torrent = dir.path().join("album.torrent");
    let hash = create_torrent(&src.join("album"), &torrent, &["--piece-size", "256K"]);
    // The hostile one: a file by that name (nobody seeds it).
    let xss_src = dir.path().join("xss");
    payload::write_file(&xss_src.join(XSS_NAME), XSS_NAME, 100 << 10, "xss").unwrap();
    let xss_torrent = dir.path().join("xss.torrent");
    create_torrent(&xss_src.join(XSS_NAME), &xss_torrent, &[]);

    // A private DHT of four nodes and a seeder that announces itself there.
    let nodes = port_block(4);
    let _dht = common::lodestone_dht_nodes(nodes, 4, 300);
    let boot = format!("127.0.0.1:{nodes}");
    let seeder_addr = format!("127.0.0.1:{}", port_block(1));
    let mut seeder = Child::spawn(
        bin()
            .args([
                "seed",
                "--json",
                "--seed-time",
                "300",
                "--listen",
                &seeder_addr,
            ])
            .args(["--bootstrap", &boot])
            .arg(&torrent)
            .arg(src.join("album")),
    );
    seeder.wait_for_line("\"started\"", Duration::from_secs(60));

    // The daemon: DHT from the same nodes (and the seeder), PEX and LPD
    // on, downloads capped so that the page sees the download (3 MiB in
    // about ten seconds) and its peer.
    let base = dir.path().join("daemon");
    std::fs::create_dir_all(&base).unwrap();
    let dl = base.join("dl");
    let (rpc, peer) = (free_port(), port_block(1));
    let config = format!(
        "state_dir = {}\ndownload_dir = {}\n\n\
         [rpc]\nbind = \"127.0.0.1:{rpc}\"\n\n\
         [peers]\nlisten = \"127.0.0.1:{peer}\"\npex = true\nlpd = true\n\n\
         [dht]\nenabled = true\nlisten = \"127.0.0.1:{peer}\"\n\n\
         [limits]\ndownload = \"300 kB/s\"\n",
        quoted(&base.join("state")),
        quoted(&dl),
    );
    let file = base.join("config.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = bin();
    // Under LODESTONE_LOCAL_ONLY (tests) the configured routers are
    // dropped: name them on the command line; LPD stays off there too.
    cmd.args(["daemon", "--config"]).arg(&file);
    cmd.args(["--bootstrap", &boot, "--bootstrap", &seeder_addr]);
    cmd.env_remove("NOTIFY_SOCKET");
    let daemon = Daemon::spawn(&mut cmd, rpc, peer).drained();

    // A second daemon, with a password: the page's login form against
    // the real gate (qBittorrent's /api/v2/auth/login and its SID cookie).
    let locked = dir.path().join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    let (locked_rpc, locked_peer) = (free_port(), port_block(1));
    let locked_config = format!(
        "state_dir = {}\ndownload_dir = {}\n\n\
         [rpc]\nbind = \"127.0.0.1:{locked_rpc}\"\nusername = \"admin\"\npassword = \"{LOCKED_PASSWORD}\"\n\n\
         [peers]\nlisten = \"127.0.0.1:{locked_peer}\"\n\n[dht]\nenabled = false\n",
        quoted(&locked.join("state")),
        quoted(&locked.join("dl")),
    );
    let locked_file = locked.join("config.toml");
    std::fs::write(&locked_file, locked_config).unwrap();
    let mut cmd = bin();
    cmd.args(["daemon", "--config"]).arg(&locked_file);
    cmd.env_remove("NOTIFY_SOCKET");
    let locked_daemon = Daemon::spawn(&mut cmd, locked_rpc, locked_peer).drained();

    let shots = screenshots();
    let magnet = format!("magnet:?xt=urn:btih:{hash}");
    let script = repo_root().join("tests/web/e2e.mjs");
    let run = Child::spawn(
        Command::new("node")
            .arg(&script)
            .arg(daemon.url())
            .arg(&magnet)
            .arg(&shots)
            .arg(&xss_torrent)
            .arg(XSS_NAME)
            .arg(&dl)
            .arg(locked_daemon.url())
            .arg(LOCKED_PASSWORD),
    )
    .finish(Duration::from_secs(300));
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "e2e.mjs failed ({}):\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        run.status
    );
    assert!(out.contains("e2e: all checks passed"), "{out}\n{err}");
    for shot in [
        "list.png",
        "overview.png",
        "sources.png",
        "diagnosis.png",
        "files.png",
        "peers.png",
        "phone.png",
        "dark.png",
    ] {
        let p = shots.join(shot);
        assert!(
            std::fs::metadata(&p).is_ok_and(|m| m.len() > 1000),
            "no screenshot {}",
            p.display()
        );
    }
    drop(seeder);
    drop(locked_daemon);
}
