//! The order of the checks on a descriptor from another process (safety.md §3; issue 10,
//! item 2): the first call is `F_GET_SEALS`, which answers at once for every file that is
//! not on tmpfs or hugetlbfs, and a descriptor it refuses is described without `fstat`,
//! `fstatfs` or `statfs`, which wait for the file system (a FUSE file's daemon may be the
//! sender, and never answer).
//!
//! The proof: a seccomp filter on one thread makes exactly those calls fail with an errno
//! nothing else produces (`EHWPOISON`); on that thread every kind of non-memfd descriptor
//! must still be refused as "not a memfd", with a message saying what it is. Code that
//! called `fstat` first would report "fstat failed: ... hardware error" instead.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::os::fd::{AsFd, OwnedFd};

use memfile_core::{Frozen, FrozenErrorKind, LiveView, MemFile};

/// The errno the filter returns for the calls that could block.
const MARK: i32 = libc::EHWPOISON;

/// Installs, on the calling thread only, a seccomp filter that fails `fstat`,
/// `newfstatat`, `fstatfs` and `statfs` with [`MARK`]. Returns false if seccomp is not
/// available here.
fn forbid_stat_calls_on_this_thread() -> bool {
    // Classic BPF: load the syscall number (offset 0 of `seccomp_data`), compare it with
    // each forbidden number, return ERRNO on a match, ALLOW otherwise. Hand-written: no
    // seccomp crate is a dependency, and this is the whole program. (x86-64 numbers; the
    // file compiles only there.)
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let forbidden = [
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_fstatfs,
        libc::SYS_statfs,
    ];
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut prog = vec![insn(LD_W_ABS, 0, 0, 0)];
    for nr in forbidden {
        prog.push(insn(JEQ_K, 0, 1, nr as u32));
        prog.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | MARK as u32));
    }
    prog.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `prctl` with these options reads only `fprog` (valid for the call, pointing
    // at `prog`); both affect the calling thread alone, which ends with this test.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return false;
        }
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        ) == 0
    }
}

/// Descriptors of every kind that is not a memfd and on which `F_GET_SEALS` fails, with
/// the words the refusal must contain.
fn not_shmem_fds() -> Vec<(&'static str, OwnedFd, &'static str)> {
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let exe = std::env::current_exe().unwrap();
    let file = std::fs::File::open(&exe).unwrap();
    let dir = std::fs::File::open(exe.parent().unwrap()).unwrap();
    let o_path = nix::fcntl::open(
        &exe,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: plain syscall; returns a new fd or -1.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    // SAFETY: `efd` is a fresh descriptor that nothing else owns.
    let efd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(efd) };
    let mut fds = vec![
        ("pipe", pipe_r, "it is a pipe"),
        ("socket", OwnedFd::from(sock), "it is a socket"),
        ("/dev/null", OwnedFd::from(null), "it is a character device"),
        ("O_PATH", o_path, "O_PATH descriptor"),
        ("eventfd", efd, "it is a special file"),
    ];
    // Only where the disk is not tmpfs (else F_GET_SEALS succeeds and fstat is safe).
    for (what, f, words) in [
        ("regular file", OwnedFd::from(file), "it is a regular file"),
        ("directory", OwnedFd::from(dir), "it is a directory"),
    ] {
        if nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).is_err() {
            fds.push((what, f, words));
        } else {
            println!("skipped: the {what} case: the test binary lives on tmpfs");
        }
    }
    fds
}

#[test]
fn non_memfds_are_refused_without_a_call_that_can_block() {
    let fds = not_shmem_fds();
    let checked = std::thread::spawn(move || {
        if !forbid_stat_calls_on_this_thread() {
            return None;
        }
        // Control: the filter catches `fstat` as this crate (through nix and libc) calls
        // it, so a passing run below means no such call was made.
        let (r, _w) = nix::unistd::pipe().unwrap();
        let e = nix::sys::stat::fstat(r.as_fd()).unwrap_err();
        assert_eq!(e as i32, MARK, "the filter does not catch fstat");
        let e = nix::sys::statfs::fstatfs(r.as_fd()).unwrap_err();
        assert_eq!(e as i32, MARK, "the filter does not catch fstatfs");

        let mut results = Vec::new();
        for (what, fd, words) in fds {
            let err = Frozen::from_fd(fd.try_clone().unwrap()).unwrap_err();
            let frozen = match err.kind() {
                FrozenErrorKind::NotMemfd(reason) => reason.clone(),
                other => format!("wrong kind {other:?}"),
            };
            let err = LiveView::from_fd(fd.try_clone().unwrap()).unwrap_err();
            let live = match err.kind() {
                FrozenErrorKind::NotMemfd(reason) => reason.clone(),
                other => format!("wrong kind {other:?}"),
            };
            let memfile = MemFile::from_fd(fd).unwrap_err().to_string();
            results.push((what, words, [frozen, live, memfile]));
        }
        Some(results)
    })
    .join()
    .unwrap();
    let Some(results) = checked else {
        println!("skipped: seccomp filters are not available here");
        return;
    };
    for (what, words, messages) in results {
        for (api, msg) in ["Frozen::from_fd", "LiveView::from_fd", "MemFile::from_fd"]
            .iter()
            .zip(messages)
        {
            assert!(
                msg.contains(words) && !msg.contains("failed"),
                "{what} through {api}: {msg}"
            );
        }
    }
}
