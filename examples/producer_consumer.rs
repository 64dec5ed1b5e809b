//! The main job: a producer process streams large frozen buffers to consumer processes.
//!
//! ```text
//! cargo run --release --example producer_consumer [-- --frames N --size-mib M --rate FPS
//!     --consumers C --window-mib W --no-pool --consumer-delay-ms D]
//! ```
//!
//! The producer re-executes this binary as each consumer, then for every frame: takes a
//! writable region from a [`FramePool`] (created and faulted in ahead of time on a
//! background thread; `--no-pool` creates each one on the spot), writes the frame once, in
//! place, freezes it (sealed and mapped read-only: no copy) and publishes it as a field of a
//! typed message, with a checksum, to every consumer ([`Publisher`], one bounded channel per
//! consumer). Each consumer maps the buffer (the kernel has confirmed it can never change),
//! checks the checksum over every byte and acknowledges. Each consumer grants a window of
//! `--window-mib` (default 256 MiB) in flight, so a slow consumer holds the producer back
//! instead of piling up frames in shared memory.
//!
//! Printed at the end: throughput, the latency from "start filling the frame" to "consumer
//! verified it" (p50/p99/max), and the peak of shared memory in flight (what the producer
//! counted as sent and not yet taken, over all consumers). Exit status is non-zero on any
//! mismatch or error.

use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memfile::ipc::{self, Fd, FullPolicy, Publisher, Window};
use memfile::{FramePool, Frozen};
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
    /// Frames per second; 0 = as fast as possible.
    rate: f64,
    consumers: usize,
    pool: bool,
    /// The window each consumer grants, in bytes.
    window: u64,
    /// Test hook: each consumer spends this long on every frame (a slow consumer).
    consumer_delay: Duration,
    /// Test hook: announce a wrong checksum for this frame, to show that the consumer
    /// catches it and the run fails.
    corrupt_frame: Option<u64>,
}

