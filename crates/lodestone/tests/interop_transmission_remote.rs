//! Debian's `transmission-remote` 3.00 (package transmission-cli) against
//! `lodestone daemon` and, in the same test, against Debian's
//! `transmission-daemon` 3.00: the same commands to both, the outputs
//! compared once what legitimately differs is normalized (dates, versions,
//! ports, temporary folders, durations). Everything on 127.0.0.1.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{create_torrent, free_port, Child};
use lodestone::payload;

fn require_remote() -> bool {
    common::require(
        "transmission-remote (transmission-cli)",
        Command::new("transmission-remote").arg("--version"),
    )
}

fn require_transmission_daemon() -> bool {
    common::require(
        "transmission-daemon",
        Command::new("transmission-daemon").arg("--version"),
    )
}

/// A daemon under test: where its RPC listens and the folder all its paths
/// live under (replaced by `<BASE>` when outputs are compared).
struct Server {
    name: &'static str,
    rpc: u16,
    peer: u16,
    base: PathBuf,
    _child: Child,
}

/// `lodestone daemon` on free ports, its state and downloads under `base`;
/// returned once it serves.
fn start_ours(base: &Path) -> Server {
    start_ours_with(base, "")
}

/// Ours with this configuration file (never the machine's own).
fn start_ours_with(base: &Path, config: &str) -> Server {
    let d = common::daemon::Daemon::start(base, config);
    Server {
        name: "lodestone",
        rpc: d.rpc,
        peer: d.peer,
        base: base.to_owned(),
        _child: d.child,
    }
}

