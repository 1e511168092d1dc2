//! The HTTP(S) client for trackers, `.torrent` sources and `lodestone
//! remote`, over plain HTTP or HTTPS (reqwest with rustls: Mozilla's roots plus any the
//! user adds), bounded in time, size and redirects.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// For the whole exchange: connecting, redirects, and reading the body.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// Does HTTP and HTTPS requests; cheap to clone (clones share one client).
#[derive(Clone)]
pub struct HttpClient {
    /// reqwest refuses a TLS config only when built against another rustls
    /// than ours (a build problem): every GET then says so.
    client: Result<reqwest::Client, Arc<str>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl Default for HttpClient {
    /// Trusts Mozilla's root certificates. The TLS setup (its root store)
    /// is built once per process and shared.
    fn default() -> Self {
        static MOZILLA: OnceLock<rustls::ClientConfig> = OnceLock::new();
        let tls = MOZILLA.get_or_init(|| tls_config(mozilla_roots()));
        Self::new(tls.clone(), CONNECT_TIMEOUT, TIMEOUT)
    }
}

fn mozilla_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// rustls with the ring provider, the safe default versions, `roots`.
fn tls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The ring provider supports the safe default versions, so this
    // cannot fail; fall back to TLS 1.3 alone if it ever did.
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .or_else(|_| {
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
        });
    match builder {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}

impl HttpClient {
    fn new(tls: rustls::ClientConfig, connect_timeout: Duration, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            // A tracker's URL carries the torrent and often a passkey:
            // it is not told to where it redirects.
            .referer(false)
            // Not through the user's HTTP_PROXY and the like, as before.
            .no_proxy()
            // One request per connection, as trackers are asked minutes
            // apart: no idle sockets kept per torrent.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("Lodestone/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}").into());
        Self { client }
    }

    /// Mozilla's roots plus the certificates in the PEM file `path` (a
    /// private tracker's own CA). Errors are sentences for the user.
    pub fn with_ca_file(path: &std::path::Path) -> Result<Self, String> {
        let mut roots = mozilla_roots();
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
        Ok(Self::new(tls_config(roots), CONNECT_TIMEOUT, TIMEOUT))
    }

    /// GET `url` (http:// or https://) and return the body of a 200
    /// answer, at most `max` bytes: a longer one is an error, found before
    /// more than `max` bytes are kept. Errors are sentences for the user.
    pub async fn get(&self, url: &str, max: usize) -> Result<Vec<u8>, String> {
        let (status, body) = self.send("GET", url, &[], Vec::new(), max).await?;
        if status != 200 {
            let reason = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            return Err(format!("HTTP {status} {reason}").trim_end().to_owned());
        }
        Ok(body)
    }

    /// Any request (for `lodestone remote`, which talks to a daemon): the
    /// status and the body, at most `max` bytes of it.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        max: usize,
    ) -> Result<(u16, Vec<u8>), String> {
        let lower = url.to_ascii_lowercase();
        if !lower.starts_with("https://") && !lower.starts_with("http://") {
            return Err("not an http:// or https:// URL".into());
        }
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| format!("{method}: {e}"))?;
        let client = self.client.as_ref().map_err(|e| e.to_string())?;
        let mut request = client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        let mut answer = request.send().await.map_err(describe)?;
        let status = answer.status().as_u16();
        let too_large = || format!("answer larger than {max} bytes");
        let announced = answer.content_length();
        if announced.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(announced.map_or(0, |n| n as usize));
        while let Some(chunk) = answer.chunk().await.map_err(describe)? {
            if chunk.len() > max - body.len() {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

/// A reqwest error as a sentence: what failed, then the causes (its own
/// text names the URL, which may hold a passkey, and says little more).
fn describe(e: reqwest::Error) -> String {
    let what = if e.is_timeout() && e.is_connect() {
        return "connection timed out".into();
    } else if e.is_timeout() {
        return "no answer in time".into();
    } else if e.is_redirect() {
        return format!("more than {MAX_REDIRECTS} redirects");
    } else if e.is_builder() {
        "bad URL"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "read failed"
    } else {
        "request failed"
    };
    // The deepest cause says the most ("invalid peer certificate:
    // UnknownIssuer", "Connection refused"); hyper's own layers say little.
    let mut deepest = None;
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        deepest = Some(s);
        source = s.source();
    }
    match deepest {
        Some(c) => format!("{what}: {c}"),
        None => what.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server on 127.0.0.1 that reads each request's head and calls
    /// `answer` with it (and the connection) for up to `n` connections.
    /// Returns its `http://127.0.0.1:port`.
    async fn serve<F, Fut>(n: usize, answer: F) -> String
    where
        F: Fn(String, tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            for _ in 0..n {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let head = read_head(&mut s).await;
                answer(head, s).await;
            }
        });
        base
    }

    async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&b[..n]),
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    async fn reply<S: AsyncWrite + Unpin>(mut s: S, text: &[u8]) {
        let _ = s.write_all(text).await;
        let _ = s.shutdown().await;
    }

