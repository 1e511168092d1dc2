//! IPv6 peers found through the DHT (BEP 32), PEX (BEP 11 `added6`) and
//! an HTTP tracker (BEP 7 `peers6`), all on [::1]: a Lodestone seeder
//! listening only on [::1] is found by a Lodestone leecher that has no
//! other way to learn it, the content is compared byte for byte, and the
//! compact 18-byte forms are read off the wire by hand (a raw KRPC query,
//! a raw peer that reads the PEX message). The tracker is a stand-in in
//! this test: it checks our announce and our reading of `peers6`, not a
//! real tracker's IPv6 support.
mod common;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{bin, create_torrent, port_block, Child};
use lodestone::payload;
use lodestone_bencode::{DecodeOptions, Decoder, Encoder};

const SIZE: u64 = 2 << 20;

fn fixture(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf, String) {
    let src = dir.join("src");
    payload::write_file(&src.join("six.bin"), "six.bin", SIZE, "ipv6").unwrap();
    let torrent = dir.join("six.torrent");
    let mut args = vec!["--piece-size", "64K"];
    args.extend_from_slice(extra);
    let ih = create_torrent(&src.join("six.bin"), &torrent, &args);
    (src, torrent, ih)
}

/// A free port on [::1] (TCP and UDP).
fn port6() -> u16 {
    for _ in 0..50 {
        let l = TcpListener::bind("[::1]:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if UdpSocket::bind(("::1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port on [::1]");
}

/// The 18-byte compact form of [::1]:port.
fn compact6(port: u16) -> Vec<u8> {
    let mut b = Ipv6Addr::LOCALHOST.octets().to_vec();
    b.extend_from_slice(&port.to_be_bytes());
    b
}

fn seeder6(torrent: &Path, src: &Path, port: u16, extra: &[&str]) -> Child {
    let mut s = Child::spawn(
        bin()
            .args(["seed", "--json", "--no-pex", "--seed-time", "120"])
            .args(["--listen", &format!("[::1]:{port}")])
            .args(extra)
            .arg(torrent)
            .arg(src),
    );
    s.wait_for_line("\"started\"", Duration::from_secs(30));
    s
}

/// `get --json` to the end (bounded): it must succeed, connect to `seeder`
/// as a `source` peer, and write the source's bytes.
fn leech_and_check(
    args: &[&str],
    dir: &Path,
    torrent: &Path,
    src: &Path,
    seeder: u16,
    source: &str,
) {
    let out = dir.join(format!("dl-{source}"));
    let o = Child::spawn(
        bin()
            .args(["get", "--json"])
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg(torrent),
    )
    .finish(Duration::from_secs(90));
    let text = common::success_stdout(&o);
    let reached = text.lines().any(|l| {
        l.contains("\"peer_connected\"")
            && l.contains(&format!("\"addr\":\"[::1]:{seeder}\""))
            && l.contains(&format!("\"source\":\"{source}\""))
    });
    assert!(
        reached,
        "the leecher never reached [::1]:{seeder} as a {source} peer:\n{text}"
    );
    assert!(
        std::fs::read(src.join("six.bin")).unwrap() == std::fs::read(out.join("six.bin")).unwrap(),
        "the download differs"
    );
}

// ---- (a) the IPv6 DHT ----

/// One KRPC query to `to` from a fresh socket; the response's `r` dict
/// handed to `check`.
fn krpc(to: SocketAddr, query: &[u8], check: impl FnOnce(&lodestone_bencode::Dict<'_>)) {
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(query, to).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{to} did not answer: {e}"));
    let v = Decoder::new(&buf[..n], DecodeOptions::lenient())
        .decode_all()
        .expect("a bencoded answer");
    let d = v.as_dict().expect("a dictionary");
    let r = d
        .get(b"r")
        .and_then(|r| r.as_dict())
        .unwrap_or_else(|| panic!("not a response: {:?}", String::from_utf8_lossy(&buf[..n])));
    check(r);
}

fn query(method: &str, args: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    e.begin_dict().bytes(b"a").begin_dict();
    e.bytes(b"id").bytes(&[0x66; 20]);
    for (k, v) in args {
        e.bytes(k).bytes(v);
    }
    e.end();
    e.bytes(b"q").bytes(method.as_bytes());
    e.bytes(b"t").bytes(b"aa").bytes(b"y").bytes(b"q").end();
    out
}

#[test]
fn a_seeder_on_ipv6_is_found_through_the_ipv6_dht() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = fixture(dir.path(), &[]);
    // Six nodes, each with an IPv4 node on 127.0.0.1 and an IPv6 one on
    // [::1] (BEP 32: two DHTs); they join through the first's IPv6 node.
    let base4 = port_block(6);
    let base6 = port6();
    let v6: Vec<u16> = std::iter::once(base6)
        .chain((1..6).map(|_| port6()))
        .collect();
    let router = format!("[::1]:{base6}");
    let _nodes: Vec<Child> = v6
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == 1 {
                std::thread::sleep(Duration::from_millis(300));
            }
            Child::spawn(
                bin()
                    .args(["dht", "node", "--status-every", "60", "--duration", "120"])
                    .args(["--listen", &format!("127.0.0.1:{}", base4 + i as u16)])
                    .args(["--listen6", &format!("[::1]:{p}")])
                    .args(["--bootstrap", &router]),
            )
        })
        .collect();
    let s_port = port6();
    let _s = seeder6(&torrent, &src, s_port, &["--bootstrap", &router]);
    // The leecher knows one IPv6 DHT node (not the router) and the torrent.
    // It does not listen, so it announces nothing and the seeder cannot
    // find and dial it first: the one way to the seeder is its lookup.
    // (Its first node binds 0.0.0.0; the IPv6 router brings up the IPv6
    // one.)
    leech_and_check(
        &["--bootstrap", &format!("[::1]:{}", v6[3])],
        dir.path(),
        &torrent,
        &src,
        s_port,
        "dht",
    );

    // The bytes: every IPv6 node stores the seeder as an 18-byte value ...
    let ih = lodestone_core::encoding::from_hex::<20>(&ih).unwrap();
    let node = SocketAddr::from((Ipv6Addr::LOCALHOST, base6));
    krpc(node, &query("get_peers", &[(b"info_hash", &ih)]), |r| {
        let values: Vec<&[u8]> = r
            .get(b"values")
            .and_then(|v| v.as_list())
            .unwrap_or_else(|| panic!("no values in the get_peers answer"))
            .iter()
            .map(|v| v.as_bytes().expect("a compact peer"))
            .collect();
        assert!(
            values.iter().all(|v| v.len() == 18),
            "values not 18 bytes each: {values:?}"
        );
        assert!(
            values.contains(&compact6(s_port).as_slice()),
            "the seeder [::1]:{s_port} is not among the values {values:?}"
        );
    });
    // ... and gives IPv6 nodes as `nodes6`, 38 bytes each (id, address,
    // port), never as 26-byte IPv4 `nodes`.
    krpc(
        node,
        &query("find_node", &[(b"target", &[0x77; 20])]),
        |r| {
            let n6 = r
                .get(b"nodes6")
                .and_then(|v| v.as_bytes())
                .expect("nodes6 in a find_node answer over IPv6");
            assert!(
                !n6.is_empty() && n6.len() % 38 == 0,
                "nodes6 of {} bytes",
                n6.len()
            );
            let ports: Vec<u16> = n6
                .chunks(38)
                .map(|c| {
                    assert_eq!(c[20..36], Ipv6Addr::LOCALHOST.octets(), "{c:?}");
                    u16::from_be_bytes([c[36], c[37]])
                })
                .collect();
            assert!(
                ports.iter().any(|p| v6.contains(p)),
                "nodes6 names none of the IPv6 nodes: {ports:?}"
            );
            assert!(
                r.get(b"nodes")
                    .and_then(|v| v.as_bytes())
                    .is_none_or(|b| b.is_empty()),
                "IPv4 nodes in an IPv6 answer"
            );
        },
    );
}

