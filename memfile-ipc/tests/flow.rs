//! Bounded channels: the window a receiver grants, in blocking, timeout, try and async
//! forms; credit rules across threads, duplex connections and processes; hostile peers.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use memfile_core::Frozen;
use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{ChildProcess, Error, Fd, Receiver, Sender, Window, channel, from_parent, spawn};

mod util_wire;
use util_wire::control;

const ROLE: &str = "MEMFILE_IPC_FLOW_CHILD";
const LONG: Duration = Duration::from_secs(60);

fn small_window(rx: Receiver<u32>, messages: u32) -> Receiver<u32> {
    rx.with_window(Window::new(messages, 1 << 30))
}

#[test]
fn try_send_reports_full_then_recv_gives_credit() {
    let (tx, rx) = channel::<u32>().unwrap();
    let rx = small_window(rx, 4);
    for i in 0..4 {
        tx.try_send(&i).unwrap();
    }
    assert!(matches!(tx.try_send(&99), Err(Error::Full)));
    assert_eq!(tx.in_flight().messages, 4);
    // The sender asked for a credit (a probe) when half the window was in flight; the
    // receiver answers it once the application has taken the messages before it.
    for i in 0..4 {
        assert_eq!(rx.recv().unwrap(), i);
    }
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
    tx.try_send(&4).unwrap();
    // Every refusal sent nothing, and no message was lost or duplicated.
    let mut next = 5;
    let mut got = Vec::new();
    while next < 40 {
        match tx.try_send(&next) {
            Ok(()) => next += 1,
            Err(Error::Full) => got.push(rx.recv().unwrap()),
            Err(e) => panic!("{e}"),
        }
        assert!(tx.in_flight().messages <= 4);
    }
    while got.len() < 36 {
        got.push(rx.recv().unwrap());
    }
    assert_eq!(got, (4..40).collect::<Vec<_>>());
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
}

#[test]
fn send_timeout_times_out_on_a_full_window_and_sends_nothing() {
    let (tx, rx) = channel::<u32>().unwrap();
    let rx = small_window(rx, 2);
    tx.send(&1).unwrap();
    tx.send(&2).unwrap();
    let start = Instant::now();
    assert!(matches!(
        tx.send_timeout(&3, Duration::from_millis(100)),
        Err(Error::Timeout { .. })
    ));
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(rx.recv().unwrap(), 1);
    assert_eq!(rx.recv().unwrap(), 2);
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
    tx.send_timeout(&4, LONG).unwrap();
    assert_eq!(rx.recv().unwrap(), 4);
}

#[test]
fn blocking_send_waits_for_the_consumer() {
    let (tx, rx) = channel::<u32>().unwrap();
    let rx = small_window(rx, 3);
    let full = Arc::new(Barrier::new(2));
    let consumer = {
        let full = full.clone();
        thread::spawn(move || {
            full.wait(); // the producer has filled the window
            (0..100).map(|_| rx.recv().unwrap()).collect::<Vec<_>>()
        })
    };
    for i in 0..3 {
        tx.send(&i).unwrap();
    }
    assert!(matches!(tx.try_send(&3), Err(Error::Full)));
    full.wait();
    for i in 3..100 {
        tx.send(&i).unwrap();
        assert!(tx.in_flight().messages <= 3);
    }
    assert_eq!(consumer.join().unwrap(), (0..100).collect::<Vec<_>>());
}

#[test]
fn carried_buffers_count_against_the_byte_window() {
    let (tx, rx) = channel::<Fd<Frozen>>().unwrap();
    let rx = rx.with_window(Window::new(100, (3 << 20) + 4096));
    let frame = Frozen::from_bytes("frame", &vec![7u8; 1 << 20]).unwrap();
    for _ in 0..3 {
        tx.try_send(&Fd::new(frame.clone())).unwrap();
    }
    let in_flight = tx.in_flight();
    assert_eq!(in_flight.messages, 3);
    assert!(in_flight.bytes >= 3 << 20, "{in_flight:?}");
    assert!(matches!(
        tx.try_send(&Fd::new(frame.clone())),
        Err(Error::Full)
    ));
    for _ in 0..3 {
        assert_eq!(rx.recv().unwrap().len(), 1 << 20);
    }
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
    tx.try_send(&Fd::new(frame)).unwrap();
}

