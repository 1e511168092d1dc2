//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

pub mod daemon;
pub mod http;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Tests never reach beyond the machine by default: the public DHT and LPD
/// on real interfaces stay off unless a test names them.
pub const LOCAL_ONLY: (&str, &str) = ("LODESTONE_LOCAL_ONLY", "1");

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lodestone"));
    c.env(LOCAL_ONLY.0, LOCAL_ONLY.1);
    c
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run lodestone")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/lodestone sits two levels below the root")
        .to_owned()
}

/// Is a real peer client available? In strict mode (`LODESTONE_STRICT=1`,
/// which `.ci/run` sets, or `CI=true`) a missing client fails the test.
/// Elsewhere the test is skipped, and the skip is recorded in the skip log
/// that `scripts/test.sh` prints at the end of the run: a message printed
/// inside a passing test is captured by libtest and nobody sees it.
pub fn require(client: &str, probe: &mut Command) -> bool {
    let ok = probe.output().map(|o| o.status.success()).unwrap_or(false);
    if ok {
        return true;
    }
    if strict() {
        panic!(
            "interop peer '{client}' is missing in strict mode (LODESTONE_STRICT=1 or CI=true); \
             scripts/install-test-deps.sh installs it"
        );
    }
    record_skip(&format!("'{client}' is missing"));
    false
}

/// Must every test run (no skips)?
pub fn strict() -> bool {
    let set = |name: &str, value: &str| std::env::var(name).is_ok_and(|v| v == value);
    set("LODESTONE_STRICT", "1") || set("CI", "true")
}

/// Where skips are written: `LODESTONE_SKIP_LOG`, or a file in cargo's
/// temporary folder for the tests.
pub fn skip_log() -> PathBuf {
    std::env::var_os("LODESTONE_SKIP_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.log"))
}

/// Record that the running test skipped itself, with why, as one line
/// `<test binary>::<test>: <reason>` in [`skip_log`] (and on stderr).
pub fn record_skip(reason: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed>");
    let line = format!("{}::{test}: {reason}", env!("CARGO_CRATE_NAME"));
    eprintln!("\n!!!! SKIPPED {line} !!!!\n");
    let path = skip_log();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write per line with O_APPEND: lines from parallel tests don't mix.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        panic!("cannot record the skip in {}: {e}", path.display());
    }
}

/// One of the project's libtorrent roles in tests/interop (`lt_peer.py`,
/// `lt_dht.py`), run by Debian's python3 where libtorrent is installed.
pub fn interop_script(name: &str) -> Command {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(repo_root().join("tests/interop").join(name));
    c
}

/// `lt_dht.py swarm`: `nodes` libtorrent DHT nodes on base.. and a
/// libtorrent seeder of `torrent` on base+nodes that announces itself, for
/// 120 s. It prints READY once up.
pub fn lt_dht_swarm(nodes: u16, base: u16, torrent: &Path, content: &Path) -> Command {
    let mut c = interop_script("lt_dht.py");
    c.args(["swarm", "--n", &nodes.to_string()])
        .args(["--base-port", &base.to_string(), "--duration", "120"])
        .args(["--seed-port", &(base + nodes).to_string(), "--seed-torrent"])
        .arg(torrent)
        .arg("--content")
        .arg(content);
    c
}

pub fn require_libtorrent() -> bool {
    require(
        "python3-libtorrent",
        Command::new("/usr/bin/python3").args(["-c", "import libtorrent"]),
    )
}

