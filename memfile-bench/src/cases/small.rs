//! `small_rtt`: a 64-byte typed message there and back.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::time::Instant;

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair};
use serde_bytes::ByteArray;

use crate::cases::{Alt, Params};
use crate::proc::spawn_with_fds;
use crate::proc::{ChildArgs, inherited_fd, ipc_child, ipc_spawn, ours_spawn, self_command};
use crate::work::Res;

/// The message: 64 bytes as one byte string (what a small control message would be).
type Small = ByteArray<64>;

/// The alternatives, ours first.
pub fn alts() -> Vec<Alt> {
    vec![
        Alt {
            name: "ours",
            run: ours,
        },
        Alt {
            name: "raw_seqpacket",
            run: raw,
        },
        Alt {
            name: "ipc_channel",
            run: ipc,
        },
    ]
}

/// Child roles of this case.
pub fn child(a: &ChildArgs) -> Option<Res<()>> {
    Some(match a.role.as_str() {
        "small.ours" => ours_child(),
        "small.raw" => raw_child(),
        "small.ipc" => ipc_child_run(&a.extra),
        _ => return None,
    })
}

fn ours(p: &Params) -> Res<f64> {
    let (child, tx, rx) = ours_spawn::<Small, Small>("small.ours", 64, 1, "")?;
    let msg = ByteArray::new([7u8; 64]);
    for _ in 0..p.warmup {
        tx.send(&msg)?;
        rx.recv()?;
    }
    let t = Instant::now();
    for _ in 0..p.iters {
        tx.send(&msg)?;
        std::hint::black_box(rx.recv()?);
    }
    let secs = t.elapsed().as_secs_f64() / p.iters as f64;
    drop((tx, rx));
    child.finish()?;
    Ok(secs)
}

fn ours_child() -> Res<()> {
    let (tx, rx) = memfile_ipc::from_parent::<Small, Small>()?;
    loop {
        match rx.recv() {
            Ok(m) => tx.send(&m)?,
            Err(memfile_ipc::Error::Disconnected { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn raw(p: &Params) -> Res<f64> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let child = spawn_with_fds(self_command("small.raw", 64, 1, "")?, &[&b])?;
    drop(b);
    let fd = a.as_raw_fd();
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    let mut round_trip = || -> Res<()> {
        sendmsg::<()>(fd, &[IoSlice::new(&msg)], &[], MsgFlags::empty(), None)?;
        let n = recvmsg::<()>(
            fd,
            &mut [IoSliceMut::new(&mut buf)],
            None,
            MsgFlags::empty(),
        )?
        .bytes;
        if n != 64 {
            return Err(format!("raw_seqpacket: got {n} bytes back, expected 64").into());
        }
        Ok(())
    };
    for _ in 0..p.warmup {
        round_trip()?;
    }
    let t = Instant::now();
    for _ in 0..p.iters {
        round_trip()?;
    }
    let secs = t.elapsed().as_secs_f64() / p.iters as f64;
    drop(a);
    child.finish()?;
    Ok(secs)
}

fn raw_child() -> Res<()> {
    let s = inherited_fd(0)?;
    let fd = s.as_raw_fd();
    let mut buf = [0u8; 64];
    loop {
        let n = recvmsg::<()>(
            fd,
            &mut [IoSliceMut::new(&mut buf)],
            None,
            MsgFlags::empty(),
        )?
        .bytes;
        if n == 0 {
            return Ok(());
        }
        sendmsg::<()>(fd, &[IoSlice::new(&buf[..n])], &[], MsgFlags::empty(), None)?;
    }
}

fn ipc(p: &Params) -> Res<f64> {
    let (child, tx, rx) = ipc_spawn::<Small, Small>("small.ipc", 64, 1)?;
    let msg = ByteArray::new([7u8; 64]);
    for _ in 0..p.warmup {
        tx.send(msg)?;
        rx.recv()?;
    }
    let t = Instant::now();
    for _ in 0..p.iters {
        tx.send(msg)?;
        std::hint::black_box(rx.recv()?);
    }
    let secs = t.elapsed().as_secs_f64() / p.iters as f64;
    drop((tx, rx));
    child.finish()?;
    Ok(secs)
}

fn ipc_child_run(name: &str) -> Res<()> {
    let (rx, tx) = ipc_child::<Small, Small>(name)?;
    while let Ok(m) = rx.recv() {
        tx.send(m)?;
    }
    Ok(())
}
