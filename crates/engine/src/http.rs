//! A minimal HTTP/1.1 client for trackers and `.torrent` sources: GET
//! only, plain HTTP, bounded in time and size.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(20);

/// GET `url` (plain HTTP/1.1) and return the body of a 200 answer, at
/// most `max` bytes. Errors are sentences for the user.
pub async fn get(url: &str, max: usize) -> Result<Vec<u8>, String> {
    if !url.to_ascii_lowercase().starts_with("http://") {
        return Err("only http:// URLs are supported yet".into());
    }
    let (host, port, path) = split_url(url, 80)?;
    let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| "connection timed out".to_owned())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Lodestone/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let raw = tokio::time::timeout(TIMEOUT, async {
        s.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Headers plus the body may not exceed the cap by much.
            if buf.len() > max + 16384 {
                return Err(std::io::Error::other(format!(
                    "answer larger than {max} bytes"
                )));
            }
        }
        Ok(buf)
    })
    .await
    .map_err(|_| "no answer in time".to_owned())?
    .map_err(|e| format!("read failed: {e}"))?;
    let body = http_body(&raw)?;
    if body.len() > max {
        return Err(format!("answer larger than {max} bytes"));
    }
    Ok(body)
}

/// `scheme://host:port/path` → (host, port, path-and-query).
pub fn split_url(url: &str, default_port: u16) -> Result<(String, u16, String), String> {
    let rest = url.split_once("://").map(|x| x.1).ok_or("no scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_matches(|c| c == '[' || c == ']').to_owned(),
            p.parse().map_err(|_| format!("bad port in {url}"))?,
        ),
        _ => (authority.to_owned(), default_port),
    };
    if host.is_empty() {
        return Err(format!("no host in {url}"));
    }
    Ok((host, port, path.to_owned()))
}

/// The body of an HTTP/1.x response (plain or chunked); non-200 is an error.
fn http_body(raw: &[u8]) -> Result<Vec<u8>, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!(
            "HTTP {}",
            status.split_once(' ').map_or(status, |x| x.1)
        ));
    }
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let nl = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunked body")?;
        let size_text = String::from_utf8_lossy(&rest[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        rest = &rest[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://t.example:8080/a?b=c", 80).unwrap(),
            ("t.example".into(), 8080, "/a?b=c".into())
        );
        assert_eq!(
            split_url("udp://127.0.0.1:6969", 80).unwrap(),
            ("127.0.0.1".into(), 6969, "/".into())
        );
        assert_eq!(
            split_url("http://[::1]:7000/ann", 80).unwrap(),
            ("::1".into(), 7000, "/ann".into())
        );
        assert_eq!(
            split_url("http://t.example/ann", 80).unwrap(),
            ("t.example".into(), 80, "/ann".into())
        );
        assert!(split_url("http://:80/", 80).is_err());
    }

    #[test]
    fn http_bodies() {
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nde").unwrap(),
            b"de"
        );
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nd\r\n1\r\ne\r\n0\r\n\r\n").unwrap(),
            b"de"
        );
        assert_eq!(
            http_body(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err(),
            "HTTP 404 Not Found"
        );
        assert!(http_body(b"garbage").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
