//! A TCP socket whose `close` blocks, and a runner that times a call that must not wait
//! for it: the tests that check no peer-chosen fd is closed where it can stall the caller
//! (`untrusted_close.rs`, `review_closer_unix.rs`, `review_flow_hostile.rs`).

#![allow(dead_code)] // each test file uses part of this module

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

/// How long a stalled call is given before the test unblocks it and fails.
const STALLED: Duration = Duration::from_secs(20);

/// A connected TCP socket whose last `close` blocks: linger on for an hour, its send buffer
/// full, and its peer (`reader`) not reading.
pub struct Lingering {
    socket: Option<OwnedFd>,
    reader: TcpStream,
    _listener: TcpListener,
}

pub fn lingering() -> Lingering {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Inherited by the accepted socket: a small window, so the sender's data stays queued.
    setsockopt(&listener, sockopt::RcvBuf, &4096).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (reader, _) = listener.accept().unwrap();
    setsockopt(&client, sockopt::SndBuf, &4096).unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 3600,
    };
    setsockopt(&client, sockopt::Linger, &linger).unwrap();
    client.set_nonblocking(true).unwrap();
    let chunk = [0x55u8; 4096];
    let mut queued = 0usize;
    loop {
        match (&client).write(&chunk) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the TCP socket: {e}"),
        }
    }
    assert!(queued > 0);
    client.set_nonblocking(false).unwrap();
    Lingering {
        socket: Some(client.into()),
        reader,
        _listener: listener,
    }
}

impl Lingering {
    /// The socket, to send to the victim.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_ref().expect("socket still ours").as_fd()
    }

    /// Closes this process's copy (at once: the data still queued belongs to the copy the
    /// victim received, whose close is then the last one, and lingers).
    pub fn close_ours(&mut self) {
        drop(self.socket.take());
    }

    /// Reads everything until end-of-file: a lingering `close` then completes.
    pub fn drain(&mut self) {
        let mut buf = [0u8; 1 << 16];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("draining: {e}"),
            }
        }
    }

    /// Runs `op` on another thread and returns its result and how long it took. If it is
    /// still running after 20 s, the socket is drained (which unblocks a lingering
    /// `close`) and the test fails naming `what`. Drains the socket either way.
    pub fn time<T: Send + 'static>(
        &mut self,
        what: &str,
        op: impl FnOnce() -> T + Send + 'static,
    ) -> (T, Duration) {
        let (done_tx, done_rx) = mpsc::channel();
        let worker: JoinHandle<(T, Duration)> = std::thread::spawn(move || {
            let start = Instant::now();
            let result = op();
            let elapsed = start.elapsed();
            let _ = done_tx.send(());
            (result, elapsed)
        });
        let stalled = done_rx.recv_timeout(STALLED).is_err();
        self.drain();
        let (result, elapsed) = worker.join().unwrap();
        assert!(
            !stalled,
            "{what}: blocked for {elapsed:?} on closing a peer's fd"
        );
        (result, elapsed)
    }
}