#[test]
fn a_message_larger_than_the_window_goes_alone() {
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let rx = rx.with_window(Window::new(100, 1000));
    let big = vec![1u8; 5000];
    tx.try_send(&big).unwrap();
    assert!(matches!(tx.try_send(&vec![1]), Err(Error::Full)));
    assert_eq!(rx.recv().unwrap(), big);
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
    tx.try_send(&big).unwrap();
    assert_eq!(rx.recv().unwrap().len(), 5000);
}

#[test]
fn unbounded_window_never_fills() {
    let (tx, rx) = channel::<u32>().unwrap();
    let rx = rx.with_window(Window::unbounded());
    for i in 0..2000 {
        tx.send_timeout(&i, LONG).unwrap();
        if i % 100 == 99 {
            // Keep the kernel's own buffer from filling: it bounds an unbounded channel.
            for j in i - 99..=i {
                assert_eq!(rx.recv().unwrap(), j);
            }
        }
    }
    assert_eq!(tx.in_flight().window, None);
}

/// Both sides send more than their windows while each has a thread receiving: nothing
/// deadlocks, every message arrives in order.
#[test]
fn duplex_both_directions_bounded() {
    let (a, b) = RawSocket::pair().unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (a_tx, a_rx) = (
        Sender::<u32>::from_raw(a.clone()),
        Receiver::<u32>::from_raw(a).with_window(Window::new(8, 1 << 20)),
    );
    let (b_tx, b_rx) = (
        Sender::<u32>::from_raw(b.clone()),
        Receiver::<u32>::from_raw(b).with_window(Window::new(8, 1 << 20)),
    );
    const N: u32 = 5000;
    let ra = thread::spawn(move || (0..N).map(|_| a_rx.recv().unwrap()).collect::<Vec<_>>());
    let rb = thread::spawn(move || (0..N).map(|_| b_rx.recv().unwrap()).collect::<Vec<_>>());
    let sb = thread::spawn(move || {
        for i in 0..N {
            b_tx.send_timeout(&i, LONG).unwrap();
            assert!(b_tx.in_flight().messages <= 8);
        }
    });
    for i in 0..N {
        a_tx.send_timeout(&i, LONG).unwrap();
        assert!(a_tx.in_flight().messages <= 8);
    }
    sb.join().unwrap();
    assert_eq!(ra.join().unwrap(), (0..N).collect::<Vec<_>>());
    assert_eq!(rb.join().unwrap(), (0..N).collect::<Vec<_>>());
}

/// Request/reply on one duplex connection, where each side alternates sending a batch and
/// receiving a batch from one thread: the credits come back behind the peer's messages.
#[test]
fn duplex_alternating_batches_within_the_window() {
    let (a, b) = RawSocket::pair().unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let window = Window::new(16, 1 << 20);
    let a_tx = Sender::<u32>::from_raw(a.clone());
    let a_rx = Receiver::<u32>::from_raw(a).with_window(window);
    let b_tx = Sender::<u32>::from_raw(b.clone());
    let b_rx = Receiver::<u32>::from_raw(b).with_window(window);
    let peer = thread::spawn(move || {
        for round in 0..200u32 {
            for i in 0..16 {
                assert_eq!(b_rx.recv_timeout(LONG).unwrap(), round * 16 + i);
            }
            for i in 0..16 {
                b_tx.send_timeout(&(round * 16 + i), LONG).unwrap();
            }
        }
    });
    for round in 0..200u32 {
        for i in 0..16 {
            a_tx.send_timeout(&(round * 16 + i), LONG).unwrap();
        }
        for i in 0..16 {
            assert_eq!(a_rx.recv_timeout(LONG).unwrap(), round * 16 + i);
        }
    }
    peer.join().unwrap();
}

// --- hostile peers ------------------------------------------------------------------------

