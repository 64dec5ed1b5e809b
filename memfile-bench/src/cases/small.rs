//! `small_rtt`: a 64-byte typed message there and back.

use std::os::fd::AsRawFd;

use serde_bytes::ByteArray;

use crate::cases::{Alt, Params, Role, time_ops};
use crate::proc::{ChildArgs, Linked, inherited_fd, ipc_child, ipc_spawn, ours_spawn, raw_spawn};
use crate::syscalls::{recv_packet, send_packet};
use crate::work::Res;

/// The message: 64 bytes as one byte string (what a small control message would be).
type Small = ByteArray<64>;

/// The alternatives, ours first.
pub const ALTS: &[Alt] = &[
    Alt::new("ours", ours),
    Alt::new("raw_seqpacket", raw),
    Alt::new("ipc_channel", ipc),
];

/// Child roles of this case: each sends every message back.
pub const ROLES: &[Role] = &[
    Role::new("small.ours", |_| ours_child()),
    Role::new("small.raw", |_| raw_child()),
    Role::new("small.ipc", |a: &ChildArgs| ipc_child_run(&a.extra)),
];

/// Times `p` round trips, `round_trip(tx, rx)` each, against the one child of `links`.
fn round_trips<Tx, Rx>(
    p: &Params,
    links: Linked<Tx, Rx>,
    mut round_trip: impl FnMut(&Tx, &Rx) -> Res<()>,
) -> Res<f64> {
    let (tx, rx) = links.first()?;
    let secs = time_ops(p, |_| round_trip(tx, rx))?;
    links.finish()?;
    Ok(secs)
}

fn ours(p: &Params) -> Res<f64> {
    let msg = ByteArray::new([7u8; 64]);
    round_trips(
        p,
        ours_spawn::<Small, Small>("small.ours", 64, 1, "")?,
        |tx, rx| {
            tx.send(&msg)?;
            std::hint::black_box(rx.recv()?);
            Ok(())
        },
    )
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
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    round_trips(p, raw_spawn("small.raw", 64, 1)?, |tx, rx| {
        send_packet(tx.raw(), &msg, &[])?;
        match recv_packet(rx.raw(), &mut buf)? {
            64 => Ok(()),
            n => Err(format!("raw_seqpacket: got {n} bytes back, expected 64").into()),
        }
    })
}

fn raw_child() -> Res<()> {
    let s = inherited_fd(0)?;
    let fd = s.as_raw_fd();
    let mut buf = [0u8; 64];
    loop {
        let n = recv_packet(fd, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        send_packet(fd, &buf[..n], &[])?;
    }
}

fn ipc(p: &Params) -> Res<f64> {
    let msg = ByteArray::new([7u8; 64]);
    round_trips(
        p,
        ipc_spawn::<Small, Small>("small.ipc", 64, 1)?,
        |tx, rx| {
            tx.send(msg)?;
            std::hint::black_box(rx.recv()?);
            Ok(())
        },
    )
}

fn ipc_child_run(name: &str) -> Res<()> {
    let (rx, tx) = ipc_child::<Small, Small>(name)?;
    while let Ok(m) = rx.recv() {
        tx.send(m)?;
    }
    Ok(())
}