    fn quick(connect: Duration, total: Duration) -> HttpClient {
        HttpClient::new(tls_config(mozilla_roots()), connect, total)
    }

    #[tokio::test]
    async fn bodies_plain_and_chunked_and_their_request() {
        let base = serve(2, |head, s| async move {
            let first = head.lines().next().unwrap_or_default().to_owned();
            assert!(head.contains("user-agent: Lodestone/"), "{head}");
            if first.starts_with("GET /plain?a=%01%ff&b=c HTTP/1.1") {
                reply(s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nde").await;
            } else {
                reply(
                    s,
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nd\r\n1\r\ne\r\n0\r\n\r\n",
                )
                .await;
            }
        })
        .await;
        let c = HttpClient::default();
        assert_eq!(
            c.get(&format!("{base}/plain?a=%01%ff&b=c"), 2)
                .await
                .unwrap(),
            b"de"
        );
        assert_eq!(c.get(&format!("{base}/chunked"), 2).await.unwrap(), b"de");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_200_is_an_error() {
        let base = serve(2, |head, s| async move {
            if head.starts_with("GET /gone") {
                reply(s, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
            } else {
                reply(s, b"garbage\r\n\r\n").await;
            }
        })
        .await;
        let c = HttpClient::default();
        assert_eq!(
            c.get(&format!("{base}/gone"), 100).await.unwrap_err(),
            "HTTP 404 Not Found"
        );
        let e = c.get(&format!("{base}/junk"), 100).await.unwrap_err();
        assert!(e.starts_with("request failed: "), "{e}");
        let e = c.get("ftp://127.0.0.1/x", 100).await.unwrap_err();
        assert_eq!(e, "not an http:// or https:// URL");
    }

    #[tokio::test]
    async fn bodies_are_capped_while_they_stream() {
        let base = serve(4, |head, mut s| async move {
            if head.starts_with("GET /declared") {
                // Says how long it is: refused before any of it is read.
                reply(s, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n").await;
            } else if head.starts_with("GET /exact") {
                reply(
                    s,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
                )
                .await;
            } else {
                // Chunked or until close, and endless: the client must stop.
                let chunked = head.starts_with("GET /chunked");
                let h: &[u8] = if chunked {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
                };
                if s.write_all(h).await.is_err() {
                    return;
                }
                let block = vec![b'x'; 4096];
                let mut sent = 0usize;
                // Bounded all the same (64 MiB), should the cap not stop it.
                while sent < 64 << 20 {
                    let ok = if chunked {
                        s.write_all(b"1000\r\n").await.is_ok()
                            && s.write_all(&block).await.is_ok()
                            && s.write_all(b"\r\n").await.is_ok()
                    } else {
                        s.write_all(&block).await.is_ok()
                    };
                    if !ok {
                        return; // the client hung up: good
                    }
                    sent += block.len();
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            }
        })
        .await;
        let c = HttpClient::default();
        let max = 10_000;
        for path in ["declared", "chunked", "close"] {
            let e = c.get(&format!("{base}/{path}"), max).await.unwrap_err();
            assert_eq!(e, "answer larger than 10000 bytes", "{path}");
        }
        assert_eq!(
            c.get(&format!("{base}/exact"), 10).await.unwrap(),
            b"0123456789"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let base = serve(2, |head, mut s| async move {
            if head.starts_with("GET /stall") {
                // The head and part of the body, then nothing.
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        })
        .await;
        let c = quick(Duration::from_secs(5), Duration::from_millis(300));
        for path in ["silent", "stall"] {
            let start = std::time::Instant::now();
            let e = c.get(&format!("{base}/{path}"), 100).await.unwrap_err();
            assert_eq!(e, "no answer in time", "{path}");
            assert!(start.elapsed() < Duration::from_secs(5), "{path}");
        }
        // The defaults are the ones meant.
        assert_eq!(
            (CONNECT_TIMEOUT, TIMEOUT),
            (Duration::from_secs(10), Duration::from_secs(20))
        );
    }

    #[tokio::test]
    async fn redirects_are_followed_a_few_times_only() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let b = base.clone();
        tokio::spawn(async move {
            // Bounded: one connection per request (9 for the two gets).
            for _ in 0..20 {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let head = read_head(&mut s).await;
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                let text = match path.strip_prefix("/hop/") {
                    Some("0") => "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhere".to_owned(),
                    Some(n) => {
                        let n: usize = n.parse().unwrap_or(0);
                        assert!(!head.to_ascii_lowercase().contains("referer"), "{head}");
                        format!(
                            "HTTP/1.1 302 Found\r\nLocation: {b}/hop/{}\r\nContent-Length: 0\r\n\r\n",
                            n - 1
                        )
                    }
                    None => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_owned(),
                };
                reply(s, text.as_bytes()).await;
            }
        });
        let c = HttpClient::default();
        assert_eq!(c.get(&format!("{base}/hop/2"), 10).await.unwrap(), b"here");
        let far = MAX_REDIRECTS + 1;
        let e = c.get(&format!("{base}/hop/{far}"), 10).await.unwrap_err();
        assert_eq!(e, format!("more than {MAX_REDIRECTS} redirects"));
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        // A port nothing listens on: bound, then closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = HttpClient::default()
            .get(&format!("http://127.0.0.1:{port}/announce"), 10)
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot connect: "), "{e}");
        assert!(e.to_lowercase().contains("refused"), "{e}");
    }

    fn testdata(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/http")
            .join(name)
    }

    /// An HTTPS server on 127.0.0.1 with a certificate (for 127.0.0.1 and
    /// localhost) from the test CA in testdata/http.
    async fn serve_tls(n: usize) -> u16 {
        use tokio_rustls::rustls;
        let certs = CertificateDer::pem_file_iter(testdata("leaf.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(testdata("leaf.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for _ in 0..n {
                let Ok((s, _)) = l.accept().await else {
                    return;
                };
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue; // the untrusting client hung up
                };
                let head = read_head(&mut s).await;
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret";
                if head.starts_with("GET /abrupt") {
                    // Closes the TCP connection without TLS close_notify,
                    // as some servers do: the answer is whole all the same.
                    let _ = s.write_all(answer).await;
                    let _ = s.flush().await;
                    drop(s.into_inner().0);
                } else {
                    reply(s, answer).await;
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn https_with_the_users_ca_and_not_without() {
        let port = serve_tls(3).await;
        let trusting = HttpClient::with_ca_file(&testdata("ca.pem")).unwrap();
        for (host, path) in [("127.0.0.1", "announce"), ("localhost", "abrupt")] {
            let url = format!("https://{host}:{port}/{path}");
            assert_eq!(trusting.get(&url, 100).await.unwrap(), b"secret", "{url}");
        }
        let e = HttpClient::default()
            .get(&format!("https://127.0.0.1:{port}/announce"), 100)
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot connect: "), "{e}");
        assert!(e.contains("UnknownIssuer"), "{e}");
    }

    #[test]
    fn ca_file_errors_are_sentences() {
        let missing = testdata("missing.pem");
        let e = HttpClient::with_ca_file(&missing).unwrap_err();
        assert!(e.starts_with(&format!("{}: ", missing.display())), "{e}");
        let key = testdata("leaf.key"); // PEM, but no certificate in it
        assert_eq!(
            HttpClient::with_ca_file(&key).unwrap_err(),
            format!("{}: no certificate in it", key.display())
        );
    }
}
