//! The engine's state in words: the sources table as text rows, and why a
//! magnet's metadata is not here yet. The engine reports typed data; the
//! wording (and the command-line flags it names) lives with the CLI.

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

use lodestone_torrent::{DhtRound, Disabled, MetadataStatus, Source, SourceKind, SourceState};

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

/// Why the metadata has not arrived, as sentences a person can act on.
pub fn diagnose(s: &MetadataStatus) -> Vec<String> {
    let mut out = Vec::new();
    if s.dht_enabled {
        match s.dht {
            None => out.push("DHT: first lookup still running".to_owned()),
            Some(r) if r.queries == 0 => out.push("DHT: no node to ask: the bootstrap nodes did not resolve or answer".to_owned()),
            Some(r) if r.responses == 0 => out.push(format!("DHT: 0 of {} nodes answered: bootstrap unreachable", r.queries)),
            Some(r) if r.peers == 0 => out.push(format!(
                "DHT: {} nodes answered but none knows a peer for this info hash (nobody announced it yet)",
                r.responses
            )),
            Some(r) => out.push(format!("DHT: {} nodes answered, {} peers returned", r.responses, r.peers)),
        }
    } else {
        out.push(
            "DHT: off (--no-dht, or a local-only run; give --bootstrap HOST:PORT or --dht)"
                .to_owned(),
        );
    }
    if s.found == 0 {
        out.push("no peer addresses known yet".to_owned());
    } else if s.handshaken == 0 {
        out.push(format!(
            "{} peers found, {} connection attempts, {} failed, none completed a BitTorrent handshake",
            s.found, s.attempts, s.failed
        ));
    } else if s.with_ut_metadata == 0 {
        out.push(format!(
            "{} peers connected, none supports ut_metadata (BEP 9)",
            s.handshaken
        ));
    } else if s.size.is_none() {
        // Those refused for their size did tell it (said below).
        let unsized_ = s.with_ut_metadata.saturating_sub(s.refused_size);
        if unsized_ > 0 {
            out.push(format!(
                "{unsized_} peers support ut_metadata but none told the metadata size"
            ));
        }
    } else {
        out.push(format!(
            "metadata {}/{} pieces from {} peers with ut_metadata",
            s.pieces_done, s.pieces, s.with_ut_metadata
        ));
    }
    if s.banned > 0 {
        out.push(format!("{} peer(s) banned for bad metadata", s.banned));
    }
    if s.refused_size > 0 {
        out.push(format!(
            "{} peer(s) refused: metadata size above the limit",
            s.refused_size
        ));
    }
    out
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
