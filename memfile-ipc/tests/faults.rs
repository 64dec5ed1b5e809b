//! Faults (issue 6): a peer SIGKILLed at random points, a sender that dies right after
//! sending, signals interrupting blocked calls, a full socket buffer.
//!
//! Child processes are this test binary re-executed with a role in `FAULTS_CHILD`. Every
//! test takes `FD_LOCK`, because they count this process's open fds and run in parallel.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use memfile_core::Frozen;
use memfile_ipc::{ChildProcess, Error, Fd, Listener, Receiver, Sender, channel, connect};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use serde::{Deserialize, Serialize};

mod util_syscall;
use util_syscall::{ACCEPT4, POLL, SENDMSG, gettid, wait_until_blocked_in};

static FD_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    FD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

const ROLE: &str = "FAULTS_CHILD";
/// No call of a test waits longer than this; a hang fails the test instead of blocking CI.
const PATIENCE: Duration = Duration::from_secs(20);

/// SplitMix64: a seeded, reproducible sequence (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Deterministic content of buffer `n`.
fn pattern(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize * 31 + i * 7) as u8).collect()
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Echo the number and text.
    Echo(u64, String),
    /// Send back a sealed buffer of this size, filled with `pattern(n, len)`.
    Buffer(u64, usize),
    /// Checksum these bytes (large ones spill into a memfd).
    Sum(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Checksum this buffer.
    SumFrozen(Fd<Frozen>),
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Echo(u64, String),
    Buffer(u64, Fd<Frozen>),
    Sum(u64),
}

/// The child side of every test: dispatches on the role. Ignored in normal runs.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "serve" => child_serve(),
        "send_and_die" => child_send_and_die(),
        other => panic!("unknown role {other}"),
    }
}

fn spawn_child<Tx, Rx>(role: &str) -> (ChildProcess, Sender<Tx>, Receiver<Rx>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child",
        "--ignored",
        "--test-threads=1",
        "--quiet",
    ])
    .env(ROLE, role)
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    memfile_ipc::spawn(&mut cmd).unwrap()
}

/// Answers requests until the parent goes away (or this process is killed).
fn child_serve() {
    let (tx, rx) = memfile_ipc::from_parent::<Reply, Request>().unwrap();
    for request in &rx {
        let reply = match request.unwrap() {
            Request::Echo(n, s) => Reply::Echo(n, s),
            Request::Buffer(n, len) => Reply::Buffer(
                n,
                Fd::new(Frozen::from_bytes("reply", &pattern(n, len)).unwrap()),
            ),
            Request::Sum(bytes) => Reply::Sum(checksum(&bytes)),
            Request::SumFrozen(f) => Reply::Sum(checksum(&f)),
        };
        if tx.send(&reply).is_err() {
            return;
        }
    }
}

/// One random conversation step; `Err` when the peer is gone.
fn step(
    rng: &mut Rng,
    n: u64,
    tx: &Sender<Request>,
    rx: &Receiver<Reply>,
) -> memfile_ipc::Result<()> {
    let kind = rng.below(4);
    let expect: u64;
    match kind {
        0 => {
            tx.send(&Request::Echo(n, format!("step {n}")))?;
            expect = n;
        }
        1 => {
            let len = rng.below(64 << 10) as usize;
            tx.send(&Request::Buffer(n, len))?;
            expect = len as u64;
        }
        2 => {
            // Sometimes inline, sometimes spilled (the inline limit is about 200 KiB).
            let bytes = pattern(n, rng.below(400 << 10) as usize);
            expect = checksum(&bytes);
            tx.send(&Request::Sum(bytes))?;
        }
        _ => {
            let bytes = pattern(n, 1 + rng.below(100 << 10) as usize);
            expect = checksum(&bytes);
            tx.send(&Request::SumFrozen(Fd::new(
                Frozen::from_bytes("req", &bytes).unwrap(),
            )))?;
        }
    }
    match rx.recv_timeout(PATIENCE)? {
        Reply::Echo(m, s) => assert_eq!((m, s), (expect, format!("step {n}"))),
        Reply::Buffer(m, f) => {
            assert_eq!((m, f.len() as u64), (n, expect));
            assert_eq!(&f[..], &pattern(n, f.len())[..]);
        }
        Reply::Sum(s) => assert_eq!(s, expect),
    }
    Ok(())
}

