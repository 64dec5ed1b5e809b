//! `Frozen::build_with` / `try_build_with`: the closure's result comes back with the frozen
//! buffer, and a failing closure leaves nothing behind.

use std::io;
use std::sync::Mutex;

use memfile_core::{Frozen, Seal};

/// The tests that count this process's open fds must not overlap with the others.
static FDS: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn build_with_returns_the_closures_value_and_the_filled_buffer() {
    let _g = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let (frozen, (sum, first)) = Frozen::build_with("checksum", 4096 * 3 + 5, |buf| {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let sum: u64 = buf.iter().map(|&b| u64::from(b)).sum();
        (sum, buf[..4].to_vec())
    })
    .unwrap();
    assert_eq!(frozen.len(), 4096 * 3 + 5);
    assert_eq!(frozen.iter().map(|&b| u64::from(b)).sum::<u64>(), sum);
    assert_eq!(first, [0, 1, 2, 3]);
    assert!(
        frozen
            .seals()
            .contains(Seal::Write | Seal::Shrink | Seal::Grow)
    );
}

#[test]
fn build_with_of_zero_bytes_still_calls_the_closure() {
    let _g = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let (frozen, len_seen) = Frozen::build_with("empty", 0, |buf| buf.len() + 1).unwrap();
    assert!(frozen.is_empty());
    assert_eq!(len_seen, 1);
}

#[test]
fn try_build_with_returns_the_ok_value() {
    let _g = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let mut source: &[u8] = b"twelve bytes and more";
    let (frozen, n) = Frozen::try_build_with("read", 12, |buf| {
        io::Read::read_exact(&mut source, buf)?;
        Ok::<usize, io::Error>(buf.len())
    })
    .unwrap();
    assert_eq!(n, 12);
    assert_eq!(&frozen[..], b"twelve bytes");
}

#[derive(Debug, PartialEq)]
enum FillError {
    Io(String),
    BadInput(u32),
}

impl From<io::Error> for FillError {
    fn from(e: io::Error) -> Self {
        FillError::Io(e.to_string())
    }
}

#[test]
fn try_build_with_returns_the_closures_error_and_closes_the_memfd() {
    let _g = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let before = open_fds();
    let r = Frozen::try_build_with("fails", 1 << 16, |buf| {
        buf[0] = 1;
        Err::<u8, _>(FillError::BadInput(7))
    });
    assert_eq!(r.unwrap_err(), FillError::BadInput(7));
    assert_eq!(
        open_fds(),
        before,
        "the memfd of a failed build must be closed"
    );
}

#[test]
fn try_build_with_converts_errors_of_the_build_itself() {
    let _g = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let mut called = false;
    // An interior NUL makes memfd_create fail before the closure could run.
    let r = Frozen::try_build_with("bad\0name", 8, |_| {
        called = true;
        Ok::<(), FillError>(())
    });
    assert!(matches!(r, Err(FillError::Io(_))), "{r:?}");
    assert!(!called);
}
