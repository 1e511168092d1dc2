//! Trackers as a peer source: a real opentracker (Debian's package) over
//! HTTP and UDP is the only way the leecher learns of the seeder; and a
//! tracker that answers garbage shows its error while the download carries
//! on through another source.
mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::{assert_same_tree, bin, create_torrent, free_port, require, spawn_seeder, Child};
use lodestone::payload;

#[test]
fn http_and_udp_opentracker() {
    if !require(
        "opentracker",
        Command::new("sh").args(["-c", "command -v opentracker"]),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_file(&src.join("t.bin"), "t.bin", 4 << 20, "tracker").unwrap();
    let port = free_port();
    let urls = [
        format!("http://127.0.0.1:{port}/announce"),
        format!("udp://127.0.0.1:{port}"),
    ];
    let mut hashes = Vec::new();
    let mut torrents = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let t = dir.path().join(format!("t{i}.torrent"));
        hashes.push(create_torrent(
            &src.join("t.bin"),
            &t,
            &["--piece-size", "64K", "--tracker", url],
        ));
        torrents.push(t);
    }
    // opentracker on the port the torrents name.
    let _ot = opentracker(
        dir.path(),
        &format!("listen.tcp_udp 127.0.0.1:{port}"),
        &hashes,
    );
    wait_listening(port);
    for (t, url) in torrents.iter().zip(&urls) {
        let (_seeder, _) = spawn_seeder(t, &src, &[]);
        let out = dir
            .path()
            .join(format!("dl-{}", t.file_stem().unwrap().to_string_lossy()));
        let o = Child::spawn(
            bin()
                .args([
                    "get",
                    "--json",
                    "--listen",
                    &format!("127.0.0.1:{}", free_port()),
                    "-o",
                ])
                .arg(&out)
                .arg(t),
        )
        .finish(Duration::from_secs(60));
        assert_met_through_tracker(&o, url);
        // Our exit 0 is our own word: the bytes must be the seeder's.
        assert_same_tree(&src.join("t.bin"), &out.join("t.bin"));
    }
    // A magnet whose only peer source is its tracker (the seeder of the
    // HTTP torrent is still announced there).
    let (_seeder, _) = spawn_seeder(&torrents[0], &src, &[]);

    // Scrape over HTTP (BEP 48) and UDP (BEP 15): opentracker counts the
    // seeder announced there.
    for (t, url) in torrents.iter().zip(&urls) {
        let o = bin().args(["scrape", "--json"]).arg(t).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "scrape {url}: {text}");
        let j: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(j["tracker"], url.as_str(), "{j}");
        assert!(j["seeders"].as_u64().unwrap() >= 1, "{j}");
    }
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&tr={}",
        hashes[0],
        urls[0].replace(':', "%3A").replace('/', "%2F")
    );
    let out = dir.path().join("dl-magnet");
    let o = Child::spawn(
        bin()
            .args([
                "get",
                "--json",
                &magnet,
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "-o",
            ])
            .arg(&out),
    )
    .finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert_same_tree(&src.join("t.bin"), &out.join("t.bin"));
}

#[test]
fn a_garbage_tracker_is_reported_and_the_download_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_file(&src.join("g.bin"), "g.bin", 2 << 20, "garbage").unwrap();
    // A "tracker" that answers every request with HTTP 200 and junk.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n<html>junk!!");
        }
    });
    let torrent = dir.path().join("g.torrent");
    let tracker = format!("http://127.0.0.1:{port}/announce");
    create_torrent(&src.join("g.bin"), &torrent, &["--tracker", &tracker]);
    let (_seeder, seeder) = spawn_seeder(&torrent, &src, &["--no-trackers"]);
    let out = dir.path().join("dl");
    let o = Child::spawn(
        bin()
            .args(["get", "--json", "--seed-time", "2", "--peer", &seeder, "-o"])
            .arg(&out)
            .arg(&torrent),
    )
    .finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    // "Carries on" means the content arrived, byte for byte.
    assert_same_tree(&src.join("g.bin"), &out.join("g.bin"));
    let last_sources = text
        .lines()
        .rfind(|l| l.contains("\"event\":\"sources\""))
        .unwrap();
    assert!(
        last_sources.contains("not working: tracker answer is not bencode"),
        "{last_sources}"
    );
}