/// 100 runs: a child serving requests is SIGKILLed after a random delay while the parent
/// converses with it. The parent must see only good replies, then `Disconnected` (never its
/// 20 s timeout: a dead peer's socket reports the end at once), never hang, and end with
/// the fds it started with.
#[test]
fn peer_killed_at_random_points() {
    let _g = lock();
    let seed: u64 = std::env::var("MEMFILE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0006);
    let runs: u64 = std::env::var("MEMFILE_FAULT_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut rng = Rng(seed);
    let before = open_fds();
    let all_runs = Instant::now();
    let (mut disconnected, mut steps_total) = (0, 0u64);
    for run in 0..runs {
        // Per run: a run ends by the kill (≤ 30 ms) or, at worst, one 20 s receive timeout.
        let start = Instant::now();
        let (mut child, tx, rx) = spawn_child::<Request, Reply>("serve");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        // 0 to 30 ms: from before the child has started to deep in the conversation.
        let delay = Duration::from_micros(rng.below(30_000));
        let killer = thread::spawn(move || {
            thread::sleep(delay);
            // The child is not reaped before this thread is joined: the pid is still its.
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        });
        let mut n = 0u64;
        let outcome = loop {
            if let Err(e) = step(&mut rng, n, &tx, &rx) {
                break e;
            }
            n += 1;
            if start.elapsed() > Duration::from_secs(60) {
                panic!("seed {seed:#x} run {run}: conversation never ended");
            }
        };
        killer.join().unwrap();
        match outcome {
            Error::Disconnected { .. } => disconnected += 1,
            // The kill must be seen at once, not by waiting out the receive timeout.
            Error::Timeout { .. } => panic!(
                "seed {seed:#x} run {run} after {n} steps: the {PATIENCE:?} timeout ran out \
                 instead of Disconnected"
            ),
            e => panic!("seed {seed:#x} run {run} after {n} steps: unexpected {e:?}"),
        }
        // Once disconnected, it stays so.
        assert!(
            matches!(rx.try_recv(), Err(Error::Disconnected { .. })),
            "seed {seed:#x} run {run}"
        );
        assert!(matches!(
            tx.send(&Request::Echo(0, String::new())),
            Err(Error::Disconnected { .. })
        ));
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "run {run}: the child should have been killed: {status}"
        );
        drop((tx, rx, child));
        assert_eq!(open_fds(), before, "seed {seed:#x} run {run}: fd leak");
        steps_total += n;
    }
    println!(
        "{runs} runs (seed {seed:#x}) in {:?}: {disconnected} Disconnected, {steps_total} good \
         steps",
        all_runs.elapsed()
    );
}

const DIE_MESSAGES: u64 = 8;

#[derive(Debug, Serialize, Deserialize)]
struct Parcel {
    n: u64,
    #[serde(with = "serde_bytes")]
    inline: Vec<u8>,
    buffers: Vec<Fd<Frozen>>,
}

fn parcel_sizes(n: u64) -> (usize, Vec<usize>) {
    // Message 3 spills (its bytes go into a memfd); the others carry 0-3 sealed buffers.
    let inline = if n == 3 { 1 << 20 } else { 100 * n as usize };
    let buffers = (0..n % 4)
        .map(|i| (1 + i as usize) * 5000 + n as usize)
        .collect();
    (inline, buffers)
}

/// Sends `DIE_MESSAGES` parcels, then kills itself before anything could be read.
fn child_send_and_die() {
    let (tx, _rx) = memfile_ipc::from_parent::<Parcel, ()>().unwrap();
    for n in 0..DIE_MESSAGES {
        let (inline, sizes) = parcel_sizes(n);
        let buffers = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                Fd::new(Frozen::from_bytes("parcel", &pattern(n * 10 + i as u64, len)).unwrap())
            })
            .collect();
        tx.send(&Parcel {
            n,
            inline: pattern(n, inline),
            buffers,
        })
        .unwrap();
    }
    // SAFETY: kill(2) on our own pid; no memory is involved.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// The sender is dead (and reaped) before the receiver reads anything: every message, its
/// spilled payload and its sealed buffers are still there, intact.
#[test]
fn sender_dies_right_after_sending() {
    let _g = lock();
    let before = open_fds();
    let (mut child, tx, rx) = spawn_child::<(), Parcel>("send_and_die");
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    for n in 0..DIE_MESSAGES {
        let p = rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("message {n}: {e}"));
        let (inline, sizes) = parcel_sizes(n);
        assert_eq!(p.n, n);
        assert_eq!(p.inline, pattern(n, inline), "message {n}");
        assert_eq!(p.buffers.len(), sizes.len());
        for (i, (b, &len)) in p.buffers.iter().zip(&sizes).enumerate() {
            assert_eq!(
                &b[..],
                &pattern(n * 10 + i as u64, len)[..],
                "message {n} buffer {i}"
            );
        }
    }
    assert!(matches!(
        rx.recv_timeout(PATIENCE),
        Err(Error::Disconnected { .. })
    ));
    drop((tx, rx, child));
    // Every fd this test received is closed by the drops above. Another test's thread of
    // this binary may still be finishing (its thread-locals are dropped after it released
    // the lock), so give the count a moment to settle before calling it a leak, and name
    // every open fd if it does not.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while open_fds() != before && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let after = open_fds();
    if after != before {
        let links: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| {
                format!(
                    "{:?} -> {:?}",
                    e.file_name(),
                    std::fs::read_link(e.path()).ok()
                )
            })
            .collect();
        panic!("fds {before} -> {after}: {links:#?}");
    }
}

