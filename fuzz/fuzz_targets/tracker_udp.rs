//! The body is `lodestone_fuzz::tracker_udp` (fuzz/src/tracker_udp.rs), also run by the
//! corpus replay in tests/replay.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestone_fuzz::tracker_udp(data));
