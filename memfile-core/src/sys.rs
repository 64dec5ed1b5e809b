//! The few raw syscalls the crate makes, each returning `io::Result`.
//!
//! Everything goes through `nix`; this module only adapts types and names, and adds the
//! constants nix 0.32 lacks (`MFD_NOEXEC_SEAL`, `MFD_EXEC`, the hugetlb sizes) from `libc`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};

use crate::Seals;

/// `fcntl(fd, F_GET_SEALS)`: every bit the kernel reports, unknown ones included.
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> io::Result<Seals> {
    let bits = fcntl(fd, FcntlArg::F_GET_SEALS)?;
    Ok(Seals::from_bits_retain(bits as u32))
}

/// `fcntl(fd, F_ADD_SEALS, seals)`.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: Seals) -> io::Result<()> {
    fcntl(
        fd,
        FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(seals.bits() as i32)),
    )?;
    Ok(())
}

/// `fstat` size of the file, as `u64`.
pub(crate) fn file_len(fd: impl AsFd) -> io::Result<u64> {
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    Ok(st.st_size as u64)
}

/// What kind of file `mode` (from `fstat`) describes, for error messages.
fn file_kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        m if m == libc::S_IFREG => "regular file",
        m if m == libc::S_IFDIR => "directory",
        m if m == libc::S_IFIFO => "pipe",
        m if m == libc::S_IFSOCK => "socket",
        m if m == libc::S_IFCHR => "character device",
        m if m == libc::S_IFBLK => "block device",
        m if m == libc::S_IFLNK => "symbolic link",
        // eventfd, epoll, timerfd, ...: anonymous inodes carry no file type bits.
        _ => "special file",
    }
}

/// Whether `fd` refers to a memfd (and is usable as one): `Err` says why not, naming the fd
/// and what it is instead.
///
/// `F_GET_SEALS` alone cannot tell: it succeeds on every tmpfs file (a `/dev/shm` file reports
/// `{Seal}`). So on Linux a memfd is recognized by its `/proc/self/fd/N` link, which the kernel
/// spells `/memfd:NAME (deleted)`, together with `fstat` (a regular file with no links, as a
/// memfd is in no directory), `fstatfs` (tmpfs or hugetlbfs, so that a disk file that happens
/// to live at `/memfd:x` does not pass), and `F_GETFL` (not an `O_PATH` descriptor, which can
/// neither be read nor sealed).
///
/// The descriptor may come from a process this one does not trust, so the first call is
/// `F_GET_SEALS`, which answers at once (`EINVAL`, `EBADF` for `O_PATH`) for anything that is
/// not a tmpfs or hugetlbfs file: `fstat` or `fstatfs` of a FUSE file would wait for the FUSE
/// daemon, which may be the sender. What such a descriptor is, is then found out without
/// asking its file system ([`describe_not_shmem`]).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn check_memfd(fd: BorrowedFd<'_>) -> Result<(), String> {
    if let Err(e) = get_seals(fd) {
        return Err(describe_not_shmem(fd, &e));
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    check_memfd_with_link(fd, link)
}

/// Why `fd`, on which `F_GET_SEALS` failed with `error`, is not a memfd, naming the fd and
/// what it is, without a call that could wait for its file system.
///
/// `F_GETFL` and the `/proc/self/fd/N` link come from the open file itself; the file type
/// and link count come from `statx(AT_STATX_DONT_SYNC)`, which answers from the cached inode
/// and never asks the file system (FUSE or NFS) to refresh it; no `fstatfs`: the failed
/// `F_GET_SEALS` already says the file system is neither tmpfs nor hugetlbfs.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn describe_not_shmem(fd: BorrowedFd<'_>, error: &io::Error) -> String {
    use nix::fcntl::OFlag;

    let raw = fd.as_raw_fd();
    let link = std::fs::read_link(format!("/proc/self/fd/{raw}"));
    let kind = cached_file_kind(fd);
    let what = match (&link, kind) {
        (Ok(target), Some(kind)) => format!("{kind} ({})", target.display()),
        (Ok(target), None) => format!("file ({})", target.display()),
        (Err(_), Some(kind)) => kind.to_owned(),
        (Err(_), None) => "file".to_owned(),
    };
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        if OFlag::from_bits_retain(flags).contains(OFlag::O_PATH) {
            return format!(
                "fd {raw} is an O_PATH descriptor of a {what}: it can be neither read, written nor sealed"
            );
        }
    }
    match kind {
        Some("regular file") => format!(
            "fd {raw} is not a memfd: it is a {what} on a file system that is neither tmpfs nor \
             hugetlbfs (F_GET_SEALS: {error})"
        ),
        _ => format!("fd {raw} is not a memfd: it is a {what}"),
    }
}

