//! One packet, no fds, into a `Receiver` (see `memfile_fuzz::run_packet`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = memfile_fuzz::run_packet(data);
});
