//! The daemon's own timers: the watch directory and the alt-speed
//! schedule. Each is a task that ends when dropped (abort it to stop).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::{AddRequest, AddSource, Daemon};
use crate::schedule::{local_now, Schedule};
use crate::watch::{Kind, Watcher};

/// How often the watch directory is looked at (Transmission's generic
/// watcher polls too; inotify misses files on NFS).
pub const WATCH_EVERY: Duration = Duration::from_secs(3);

/// Add every `.torrent` and `.magnet` that appears in `dir`; each is
/// renamed `<name>.added` once the session has it.
pub async fn watch(daemon: Arc<Daemon>, dir: PathBuf) {
    let mut watcher = Watcher::new(dir.clone());
    let mut tick = tokio::time::interval(WATCH_EVERY);
    let mut reported_dir_error = false;
    loop {
        tick.tick().await;
        let scan = match watcher.scan() {
            Ok(s) => {
                reported_dir_error = false;
                s
            }
            Err(e) => {
                if !reported_dir_error {
                    eprintln!("lodestone daemon: watch directory: {e}");
                    reported_dir_error = true;
                }
                continue;
            }
        };
        for p in scan.problems {
            eprintln!("lodestone daemon: {}: {}", p.path.display(), p.error);
        }
        for found in scan.found {
            let source = match found.kind {
                Kind::Torrent(bytes) => AddSource::Metainfo(bytes),
                Kind::Magnet(text) => AddSource::Magnet(text),
            };
            let req = AddRequest {
                source,
                download_dir: None,
                paused: None,
                labels: Vec::new(),
                origin: "watch",
            };
            match daemon.add(req).await {
                Ok(_) => {
                    if let Err(e) = watcher.mark_added(&found.path) {
                        eprintln!("lodestone daemon: {e}");
                    }
                }
                Err(e) => eprintln!("lodestone daemon: {}: {e}", found.path.display()),
            }
        }
    }
}

/// Switch the alternative speed limits on and off by the schedule. Like
/// Transmission, only an edge of the schedule changes the mode: a user who
/// switched it by hand keeps that until the next edge.
pub async fn alt_speed_schedule(daemon: Arc<Daemon>, schedule: Schedule) {
    let mut was = None;
    loop {
        let now = local_now();
        let active = schedule.is_active(now.at);
        if was != Some(active) {
            daemon.update_settings(|s| s.alt_speed_enabled = active);
            was = Some(active);
        }
        tokio::time::sleep(now.until_change(&schedule)).await;
    }
}
