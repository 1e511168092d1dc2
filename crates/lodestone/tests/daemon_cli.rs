//! `lodestone daemon` as a service manager and an operator see it: its
//! configuration file (errors with file, line and key; `--print-config`
//! round trip; SIGHUP reloads), the watch directory, `/metrics` checked by
//! promtool, systemd's notify socket, and the refusal of an open RPC
//! without a password. Every daemon has its own file in a temporary
//! directory (never the machine's), free ports on 127.0.0.1 and its own
//! state directory.
mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::http::{http, Rpc};
use common::{bin, create_torrent, free_port, port_block, require, Child, Lines};
use serde_json::json;

/// A hash nobody has: a magnet of it never gets its metadata.
const NOBODY: &str = "0123456789abcdef0123456789abcdef01234567";

fn quoted(p: &Path) -> String {
    let s = p.to_str().expect("a UTF-8 temporary path");
    assert!(!s.contains(['"', '\\']), "{s}");
    format!("\"{s}\"")
}

/// A configuration for a daemon that lives in `dir`: state and downloads
/// there, the RPC on `rpc_bind`, peers on 127.0.0.1:`listen`, no LPD, the
/// DHT on `dht`. `top` goes before the first table (top-level keys),
/// `tables` after the others.
struct Conf<'a> {
    dir: &'a Path,
    rpc_bind: String,
    listen: u16,
    dht: bool,
    top: String,
    tables: String,
}

impl<'a> Conf<'a> {
    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            rpc_bind: format!("127.0.0.1:{}", free_port()),
            listen: port_block(1),
            dht: false,
            top: String::new(),
            tables: String::new(),
        }
    }

    fn rpc_port(&self) -> u16 {
        self.rpc_bind
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("a port in the RPC address")
    }

    fn text(&self) -> String {
        format!(
            "state_dir = {}\ndownload_dir = {}\n{}\n\
             [rpc]\nbind = \"{}\"\n\n\
             [peers]\nlisten = \"127.0.0.1:{}\"\nlpd = false\n\n\
             [dht]\nenabled = {}\nlisten = \"127.0.0.1:{}\"\n\n{}\n",
            quoted(&self.dir.join("state")),
            quoted(&self.dir.join("dl")),
            self.top,
            self.rpc_bind,
            self.listen,
            self.dht,
            self.listen,
            self.tables,
        )
    }

    /// Written to `<dir>/config.toml`; its path.
    fn write(&self) -> PathBuf {
        let path = self.dir.join("config.toml");
        std::fs::write(&path, self.text()).expect("write the config");
        path
    }
}

fn daemon_command(config: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["daemon", "--config"]).arg(config).args(extra);
    // systemd's socket only where a test sets it.
    c.env_remove("NOTIFY_SOCKET");
    c
}

