//! The cases, and what their alternatives share: the timing driver and the consumer loops
//! that run in children.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use memfile_core::Frozen;
use memfile_ipc::Fd;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::proc::{ChildArgs, inherited_fd, ipc_child};
use crate::work::{Res, check, checksum, expected, read_buf, warm_buffer, write_u64};

pub mod fanout;
pub mod frozen4k;
pub mod large;
pub mod paced;
pub mod pipeline;
pub mod small;
pub mod typed;

/// How much work one repetition of an alternative does.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Bytes per operation.
    pub size: usize,
    /// Timed operations.
    pub iters: usize,
    /// Untimed operations before them.
    pub warmup: usize,
}

/// One way of doing a case's job; `run` does one repetition and returns seconds per
/// operation.
#[derive(Debug, Clone, Copy)]
pub struct Alt {
    /// `ours`, a baseline, or `variant:...`.
    pub name: &'static str,
    /// Runs one repetition (spawning and reaping its own children).
    pub run: fn(&Params) -> Res<f64>,
}

/// Dispatches a child role to the case that owns it.
pub fn run_child(a: &ChildArgs) -> Res<()> {
    let shared = match a.role.as_str() {
        "frozen.consume" => Some(frozen_consume(a.ack_every)),
        "shm.consume" => Some(shm_consume(&a.extra, a.ack_every)),
        "stream.consume" => Some(stream_consume(a.size, a.ack_every)),
        _ => None,
    };
    shared
        .or_else(|| small::child(a))
        .or_else(|| frozen4k::child(a))
        .or_else(|| typed::child(a))
        .or_else(|| pipeline::child(a))
        .or_else(|| paced::child(a))
        .unwrap_or_else(|| Err(format!("unknown child role {:?}", a.role).into()))
}

/// The seed of operation `i` (never 0, so a zeroed page never passes for a filled one).
pub fn seed(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// Runs `p.warmup` then `p.iters` operations: `send(seed)` produces and ships one buffer;
/// after every `ack_every` operations `ack()` must return the sum of the checksums of
/// what was sent, times `fan` (consumers per buffer). The first `ack()` is the children's
/// "ready", outside the timing. Returns seconds per timed operation.
pub fn drive(
    p: &Params,
    ack_every: usize,
    fan: u64,
    mut send: impl FnMut(u8) -> Res<()>,
    mut ack: impl FnMut() -> Res<u64>,
) -> Res<f64> {
    ack()?;
    let mut run = |ops: usize| -> Res<()> {
        let mut want = 0u64;
        for i in 0..ops {
            let s = seed(i);
            send(s)?;
            want = want.wrapping_add(expected(p.size, s).wrapping_mul(fan));
            if (i + 1) % ack_every == 0 {
                check("consumer", ack()?, want)?;
                want = 0;
            }
        }
        Ok(())
    };
    run(p.warmup)?;
    let t = Instant::now();
    run(p.iters)?;
    Ok(t.elapsed().as_secs_f64() / p.iters as f64)
}

/// Child: receives `Fd<Frozen>` messages over `memfile_ipc`, reads every byte, acks.
fn frozen_consume(ack_every: usize) -> Res<()> {
    ours_consume::<Fd<Frozen>>(ack_every, |f| Ok(checksum(&f)))
}

/// Child: a consumer loop over `memfile_ipc`: "ready", then an ack (summed `f` results)
/// every `ack_every` messages, until the parent hangs up.
pub fn ours_consume<M: DeserializeOwned>(
    ack_every: usize,
    mut f: impl FnMut(M) -> Res<u64>,
) -> Res<()> {
    let (tx, rx) = memfile_ipc::from_parent::<u64, M>()?;
    tx.send(&0)?;
    let (mut acc, mut n) = (0u64, 0usize);
    loop {
        match rx.recv() {
            Ok(m) => {
                acc = acc.wrapping_add(f(m)?);
                n += 1;
                if n == ack_every {
                    tx.send(&acc)?;
                    (acc, n) = (0, 0);
                }
            }
            Err(memfile_ipc::Error::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Child: receives `IpcSharedMemory` over ipc-channel, reads every byte, acks.
fn shm_consume(name: &str, ack_every: usize) -> Res<()> {
    ipc_consume::<ipc_channel::ipc::IpcSharedMemory>(name, ack_every, |m| Ok(checksum(&m)))
}

/// Child: the consumer loop of [`ours_consume`] over ipc-channel.
pub fn ipc_consume<M: Serialize + DeserializeOwned>(
    name: &str,
    ack_every: usize,
    mut f: impl FnMut(M) -> Res<u64>,
) -> Res<()> {
    let (rx, tx) = ipc_child::<M, u64>(name)?;
    tx.send(0)?;
    let (mut acc, mut n) = (0u64, 0usize);
    while let Ok(m) = rx.recv() {
        acc = acc.wrapping_add(f(m)?);
        n += 1;
        if n == ack_every {
            tx.send(acc)?;
            (acc, n) = (0, 0);
        }
    }
    Ok(())
}

/// Child: reads `size`-byte buffers from the stream socket at inherited fd 0 into a warm
/// buffer, reads every byte, acks on the same socket.
fn stream_consume(size: usize, ack_every: usize) -> Res<()> {
    let mut s = UnixStream::from(inherited_fd(0)?);
    let mut buf = warm_buffer(size);
    write_u64(&mut s, 0)?;
    let (mut acc, mut n) = (0u64, 0usize);
    while read_buf(&mut s, &mut buf)? {
        acc = acc.wrapping_add(checksum(&buf));
        n += 1;
        if n == ack_every {
            write_u64(&mut s, acc)?;
            (acc, n) = (0, 0);
        }
    }
    Ok(())
}

/// A message shared by reference: ipc-channel's `send` takes its message by value, and
/// cloning 16 MiB per send would charge it for a copy it does not make by itself.
#[derive(Debug)]
pub struct Shared<T>(pub Arc<T>);

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|t| Shared(Arc::new(t)))
    }
}
