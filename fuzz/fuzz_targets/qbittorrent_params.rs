//! The body is `lodestone_fuzz::qbittorrent_params` (fuzz/src/qbittorrent_params.rs),
//! also run by the corpus replay in tests/replay.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestone_fuzz::qbittorrent_params(data));
