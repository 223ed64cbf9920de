#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p4p_fuzz::targets::alto_client(data));
