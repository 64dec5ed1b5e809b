//! Typed channels between real processes: this test binary re-executes itself as the child
//! (`--exact child`, with the role in `MEMFILE_IPC_TEST_CHILD`) through `memfile_ipc::spawn`.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use memfile_core::Frozen;
use memfile_ipc::{ChildProcess, Error, Fd, Receiver, Sender, from_parent, spawn};
use serde::{Deserialize, Serialize};

const ROLE: &str = "MEMFILE_IPC_TEST_CHILD";
const TIMEOUT: Duration = Duration::from_secs(60);

fn spawn_child<Tx, Rx>(role: &str) -> (ChildProcess, Sender<Tx>, Receiver<Rx>) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    // The child's harness chatter goes nowhere; its panics still reach stderr.
    cmd.args([
        "--exact",
        "child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .stdout(std::process::Stdio::null());
    spawn(&mut cmd).unwrap()
}

fn expect_success(mut child: ChildProcess) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// The child side of every test: dispatches on the role. Ignored in normal runs; the tests
/// run it with `--ignored` in the child process.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "echo" => child_echo(),
        "buffers" => child_buffers(),
        "big" => child_big(),
        "big_plain" => child_big_plain(),
        "threads" => child_threads(),
        "die" => child_die(),
        "frozen_then_exit" => child_frozen_then_exit(),
        "hostile" => child_hostile(),
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Request {
    Add(i64, i64),
    Concat(Vec<String>),
    Quit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Reply {
    Sum(i64),
    Text(String),
}

fn child_echo() {
    let (tx, rx) = from_parent::<Reply, Request>().unwrap();
    for req in &rx {
        match req.unwrap() {
            Request::Add(a, b) => tx.send(&Reply::Sum(a + b)).unwrap(),
            Request::Concat(v) => tx.send(&Reply::Text(v.concat())).unwrap(),
            Request::Quit => return,
        }
    }
}

#[test]
fn typed_round_trips() {
    let (child, tx, rx) = spawn_child::<Request, Reply>("echo");
    // A socketpair's SO_PEERCRED names its creator (this process), whoever holds the end.
    let creds = rx.peer_credentials().unwrap();
    assert_eq!(creds.uid, nix::unistd::geteuid().as_raw());
    for i in 0..100 {
        tx.send(&Request::Add(i, -2 * i)).unwrap();
        assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), Reply::Sum(-i));
    }
    tx.send(&Request::Concat(vec![
        "a".into(),
        "β".into(),
        "c".repeat(500_000),
    ]))
    .unwrap();
    assert_eq!(
        rx.recv_timeout(TIMEOUT).unwrap(),
        Reply::Text(format!("aβ{}", "c".repeat(500_000)))
    );
    tx.send(&Request::Quit).unwrap();
    assert!(matches!(
        rx.recv_timeout(TIMEOUT),
        Err(Error::Disconnected { .. })
    ));
    expect_success(child);
}

// ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Job {
    id: u32,
    #[serde(with = "memfile_ipc::fd")]
    header: Frozen,
    frames: Vec<Fd<Frozen>>,
    reply: Sender<JobDone>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct JobDone {
    id: u32,
    sums: Vec<u64>,
}

