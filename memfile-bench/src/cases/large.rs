//! `large_e2e`: a producer fills a buffer, a consumer in another process reads every byte.
//! Also `fanout_4` shares its producers (see `fanout.rs`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use ipc_channel::ipc::IpcSharedMemory;
use memfile_core::{Frozen, MemFile, Seal};
use memfile_ipc::Fd;
use memmap2::{Advice, MmapOptions};

use crate::cases::{Alt, Params, drive, seed};
use crate::proc::{ipc_spawn, ours_spawn, self_command, spawn_with_fds};
use crate::work::{Res, check, checksum, expected, fill, read_u64, warm_buffer};

/// The alternatives, ours first.
pub fn alts(variants: bool) -> Vec<Alt> {
    let mut v = vec![
        Alt {
            name: "ours",
            run: ours,
        },
        Alt {
            name: "in_process",
            run: in_process,
        },
        Alt {
            name: "socket_copy",
            run: socket_copy,
        },
        Alt {
            name: "ipc_channel_shmem",
            run: ipc_shmem,
        },
    ];
    if variants {
        v.extend([
            Alt {
                name: "variant:from_bytes",
                run: ours_from_bytes,
            },
            Alt {
                name: "variant:madv_hugepage",
                run: ours_hugepage,
            },
            Alt {
                name: "variant:populate_write",
                run: ours_populate,
            },
            Alt {
                name: "variant:fallocate",
                run: ours_fallocate,
            },
        ]);
    }
    v
}

/// Runs the `Fd<Frozen>` producer `make` against one consumer.
pub fn ours_with(p: &Params, mut make: impl FnMut(u8) -> std::io::Result<Frozen>) -> Res<f64> {
    let (child, tx, rx) = ours_spawn::<Fd<Frozen>, u64>("frozen.consume", p.size, 1, "")?;
    let secs = drive(
        p,
        1,
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

/// `Frozen::build`: the crate's way to fill a new buffer in place.
fn ours(p: &Params) -> Res<f64> {
    let size = p.size;
    ours_with(p, |s| Frozen::build("bench-large", size, |b| fill(b, s)))
}

/// `Frozen::from_bytes` from a warm buffer (fill there, then `pwrite`).
fn ours_from_bytes(p: &Params) -> Res<f64> {
    let mut src = warm_buffer(p.size);
    ours_with(p, move |s| {
        fill(&mut src, s);
        Frozen::from_bytes("bench-large", &src)
    })
}

/// What `Frozen::build` does, with one change: an `madvise` before the fill and/or a
/// `fallocate` of the whole file. Shows what the crate would gain from doing the same.
pub fn build_tuned(size: usize, s: u8, advice: Option<Advice>, allocate: bool) -> Res<Frozen> {
    let file = MemFile::create_sealable("bench-tuned")?;
    file.set_len(size as u64)?;
    if allocate {
        file.allocate(0, size as u64)?;
    }
    // SAFETY: a fresh memfd that only this function knows; the mapping is dropped before the
    // file is frozen or handed to anyone.
    let mut map = unsafe { MmapOptions::new().len(size).map_mut(file.as_file()) }?;
    if let Some(a) = advice {
        map.advise(a)?;
    }
    fill(&mut map, s);
    drop(map);
    // `MemFile::freeze` does not retry; `Frozen::build` retries EBUSY a few times, and so
    // must we to compare like with like (seen once under shmem THP, with no mapping left).
    for attempt in 0..8 {
        match file.add_seals(Seal::Write | Seal::Shrink | Seal::Grow | Seal::Seal) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                eprintln!("note: F_ADD_SEALS got EBUSY after munmap (attempt {attempt})");
                std::thread::sleep(std::time::Duration::from_millis(1 << attempt));
            }
            _ => break,
        }
    }
    Ok(file.freeze()?)
}

fn ours_tuned(p: &Params, advice: Option<Advice>, allocate: bool) -> Res<f64> {
    let size = p.size;
    ours_with(p, |s| {
        build_tuned(size, s, advice, allocate).map_err(std::io::Error::other)
    })
}

fn ours_hugepage(p: &Params) -> Res<f64> {
    ours_tuned(p, Some(Advice::HugePage), false)
}

fn ours_populate(p: &Params) -> Res<f64> {
    ours_tuned(p, Some(Advice::PopulateWrite), false)
}

fn ours_fallocate(p: &Params) -> Res<f64> {
    ours_tuned(p, None, true)
}

/// The floor: fill and read a warm buffer in one process.
fn in_process(p: &Params) -> Res<f64> {
    let mut buf = warm_buffer(p.size);
    let mut op = |i: usize| -> Res<()> {
        let s = seed(i);
        fill(&mut buf, s);
        check(
            "in_process",
            std::hint::black_box(checksum(&buf)),
            expected(p.size, s),
        )
    };
    for i in 0..p.warmup {
        op(i)?;
    }
    let t = Instant::now();
    for i in 0..p.iters {
        op(i)?;
    }
    Ok(t.elapsed().as_secs_f64() / p.iters as f64)
}

/// Stream sockets to `n` consumers that each read into a warm buffer.
pub fn stream_consumers(size: usize, n: usize) -> Res<(Vec<crate::proc::Reaper>, Vec<UnixStream>)> {
    let mut children = Vec::new();
    let mut socks = Vec::new();
    for _ in 0..n {
        let (a, b) = UnixStream::pair()?;
        let b = std::os::fd::OwnedFd::from(b);
        children.push(spawn_with_fds(
            self_command("stream.consume", size, 1, "")?,
            &[&b],
        )?);
        socks.push(a);
    }
    Ok((children, socks))
}

/// Fills a warm buffer and writes it to every socket (one thread per socket when several,
/// so the consumers copy in parallel as they would with shared memory).
pub fn stream_send(socks: &mut [UnixStream], buf: &[u8]) -> Res<()> {
    if let [one] = socks {
        one.write_all(buf)?;
        return Ok(());
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = socks
            .iter_mut()
            .map(|s| scope.spawn(move || s.write_all(buf)))
            .collect();
        for h in handles {
            h.join().map_err(|_| "writer thread panicked")??;
        }
        Ok(())
    })
}

/// Reads one ack from every socket and sums them.
pub fn stream_acks(socks: &mut [UnixStream]) -> Res<u64> {
    let mut sum = 0u64;
    for s in socks {
        sum = sum.wrapping_add(read_u64(s)?.ok_or("consumer hung up")?);
    }
    Ok(sum)
}

/// `socket_copy` to `n` consumers.
pub fn socket_copy_to(p: &Params, n: usize) -> Res<f64> {
    let (children, mut socks) = stream_consumers(p.size, n)?;
    let mut buf = warm_buffer(p.size);
    let mut acks = socks
        .iter()
        .map(UnixStream::try_clone)
        .collect::<Result<Vec<_>, _>>()?;
    let secs = drive(
        p,
        1,
        n as u64,
        |s| {
            fill(&mut buf, s);
            stream_send(&mut socks, &buf)
        },
        || stream_acks(&mut acks),
    )?;
    drop((socks, acks));
    crate::proc::finish_all(children)?;
    Ok(secs)
}

fn socket_copy(p: &Params) -> Res<f64> {
    socket_copy_to(p, 1)
}

fn ipc_shmem(p: &Params) -> Res<f64> {
    let (child, tx, rx) = ipc_spawn::<IpcSharedMemory, u64>("shm.consume", p.size, 1)?;
    let mut src = warm_buffer(p.size);
    let secs = drive(
        p,
        1,
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
