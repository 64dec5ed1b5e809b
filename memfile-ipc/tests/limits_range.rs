//! Every `Limits` value is usable: out-of-range values are clamped, never an overflow or a
//! panic in an endpoint.

use memfile_ipc::{Limits, channel};

#[test]
fn inline_limit_usize_max_is_clamped() {
    let limits = Limits::default().inline_limit(Some(usize::MAX));
    assert_eq!(limits.get_inline_limit(), Some(Limits::MAX_INLINE_LIMIT));
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    // Both used to compute `HEADER_LEN + limit` ("attempt to add with overflow").
    let tx = tx.with_limits(limits);
    let rx = rx.with_limits(Limits::default().inline_limit(Some(usize::MAX - 10)));
    assert_eq!(tx.inline_limit(), Limits::MAX_INLINE_LIMIT);
    assert_eq!(
        rx.limits().get_inline_limit(),
        Some(Limits::MAX_INLINE_LIMIT)
    );
    // A receiver with default limits still takes what this sender sends inline.
    let (tx2, rx2) = channel::<Vec<u8>>().unwrap();
    let tx2 = tx2.with_limits(limits);
    tx2.send(&vec![5; 1000]).unwrap();
    assert_eq!(rx2.recv().unwrap(), vec![5; 1000]);
    drop((tx, rx));
}

#[test]
fn extreme_limits_do_not_panic() {
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let limits = Limits::default()
        .max_fds(usize::MAX)
        .max_message_bytes(u64::MAX)
        .max_mapped_bytes(u64::MAX)
        .inline_limit(Some(0));
    assert_eq!(limits.get_max_fds(), 253);
    let (tx, rx) = (tx.with_limits(limits), rx.with_limits(limits));
    tx.send(&vec![1; 100]).unwrap(); // inline limit 0: spilled
    assert_eq!(rx.recv().unwrap(), vec![1; 100]);
    let zero = Limits::default()
        .max_fds(0)
        .max_message_bytes(0)
        .max_mapped_bytes(0);
    let (tx, rx) = (tx.with_limits(zero), rx.with_limits(zero));
    assert!(tx.send(&vec![1]).is_err());
    drop(rx);
}
