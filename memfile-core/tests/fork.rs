//! Forked children (issue 10, item 5): `WritableRegion` and `LiveWriter` mappings are
//! `MADV_DONTFORK`, so in a child the Rust value outlives its mapping. Every access there
//! must fail loudly (a panic naming the value) instead of touching the address: SIGSEGV
//! on an empty range, or a silent write into whatever was mapped there since.
//!
//! One test in this binary, so that no other test thread holds a lock (stdout, the
//! allocator) at the moment of `fork`. In the child only the access under test runs, inside
//! `catch_unwind`, and the child reports with its exit code through `_exit`.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::panic::{AssertUnwindSafe, catch_unwind};

use memfile_core::{LiveWriter, WritableRegion};

/// Exit codes of the child.
const PANICKED: i32 = 10;
const WROTE: i32 = 20;
const ERR: i32 = 30;
const OK: i32 = 40;
const WRONG_MESSAGE: i32 = 50;

/// Forks; runs `child` in the child, which must return an exit code; returns that code, or
/// fails the test if the child died of a signal.
fn in_child(what: &str, child: impl FnOnce() -> i32) -> i32 {
    // This binary runs one test: the only other thread is the harness's main thread,
    // waiting on this one, so the child needs no lock another thread holds.
    // SAFETY: the child runs `child`, then leaves with `_exit` (no destructor or atexit
    // handler of the parent's state runs).
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            std::panic::set_hook(Box::new(|_| {})); // the expected panics stay quiet
            let code = catch_unwind(AssertUnwindSafe(child)).unwrap_or(99);
            // SAFETY: ends the child at once, as a forked child of a threaded program must.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a valid out-parameter.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status),
                "{what}: the child died of signal {} instead of failing loudly",
                libc::WTERMSIG(status)
            );
            libc::WEXITSTATUS(status)
        }
    }
}

/// Runs `access` and says whether it panicked with a message naming `owner` and the fork.
fn panics_loudly(owner: &str, access: impl FnOnce()) -> i32 {
    match catch_unwind(AssertUnwindSafe(access)) {
        Ok(()) => WROTE,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            if msg.contains(owner) && msg.contains("forked") {
                PANICKED
            } else {
                WRONG_MESSAGE
            }
        }
    }
}

/// Maps an anonymous page at exactly `addr` (where the DONTFORK mapping was in the parent)
/// and fills it with `fill`: the "later mapping at the same address" of the issue.
fn squat(addr: usize, len: usize, fill: u8) -> bool {
    // SAFETY: MAP_FIXED_NOREPLACE maps only if the range is free (in the child it is: the
    // DONTFORK mapping was not inherited), so nothing of ours is replaced.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p as usize != addr {
        return false;
    }
    // SAFETY: `p` is the fresh, writable mapping of `len` bytes just made.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), fill, len) };
    true
}

/// Whether the `len` bytes at `addr` (the squatting mapping) are all still `fill`.
fn intact(addr: usize, len: usize, fill: u8) -> bool {
    // SAFETY: the squatting mapping is still there (the test checks that drop left it).
    let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
    bytes.iter().all(|&b| b == fill)
}

#[test]
fn writable_mappings_fail_loudly_in_a_forked_child() {
    let len = 4096;

    // WritableRegion: writing and reading panic; freeze is an error; the parent is fine.
    let mut region = WritableRegion::new("fork-region", len).unwrap();
    region[0] = 1;
    let code = in_child("WritableRegion write", || {
        panics_loudly("WritableRegion", || region[1] = 2)
    });
    assert_eq!(code, PANICKED, "WritableRegion write");
    let code = in_child("WritableRegion read", || {
        panics_loudly("WritableRegion", || assert_eq!(region[0], 1))
    });
    assert_eq!(code, PANICKED, "WritableRegion read");
    let code = in_child("WritableRegion freeze", || {
        // SAFETY: a bitwise copy, consumed once; the original is never dropped in this
        // child, which leaves with `_exit`.
        let copy: WritableRegion = unsafe { std::ptr::read(&region) };
        match copy.freeze() {
            Err(e) if e.to_string().contains("forked") => ERR,
            Err(_) => WRONG_MESSAGE,
            Ok(_) => OK,
        }
    });
    assert_eq!(code, ERR, "WritableRegion freeze");
    region[1] = 2; // the parent's mapping is untouched
    let frozen = region.freeze().unwrap();
    assert_eq!(&frozen[..2], &[1, 2]);

    // LiveWriter with a later mapping at its old address in the child: neither a write nor
    // an atomic store may land in it, and dropping the writer must not unmap it.
    let mut writer = LiveWriter::new("fork-live", len).unwrap();
    let addr = writer.as_ptr() as usize;
    let code = in_child("LiveWriter over a later mapping", || {
        if !squat(addr, len, b'.') {
            return OK; // could not place the mapping: reported below
        }
        let write = panics_loudly("LiveWriter", || writer[..5].copy_from_slice(b"OOPS!"));
        let store = panics_loudly("LiveWriter", || {
            let _ = writer.store_u64(0, 7, std::sync::atomic::Ordering::Release);
        });
        // SAFETY: a bitwise copy, dropped once; the original is never dropped in this
        // child, which leaves with `_exit`.
        drop(unsafe { std::ptr::read(&writer) });
        if write != PANICKED || store != PANICKED {
            return write.max(store);
        }
        if intact(addr, len, b'.') {
            PANICKED
        } else {
            WROTE
        }
    });
    assert_ne!(
        code, OK,
        "could not map a page at the writer's old address in the child"
    );
    assert_eq!(
        code, PANICKED,
        "LiveWriter in the child (20: wrote into the later mapping)"
    );
    writer[..5].copy_from_slice(b"fine!");
    assert_eq!(&writer[..5], b"fine!");
}
