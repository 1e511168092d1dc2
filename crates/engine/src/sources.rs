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

/// What the last DHT lookup for the torrent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DhtRound {
    pub queries: u32,
    pub responses: u32,
    pub peers: u32,
    /// Announce: (nodes asked, nodes that accepted).
    pub announced: Option<(u32, u32)>,
    pub next_in: Duration,
}

impl DhtRound {
    /// The status line of the `[DHT]` row.
    pub fn status(&self) -> String {
        if self.queries == 0 {
            "not working: no DHT node to ask (bootstrap unreachable?)".to_owned()
        } else if self.responses == 0 {
            format!(
                "not working: 0 of {} DHT nodes answered (bootstrap unreachable?)",
                self.queries
            )
        } else {
            let mut s = format!("working: {} nodes answered", self.responses);
            if let Some((sent, acked)) = self.announced {
                s.push_str(&format!(", announced to {acked} of {sent}"));
            }
            s
        }
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
        assert!(r.status().contains("0 of 3 DHT nodes answered"));
        let r = DhtRound {
            queries: 8,
            responses: 8,
            announced: Some((8, 7)),
            ..Default::default()
        };
        assert_eq!(r.status(), "working: 8 nodes answered, announced to 7 of 8");
        let lines = render(&[SourceRow {
            name: "[DHT]".into(),
            status: r.status(),
            next_update: Some(Duration::from_secs(14)),
            seeds: 1,
            peers: 2,
        }]);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("[DHT]"));
        assert!(lines[1].contains("14s"));
    }
}