fn sum(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

fn child_buffers() {
    let (_tx, rx) = from_parent::<(), Job>().unwrap();
    for job in &rx {
        let job = job.unwrap();
        let mut sums = vec![sum(&job.header)];
        sums.extend(job.frames.iter().map(|f| sum(f)));
        job.reply.send(&JobDone { id: job.id, sums }).unwrap();
    }
}

#[test]
fn several_frozen_buffers_and_a_reply_channel() {
    let (child, tx, rx) = spawn_child::<Job, ()>("buffers");
    let (reply_tx, reply_rx) = memfile_ipc::channel::<JobDone>().unwrap();
    for id in 0..5u32 {
        let header = Frozen::from_bytes("header", &[id as u8; 100]).unwrap();
        let frames: Vec<Fd<Frozen>> = (1..=4u8)
            .map(|k| Fd::new(Frozen::from_bytes("frame", &vec![k; 1 << 16]).unwrap()))
            .collect();
        let want: Vec<u64> = std::iter::once(100 * u64::from(id))
            .chain((1..=4u64).map(|k| k << 16))
            .collect();
        tx.send(&Job {
            id,
            header,
            frames,
            reply: reply_tx.clone(),
        })
        .unwrap();
        assert_eq!(
            reply_rx.recv_timeout(TIMEOUT).unwrap(),
            JobDone { id, sums: want }
        );
    }
    // Both halves share the socket: the child sees the end once both are gone.
    drop((tx, rx));
    expect_success(child);
}

// ---------------------------------------------------------------------------------------

const GIB: usize = 1 << 30;

#[derive(Serialize, Deserialize)]
struct Big {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The same bytes as a plain `Vec<u8>`: serde hands it over as a sequence of `u8`, one
/// element at a time (same wire bytes, a different and slower code path).
#[derive(Serialize, Deserialize)]
struct BigPlain {
    data: Vec<u8>,
}

/// Positions with distinct values (the rest is 0xA5).
fn marks() -> impl Iterator<Item = (usize, u8)> {
    (0..64).map(|i| (i * (GIB / 64) + i * 4099 % 4096, i as u8))
}

/// The 1 GiB test buffer: one memset plus 64 marks, so that making it costs next to nothing.
fn big_buffer() -> Vec<u8> {
    let mut data = vec![0xA5u8; GIB];
    for (i, v) in marks() {
        data[i] = v;
    }
    data
}

/// A position-dependent checksum of every byte (Fletcher-style over little-endian `u64`
/// words, the tail byte by byte): a byte changed, lost or moved anywhere changes it.
fn checksum(bytes: &[u8]) -> u64 {
    let (mut a, mut b) = (0u64, 0u64);
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        a = a.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        b = b.wrapping_add(a);
    }
    for &t in tail {
        a = a.wrapping_add(u64::from(t));
        b = b.wrapping_add(a);
    }
    a ^ b.rotate_left(32) ^ bytes.len() as u64
}

/// Replies with the length and checksum of the whole buffer it received.
fn child_big() {
    let (tx, rx) = from_parent::<(u64, u64), Big>().unwrap();
    let big = rx.recv_timeout(TIMEOUT).unwrap();
    tx.send(&(big.data.len() as u64, checksum(&big.data)))
        .unwrap();
}

fn child_big_plain() {
    let (tx, rx) = from_parent::<(u64, u64), BigPlain>().unwrap();
    let big = rx.recv_timeout(TIMEOUT).unwrap();
    tx.send(&(big.data.len() as u64, checksum(&big.data)))
        .unwrap();
}

/// A 1 GiB `Vec<u8>` goes through the spill path (the payload is a sealed memfd), and the
/// child checks every byte of it (a checksum of the whole buffer). Making the buffer is one
/// memset, so the test's time is the codec's and the kernel's: a few seconds in debug.
#[test]
fn one_gib_message_spills() {
    let (child, tx, rx) = spawn_child::<Big, (u64, u64)>("big");
    let data = big_buffer();
    let expected = checksum(&data);
    let start = Instant::now();
    tx.send(&Big { data }).unwrap();
    let (len, sum) = rx.recv_timeout(TIMEOUT).unwrap();
    eprintln!("1 GiB message sent and checked in {:?}", start.elapsed());
    assert_eq!(len, GIB as u64);
    assert_eq!(sum, expected, "child saw different bytes");
    expect_success(child);
}

/// The same 1 GiB as a plain `Vec<u8>` (no `serde_bytes`): encoded and decoded one element
/// at a time, then checked whole by the child.
#[test]
fn one_gib_plain_vec_message_spills() {
    let (child, tx, rx) = spawn_child::<BigPlain, (u64, u64)>("big_plain");
    let data = big_buffer();
    let expected = checksum(&data);
    let start = Instant::now();
    tx.send(&BigPlain { data }).unwrap();
    let (len, sum) = rx.recv_timeout(TIMEOUT).unwrap();
    eprintln!(
        "1 GiB plain Vec message sent and checked in {:?}",
        start.elapsed()
    );
    assert_eq!(len, GIB as u64);
    assert_eq!(sum, expected, "child saw different bytes");
    expect_success(child);
}

// ---------------------------------------------------------------------------------------

const THREADS: u32 = 6;
const EACH: u32 = 300;

fn child_threads() {
    let (tx, rx) = from_parent::<Vec<u32>, (u32, u32, String)>().unwrap();
    let mut next = vec![0u32; THREADS as usize];
    for msg in &rx {
        let (t, i, text) = msg.unwrap();
        assert_eq!(next[t as usize], i, "order within one sending thread");
        assert_eq!(text, format!("{t}:{i}").repeat((i % 7) as usize * 1000));
        next[t as usize] += 1;
        if next.iter().all(|&n| n == EACH) {
            break;
        }
    }
    tx.send(&next).unwrap();
}

#[test]
fn many_threads_send_to_a_child() {
    let (child, tx, rx) = spawn_child::<(u32, u32, String), Vec<u32>>("threads");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..EACH {
                    let text = format!("{t}:{i}").repeat((i % 7) as usize * 1000);
                    tx.send(&(t, i, text)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        rx.recv_timeout(TIMEOUT).unwrap(),
        vec![EACH; THREADS as usize]
    );
    expect_success(child);
}

// ---------------------------------------------------------------------------------------

fn child_die() {
    let (tx, rx) = from_parent::<u32, u32>().unwrap();
    let n = rx.recv().unwrap();
    tx.send(&(n + 1)).unwrap();
    // Dies mid-conversation: no orderly goodbye.
    std::process::abort();
}

#[test]
fn peer_dying_mid_conversation_is_disconnected() {
    let (mut child, tx, rx) = spawn_child::<u32, u32>("die");
    tx.send(&41).unwrap();
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), 42);
    let start = Instant::now();
    let r = rx.recv_timeout(TIMEOUT);
    assert!(matches!(r, Err(Error::Disconnected { .. })), "{r:?}");
    assert!(start.elapsed() < TIMEOUT);
    assert!(matches!(tx.send(&1), Err(Error::Disconnected { .. })));
    assert!(!child.wait().unwrap().success());
}