/// `transmission-daemon` 3.00 in the foreground with its config folder
/// under `base`: no DHT, LPD, PEX, uTP, port mapping or blocklist; RPC for
/// 127.0.0.1 without a password. The few defaults that differ from ours
/// (global peer limit, turtle speeds) are set to ours, so that `-si`
/// compares line for line.
fn start_transmission(base: &Path) -> Server {
    let (rpc, peer) = (free_port(), free_port());
    let cfg = base.join("config");
    std::fs::create_dir_all(&cfg).unwrap();
    let settings = serde_json::json!({
        "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
        "port-forwarding-enabled": false, "blocklist-enabled": false,
        "peer-port-random-on-start": false, "bind-address-ipv4": "127.0.0.1",
        "rpc-bind-address": "127.0.0.1", "rpc-whitelist": "127.0.0.1",
        "rpc-whitelist-enabled": true, "rpc-authentication-required": false,
        "download-dir": base.join("dl"), "incomplete-dir-enabled": false,
        "peer-limit-global": 500, "alt-speed-down": 100, "alt-speed-up": 100,
        "message-level": 1,
    });
    std::fs::write(cfg.join("settings.json"), settings.to_string()).unwrap();
    let child = Child::spawn(
        Command::new("transmission-daemon")
            .args(["-f", "-g"])
            .arg(&cfg)
            .args(["-p", &rpc.to_string(), "-P", &peer.to_string()])
            .args(["-T", "-O", "-Y", "-M", "-w"])
            .arg(base.join("dl")),
    );
    let server = Server {
        name: "transmission-daemon",
        rpc,
        peer,
        base: base.to_owned(),
        _child: child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = remote(&server, &["-l"]);
        if r.code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "transmission-daemon does not answer: {}",
            r.err
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

struct Remote {
    code: i32,
    out: String,
    err: String,
}

/// `transmission-remote 127.0.0.1:<rpc> args...`, bounded in time.
fn remote(s: &Server, args: &[&str]) -> Remote {
    let mut cmd = Command::new("transmission-remote");
    cmd.arg(format!("127.0.0.1:{}", s.rpc)).args(args);
    // curl inside transmission-remote honours proxies: never for us.
    for v in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(v);
    }
    cmd.env("no_proxy", "*");
    let o = Child::spawn(&mut cmd).finish(Duration::from_secs(30));
    Remote {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Lines whose value depends on when things happened: dropped before
/// comparing (each side's own line is checked where it matters).
const TIMING: &[&str] = &[
    "Date added:",
    "Date started:",
    "Date finished:",
    "Latest activity:",
    "Downloading Time:",
    "Seeding Time:",
];

/// The output with what legitimately differs between the two daemons
/// replaced by placeholders.
fn normalize(s: &Server, text: &str) -> String {
    let base = s.base.display().to_string();
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if TIMING.iter().any(|p| t.starts_with(p)) {
            continue;
        }
        let indent = &line[..line.len() - t.len()];
        let keep = |key: &str| format!("{indent}{key} <normalized>");
        let line = if t.starts_with("Daemon version:") {
            keep("Daemon version:")
        } else if t.starts_with("RPC version:") {
            keep("RPC version:")
        } else if t.starts_with("RPC minimum version:") {
            keep("RPC minimum version:")
        } else if t.starts_with("Configuration directory:") {
            keep("Configuration directory:")
        } else if t.starts_with("Duration:") {
            keep("Duration:")
        } else if t.starts_with("Peer exchange allowed:") {
            // Ours always offers PEX; Transmission's is switched off here.
            keep("Peer exchange allowed:")
        } else if let Some(port) = t.strip_prefix("Listenport:") {
            format!(
                "{indent}Listenport: {}",
                port.trim().replace(&s.peer.to_string(), "<PEER>")
            )
        } else {
            line.to_owned()
        };
        out.push(
            line.replace(&base, "<BASE>")
                .replace(&format!("127.0.0.1:{}", s.rpc), "<RPC>"),
        );
    }
    out.join("\n")
}

/// Both daemons' answers to the same command, with the mismatches
/// collected (not panicking at the first: one run shows every difference).
struct Compare<'a> {
    ours: &'a Server,
    theirs: &'a Server,
    mismatches: Vec<String>,
}

impl Compare<'_> {
    /// Run `args` on both; returns (ours, theirs).
    fn both(&self, args: &[&str]) -> (Remote, Remote) {
        (remote(self.ours, args), remote(self.theirs, args))
    }

    fn check(&mut self, what: &str, ok: bool, detail: String) {
        if !ok {
            self.mismatches.push(format!("{what}: {detail}"));
        }
    }

    /// Run `args` on both; exit codes and normalized stdout and stderr must
    /// be equal after `fix_theirs` (for documented differences).
    fn same(&mut self, args: &[&str], fix_theirs: impl Fn(String) -> String) -> (Remote, Remote) {
        let (a, b) = self.both(args);
        self.compare(args, &a, &b, fix_theirs);
        (a, b)
    }

    fn compare(
        &mut self,
        args: &[&str],
        a: &Remote,
        b: &Remote,
        fix_theirs: impl Fn(String) -> String,
    ) {
        let what = format!("transmission-remote {}", args.join(" "));
        self.check(
            &what,
            a.code == b.code,
            format!(
                "exit code {} (ours) vs {} (transmission-daemon)",
                a.code, b.code
            ),
        );
        for (x, y, stream) in [(&a.out, &b.out, "stdout"), (&a.err, &b.err, "stderr")] {
            let x = normalize(self.ours, x);
            let y = fix_theirs(normalize(self.theirs, y));
            if x != y {
                self.mismatches
                    .push(format!("{what}: {stream} differs\n{}", line_diff(&x, &y)));
            }
        }
    }

    fn finish(self) {
        assert!(
            self.mismatches.is_empty(),
            "{} differences between lodestone daemon and transmission-daemon 3.00:\n\n{}",
            self.mismatches.len(),
            self.mismatches.join("\n\n")
        );
    }
}

/// The lines that differ, `-` ours, `+` Transmission's, in order.
fn line_diff(ours: &str, theirs: &str) -> String {
    let a: Vec<&str> = ours.lines().collect();
    let b: Vec<&str> = theirs.lines().collect();
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        if x != y {
            out += &format!(
                "  line {}:\n  - {}\n  + {}\n",
                i + 1,
                x.unwrap_or("<none>"),
                y.unwrap_or("<none>")
            );
        }
    }
    out
}

/// The `-l` row of torrent `id`, split in words.
fn list_row(list: &str, id: u32) -> Option<Vec<String>> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|w| w.first().map(|f| f.trim_end_matches('*')) == Some(&id.to_string()))
}

