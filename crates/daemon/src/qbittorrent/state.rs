//! Our activity as qBittorrent's torrent state (WebAPI 2.11: `stoppedDL`
//! and `stoppedUP`, not `paused*`).

use crate::progress::Activity;

/// What decides a torrent's state.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub activity: Activity,
    pub has_metadata: bool,
    /// Every wanted byte is verified.
    pub complete: bool,
    pub error: bool,
    pub forced: bool,
    pub download_rate: f64,
    pub upload_rate: f64,
}

/// The state string (`metaDL`, `downloading`, `stalledUP`...).
pub fn state(i: Inputs) -> &'static str {
    if i.error {
        return "error";
    }
    match i.activity {
        Activity::Stopped if i.has_metadata && i.complete => "stoppedUP",
        Activity::Stopped => "stoppedDL",
        Activity::Checking if i.complete => "checkingUP",
        Activity::Checking => "checkingDL",
        Activity::Metadata if i.forced => "forcedMetaDL",
        Activity::Metadata => "metaDL",
        Activity::Downloading if i.forced => "forcedDL",
        Activity::Downloading if i.download_rate > 0.0 => "downloading",
        Activity::Downloading => "stalledDL",
        Activity::Seeding if i.forced => "forcedUP",
        Activity::Seeding if i.upload_rate > 0.0 => "uploading",
        Activity::Seeding => "stalledUP",
    }
}

/// Whether a torrent in `state` passes `filter` (torrents/info's, as
/// qBittorrent's `TorrentFilter`). An unknown filter passes everything.
pub fn filter_matches(filter: &str, state: &str, dl: f64, up: f64) -> bool {
    let downloading = matches!(
        state,
        "downloading"
            | "stalledDL"
            | "metaDL"
            | "forcedMetaDL"
            | "forcedDL"
            | "queuedDL"
            | "checkingDL"
            | "stoppedDL"
    );
    let uploading = matches!(
        state,
        "uploading" | "stalledUP" | "forcedUP" | "queuedUP" | "checkingUP" | "stoppedUP"
    );
    let stopped = matches!(state, "stoppedDL" | "stoppedUP");
    let active = dl > 0.0 || up > 0.0;
    match filter {
        "" | "all" => true,
        "downloading" => downloading,
        "seeding" => uploading && !stopped,
        "completed" => uploading,
        "stopped" | "paused" => stopped,
        "running" | "resumed" => !stopped,
        "active" => active,
        "inactive" => !active,
        "stalled" => matches!(state, "stalledUP" | "stalledDL"),
        "stalled_uploading" => state == "stalledUP",
        "stalled_downloading" => state == "stalledDL",
        "checking" => matches!(state, "checkingUP" | "checkingDL" | "checkingResumeData"),
        "moving" => state == "moving",
        "errored" => matches!(state, "error" | "missingFiles"),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(activity: Activity) -> Inputs {
        Inputs {
            activity,
            has_metadata: true,
            complete: false,
            error: false,
            forced: false,
            download_rate: 0.0,
            upload_rate: 0.0,
        }
    }

    #[test]
    fn states() {
        assert_eq!(state(i(Activity::Metadata)), "metaDL");
        assert_eq!(state(i(Activity::Downloading)), "stalledDL");
        let mut d = i(Activity::Downloading);
        d.download_rate = 10.0;
        assert_eq!(state(d), "downloading");
        let mut s = i(Activity::Stopped);
        assert_eq!(state(s), "stoppedDL");
        s.complete = true;
        assert_eq!(state(s), "stoppedUP");
        assert_eq!(state(i(Activity::Seeding)), "stalledUP");
        let mut e = i(Activity::Seeding);
        e.error = true;
        assert_eq!(state(e), "error");
    }

    #[test]
    fn filters() {
        assert!(filter_matches("stopped", "stoppedDL", 0.0, 0.0));
        assert!(filter_matches("paused", "stoppedUP", 0.0, 0.0));
        assert!(!filter_matches("seeding", "stoppedUP", 0.0, 0.0));
        assert!(filter_matches("completed", "stoppedUP", 0.0, 0.0));
        assert!(filter_matches("downloading", "metaDL", 0.0, 0.0));
        assert!(filter_matches("active", "uploading", 0.0, 5.0));
        assert!(filter_matches("inactive", "stalledDL", 0.0, 0.0));
    }
}
