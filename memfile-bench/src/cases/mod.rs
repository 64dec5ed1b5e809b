//! The cases, and what their alternatives share: the timing driver, the producer's side of
//! its connections to consumer children ([`drive_linked`]), and the consumer loop that runs
//! in the children ([`consume`]).
//!
//! A case is a file here with `pub const ALTS: &[Alt]` (its alternatives, `ours` first;
//! names starting `variant:` run only with `--variants`) and, if its children run code of
//! their own, `pub const ROLES: &[Role]`, listed in [`ROLES`] below. `main.rs` says at which
//! sizes it runs.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use ipc_channel::ipc::IpcReceiver;
use memfile_core::Frozen;
use memfile_ipc::Fd;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::proc::{ChildArgs, Linked, inherited_fd, ipc_child};
use crate::syscalls::{SeqPacket, recv_packet};
use crate::work::{Res, check, checksum, expected, read_buf, read_u64, warm_buffer, write_u64};

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

impl Alt {
    /// The alternative `name`, timed by `run`.
    pub const fn new(name: &'static str, run: fn(&Params) -> Res<f64>) -> Alt {
        Alt { name, run }
    }

    /// Another way to use memfile (`variant:...`), timed only with `--variants`.
    pub fn is_variant(&self) -> bool {
        self.name.starts_with("variant:")
    }
}

/// What a child started as `__child ROLE ...` runs.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    /// The role's name on the command line, e.g. `frozen.consume`.
    pub name: &'static str,
    /// The child's whole work.
    pub run: fn(&ChildArgs) -> Res<()>,
}

impl Role {
    /// The role `name`, running `run`.
    pub const fn new(name: &'static str, run: fn(&ChildArgs) -> Res<()>) -> Role {
        Role { name, run }
    }
}

/// The consumers several cases use.
const SHARED_ROLES: &[Role] = &[
    Role::new("frozen.consume", |a| frozen_consume(a.ack_every)),
    Role::new("shm.consume", |a| shm_consume(&a.extra, a.ack_every)),
    Role::new("stream.consume", |a| stream_consume(a.size, a.ack_every)),
];

/// Every child role there is.
const ROLES: &[&[Role]] = &[
    SHARED_ROLES,
    small::ROLES,
    frozen4k::ROLES,
    typed::ROLES,
    pipeline::ROLES,
    paced::ROLES,
];

/// Runs the child role `a.role`.
pub fn run_child(a: &ChildArgs) -> Res<()> {
    let role = ROLES
        .iter()
        .flat_map(|roles| roles.iter())
        .find(|r| r.name == a.role)
        .ok_or_else(|| format!("unknown child role {:?}", a.role))?;
    (role.run)(a)
}

