//! Helpers shared by the transport tests (raw, listener, process).
#![allow(dead_code)] // each test file uses a different subset

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Held by every test of a file that counts fds or changes process-wide state (signal
/// dispositions, non-CLOEXEC fds): the tests of one binary run in parallel threads.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the file-wide lock (a panicking test poisons it; the others still run).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fds this process has open, sorted (without the one used to list them).
pub fn open_fds() -> Vec<i32> {
    let pid = std::process::id();
    let own_dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            // The directory handle read_dir itself holds points at /proc/<pid>/fd.
            match std::fs::read_link(e.path()) {
                Ok(target) if target == own_dir => None,
                Err(_) => None, // closed between listing and readlink: it was read_dir's
                Ok(_) => Some(fd),
            }
        })
        .collect();
    fds.sort_unstable();
    fds
}

/// How many fds this process has open.
pub fn fd_count() -> usize {
    open_fds().len()
}

/// Whether close-on-exec is set on `fd`.
pub fn is_cloexec(fd: &impl AsFd) -> bool {
    let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
    nix::fcntl::FdFlag::from_bits_retain(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
}

/// (device, inode) of an open fd, to tell whether two fds are the same file.
pub fn file_id(fd: &impl AsFd) -> (u64, u64) {
    let st = nix::sys::stat::fstat(fd.as_fd()).expect("fstat");
    (st.st_dev, st.st_ino)
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("memfile-h3-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A unique abstract socket name for this test process.
pub fn abstract_name(tag: &str) -> Vec<u8> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("memfile-h3-{tag}-{}-{n}", std::process::id()).into_bytes()
}

/// The raw fd number, for messages.
pub fn raw(fd: &impl AsRawFd) -> i32 {
    fd.as_raw_fd()
}
