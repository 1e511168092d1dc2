//! Bencode, the serialisation format of BitTorrent (BEP 3).
//!
//! The decoder is zero-copy: every [`Value`] borrows from the input and
//! remembers the exact byte span it was parsed from, so a caller can hash the
//! info dictionary *as received* rather than a re-encoding of it.
//!
//! Decoding is strict by default (sorted unique keys, canonical integers) and
//! bounded: nesting depth and the total number of values are capped before
//! anything is allocated for them, and no declared length is trusted beyond
//! the bytes actually present.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod decode;
mod encode;
mod error;
mod owned;
mod value;

pub use decode::{decode, decode_prefix, DecodeOptions, Decoder};
pub use encode::{encode_to, Encoder};
pub use error::{DecodeError, DecodeErrorKind};
pub use owned::OwnedValue;
pub use value::{Dict, Value, ValueKind};