/// The file type of `fd` from `statx(AT_STATX_DONT_SYNC)` (cached attributes only), or
/// `None` if `statx` is not there (Linux before 4.11, seccomp) or fails.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn cached_file_kind(fd: BorrowedFd<'_>) -> Option<&'static str> {
    // nix 0.32 has no `statx`; libc has it for glibc, musl and Android.
    // SAFETY: all-zero bytes are a valid `statx` (plain integers).
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the call; the empty path with `AT_EMPTY_PATH` means `fd`
    // itself; `stx` is a valid, writable `statx` that the kernel fills.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_TYPE == 0 {
        return None;
    }
    Some(file_kind(libc::mode_t::from(stx.stx_mode)))
}

/// [`check_memfd`] with the `/proc/self/fd/N` link already read (or not readable), for a
/// file on which `F_GET_SEALS` succeeded (so a tmpfs or hugetlbfs file, which no `fstat` or
/// `fstatfs` can make wait).
///
/// Without `/proc` (a chroot, a sandbox) the link cannot be read; then an unlinked regular
/// file on tmpfs or hugetlbfs that answers `F_GET_SEALS` passes. That also lets through a
/// `/dev/shm` file that was unlinked, which is harmless: such a file can gain no seal, so it
/// can never pass as sealed, and it is as private as a memfd.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn check_memfd_with_link(
    fd: BorrowedFd<'_>,
    link: io::Result<std::path::PathBuf>,
) -> Result<(), String> {
    use nix::fcntl::OFlag;
    use nix::sys::statfs::{HUGETLBFS_MAGIC, TMPFS_MAGIC, fstatfs};

    let raw = fd.as_raw_fd();
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("fd {raw}: fstat failed: {e}"))?;
    let kind = file_kind(st.st_mode);
    let what = match &link {
        Ok(target) => format!("{kind} ({})", target.display()),
        Err(_) => kind.to_owned(),
    };
    let flags =
        fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("fd {raw}: F_GETFL failed: {e}"))?;
    if OFlag::from_bits_retain(flags).contains(OFlag::O_PATH) {
        return Err(format!(
            "fd {raw} is an O_PATH descriptor of a {what}: it can be neither read, written nor sealed"
        ));
    }
    if kind != "regular file" {
        return Err(format!("fd {raw} is not a memfd: it is a {what}"));
    }
    // A memfd is in no directory; a file that merely lives at `/memfd:x` is in one.
    if st.st_nlink != 0 {
        return Err(format!(
            "fd {raw} is not a memfd: it is a {what} with a name in a directory"
        ));
    }
    if let Ok(target) = &link {
        if !target
            .as_os_str()
            .as_encoded_bytes()
            .starts_with(b"/memfd:")
        {
            return Err(format!("fd {raw} is not a memfd: it is a {what}"));
        }
    }
    let fs = fstatfs(fd).map_err(|e| format!("fd {raw}: fstatfs failed: {e}"))?;
    let fs_type = fs.filesystem_type();
    if fs_type != TMPFS_MAGIC && fs_type != HUGETLBFS_MAGIC {
        return Err(format!(
            "fd {raw} is not a memfd: it is a {what} on a file system that is neither tmpfs nor hugetlbfs"
        ));
    }
    Ok(())
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn memfd() -> OwnedFd {
        memfd_create(c"sys-test", libc::MFD_CLOEXEC).unwrap()
    }

    fn no_proc() -> io::Result<std::path::PathBuf> {
        Err(io::Error::from(io::ErrorKind::NotFound))
    }

    #[test]
    fn memfds_pass_with_and_without_proc() {
        let fd = memfd();
        check_memfd(fd.as_fd()).unwrap();
        check_memfd_with_link(fd.as_fd(), no_proc()).unwrap();
    }

    #[test]
    fn without_proc_other_files_still_fail() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let err = check_memfd_with_link(r.as_fd(), no_proc()).unwrap_err();
        assert!(err.ends_with("it is a pipe"), "{err}");

        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = check_memfd_with_link(a.as_fd(), no_proc()).unwrap_err();
        assert!(err.ends_with("it is a socket"), "{err}");
    }

    /// The fact `Frozen::from_fd` relies on to skip the `/proc` link: a tmpfs file made
    /// by `open()` or `O_TMPFILE` can never gain a seal, so seals ⊇ Write|Shrink mean memfd.
    #[test]
    fn tmpfs_files_not_made_by_memfd_create_cannot_gain_seals() {
        use nix::fcntl::{OFlag, open};
        use nix::sys::stat::Mode;
        let dir = std::path::Path::new("/dev/shm");
        if nix::sys::statfs::statfs(dir).map_or(true, |fs| {
            fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC
        }) {
            eprintln!("skipped: /dev/shm is not a tmpfs here");
            return;
        }
        let rw = OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let path = dir.join(format!("memfile-sys-test-{}", std::process::id()));
        let named = open(&path, rw | OFlag::O_CREAT | OFlag::O_EXCL, Mode::S_IRUSR).unwrap();
        std::fs::remove_file(&path).unwrap();
        let tmpfile = open(dir, rw | OFlag::O_TMPFILE, Mode::S_IRUSR).unwrap();
        for fd in [named.as_fd(), tmpfile.as_fd()] {
            assert_eq!(get_seals(fd).unwrap(), crate::Seal::Seal.into());
            for seal in [
                crate::Seal::Write,
                crate::Seal::Shrink,
                crate::Seal::FutureWrite,
            ] {
                let err = add_seals(fd, seal.into()).unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{seal:?}: {err}");
            }
        }
    }

    #[test]
    fn a_linked_file_named_like_a_memfd_fails() {
        let fd = memfd();
        let fake = Ok(std::path::PathBuf::from("/memfd:fake"));
        check_memfd_with_link(fd.as_fd(), fake).unwrap();
        // Whatever the link says, a file with a name in a directory is no memfd.
        let named = tempfile::NamedTempFile::new().unwrap();
        let fake = Ok(std::path::PathBuf::from("/memfd:x"));
        let err = check_memfd_with_link(named.as_file().as_fd(), fake).unwrap_err();
        assert!(err.contains("with a name in a directory"), "{err}");
    }
}

