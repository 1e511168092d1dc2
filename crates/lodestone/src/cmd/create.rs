//! `lodestone create`: make a .torrent.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use lodestone_core::Metainfo;
use lodestone_engine::create::{create_torrent, CreateOptions, Progress};

use crate::cli::CreateArgs;

pub fn run(a: &CreateArgs) -> anyhow::Result<ExitCode> {
    let total = total_size(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
    let opts = CreateOptions {
        piece_length: a.piece_size,
        private: a.private,
        trackers: a.trackers.clone(),
        web_seeds: a.web_seeds.clone(),
        comment: a.comment.clone(),
        created_by: Some(format!("Lodestone {}", env!("CARGO_PKG_VERSION"))),
        creation_date: if a.no_date {
            None
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .and_then(|d| i64::try_from(d.as_secs()).ok())
        },
        threads: a.threads,
    };
    let progress = Progress::default();
    let show_bar = std::io::stderr().is_terminal() && !a.json;
    let bytes = std::thread::scope(|s| {
        let worker = s.spawn(|| create_torrent(&a.path, &opts, &progress));
        if show_bar {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "hashing {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            while !worker.is_finished() {
                bar.set_position(progress.hashed.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        }
        worker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    let m = Metainfo::from_bytes(&bytes)?;
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", m.info.name)));
    if out.exists() && !a.force {
        bail!(
            "{} already exists (use --force to overwrite)",
            out.display()
        );
    }
    lodestone_engine::fsutil::write_atomic(&out, &bytes)
        .with_context(|| format!("cannot write {}", out.display()))?;
    if a.json {
        let mut j = serde_json::to_value(super::info::torrent_json(&m))?;
        if let Some(o) = j.as_object_mut() {
            o.insert("torrent_file".into(), out.display().to_string().into());
        }
        crate::outln!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        crate::outln!("wrote {}", out.display());
        crate::human::emit(&super::info::render_torrent(&m));
    }
    Ok(ExitCode::SUCCESS)
}

/// Total bytes under `path` (for the progress bar; the hasher re-walks).
fn total_size(path: &std::path::Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut sum = 0;
        for e in std::fs::read_dir(path)? {
            let e = e?;
            if !e.file_type()?.is_symlink() {
                sum += total_size(&e.path())?;
            }
        }
        Ok(sum)
    } else if meta.is_file() {
        Ok(meta.len())
    } else {
        std::fs::metadata(path).map(|m| m.len())
    }
}
