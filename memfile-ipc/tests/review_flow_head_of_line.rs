//! Credits travel in the same queue as the peer's messages. A side that only sends (its
//! application never receives on the connection) cannot see a credit queued behind a
//! message the peer sent it: its sender stalls for good although the peer credited
//! everything. docs/protocol.md says "only a peer that withholds credit can stall its
//! own inbound stream"; here the peer withheld nothing.
//!
//! Found in review. Fixed: a blocking sender that finds a message of the peer unread at
//! the head of its socket for 200 ms (`HEAD_OF_LINE_GRACE` in flow.rs) sends without
//! credit, as without flow control, until the head moves.

use std::sync::Arc;
use std::time::Duration;

use memfile_ipc::raw::RawSocket;
use memfile_ipc::{Error, Receiver, Sender, Window};

#[test]
fn send_only_side_sees_credit_behind_an_unread_message() {
    let (a, b) = RawSocket::pair().unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    // The peer (a): grants a window of 2, and sends one message the other side never reads.
    let rx_a = Receiver::<u32>::from_raw(a.clone()).with_window(Window::new(2, 1 << 20));
    let tx_a = Sender::<u32>::from_raw(a.clone());
    // The send-only side (b).
    let tx_b = Sender::<u32>::from_raw(b.clone());
    tx_b.send(&1).unwrap();
    tx_a.send(&99).unwrap();
    tx_b.send(&2).unwrap();
    assert!(matches!(tx_b.try_send(&3), Err(Error::Full)));
    // The peer takes both and credits them (asking for the next one credits).
    assert_eq!(rx_a.recv().unwrap(), 1);
    assert_eq!(rx_a.recv().unwrap(), 2);
    assert!(matches!(rx_a.try_recv(), Err(Error::WouldBlock)));
    let r = tx_b.send_timeout(&3, Duration::from_secs(10));
    assert!(r.is_ok(), "the peer credited everything, yet: {r:?}");
}