/// A receiver that announces a window and never credits: the sender's wait is bounded by
/// its timeout, try_send reports Full, and nothing else breaks.
#[test]
fn hostile_receiver_withholding_credit() {
    let (a, peer) = RawSocket::pair().unwrap();
    let tx = Sender::<u32>::from_raw(Arc::new(a));
    peer.send(&[IoSlice::new(&control(1, 0, 2, 1 << 20, 0))], &[])
        .unwrap();
    tx.send(&1).unwrap();
    tx.send(&2).unwrap();
    assert!(matches!(tx.try_send(&3), Err(Error::Full)));
    assert!(matches!(
        tx.send_timeout(&3, Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    // Malformed control packets (unknown flag, wrong length, carrying an fd) are dropped
    // and change nothing.
    let mut unknown = control(1 | 64, 10, 100, 1 << 20, 0);
    peer.send(&[IoSlice::new(&unknown)], &[]).unwrap();
    unknown.truncate(40);
    unknown[16] = 16;
    peer.send(&[IoSlice::new(&unknown)], &[]).unwrap();
    let good_but_fd = control(0, 2, 0, 0, 0);
    let file = std::fs::File::open("/dev/null").unwrap();
    peer.send(&[IoSlice::new(&good_but_fd)], &[file.as_fd()])
        .unwrap();
    assert!(matches!(tx.try_send(&3), Err(Error::Full)));
    // A proper credit lets it go on.
    peer.send(&[IoSlice::new(&control(0, 1, 0, 0, 0))], &[])
        .unwrap();
    tx.send_timeout(&3, LONG).unwrap();
    // The peer saw the three messages and the probes, nothing else.
    let mut messages = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut fds = Vec::new();
    while let Ok(n) = peer.recv(&mut buf, &mut fds, RecvMode::NonBlocking) {
        let flags = u16::from_le_bytes([buf[6], buf[7]]);
        if flags & 2 == 0 {
            messages += 1;
        } else {
            assert_eq!(n, 48);
            assert_eq!(
                u32::from_le_bytes(buf[24..28].try_into().unwrap()),
                4,
                "a probe"
            );
        }
        fds.clear();
    }
    assert_eq!(messages, 3);
}

/// A sender that ignores the window: the receiver takes every message (its memory is
/// bounded by the socket's buffer, as without flow control) and keeps working.
#[test]
fn hostile_sender_ignoring_the_window() {
    let (a, b) = RawSocket::pair().unwrap();
    let rx = Receiver::<u32>::from_raw(Arc::new(b)).with_window(Window::new(1, 1));
    let tx = Sender::<u32>::from_raw(Arc::new(a));
    // A hand-off makes this sender unbounded: it plays the sender that does not care.
    let (carrier, _keep) = channel::<Sender<u32>>().unwrap();
    carrier.send(&tx).unwrap();
    for i in 0..50 {
        tx.try_send(&i).unwrap();
    }
    for i in 0..50 {
        assert_eq!(rx.recv().unwrap(), i);
    }
}

/// A `Receiver` passed inside a message announces afresh with `RESET`: the sender forgets
/// what it had in flight (the old receiver's uncredited messages cannot stall it) and takes
/// the new receiver's window.
#[test]
fn receiver_sent_in_a_message_resets_the_senders_count() {
    let (tx, rx) = channel::<u32>().unwrap();
    let rx = small_window(rx, 2);
    tx.try_send(&0).unwrap();
    tx.try_send(&1).unwrap();
    assert!(matches!(tx.try_send(&2), Err(Error::Full)));
    let (carrier_tx, carrier_rx) = channel::<Receiver<u32>>().unwrap();
    carrier_tx.send(&rx).unwrap();
    drop(rx);
    let moved = carrier_rx.recv().unwrap();
    assert_eq!(moved.recv().unwrap(), 0); // its first recv announces
    tx.try_send(&2).unwrap();
    assert_eq!(tx.in_flight().window, Some(Window::default()));
    assert_eq!(tx.in_flight().messages, 1);
    assert_eq!(moved.recv().unwrap(), 1);
    assert_eq!(moved.recv().unwrap(), 2);
}

// --- async ------------------------------------------------------------------------------

#[cfg(feature = "tokio")]
#[test]
fn async_send_awaits_credit() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, rx) = channel::<u32>().unwrap();
        let rx = small_window(rx, 4);
        let tx = memfile_ipc::tokio::AsyncSender::from_blocking(tx).unwrap();
        let rx = memfile_ipc::tokio::AsyncReceiver::from_blocking(rx).unwrap();
        for i in 0..4 {
            tx.send(&i).await.unwrap();
        }
        assert!(matches!(tx.try_send(&4), Err(Error::Full)));
        // A send that cannot proceed, cancelled by a timeout, gives its budget back.
        let cancelled = tokio::time::timeout(Duration::from_millis(50), tx.send(&100)).await;
        assert!(cancelled.is_err());
        assert_eq!(tx.get_ref().in_flight().messages, 4);
        let consumer = async {
            let mut got = Vec::new();
            for _ in 0..200 {
                got.push(rx.recv().await.unwrap());
            }
            got
        };
        let producer = async {
            for i in 4..200 {
                tx.send(&i).await.unwrap();
                assert!(tx.get_ref().in_flight().messages <= 4);
            }
        };
        let (got, ()) = tokio::join!(consumer, producer);
        let expected: Vec<u32> = (0..4).chain(4..200).collect();
        assert_eq!(got, expected);
    });
}

