#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootherd_fuzz::tftp_packet(data));
