//! Which system call a thread of this process is sleeping in, and with which arguments
//! (`/proc/self/task/<tid>/syscall`): lets a test wait until another thread is really
//! blocked in `sendmsg`, `recvmsg`, `poll` or `accept4` instead of sleeping and hoping, and
//! read the flags the crate passed to the kernel.
#![allow(dead_code)] // each test file uses a different subset

use std::time::{Duration, Instant};

/// `sendmsg(2)`.
pub const SENDMSG: &[libc::c_long] = &[libc::SYS_sendmsg];
/// `recvmsg(2)`.
pub const RECVMSG: &[libc::c_long] = &[libc::SYS_recvmsg];
/// `poll(2)` (libc may implement it with `ppoll`).
#[cfg(target_arch = "x86_64")]
pub const POLL: &[libc::c_long] = &[libc::SYS_poll, libc::SYS_ppoll];
/// `poll(2)` (libc implements it with `ppoll`).
#[cfg(not(target_arch = "x86_64"))]
pub const POLL: &[libc::c_long] = &[libc::SYS_ppoll];
/// `accept4(2)`.
pub const ACCEPT4: &[libc::c_long] = &[libc::SYS_accept4];

/// How long [`wait_until_blocked_in`] waits: long enough for a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The calling thread's id, for another thread to pass to [`wait_until_blocked_in`].
pub fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// A system call a thread sleeps in: its number and its six arguments.
#[derive(Debug, Clone, Copy)]
pub struct Blocked {
    pub nr: libc::c_long,
    pub args: [u64; 6],
}

/// What thread `tid` of this process is doing right now: `Some` while it sleeps in a
/// system call, `None` while it runs (or sleeps outside one, e.g. in a page fault).
pub fn blocked_in(tid: i32) -> Option<Blocked> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        .unwrap_or_else(|e| panic!("/proc/self/task/{tid}/syscall: {e}"));
    // "running", "-1 sp pc", or "nr arg1 .. arg6 sp pc" (arguments in hex).
    let mut words = text.split_whitespace();
    let nr: libc::c_long = words.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        let w = words.next()?;
        *a = u64::from_str_radix(w.trim_start_matches("0x"), 16).ok()?;
    }
    Some(Blocked { nr, args })
}

/// Waits until thread `tid` sleeps in one of `syscalls` (checking every millisecond) and
/// returns the call; panics after [`PATIENCE`], naming what the thread was doing.
pub fn wait_until_blocked_in(tid: i32, syscalls: &[libc::c_long]) -> Blocked {
    let start = Instant::now();
    loop {
        let now = blocked_in(tid);
        if let Some(b) = now {
            if syscalls.contains(&b.nr) {
                return b;
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "thread {tid} never blocked in syscall {syscalls:?}; last seen: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
