//! `/metrics` in Prometheus' text format (version 0.0.4): one name per
//! metric, units in the names, counters ending in `_total`.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::daemon::Daemon;
use crate::progress::{progress, Activity};

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(daemon)
}

async fn metrics(State(d): State<Arc<Daemon>>) -> impl IntoResponse {
    let body = render(&d).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Writes one metric family: its help, type and samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.family(name, kind, help, &[(String::new(), v)]);
    }
}

pub async fn render(d: &Daemon) -> String {
    let mut out = Out(String::new());
    let list = d.session.list();
    let mut by_state = [0u64; 5];
    let mut found = std::collections::BTreeMap::<&'static str, usize>::new();
    let (mut down_rate, mut up_rate) = (0.0, 0.0);
    let (mut live_down, mut live_up) = (0u64, 0u64);
    {
        let book = d.book();
        for t in &list {
            let r = book.get(&t.info_hash).cloned().unwrap_or_default();
            let meta = d.session.metainfo(t.id);
            let p = progress(t, meta.as_deref(), &r);
            by_state[p.activity as usize] += 1;
            down_rate += p.download_rate;
            up_rate += p.upload_rate;
            live_down += r.live.downloaded;
            live_up += r.live.uploaded;
            for s in &r.live.sources {
                *found
                    .entry(crate::json::source_kind(&s.kind).0)
                    .or_default() += s.peers;
            }
        }
    }
    let states = [
        Activity::Stopped,
        Activity::Checking,
        Activity::Metadata,
        Activity::Downloading,
        Activity::Seeding,
    ];
    out.family(
        "lodestone_torrents",
        "gauge",
        "Torrents in the session, by state.",
        &states
            .iter()
            .map(|a| {
                (
                    format!("{{state=\"{}\"}}", a.name()),
                    by_state[*a as usize] as f64,
                )
            })
            .collect::<Vec<_>>(),
    );
    out.family(
        "lodestone_peers_found",
        "gauge",
        "Distinct peer addresses each source gave, summed over the torrents running.",
        &["dht", "pex", "lpd", "tracker", "incoming", "given"]
            .iter()
            .map(|k| {
                (
                    format!("{{source=\"{k}\"}}"),
                    found.get(k).copied().unwrap_or(0) as f64,
                )
            })
            .collect::<Vec<_>>(),
    );
    out.one(
        "lodestone_peers_connected",
        "gauge",
        "Peer connections open, across all torrents.",
        d.session.connections() as f64,
    );
    let now = Instant::now();
    let (totals, hash_failures, bans) = {
        let book = d.book();
        (
            book.current_totals(now),
            book.current.hash_failures,
            book.current.bans,
        )
    };
    out.one(
        "lodestone_downloaded_bytes_total",
        "counter",
        "Payload bytes downloaded since the daemon started.",
        (totals.downloaded_bytes + live_down) as f64,
    );
    out.one(
        "lodestone_uploaded_bytes_total",
        "counter",
        "Payload bytes uploaded since the daemon started.",
        (totals.uploaded_bytes + live_up) as f64,
    );
    out.one(
        "lodestone_download_rate_bytes_per_second",
        "gauge",
        "Download rate over all torrents.",
        down_rate,
    );
    out.one(
        "lodestone_upload_rate_bytes_per_second",
        "gauge",
        "Upload rate over all torrents.",
        up_rate,
    );
    out.one(
        "lodestone_hash_failures_total",
        "counter",
        "Pieces that failed their hash check since the daemon started.",
        hash_failures as f64,
    );
    out.one(
        "lodestone_peers_banned_total",
        "counter",
        "Peers banned (bad data, hostile behaviour) since the daemon started.",
        bans as f64,
    );
    out.one(
        "lodestone_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        d.uptime().as_secs_f64(),
    );
    if let Some(dht) = d.dht() {
        let h = dht.health().await;
        out.one(
            "lodestone_dht_nodes",
            "gauge",
            "Nodes in the DHT routing table.",
            h.nodes as f64,
        );
        out.one(
            "lodestone_dht_good_nodes",
            "gauge",
            "Routing table nodes heard from recently.",
            h.good as f64,
        );
        out.one(
            "lodestone_dht_messages_sent_total",
            "counter",
            "KRPC messages sent by the DHT node.",
            h.sent as f64,
        );
        out.one(
            "lodestone_dht_messages_received_total",
            "counter",
            "KRPC messages received by the DHT node.",
            h.received as f64,
        );
        out.one(
            "lodestone_dht_timeouts_total",
            "counter",
            "DHT queries that got no answer.",
            h.timeouts as f64,
        );
        out.one(
            "lodestone_dht_queries_answered_total",
            "counter",
            "DHT queries from other nodes that we answered.",
            h.queries_answered as f64,
        );
        out.one(
            "lodestone_dht_lookups_total",
            "counter",
            "DHT lookups (get_peers rounds) the torrents started.",
            d.book().current.dht_lookups as f64,
        );
    }
    out.0
}
