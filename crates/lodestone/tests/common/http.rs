//! A tiny HTTP/1.1 client over std::net::TcpStream for the daemon's
//! tests, and a Transmission RPC client on top of it that keeps the
//! session id as Sonarr does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One HTTP/1.1 exchange with `Connection: close`, bounded in time.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the RPC");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head += &format!("Host: 127.0.0.1:{port}\r\n");
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += &format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The body from a thread: a server may answer (413) before reading it.
    let mut w = s.try_clone().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        for chunk in body.chunks(1 << 16) {
            if w.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the whole answer (the server closed with the
            // body unread): keep what came.
            Err(e) if !raw.is_empty() && e.kind() != std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading the answer to {method} {path}: {e}"),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    }) {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

pub const RPC: &str = "/transmission/rpc";

/// A client of the RPC that keeps the session id and, as Sonarr does,
/// handles a 409 by taking the new id and retrying once.
pub struct Rpc {
    pub port: u16,
    pub sid: String,
}

impl Rpc {
    /// Sonarr's handshake: GET with a pre-emptive `Authorization: Basic Og==`
    /// (empty user and password), answered 409 with the id.
    pub fn handshake(port: u16) -> Self {
        let r = http(
            port,
            "GET",
            RPC,
            &[
                ("Accept", "application/json"),
                ("Authorization", "Basic Og=="),
            ],
            b"",
        );
        assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
        let sid = r
            .header("X-Transmission-Session-Id")
            .expect("409 carries X-Transmission-Session-Id")
            .to_owned();
        assert_eq!(sid.len(), 48, "{sid}");
        Self { port, sid }
    }

    pub fn raw(&self, body: &[u8]) -> Response {
        http(
            self.port,
            "POST",
            RPC,
            &[
                ("X-Transmission-Session-Id", &self.sid),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    pub fn call(&mut self, req: Value) -> Value {
        let body = serde_json::to_vec(&req).unwrap();
        let mut r = self.raw(&body);
        if r.status == 409 {
            self.sid = r.header("X-Transmission-Session-Id").unwrap().to_owned();
            r = self.raw(&body);
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// A call that must succeed; its arguments.
    pub fn ok(&mut self, method: &str, args: Value) -> Value {
        let v = self.call(json!({"method": method, "arguments": args}));
        assert_eq!(v["result"], "success", "{method} {args}: {v}");
        v["arguments"].clone()
    }

    pub fn torrents(&mut self, args: Value) -> Vec<Value> {
        self.ok("torrent-get", args)["torrents"]
            .as_array()
            .expect("torrents")
            .clone()
    }
}
