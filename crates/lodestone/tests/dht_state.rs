//! `lodestone dht node --state FILE`: the routing table is saved at exit
//! and loaded at start (a warm start), in a private DHT of Lodestone nodes
//! on 127.0.0.1. The restarted node is given only a dead bootstrap
//! address (the tests refuse the public routers, so some --bootstrap is
//! required): whatever it knows and reaches, it has from the file. A
//! corrupt file falls back as the code intends: malformed lines are
//! skipped, an unreadable file means a cold start, and a path that cannot
//! be written is an error at exit that names it.
mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, lodestone_dht_nodes, port_block, Child, Lines};
use serde_json::Value;

const SWARM: u16 = 6;

/// A `dht node --json --status-every 1`, its health lines read as they
/// come; interrupted (SIGINT, as Ctrl-C) or killed when dropped.
struct Node {
    child: Child,
    lines: Lines,
}

/// A health line (every line of `dht node --json` is one).
fn health(line: &str) -> Option<Value> {
    serde_json::from_str(line).ok()
}

impl Node {
    fn start(listen: u16, bootstrap: &str, state: Option<&Path>) -> Self {
        let mut cmd = bin();
        cmd.args(["dht", "node", "--json", "--status-every", "1"])
            .args(["--duration", "120"])
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .args(["--bootstrap", bootstrap]);
        if let Some(s) = state {
            cmd.arg("--state").arg(s);
        }
        let mut child = Child::spawn(&mut cmd);
        let lines = Lines::stdout(&mut child.0).named("dht node");
        Self { child, lines }
    }

    /// The next health line.
    fn next(&mut self, timeout: Duration) -> Value {
        let l = self
            .lines
            .wait("health line", timeout, |l| health(l).is_some());
        health(&l).expect("just parsed")
    }

    /// Wait (bounded) for a health line that satisfies `ok`.
    fn until(&mut self, what: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let l = self
            .lines
            .wait(what, timeout, |l| health(l).is_some_and(|v| ok(&v)));
        health(&l).expect("just parsed")
    }

    /// Ctrl-C, then the exit (bounded): (success, stderr).
    fn interrupt(mut self) -> (bool, String) {
        // By its second health line the node has waited in its loop, its
        // Ctrl-C handler installed.
        while self
            .lines
            .seen
            .iter()
            .filter(|l| health(l).is_some())
            .count()
            < 2
        {
            self.next(Duration::from_secs(20));
        }
        let pid = self.child.0.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Ok(Some(s)) = self.child.0.try_wait() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "dht node did not exit within 15 s of Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (status.success(), err)
    }
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("health line without {key}: {v}"))
}

/// The saved table: `id addr` per line, each id 40 hex digits.
fn parse_state(path: &Path) -> Vec<(String, SocketAddr)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} unreadable: {e}", path.display()));
    text.lines()
        .map(|l| {
            let (id, addr) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("state line {l:?}: not 'id addr'"));
            assert!(
                id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "state line {l:?}: id is not 40 hex digits"
            );
            let addr = addr
                .parse()
                .unwrap_or_else(|e| panic!("state line {l:?}: {e}"));
            (id.to_owned(), addr)
        })
        .collect()
}

/// A table saved by a node that joined the `SWARM` nodes from `base`,
/// once it knew them all.
fn saved_table(base: u16, listen: u16, state: &Path) -> Vec<(String, SocketAddr)> {
    let router = format!("127.0.0.1:{base}");
    let mut node = Node::start(listen, &router, Some(state));
    node.until("knows the whole swarm", Duration::from_secs(30), |v| {
        n(v, "nodes") >= u64::from(SWARM)
    });
    let (ok, err) = node.interrupt();
    assert!(ok, "dht node failed at exit: {err}");
    parse_state(state)
}

fn swarm_addrs(base: u16) -> BTreeSet<SocketAddr> {
    (0..SWARM)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
        .collect()
}

