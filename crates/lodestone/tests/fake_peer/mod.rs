//! A scripted BitTorrent peer for the magnet tests, written from BEP 3, 9
//! and 10 by hand (not with our wire crate, so a bug there cannot hide
//! itself): it answers the handshake with or without the extension bit and
//! serves, withholds or spoils the metadata as told. Also a wait for a
//! `diagnosis` event, and a torrent fixture whose metadata takes several
//! 16 KiB pieces.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The id we ask the other side to use for ut_metadata messages to us.
const OUR_UT_METADATA: u8 = 3;
/// No connection of a fake peer lives longer than this.
const LIFETIME: Duration = Duration::from_secs(120);
const METADATA_PIECE: usize = 16 * 1024;

/// What the fake peer says about the metadata.
#[derive(Clone)]
pub enum Metadata {
    /// No ut_metadata in its extension handshake (it sends ut_pex only).
    Unsupported,
    /// ut_metadata, but no `metadata_size`.
    NoSize,
    /// ut_metadata with this size; every request is left unanswered.
    Claim(u64),
    /// Serves this info dictionary: every piece, or all but the last
    /// (`withhold_last`), with its bytes spoiled (`corrupt`).
    Serve {
        info: Vec<u8>,
        withhold_last: bool,
        corrupt: bool,
    },
}

