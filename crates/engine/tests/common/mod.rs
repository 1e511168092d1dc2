//! What the engine's integration tests share: content on disk, its
//! torrent, a free loopback address.
#![allow(dead_code)] // each test file uses a part

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use lodestone_core::Metainfo;
use lodestone_engine::create::{create_torrent, CreateOptions, Progress};

/// An address on 127.0.0.1 nobody listens on (yet).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Write `len` bytes, byte `i` being `byte(i)`, to `path` (its folders made).
pub fn write_data(path: &Path, len: u64, byte: impl Fn(u64) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<u8> = (0..len).map(byte).collect();
    std::fs::write(path, data).unwrap();
}

/// The torrent of the file or folder at `path`, with pieces of `piece` bytes.
pub fn torrent_of(path: &Path, piece: u64) -> Arc<Metainfo> {
    let opts = CreateOptions {
        piece_length: Some(piece),
        ..Default::default()
    };
    let bytes = create_torrent(path, &opts, &Progress::default()).unwrap();
    Arc::new(Metainfo::from_bytes(&bytes).unwrap())
}
