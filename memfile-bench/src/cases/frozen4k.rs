//! `frozen_4k_fixed`: the whole life of one 4 KiB sealed buffer — create, fill, freeze,
//! send, verify, map, read, drop — the fixed cost every buffer pays.

use std::os::fd::{AsRawFd, RawFd};

use ipc_channel::ipc::IpcSharedMemory;
use memfile_core::Frozen;
use memfile_ipc::Fd;

use crate::cases::{Alt, Params, Role, consume, drive_linked};
use crate::proc::{inherited_fd, ipc_spawn, ours_spawn, raw_spawn};
use crate::syscalls::{recv_memfd, sealed_memfd, send_packet, verify_read};
use crate::work::{Res, fill};

/// The buffer size of this case.
pub const SIZE: usize = 4096;

/// The alternatives, ours first.
pub const ALTS: &[Alt] = &[
    Alt::new("ours", ours),
    Alt::new("raw_syscalls", raw),
    Alt::new("ipc_channel_shmem", ipc_shmem),
    Alt::new("variant:from_bytes", ours_from_bytes),
];

/// Child roles of this case.
pub const ROLES: &[Role] = &[Role::new("f4k.raw", |a| raw_child(a.ack_every))];

/// The consumer acks once per batch of `p.iters` buffers.
fn ours_with(p: &Params, mut make: impl FnMut(u8) -> std::io::Result<Frozen>) -> Res<f64> {
    let links = ours_spawn::<Fd<Frozen>, u64>("frozen.consume", SIZE, p.iters, "")?;
    drive_linked(p, p.iters, links, |tx, s| {
        Ok(tx[0].send(&Fd::new(make(s)?))?)
    })
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
    let links = ipc_spawn::<IpcSharedMemory, u64>("shm.consume", SIZE, p.iters)?;
    let mut src = vec![0u8; SIZE];
    drive_linked(p, p.iters, links, |tx, s| {
        fill(&mut src, s);
        Ok(tx[0].send(IpcSharedMemory::from_bytes(&src))?)
    })
}

/// The same syscalls as ours, hand-written: memfd_create, ftruncate, mmap, fill, munmap,
/// F_ADD_SEALS, sendmsg(SCM_RIGHTS), close.
fn raw(p: &Params) -> Res<f64> {
    let links = raw_spawn("f4k.raw", SIZE, p.iters)?;
    drive_linked(p, p.iters, links, |tx, s| {
        let fd = sealed_memfd(SIZE, s)?;
        send_packet(tx[0].raw(), &(SIZE as u64).to_le_bytes(), &[fd.as_raw_fd()])
    })
}

/// Receives each memfd with recvmsg, verifies (fstat, F_GET_SEALS), maps read-only
/// private, reads, unmaps, closes.
fn raw_child(ack_every: usize) -> Res<()> {
    let s = inherited_fd(0)?;
    let sock = s.as_raw_fd();
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    consume(
        ack_every,
        || {
            recv_memfd(sock, &mut cmsg)?
                .map(|fd| verify_read(&fd))
                .transpose()
        },
        |v| send_packet(sock, &v.to_le_bytes(), &[]),
    )
}
