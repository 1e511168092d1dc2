//! The engine's typed state as JSON, shared by the RPC's extension fields
//! and the native API (one shape for both).

use lodestone_torrent::{PeerInfo, PeerSource, Source, SourceKind, SourceState};
use serde_json::{json, Value};

pub fn source_kind(k: &SourceKind) -> (&'static str, Option<&str>) {
    match k {
        SourceKind::Dht => ("dht", None),
        SourceKind::Pex => ("pex", None),
        SourceKind::Lpd => ("lpd", None),
        SourceKind::Given => ("given", None),
        SourceKind::Incoming => ("incoming", None),
        SourceKind::Tracker(url) => ("tracker", Some(url)),
    }
}

/// One row of the sources table.
pub fn source(s: &Source) -> Value {
    let (kind, url) = source_kind(&s.kind);
    let mut v = json!({
        "kind": kind,
        "next_update_s": s.next_update.map(|d| d.as_secs_f64()),
        "seeds": s.seeds,
        "peers": s.peers,
        "state": state(&s.state),
    });
    if let Some(url) = url {
        v["url"] = json!(url);
    }
    v
}

fn state(s: &SourceState) -> Value {
    use lodestone_torrent::Disabled;
    match s {
        SourceState::Disabled(why) => json!({"status": "disabled", "why": match why {
            Disabled::Private => "private torrent",
            Disabled::Off => "switched off",
            Disabled::NeedsListen => "needs a listening port",
        }}),
        SourceState::Starting => json!({"status": "starting"}),
        SourceState::DhtRound(r) => json!({
            "status": "working",
            "queries": r.queries,
            "responses": r.responses,
            "peers": r.peers,
            "announced": r.announced.map(|(of, ok)| json!({"ok": ok, "of": of})),
        }),
        SourceState::NoPexPeer => {
            json!({"status": "waiting", "why": "no connected peer speaks PEX"})
        }
        SourceState::Exchanging(n) => json!({"status": "working", "exchanging_with": n}),
        SourceState::Reported(text) => json!({"status": "working", "message": text}),
        SourceState::Given(n) => json!({"status": "working", "given": n}),
        SourceState::Listening(addr) => json!({"status": "working", "listening": addr.to_string()}),
        SourceState::NotContacted => json!({"status": "waiting", "why": "not contacted yet"}),
        SourceState::Tracker(t) => json!({
            "status": "working",
            "message": t.status,
            "seeders": t.seeders,
            "leechers": t.leechers,
        }),
    }
}

/// One connected peer, with every source that named it.
pub fn peer(p: &PeerInfo) -> Value {
    json!({
        "address": p.addr.to_string(),
        "client": p.client,
        "transport": if p.utp { "utp" } else { "tcp" },
        "source": p.source.name(),
        "found_by": p.found_by.iter().map(PeerSource::name).collect::<Vec<_>>(),
        "established": p.established,
        "seed": p.seed,
        "encrypted": p.encrypted,
        "am_choking": p.am_choking,
        "am_interested": p.am_interested,
        "peer_choking": p.peer_choking,
        "peer_interested": p.peer_interested,
        "snubbed": p.snubbed,
        "download_rate": p.download_rate,
        "upload_rate": p.upload_rate,
        "pieces": p.pieces,
    })
}