// ---------------------------------------------------------------------------------------
// Signals.

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Installs a SIGUSR1 handler *without* `SA_RESTART`, so blocked syscalls fail with EINTR.
fn install_handler() {
    let action = SigAction::new(
        SigHandler::Handler(count_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only increments an atomic, which is async-signal-safe; replacing
    // SIGUSR1's disposition affects nothing else in this test binary.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.unwrap();
}

/// Sends SIGUSR1 to `thread` every 500 µs until `stop` is set.
fn pester(thread: libc::pthread_t, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `thread` is alive until `stop` is set (its owner sets it before it
            // exits); pthread_kill with a handled signal has no other effect.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
            sent += 1;
            thread::sleep(Duration::from_micros(500));
        }
        sent
    })
}

fn this_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

#[test]
fn interrupted_recv_and_timeouts_are_retried() {
    let _g = lock();
    install_handler();
    let (tx, rx) = channel::<(u64, Fd<Frozen>)>().unwrap();
    let (tid_tx, tid_rx) = mpsc::channel();
    let (timed_out_tx, timed_out_rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        tid_tx.send(this_thread()).unwrap();
        // A timeout keeps its length when signals interrupt the wait.
        let t = Instant::now();
        let r = rx.recv_timeout(Duration::from_millis(300));
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        // Nothing is sent before this: however late this thread started, the timeout
        // above cannot have met a message.
        timed_out_tx.send(()).unwrap();
        // Blocking receives, each interrupted many times while waiting.
        let mut got = Vec::new();
        for _ in 0..20 {
            let (n, f) = rx.recv().unwrap();
            assert_eq!(&f[..], &pattern(n, 1000)[..]);
            got.push(n);
        }
        got
    });
    let stop = Arc::new(AtomicBool::new(false));
    let before = SIGNALS.load(Ordering::Relaxed);
    let pest = pester(tid_rx.recv().unwrap(), stop.clone());
    timed_out_rx.recv().unwrap();
    for n in 0..20u64 {
        tx.send(&(
            n,
            Fd::new(Frozen::from_bytes("sig", &pattern(n, 1000)).unwrap()),
        ))
        .unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let got = receiver.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let sent = pest.join().unwrap();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    let handled = SIGNALS.load(Ordering::Relaxed) - before;
    assert!(handled > 10, "only {handled} signals handled ({sent} sent)");
    println!("recv: {handled} signals handled, nothing lost");
}

