//! What goes in and out of a [`crate::TorrentCore`]: the actions a driver
//! carries out, the events it reports, and the typed snapshots.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use lodestone_core::{Bitfield, PieceIndex};
use lodestone_peer::picker::PeerKey;

use crate::source::{PeerSource, Source, SourceSet};

/// Which transport a dial tries first (the driver falls back to the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DialFirst {
    /// The driver's own order (by where the peer is).
    #[default]
    Either,
    /// A peer exchange flagged it as speaking uTP (BEP 11's 0x04), or TCP
    /// connections to it were closed before its handshake.
    Utp,
    /// uTP connections to it were closed before its handshake.
    Tcp,
}

/// Something only the driver can do: it owns sockets, files and threads.
#[derive(Debug)]
pub enum Action {
    /// Open a connection; answer with `handle_connected` or
    /// `handle_connect_failed`.
    Dial {
        addr: SocketAddr,
        source: PeerSource,
        /// Open with an MSE/PE handshake using these.
        encrypt: Option<MseKeys>,
        /// Which transport to try first.
        first: DialFirst,
    },
    /// This peer has output: call `poll_transmit` while its socket takes more.
    Transmit(PeerKey),
    /// Close the connection (after sending what was already taken).
    Close(PeerKey),
    /// Hash a complete piece and, when it is good, write it; answer with
    /// `handle_checked`.
    Check {
        piece: PieceIndex,
        blocks: Vec<Bytes>,
    },
    /// Read a whole piece (into `buf`, a spare buffer to reuse) to seed it;
    /// answer with `handle_read`.
    Read {
        piece: PieceIndex,
        len: u32,
        buf: Vec<u8>,
    },
    /// Flush the files and record these pieces as verified on disk;
    /// answer with `handle_resume_saved`.
    SaveResume { have: Bitfield },
    /// What trackers are told about our progress changed.
    Progress(Progress),
}

/// Keys for an outgoing MSE/PE handshake.
#[derive(Debug, Clone)]
pub struct MseKeys {
    pub private_key: [u8; 20],
    pub pad: Vec<u8>,
}

/// What a check of a complete piece found.
#[derive(Debug)]
pub enum Checked {
    /// It matches its hash and is written.
    Good(Vec<Bytes>),
    /// It does not match.
    Bad(Vec<Bytes>),
    /// It matches but could not be written.
    WriteFailed(String),
}

/// What trackers are told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
}

/// What happened, for whoever watches the torrent.
#[derive(Debug, Clone)]
pub enum Event {
    PeerConnected {
        addr: SocketAddr,
        client: String,
        source: PeerSource,
        /// Over uTP rather than TCP.
        utp: bool,
    },
    PeerDisconnected {
        addr: SocketAddr,
        reason: String,
    },
    HashFailed {
        piece: u32,
        peers: Vec<SocketAddr>,
    },
    PeerBanned {
        addr: SocketAddr,
        reason: String,
    },
    Progress(Stats),
    Completed {
        /// Since the core was created.
        after: Duration,
    },
    /// Downloading stopped (e.g. disk full).
    Paused {
        reason: String,
    },
    /// A piece we have could not be read to seed it: its requests are
    /// rejected from now on.
    ReadFailed {
        piece: u32,
        reason: String,
    },
    /// Where peers come from (about once a second while there is news).
    Sources(Vec<Source>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub have_pieces: u32,
    pub num_pieces: u32,
    /// Bytes of the pieces not skipped, verified or not.
    pub wanted_bytes: u64,
    /// Bytes of the pieces not skipped and not verified.
    pub bytes_left: u64,
    /// Payload bytes this run.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes received that were not used (duplicates, unrequested, bad pieces).
    pub wasted: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub peers: usize,
    pub seeds: usize,
}

/// One connected peer, as `peers()` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// From its peer id or extension handshake; empty before the handshake.
    pub client: String,
    /// The source its connection counts under.
    pub source: PeerSource,
    /// Every source that named its address.
    pub found_by: SourceSet,
    pub established: bool,
    pub seed: bool,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub snubbed: bool,
    pub encrypted: bool,
    /// Connected over uTP (BEP 29) rather than TCP.
    pub utp: bool,
    pub download_rate: f64,
    pub upload_rate: f64,
    /// Pieces it has, when known.
    pub pieces: u32,
    pub requests_out: usize,
    pub requests_in: usize,
}

/// One file, as `files()` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileInfo {
    pub index: usize,
    pub length: u64,
    /// Bytes of it in verified pieces.
    pub done: u64,
    /// Not skipped (an empty file is always wanted: there is nothing to fetch).
    pub wanted: bool,
    pub priority: FilePriority,
}

/// How much a file is wanted. A piece gets the highest priority of the
/// files it touches, so a skipped file's edge piece shared with a wanted
/// file is still fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FilePriority {
    /// Not downloaded.
    Skip,
    /// Downloaded like `Normal` for now: the picker has no lower class yet.
    Low,
    #[default]
    Normal,
    /// Picked before `Normal` pieces.
    High,
}

/// Why a `set_file_priorities` call was refused (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorityError {
    /// One priority per file is needed.
    WrongLength { files: usize, given: usize },
}

impl std::fmt::Display for PriorityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PriorityError::WrongLength { files, given } => {
                write!(f, "{given} file priorities for a torrent of {files} files")
            }
        }
    }
}

impl std::error::Error for PriorityError {}

/// Where one piece stands, as `pieces()` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceState {
    Missing,
    /// Blocks requested, received or being hashed; not verified yet.
    Downloading,
    /// Verified (the same bit as `have()`).
    Have,
}

/// One piece, as `pieces()` shows it (two bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceInfo {
    pub state: PieceState,
    /// The highest priority of the files it touches.
    pub priority: FilePriority,
}

/// A core's queue of actions, with one `Transmit` per peer at a time
/// (a peer with output is flushed once however often it got more).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    actions: VecDeque<Action>,
    transmit_queued: HashSet<PeerKey>,
}

impl Outbox {
    pub(crate) fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    pub(crate) fn transmit(&mut self, key: PeerKey) {
        if self.transmit_queued.insert(key) {
            self.actions.push_back(Action::Transmit(key));
        }
    }

    /// Free the queues' memory while they are empty (they only grow).
    pub(crate) fn release(&mut self) {
        if self.actions.is_empty() && self.actions.capacity() > 0 {
            self.actions = VecDeque::new();
        }
        if self.transmit_queued.is_empty() && self.transmit_queued.capacity() > 0 {
            self.transmit_queued = HashSet::new();
        }
    }

    /// Room the queues hold on to.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.actions.capacity() + self.transmit_queued.capacity()
    }

    pub(crate) fn pop(&mut self) -> Option<Action> {
        let a = self.actions.pop_front()?;
        if let Action::Transmit(k) = a {
            self.transmit_queued.remove(&k);
        }
        Some(a)
    }
}
