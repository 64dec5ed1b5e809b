//! Cancel safety of `AsyncReceiver::recv` across processes (feature `tokio`): a child (this
//! binary re-executed, blocking API) sends a stream of messages carrying sealed buffers,
//! some spilled, while the parent keeps dropping `recv` futures in `select!` against short
//! timers. Every message must arrive exactly once, in order, and no fd may leak.
//!
//! The two tests count this process's open fds, so they take turns (a lock), and this file
//! holds no other test.
#![cfg(feature = "tokio")]

use std::time::Duration;

use memfile_core::Frozen;
use memfile_ipc::tokio::duplex_from_blocking;
use memfile_ipc::{Error, Fd, from_parent, spawn};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

mod util_tokio;
use util_tokio::{ROLE, child_command};

const MESSAGES: u32 = 300;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

#[derive(Serialize, Deserialize)]
struct Numbered {
    number: u32,
    buffer: Fd<Frozen>,
    /// Large for every 50th message, so that those spill into a memfd.
    #[serde(with = "serde_bytes")]
    padding: Vec<u8>,
}

fn padding_len(number: u32) -> usize {
    if number % 50 == 0 { 400 << 10 } else { 16 }
}

#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child() {
    if std::env::var(ROLE).as_deref() != Ok("sender") {
        return;
    }
    let (tx, _rx) = from_parent::<Numbered, ()>().unwrap();
    for number in 0..MESSAGES {
        let buffer = Frozen::from_bytes("numbered", &number.to_le_bytes()).unwrap();
        tx.send(&Numbered {
            number,
            buffer: buffer.into(),
            padding: vec![number as u8; padding_len(number)],
        })
        .unwrap();
        // Bursts and pauses, so that the parent's timers fire both while it waits and
        // while messages are queued.
        if number % 5 == 4 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// This process's open memfds and sockets: what a message brings, and what a lost one
/// would leak. (Not every fd: the other test's runtime closes its epoll and eventfd fds
/// after it has given up the lock.)
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            let target = target.to_string_lossy();
            target.starts_with("/memfd:") || target.starts_with("socket:")
        })
        .count()
}

async fn receive_while_cancelling() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (mut child, tx, rx) = spawn::<(), Numbered>(&mut child_command("sender")).unwrap();
    let (tx, rx) = duplex_from_blocking(tx, rx).unwrap();
    let before = open_fds();

    let mut next = 0u32;
    let mut cancelled = 0u32;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_micros(seed % 1500);
        tokio::select! {
            r = rx.recv() => match r {
                Ok(msg) => {
                    assert_eq!(msg.number, next, "lost or repeated a message");
                    assert_eq!(&msg.buffer[..], &next.to_le_bytes());
                    assert_eq!(msg.padding.len(), padding_len(next));
                    next += 1;
                }
                Err(Error::Disconnected { .. }) => break,
                Err(e) => panic!("message {next}: {e}"),
            },
            () = tokio::time::sleep(wait) => cancelled += 1,
        }
    }
    assert_eq!(next, MESSAGES, "every message exactly once");
    assert!(
        cancelled > 0,
        "no recv future was ever dropped: the test proved nothing"
    );
    eprintln!("{MESSAGES} messages, {cancelled} recv futures dropped");
    let after = open_fds();
    assert_eq!(
        before, after,
        "fds leaked (or closed) by dropped recv futures"
    );
    drop((tx, rx));
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "child failed: {status}");
}

#[tokio::test(flavor = "current_thread")]
async fn cancelled_recv_loses_nothing_current_thread() {
    receive_while_cancelling().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_recv_loses_nothing_multi_thread() {
    receive_while_cancelling().await;
}
