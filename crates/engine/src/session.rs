//! One session per process, holding many torrents: one peer listener that
//! routes each incoming handshake to its torrent by info hash, one hashing
//! and disk pool shared by all, and the DHT node the caller gives every
//! torrent. Each torrent is its own driver task around its sans-IO core;
//! what they do comes back on one event stream, tagged with the torrent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use lodestone_core::{InfoHash, Metainfo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::peer_io::{self, PeerInput};
use crate::pool::Pool;
use crate::torrent::{
    self, AbortOnDrop, MagnetStart, Shared, Summary, TorrentConfig, TorrentEvent,
};

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where every torrent's peers reach us.
    pub listen: Option<SocketAddr>,
    /// Hashing and disk threads, shared by all torrents.
    pub threads: usize,
    /// Seeds the listener's MSE keys.
    pub seed: u64,
}

/// A torrent's handle in the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TorrentId(pub u64);

/// What to add.
#[derive(Debug)]
pub enum Add {
    Torrent(Arc<Metainfo>),
    Magnet(MagnetStart),
}

impl Add {
    fn info_hash(&self) -> InfoHash {
        match self {
            Add::Torrent(m) => m.info_hashes.wire(),
            Add::Magnet(m) => m.info_hashes.wire(),
        }
    }
}

#[derive(Debug)]
pub enum SessionEvent {
    Torrent {
        id: TorrentId,
        info_hash: InfoHash,
        event: TorrentEvent,
    },
    /// The torrent's run ended (done, stopped, or failed).
    Ended {
        id: TorrentId,
        info_hash: InfoHash,
        result: Result<Summary, String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("no torrent {0:?} in the session")]
    Unknown(TorrentId),
}

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub id: TorrentId,
    /// False: the torrent was there already; the peers given were passed
    /// to it, as other clients merge a duplicate add.
    pub new: bool,
}

struct Entry {
    id: TorrentId,
    input: mpsc::Sender<PeerInput>,
    stop: watch::Sender<bool>,
}

type Registry = Arc<Mutex<BTreeMap<InfoHash, Entry>>>;

pub struct Session {
    cfg: SessionConfig,
    torrents: Registry,
    pool: Arc<Pool>,
    /// Torrents checking their files at once: one per hashing thread (each
    /// check hashes on every core already, and most starts only read a
    /// resume file).
    checks: Arc<tokio::sync::Semaphore>,
    events: mpsc::Sender<SessionEvent>,
    next_id: u64,
    _listener: Option<tokio::task::JoinHandle<()>>,
    _router: Option<AbortOnDrop>,
}

impl Session {
    pub async fn start(
        cfg: SessionConfig,
        events: mpsc::Sender<SessionEvent>,
    ) -> Result<Self, SessionError> {
        let torrents: Registry = Arc::default();
        let (listener, router) = match cfg.listen {
            None => (None, None),
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|error| SessionError::Listen { addr, error })?;
                let (tx, rx) = mpsc::channel(64);
                let known = torrents.clone();
                let hashes: peer_io::InfoHashes = Arc::new(move || {
                    known
                        .lock()
                        .map(|t| t.keys().copied().collect())
                        .unwrap_or_default()
                });
                let listener = peer_io::listen(l, tx, hashes, cfg.seed);
                let router = AbortOnDrop::spawn(route(rx, torrents.clone()));
                (Some(listener), Some(router))
            }
        };
        Ok(Self {
            pool: Arc::new(Pool::new("hash", cfg.threads)),
            checks: Arc::new(tokio::sync::Semaphore::new(cfg.threads.max(1))),
            cfg,
            torrents,
            events,
            next_id: 0,
            _listener: listener,
            _router: router,
        })
    }

    /// Add a torrent: it runs at once. `cfg.listen` is replaced by the
    /// session's (the address peers reach it on).
    pub fn add(&mut self, what: Add, mut cfg: TorrentConfig) -> Added {
        let info_hash = what.info_hash();
        let mut torrents = match self.torrents.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        if let Some(e) = torrents.get(&info_hash) {
            if !cfg.peers.is_empty() {
                let _ = e.input.try_send(PeerInput::Discovered {
                    addrs: cfg.peers,
                    source: crate::peer_io::PeerSource::Manual,
                });
            }
            return Added {
                id: e.id,
                new: false,
            };
        }
        let id = TorrentId(self.next_id);
        self.next_id += 1;
        let (shared, input) = Shared::new(self.pool.clone(), self.checks.clone());
        cfg.shared = Some(shared);
        cfg.listen = self.cfg.listen;
        let (stop, stop_rx) = watch::channel(false);
        torrents.insert(info_hash, Entry { id, input, stop });
        drop(torrents);
        let events = self.events.clone();
        let sink = torrent::EventSink::Session {
            tx: events.clone(),
            id,
            info_hash,
        };
        let registry = self.torrents.clone();
        tokio::spawn(async move {
            let result = torrent::run_in_session(what, cfg, sink, stop_rx).await;
            if let Ok(mut t) = registry.lock() {
                t.remove(&info_hash);
            }
            let result = result.map_err(|e| e.to_string());
            let _ = events
                .send(SessionEvent::Ended {
                    id,
                    info_hash,
                    result,
                })
                .await;
        });
        Added { id, new: true }
    }

    /// Ask a torrent to stop (it saves its resume data and ends).
    pub fn stop(&self, id: TorrentId) -> Result<(), SessionError> {
        let torrents = self
            .torrents
            .lock()
            .map_err(|_| SessionError::Unknown(id))?;
        let e = torrents
            .values()
            .find(|e| e.id == id)
            .ok_or(SessionError::Unknown(id))?;
        let _ = e.stop.send(true);
        Ok(())
    }

    /// A torrent's state now (`None`: not in the session, or it did not
    /// answer within a second).
    pub async fn snapshot(&self, id: TorrentId) -> Option<torrent::TorrentSnapshot> {
        let input = {
            let torrents = self.torrents.lock().ok()?;
            torrents.values().find(|e| e.id == id)?.input.clone()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ask = PeerInput::Command(torrent::Command::Snapshot(tx));
        input.send(ask).await.ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(1), rx)
            .await
            .ok()?
            .ok()
    }

    /// Ask every torrent to stop.
    pub fn stop_all(&self) {
        if let Ok(t) = self.torrents.lock() {
            for e in t.values() {
                let _ = e.stop.send(true);
            }
        }
    }

    /// Torrents running.
    pub fn len(&self) -> usize {
        self.torrents.lock().map_or(0, |t| t.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Hand each incoming connection to the torrent its handshake names.
async fn route(mut rx: mpsc::Receiver<PeerInput>, torrents: Registry) {
    while let Some(input) = rx.recv().await {
        let PeerInput::Connected {
            info_hash: Some(ih),
            ..
        } = &input
        else {
            continue;
        };
        let target = torrents
            .lock()
            .ok()
            .and_then(|t| t.get(ih).map(|e| e.input.clone()));
        // A torrent that cannot take it now loses this peer, not the others.
        if let Some(tx) = target {
            let _ = tx.try_send(input);
        }
    }
}
