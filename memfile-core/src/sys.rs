//! The few raw syscalls the crate makes, each returning `io::Result`.
//!
//! Everything goes through `nix`; this module only adapts types and names, and adds the
//! constants nix 0.32 lacks (`MFD_NOEXEC_SEAL`, `MFD_EXEC`, the hugetlb sizes) from `libc`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl};

use crate::Seals;

/// `fcntl(fd, F_GET_SEALS)`: every bit the kernel reports, unknown ones included.
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> io::Result<Seals> {
    let bits = fcntl(fd, FcntlArg::F_GET_SEALS)?;
    Ok(Seals::from_bits_retain(bits as u32))
}

/// `fcntl(fd, F_ADD_SEALS, seals)`.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: Seals) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(seals.bits() as i32)))?;
    Ok(())
}

/// `fstat` size of the file, as `u64`.
pub(crate) fn file_len(fd: impl AsFd) -> io::Result<u64> {
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    Ok(st.st_size as u64)
}

/// What kind of file `mode` (from `fstat`) describes, for error messages.
fn file_kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT as u32 {
        m if m == libc::S_IFREG as u32 => "regular file",
        m if m == libc::S_IFDIR as u32 => "directory",
        m if m == libc::S_IFIFO as u32 => "pipe",
        m if m == libc::S_IFSOCK as u32 => "socket",
        m if m == libc::S_IFCHR as u32 => "character device",
        m if m == libc::S_IFBLK as u32 => "block device",
        m if m == libc::S_IFLNK as u32 => "symbolic link",
        // eventfd, epoll, timerfd, ...: anonymous inodes carry no file type bits.
        _ => "special file",
    }
}

/// Whether `fd` refers to a memfd (and is usable as one): `Err` says why not, naming the fd
/// and what it is instead.
///
/// `F_GET_SEALS` alone cannot tell: it succeeds on every tmpfs file (a `/dev/shm` file reports
/// `{Seal}`). So on Linux a memfd is recognized by its `/proc/self/fd/N` link, which the kernel
/// spells `/memfd:NAME (deleted)`, together with `fstat` (a regular file), `fstatfs` (tmpfs
/// or hugetlbfs, so that a disk file that happens to live at `/memfd:x` does not pass), and
/// `F_GETFL` (not an `O_PATH` descriptor, which can neither be read nor sealed).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn check_memfd(fd: BorrowedFd<'_>) -> Result<(), String> {
    use nix::sys::statfs::{HUGETLBFS_MAGIC, TMPFS_MAGIC, fstatfs};

    let raw = fd.as_raw_fd();
    let proc_path = format!("/proc/self/fd/{raw}");
    let link = std::fs::read_link(&proc_path);
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("fd {raw}: fstat failed: {e}"))?;
    let kind = file_kind(st.st_mode as u32);
    let what = match &link {
        Ok(target) => format!("{kind} ({})", target.display()),
        Err(_) => kind.to_owned(),
    };
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("fd {raw}: F_GETFL failed: {e}"))?;
    if OFlag::from_bits_retain(flags).contains(OFlag::O_PATH) {
        return Err(format!(
            "fd {raw} is an O_PATH descriptor of a {what}: it can be neither read, written nor sealed"
        ));
    }
    if kind != "regular file" {
        return Err(format!("fd {raw} is not a memfd: it is a {what}"));
    }
    let target = link.map_err(|e| {
        format!("fd {raw}: cannot tell whether it is a memfd: reading {proc_path} failed: {e}")
    })?;
    if !target.as_os_str().as_encoded_bytes().starts_with(b"/memfd:") {
        return Err(format!("fd {raw} is not a memfd: it is a {what}"));
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

/// Whether `fd` refers to a memfd: `Err` says why not, naming the fd and what it is instead.
///
/// FreeBSD has no `/proc/self/fd`: a memfd there is a shared memory object, the only kind of
/// file on which `F_GET_SEALS` succeeds (this also accepts `shm_open` objects).
#[cfg(target_os = "freebsd")]
pub(crate) fn check_memfd(fd: BorrowedFd<'_>) -> Result<(), String> {
    let raw = fd.as_raw_fd();
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("fd {raw}: fstat failed: {e}"))?;
    let kind = file_kind(st.st_mode as u32);
    if kind != "regular file" {
        return Err(format!("fd {raw} is not a memfd: it is a {kind}"));
    }
    if let Err(e) = fcntl(fd, FcntlArg::F_GET_SEALS) {
        return Err(format!("fd {raw} is not a memfd: it is a {kind} without seals ({e})"));
    }
    Ok(())
}

/// `memfd_create(name, flags)`; `flags` may hold bits nix has no names for.
pub(crate) fn memfd_create(name: &std::ffi::CStr, flags: u32) -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::memfd::MFdFlags;
    Ok(nix::sys::memfd::memfd_create(name, MFdFlags::from_bits_retain(flags as _))?)
}

/// Converts a file offset or length for the `off_t` arguments of `fallocate`.
fn off_t(value: u64, what: &str) -> io::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what} {value} does not fit in off_t"))
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
