//! `lodestone scrape`: what each tracker of a torrent or magnet knows
//! about it: seeders, leechers, completed downloads.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use crate::cli::ScrapeArgs;

/// Longest wait for one tracker (a UDP one retries for up to 28 s).
const PER_TRACKER: Duration = Duration::from_secs(30);

pub fn run(a: &ScrapeArgs) -> anyhow::Result<ExitCode> {
    let (info_hash, mut trackers) = match super::info::load(&a.input)? {
        super::info::Input::Torrent(m) => (
            m.info_hashes.wire(),
            m.trackers.iter().flatten().cloned().collect::<Vec<_>>(),
        ),
        super::info::Input::Magnet(m) => (m.info_hashes.wire(), m.trackers.clone()),
    };
    for t in &a.trackers {
        if !trackers.contains(t) {
            trackers.push(t.clone());
        }
    }
    if trackers.is_empty() {
        bail!("{} names no tracker; give --tracker URL", a.input);
    }
    let http = super::get::http_client(a.ca_file.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut answered = 0;
    rt.block_on(async {
        // All trackers at once: a slow one does not hold up the others.
        let tasks: Vec<_> = trackers
            .iter()
            .map(|url| {
                let (url, http) = (url.clone(), http.clone());
                tokio::spawn(async move {
                    let r = tokio::time::timeout(
                        PER_TRACKER,
                        lodestone_engine::tracker::scrape(&url, &info_hash, &http),
                    )
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".into()));
                    (url, r)
                })
            })
            .collect();
        for t in tasks {
            let Ok((url, r)) = t.await else { continue };
            match r {
                Ok(s) => {
                    answered += 1;
                    if a.json {
                        crate::outln!(
                            "{}",
                            json!({"tracker": url, "seeders": s.seeders, "leechers": s.leechers, "completed": s.completed})
                        );
                    } else {
                        crate::outln!(
                            "{url}: {} seeders, {} leechers, {} completed",
                            s.seeders,
                            s.leechers,
                            s.completed
                        );
                    }
                }
                Err(e) => {
                    if a.json {
                        crate::outln!("{}", json!({"tracker": url, "error": e}));
                    } else {
                        crate::outln!("{url}: error: {e}");
                    }
                }
            }
        }
    });
    Ok(if answered > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