/// A run that must end by itself (a refusal), within 30 s.
fn run_to_end(cmd: &mut Command) -> Output {
    Child::spawn(cmd).finish(Duration::from_secs(30))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `pred` on the RPC's answers, polled until it holds or `within` passes;
/// the last answer either way.
fn poll<T>(within: Duration, mut get: impl FnMut() -> T, pred: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + within;
    loop {
        let v = get();
        if pred(&v) || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of the sample `name` (without labels) in a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_pass_promtool_with_the_dht_on() {
    if !require("promtool", Command::new("promtool").arg("--version")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A lone Lodestone DHT node for the daemon to join.
    let node = port_block(1);
    let _nodes = common::lodestone_dht_nodes(node, 1, 120);
    let mut conf = Conf::new(dir.path());
    conf.dht = true;
    let config = conf.write();
    let bootstrap = format!("127.0.0.1:{node}");
    let mut cmd = daemon_command(&config, &["--bootstrap", &bootstrap]);
    let d = Daemon::spawn(&mut cmd, conf.rpc_port(), 0);
    // A magnet without peers: the torrent families get a sample, the DHT a lookup.
    let mut rpc = Rpc::handshake(d.rpc);
    rpc.ok(
        "torrent-add",
        json!({"filename": format!("magnet:?xt=urn:btih:{NOBODY}&dn=nobody")}),
    );
    let page = poll(
        Duration::from_secs(30),
        || {
            let r = http(d.rpc, "GET", "/metrics", &[], b"");
            assert_eq!(r.status, 200, "{}", text(&r.body));
            text(&r.body)
        },
        |p| {
            sample(p, "lodestone_dht_nodes").is_some_and(|n| n >= 1.0)
                && sample(p, "lodestone_dht_messages_received_total").is_some_and(|n| n >= 1.0)
        },
    );
    assert!(
        sample(&page, "lodestone_dht_nodes").is_some_and(|n| n >= 1.0),
        "the daemon never had the DHT node in its table in 30 s:\n{page}"
    );
    // The RPC's extension says the same table's size.
    let dht = rpc.ok("session-get", serde_json::json!({"fields": ["dht-nodes"]}));
    assert!(dht["dht-nodes"].as_u64().is_some_and(|n| n >= 1), "{dht}");
    let mut missing = Vec::new();
    for (family, kind) in [
        ("lodestone_torrents", "gauge"),
        ("lodestone_peers_found", "gauge"),
        ("lodestone_peers_connected", "gauge"),
        ("lodestone_downloaded_bytes_total", "counter"),
        ("lodestone_uploaded_bytes_total", "counter"),
        ("lodestone_download_rate_bytes_per_second", "gauge"),
        ("lodestone_upload_rate_bytes_per_second", "gauge"),
        ("lodestone_hash_failures_total", "counter"),
        ("lodestone_peers_banned_total", "counter"),
        ("lodestone_uptime_seconds", "gauge"),
        ("lodestone_dht_nodes", "gauge"),
        ("lodestone_dht_good_nodes", "gauge"),
        ("lodestone_dht_messages_sent_total", "counter"),
        ("lodestone_dht_messages_received_total", "counter"),
        ("lodestone_dht_timeouts_total", "counter"),
        ("lodestone_dht_queries_answered_total", "counter"),
        ("lodestone_dht_lookups_total", "counter"),
    ] {
        let ty = format!("# TYPE {family} {kind}");
        let help = format!("# HELP {family} ");
        if !page.lines().any(|l| l == ty) || !page.lines().any(|l| l.starts_with(&help)) {
            missing.push(family);
        }
    }
    assert!(missing.is_empty(), "missing {missing:?} in:\n{page}");
    let total: f64 = page
        .lines()
        .filter(|l| l.starts_with("lodestone_torrents{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 1.0, "one torrent, in one state:\n{page}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().unwrap();
        stdin.write_all(page.as_bytes()).unwrap();
    }
    let o = Child(promtool).finish(Duration::from_secs(30));
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}\n--- the page ---\n{page}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let o = d.stop();
    assert_eq!(o.status.code(), Some(0));
}

fn d_err(err: &mut Lines) -> Vec<String> {
    err.pump(Duration::from_millis(100));
    err.seen.clone()
}

#[test]
fn bad_config_exits_3_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    // An unknown key on line 3.
    std::fs::write(
        &path,
        format!(
            "state_dir = {}\n[rpc]\nbindx = \"127.0.0.1:9091\"\n",
            quoted(&dir.path().join("state"))
        ),
    )
    .unwrap();
    let o = run_to_end(&mut daemon_command(&path, &[]));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
    assert!(err.contains("bindx"), "{err}");
    assert!(
        !dir.path().join("state").exists(),
        "a refused config made its state dir"
    );

    // A bad value on line 4.
    std::fs::write(
        &path,
        "# limits\n\n[limits]\ndownload = \"fast\"\nupload = \"1 MiB/s\"\n",
    )
    .unwrap();
    let o = run_to_end(&mut daemon_command(&path, &[]));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("{}:4:", path.display())), "{err}");
    assert!(err.contains("limits.download"), "{err}");
    assert!(err.contains("fast"), "{err}");

    // Not TOML at all, and a file that is not there.
    std::fs::write(&path, "[limits\n").unwrap();
    let o = run_to_end(&mut daemon_command(&path, &[]));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&path.display().to_string()));
    let gone = dir.path().join("none.toml");
    let o = run_to_end(&mut daemon_command(&gone, &[]));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&gone.display().to_string()));
}

#[test]
fn print_config_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = Conf::new(dir.path());
    conf.top = format!(
        "watch_dir = {}\nstart_added_torrents = false\n",
        quoted(&dir.path().join("watch"))
    );
    conf.tables = "[limits]\ndownload = \"100 kB/s\"\nupload = \"2 MiB/s\"\n\n\
                   [limits.schedule]\nenabled = true\nbegin = \"22:00\"\nend = \"06:00\"\ndays = [\"sat\", \"sun\"]\n\n\
                   [seeding]\nratio_limit = 1.5\n\n\
                   [categories.tv]\n[categories.movies]\npath = \"films\"\n"
        .to_owned();
    let first = conf.write();
    let o = run_to_end(&mut daemon_command(&first, &["--print-config"]));
    let printed = common::success_stdout(&o);
    for want in [
        "download = \"100 kB/s\"",
        "start_added_torrents = false",
        "ratio_limit = 1.5",
        "films",
    ] {
        assert!(printed.contains(want), "no {want:?} in:\n{printed}");
    }
    let second = dir.path().join("printed.toml");
    std::fs::write(&second, &printed).unwrap();
    let o = run_to_end(&mut daemon_command(&second, &["--print-config"]));
    let again = common::success_stdout(&o);
    assert_eq!(again, printed, "--print-config of its own output differs");
    assert!(
        !dir.path().join("state").exists(),
        "--print-config made the state dir"
    );
}

