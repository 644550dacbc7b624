#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kproxy_fuzz::ipvs_plan(data));