#[test]
fn a_saved_table_gives_a_warm_start() {
    let dir = tempfile::tempdir().unwrap();
    let base = port_block(SWARM + 4);
    let _swarm = lodestone_dht_nodes(base, SWARM, 120);
    // Nothing listens here: a bootstrap that gives nothing.
    let dead = format!("127.0.0.1:{}", base + SWARM + 3);
    let state = dir.path().join("sub/dht.state");

    // 1. Saved at exit (Ctrl-C), into a directory made for it: every
    //    swarm node, each with its id.
    let table = saved_table(base, base + SWARM, &state);
    let addrs: BTreeSet<SocketAddr> = table.iter().map(|(_, a)| *a).collect();
    assert_eq!(addrs, swarm_addrs(base), "saved table: {table:?}");

    // 2. Loaded at start: the first health line (before any answer) has
    //    the whole table, and the node reaches the swarm through it.
    let mut warm = Node::start(base + SWARM + 1, &dead, Some(&state));
    let first = warm.next(Duration::from_secs(20));
    assert_eq!(n(&first, "nodes"), table.len() as u64, "{first}");
    warm.until(
        "the warm node hears from the saved nodes",
        Duration::from_secs(30),
        |v| n(v, "received") > 0 && n(v, "good") >= u64::from(SWARM) / 2,
    );
    drop(warm);

    // The same start without the file knows nobody and hears nothing.
    let mut cold = Node::start(base + SWARM + 2, &dead, None);
    for _ in 0..3 {
        let v = cold.next(Duration::from_secs(20));
        assert_eq!((n(&v, "nodes"), n(&v, "received")), (0, 0), "{v}");
    }
    drop(cold);

    // 3. The loaded table serves a lookup: a peer announced in the swarm
    //    is found with only the file and the dead bootstrap.
    let ih = "5a7e5a7e5a7e5a7e5a7e5a7e5a7e5a7e5a7e5a7e";
    let router = format!("127.0.0.1:{base}");
    let o = bin()
        .args(["dht", "announce", ih, "--port", "31337"])
        .args(["--listen", "127.0.0.1:0", "--bootstrap", &router])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "announce: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = bin()
        .args(["dht", "get-peers", ih, "--json", "--timeout", "10"])
        .args(["--listen", "127.0.0.1:0", "--bootstrap", &dead, "--state"])
        .arg(&state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("\"addr\":\"127.0.0.1:31337\""),
        "get-peers from the saved table did not find the announced peer:\n{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_corrupt_state_file_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let base = port_block(SWARM + 6);
    let _swarm = lodestone_dht_nodes(base, SWARM, 120);
    let dead = format!("127.0.0.1:{}", base + SWARM + 5);
    // Malformed lines are skipped, the good ones kept. The two good
    // ones name addresses where nobody listens, so that no answer can add
    // to what was loaded.
    let mixed = dir.path().join("mixed.state");
    let (x, y) = (base + SWARM + 3, base + SWARM + 4);
    let text = format!(
        "not a node line\n{} 127.0.0.1:{x}\nzz 127.0.0.1:1\n{} not-an-address\n{} 127.0.0.1:{y}\n\n",
        "11".repeat(20),
        "22".repeat(20),
        "33".repeat(20)
    );
    std::fs::write(&mixed, text).unwrap();
    let mut node = Node::start(base + SWARM + 1, &dead, Some(&mixed));
    let first = node.next(Duration::from_secs(20));
    assert_eq!(n(&first, "nodes"), 2, "{first}");
    drop(node);

    // Not text at all: nothing is loaded (with a dead bootstrap the node
    // stays alone) ...
    let garbage = dir.path().join("garbage.state");
    std::fs::write(&garbage, [0xffu8, 0xfe, 0x00, 0x80, 0x0a, 0xc3].repeat(100)).unwrap();
    let mut node = Node::start(base + SWARM + 2, &dead, Some(&garbage));
    for _ in 0..3 {
        let v = node.next(Duration::from_secs(20));
        assert_eq!((n(&v, "nodes"), n(&v, "received")), (0, 0), "{v}");
    }
    drop(node);
    // ... and with a live one it starts cold, joins, and the file is
    // replaced by a good table at exit.
    let mut node = Node::start(
        base + SWARM + 2,
        &format!("127.0.0.1:{base}"),
        Some(&garbage),
    );
    node.until("joins the swarm", Duration::from_secs(30), |v| {
        n(v, "nodes") >= u64::from(SWARM)
    });
    let (ok, err) = node.interrupt();
    assert!(ok, "{err}");
    let rewritten: BTreeSet<SocketAddr> = parse_state(&garbage).iter().map(|(_, a)| *a).collect();
    assert_eq!(rewritten, swarm_addrs(base));

    // A state path that cannot be written: the node runs, and its exit
    // is an error that names the file.
    let blocked = dir.path().join("a-directory");
    std::fs::create_dir(&blocked).unwrap();
    let node = Node::start(base + SWARM + 1, &dead, Some(&blocked));
    let (ok, err) = node.interrupt();
    assert!(!ok, "saving into a directory succeeded?");
    assert!(
        err.contains("saving") && err.contains(&blocked.display().to_string()),
        "{err}"
    );
}
