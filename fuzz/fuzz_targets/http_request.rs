#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootherd_fuzz::http_request(data));
