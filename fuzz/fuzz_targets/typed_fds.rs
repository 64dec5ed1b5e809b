//! One packet with fds of chosen kinds into a typed `Receiver` (see `memfile_fuzz::run_typed`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = memfile_fuzz::run_typed(data);
});