fn parse_args() -> AnyResult<Options> {
    let mut opts = Options {
        frames: 64,
        size: 4 << 20,
        rate: 0.0,
        consumers: 1,
        pool: true,
        window: Window::DEFAULT_BYTES,
        consumer_delay: Duration::ZERO,
        corrupt_frame: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--frames" => opts.frames = value()?.parse()?,
            "--size-mib" => opts.size = value()?.parse::<usize>()? << 20,
            "--size-bytes" => opts.size = value()?.parse()?,
            "--rate" => opts.rate = value()?.parse()?,
            "--consumers" => opts.consumers = value()?.parse::<usize>()?.max(1),
            "--no-pool" => opts.pool = false,
            "--window-mib" => opts.window = value()?.parse::<u64>()? << 20,
            "--consumer-delay-ms" => {
                opts.consumer_delay = Duration::from_millis(value()?.parse()?);
            }
            "--corrupt-frame" => opts.corrupt_frame = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: producer_consumer [--frames N] [--size-mib M | --size-bytes B] \
                     [--rate FPS (0 = max)] [--consumers C] [--no-pool] [--window-mib W] \
                     [--consumer-delay-ms D] [--corrupt-frame I]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(opts)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn producer() -> AnyResult<ExitCode> {
    let opts = parse_args()?;
    let publisher = Publisher::<Job>::new(FullPolicy::Block);
    let mut children = Vec::new();
    let mut ack_threads = Vec::new();
    let senders = Arc::new(Mutex::new(Vec::new()));
    let started: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; opts.frames as usize]));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    for c in 0..opts.consumers {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(std::env::args().skip(1)).env(ROLE_ENV, "consumer");
        let (child, tx, rx) = ipc::spawn::<Job, Ack>(&mut cmd)?;
        senders.lock().unwrap().push(tx.clone());
        publisher.subscribe(tx);
        children.push(child);
        let frames = opts.frames;
        let (started, latencies) = (started.clone(), latencies.clone());
        // Acks are read on their own thread so that the producer never waits for a
        // consumer to finish one frame before it writes the next.
        ack_threads.push(std::thread::spawn(
            move || -> Result<(u64, u64, u64), ipc::Error> {
                let (mut ok, mut bad, mut bytes) = (0, 0, 0);
                for i in 0..frames {
                    let ack = rx.recv()?;
                    let at = Instant::now();
                    if let Some(Some(t)) = started.lock().unwrap().get(ack.index as usize) {
                        latencies.lock().unwrap().push(at - *t);
                    }
                    bytes += ack.bytes;
                    if c == 0 && ((i + 1) % 8 == 0 || i + 1 == frames) {
                        let secs = start.elapsed().as_secs_f64();
                        println!(
                            "  {:>5}/{frames} frames verified, {:>8.1} MiB, {:>6.2} GiB/s",
                            i + 1,
                            bytes as f64 / (1 << 20) as f64,
                            bytes as f64 / secs / (1u64 << 30) as f64
                        );
                    }
                    if ack.checksum_ok && ack.index == i {
                        ok += 1;
                    } else {
                        bad += 1;
                        eprintln!(
                            "frame {} failed verification (expected frame {i})",
                            ack.index
                        );
                    }
                }
                Ok((ok, bad, bytes))
            },
        ));
    }
    println!(
        "producer: pid {}, {} consumer(s), {} frames of {} KiB, rate {}, pool {}, window {} MiB",
        std::process::id(),
        opts.consumers,
        opts.frames,
        opts.size >> 10,
        if opts.rate > 0.0 {
            format!("{} fps", opts.rate)
        } else {
            "max".to_string()
        },
        if opts.pool { "on" } else { "off" },
        opts.window >> 20
    );

    let pool = if opts.pool {
        let pool = FramePool::new()?;
        pool.prepare(opts.size); // the frame size is known: start preparing now
        Some(pool)
    } else {
        None
    };
    let mut peak_in_flight = 0u64;
    let period = (opts.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / opts.rate));
    for index in 0..opts.frames {
        if let Some(period) = period {
            let due = start + period * index as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        started.lock().unwrap()[index as usize] = Some(Instant::now());
        let mut region = match &pool {
            Some(pool) => pool.take(opts.size)?,
            None => memfile::WritableRegion::new("frame", opts.size)?,
        };
        fill(&mut region, index);
        let mut checksum = checksum64(&region);
        let frame = region.freeze()?;
        if opts.corrupt_frame == Some(index) {
            checksum ^= 1;
        }
        publisher.publish(&Job::Frame {
            index,
            checksum,
            data: Fd::new(frame),
        })?;
        let in_flight: u64 = senders
            .lock()
            .unwrap()
            .iter()
            .map(|tx: &ipc::Sender<Job>| tx.in_flight().bytes)
            .sum();
        peak_in_flight = peak_in_flight.max(in_flight);
    }
    publisher.publish(&Job::Done)?;

    let (mut ok, mut bad, mut bytes) = (0, 0, 0);
    for t in ack_threads {
        let (o, b, n) = t.join().map_err(|_| "ack thread panicked")??;
        ok += o;
        bad += b;
        bytes += n;
    }
    let elapsed = start.elapsed();
    let mut all_ok = true;
    for mut child in children {
        all_ok &= child.wait()?.success();
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
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
    println!(
        "latency (fill start -> consumer verified): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    println!(
        "peak shared memory in flight: {:.1} MiB (window {} MiB per consumer)",
        peak_in_flight as f64 / (1 << 20) as f64,
        opts.window >> 20
    );
    if let Some(pool) = &pool {
        let s = pool.stats();
        println!(
            "pool: {} frames ready ahead, {} made inline",
            s.hits, s.misses
        );
    }
    if bad != 0 || ok != opts.frames * opts.consumers as u64 || !all_ok {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn consumer() -> AnyResult<ExitCode> {
    let opts = parse_args()?;
    let (tx, rx) = ipc::from_parent::<Ack, Job>()?;
    let rx = rx.with_window(Window::new(Window::DEFAULT_MESSAGES, opts.window));
    for job in rx.iter() {
        match job? {
            Job::Frame {
                index,
                checksum,
                data,
            } => {
                // `data` derefs to `&[u8]`: the kernel guarantees these bytes can not change.
                let ok = checksum64(&data) == checksum;
                if !opts.consumer_delay.is_zero() {
                    std::thread::sleep(opts.consumer_delay);
                }
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
