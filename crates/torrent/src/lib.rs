//! One torrent as a sans-IO state machine, shaped like `quinn-proto`: the
//! peers, the piece picker, the choker, smart ban, rate budgets, peer
//! exchange and the sources table, with no sockets, tasks or clock. A
//! driver feeds it bytes, results and the time, carries out its
//! [`Action`]s and reports its [`Event`]s; the simulator is one more
//! driver.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod config;
mod core;
mod io;
pub mod magnet;
pub mod peer_table;
mod phase;
pub mod pieces;
pub mod rate;
pub mod source;

pub use crate::config::CoreConfig;
pub use crate::core::{StopReason, TorrentCore};
pub use crate::io::{
    Action, Checked, DialFirst, Event, FileInfo, FilePriority, MseKeys, PeerInfo, PieceInfo,
    PieceState, PriorityError, Progress, Stats,
};
pub use crate::magnet::{MagnetCore, MetadataEvent, MetadataStatus};
pub use crate::phase::Phase;
pub use crate::source::{
    DhtRound, Disabled, PeerSource, Source, SourceKind, SourceSet, SourceState, TrackerStatus,
};
pub use lodestone_peer::picker::PeerKey;

#[cfg(test)]
mod tests;
