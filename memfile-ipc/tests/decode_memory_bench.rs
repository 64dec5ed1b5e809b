//! Timing probe (run explicitly, in release):
//! `cargo test --release -p memfile-ipc --test decode_memory_bench -- --ignored --nocapture`
use std::time::Duration;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
#[ignore]
fn vec_u8_16mib_decode_time() {
    let (tx, rx) = memfile_ipc::channel::<Vec<u8>>().unwrap();
    let data: Vec<u8> = (0..16usize << 20).map(|i| (i * 31 + 7) as u8).collect();
    let mut times = Vec::new();
    for _ in 0..21 {
        tx.send(&data).unwrap();
        let start = thread_cpu();
        let got = rx.recv().unwrap();
        times.push(thread_cpu() - start);
        assert_eq!(got.len(), data.len());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "16 MiB Vec<u8> recv, thread CPU time: min {:.2} ms, median {:.2} ms, max {:.2} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}
