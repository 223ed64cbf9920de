#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p4p_fuzz::targets::http_query(data));
