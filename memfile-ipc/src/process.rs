//! Starting a child process that shares a socket with its parent.
//!
//! [`spawn_raw`] makes a socket pair, lets the child inherit exactly one end (and no other
//! fd above stderr) and names it in the environment; the child calls [`raw_from_parent`]
//! once to get it.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::stat::fstat;

use crate::cred::Credentials;
use crate::error::{Error, Result};
use crate::raw::{RawSocket, check_seqpacket};

/// The environment variable that carries the inherited socket's fd number (decimal).
pub const FD_ENV: &str = "MEMFILE_IPC_FD";
/// The environment variable that carries the inherited socket's inode number (decimal), so
/// that a stale [`FD_ENV`] (inherited by a grandchild that did not get the fd) is detected
/// instead of adopting whatever fd has that number. Optional for foreign parents.
pub const INODE_ENV: &str = "MEMFILE_IPC_FD_INODE";

/// Set once [`raw_from_parent`] has adopted the fd: a second `OwnedFd` for the same number
/// would close it twice.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// A child started by [`spawn_raw`] (or the typed `spawn`).
///
/// A thin wrapper over [`std::process::Child`]; like it, dropping a `ChildProcess` neither
/// kills nor waits for the child. Call [`wait`](Self::wait) to reap it.
///
/// # Examples
///
/// ```no_run
/// use std::process::Command;
///
/// // "worker" calls `memfile::ipc::from_parent::<String, String>()` and serves requests
/// // until the connection closes.
/// let (mut child, tx, rx) = memfile::ipc::spawn::<String, String>(&mut Command::new("worker"))?;
/// println!("worker {} runs as uid {}", child.id(), child.credentials()?.uid);
/// tx.send(&"job".to_owned())?;
/// let answer = rx.recv()?;
/// drop((tx, rx)); // the worker's next recv reports Disconnected, and it exits
/// assert!(child.wait()?.success(), "{answer}");
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
}

impl ChildProcess {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child to exit.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `waitpid` fails.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.child.wait().map_err(|e| Error::io("waitpid", None, e))
    }

    /// Returns the exit status if the child has exited, without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `waitpid` fails.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| Error::io("waitpid", None, e))
    }

    /// Sends `SIGKILL` to the child (nothing happens if it has already been reaped).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `kill` fails.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().map_err(|e| Error::io("kill", None, e))
    }

    /// The child's pid and current effective uid and gid, read from `/proc/<pid>/status`.
    ///
    /// (`SO_PEERCRED` cannot tell: a socket pair records its creator, the parent.)
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `/proc/<pid>/status` cannot be read (the child has been reaped)
    /// or lacks the `Uid:`/`Gid:` lines.
    pub fn credentials(&self) -> Result<Credentials> {
        let pid = self.child.id();
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).map_err(|e| Error::io("read", None, e))?;
        // "Uid:\treal\teffective\tsaved\tfs"
        let effective = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
        };
        match (effective("Uid:"), effective("Gid:")) {
            (Some(uid), Some(gid)) => Ok(Credentials {
                pid: pid as i32,
                uid,
                gid,
            }),
            _ => Err(Error::io(
                "read",
                None,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{path}: no Uid:/Gid: line"),
                ),
            )),
        }
    }

    /// The underlying [`Child`], e.g. for its stdin/stdout pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Unwraps the underlying [`Child`].
    pub fn into_child(self) -> Child {
        self.child
    }
}

