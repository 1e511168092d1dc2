//! The sources table: where peers come from, whether each source works,
//! when it updates next, and what it found. Shown under the progress bar
//! and carried in `--json`, like a client's "Trackers" tab.

use std::time::Duration;

/// One row: `[DHT]`, `[Peer Exchange]`, `[Local Peer Discovery]`, a tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    pub name: String,
    pub status: String,
    /// Until the next update, when one is scheduled.
    pub next_update: Option<Duration>,
    /// Connected peers from this source that have everything.
    pub seeds: usize,
    /// Distinct peer addresses this source gave us.
    pub peers: usize,
}

pub use lodestone_torrent::DhtRound;
use lodestone_torrent::{Disabled, Source, SourceKind, SourceState};

/// The status line of the `[DHT]` row.
pub fn dht_status(r: &DhtRound) -> String {
    if r.queries == 0 {
        "not working: no DHT node to ask (bootstrap unreachable?)".to_owned()
    } else if r.responses == 0 {
        format!(
            "not working: 0 of {} DHT nodes answered (bootstrap unreachable?)",
            r.queries
        )
    } else {
        let mut s = format!("working: {} nodes answered", r.responses);
        if let Some((sent, acked)) = r.announced {
            s.push_str(&format!(", announced to {acked} of {sent}"));
        }
        s
    }
}

/// A typed row in words (the flags named are the command line's).
pub fn describe(s: &Source) -> SourceRow {
    let name = match &s.kind {
        SourceKind::Dht => "[DHT]".to_owned(),
        SourceKind::Pex => "[Peer Exchange]".to_owned(),
        SourceKind::Lpd => "[Local Peer Discovery]".to_owned(),
        SourceKind::Given => "[Given peers]".to_owned(),
        SourceKind::Incoming => "[Incoming]".to_owned(),
        SourceKind::Tracker(url) => url.clone(),
    };
    let status = match (&s.kind, &s.state) {
        (_, SourceState::Disabled(Disabled::Private)) => "disabled: private torrent".to_owned(),
        (_, SourceState::Disabled(Disabled::NeedsListen)) => "disabled: needs --listen".to_owned(),
        (SourceKind::Dht, SourceState::Disabled(Disabled::Off)) => {
            "disabled (no --bootstrap or --dht)".to_owned()
        }
        (SourceKind::Pex, SourceState::Disabled(Disabled::Off)) => "disabled (--no-pex)".to_owned(),
        (SourceKind::Lpd, SourceState::Disabled(Disabled::Off)) => "disabled (no --lpd)".to_owned(),
        (_, SourceState::Disabled(Disabled::Off)) => "disabled (--no-trackers)".to_owned(),
        (SourceKind::Dht, SourceState::Starting) => "searching...".to_owned(),
        (_, SourceState::Starting) => "starting...".to_owned(),
        (_, SourceState::DhtRound(r)) => dht_status(r),
        (_, SourceState::NoPexPeer) => "waiting: no connected peer speaks ut_pex".to_owned(),
        (_, SourceState::Exchanging(n)) => format!("working: exchanging with {n} peers"),
        (_, SourceState::Reported(status)) => status.clone(),
        (_, SourceState::Given(n)) => format!("{n} given (--peer or x.pe)"),
        (_, SourceState::Listening(l)) => format!("listening on {l}"),
        (_, SourceState::NotContacted) => "not contacted yet".to_owned(),
        (_, SourceState::Tracker(t)) => t.status.clone(),
    };
    SourceRow {
        name,
        status,
        next_update: s.next_update,
        seeds: s.seeds,
        peers: s.peers,
    }
}

/// Render the table as fixed-width text lines.
pub fn render(rows: &[SourceRow]) -> Vec<String> {
    let mut out = vec![format!(
        "{:<24} {:<58} {:>9} {:>6} {:>6}",
        "Source", "Status", "Update in", "Seeds", "Peers"
    )];
    for r in rows {
        let next = r
            .next_update
            .map_or_else(|| "-".to_owned(), |d| format!("{}s", d.as_secs()));
        let mut status = r.status.clone();
        if status.len() > 58 {
            let mut cut = 55;
            while !status.is_char_boundary(cut) {
                cut -= 1;
            }
            status.truncate(cut);
            status.push_str("...");
        }
        out.push(format!(
            "{:<24} {:<58} {:>9} {:>6} {:>6}",
            r.name, status, next, r.seeds, r.peers
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dht_status_says_why() {
        let r = DhtRound {
            queries: 3,
            ..Default::default()
        };
        assert!(dht_status(&r).contains("0 of 3 DHT nodes answered"));
        let r = DhtRound {
            queries: 8,
            responses: 8,
            announced: Some((8, 7)),
            ..Default::default()
        };
        assert_eq!(
            dht_status(&r),
            "working: 8 nodes answered, announced to 7 of 8"
        );
        let lines = render(&[SourceRow {
            name: "[DHT]".into(),
            status: dht_status(&r),
            next_update: Some(Duration::from_secs(14)),
            seeds: 1,
            peers: 2,
        }]);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("[DHT]"));
        assert!(lines[1].contains("14s"));
    }
}