#[test]
fn interrupted_blocking_send_is_retried() {
    let _g = lock();
    install_handler();
    let (tx, rx) = channel::<(u64, Vec<u8>)>().unwrap();
    let (tid_tx, tid_rx) = mpsc::channel();
    const N: u64 = 300;
    let sender = thread::spawn(move || {
        tid_tx.send(this_thread()).unwrap();
        // The queue fills after a dozen packets: most of these sends block, interrupted.
        for n in 0..N {
            tx.send(&(n, pattern(n, 2000))).unwrap();
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let before = SIGNALS.load(Ordering::Relaxed);
    let pest = pester(tid_rx.recv().unwrap(), stop.clone());
    for n in 0..N {
        if n % 10 == 0 {
            thread::sleep(Duration::from_millis(3));
        }
        let (m, bytes) = rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!((m, bytes), (n, pattern(n, 2000)));
    }
    sender.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    pest.join().unwrap();
    assert!(matches!(
        rx.recv_timeout(PATIENCE),
        Err(Error::Disconnected { .. })
    ));
    let handled = SIGNALS.load(Ordering::Relaxed) - before;
    assert!(handled > 0, "no signal handled");
    println!("send: {handled} signals handled, {N} messages in order");
}

#[test]
fn interrupted_accept_is_retried() {
    let _g = lock();
    install_handler();
    let before = SIGNALS.load(Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("memfile-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("accept.sock");
    let listener = Listener::bind(&path).unwrap();
    let (tid_tx, tid_rx) = mpsc::channel();
    let acceptor = thread::spawn(move || {
        tid_tx.send((this_thread(), gettid())).unwrap();
        let (_tx, rx) = listener.accept::<(), u32>().unwrap();
        rx.recv().unwrap()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (acceptor_thread, tid) = tid_rx.recv().unwrap();
    // Connect only once signals have hit the acceptor while it waited for a connection.
    wait_until_blocked_in(tid, &[ACCEPT4, POLL].concat());
    let pest = pester(acceptor_thread, stop.clone());
    let deadline = Instant::now() + PATIENCE;
    while SIGNALS.load(Ordering::Relaxed) - before < 10 {
        assert!(
            Instant::now() < deadline,
            "no signal reached the blocked accept"
        );
        thread::sleep(Duration::from_millis(1));
    }
    wait_until_blocked_in(tid, &[ACCEPT4, POLL].concat());
    let (tx, _rx) = connect::<u32, ()>(&path).unwrap();
    tx.send(&7).unwrap();
    assert_eq!(acceptor.join().unwrap(), 7);
    stop.store(true, Ordering::Relaxed);
    pest.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Backpressure.

#[derive(Debug, Serialize, Deserialize)]
struct Numbered {
    n: u64,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    buffer: Option<Fd<Frozen>>,
}

fn numbered(n: u64) -> Numbered {
    // Every third message spills, every fourth carries a sealed buffer.
    let len = if n % 3 == 2 { 300 << 10 } else { 500 };
    let buffer =
        (n % 4 == 3).then(|| Fd::new(Frozen::from_bytes("bp", &pattern(n, 4096)).unwrap()));
    Numbered {
        n,
        bytes: pattern(n, len),
        buffer,
    }
}

fn check_numbered(m: &Numbered, n: u64) {
    assert_eq!(m.n, n);
    assert_eq!(m.bytes, numbered(n).bytes, "message {n}");
    assert_eq!(
        m.buffer.as_ref().map(|b| b.to_vec()),
        (n % 4 == 3).then(|| pattern(n, 4096))
    );
}

/// A full socket buffer: `try_send` reports `WouldBlock` (and keeps no fd), `send` waits
/// until the receiver makes room, and every message arrives once, in order.
#[test]
fn full_buffer_blocks_send_and_try_send_says_so() {
    let _g = lock();
    let before = open_fds();
    let (tx, rx) = channel::<Numbered>().unwrap();
    let mut queued = 0u64;
    loop {
        match tx.try_send(&numbered(queued)) {
            Ok(()) => queued += 1,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("try_send: {e:?}"),
        }
        assert!(queued < 100_000, "the socket never filled up");
    }
    assert!(queued > 0);
    // Still full: another try fails the same way, and leaves no fd behind (the spill memfd
    // and the message's own buffer are closed when the message is dropped).
    let fds_full = open_fds();
    for _ in 0..5 {
        assert!(matches!(
            tx.try_send(&numbered(queued)),
            Err(Error::WouldBlock)
        ));
    }
    assert_eq!(open_fds(), fds_full);
    // A blocking send waits.
    let done = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = mpsc::channel();
    let blocked = {
        let (tx, done) = (tx.clone(), done.clone());
        thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            tx.send(&numbered(queued)).unwrap();
            done.store(true, Ordering::SeqCst);
            tx.send(&numbered(queued + 1)).unwrap();
        })
    };
    // The send sleeps in sendmsg (it is not merely late to start).
    wait_until_blocked_in(tid_rx.recv().unwrap(), SENDMSG);
    assert!(
        !done.load(Ordering::SeqCst),
        "send did not wait for room in a full socket"
    );
    // Make room: the blocked send goes through. (The kernel wakes a writer blocked on a
    // Unix socket only once the bytes in flight drop to a quarter of SO_SNDBUF, so it may
    // take many receives.)
    let mut woke_after = None;
    for n in 0..queued + 2 {
        check_numbered(&rx.recv_timeout(PATIENCE).unwrap(), n);
        if woke_after.is_none() && done.load(Ordering::SeqCst) {
            woke_after = Some(n + 1);
        }
    }
    blocked.join().unwrap();
    drop(tx);
    assert!(matches!(
        rx.recv_timeout(PATIENCE),
        Err(Error::Disconnected { .. })
    ));
    drop(rx);
    assert_eq!(open_fds(), before);
    println!(
        "{queued} messages filled the socket; the blocked send resumed after about {woke_after:?} \
         receives; all {} arrived in order",
        queued + 2
    );
}

/// Sanity of the helpers above: a stream of random steps without faults succeeds.
#[test]
fn conversation_without_faults() {
    let _g = lock();
    let (mut child, tx, rx) = spawn_child::<Request, Reply>("serve");
    let mut rng = Rng(1);
    for n in 0..30 {
        step(&mut rng, n, &tx, &rx).unwrap();
    }
    drop((tx, rx));
    assert!(child.wait().unwrap().success());
}
