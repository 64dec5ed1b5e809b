//! The closer treats an `AF_UNIX` socket as "closes at once". It does not when the socket
//! is the last reference and its receive queue holds fds in flight: releasing it drops
//! them, and the last `fput` of a lingering TCP socket among them runs (as task work) on
//! the closing thread before `close` returns. A hostile peer sends such a socket as an
//! extra fd nobody claims; the receive must not wait for the linger.

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use memfile_ipc::Receiver;
use memfile_ipc::raw::RawSocket;
use nix::sys::socket::{setsockopt, sockopt};

fn lingering() -> (OwnedFd, TcpStream, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
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
    loop {
        match (&client).write(&[0x55u8; 4096]) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the TCP socket: {e}"),
        }
    }
    client.set_nonblocking(false).unwrap();
    (client.into(), reader, listener)
}

fn drain(mut reader: TcpStream) {
    let mut buf = [0u8; 1 << 16];
    while !matches!(reader.read(&mut buf), Ok(0) | Err(_)) {}
}

/// An inline v1 packet of a `u32` message 7 announcing one fd (which nobody claims).
fn u32_with_one_fd() -> Vec<u8> {
    let mut p = b"MFIP".to_vec();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&1u64.to_le_bytes());
    p.push(7);
    p
}

#[test]
fn unix_socket_carrying_a_lingering_fd_does_not_block_the_receiver() {
    let (a, b) = RawSocket::pair().unwrap();
    let rx = Receiver::<u32>::from_raw(Arc::new(b));
    let (victim, reader, _listener) = lingering();
    // The carrier: x's receive queue holds the lingering socket, in flight.
    let (x, y) = RawSocket::pair().unwrap();
    y.send(&[IoSlice::new(b"x")], &[victim.as_fd()]).unwrap();
    drop(victim);
    drop(y);
    a.send(&[IoSlice::new(&u32_with_one_fd())], &[x.as_fd()])
        .unwrap();
    drop(x); // the receiver's copy of x is the last one now
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let start = Instant::now();
        let r = rx.try_recv();
        done_tx.send(start.elapsed()).unwrap();
        r.map(|_| ())
    });
    match done_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(elapsed) => {
            let r = worker.join().unwrap();
            drain(reader);
            assert!(r.is_ok(), "{r:?}");
            assert!(
                elapsed < Duration::from_secs(2),
                "try_recv took {elapsed:?}"
            );
        }
        Err(_) => {
            drain(reader);
            let _ = worker.join();
            panic!("try_recv blocked closing an AF_UNIX socket that held a lingering fd");
        }
    }
}
