//! Load (issue 6): four producer processes send a mix of inline, spilled and
//! buffer-carrying messages to one consumer through a `Listener`. Every message arrives
//! exactly once, in order per producer, with matching checksums; afterwards the consumer's
//! open-fd count and resident memory are back where they started.
//!
//! `MEMFILE_LOAD_MESSAGES` sets the messages per producer: by default the 100 000
//! (about 11 s here with the workspace's test profile, which optimises the library crates);
//! set it higher (e.g. 1 000 000) for a soak.

use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use memfile_core::Frozen;
use memfile_ipc::{Error, Fd, Listener, connect};
use serde::{Deserialize, Serialize};

static FD_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    FD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident memory of this process in bytes (`VmRSS` in /proc/self/status).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

const ROLE: &str = "LOAD_CHILD";
const PRODUCERS: u32 = 4;
const DEFAULT_MESSAGES: u64 = 100_000;

fn messages() -> u64 {
    std::env::var("MEMFILE_LOAD_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_MESSAGES)
}

#[derive(Debug, Serialize, Deserialize)]
struct Load {
    producer: u32,
    seq: u64,
    /// FNV-1a over `bytes` and then the buffer's bytes.
    checksum: u64,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    buffer: Option<Fd<Frozen>>,
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// What message `seq` of `producer` is: (inline bytes, buffer bytes). One in 101 spills
/// (300 KiB, above the ~200 KiB inline limit), one in 7 carries a sealed buffer.
fn shape(producer: u32, seq: u64) -> (usize, Option<usize>) {
    let x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ producer as u64;
    let inline = if seq % 101 == 100 {
        300 << 10
    } else {
        8 + (x % 2000) as usize
    };
    let buffer = (seq % 7 == 3).then(|| 1 + (x >> 20) as usize % (64 << 10));
    (inline, buffer)
}

fn fill(len: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut s = seed | 1;
    for _ in 0..len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.push(s as u8);
    }
    v
}

/// The producer processes' entry point. Ignored in normal runs.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    assert_eq!(role, "producer");
    let path = std::env::var("LOAD_PATH").unwrap();
    let producer: u32 = std::env::var("LOAD_ID").unwrap().parse().unwrap();
    let n: u64 = std::env::var("LOAD_N").unwrap().parse().unwrap();
    let (tx, _rx) = connect::<Load, ()>(&path).unwrap();
    for seq in 0..n {
        let (inline, buffer) = shape(producer, seq);
        let bytes = fill(inline, seq * 8 + producer as u64);
        let mut checksum = fnv(FNV_START, &bytes);
        let buffer = buffer.map(|len| {
            let b = fill(len, !seq);
            checksum = fnv(checksum, &b);
            Fd::new(Frozen::from_bytes("load", &b).unwrap())
        });
        tx.send(&Load {
            producer,
            seq,
            checksum,
            bytes,
            buffer,
        })
        .unwrap();
    }
}

/// Reads one producer's stream to its end; returns (producer, messages, spilled, buffers).
fn consume(rx: memfile_ipc::Receiver<Load>) -> (u32, u64, u64, u64) {
    let mut producer = None;
    let (mut next, mut spilled, mut buffers) = (0u64, 0u64, 0u64);
    loop {
        let m = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(m) => m,
            Err(Error::Disconnected { .. }) => break,
            Err(e) => panic!("producer {producer:?} after {next} messages: {e}"),
        };
        let p = *producer.get_or_insert(m.producer);
        assert_eq!(m.producer, p, "messages of two producers on one connection");
        assert_eq!(
            m.seq, next,
            "producer {p}: out of order, lost or duplicated"
        );
        let mut sum = fnv(FNV_START, &m.bytes);
        if let Some(b) = &m.buffer {
            sum = fnv(sum, b);
            buffers += 1;
        }
        assert_eq!(sum, m.checksum, "producer {p} message {next}: checksum");
        let (inline, buffer) = shape(p, next);
        assert_eq!(
            (m.bytes.len(), m.buffer.as_ref().map(|b| b.len())),
            (inline, buffer)
        );
        spilled += u64::from(inline > 200 << 10);
        next += 1;
    }
    (producer.unwrap_or(u32::MAX), next, spilled, buffers)
}

#[test]
fn four_producers_one_consumer() {
    let _g = lock();
    let n = messages();
    let dir = std::env::temp_dir().join(format!("memfile-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("load.sock");
    // Measured cold: what stays allocated for the life of the process once it is first used
    // (the allocator's arenas, thread-locals) counts against the tolerance below.
    let fds_before = open_fds();
    let rss_before = rss();
    let start = Instant::now();
    let listener = Listener::bind(&path).unwrap();
    let children: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "child",
                    "--ignored",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(ROLE, "producer")
                .env("LOAD_PATH", &path)
                .env("LOAD_ID", id.to_string())
                .env("LOAD_N", n.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let consumers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (_tx, rx) = listener
                .accept_timeout::<(), Load>(Duration::from_secs(60))
                .unwrap();
            thread::spawn(move || consume(rx))
        })
        .collect();
    let mut seen = Vec::new();
    let (mut spilled, mut buffers) = (0, 0);
    for c in consumers {
        let (p, count, s, b) = c.join().unwrap();
        assert_eq!(count, n, "producer {p}: {count} of {n} messages");
        seen.push(p);
        spilled += s;
        buffers += b;
    }
    seen.sort();
    assert_eq!(seen, (0..PRODUCERS).collect::<Vec<_>>());
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    drop(listener);
    let elapsed = start.elapsed();
    std::fs::remove_dir_all(&dir).unwrap();
    let (fds_after, rss_after) = (open_fds(), rss());
    println!(
        "{PRODUCERS} x {n} messages ({spilled} spilled, {buffers} with a sealed buffer) in \
         {elapsed:?}: {:.0} messages/s; fds {fds_before} -> {fds_after}; VmRSS {} -> {} KiB",
        (PRODUCERS as u64 * n) as f64 / elapsed.as_secs_f64(),
        rss_before >> 10,
        rss_after >> 10
    );
    assert_eq!(fds_after, fds_before, "the consumer leaked fds");
    // Whatever the consumer mapped or allocated per message is gone; what may remain is the
    // allocator's cache of freed memory (per-thread arenas; about 3 MiB seen here).
    let tolerance = 16 << 20;
    assert!(
        rss_after <= rss_before + tolerance,
        "VmRSS grew from {} to {} KiB",
        rss_before >> 10,
        rss_after >> 10
    );
}