pub struct FakePeer {
    pub addr: SocketAddr,
    /// ut_metadata requests received (all connections).
    pub requests: Arc<AtomicUsize>,
    /// Metadata pieces sent.
    pub served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl FakePeer {
    /// Listen on 127.0.0.1 for up to 8 connections for `info_hash`;
    /// `extension_bit` is the BEP 10 bit of our handshake's reserved bytes.
    pub fn spawn(info_hash: [u8; 20], extension_bit: bool, metadata: Metadata) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the fake peer");
        l.set_nonblocking(true).expect("nonblocking listener");
        let addr = l.local_addr().expect("fake peer address");
        let stop = Arc::new(AtomicBool::new(false));
        let (requests, served) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, r, d) = (stop.clone(), requests.clone(), served.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut accepted = 0;
            while accepted < 8 && Instant::now() < deadline && !s.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((stream, _)) => {
                        accepted += 1;
                        let (s, r, d, m) = (s.clone(), r.clone(), d.clone(), metadata.clone());
                        std::thread::spawn(move || {
                            let _ = serve(stream, info_hash, extension_bit, m, s, r, d, deadline);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            addr,
            requests,
            served,
            stop,
        }
    }

    /// Wait (bounded) until at least `n` metadata pieces went out.
    pub fn wait_served(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.served.load(Ordering::Acquire) < n {
            assert!(
                Instant::now() < deadline,
                "the fake peer served {} metadata pieces in {timeout:?}, expected {n}",
                self.served.load(Ordering::Acquire)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn message(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    m.push(id);
    m.extend_from_slice(payload);
    m
}

/// The number after `key` in a bencoded dictionary (`key` includes its
/// length prefix and the `i`, as in `5:piecei`).
fn int_after(b: &[u8], key: &[u8]) -> Option<u64> {
    let at = b.windows(key.len()).position(|w| w == key)? + key.len();
    let end = at + b[at..].iter().position(|&c| c == b'e')?;
    std::str::from_utf8(&b[at..end]).ok()?.parse().ok()
}

#[allow(clippy::too_many_arguments)]
fn serve(
    mut s: TcpStream,
    info_hash: [u8; 20],
    extension_bit: bool,
    metadata: Metadata,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    deadline: Instant,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut handshaken = false;
    // The id the other side wants for ut_metadata messages to it.
    let mut their_ut_metadata: Option<u8> = None;
    while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
        match s.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
        if !handshaken {
            if buf.len() < 68 {
                continue;
            }
            buf.drain(..68);
            handshaken = true;
            let mut h = vec![19u8];
            h.extend_from_slice(b"BitTorrent protocol");
            h.extend_from_slice(&[0, 0, 0, 0, 0, if extension_bit { 0x10 } else { 0 }, 0, 0]);
            h.extend_from_slice(&info_hash);
            // Each fake peer its own id (from its port): two peers with one
            // id are one peer connected twice, and one of them is dropped.
            let port = s.local_addr()?.port();
            h.extend_from_slice(b"-FK0001-fakepeer");
            h.extend_from_slice(&port.to_be_bytes());
            h.extend_from_slice(b"01");
            s.write_all(&h)?;
            if extension_bit {
                let dict = match &metadata {
                    Metadata::Unsupported => "d1:md6:ut_pexi2eee".to_owned(),
                    Metadata::NoSize => format!("d1:md11:ut_metadatai{OUR_UT_METADATA}eee"),
                    Metadata::Claim(n) => {
                        format!("d1:md11:ut_metadatai{OUR_UT_METADATA}ee13:metadata_sizei{n}ee")
                    }
                    Metadata::Serve { info, .. } => format!(
                        "d1:md11:ut_metadatai{OUR_UT_METADATA}ee13:metadata_sizei{}ee",
                        info.len()
                    ),
                };
                let mut p = vec![0u8];
                p.extend_from_slice(dict.as_bytes());
                s.write_all(&message(20, &p))?;
            }
        }
        // Whole messages: <u32 length><id><payload>.
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let m: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
            if m.len() < 2 || m[0] != 20 {
                continue;
            }
            if m[1] == 0 {
                their_ut_metadata = int_after(&m[2..], b"11:ut_metadatai").map(|v| v as u8);
                continue;
            }
            if m[1] != OUR_UT_METADATA {
                continue;
            }
            let body = &m[2..];
            if int_after(body, b"8:msg_typei") != Some(0) {
                continue;
            }
            let Some(piece) = int_after(body, b"5:piecei") else {
                continue;
            };
            requests.fetch_add(1, Ordering::AcqRel);
            let (
                Metadata::Serve {
                    info,
                    withhold_last,
                    corrupt,
                },
                Some(to),
            ) = (&metadata, their_ut_metadata)
            else {
                continue;
            };
            let pieces = info.len().div_ceil(METADATA_PIECE);
            let p = piece as usize;
            if p >= pieces || (*withhold_last && p + 1 == pieces) {
                continue;
            }
            let end = ((p + 1) * METADATA_PIECE).min(info.len());
            let mut data = info[p * METADATA_PIECE..end].to_vec();
            if *corrupt {
                for b in data.iter_mut().step_by(97) {
                    *b ^= 0x5a;
                }
            }
            let mut payload = vec![to];
            payload.extend_from_slice(
                format!("d8:msg_typei1e5:piecei{p}e10:total_sizei{}ee", info.len()).as_bytes(),
            );
            payload.extend_from_slice(&data);
            s.write_all(&message(20, &payload))?;
            served.fetch_add(1, Ordering::AcqRel);
        }
    }
    Ok(())
}

impl crate::common::Lines {
    /// The sentences of the first `diagnosis` event (they come every 5 s)
    /// that `pred` accepts, within `timeout`.
    pub fn diagnosis(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let sentences = |l: &str| -> Option<Vec<String>> {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            if v["event"] != "diagnosis" {
                return None;
            }
            v["diagnosis"]
                .as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let l = self.wait("matching diagnosis event", timeout, |l| {
            sentences(l).is_some_and(|d| pred(&d))
        });
        sentences(&l).expect("a diagnosis event")
    }
}

/// The raw info dictionary of a .torrent file (what ut_metadata serves),
/// found by its byte span: `4:info` up to the torrent's closing `e`, as
/// written by `lodestone create` (the info key is the last one).
pub fn info_bytes(torrent: &Path) -> Vec<u8> {
    let t = std::fs::read(torrent).expect("read torrent");
    let at = t
        .windows(6)
        .position(|w| w == b"4:info")
        .expect("an info key")
        + 6;
    let info = t[at..t.len() - 1].to_vec();
    use sha1::Digest;
    let ih = sha1::Sha1::digest(&info);
    let j: serde_json::Value = serde_json::from_slice(
        &crate::common::bin()
            .args(["info", "--json"])
            .arg(torrent)
            .output()
            .expect("lodestone info")
            .stdout,
    )
    .expect("info --json");
    assert_eq!(
        j["info_hash_v1"].as_str(),
        Some(hex(&ih).as_str()),
        "the info span is not the info dictionary (is `info` the last key?)"
    );
    info
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex info hash");
    }
    out
}

/// A directory of `files` small files whose torrent's info dictionary
/// takes more than one 16 KiB metadata piece; returns (content dir,
/// torrent, hex info hash).
pub fn many_files(dir: &Path, files: usize) -> (PathBuf, PathBuf, String) {
    let src = dir.join("src");
    let root = src.join("many");
    for i in 0..files {
        let name = format!("file-with-a-long-name-{i:04}.bin");
        lodestone::payload::write_file(&root.join(&name), &name, 700 + (i as u64 * 37) % 900, "mf")
            .expect("write a payload file");
    }
    let torrent = dir.join("many.torrent");
    let ih = crate::common::create_torrent(&root, &torrent, &["--piece-size", "16K"]);
    (src, torrent, ih)
}

/// A torrent whose metadata takes several pieces ([`many_files`], 600
/// files) and a fake peer with the extension bit that serves every
/// metadata piece but the last; returns (content dir, torrent, hex info
/// hash, metadata pieces, the peer).
pub fn withholding_last_piece(dir: &Path) -> (PathBuf, PathBuf, String, usize, FakePeer) {
    let (src, torrent, ih) = many_files(dir, 600);
    let info = info_bytes(&torrent);
    let pieces = info.len().div_ceil(METADATA_PIECE);
    assert!(pieces >= 2, "one metadata piece only");
    let peer = FakePeer::spawn(
        unhex(&ih),
        true,
        Metadata::Serve {
            info,
            withhold_last: true,
            corrupt: false,
        },
    );
    (src, torrent, ih, pieces, peer)
}
