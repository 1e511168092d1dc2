//! BEP 44 items with libtorrent (python3-libtorrent's own dht_put_* and
//! dht_get_* calls), both ways:
//! - in a DHT of libtorrent nodes, what `lodestone dht put` stores,
//!   libtorrent gets (immutable and mutable), so our puts are accepted by
//!   libtorrent's storage and our signatures by its verifier;
//! - in a DHT of Lodestone nodes, what libtorrent puts (an immutable item,
//!   and a mutable one signed with the BEP's test-vector key), `lodestone
//!   dht get` finds and a second libtorrent session finds too.
mod common;

use std::time::Duration;

use common::{bin, interop_script, lodestone_dht_nodes, port_block, require_libtorrent, Child};

/// BEP 44's test-vector key pair; the secret in libtorrent's 64-byte form.
const PUBLIC: &str = "77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548";
const SECRET: &str = "e06d3183d14159228433ed599221b80bd0a5ce8352e4bdf0262f76786ef1c74db7e7a9fea2c0eb269d61e3b38e450a22e754941ac78479d6c54e1faf6037881d";

/// The last stdout line of `out` as JSON, or why there is none.
fn json_line(out: &std::process::Output) -> Result<serde_json::Value, String> {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        format!(
            "not JSON ({e}): {text}\nstatus: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `lt_dht.py item ...`: libtorrent's answer as JSON. A run that prints
/// nothing (once seen in CI: the Python process died before its answer)
/// is shown and tried once more; a second failure fails the test.
fn lt_item(bootstrap: &str, args: &[&str]) -> serde_json::Value {
    let run = || {
        let o = Child::spawn(
            interop_script("lt_dht.py")
                .args(["item", "--bootstrap", bootstrap, "--timeout", "40"])
                .args(args),
        )
        .finish(Duration::from_secs(60));
        json_line(&o)
    };
    run().unwrap_or_else(|first| {
        eprintln!("lt_dht.py item {args:?} gave no answer, trying again: {first}");
        run().unwrap_or_else(|again| panic!("{again}"))
    })
}

/// `lodestone dht <args> --json` through `bootstrap`.
fn lodestone(bootstrap: &str, args: &[&str]) -> (bool, serde_json::Value, String) {
    let o = bin()
        .arg("dht")
        .args(args)
        .args([
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            bootstrap,
        ])
        .args(["--timeout", "30"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let text = String::from_utf8_lossy(&o.stdout);
    let last = text.lines().last().unwrap_or("null");
    let j = serde_json::from_str(last).unwrap_or(serde_json::Value::Null);
    (o.status.success(), j, stderr)
}

#[test]
fn lodestone_puts_items_that_libtorrent_gets() {
    if !require_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = port_block(9);
    let mut swarm = Child::spawn(interop_script("lt_dht.py").args([
        "swarm",
        "--n",
        "8",
        "--base-port",
        &base.to_string(),
        "--duration",
        "150",
        // Puts go to the closest nodes a lookup finds: wait until the
        // libtorrent tables are filled (they take ~15 s to reach 5 nodes).
        "--ready-nodes",
        "4",
    ]));
    swarm.wait_for_line("READY", Duration::from_secs(90));
    let boot = |i: u16| format!("127.0.0.1:{}", base + i);

    // Immutable: stored on libtorrent nodes, and libtorrent finds it.
    let (ok, put, err) = lodestone(&boot(3), &["put", "from lodestone, immutable"]);
    assert!(ok, "put failed: {err} {put}");
    assert!(put["acked"].as_u64().unwrap() >= 3, "{put}");
    let target = put["target"].as_str().unwrap().to_owned();
    let got = lt_item(&boot(5), &["--get-immutable", &target]);
    assert_eq!(got["ok"], true, "{got}");
    assert!(
        got["value"]
            .as_str()
            .unwrap()
            .contains("from lodestone, immutable"),
        "{got}"
    );

    // Mutable, salted, two versions: libtorrent gets the newest, with its
    // own signature check passed.
    let key_file = dir.path().join("ed25519.key");
    let key_path = key_file.to_str().unwrap();
    for (n, text) in [(1, "version one"), (2, "version two")] {
        let (ok, put, err) = lodestone(
            &boot(2),
            &["put", text, "--key-file", key_path, "--salt", "lodestone"],
        );
        assert!(ok, "mutable put {n} failed: {err} {put}");
        assert_eq!(put["seq"], n, "{put}");
    }
    let (_, put, _) = lodestone(
        &boot(2),
        &[
            "put",
            "version two",
            "--key-file",
            key_path,
            "--salt",
            "lodestone",
            "--seq",
            "2",
        ],
    );
    let key = put["key"].as_str().unwrap().to_owned();
    let got = lt_item(&boot(6), &["--get-mutable", &key, "--salt", "lodestone"]);
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["seq"], 2, "{got}");
    assert_eq!(got["value"], "version two", "{got}");
}

#[test]
fn libtorrent_puts_items_that_lodestone_gets() {
    if !require_libtorrent() {
        return;
    }
    let base = port_block(8);
    let _nodes = lodestone_dht_nodes(base, 8, 150);
    std::thread::sleep(Duration::from_secs(2));
    let boot = |i: u16| format!("127.0.0.1:{}", base + i);

    // Immutable, put by libtorrent onto Lodestone nodes.
    let put = lt_item(&boot(1), &["--put-immutable", "from libtorrent"]);
    assert_eq!(put["ok"], true, "{put}");
    let target = put["target"].as_str().unwrap().to_owned();
    let (ok, got, err) = lodestone(&boot(3), &["get", &target]);
    assert!(ok, "get failed: {err}");
    assert_eq!(got["value"], "from libtorrent", "{got}");

    // Mutable with salt, signed by libtorrent with the BEP's test key.
    let put = lt_item(
        &boot(1),
        &[
            "--put-mutable",
            "mutable from libtorrent",
            "--secret",
            SECRET,
            "--public",
            PUBLIC,
            "--salt",
            "lt",
        ],
    );
    assert_eq!(put["ok"], true, "{put}");
    let (ok, got, err) = lodestone(&boot(4), &["get", "--key", PUBLIC, "--salt", "lt"]);
    assert!(ok, "mutable get failed: {err}");
    assert_eq!(got["value"], "mutable from libtorrent", "{got}");
    assert_eq!(got["seq"], put["seq"], "{got} vs {put}");

    // A second libtorrent session reads both back from our nodes.
    let again = lt_item(&boot(6), &["--get-immutable", &target]);
    assert_eq!(again["ok"], true, "{again}");
    let again = lt_item(&boot(6), &["--get-mutable", PUBLIC, "--salt", "lt"]);
    assert_eq!(again["value"], "mutable from libtorrent", "{again}");
}
