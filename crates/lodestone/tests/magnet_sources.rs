//! A magnet's `xs`/`as` URLs (a .torrent cache, as torcache was): the file
//! is fetched over HTTP, size-capped, and accepted only if its info hash
//! matches; a wrong one is reported and the peers are used instead.
mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{assert_same_tree, bin, create_torrent, free_port, Child};
use lodestone::payload;

/// Serve `body` to every GET, for as long as the test runs.
fn serve(body: Vec<u8>) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(20) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    port
}

#[test]
fn the_torrent_file_url_wins_and_a_wrong_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    payload::write_file(&src.join("x.bin"), "x.bin", 2 << 20, "xs").unwrap();
    let torrent = dir.path().join("x.torrent");
    let ih = create_torrent(&src.join("x.bin"), &torrent, &[]);
    let other = dir.path().join("other.torrent");
    payload::write_file(&src.join("y.bin"), "y.bin", 1000, "xs").unwrap();
    create_torrent(&src.join("y.bin"), &other, &[]);

    let good = serve(std::fs::read(&torrent).unwrap());
    let wrong = serve(std::fs::read(&other).unwrap());
    // The seeder comes up after a moment: the .torrent must come from the URL.
    let (seeder, seeder_port) = delayed_seeder(&torrent, &src);
    let magnet = format!(
        "magnet:?xt=urn:btih:{ih}&as=http://127.0.0.1:{wrong}/other.torrent&xs=http://127.0.0.1:{good}/x.torrent"
    );
    let out = dir.path().join("dl");
    let o = Child::spawn(
        bin()
            .args([
                "get",
                "--json",
                &magnet,
                "--peer",
                &format!("127.0.0.1:{seeder_port}"),
                "-o",
            ])
            .arg(&out),
    )
    .finish(Duration::from_secs(60));
    let _seeder = seeder.join().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("\"event\":\"torrent_file\""), "{text}");
    // Exit 0 is our own word: the bytes must be the seeder's.
    assert_same_tree(&src.join("x.bin"), &out.join("x.bin"));

    // Only the wrong URL: refused (its answer comes before the peer is up),
    // and the metadata comes from the peer.
    let (seeder, peer_port) = delayed_seeder(&torrent, &src);
    let peer = format!("127.0.0.1:{peer_port}");
    let magnet = format!("magnet:?xt=urn:btih:{ih}&xs=http://127.0.0.1:{wrong}/other.torrent");
    let out2 = dir.path().join("dl2");
    let o = Child::spawn(
        bin()
            .args(["get", "--json", &magnet, "--peer", &peer, "-o"])
            .arg(&out2),
    )
    .finish(Duration::from_secs(60));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("a torrent for another info hash"), "{text}");
    assert!(text.contains("\"event\":\"metadata\""), "{text}");
    // The other torrent's file was not used: the content is x.bin's.
    assert_same_tree(&src.join("x.bin"), &out2.join("x.bin"));
    assert!(!out2.join("y.bin").exists(), "the refused torrent was used");
    drop(seeder.join().unwrap());
}

/// A seeder that starts listening two seconds from now.
fn delayed_seeder(
    torrent: &std::path::Path,
    src: &std::path::Path,
) -> (std::thread::JoinHandle<Child>, u16) {
    let port = free_port();
    let (t, s) = (torrent.to_owned(), src.to_owned());
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        Child::spawn(
            bin()
                .args([
                    "seed",
                    "--seed-time",
                    "30",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .arg(&t)
                .arg(&s),
        )
    });
    (h, port)
}
