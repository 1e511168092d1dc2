//! A seeder that says nothing after the handshakes until it hears from us
//! (some clients complete their side of the handshake only on the first
//! bitfield or keep-alive): a leecher with no pieces must still say
//! something at once, not wait for its 90 s keep-alive. The seeder is a raw
//! socket written from BEP 3 by hand, without the fast extension or the
//! extension protocol (reserved bytes all zero).
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bin, create_torrent, Child};
use lodestone::payload;

const PIECE: usize = 64 * 1024;
/// No connection of the seeder lives longer than this.
const LIFETIME: Duration = Duration::from_secs(60);

fn message(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    m.push(id);
    m.extend_from_slice(payload);
    m
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// Read exactly `n` bytes, or None once the connection ends or the
/// deadline passes.
fn read_exact(s: &mut TcpStream, n: usize, deadline: Instant) -> Option<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut at = 0;
    while at < n {
        if Instant::now() >= deadline {
            return None;
        }
        match s.read(&mut out[at..]) {
            Ok(0) => return None,
            Ok(k) => at += k,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some(out)
}

/// One message (`[]` for a keep-alive: id and payload otherwise).
fn read_message(s: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let len = be32(&read_exact(s, 4, deadline)?);
    if len > PIECE + 64 {
        return None;
    }
    read_exact(s, len, deadline)
}

/// Serve one connection: handshake (no reserved bits), then silence until
/// the leecher's first message, which goes to `first`; then our bitfield
/// (every piece), an unchoke, and a block for each request.
fn serve(mut s: TcpStream, info_hash: [u8; 20], content: &[u8], first: mpsc::Sender<Vec<u8>>) {
    let deadline = Instant::now() + LIFETIME;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let Some(hs) = read_exact(&mut s, 68, deadline) else {
        return;
    };
    assert_eq!(
        &hs[28..48],
        &info_hash,
        "the leecher's handshake names another torrent"
    );
    let mut ours = vec![19u8];
    ours.extend_from_slice(b"BitTorrent protocol");
    ours.extend_from_slice(&[0; 8]);
    ours.extend_from_slice(&info_hash);
    ours.extend_from_slice(b"-SI0001-silentpeer01");
    if s.write_all(&ours).is_err() {
        return;
    }
    let Some(m) = read_message(&mut s, deadline) else {
        return;
    };
    let _ = first.send(m);
    let pieces = content.len().div_ceil(PIECE);
    let mut bits = vec![0u8; pieces.div_ceil(8)];
    for i in 0..pieces {
        bits[i / 8] |= 0x80 >> (i % 8);
    }
    let mut hello = message(5, &bits);
    hello.extend(message(1, &[]));
    if s.write_all(&hello).is_err() {
        return;
    }
    while let Some(m) = read_message(&mut s, deadline) {
        // request: <index><begin><length>
        if m.len() != 13 || m[0] != 6 {
            continue;
        }
        let (index, begin, len) = (be32(&m[1..]), be32(&m[5..]), be32(&m[9..]));
        let start = index * PIECE + begin;
        let Some(block) = content.get(start..start + len) else {
            return;
        };
        let mut p = (index as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&(begin as u32).to_be_bytes());
        p.extend_from_slice(block);
        if s.write_all(&message(7, &p)).is_err() {
            return;
        }
    }
}

/// The silent seeder on 127.0.0.1 (one connection at a time, for up to
/// [`LIFETIME`]); returns its address and where the leecher's first
/// message of each connection is sent.
fn spawn_silent_seeder(
    info_hash: [u8; 20],
    content: Vec<u8>,
) -> (std::net::SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind the silent seeder");
    let addr = l.local_addr().expect("its address");
    l.set_nonblocking(true).expect("nonblocking listener");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + LIFETIME;
        while Instant::now() < deadline {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).expect("blocking stream");
                    serve(s, info_hash, &content, tx.clone());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, rx)
}

fn unhex(s: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex info hash");
    }
    out
}

#[test]
fn a_leecher_with_nothing_speaks_first_to_a_silent_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // 9.5 pieces: the last one short.
    let size = (9 * PIECE + PIECE / 2) as u64;
    payload::write_file(&src.join("quiet.bin"), "quiet.bin", size, "silent").unwrap();
    let torrent = dir.path().join("quiet.torrent");
    let ih = create_torrent(&src.join("quiet.bin"), &torrent, &["--piece-size", "64K"]);
    let content = std::fs::read(src.join("quiet.bin")).unwrap();
    let (addr, first) = spawn_silent_seeder(unhex(&ih), content.clone());

    let out = dir.path().join("dl");
    let get = Child::spawn(
        bin()
            .args(["get", "--json", "--no-dht", "--no-lpd", "--no-trackers"])
            .args(["--peer", &addr.to_string(), "-o"])
            .arg(&out)
            .arg(&torrent),
    );
    // Well under our 90 s keep-alive: only a message right after the
    // handshakes lets the seeder go on.
    let o = get.finish(Duration::from_secs(30));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a summary")).expect("summary JSON");
    assert_eq!(summary["complete"], true, "{summary}");
    assert!(
        std::fs::read(out.join("quiet.bin")).unwrap() == content,
        "the download differs from the seeder's bytes"
    );
    // What we said first: a bitfield (id 5) with no piece set, 10 bits.
    let m = first
        .recv_timeout(Duration::from_secs(1))
        .expect("the seeder saw a first message");
    assert_eq!(m, [5, 0, 0], "our first message after the handshakes");
}