// ---------------------------------------------------------------------------------------

fn child_frozen_then_exit() {
    let (tx, _rx) = from_parent::<Fd<Frozen>, ()>().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    tx.send(&Fd::new(Frozen::from_bytes("from-child", &data).unwrap()))
        .unwrap();
}

#[test]
fn frozen_outlives_the_process_that_made_it() {
    let (child, _tx, rx) = spawn_child::<(), Fd<Frozen>>("frozen_then_exit");
    let frozen = rx.recv_timeout(TIMEOUT).unwrap().into_inner();
    expect_success(child);
    assert!(matches!(
        rx.recv_timeout(TIMEOUT),
        Err(Error::Disconnected { .. })
    ));
    assert_eq!(frozen.len(), 3_000_000);
    assert!(
        frozen
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 253) as u8)
    );
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct Two {
    a: Fd<Frozen>,
    b: Fd<Frozen>,
}

/// Receives `rounds` hostile packets and one good one after each, then reports: the error
/// names, and the open fd counts before and after (in this single-test process nothing else
/// opens fds meanwhile).
fn child_hostile() {
    let (tx, rx) = from_parent::<(Vec<String>, usize, usize), Two>().unwrap();
    let count = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = count();
    let mut names = Vec::new();
    loop {
        match rx.recv_timeout(TIMEOUT) {
            Ok(two) => {
                if two.a.is_empty() {
                    break;
                }
                assert_eq!((&two.a[..], &two.b[..]), (&b"a"[..], &b"b"[..]));
            }
            Err(e) => names.push(
                format!("{e:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap()
                    .to_string(),
            ),
        }
    }
    let after = count();
    tx.send(&(names, before, after)).unwrap();
}

#[test]
fn hostile_packets_across_processes_leak_nothing() {
    let (child, tx, rx) = spawn_child::<Two, (Vec<String>, usize, usize)>("hostile");
    let raw = tx.raw().clone();
    let header = |flags: u16, fds: u32, len: u64| {
        let mut h = b"MFIP\x01\x00".to_vec();
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&fds.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
        h
    };
    let with = |payload: &[u8], fds: u32| {
        let mut p = header(0, fds, payload.len() as u64);
        p.extend_from_slice(payload);
        p
    };
    let good = || Two {
        a: Fd::new(Frozen::from_bytes("a", b"a").unwrap()),
        b: Fd::new(Frozen::from_bytes("b", b"b").unwrap()),
    };
    let f = || Frozen::from_bytes("f", b"f").unwrap();
    let unsealed = memfile_core::MemFile::create_sealable("unsealed").unwrap();
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let bad: Vec<(Vec<u8>, Vec<std::os::fd::OwnedFd>)> = vec![
        (
            with(&[0, 9], 2),
            vec![f().try_clone_fd().unwrap(), f().try_clone_fd().unwrap()],
        ),
        (
            with(&[1, 1], 2),
            vec![f().try_clone_fd().unwrap(), f().try_clone_fd().unwrap()],
        ),
        (
            with(&[0, 1], 2),
            vec![
                f().try_clone_fd().unwrap(),
                unsealed.as_fd().try_clone_to_owned().unwrap(),
            ],
        ),
        (
            with(&[0, 1], 2),
            vec![f().try_clone_fd().unwrap(), pipe_r.try_clone().unwrap()],
        ),
        (with(&[0, 1], 3), vec![f().try_clone_fd().unwrap()]),
        (
            header(1, 1, 5),
            vec![unsealed.as_fd().try_clone_to_owned().unwrap()],
        ),
        (b"garbage".to_vec(), vec![f().try_clone_fd().unwrap()]),
    ];
    for (packet, fds) in &bad {
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        raw.send(&[IoSlice::new(packet)], &borrowed).unwrap();
        tx.send(&good()).unwrap();
    }
    drop(bad);
    // An empty `a` ends the child's loop.
    tx.send(&Two {
        a: Fd::new(Frozen::from_bytes("end", b"").unwrap()),
        b: good().b,
    })
    .unwrap();
    let (names, before, after) = rx.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(
        names,
        [
            "FdIndexOutOfRange",
            "FdIndexReused",
            "BadBuffer",
            "BadBuffer",
            "Protocol",
            "BadBuffer",
            "Protocol"
        ]
    );
    assert_eq!(before, after, "the child's fd count changed");
    expect_success(child);
}
