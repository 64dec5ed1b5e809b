//! The closer treats an `AF_UNIX` socket as "closes at once". It does not when the socket
//! is the last reference and its receive queue holds fds in flight: releasing it drops
//! them, and the last `fput` of a lingering TCP socket among them runs (as task work) on
//! the closing thread before `close` returns. A hostile peer sends such a socket as an
//! extra fd nobody claims; the receive must not wait for the linger.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use memfile_ipc::Receiver;
use memfile_ipc::raw::RawSocket;

mod util_linger;
use util_linger::lingering;

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
    let mut victim = lingering();
    // The carrier: x's receive queue holds the lingering socket, in flight.
    let (x, y) = RawSocket::pair().unwrap();
    y.send(&[IoSlice::new(b"x")], &[victim.fd()]).unwrap();
    victim.close_ours();
    drop(y);
    a.send(&[IoSlice::new(&u32_with_one_fd())], &[x.as_fd()])
        .unwrap();
    drop(x); // the receiver's copy of x is the last one now
    let (r, elapsed) = victim.time("try_recv", move || rx.try_recv().map(|_| ()));
    assert!(r.is_ok(), "{r:?}");
    assert!(
        elapsed < Duration::from_secs(2),
        "try_recv took {elapsed:?}"
    );
}
