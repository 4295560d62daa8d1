//! `satcast_fuzz::harness::network_key` under libFuzzer: see its documentation for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| satcast_fuzz::harness::network_key(data));
