//! Where a torrent is and how far, from the session's list, its metainfo
//! and the book: the numbers every API reports the same way.

use lodestone_core::Metainfo;
use lodestone_engine::session::{Listed, RunState};

use crate::book::{Phase, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Stopped,
    Checking,
    /// A magnet fetching its metadata.
    Metadata,
    Downloading,
    Seeding,
}

impl Activity {
    pub fn name(self) -> &'static str {
        match self {
            Activity::Stopped => "stopped",
            Activity::Checking => "checking",
            Activity::Metadata => "metadata",
            Activity::Downloading => "downloading",
            Activity::Seeding => "seeding",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub activity: Activity,
    /// 0 while the metadata is missing (what Sonarr takes for "queued").
    pub total_size: u64,
    pub size_when_done: u64,
    pub left_until_done: u64,
    pub have_valid: u64,
    pub percent_done: f64,
    pub download_rate: f64,
    pub upload_rate: f64,
    /// Why it stopped or failed.
    pub error: Option<String>,
}

/// A torrent's name as users see it: its own, a magnet's `dn`, else its
/// info hash.
pub fn display_name(t: &Listed, r: &Record) -> String {
    t.name
        .clone()
        .or_else(|| r.name.clone())
        .unwrap_or_else(|| t.info_hash.to_hex())
}

pub fn progress(t: &Listed, meta: Option<&Metainfo>, r: &Record) -> Progress {
    let activity = match t.state {
        RunState::Running if !t.has_metadata => Activity::Metadata,
        RunState::Running => match r.live.phase {
            Phase::Checking => Activity::Checking,
            Phase::Metadata | Phase::Downloading => Activity::Downloading,
            Phase::Seeding => Activity::Seeding,
        },
        _ => Activity::Stopped,
    };
    let total_size = meta.map_or(0, |m| m.info.content_length());
    let size_when_done = match (meta, r.size_when_done) {
        (None, _) => 0,
        (Some(m), 0) => m.info.content_length(),
        (Some(_), n) => n,
    };
    let left_until_done = match (meta, r.live.stats.as_ref()) {
        (None, _) => 0,
        (Some(_), Some(s)) => s.bytes_left,
        // Never seen running: nothing is known to be there.
        (Some(_), None) if r.size_when_done == 0 && r.have_valid == 0 => size_when_done,
        (Some(_), None) => r.left_until_done,
    };
    let have_valid = size_when_done.saturating_sub(left_until_done);
    let percent_done = match (meta, size_when_done) {
        (None, _) => 0.0,
        (Some(_), 0) => 1.0,
        (Some(_), n) => have_valid as f64 / n as f64,
    };
    let (download_rate, upload_rate) = r
        .live
        .stats
        .as_ref()
        .map_or((0.0, 0.0), |s| (s.download_rate, s.upload_rate));
    let error = match &t.state {
        RunState::Failed(why) => Some(why.clone()),
        _ => r.error.clone(),
    };
    Progress {
        activity,
        total_size,
        size_when_done,
        left_until_done,
        have_valid,
        percent_done,
        download_rate,
        upload_rate,
        error,
    }
}
