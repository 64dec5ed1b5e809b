//! The main job: a producer process streams large frozen buffers to a consumer process.
//!
//! ```text
//! cargo run --release --example producer_consumer [-- --frames N --size-mib M]
//! ```
//!
//! The producer re-executes this binary as the consumer, then for every frame: writes it
//! once, in place, into a fresh memfd ([`Frozen::build`]), freezes it (sealed and mapped
//! read-only: no copy) and sends it as a field of a typed message, with a checksum. The
//! consumer maps each buffer (the kernel has confirmed it can never change), checks the
//! checksum over every byte and replies. Exit status is non-zero on any mismatch or error.

use std::process::{Command, ExitCode};
use std::time::Instant;

use memfile::Frozen;
use memfile::ipc::{self, Fd};
use serde::{Deserialize, Serialize};

/// Producer → consumer.
#[derive(Serialize, Deserialize)]
enum Job {
    /// One frame: its number, the checksum of its bytes, and the bytes themselves (an fd).
    Frame {
        index: u64,
        checksum: u64,
        data: Fd<Frozen>,
    },
    /// No more frames.
    Done,
}

/// Consumer → producer.
#[derive(Serialize, Deserialize)]
struct Ack {
    index: u64,
    bytes: u64,
    checksum_ok: bool,
}

const ROLE_ENV: &str = "MEMFILE_EXAMPLE_ROLE";

fn main() -> ExitCode {
    let result = if std::env::var_os(ROLE_ENV).is_some_and(|r| r == "consumer") {
        consumer()
    } else {
        producer()
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Options {
    frames: u64,
    size: usize,
    /// Test hook: announce a wrong checksum for this frame, to show that the consumer
    /// catches it and the run fails.
    corrupt_frame: Option<u64>,
}

fn parse_args() -> AnyResult<Options> {
    let mut opts = Options {
        frames: 64,
        size: 4 << 20,
        corrupt_frame: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--frames" => opts.frames = value()?.parse()?,
            "--size-mib" => opts.size = value()?.parse::<usize>()? << 20,
            "--size-bytes" => opts.size = value()?.parse()?,
            "--corrupt-frame" => opts.corrupt_frame = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: producer_consumer [--frames N] [--size-mib M | --size-bytes B] \
                     [--corrupt-frame I]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(opts)
}

fn producer() -> AnyResult<ExitCode> {
    let opts = parse_args()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, "consumer");
    let (mut child, tx, rx) = ipc::spawn::<Job, Ack>(&mut cmd)?;
    println!(
        "producer: pid {}, consumer pid {}, {} frames of {} KiB",
        std::process::id(),
        child.id(),
        opts.frames,
        opts.size >> 10
    );

    let start = Instant::now();
    // Acks are read on their own thread so that the producer never waits for the consumer
    // to finish one frame before it writes the next.
    let frames = opts.frames;
    let acks = std::thread::spawn(move || -> Result<(u64, u64, u64), ipc::Error> {
        let (mut ok, mut bad, mut bytes) = (0, 0, 0);
        for i in 0..frames {
            let ack = rx.recv()?;
            bytes += ack.bytes;
            if ack.checksum_ok && ack.index == i {
                ok += 1;
            } else {
                bad += 1;
                eprintln!(
                    "frame {} failed verification (expected frame {i})",
                    ack.index
                );
            }
            if (i + 1) % 8 == 0 || i + 1 == frames {
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "  {:>5}/{frames} frames verified, {:>8.1} MiB, {:>6.2} GiB/s",
                    i + 1,
                    bytes as f64 / (1 << 20) as f64,
                    bytes as f64 / secs / (1u64 << 30) as f64
                );
            }
        }
        Ok((ok, bad, bytes))
    });

    for index in 0..opts.frames {
        let mut checksum = 0;
        let frame = Frozen::build("frame", opts.size, |buf| {
            fill(buf, index);
            checksum = checksum64(buf);
        })?;
        if opts.corrupt_frame == Some(index) {
            checksum ^= 1;
        }
        tx.send(&Job::Frame {
            index,
            checksum,
            data: Fd::new(frame),
        })?;
    }
    tx.send(&Job::Done)?;

    let (ok, bad, bytes) = acks.join().map_err(|_| "ack thread panicked")??;
    let elapsed = start.elapsed();
    let status = child.wait()?;
    println!(
        "done: {} frames, {:.1} MiB in {:.3} s = {:.2} GiB/s; checksums: {}",
        ok + bad,
        bytes as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / (1u64 << 30) as f64,
        if bad == 0 {
            "all matched".to_string()
        } else {
            format!("{bad} MISMATCHED")
        }
    );
    if bad != 0 || ok != opts.frames || !status.success() {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn consumer() -> AnyResult<ExitCode> {
    let (tx, rx) = ipc::from_parent::<Ack, Job>()?;
    for job in rx.iter() {
        match job? {
            Job::Frame {
                index,
                checksum,
                data,
            } => {
                // `data` derefs to `&[u8]`: the kernel guarantees these bytes can not change.
                let ok = checksum64(&data) == checksum;
                tx.send(&Ack {
                    index,
                    bytes: data.len() as u64,
                    checksum_ok: ok,
                })?;
            }
            Job::Done => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fills a frame with a pattern that depends on its number.
fn fill(buf: &mut [u8], index: u64) {
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    let rest = words.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&x.to_le_bytes()[..n]);
}

/// A fast non-cryptographic checksum over every byte (4 independent lanes).
fn checksum64(data: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [1u64, 2, 3, 4];
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        for (lane, w) in lanes.iter_mut().zip(c.chunks_exact(8)) {
            let w = u64::from_le_bytes(w.try_into().expect("8-byte chunk"));
            *lane = (*lane ^ w).wrapping_mul(K).rotate_left(29);
        }
    }
    let mut h = lanes
        .iter()
        .fold(data.len() as u64, |h, &l| (h ^ l).wrapping_mul(K));
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(K);
    }
    h
}