/// A child process killed when the test ends, pass or fail.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child"),
        )
    }

    /// Wait (bounded) for a line on stdout that contains `needle`; fails
    /// with what the child printed. The rest of stdout is read on (and
    /// dropped), so the child can go on printing.
    pub fn wait_for_line(&mut self, needle: &str, timeout: std::time::Duration) {
        let mut lines = Lines::stdout(&mut self.0);
        lines.wait(&format!("line with {needle:?}"), timeout, |l| {
            l.contains(needle)
        });
    }

    /// Wait (bounded) for the child to exit; returns its output. On a
    /// timeout the child is killed and the test fails with the end of what
    /// it printed.
    pub fn finish(mut self, timeout: std::time::Duration) -> Output {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.0.kill();
                let child = std::mem::replace(
                    &mut self.0,
                    Command::new("true").spawn().expect("spawn true"),
                );
                let out = child.wait_with_output().expect("collect output");
                let tail = |b: &[u8]| {
                    let t = String::from_utf8_lossy(b);
                    let start = t.len().saturating_sub(3000);
                    let start = (start..t.len())
                        .find(|&i| t.is_char_boundary(i))
                        .unwrap_or(0);
                    t[start..].to_owned()
                };
                panic!(
                    "child still running after {timeout:?}\n--- stdout (end) ---\n{}\n--- stderr (end) ---\n{}",
                    tail(&out.stdout),
                    tail(&out.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let child = std::mem::replace(
            &mut self.0,
            Command::new("true").spawn().expect("spawn true"),
        );
        let out = child.wait_with_output().expect("collect output");
        drop(self);
        out
    }
}

/// A child's stdout or stderr, line by line, read on a thread as it
/// comes. Lines end at `\n` or `\r` (progress displays redraw with `\r`);
/// empty ones are dropped. The thread reads to the end of the pipe even
/// once this is dropped: a closed pipe would end the child.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    /// Every line taken in so far, in order.
    pub seen: Vec<String>,
    /// Who prints them, for failure messages ("C (Lodestone)").
    who: String,
}

impl Lines {
    /// The child's stdout (it must be piped).
    pub fn stdout(child: &mut std::process::Child) -> Self {
        Self::of(child.stdout.take().expect("stdout piped"))
    }

    /// The child's stderr (it must be piped).
    pub fn stderr(child: &mut std::process::Child) -> Self {
        Self::of(child.stderr.take().expect("stderr piped"))
    }

    /// Any pipe: what [`Lines::stdout`] and [`Lines::stderr`] read.
    pub fn of(mut pipe: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                for &b in &buf[..n] {
                    if b == b'\n' || b == b'\r' {
                        if !line.is_empty() {
                            // Once the reader is gone, read on all the same.
                            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                        }
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            if !line.is_empty() {
                let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            }
        });
        Self {
            rx,
            seen: Vec::new(),
            who: "the child".to_owned(),
        }
    }

    /// Name the child in failure messages.
    pub fn named(mut self, who: &str) -> Self {
        self.who = who.to_owned();
        self
    }