/// The seed of operation `i` (never 0, so a zeroed page never passes for a filled one).
pub fn seed(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// Runs `op(i)` for `i` in `0..p.warmup` untimed, then in `0..p.iters` timed. Returns
/// seconds per timed operation.
pub fn time_ops(p: &Params, mut op: impl FnMut(usize) -> Res<()>) -> Res<f64> {
    for i in 0..p.warmup {
        op(i)?;
    }
    let t = Instant::now();
    for i in 0..p.iters {
        op(i)?;
    }
    Ok(t.elapsed().as_secs_f64() / p.iters as f64)
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
    let mut want = 0u64;
    time_ops(p, |i| {
        let s = seed(i);
        send(s)?;
        want = want.wrapping_add(expected(p.size, s).wrapping_mul(fan));
        if (i + 1) % ack_every == 0 {
            check("consumer", ack()?, want)?;
            want = 0;
        }
        Ok(())
    })
}

/// The producer's end that a consumer's acks (`u64` sums of checksums) arrive on.
pub trait AckRx {
    /// The next ack.
    fn ack(&self) -> Res<u64>;
}

impl AckRx for memfile_ipc::Receiver<u64> {
    fn ack(&self) -> Res<u64> {
        Ok(self.recv()?)
    }
}

impl AckRx for IpcReceiver<u64> {
    fn ack(&self) -> Res<u64> {
        Ok(self.recv()?)
    }
}

impl AckRx for UnixStream {
    fn ack(&self) -> Res<u64> {
        read_u64(&mut &*self)?.ok_or_else(|| "consumer hung up".into())
    }
}

impl AckRx for SeqPacket {
    fn ack(&self) -> Res<u64> {
        let mut buf = [0u8; 8];
        match recv_packet(self.raw(), &mut buf)? {
            8 => Ok(u64::from_le_bytes(buf)),
            n => Err(format!("raw: an ack of {n} bytes, expected 8").into()),
        }
    }
}

/// [`drive`] against every consumer of `links`, each reading every buffer:
/// `send(&links.tx, seed)` ships one operation to them, their acks are summed. Hangs up and
/// waits for the children at the end.
pub fn drive_linked<Tx, Rx: AckRx>(
    p: &Params,
    ack_every: usize,
    links: Linked<Tx, Rx>,
    mut send: impl FnMut(&[Tx], u8) -> Res<()>,
) -> Res<f64> {
    let fan = links.rx.len() as u64;
    let secs = drive(
        p,
        ack_every,
        fan,
        |s| send(&links.tx, s),
        || {
            links
                .rx
                .iter()
                .try_fold(0u64, |sum, rx| Ok(sum.wrapping_add(rx.ack()?)))
        },
    )?;
    links.finish()?;
    Ok(secs)
}

/// Child: the consumer loop of every alternative. Acks "ready" (0), then, after every
/// `ack_every` operations, the sum of what `recv_one` returned for them, until `recv_one`
/// returns `None` (the parent hung up).
pub fn consume(
    ack_every: usize,
    mut recv_one: impl FnMut() -> Res<Option<u64>>,
    mut ack: impl FnMut(u64) -> Res<()>,
) -> Res<()> {
    ack(0)?;
    let (mut acc, mut n) = (0u64, 0usize);
    while let Some(v) = recv_one()? {
        acc = acc.wrapping_add(v);
        n += 1;
        if n == ack_every {
            ack(acc)?;
            (acc, n) = (0, 0);
        }
    }
    Ok(())
}

/// Child: receives `Fd<Frozen>` messages over `memfile_ipc`, reads every byte, acks.
fn frozen_consume(ack_every: usize) -> Res<()> {
    ours_consume::<Fd<Frozen>>(ack_every, |f| Ok(checksum(&f)))
}

/// Child: [`consume`] over `memfile_ipc`, `f` turning each message into its checksum.
pub fn ours_consume<M: DeserializeOwned>(
    ack_every: usize,
    mut f: impl FnMut(M) -> Res<u64>,
) -> Res<()> {
    let (tx, rx) = memfile_ipc::from_parent::<u64, M>()?;
    consume(
        ack_every,
        || match rx.recv() {
            Ok(m) => f(m).map(Some),
            Err(memfile_ipc::Error::Disconnected { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        },
        |v| Ok(tx.send(&v)?),
    )
}

/// Child: receives `IpcSharedMemory` over ipc-channel, reads every byte, acks.
fn shm_consume(name: &str, ack_every: usize) -> Res<()> {
    ipc_consume::<ipc_channel::ipc::IpcSharedMemory>(name, ack_every, |m| Ok(checksum(&m)))
}

/// Child: [`consume`] over ipc-channel (any receive error ends it: ipc-channel reports a
/// hang-up as an error).
pub fn ipc_consume<M: Serialize + DeserializeOwned>(
    name: &str,
    ack_every: usize,
    mut f: impl FnMut(M) -> Res<u64>,
) -> Res<()> {
    let (rx, tx) = ipc_child::<M, u64>(name)?;
    consume(
        ack_every,
        || rx.recv().ok().map(&mut f).transpose(),
        |v| Ok(tx.send(v)?),
    )
}

/// Child: reads `size`-byte buffers from the stream socket at inherited fd 0 into a warm
/// buffer, reads every byte, acks on the same socket.
fn stream_consume(size: usize, ack_every: usize) -> Res<()> {
    let s = UnixStream::from(inherited_fd(0)?);
    let mut buf = warm_buffer(size);
    consume(
        ack_every,
        || Ok(read_buf(&mut &s, &mut buf)?.then(|| checksum(&buf))),
        |v| write_u64(&mut &s, v),
    )
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
