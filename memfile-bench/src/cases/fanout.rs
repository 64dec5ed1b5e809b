//! `fanout_4`: one buffer to four consumer processes, each reading every byte.

use memfile_core::Frozen;
use memfile_ipc::Fd;

use crate::cases::large::socket_copy_to;
use crate::cases::{Alt, Params, drive};
use crate::proc::{finish_all, ours_spawn};
use crate::work::{Res, fill};

/// Consumers per buffer.
pub const FAN: usize = 4;

/// The alternatives, ours first.
pub fn alts() -> Vec<Alt> {
    vec![Alt { name: "ours", run: ours }, Alt { name: "socket_copy", run: socket_copy }]
}

/// One `Frozen` built per operation and sent to every consumer (each gets the same pages).
fn ours(p: &Params) -> Res<f64> {
    let mut children = Vec::new();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..FAN {
        let (c, tx, rx) = ours_spawn::<Fd<Frozen>, u64>("frozen.consume", p.size, 1, "")?;
        children.push(c);
        txs.push(tx);
        rxs.push(rx);
    }
    let size = p.size;
    let secs = drive(
        p,
        1,
        FAN as u64,
        |s| {
            let f = Fd::new(Frozen::build("bench-fanout", size, |b| fill(b, s))?);
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
