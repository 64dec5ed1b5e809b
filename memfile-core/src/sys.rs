//! The few raw syscalls the crate makes, each returning `io::Result`.
//!
//! Everything goes through `nix`; this module only adapts types and names.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};

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
