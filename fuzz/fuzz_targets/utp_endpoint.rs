//! The body is `lodestone_fuzz::utp_endpoint` (fuzz/src/utp_endpoint.rs), also run by the
//! corpus replay in tests/replay.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lodestone_fuzz::utp_endpoint(data));
