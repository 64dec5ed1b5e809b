//! The hand-written baselines' bare syscalls, in one place: a sealed memfd made and read
//! the way memfile does it, without memfile, and a `SOCK_SEQPACKET` pair with plain
//! `sendmsg`/`recvmsg`. `frozen_4k_fixed`, `small_rtt` and `__micro` all time these.

use std::io::{IoSlice, IoSliceMut};
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;

use crate::work::{Res, checksum, fill};

/// memfd_create, ftruncate, mmap, fill with `seed`, munmap, F_ADD_SEALS (Write, Shrink,
/// Grow, Seal): what `Frozen::build` does.
pub fn sealed_memfd(size: usize, seed: u8) -> Res<OwnedFd> {
    let fd = memfd_create(
        c"bench-raw",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    ftruncate(&fd, i64::try_from(size)?)?;
    let len = NonZeroUsize::new(size).ok_or("zero size")?;
    // SAFETY: a fresh memfd of `size` bytes that only this function knows; mapped shared
    // read-write, unmapped below before anything else can see the file.
    let ptr = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &fd,
            0,
        )
    }?;
    {
        // SAFETY: `ptr` is a live `size`-byte mapping, exclusively ours until the munmap.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr().cast::<u8>(), size) };
        fill(buf, seed);
    }
    // SAFETY: `ptr`/`size` is the mapping made above; the slice into it is gone.
    unsafe { munmap(ptr, size) }?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SEAL;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(fd)
}

/// fstat, F_GET_SEALS (must include Write and Shrink), mmap read-only private, read every
/// byte, munmap: what `Frozen::from_fd` and a read do. Returns the checksum.
pub fn verify_read(fd: &OwnedFd) -> Res<u64> {
    let size = usize::try_from(fstat(fd)?.st_size)?;
    let seals = SealFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GET_SEALS)?);
    if !seals.contains(SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK) {
        return Err(format!("raw: fd not sealed: {seals:?}").into());
    }
    let Some(len) = NonZeroUsize::new(size) else {
        return Ok(0);
    };
    // SAFETY: the file is sealed against writes and shrinking (checked above), so the
    // private read-only mapping cannot change or lose pages while we read it.
    let ptr = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ,
            MapFlags::MAP_PRIVATE,
            fd,
            0,
        )
    }?;
    // SAFETY: a live read-only mapping of `size` bytes, unmapped only after this use.
    let sum = checksum(unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), size) });
    // SAFETY: the mapping made above; the slice is no longer used.
    unsafe { munmap(ptr, size) }?;
    Ok(sum)
}

/// A connected `SOCK_SEQPACKET` pair (close-on-exec).
pub fn seqpacket_pair() -> Res<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Sends one packet of `bytes` with `fds` attached (none if empty).
pub fn send_packet(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> Res<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(sock, &[IoSlice::new(bytes)], cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one packet without fds into `buf`; its length (0 at end of stream).
pub fn recv_packet(sock: RawFd, buf: &mut [u8]) -> Res<usize> {
    Ok(recvmsg::<()>(sock, &mut [IoSliceMut::new(buf)], None, MsgFlags::empty())?.bytes)
}

/// Receives one packet carrying one memfd (`MSG_CMSG_CLOEXEC`); `None` at end of stream.
pub fn recv_memfd(sock: RawFd, cmsg: &mut [u8]) -> Res<Option<OwnedFd>> {
    let mut hdr = [0u8; 8];
    let mut iov = [IoSliceMut::new(&mut hdr)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut got = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for f in fds {
                // SAFETY: SCM_RIGHTS just installed this fd in our table; nobody else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                got.get_or_insert(owned);
            }
        }
    }
    if msg.bytes == 0 {
        return Ok(None);
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err("raw: truncated packet".into());
    }
    got.map(Some)
        .ok_or_else(|| "raw: packet without an fd".into())
}

/// A raw socket end that acks arrive on as 8-byte packets.
#[derive(Debug)]
pub struct SeqPacket(pub OwnedFd);

impl SeqPacket {
    /// The socket's fd number.
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