// ---- (b) PEX added6 ----

/// A raw BitTorrent peer on `to` that speaks ut_pex (as id 1): the
/// payload of the first ut_pex message it gets within `timeout`.
fn first_pex_message(to: SocketAddr, ih: &[u8; 20], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(to).unwrap();
    let deadline = Instant::now() + timeout;
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
    hs.extend_from_slice(ih);
    hs.extend_from_slice(b"-XX0000-ipv6pexprobe");
    s.write_all(&hs).unwrap();
    let ext = b"d1:md6:ut_pexi1eee";
    let mut m = ((2 + ext.len()) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&[20, 0]);
    m.extend_from_slice(ext);
    s.write_all(&m).unwrap();
    let mut read_exact = |buf: &mut [u8]| {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no ut_pex message from {to} within {timeout:?}"
        );
        s.set_read_timeout(Some(left)).unwrap();
        s.read_exact(buf)
            .unwrap_or_else(|e| panic!("reading from {to}: {e} (no ut_pex message yet)"));
    };
    let mut theirs = [0u8; 68];
    read_exact(&mut theirs);
    assert_eq!(&theirs[28..48], ih, "handshake for another torrent");
    for _ in 0..10_000 {
        let mut len = [0u8; 4];
        read_exact(&mut len);
        let len = u32::from_be_bytes(len) as usize;
        assert!(len <= 1 << 20, "a {len}-byte message");
        let mut body = vec![0u8; len];
        read_exact(&mut body);
        // Extended (20), our ut_pex id (1).
        if body.len() >= 2 && body[0] == 20 && body[1] == 1 {
            return body[2..].to_vec();
        }
    }
    panic!("10 000 messages and no ut_pex");
}

