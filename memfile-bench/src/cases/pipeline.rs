//! `pipeline_3`: a buffer forwarded through three processes; each stage reads every byte
//! before passing it on, the last one reports its checksum to the producer.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use memfile_core::Frozen;
use memfile_ipc::{Fd, Receiver, Sender};
use serde::{Deserialize, Serialize};

use memmap2::Advice;

use crate::cases::large::build_tuned;
use crate::cases::{Alt, Params, Role, drive, drive_linked};
use crate::proc::{Linked, inherited_fd, ours_spawn, self_command, spawn_with_fds};
use crate::work::{Res, checksum, fill, read_buf, warm_buffer, write_u64};

/// Processes the buffer goes through (after the producer).
pub const STAGES: usize = 3;

/// The alternatives, ours first.
pub const ALTS: &[Alt] = &[
    Alt::new("ours", ours),
    Alt::new("socket_copy", socket_copy),
    Alt::new("variant:madv_hugepage", ours_hugepage),
];

/// Child roles of this case: the stages.
pub const ROLES: &[Role] = &[
    Role::new("pipe.ours", |_| ours_stage()),
    Role::new("pipe.stream", |a| stream_stage(a.size, a.extra == "last")),
];

/// What the producer sends a stage: first its links to its neighbours (channel ends
/// travel inside the message), then, to the first stage, the buffers.
#[derive(Debug, Serialize, Deserialize)]
enum Stage {
    Link {
        prev: Option<Receiver<Fd<Frozen>>>,
        next: Option<Sender<Fd<Frozen>>>,
    },
    Buf(Fd<Frozen>),
}

fn ours(p: &Params) -> Res<f64> {
    let size = p.size;
    ours_with(p, |s| {
        Ok(Frozen::build("bench-pipeline", size, |b| fill(b, s))?)
    })
}

/// As `ours`, with `MADV_HUGEPAGE` on the filling mapping.
fn ours_hugepage(p: &Params) -> Res<f64> {
    let size = p.size;
    ours_with(p, |s| build_tuned(size, s, Some(Advice::HugePage), false))
}

fn ours_with(p: &Params, mut make: impl FnMut(u8) -> Res<Frozen>) -> Res<f64> {
    let links = Linked::spawn_n(STAGES, |i| {
        ours_spawn::<Stage, u64>("pipe.ours", p.size, 1, &i.to_string())
    })?;
    let mut prev = None;
    for (i, tx) in links.tx.iter().enumerate() {
        let (next, next_rx) = if i + 1 < STAGES {
            let (a, b) = memfile_ipc::channel::<Fd<Frozen>>()?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        tx.send(&Stage::Link {
            prev: prev.take(),
            next,
        })?;
        prev = next_rx;
    }
    // Every stage says "ready"; then only the last one acks (it saw every buffer last).
    let mut ready = false;
    let secs = drive(
        p,
        1,
        1,
        |s| Ok(links.tx[0].send(&Stage::Buf(Fd::new(make(s)?)))?),
        || {
            if !ready {
                ready = true;
                for rx in &links.rx {
                    rx.recv()?;
                }
                return Ok(0);
            }
            Ok(links.rx[STAGES - 1].recv()?)
        },
    )?;
    links.finish()?;
    Ok(secs)
}

fn ours_stage() -> Res<()> {
    let (tx, rx) = memfile_ipc::from_parent::<u64, Stage>()?;
    let Stage::Link { prev, next } = rx.recv()? else {
        return Err("pipeline stage: expected its links first".into());
    };
    tx.send(&0)?;
    loop {
        let got = match &prev {
            Some(p) => p.recv(),
            None => rx.recv().and_then(|m| match m {
                Stage::Buf(b) => Ok(b),
                Stage::Link { .. } => Err(memfile_ipc::Error::Disconnected {
                    op: memfile_ipc::Operation::Receive,
                    fd: None,
                    peer_pid: None,
                }),
            }),
        };
        let buf = match got {
            Ok(b) => b,
            Err(memfile_ipc::Error::Disconnected { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let sum = checksum(&buf);
        match &next {
            Some(n) => n.send(&buf)?,
            None => tx.send(&sum)?,
        }
    }
}

fn socket_copy(p: &Params) -> Res<f64> {
    // Producer -> stage 1 -> stage 2 -> stage 3 -> producer (acks).
    let mut links: Vec<(UnixStream, UnixStream)> = Vec::new();
    for _ in 0..=STAGES {
        links.push(UnixStream::pair()?);
    }
    let mut children = Vec::new();
    for i in 0..STAGES {
        let input = OwnedFd::from(links[i].1.try_clone()?);
        let output = OwnedFd::from(links[i + 1].0.try_clone()?);
        let role = if i + 1 == STAGES { "last" } else { "mid" };
        let cmd = self_command("pipe.stream", p.size, 1, role)?;
        children.push(spawn_with_fds(cmd, &[&input, &output])?);
    }
    let mut it = links.into_iter();
    let (out, _) = it.next().ok_or("no first link")?;
    let (_, ack) = it.last().ok_or("no last link")?;
    let chain = Linked::from_parts(children, vec![out], vec![ack]);
    let mut buf = warm_buffer(p.size);
    drive_linked(p, 1, chain, |out, s| {
        fill(&mut buf, s);
        Ok((&out[0]).write_all(&buf)?)
    })
}

fn stream_stage(size: usize, last: bool) -> Res<()> {
    let mut input = UnixStream::from(inherited_fd(0)?);
    let mut output = UnixStream::from(inherited_fd(1)?);
    let mut buf = warm_buffer(size);
    if last {
        write_u64(&mut output, 0)?;
    }
    while read_buf(&mut input, &mut buf)? {
        let sum = checksum(&buf);
        if last {
            write_u64(&mut output, sum)?;
        } else {
            output.write_all(&buf)?;
        }
    }
    Ok(())
}
