//! `fanout_4`: one buffer to four consumer processes, each reading every byte.

use memfile_core::Frozen;
use memfile_ipc::Fd;

use memmap2::Advice;

use crate::cases::large::{build_tuned, socket_copy_to};
use crate::cases::{Alt, Params, drive};
use crate::proc::{finish_all, ours_spawn};
use crate::work::{Res, fill};

/// Consumers per buffer.
pub const FAN: usize = 4;

/// The alternatives, ours first.
pub fn alts(variants: bool) -> Vec<Alt> {
    let mut v = vec![
        Alt {
            name: "ours",
            run: ours,
        },
        Alt {
            name: "socket_copy",
            run: socket_copy,
        },
    ];
    if variants {
        v.push(Alt {
            name: "variant:madv_hugepage",
            run: ours_hugepage,
        });
    }
    v
}

/// One `Frozen` built per operation and sent to every consumer (each gets the same pages).
fn ours(p: &Params) -> Res<f64> {
    let size = p.size;
    ours_with(p, |s| {
        Ok(Frozen::build("bench-fanout", size, |b| fill(b, s))?)
    })
}

/// As `ours`, with `MADV_HUGEPAGE` on the filling mapping.
fn ours_hugepage(p: &Params) -> Res<f64> {
    let size = p.size;
    ours_with(p, |s| build_tuned(size, s, Some(Advice::HugePage), false))
}

fn ours_with(p: &Params, mut make: impl FnMut(u8) -> Res<Frozen>) -> Res<f64> {
    let mut children = Vec::new();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..FAN {
        let (c, tx, rx) = ours_spawn::<Fd<Frozen>, u64>("frozen.consume", p.size, 1, "")?;
        children.push(c);
        txs.push(tx);
        rxs.push(rx);
    }
    let secs = drive(
        p,
        1,
        FAN as u64,
        |s| {
            let f = Fd::new(make(s)?);
            for tx in &txs {
                tx.send(&f)?;
            }
            Ok(())
        },
        || {
            let mut sum = 0u64;
            for rx in &rxs {
                sum = sum.wrapping_add(rx.recv()?);
            }
            Ok(sum)
        },
    )?;
    drop((txs, rxs));
    finish_all(children)?;
    Ok(secs)
}

fn socket_copy(p: &Params) -> Res<f64> {
    socket_copy_to(p, FAN)
}
