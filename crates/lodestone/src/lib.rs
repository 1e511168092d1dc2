//! The `lodestone` command-line client.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod cli;
mod cmd;
pub mod human;
pub mod payload;
pub mod words;
