//! The HTTP client goes straight to the tracker, whatever proxy the
//! environment names (HTTP_PROXY and the like are the user's browser
//! settings, not ours; and tests must not send loopback traffic elsewhere).
//! Its own test binary: it sets process-wide environment variables, which
//! no other test may be reading at the same time.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lodestone_engine::http::HttpClient;

/// A server on 127.0.0.1 that answers up to `n` requests with `body`,
/// counting them. Returns its port.
fn serve(n: usize, body: &'static [u8], count: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(n) {
            let Ok(mut s) = s else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    port
}

#[tokio::test]
async fn proxy_variables_are_not_followed() {
    let (direct, proxied) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tracker = serve(2, b"direct", direct.clone());
    let proxy = serve(2, b"proxied", proxied.clone());
    let proxy_url = format!("http://127.0.0.1:{proxy}");
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(var, &proxy_url);
    }
    for var in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(var);
    }
    // Built after the variables are set: reqwest reads them when built.
    let client = HttpClient::default();
    let body = client
        .get(&format!("http://127.0.0.1:{tracker}/announce"), 100)
        .await
        .unwrap();
    assert_eq!(body, b"direct");
    assert_eq!(direct.load(Ordering::SeqCst), 1);
    assert_eq!(proxied.load(Ordering::SeqCst), 0);
}
