//! `lodestone demo`: a self-contained run on this machine.
//!
//! Today it exercises payload generation, torrent creation and inspection;
//! the local swarm (private DHT, seeders, a magnet leecher) joins it as the
//! engine and DHT land.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use lodestone_core::{Magnet, Metainfo};
use lodestone_engine::create::{create_torrent, CreateOptions, Progress};

use crate::cli::DemoArgs;
use crate::{human, payload};

pub fn run(a: &DemoArgs) -> anyhow::Result<ExitCode> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    let piece = 256 << 10;
    let total = 24 << 20;
    crate::outln!(
        "1. generating a {} multi-file payload in {}",
        human::bytes(total),
        dir.display()
    );
    payload::write_multi(&dir, "demo", total, piece, "0").context("writing the payload")?;

    crate::outln!("2. hashing it into a torrent");
    let t0 = Instant::now();
    let opts = CreateOptions {
        piece_length: Some(piece),
        created_by: Some(format!("Lodestone {}", env!("CARGO_PKG_VERSION"))),
        ..CreateOptions::default()
    };
    let bytes = create_torrent(&dir.join("demo"), &opts, &Progress::default())?;
    let secs = t0.elapsed().as_secs_f64();
    let torrent = dir.join("demo.torrent");
    lodestone_engine::fsutil::write_atomic(&torrent, &bytes)?;
    let m = Metainfo::from_bytes(&bytes)?;
    crate::outln!(
        "   {} hashed in {:.3} s ({:.0} MiB/s), written to {}",
        human::bytes(m.info.content_length()),
        secs,
        m.info.content_length() as f64 / (1 << 20) as f64 / secs.max(1e-9),
        torrent.display()
    );

    crate::outln!("3. inspecting it\n");
    crate::human::emit(&super::info::render_torrent(&m));

    let magnet = Magnet::from_metainfo(&m).to_string();
    let back: Magnet = magnet.parse()?;
    anyhow::ensure!(
        back.info_hashes == m.info_hashes,
        "magnet round trip changed the info hash"
    );
    crate::outln!("\n4. the magnet link parses back to the same info hash: ok");
    crate::outln!("\nNext: the swarm part of the demo (private DHT, seeders, a magnet leecher) is being built.");
    Ok(ExitCode::SUCCESS)
}

/// A temporary directory removed on drop (no extra dependency for one use).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let p = std::env::temp_dir().join(format!("lodestone-demo-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