// --- across processes ------------------------------------------------------------------

fn spawn_child<Tx, Rx>(role: &str) -> (ChildProcess, Sender<Tx>, Receiver<Rx>) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
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

#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "consumer" => {
            // Grants 4 messages, takes 300 and reports how many it saw, in order.
            let (tx, rx) = from_parent::<u32, u32>().unwrap();
            let rx = rx.with_window(Window::new(4, 1 << 30));
            for i in 0..300 {
                assert_eq!(rx.recv_timeout(LONG).unwrap(), i);
            }
            tx.send(&300).unwrap();
        }
        "replier" => {
            // Receives a reply sender inside a message and sends 300 on it.
            let (_tx, rx) = from_parent::<u32, Sender<u32>>().unwrap();
            let reply = rx.recv_timeout(LONG).unwrap();
            assert_eq!(reply.in_flight().window, None);
            for i in 0..300 {
                reply.send_timeout(&i, LONG).unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn window_granted_by_a_child_process() {
    let (mut child, tx, rx) = spawn_child::<u32, u32>("consumer");
    for i in 0..300 {
        tx.send_timeout(&i, LONG).unwrap();
        let in_flight = tx.in_flight();
        if in_flight.window.is_some() {
            assert!(in_flight.messages <= 4, "{in_flight:?}");
        }
    }
    assert_eq!(tx.in_flight().window, Some(Window::new(4, 1 << 30)));
    assert_eq!(rx.recv_timeout(LONG).unwrap(), 300);
    assert!(child.wait().unwrap().success());
}

/// A `Sender` sent inside a message is unbounded in both processes (only one process may
/// read a connection's credits), so neither ever waits for a credit the other one read.
#[test]
fn sender_sent_to_another_process_is_unbounded() {
    let (mut child, tx, _rx) = spawn_child::<Sender<u32>, u32>("replier");
    let (reply_tx, reply_rx) = channel::<u32>().unwrap();
    let reply_rx = small_window(reply_rx, 2);
    reply_tx.send(&1000).unwrap();
    assert!(reply_tx.in_flight().window.is_some());
    tx.send(&reply_tx).unwrap();
    // The clone left behind is unbounded now: it does not wait for credits.
    assert_eq!(reply_tx.in_flight().window, None);
    for i in 1001..1010 {
        reply_tx.try_send(&i).unwrap();
    }
    drop(reply_tx);
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for _ in 0..310 {
        let n = reply_rx.recv_timeout(LONG).unwrap();
        if n >= 1000 {
            local.push(n)
        } else {
            remote.push(n)
        }
    }
    assert_eq!(local, (1000..1010).collect::<Vec<_>>());
    assert_eq!(remote, (0..300).collect::<Vec<_>>());
    assert!(child.wait().unwrap().success());
}