/// Poll `-l` (bounded) until torrent `id`'s row satisfies `pred`.
fn wait_row(s: &Server, id: u32, what: &str, secs: u64, pred: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = remote(s, &["-l"]);
        if list_row(&r.out, id).is_some_and(|w| pred(&w)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: torrent {id} not {what} within {secs} s; -l printed:\n{}{}",
            s.name,
            r.out,
            r.err
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `-i`'s "Key: value" lines.
fn info_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

const PIECE: u64 = 256 << 10;
const TOTAL: u64 = 3 << 20;

/// Three torrents made with `lodestone create` from the payload generator:
/// A (its magnet is added, nobody has it), B (its .torrent added with
/// `-w` on a folder that holds its content), C (its .torrent added alone).
struct Fixture {
    _dir: tempfile::TempDir,
    hash_a: String,
    torrent_b: PathBuf,
    src_b: PathBuf,
    torrent_c: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let make = |name: &str, seed: &str| {
        let src = d.join(format!("src-{name}"));
        payload::write_multi(&src, name, TOTAL, PIECE, seed).unwrap();
        let t = d.join(format!("{name}.torrent"));
        let hash = create_torrent(&src.join(name), &t, &["--piece-size", "256K"]);
        (src, t, hash)
    };
    let (_, _, hash_a) = make("alpha", "a");
    let (src_b, torrent_b, _) = make("bravo", "b");
    let (_, torrent_c, _) = make("charlie", "c");
    Fixture {
        _dir: dir,
        hash_a,
        torrent_b,
        src_b,
        torrent_c,
    }
}

/// Copy the tree `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

#[test]
fn same_commands_same_answers_as_transmission_daemon() {
    if !(require_remote() && require_transmission_daemon()) {
        return;
    }
    let started = Instant::now();
    let f = fixture();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for d in &dirs {
        // B's content, where `-w` points, before the add: both check it.
        let seeded = d.path().join("seeded");
        std::fs::create_dir_all(&seeded).unwrap();
        copy_tree(&f.src_b, &seeded);
        std::fs::create_dir_all(d.path().join("dl")).unwrap();
    }
    let ours = start_ours(dirs[0].path());
    let theirs = start_transmission(dirs[1].path());
    let mut c = Compare {
        ours: &ours,
        theirs: &theirs,
        mismatches: Vec::new(),
    };

    // 1: a magnet whose dn has a '+'. Transmission 3.00 keeps the '+'
    // (it decodes %XX only); we decode the '+' to a space as the form
    // encoding of URIs (and Transmission 4.x) do. So its "Test+Name" (and
    // "Test%2BName" in the magnet it prints back) is ours "Test Name"
    // ("Test%20Name"): asserted on each side, then mapped.
    let magnet = format!("magnet:?xt=urn:btih:{}&dn=Test+Name", f.hash_a);
    let plus = |s: String| {
        s.replace("Test+Name", "Test Name")
            .replace("Test%2BName", "Test%20Name")
    };
    c.same(&["-a", &magnet], plus);
    // 2: B's .torrent into a folder that holds its content (`-w` after
    // `-a` is the add's download-dir; before it, a session-set).
    let w = |s: &Server| s.base.join("seeded").display().to_string();
    let (a, b) = (
        remote(
            &ours,
            &["-a", f.torrent_b.to_str().unwrap(), "-w", &w(&ours)],
        ),
        remote(
            &theirs,
            &["-a", f.torrent_b.to_str().unwrap(), "-w", &w(&theirs)],
        ),
    );
    c.compare(
        &["-a", "bravo.torrent", "-w", "<BASE>/seeded"],
        &a,
        &b,
        plus,
    );
    // 3: C's .torrent, into the default folder.
    c.same(&["-a", f.torrent_c.to_str().unwrap()], plus);
    // The same magnet again, hash in capitals: a duplicate, "success".
    let upper = format!(
        "magnet:?xt=urn:btih:{}&dn=Test+Name",
        f.hash_a.to_uppercase()
    );
    c.same(&["-a", &upper], plus);

    // Both check B's files and find all of them.
    for s in [&ours, &theirs] {
        wait_row(s, 2, "100% done", 30, |w| {
            w.get(1).map(String::as_str) == Some("100%")
        });
        // Transmission checks C's (missing) files first: wait for Idle.
        wait_row(s, 3, "idle", 30, |w| w.iter().any(|x| x == "Idle"));
    }

    let (a, b) = c.same(&["-l"], plus);
    assert!(a.out.contains("Test Name"), "ours -l:\n{}", a.out);
    assert!(b.out.contains("Test+Name"), "theirs -l:\n{}", b.out);
    let row = list_row(&a.out, 2).expect("torrent 2 in -l");
    assert_eq!(row[1], "100%", "ours -l: {row:?}");
    assert_eq!(row.last().map(String::as_str), Some("bravo"));

    for id in ["1", "2", "3"] {
        let (a, b) = c.same(&["-t", id, "-i"], plus);
        for (r, who) in [(&a, "ours"), (&b, "theirs")] {
            assert!(
                r.out.contains("Date added:"),
                "{who} -t {id} -i:\n{}",
                r.out
            );
        }
        let m = info_map(&a.out);
        assert_eq!(m.get("Id").map(String::as_str), Some(id), "{}", a.out);
        match id {
            "1" => {
                assert_eq!(m["Name"], "Test Name");
                assert_eq!(m["Hash"], f.hash_a);
                assert!(a.out.contains("dn=Test%20Name"), "{}", a.out);
                assert!(b.out.contains("dn=Test%2BName"), "{}", b.out);
            }
            "2" => {
                assert_eq!(m["Name"], "bravo");
                assert_eq!(m["Percent Done"], "100%");
                assert_eq!(m["Location"], w(&ours));
                assert_eq!(m["Total size"], "3.15 MB (3.15 MB wanted)");
            }
            _ => {
                assert_eq!(m["Percent Done"], "0.0%");
                assert_eq!(
                    m["Location"],
                    ours.base.join("dl").display().to_string(),
                    "{}",
                    a.out
                );
            }
        }
    }
    for id in ["1", "2", "3"] {
        c.same(&["-t", id, "-if"], plus);
    }
    let a = remote(&ours, &["-t", "2", "-if"]);
    assert!(a.out.starts_with("bravo (5 files):"), "{}", a.out);
    assert!(
        a.out
            .contains("  0: 100% Normal   Yes  262.1 kB  bravo/a.bin"),
        "{}",
        a.out
    );
    c.same(&["-t", "2", "-ip"], plus);
    c.same(&["-t", "2", "-it"], plus);

    // Stop and start the magnet (Transmission stops in its event thread,
    // after answering: wait for the row to say so on both).
    c.same(&["-t", "1", "-S"], plus);
    for s in [&ours, &theirs] {
        wait_row(s, 1, "stopped", 10, |w| w.iter().any(|x| x == "Stopped"));
    }
    // Let both settle (an error set after the stop shows as `*` in -l).
    std::thread::sleep(Duration::from_secs(2));
    c.same(&["-l"], plus);
    c.same(&["-t", "1", "-i"], plus);
    c.same(&["-t", "1", "-s"], plus);
    for s in [&ours, &theirs] {
        wait_row(s, 1, "started", 10, |w| !w.iter().any(|x| x == "Stopped"));
    }
    c.same(&["-l"], plus);

    let (a, _) = c.same(&["-si"], plus);
    let m = info_map(&a.out);
    assert!(
        m["Daemon version"].starts_with("4.0.6 (Lodestone"),
        "{}",
        a.out
    );
    assert_eq!(m["RPC version"], "17");
    assert_eq!(m["RPC minimum version"], "14");
    assert_eq!(
        m["Download directory"],
        ours.base.join("dl").display().to_string()
    );
    assert_eq!(m["Listenport"], ours.peer.to_string());
    let (a, _) = c.same(&["-st"], plus);
    assert!(a.out.contains("Started 1 times"), "{}", a.out);

    // A relative destination: the same error on both, exit 1.
    let (a, b) = c.same(&["-t", "1", "--move", "relative/dir"], plus);
    for (r, who) in [(&a, "ours"), (&b, "theirs")] {
        assert_eq!(r.code, 1, "{who}: {}{}", r.out, r.err);
        assert!(
            (r.out.clone() + &r.err).contains("Error: new location path is not absolute"),
            "{who}: {}{}",
            r.out,
            r.err
        );
    }

    c.same(&["-t", "1", "-r"], plus);
    c.same(&["-t", "2", "--remove-and-delete"], plus);
    // Removal is asynchronous in Transmission: wait for both lists.
    for s in [&ours, &theirs] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while list_row(&remote(s, &["-l"]).out, 2).is_some() {
            assert!(
                Instant::now() < deadline,
                "{}: torrent 2 not removed",
                s.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (a, _) = c.same(&["-l"], plus);
    assert!(list_row(&a.out, 1).is_none() && list_row(&a.out, 3).is_some());
    // --remove-and-delete took B's files; -r left nothing to take.
    for s in [&ours, &theirs] {
        let bravo = s.base.join("seeded/bravo");
        let deadline = Instant::now() + Duration::from_secs(10);
        while bravo.join("a.bin").exists() || bravo.join("z_big.bin").exists() {
            assert!(
                Instant::now() < deadline,
                "{}: {} still there",
                s.name,
                bravo.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    c.same(&["-t", "1", "-i"], plus);
    eprintln!("compared in {:?}", started.elapsed());
    c.finish();
}

/// A magnet naming a local `lodestone seed` (`x.pe`) completes in our
/// daemon, as `transmission-remote -i` reports it; the files match.
#[test]
fn magnet_with_peer_completes_from_local_seeder() {
    if !require_remote() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_multi(&src, "delta", TOTAL, PIECE, "d").unwrap();
    let torrent = dir.path().join("delta.torrent");
    let hash = create_torrent(&src.join("delta"), &torrent, &["--piece-size", "256K"]);
    let (_seeder, addr) = common::spawn_seeder(&torrent, &src.join("delta"), &[]);
    let base = dir.path().join("daemon");
    let ours = start_ours(&base);
    let magnet = format!("magnet:?xt=urn:btih:{hash}&x.pe={addr}");
    let r = remote(&ours, &["-a", &magnet]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.contains("responded: \"success\""), "{}", r.out);
    let deadline = Instant::now() + Duration::from_secs(60);
    let info = loop {
        let r = remote(&ours, &["-t", "1", "-i"]);
        if info_map(&r.out).get("Percent Done").map(String::as_str) == Some("100%") {
            break r.out;
        }
        assert!(
            Instant::now() < deadline,
            "not complete within 60 s:\n{}{}",
            r.out,
            r.err
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let m = info_map(&info);
    assert_eq!(m["Name"], "delta");
    assert_eq!(m["Hash"], hash);
    let l = remote(&ours, &["-l"]);
    let row = list_row(&l.out, 1).expect("torrent 1 in -l");
    assert_eq!(row[1], "100%", "{}", l.out);
    let files = remote(&ours, &["-t", "1", "-if"]);
    let rows: Vec<&str> = files
        .out
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    assert_eq!(rows.len(), 5, "{}", files.out);
    // The empty file's share is 0/0: transmission-remote prints "-nan%"
    // (it does for transmission-daemon too).
    assert!(
        rows.iter()
            .all(|r| r.contains("100%") || r.contains(" None ")),
        "{}",
        files.out
    );
    common::assert_same_tree(&src.join("delta"), &base.join("dl/delta"));
}

/// With a password: transmission-remote sends no credentials until it is
/// challenged (401), then `-n user:pass`; a wrong password fails with
/// exit 1 on both daemons.
#[test]
fn password_with_dash_n() {
    if !(require_remote() && require_transmission_daemon()) {
        return;
    }
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // Ours: the password from the configuration file.
    let ours = start_ours_with(
        dirs[0].path(),
        "[rpc]\nusername = \"user\"\npassword = \"pass\"\n",
    );
    let theirs = {
        let base = dirs[1].path();
        let cfg = base.join("config");
        std::fs::create_dir_all(&cfg).unwrap();
        let (rpc, peer) = (free_port(), free_port());
        let child = Child::spawn(
            Command::new("transmission-daemon")
                .args(["-f", "-g"])
                .arg(&cfg)
                .args(["-p", &rpc.to_string(), "-P", &peer.to_string()])
                .args(["-t", "-u", "user", "-v", "pass", "-O", "-Y", "-M", "-w"])
                .arg(base.join("dl")),
        );
        Server {
            name: "transmission-daemon",
            rpc,
            peer,
            base: base.to_owned(),
            _child: child,
        }
    };
    std::thread::sleep(Duration::from_secs(2));
    for s in [&ours, &theirs] {
        let r = remote(s, &["-n", "user:pass", "-l"]);
        assert_eq!(r.code, 0, "{}: {}{}", s.name, r.out, r.err);
        assert!(r.out.contains("Sum:"), "{}: {}", s.name, r.out);
        let r = remote(s, &["-n", "user:wrong", "-l"]);
        assert_eq!(r.code, 1, "{}: {}{}", s.name, r.out, r.err);
        let r = remote(s, &["-l"]);
        assert_eq!(r.code, 1, "{}: {}{}", s.name, r.out, r.err);
    }
}