#[test]
fn watch_dir_adds_torrents_and_magnets_and_leaves_junk() {
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("watch");
    std::fs::create_dir(&watch).unwrap();
    let src = dir.path().join("content.bin");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    let made = dir.path().join("made.torrent");
    let hash = create_torrent(&src, &made, &["--piece-size", "16K"]);

    let mut conf = Conf::new(dir.path());
    conf.top = format!(
        "watch_dir = {}\nstart_added_torrents = false\n",
        quoted(&watch)
    );
    let config = conf.write();
    let mut d = Daemon::spawn(&mut daemon_command(&config, &[]), conf.rpc_port(), 0);
    std::fs::copy(&made, watch.join("a.torrent")).unwrap();
    std::fs::write(
        watch.join("b.magnet"),
        format!("magnet:?xt=urn:btih:{NOBODY}&dn=watched\n"),
    )
    .unwrap();
    std::fs::write(watch.join("junk.torrent"), b"d4:junk").unwrap();

    let mut rpc = Rpc::handshake(d.rpc);
    let hashes = |rpc: &mut Rpc| {
        let mut v: Vec<String> = rpc
            .torrents(json!({"fields": ["hashString"]}))
            .iter()
            .map(|t| t["hashString"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let mut want = vec![hash.clone(), NOBODY.to_owned()];
    want.sort();
    let renamed = || {
        watch.join("a.torrent.added").is_file()
            && watch.join("b.magnet.added").is_file()
            && !watch.join("a.torrent").exists()
            && !watch.join("b.magnet").exists()
    };
    let got = poll(
        Duration::from_secs(20),
        || (hashes(&mut rpc), renamed()),
        |(h, r)| *h == want && *r,
    );
    assert_eq!(
        got,
        (want, true),
        "not both added and renamed in 20 s; watch dir: {:?}; stderr: {:?}",
        std::fs::read_dir(&watch)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        d_err(d.err())
    );
    // The junk is reported once its tries are over, and stays as it is.
    d.err()
        .find("the junk reported", Duration::from_secs(20), |l| {
            l.contains("junk.torrent")
        });
    assert!(watch.join("junk.torrent").is_file());
    assert!(!watch.join("junk.torrent.added").exists());
    assert_eq!(hashes(&mut rpc).len(), 2);
    let o = d.stop();
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn sighup_reloads_the_file_and_keeps_the_old_one_if_broken() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = Conf::new(dir.path());
    conf.tables = "[limits]\ndownload = \"100 kB/s\"\n".to_owned();
    let config = conf.write();
    let mut d = Daemon::spawn(&mut daemon_command(&config, &[]), conf.rpc_port(), 0);
    let mut rpc = Rpc::handshake(d.rpc);
    let limits = |rpc: &mut Rpc| {
        let s = rpc.ok("session-get", json!({}));
        (
            s["speed-limit-down"].clone(),
            s["speed-limit-down-enabled"].clone(),
            s["speed-limit-up-enabled"].clone(),
        )
    };
    // kB/s: 1000 bytes, as Transmission counts.
    assert_eq!(limits(&mut rpc), (json!(100), json!(true), json!(false)));

    conf.tables = "[limits]\ndownload = \"250 kB/s\"\nupload = \"50 kB/s\"\n".to_owned();
    conf.write();
    d.signal("HUP");
    d.err().wait("the reload", Duration::from_secs(10), |l| {
        l.contains("SIGHUP: configuration reloaded")
    });
    let now = poll(Duration::from_secs(5), || limits(&mut rpc), |l| l.0 == 250);
    assert_eq!(now, (json!(250), json!(true), json!(true)));
    assert_eq!(rpc.ok("session-get", json!({}))["speed-limit-up"], 50);

    // A broken file: the daemon says so, keeps the limits and serves on.
    std::fs::write(&config, "[limits]\ndownload = \"fast\"\n").unwrap();
    d.signal("HUP");
    let l = d.err().wait("the refusal", Duration::from_secs(10), |l| {
        l.contains("SIGHUP")
    });
    assert!(l.contains("kept the old configuration"), "{l}");
    assert!(l.contains("config.toml:2"), "{l}");
    assert_eq!(limits(&mut rpc), (json!(250), json!(true), json!(true)));

    // And a good one after it is read again: no limits at all.
    conf.tables = String::new();
    conf.write();
    d.signal("HUP");
    d.err()
        .wait("the second reload", Duration::from_secs(10), |l| {
            l.contains("SIGHUP: configuration reloaded")
        });
    let now = poll(
        Duration::from_secs(5),
        || limits(&mut rpc),
        |l| l.1 == false,
    );
    assert_eq!((now.1, now.2), (json!(false), json!(false)));
    let o = d.stop();
    assert_eq!(o.status.code(), Some(0));
}

/// The next datagram on `sock` that contains `want`, within `within`;
/// every datagram received so far is in `got`.
fn notified(sock: &UnixDatagram, want: &str, within: Duration, got: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = text(&buf[..n]);
                let hit = m.lines().any(|l| l == want);
                got.push(m);
                if hit {
                    return true;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    false
}

#[test]
fn notify_socket_gets_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let conf = Conf::new(dir.path());
    let config = conf.write();
    let mut cmd = daemon_command(&config, &[]);
    cmd.env("NOTIFY_SOCKET", &sock_path);
    let mut child = Child::spawn(&mut cmd);
    let mut err = Lines::stderr(&mut child.0).named("lodestone daemon");
    let mut got = Vec::new();
    assert!(
        notified(&sock, "READY=1", Duration::from_secs(30), &mut got),
        "no READY=1 in 30 s (got {got:?}); stderr: {:?}",
        d_err(&mut err)
    );
    // Ready means serving.
    let d = Daemon {
        child,
        err: Some(err),
        rpc: conf.rpc_port(),
        peer: 0,
    };
    let mut rpc = Rpc::handshake(d.rpc);
    rpc.ok("session-get", json!({}));

    d.signal("HUP");
    assert!(
        notified(&sock, "RELOADING=1", Duration::from_secs(10), &mut got),
        "no RELOADING=1 after SIGHUP: {got:?}"
    );
    assert!(
        notified(&sock, "READY=1", Duration::from_secs(10), &mut got),
        "no READY=1 after the reload: {got:?}"
    );

    d.signal("TERM");
    assert!(
        notified(&sock, "STOPPING=1", Duration::from_secs(30), &mut got),
        "no STOPPING=1 after SIGTERM: {got:?}"
    );
    let o = d.child.finish(Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(0), "after SIGTERM");
}

#[test]
fn remote_rpc_without_a_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = Conf::new(dir.path());
    let port = free_port();
    conf.rpc_bind = format!("0.0.0.0:{port}");
    let config = conf.write();
    let o = run_to_end(&mut daemon_command(&config, &[]));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    // Where, what and why, and the way out.
    for why in [
        &format!("{}:5:", config.display()) as &str,
        "rpc.bind",
        &format!("0.0.0.0:{port}"),
        "no password",
    ] {
        assert!(err.contains(why), "no {why:?} in: {err}");
    }
    assert!(
        err.contains("allow_unauthenticated_remote")
            || err.contains("allow-unauthenticated-remote"),
        "{err}"
    );
    assert!(!dir.path().join("state").exists());

    // Allowed in the file, it serves (reached here over 127.0.0.1 only).
    let text = conf
        .text()
        .replacen("[rpc]\n", "[rpc]\nallow_unauthenticated_remote = true\n", 1);
    std::fs::write(&config, text).unwrap();
    serves_on(daemon_command(&config, &[]), port);
}

/// The flag does what the key does: `--allow-unauthenticated-remote`
/// with a file that binds 0.0.0.0 and sets no password.
#[test]
fn allow_unauthenticated_remote_flag_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = Conf::new(dir.path());
    let port = free_port();
    conf.rpc_bind = format!("0.0.0.0:{port}");
    let config = conf.write();
    serves_on(
        daemon_command(&config, &["--allow-unauthenticated-remote"]),
        port,
    );
}

/// `cmd` starts, answers session-get on 127.0.0.1:`port`, and stops with 0.
fn serves_on(mut cmd: Command, port: u16) {
    let d = Daemon::spawn(&mut cmd, port, 0);
    let mut rpc = Rpc::handshake(d.rpc);
    rpc.ok("session-get", json!({}));
    let o = d.stop();
    assert_eq!(o.status.code(), Some(0));
}
