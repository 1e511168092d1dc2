//! Sans-IO cores of the peer side: which blocks to ask for (picker), the
//! state of one connection (session) and whom to upload to (choker). No
//! sockets, tasks or clocks: time is passed in.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod choker;
pub mod metadata;
pub mod pex;
pub mod picker;
pub mod queue;
pub mod session;
