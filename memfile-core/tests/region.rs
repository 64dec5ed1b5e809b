//! `WritableRegion`: filled over several calls, frozen in place, never EBUSY from its own
//! mapping, not even with a forked child alive.

use std::io;

use memfile_core::{MemFile, Seal, WritableRegion};
use memmap2::MmapOptions;

#[test]
fn fills_across_calls_and_freezes_in_place() {
    let mut region = WritableRegion::new("chunks", 3 * 4096).unwrap();
    assert_eq!(region.len(), 3 * 4096);
    assert!(region.iter().all(|&b| b == 0), "starts zeroed");
    for (i, chunk) in region.chunks_mut(4096).enumerate() {
        chunk.fill(i as u8 + 1);
    }
    let frozen = region.freeze().unwrap();
    for (i, chunk) in frozen.chunks(4096).enumerate() {
        assert!(chunk.iter().all(|&b| b == i as u8 + 1));
    }
    assert!(
        frozen
            .seals()
            .contains(Seal::Write | Seal::Shrink | Seal::Grow | Seal::Seal)
    );
}

#[test]
fn empty_region() {
    let mut region = WritableRegion::new("empty", 0).unwrap();
    assert!(region.is_empty());
    assert_eq!(&mut region[..], b"");
    assert!(region.freeze().unwrap().is_empty());
}

#[test]
fn debug_does_not_show_bytes() {
    let mut region = WritableRegion::new("dbg", 4).unwrap();
    region.copy_from_slice(b"ABCD");
    let s = format!("{region:?}");
    assert!(s.contains("len: 4") && s.contains("fd: "), "{s}");
    assert!(!s.contains("65"), "{s}");
}

/// Forks a child that just waits (holding whatever mappings it inherited) and returns its
/// pid. The child makes no allocation and no call but `pause`/`_exit`.
fn fork_idle_child() -> libc::pid_t {
    // SAFETY: the child only calls `pause` and `_exit` (async-signal-safe).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", io::Error::last_os_error());
    if pid == 0 {
        loop {
            // SAFETY: async-signal-safe; the parent kills us.
            unsafe { libc::pause() };
        }
    }
    pid
}

fn kill_child(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: `pid` is our child, forked by `fork_idle_child`.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

#[test]
fn a_forked_child_does_not_keep_a_plain_mapping_busy_but_the_kernel_would() {
    // Control: without MADV_DONTFORK, a child forked while a writable shared mapping
    // exists keeps its copy, and F_SEAL_WRITE fails with EBUSY even after we unmap ours.
    let file = MemFile::create_sealable("control").unwrap();
    file.set_len(4096).unwrap();
    // SAFETY: a fresh memfd nobody else can truncate; only written below.
    let mut map = unsafe { MmapOptions::new().len(4096).map_mut(&file.as_fd()) }.unwrap();
    map[0] = 1;
    let child = fork_idle_child();
    drop(map);
    let busy = file.add_seals(Seal::Write);
    kill_child(child);
    let e = busy.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
    // Once the child is gone the seal goes on.
    file.add_seals(Seal::Write).unwrap();
}

#[test]
fn a_forked_child_does_not_inherit_the_region() {
    let mut region = WritableRegion::new("dontfork", 4096).unwrap();
    region[0] = 5;
    let child = fork_idle_child();
    // The child is alive for the whole freeze: with MADV_DONTFORK it has no mapping.
    // (The child outlives freeze's short EBUSY retry, so only DONTFORK can make this pass.)
    let frozen = region.freeze();
    kill_child(child);
    assert_eq!(frozen.unwrap()[0], 5);
}
