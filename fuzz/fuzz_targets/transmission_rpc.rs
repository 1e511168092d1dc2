//! The body is `lodestone_fuzz::transmission_rpc` (fuzz/src/transmission_rpc.rs),
//! also run by the corpus replay in tests/replay.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestone_fuzz::transmission_rpc(data));