#[test]
fn a_seeder_on_ipv6_is_found_through_pex_added6() {
    let dir = tempfile::tempdir().unwrap();
    let (src, torrent, ih) = fixture(dir.path(), &[]);
    // S never dials and speaks no PEX; B (slow, still a leecher) knows S;
    // C knows only B.
    let s_port = port6();
    let _s = seeder6(&torrent, &src, s_port, &[]);
    let b_port = port6();
    let mut b = Child::spawn(
        bin()
            .args([
                "get",
                "--json",
                "--download-limit",
                "64K",
                "--seed-time",
                "60",
            ])
            .args(["--listen", &format!("[::1]:{b_port}")])
            .args(["--peer", &format!("[::1]:{s_port}")])
            .arg("-o")
            .arg(dir.path().join("b"))
            .arg(&torrent),
    );
    b.wait_for_line(
        &format!("\"addr\":\"[::1]:{s_port}\""),
        Duration::from_secs(30),
    );

    // The bytes B sends: S as one 18-byte `added6` entry, no IPv4 `added`.
    let ih_bytes = lodestone_core::encoding::from_hex::<20>(&ih).unwrap();
    let pex = first_pex_message(
        SocketAddr::from((Ipv6Addr::LOCALHOST, b_port)),
        &ih_bytes,
        Duration::from_secs(20),
    );
    let v = Decoder::new(&pex, DecodeOptions::lenient())
        .decode_all()
        .expect("bencoded ut_pex");
    let d = v.as_dict().expect("a dictionary");
    let added6 = d.get(b"added6").and_then(|v| v.as_bytes()).unwrap_or(&[]);
    assert_eq!(
        added6,
        compact6(s_port).as_slice(),
        "added6: {:?}",
        String::from_utf8_lossy(&pex)
    );
    let flags = d.get(b"added6.f").and_then(|v| v.as_bytes()).unwrap_or(&[]);
    assert_eq!(flags.len(), 1, "one flag byte per added6 peer");
    assert!(flags[0] & 0x02 != 0, "S is flagged a seed: {flags:?}");
    assert!(
        d.get(b"added")
            .and_then(|v| v.as_bytes())
            .is_none_or(|a| a.is_empty()),
        "IPv4 peers in added: {:?}",
        String::from_utf8_lossy(&pex)
    );

    // And a Lodestone leecher that knows only B reaches S through it.
    let c_port = port6();
    leech_and_check(
        &[
            "--listen",
            &format!("[::1]:{c_port}"),
            "--peer",
            &format!("[::1]:{b_port}"),
        ],
        dir.path(),
        &torrent,
        &src,
        s_port,
        "pex",
    );
}

// ---- (c) an HTTP tracker's peers6 ----

/// A stand-in HTTP tracker on [::1]: every announce gets `peers6` = the
/// seeder (and an empty IPv4 `peers`). Returns the requests it saw once
/// `stop` is set (or after 120 s).
fn tracker6(
    listener: TcpListener,
    seeder: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = Vec::new();
        while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((mut c, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 2048];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let mut body = Vec::new();
            Encoder::new(&mut body)
                .begin_dict()
                .bytes(b"interval")
                .int(60)
                .bytes(b"peers")
                .bytes(b"")
                .bytes(b"peers6")
                .bytes(&compact6(seeder))
                .end();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body);
            seen.push(line);
        }
        seen
    })
}

#[test]
fn a_seeder_on_ipv6_is_found_through_a_trackers_peers6() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let url = format!(
        "http://[::1]:{}/announce",
        listener.local_addr().unwrap().port()
    );
    let (src, torrent, ih) = fixture(dir.path(), &["--tracker", &url]);
    let s_port = port6();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tracker = tracker6(listener, s_port, stop.clone());
    // The seeder does not announce: the leecher's announce is the one.
    let _s = seeder6(&torrent, &src, s_port, &["--no-trackers"]);
    leech_and_check(&[], dir.path(), &torrent, &src, s_port, "tracker");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = tracker.join().unwrap();
    let ih = lodestone_core::encoding::from_hex::<20>(&ih)
        .unwrap()
        .to_vec();
    assert!(
        seen.iter().any(|l| l.starts_with("GET /announce?")
            && l.contains("&compact=1")
            && query_param(l, "info_hash").as_deref() == Some(ih.as_slice())),
        "no compact announce for this torrent reached the tracker: {seen:?}"
    );
}

/// A percent-decoded query parameter of a request line.
fn query_param(line: &str, name: &str) -> Option<Vec<u8>> {
    let query = line.split(' ').nth(1)?.split_once('?')?.1;
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
        .as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}
