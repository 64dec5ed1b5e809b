//! Helpers shared by the tests that craft packets by hand (fds, hostile, prop_decode):
//! the wire format of docs/protocol.md, written independently of the crate's own encoder.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{IoSlice, Write};
use std::os::fd::BorrowedFd;
use std::sync::{Mutex, MutexGuard};

use memfile_core::{Frozen, MemFile, Seal};
use memfile_ipc::raw::RawSocket;

static FD_LOCK: Mutex<()> = Mutex::new(());

/// Held by every test of a file that counts fds: the tests of one binary run in parallel
/// threads (a panicking test poisons the lock; the others still run).
pub fn lock() -> MutexGuard<'static, ()> {
    FD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many fds this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The header's spilled flag.
pub const FLAG_SPILLED: u16 = 1;

/// The 24-byte header: magic, version, flags, fd count, reserved, payload length.
pub fn header(version: u16, flags: u16, fd_count: u32, reserved: u32, len: u64) -> Vec<u8> {
    let mut h = b"MFIP".to_vec();
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&fd_count.to_le_bytes());
    h.extend_from_slice(&reserved.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h
}

/// The header's control flag (protocol version 2: flow-control packets).
pub const FLAG_CONTROL: u16 = 2;

/// A version-2 control packet (docs/protocol.md, "Flow control (v2)") announcing
/// `fd_count` fds: the header, then `flags`, `consumed`, the window's messages, a reserved
/// zero and the window's bytes.
pub fn control(flags: u32, consumed: u32, messages: u32, bytes: u64, fd_count: u32) -> Vec<u8> {
    let mut p = header(2, FLAG_CONTROL, fd_count, 0, 24);
    p.extend_from_slice(&flags.to_le_bytes());
    p.extend_from_slice(&consumed.to_le_bytes());
    p.extend_from_slice(&messages.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&bytes.to_le_bytes());
    p
}

/// A well-formed inline packet around `payload`.
pub fn inline(payload: &[u8], fd_count: u32) -> Vec<u8> {
    let mut p = header(1, 0, fd_count, 0, payload.len() as u64);
    p.extend_from_slice(payload);
    p
}

/// bincode's variable-length integer (`config::standard()`).
pub fn varint(v: u64) -> Vec<u8> {
    match v {
        0..=250 => vec![v as u8],
        251..=0xffff => [&[251u8][..], &(v as u16).to_le_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[252u8][..], &(v as u32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &v.to_le_bytes()].concat(),
    }
}

/// Sends one raw packet with `fds`.
pub fn send(raw: &RawSocket, packet: &[u8], fds: &[BorrowedFd<'_>]) {
    raw.send(&[IoSlice::new(packet)], fds).unwrap();
}

/// A properly frozen buffer holding `bytes`.
pub fn sealed(bytes: &[u8]) -> Frozen {
    Frozen::from_bytes("test-good", bytes).unwrap()
}

/// A memfd holding `bytes` with exactly `seals` added.
pub fn memfd_with(bytes: &[u8], seals: &[Seal]) -> MemFile {
    let m = MemFile::create_sealable("test").unwrap();
    m.as_file().write_all(bytes).unwrap();
    for &s in seals {
        m.add_seal(s).unwrap();
    }
    m
}
