//! A peer's announced window bounds what our sender keeps per message in flight (a queue of
//! costs, 8 bytes each): a peer that announces `u32::MAX` messages, reads every message
//! and never credits must not make that queue grow with every message sent.

use std::io::IoSlice;
use std::sync::Arc;

use memfile_ipc::raw::{RawSocket, RecvMode};
use memfile_ipc::{Error, Sender};

mod util_wire;
use util_wire::control;

#[test]
fn huge_announced_window_keeps_in_flight_bounded() {
    let (a, b) = RawSocket::pair().unwrap();
    let a = Arc::new(a);
    // WINDOW | RESET: u32::MAX messages, u64::MAX bytes; never a credit.
    a.send(&[IoSlice::new(&control(3, 0, u32::MAX, u64::MAX, 0))], &[])
        .unwrap();
    let reader = {
        let a = a.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut fds = Vec::new();
            while a.recv(&mut buf, &mut fds, RecvMode::Blocking).is_ok() {
                fds.clear();
            }
        })
    };
    let tx = Sender::<u32>::from_raw(Arc::new(b));
    let mut sent = 0u32;
    let limit = 200_000;
    let stopped = loop {
        if sent == limit {
            break None;
        }
        match tx.try_send(&sent) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock) => std::thread::yield_now(),
            Err(e) => break Some(e),
        }
    };
    let in_flight = tx.in_flight();
    drop(tx);
    reader.join().unwrap();
    assert!(
        matches!(stopped, Some(Error::Full)),
        "sent {sent} messages without a credit ({stopped:?}); the sender counts {} in flight",
        in_flight.messages
    );
    assert!(in_flight.messages <= 1 << 16, "{in_flight:?}");
}
