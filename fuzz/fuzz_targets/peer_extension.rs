//! The body is `lodestone_fuzz::peer_extension` (fuzz/src/peer_extension.rs), also run by the
//! corpus replay in tests/replay.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestone_fuzz::peer_extension(data));