/// Starts `cmd` as a child process connected to the returned socket.
///
/// The child's end of a fresh [`RawSocket::pair`] is inherited at the fd number given in
/// the [`FD_ENV`] environment variable (with [`INODE_ENV`] to check it); the child gets it
/// with [`raw_from_parent`]. The parent's copy of the child's end is closed once the child
/// has started, so the child exiting shows up as [`Error::Disconnected`].
///
/// Only that fd is inherited: in the child, between `fork` and `exec`, every fd from 3 up
/// is marked close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`, Linux 5.11+; older
/// kernels rely on every fd having been opened close-on-exec), then close-on-exec is cleared
/// on the socket alone. Stdin/stdout/stderr follow `cmd`'s settings. Fds you meant to pass
/// by other means (your own `pre_exec` hook, say) are therefore not inherited either: send
/// them over the socket instead.
///
/// `cmd` may be reused for further `spawn_raw` calls: each child gets its own socket.
///
/// # Errors
///
/// [`Error::Io`] when the socket pair cannot be made (`socketpair`), or the child cannot
/// be started (`spawn`: e.g. the program does not exist).
///
/// # Examples
///
/// Any program can be the child; here a shell checks that it inherited a socket at the
/// number named in [`FD_ENV`], and its exit shows up on our end:
///
/// ```
/// use std::process::Command;
/// use memfile::ipc::raw::RecvMode;
/// use memfile::ipc::{Error, FD_ENV, spawn_raw};
///
/// let script = format!("test -S /proc/self/fd/${FD_ENV}");
/// let (mut child, socket) = spawn_raw(Command::new("sh").args(["-c", &script]))?;
/// assert!(child.wait()?.success(), "the child has no socket at ${FD_ENV}");
/// let (mut buf, mut fds) = ([0u8; 16], Vec::new());
/// assert!(matches!(
///     socket.recv(&mut buf, &mut fds, RecvMode::Blocking),
///     Err(Error::Disconnected { .. })
/// ));
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub fn spawn_raw(cmd: &mut Command) -> Result<(ChildProcess, RawSocket)> {
    let (ours, theirs) = RawSocket::pair()?;
    let mut theirs = theirs.into_fd();
    // The child's stdio setup may dup2 over fds 0-2; keep the socket above them.
    if theirs.as_raw_fd() < 3 {
        let moved = fcntl(&theirs, FcntlArg::F_DUPFD_CLOEXEC(3))
            .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", Some(theirs.as_raw_fd()), e))?;
        // SAFETY: F_DUPFD_CLOEXEC just returned this new fd, owned by nobody else.
        theirs = unsafe { OwnedFd::from_raw_fd(moved) };
    }
    let fd: RawFd = theirs.as_raw_fd();
    let ino = fstat(&theirs)
        .map_err(|e| Error::io("fstat", Some(fd), e))?
        .st_ino;
    cmd.env(FD_ENV, fd.to_string())
        .env(INODE_ENV, ino.to_string());
    let hook = move || -> io::Result<()> {
        // Only async-signal-safe calls here (raw syscalls, no allocation): this runs in the
        // forked child, where another thread of the parent may have held the malloc lock.
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds of this
        // (child) process; no memory is touched.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        // ENOSYS/EINVAL: kernel older than 5.11; every fd is close-on-exec by convention.
        let _ = r;
        // A Command reused for a second spawn_raw still carries the hook of the first call,
        // whose fd number may now be closed or reused: act only if `fd` is still our socket.
        let mut st = mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes at most one `struct stat` into `st`, which has room for it.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return Ok(());
        }
        // SAFETY: fstat succeeded, so it initialized `st`.
        if unsafe { st.assume_init_ref() }.st_ino != ino {
            return Ok(());
        }
        // SAFETY: F_SETFD on an fd number of this process has no memory effects; `fd` is
        // the socket end, open in the child since the parent closes it only after spawn.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe syscalls (close_range, fstat, fcntl) and
    // builds an io::Error from errno, which does not allocate.
    unsafe { cmd.pre_exec(hook) };
    let child = cmd.spawn().map_err(|e| Error::io("spawn", None, e))?;
    drop(theirs);
    Ok((ChildProcess { child }, ours))
}