/// An HTTPS tracker: the real opentracker behind socat's TLS (OpenSSL),
/// with a certificate from a test CA made by the openssl tool. With the
/// CA given (--ca-file) the leecher finds the seeder through it; without,
/// the tracker shows the certificate error and nothing is trusted.
#[test]
fn https_opentracker_behind_tls() {
    let sh = |c: &str| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", c]);
        cmd
    };
    if !require("opentracker", &mut sh("command -v opentracker"))
        || !require("socat", &mut sh("command -v socat"))
        || !require("openssl", &mut sh("command -v openssl"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |cmd: &mut Command| {
        let o = cmd.current_dir(d).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Lodestone test CA",
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]));
    std::fs::write(
        d.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]));

    let src = d.join("src");
    payload::write_file(&src.join("s.bin"), "s.bin", 2 << 20, "https").unwrap();
    let (plain, tls) = (free_port(), free_port());
    let url = format!("https://localhost:{tls}/announce");
    let torrent = d.join("s.torrent");
    let ih = create_torrent(&src.join("s.bin"), &torrent, &["--tracker", &url]);
    let _ot = opentracker(d, &format!("listen.tcp 127.0.0.1:{plain}"), &[ih]);
    let _tls = Child::spawn(Command::new("socat").current_dir(d).args([
        &format!("OPENSSL-LISTEN:{tls},bind=127.0.0.1,reuseaddr,fork,cert=leaf.pem,key=leaf.key,verify=0"),
        &format!("TCP:127.0.0.1:{plain}"),
    ]));
    wait_listening(plain);
    wait_listening(tls);
    let ca = d.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let (_seeder, _) = spawn_seeder(&torrent, &src, &["--ca-file", ca]);

    // Without the CA: the certificate is refused, and said so.
    let mut untrusting = Child::spawn(
        bin()
            .args(["get", "--json", "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("-o")
            .arg(d.join("dl-untrusting"))
            .arg(&torrent),
    );
    untrusting.wait_for_line("UnknownIssuer", Duration::from_secs(30));
    drop(untrusting);

    let out = d.join("dl");
    let o = Child::spawn(
        bin()
            .args(["get", "--json", "--ca-file", ca, "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("-o")
            .arg(&out)
            .arg(&torrent),
    )
    .finish(Duration::from_secs(60));
    assert_met_through_tracker(&o, &url);
    assert_same_tree(&src.join("s.bin"), &out.join("s.bin"));
    // Scrape over HTTPS too.
    let o = bin()
        .args(["scrape", "--json", "--ca-file", ca])
        .arg(&torrent)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("\"seeders\":1"), "{text}");
}

/// opentracker with `listen` (a config line) serving only `hashes`.
fn opentracker(dir: &std::path::Path, listen: &str, hashes: &[String]) -> Child {
    let whitelist = dir.join("whitelist.txt");
    std::fs::write(&whitelist, hashes.join("\n") + "\n").unwrap();
    let conf = dir.join("ot.conf");
    let text = format!("{listen}\naccess.whitelist {}\n", whitelist.display());
    std::fs::write(&conf, text).unwrap();
    Child::spawn(Command::new("opentracker").arg("-f").arg(&conf))
}

/// Wait (at most 10 s) until something accepts TCP on 127.0.0.1:`port`;
/// fail the test, naming the port, if nothing does.
fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing accepted TCP on 127.0.0.1:{port} within 10 s (tracker or TLS front not up)");
}

/// A `get --json` that succeeded with the tracker at `url` as the only way
/// to meet the seeder: either the leecher dialed the seeder it was given,
/// or the seeder (which announces after its file check) dialed the leecher
/// it was given. The last sources table shows that tracker working.
fn assert_met_through_tracker(o: &std::process::Output, url: &str) {
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{url}: {text}");
    assert!(
        text.contains("\"source\":\"tracker\"") || text.contains("\"source\":\"incoming\""),
        "{url}: {text}"
    );
    let last: serde_json::Value = text
        .lines()
        .rfind(|l| l.contains("\"event\":\"sources\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no sources table: {text}"));
    let row = last["sources"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == url))
        .unwrap_or_else(|| panic!("no row for {url}: {last}"));
    assert_eq!(row["status"], "working", "{row}");
}
