//! `frozen_4k_fixed`: the whole life of one 4 KiB sealed buffer — create, fill, freeze,
//! send, verify, map, read, drop — the fixed cost every buffer pays.

use std::io::{IoSlice, IoSliceMut};
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use ipc_channel::ipc::IpcSharedMemory;
use memfile_core::Frozen;
use memfile_ipc::Fd;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;

use crate::cases::{Alt, Params, drive};
use crate::proc::{ChildArgs, inherited_fd, ipc_spawn, ours_spawn, self_command, spawn_with_fds};
use crate::work::{Res, checksum, fill};

/// The buffer size of this case.
pub const SIZE: usize = 4096;

/// The alternatives, ours first.
pub fn alts(variants: bool) -> Vec<Alt> {
    let mut v = vec![
        Alt {
            name: "ours",
            run: ours,
        },
        Alt {
            name: "raw_syscalls",
            run: raw,
        },
        Alt {
            name: "ipc_channel_shmem",
            run: ipc_shmem,
        },
    ];
    if variants {
        v.push(Alt {
            name: "variant:from_bytes",
            run: ours_from_bytes,
        });
    }
    v
}

/// Child roles of this case.
pub fn child(a: &ChildArgs) -> Option<Res<()>> {
    match a.role.as_str() {
        "f4k.raw" => Some(raw_child(a.ack_every)),
        _ => None,
    }
}

fn ours_with(p: &Params, mut make: impl FnMut(u8) -> std::io::Result<Frozen>) -> Res<f64> {
    let (child, tx, rx) = ours_spawn::<Fd<Frozen>, u64>("frozen.consume", SIZE, p.iters, "")?;
    let secs = drive(
        p,
        p.iters,
        1,
        |s| {
            tx.send(&Fd::new(make(s)?))?;
            Ok(())
        },
        || Ok(rx.recv()?),
    )?;
    drop((tx, rx));
    child.finish()?;
    Ok(secs)
}

/// `Frozen::build`: fill in place through the crate's own mapping.
fn ours(p: &Params) -> Res<f64> {
    ours_with(p, |s| Frozen::build("bench-4k", SIZE, |b| fill(b, s)))
}

/// `Frozen::from_bytes`: fill a reused buffer, `pwrite` it into the memfd.
fn ours_from_bytes(p: &Params) -> Res<f64> {
    let mut src = vec![0u8; SIZE];
    ours_with(p, move |s| {
        fill(&mut src, s);
        Frozen::from_bytes("bench-4k", &src)
    })
}

fn ipc_shmem(p: &Params) -> Res<f64> {
    let (child, tx, rx) = ipc_spawn::<IpcSharedMemory, u64>("shm.consume", SIZE, p.iters)?;
    let mut src = vec![0u8; SIZE];
    let secs = drive(
        p,
        p.iters,
        1,
        |s| {
            fill(&mut src, s);
            tx.send(IpcSharedMemory::from_bytes(&src))?;
            Ok(())
        },
        || Ok(rx.recv()?),
    )?;
    drop((tx, rx));
    child.finish()?;
    Ok(secs)
}

/// The same syscalls as ours, hand-written: memfd_create, ftruncate, mmap, fill, munmap,
/// F_ADD_SEALS, sendmsg(SCM_RIGHTS), close.
fn raw_send(sock: RawFd, seed: u8) -> Res<()> {
    let fd = memfd_create(
        c"bench-4k",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    ftruncate(&fd, SIZE as i64)?;
    let len = NonZeroUsize::new(SIZE).ok_or("zero size")?;
    // SAFETY: a fresh memfd of SIZE bytes that only this function knows; mapped shared
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
        // SAFETY: `ptr` is a live SIZE-byte mapping, exclusively ours until the munmap.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr().cast::<u8>(), SIZE) };
        fill(buf, seed);
    }
    // SAFETY: `ptr`/SIZE is the mapping made above; the slice into it is gone.
    unsafe { munmap(ptr, SIZE) }?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SEAL;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals))?;
    let len_bytes = (SIZE as u64).to_le_bytes();
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(
        sock,
        &[IoSlice::new(&len_bytes)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

fn raw(p: &Params) -> Res<f64> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let child = spawn_with_fds(self_command("f4k.raw", SIZE, p.iters, "")?, &[&b])?;
    drop(b);
    let sock = a.as_raw_fd();
    let secs = drive(
        p,
        p.iters,
        1,
        |s| raw_send(sock, s),
        || {
            let mut buf = [0u8; 8];
            let n = recvmsg::<()>(
                sock,
                &mut [IoSliceMut::new(&mut buf)],
                None,
                MsgFlags::empty(),
            )?
            .bytes;
            if n != 8 {
                return Err("raw_syscalls: short ack".into());
            }
            Ok(u64::from_le_bytes(buf))
        },
    )?;
    drop(a);
    child.finish()?;
    Ok(secs)
}

/// Receives one memfd (recvmsg with MSG_CMSG_CLOEXEC); `None` at end of stream.
fn raw_recv(sock: RawFd, cmsg: &mut [u8]) -> Res<Option<OwnedFd>> {
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
        return Err("raw_syscalls: truncated packet".into());
    }
    got.map(Some)
        .ok_or_else(|| "raw_syscalls: packet without an fd".into())
}

/// Verify (fstat, F_GET_SEALS), map read-only private, read, unmap, close.
fn raw_consume_one(fd: OwnedFd) -> Res<u64> {
    let size = usize::try_from(fstat(&fd)?.st_size)?;
    let seals = SealFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GET_SEALS)?);
    if !seals.contains(SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK) {
        return Err(format!("raw_syscalls: fd not sealed: {seals:?}").into());
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
            &fd,
            0,
        )
    }?;
    // SAFETY: a live read-only mapping of `size` bytes, unmapped only after this use.
    let sum = checksum(unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), size) });
    // SAFETY: the mapping made above; the slice is no longer used.
    unsafe { munmap(ptr, size) }?;
    Ok(sum)
}

fn raw_child(ack_every: usize) -> Res<()> {
    let s = inherited_fd(0)?;
    let sock = s.as_raw_fd();
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let ack = |v: u64| -> Res<()> {
        let b = v.to_le_bytes();
        sendmsg::<()>(sock, &[IoSlice::new(&b)], &[], MsgFlags::empty(), None)?;
        Ok(())
    };
    ack(0)?;
    let (mut acc, mut n) = (0u64, 0usize);
    while let Some(fd) = raw_recv(sock, &mut cmsg)? {
        acc = acc.wrapping_add(raw_consume_one(fd)?);
        n += 1;
        if n == ack_every {
            ack(acc)?;
            (acc, n) = (0, 0);
        }
    }
    Ok(())
}