/// In a child started by [`spawn_raw`]: adopts the socket it inherited.
///
/// Reads [`FD_ENV`] (and [`INODE_ENV`] if set), checks that the fd is open, is the very
/// socket the parent named (same inode) and is `AF_UNIX` `SOCK_SEQPACKET`, marks it
/// close-on-exec again (so it does not leak further), and removes both variables from the
/// environment if this process has a single thread (changing the environment while other
/// threads may read it is unsound; otherwise they stay, and the inode check keeps a
/// grandchild from adopting a wrong fd). Works once per process.
///
/// # Errors
///
/// [`Error::Io`] when the variable is missing (`NotFound`: not started by `spawn_raw`) or
/// malformed, the fd is not open (`EBADF`), is not the named socket (inode mismatch), is
/// not a `SOCK_SEQPACKET` Unix socket, or was already adopted by an earlier call. On error
/// the fd is left open: it may belong to someone else.
///
/// # Examples
///
/// The child program's side (its parent started it with [`spawn_raw`]): answer each
/// packet with its length, until the parent hangs up.
///
/// ```no_run
/// use std::io::IoSlice;
/// use memfile::ipc::raw::RecvMode;
/// use memfile::ipc::{Error, raw_from_parent};
///
/// let socket = raw_from_parent()?;
/// let (mut buf, mut fds) = (vec![0u8; 64 << 10], Vec::new());
/// loop {
///     match socket.recv(&mut buf, &mut fds, RecvMode::Blocking) {
///         Ok(n) => socket.send(&[IoSlice::new(&(n as u64).to_le_bytes())], &[])?,
///         Err(Error::Disconnected { .. }) => break,
///         Err(e) => return Err(e),
///     }
///     fds.clear(); // close any fds that came along
/// }
/// # Ok::<(), memfile::ipc::Error>(())
/// ```
pub fn raw_from_parent() -> Result<RawSocket> {
    let invalid = |kind: io::ErrorKind, fd: Option<RawFd>, msg: String| {
        Error::io("raw_from_parent", fd, io::Error::new(kind, msg))
    };
    let value = std::env::var(FD_ENV).map_err(|_| {
        invalid(
            io::ErrorKind::NotFound,
            None,
            format!(
                "{FD_ENV} is not set (or not UTF-8): this process was not started by spawn_raw"
            ),
        )
    })?;
    let fd: RawFd = match value.trim().parse() {
        Ok(fd) if fd >= 0 => fd,
        _ => {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                None,
                format!("{FD_ENV}={value:?} is not an fd number"),
            ));
        }
    };
    let inode = match std::env::var(INODE_ENV) {
        Ok(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            invalid(
                io::ErrorKind::InvalidInput,
                Some(fd),
                format!("{INODE_ENV}={v:?} is not a number"),
            )
        })?),
        Err(_) => None,
    };
    // SAFETY: F_GETFD only reads the fd's flags; on a closed number it fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(Error::io(
            "raw_from_parent",
            Some(fd),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the fd was open just above. It is only borrowed for the checks below; if it
    // is not the parent's socket we give it back untouched.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if let Some(expected) = inode {
        let st = fstat(borrowed).map_err(|e| Error::io("fstat", Some(fd), e))?;
        if st.st_ino != expected {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                Some(fd),
                format!(
                    "fd {fd} has inode {} but {INODE_ENV} says {expected}: stale environment \
                     (inherited from a grandparent?)",
                    st.st_ino
                ),
            ));
        }
    }
    check_seqpacket(borrowed)?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(invalid(
            io::ErrorKind::AlreadyExists,
            Some(fd),
            format!("fd {fd} from {FD_ENV} was already adopted by an earlier raw_from_parent"),
        ));
    }
    // SAFETY: the parent put this socket here for this process alone (checked: open, the
    // inode it named, a seqpacket socket), and TAKEN makes this the only OwnedFd for it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let sock = RawSocket::from_fd(owned)?;
    if only_thread() {
        // SAFETY: this process has one thread (us), so no other thread can be reading the
        // environment concurrently; and it cannot gain one while we run this line.
        unsafe {
            std::env::remove_var(FD_ENV);
            std::env::remove_var(INODE_ENV);
        }
    }
    Ok(sock)
}

/// Whether this process has exactly one thread (`/proc/self/task` has one entry).
fn only_thread() -> bool {
    match std::fs::read_dir("/proc/self/task") {
        Ok(dir) => dir.take(2).count() == 1,
        Err(_) => false,
    }
}
