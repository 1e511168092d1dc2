//! The first node of a private DHT: under `LODESTONE_LOCAL_ONLY` (which
//! every test sets, so the public routers are never used) `dht node`
//! starts with no `--bootstrap`, alone, and others join through it; with a
//! saved table (`--state`) it starts from the nodes in it. All on
//! 127.0.0.1.
mod common;

use std::time::Duration;

use common::{bin, port_block, Child, Lines};
use serde_json::Value;

/// A `dht node --json --status-every 1` on 127.0.0.1:`port` for at most
/// 60 s, with `extra` options; its health lines.
fn node(port: u16, extra: &[&str]) -> (Child, Lines) {
    let mut child = Child::spawn(
        bin()
            .args(["dht", "node", "--json", "--status-every", "1"])
            .args(["--duration", "60"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra),
    );
    let lines = Lines::stdout(&mut child.0).named(&format!("dht node :{port}"));
    (child, lines)
}

/// The first health line with at least `n` nodes in the table.
fn knows(lines: &mut Lines, n: u64) -> Value {
    let parse = |l: &str| serde_json::from_str::<Value>(l).ok();
    let l = lines.wait(
        &format!("health line with {n} nodes or more"),
        Duration::from_secs(20),
        |l| parse(l).is_some_and(|v| v["nodes"].as_u64() >= Some(n)),
    );
    parse(&l).expect("just parsed")
}

#[test]
fn the_first_node_needs_no_bootstrap_and_others_join_it() {
    let base = port_block(2);
    let first = format!("127.0.0.1:{base}");
    let (_a, mut a) = node(base, &[]);
    // Up (it prints a health line once listening), alone.
    knows(&mut a, 0);
    let (_b, mut b) = node(base + 1, &["--bootstrap", &first]);
    knows(&mut b, 1);
    knows(&mut a, 1);

    // Announce through the second node, find the peer through the first.
    let ih = "5a".repeat(20);
    let o = bin()
        .args(["dht", "announce", &ih, "--port", "6881", "--json"])
        .args(["--listen", "127.0.0.1:0", "--timeout", "20"])
        .args(["--bootstrap", &format!("127.0.0.1:{}", base + 1)])
        .output()
        .expect("run dht announce");
    let out = common::success_stdout(&o);
    let v: Value = serde_json::from_str(out.trim()).expect("announce --json");
    assert!(v["acked"].as_u64() >= Some(1), "{v}");
    let o = bin()
        .args(["dht", "get-peers", &ih])
        .args(["--listen", "127.0.0.1:0", "--timeout", "20"])
        .args(["--bootstrap", &first])
        .output()
        .expect("run dht get-peers");
    let out = common::success_stdout(&o);
    assert!(
        out.lines().any(|l| l.trim() == "127.0.0.1:6881"),
        "get-peers through the first node: {out}"
    );
}

#[test]
fn a_saved_table_is_bootstrap_enough() {
    let dir = tempfile::tempdir().unwrap();
    let base = port_block(2);
    let (_a, mut a) = node(base, &[]);
    let id = knows(&mut a, 0)["id"]
        .as_str()
        .expect("health line with an id")
        .to_owned();
    // A table saved earlier that knows the first node; no --bootstrap.
    let state = dir.path().join("dht.state");
    std::fs::write(&state, format!("{id} 127.0.0.1:{base}\n")).unwrap();
    let (_b, mut b) = node(base + 1, &["--state", state.to_str().unwrap()]);
    knows(&mut b, 1);
    knows(&mut a, 1);

    // A one-shot job with neither still refuses (no public routers).
    let o = bin()
        .args([
            "dht",
            "get-peers",
            &"5a".repeat(20),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run dht get-peers");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--bootstrap"),
        "get-peers with no --bootstrap under LODESTONE_LOCAL_ONLY: {err}"
    );
}