/// Whether `fd` refers to a memfd: `Err` says why not, naming the fd and what it is instead.
///
/// FreeBSD has no `/proc/self/fd`: a memfd there is a shared memory object, the only kind of
/// file on which `F_GET_SEALS` succeeds (this also accepts `shm_open` objects).
#[cfg(target_os = "freebsd")]
pub(crate) fn check_memfd(fd: BorrowedFd<'_>) -> Result<(), String> {
    let raw = fd.as_raw_fd();
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("fd {raw}: fstat failed: {e}"))?;
    let kind = file_kind(st.st_mode);
    if kind != "regular file" {
        return Err(format!("fd {raw} is not a memfd: it is a {kind}"));
    }
    if let Err(e) = fcntl(fd, FcntlArg::F_GET_SEALS) {
        return Err(format!(
            "fd {raw} is not a memfd: it is a {kind} without seals ({e})"
        ));
    }
    Ok(())
}

/// Whether shmem transparent huge pages are on `advise`: then a memfd gets huge pages only
/// through a mapping marked `MADV_HUGEPAGE`, never through `write`/`pwrite` (which have no
/// mapping to ask on). Read once from `/sys/kernel/mm/transparent_hugepage/shmem_enabled`
/// (the bracketed word is the setting) and cached: false when it cannot be read.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn shmem_thp_advise() -> bool {
    static ADVISE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ADVISE.get_or_init(|| {
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
            .is_ok_and(|s| s.contains("[advise]"))
    })
}

/// `memfd_create(name, flags)`; `flags` may hold bits nix has no names for.
pub(crate) fn memfd_create(name: &std::ffi::CStr, flags: u32) -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::memfd::MFdFlags;
    Ok(nix::sys::memfd::memfd_create(
        name,
        MFdFlags::from_bits_retain(flags as _),
    )?)
}

/// Converts a file offset or length for the `off_t` arguments of `fallocate`.
fn off_t(value: u64, what: &str) -> io::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {value} does not fit in off_t"),
        )
    })
}

/// `fallocate(fd, 0, offset, len)`: allocates the range, growing the file if it ends past
/// the end of the file.
pub(crate) fn allocate(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = (off_t(offset, "offset")?, off_t(len, "length")?);
    #[cfg(target_os = "linux")]
    nix::fcntl::fallocate(fd, nix::fcntl::FallocateFlags::empty(), offset, len)?;
    #[cfg(not(target_os = "linux"))]
    nix::fcntl::posix_fallocate(fd, offset, len)?;
    Ok(())
}

/// `fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len)` (Linux), or
/// `fspacectl(SPACECTL_DEALLOC)` (FreeBSD): frees the range, which then reads as zeros.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = (off_t(offset, "offset")?, off_t(len, "length")?);
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::FallocateFlags;
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        nix::fcntl::fallocate(fd, mode, offset, len)?;
    }
    #[cfg(target_os = "freebsd")]
    nix::fcntl::fspacectl_all(fd, offset, len)?;
    Ok(())
}
