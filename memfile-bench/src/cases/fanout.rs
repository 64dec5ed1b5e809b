//! `fanout_4`: one buffer to four consumer processes, each reading every byte.

use memfile_core::Frozen;
use memfile_ipc::Fd;

use memmap2::Advice;

use crate::cases::large::{build_tuned, socket_copy_to};
use crate::cases::{Alt, Params, drive_linked};
use crate::proc::{Linked, ours_spawn};
use crate::work::{Res, fill};

/// Consumers per buffer.
pub const FAN: usize = 4;

/// The alternatives, ours first.
pub const ALTS: &[Alt] = &[
    Alt::new("ours", ours),
    Alt::new("socket_copy", socket_copy),
    Alt::new("variant:madv_hugepage", ours_hugepage),
];

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
    let links = Linked::spawn_n(FAN, |_| {
        ours_spawn::<Fd<Frozen>, u64>("frozen.consume", p.size, 1, "")
    })?;
    drive_linked(p, 1, links, |txs, s| {
        let f = Fd::new(make(s)?);
        for tx in txs {
            tx.send(&f)?;
        }
        Ok(())
    })
}

fn socket_copy(p: &Params) -> Res<f64> {
    socket_copy_to(p, FAN)
}
