//! A minimal HTTP/1.1 client for trackers and `.torrent` sources: GET
//! only, over plain HTTP or HTTPS (rustls, Mozilla's roots plus any the
//! user adds), bounded in time and size.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(20);

/// Does HTTP and HTTPS GETs; cheap to clone (the TLS setup is shared).
#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl Default for HttpClient {
    /// Trusts Mozilla's root certificates.
    fn default() -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(roots)
    }
}

impl HttpClient {
    fn with_roots(roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The ring provider supports the safe default versions, so this
        // cannot fail; fall back to TLS 1.3 alone if it ever did.
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .or_else(|_| {
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13])
            });
        let tls = match builder {
            Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        Self { tls: Arc::new(tls) }
    }

    /// Mozilla's roots plus the certificates in the PEM file `path` (a
    /// private tracker's own CA). Errors are sentences for the user.
    pub fn with_ca_file(path: &std::path::Path) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", path.display()));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(Self::with_roots(roots))
    }

    /// GET `url` (http:// or https://) and return the body of a 200
    /// answer, at most `max` bytes. Errors are sentences for the user.
    pub async fn get(&self, url: &str, max: usize) -> Result<Vec<u8>, String> {
        let lower = url.to_ascii_lowercase();
        let tls = if lower.starts_with("https://") {
            true
        } else if lower.starts_with("http://") {
            false
        } else {
            return Err("not an http:// or https:// URL".into());
        };
        let (host, port, path) = split_url(url, if tls { 443 } else { 80 })?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| "connection timed out".to_owned())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Lodestone/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
            host_header(&host, port, if tls { 443 } else { 80 }),
            env!("CARGO_PKG_VERSION")
        );
        let raw = if tls {
            let name = ServerName::try_from(host.clone())
                .map_err(|_| format!("{host} is not a valid TLS server name"))?;
            let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_owned())?
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(stream, &request, max).await?
        } else {
            exchange(tcp, &request, max).await?
        };
        let body = http_body(&raw)?;
        if body.len() > max {
            return Err(format!("answer larger than {max} bytes"));
        }
        Ok(body)
    }
}

/// `host:port`, or just `host` on the scheme's default port; IPv6
/// literals in brackets.
fn host_header(host: &str, port: u16, default: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if port == default {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// Send the request and read the whole answer (the server closes), at
/// most a little over `max` bytes, within the time limit.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
    max: usize,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(TIMEOUT, async {
        s.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let n = match s.read(&mut chunk).await {
                Ok(n) => n,
                // Servers that close without TLS close_notify: the answer
                // is complete when it parses (http_body checks it).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => 0,
                Err(e) => return Err(e),
            };
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
    .map_err(|e| format!("read failed: {e}"))
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