    /// The first line not taken in yet that `pred` accepts, within
    /// `timeout`; otherwise the test fails naming `what`, with what the
    /// child printed.
    pub fn wait(
        &mut self,
        what: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        use std::sync::mpsc::RecvTimeoutError;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {what} within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("its output ended (it exited) before {what}"))
                }
            }
        }
    }

    /// The first line, taken in before or within `timeout`, that `pred`
    /// accepts (see [`Lines::wait`]).
    pub fn find(
        &mut self,
        what: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        match self.seen.iter().find(|l| pred(l)) {
            Some(l) => l.clone(),
            None => self.wait(what, timeout, pred),
        }
    }

    /// Take in the lines printed so far, waiting at most `wait` for one.
    /// False once the output has ended (the child exited) and every line
    /// is in.
    pub fn pump(&mut self, wait: std::time::Duration) -> bool {
        use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
        match self.rx.recv_timeout(wait) {
            Ok(l) => self.seen.push(l),
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
        loop {
            match self.rx.try_recv() {
                Ok(l) => self.seen.push(l),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Take in every line until the output ends (the child exited), within
    /// `timeout`; otherwise the test fails with what the child printed.
    pub fn read_to_end(&mut self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.pump(deadline.saturating_duration_since(std::time::Instant::now())) {
            if std::time::Instant::now() >= deadline {
                self.fail(&format!("still running after {timeout:?}"));
            }
        }
    }

    /// Fail the test with `what` and the last 60 lines printed.
    pub fn fail(&mut self, what: &str) -> ! {
        while let Ok(l) = self.rx.try_recv() {
            self.seen.push(l);
        }
        let start = self.seen.len().saturating_sub(60);
        panic!(
            "{}: {what}; it printed ({} lines, the last {}):\n{}",
            self.who,
            self.seen.len(),
            self.seen.len() - start,
            self.seen[start..].join("\n")
        );
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Every file under `a` has the same bytes under `b`.
pub fn assert_same_tree(a: &Path, b: &Path) {
    if a.is_file() {
        let x = std::fs::read(a).expect("read source");
        let y = std::fs::read(b).unwrap_or_else(|e| panic!("{} missing: {e}", b.display()));
        assert!(x == y, "{} differs", b.display());
        return;
    }
    let mut stack = vec![PathBuf::new()];
    let mut files = 0;
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(a.join(&rel)).expect("read dir") {
            let e = e.expect("dir entry");
            let r = rel.join(e.file_name());
            if e.file_type().expect("file type").is_dir() {
                stack.push(r);
            } else {
                let x = std::fs::read(a.join(&r)).expect("read source");
                let y = std::fs::read(b.join(&r))
                    .unwrap_or_else(|e| panic!("{} missing in the download: {e}", r.display()));
                assert!(x == y, "{} differs", r.display());
                files += 1;
            }
        }
    }
    assert!(files > 0, "nothing compared");
}

pub fn require_aria2() -> bool {
    require("aria2", Command::new("aria2c").arg("--version"))
}

/// aria2c on 127.0.0.2:`port`, with peer exchange on, LPD and IPv6 off,
/// leaving once it has the content; the caller adds its DHT options, then
/// `--dir FOLDER` and the torrent.
pub fn aria2_on_127_0_0_2(port: u16) -> Command {
    let mut c = Command::new("aria2c");
    c.args([
        "--interface=127.0.0.2",
        &format!("--listen-port={port}"),
        "--enable-dht6=false",
        "--disable-ipv6=true",
        "--enable-peer-exchange=true",
        "--bt-enable-lpd=false",
        "--seed-time=0",
        "--file-allocation=none",
        "--console-log-level=warn",
        "--summary-interval=0",
    ]);
    c
}

pub fn require_transmission() -> bool {
    require(
        "transmission-cli",
        Command::new("transmission-cli").arg("--help"),
    )
}

/// A free block of `n` consecutive UDP/TCP ports on 127.0.0.1.
pub fn port_block(n: u16) -> u16 {
    for _ in 0..50 {
        let base = free_port();
        if base > 60000 {
            continue;
        }
        let ok = (0..n).all(|i| {
            std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
        });
        if ok {
            return base;
        }
    }
    panic!("no free port block");
}

/// `lodestone create --no-date` of `content` into `torrent`, with `extra`
/// options (`--piece-size 256K`, `--tracker URL`); returns the v1 info hash
/// in hex.
pub fn create_torrent(content: &Path, torrent: &Path, extra: &[&str]) -> String {
    let mut cmd = bin();
    cmd.args(["create", "--no-date", "--force", "-o"])
        .arg(torrent)
        .arg(content)
        .args(extra);
    let o = cmd.output().expect("run lodestone create");
    assert!(
        o.status.success(),
        "create: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = bin()
        .args(["info", "--json"])
        .arg(torrent)
        .output()
        .expect("run lodestone info");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("info --json");
    j["info_hash_v1"].as_str().expect("v1 info hash").to_owned()
}

/// A `lodestone seed` on a fresh 127.0.0.1 port, returned once it serves
/// (after its check of the files), with its address.
pub fn spawn_seeder(torrent: &Path, content: &Path, extra: &[&str]) -> (Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut seeder = Child::spawn(&mut seed_command(&addr, torrent, content, extra));
    seeder.wait_for_line("\"started\"", std::time::Duration::from_secs(60));
    (seeder, addr)
}

/// `lodestone seed --json --seed-time 120 --listen <addr>`, with `extra`
/// options, of `torrent` from `content`.
pub fn seed_command(addr: &str, torrent: &Path, content: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["seed", "--json", "--seed-time", "120", "--listen", addr])
        .args(extra)
        .arg(torrent)
        .arg(content);
    c
}

// ---- network namespaces (root only) ----

pub const NS_A: &str = "10.78.0.1";
pub const NS_B: &str = "10.78.0.2";
/// The same two ends over IPv6 (unique local addresses).
pub const NS6_A: &str = "fd78::1";
pub const NS6_B: &str = "fd78::2";

/// Two namespaces joined by a veth pair, deleted on drop.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl NetnsPair {
    pub fn new(tag: &str) -> Self {
        let id = format!("{}{tag}", std::process::id());
        let pair = Self {
            a: format!("lsa{id}"),
            b: format!("lsb{id}"),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        let (va, vb) = (format!("va{id}"), format!("vb{id}"));
        ip(&["-n", &pair.a, "link", "set", "lo", "up"]);
        ip(&["-n", &pair.b, "link", "set", "lo", "up"]);
        ip(&[
            "link", "add", &va, "netns", &pair.a, "type", "veth", "peer", "name", &vb, "netns",
            &pair.b,
        ]);
        ip(&[
            "-n",
            &pair.a,
            "addr",
            "add",
            &format!("{NS_A}/24"),
            "dev",
            &va,
        ]);
        ip(&[
            "-n",
            &pair.b,
            "addr",
            "add",
            &format!("{NS_B}/24"),
            "dev",
            &vb,
        ]);
        // IPv6 too, without duplicate address detection's wait.
        for (ns, dev, addr) in [(&pair.a, &va, NS6_A), (&pair.b, &vb, NS6_B)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        ip(&["-n", &pair.a, "link", "set", &va, "up"]);
        ip(&["-n", &pair.b, "link", "set", &vb, "up"]);
        // Multicast (BEP 14) needs a route on the link.
        ip(&["-n", &pair.a, "route", "add", "224.0.0.0/4", "dev", &va]);
        ip(&["-n", &pair.b, "route", "add", "224.0.0.0/4", "dev", &vb]);
        pair
    }

    pub fn exec(&self, ns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c.env(LOCAL_ONLY.0, LOCAL_ONLY.1);
        c
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The binary under test, for a command started another way (in a
/// namespace: [`NetnsPair::exec`]).
pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lodestone"))
}

/// Are we root with `ip` available (for network namespaces)? In strict
/// mode a missing piece fails the test; elsewhere the skip is recorded.
pub fn require_netns() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !root {
        return require("root (for network namespaces)", &mut Command::new("false"));
    }
    require("iproute2", Command::new("ip").arg("-V"))
}

/// `n` Lodestone DHT nodes (`dht node`) on 127.0.0.1:base.., all joining
/// through the first, for `secs` seconds. Killed when dropped. The first
/// starts a moment before the others, so that their bootstrap finds it up.
pub fn lodestone_dht_nodes(base: u16, n: u16, secs: u32) -> Vec<Child> {
    dht_nodes_with(bin, "127.0.0.1", base, n, secs)
}

/// [`lodestone_dht_nodes`] on `ip`, each started by `lodestone()` (a
/// command that runs the binary, e.g. inside a network namespace).
pub fn dht_nodes_with(
    mut lodestone: impl FnMut() -> Command,
    ip: &str,
    base: u16,
    n: u16,
    secs: u32,
) -> Vec<Child> {
    let router = format!("{ip}:{base}");
    (0..n)
        .map(|i| {
            if i == 1 {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            Child::spawn(lodestone().args([
                "dht",
                "node",
                "--listen",
                &format!("{ip}:{}", base + i),
                "--bootstrap",
                &router,
                "--status-every",
                "60",
                "--duration",
                &secs.to_string(),
            ]))
        })
        .collect()
}

// ---- Transmission, in a NetnsPair's second namespace ----

/// A config folder (under `dir`) for a `transmission-cli` on
/// [`NS_B`]:`port`: LPD, uTP, port forwarding, blocklist, RPC and speed
/// limits off; PEX on when `pex`; with `dht` nodes, its DHT on,
/// bootstrapped from them; with `stop_when_done`, ratio limit 0, so it
/// exits (0) once it has everything.
pub fn transmission_config(
    dir: &Path,
    port: u16,
    stop_when_done: bool,
    pex: bool,
    dht: &[String],
) -> PathBuf {
    let cfg = dir.join(format!("trcfg-{port}"));
    std::fs::create_dir_all(&cfg).expect("create Transmission's config folder");
    if !dht.is_empty() {
        // Transmission 3.00 reads "<config-dir>/dht.bootstrap": "host port"
        // lines, and pings each. It searches only once it has 4 good nodes
        // and 8 in all, so give it 8: otherwise its start-up depends on how
        // fast it walks from one node (it once gave up after 66 s and went
        // for the public routers, which the namespace cannot reach).
        let lines: String = dht.iter().map(|a| a.replace(':', " ") + "\n").collect();
        std::fs::write(cfg.join("dht.bootstrap"), lines).expect("write dht.bootstrap");
    }
    let s = serde_json::json!({
        "dht-enabled": !dht.is_empty(), "lpd-enabled": false, "pex-enabled": pex, "utp-enabled": false,
        "port-forwarding-enabled": false, "peer-port": port, "peer-port-random-on-start": false,
        "bind-address-ipv4": NS_B, "ratio-limit-enabled": stop_when_done, "ratio-limit": 0,
        "message-level": 2, "blocklist-enabled": false, "rpc-enabled": false,
        "speed-limit-down-enabled": false, "speed-limit-up-enabled": false,
        "alt-speed-enabled": false, "incomplete-dir-enabled": false,
    });
    std::fs::write(cfg.join("settings.json"), s.to_string()).expect("write settings.json");
    cfg
}

/// `transmission-cli -g <cfg> -w <folder> <torrent or magnet>` in `net`'s
/// second namespace.
pub fn transmission_cli(
    net: &NetnsPair,
    cfg: &Path,
    folder: &Path,
    what: impl AsRef<std::ffi::OsStr>,
) -> Command {
    let mut c = net.exec(&net.b, Path::new("transmission-cli"));
    c.arg("-g").arg(cfg).arg("-w").arg(folder).arg(what);
    c
}

/// Waits for a `transmission_cli` child, which exits 0 once it has
/// everything (ratio limit 0), and fails the test if it did not.
pub fn transmission_done(tr: Child, timeout: std::time::Duration) {
    let o = tr.finish(timeout);
    assert!(
        o.status.success(),
        "transmission-cli: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---- installed clients' versions ----

/// The client hint our `peer_connected` events give for the installed
/// libtorrent: its peer id prefix (`peer_fingerprint`, e.g. `-LT2080-`)
/// without the dashes, read from libtorrent's default settings (no
/// session is started, so nothing listens).
pub fn libtorrent_client_hint() -> String {
    let o = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import libtorrent as lt; \
             print(lt.default_settings()['peer_fingerprint'], lt.__version__)",
        ])
        .output()
        .expect("run /usr/bin/python3");
    let text = String::from_utf8_lossy(&o.stdout);
    let fingerprint = text.split_whitespace().next().unwrap_or("");
    let hint = fingerprint
        .strip_prefix('-')
        .and_then(|f| f.strip_suffix('-'))
        .filter(|h| h.len() == 6 && h.starts_with("LT"));
    hint.unwrap_or_else(|| {
        panic!(
            "libtorrent's peer_fingerprint is not -LTxxxx-: {text} {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
    .to_owned()
}

/// The client hint for the installed Transmission, from
/// `transmission-cli --version` ("transmission-cli 3.00 (bb6b5a062e)"): a
/// release's peer id is `-TR` + the version's digits padded to three +
/// `0` + `-` (3.00 → `-TR3000-`, 2.94 → `-TR2940-`, 4.0.5 → `-TR4050-`).
pub fn transmission_client_hint() -> String {
    let o = Command::new("transmission-cli")
        .arg("--version")
        .output()
        .expect("run transmission-cli --version");
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let version = text
        .split_whitespace()
        .skip_while(|w| !w.starts_with("transmission"))
        .nth(1)
        .unwrap_or("");
    let digits: String = version.chars().filter(|c| *c != '.').collect();
    assert!(
        !digits.is_empty() && digits.len() <= 3 && digits.chars().all(|c| c.is_ascii_digit()),
        "cannot derive Transmission's peer id from its version {version:?} \
         (a development build has its own suffix): {text}"
    );
    format!("TR{digits:0<3}0")
}

/// The stdout of a run that must have succeeded; otherwise the test fails
/// showing what it printed on both outputs.
#[track_caller]
pub fn success_stdout(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}
