//! `large_e2e`: a producer fills a buffer, a consumer in another process reads every byte.
//! Also `fanout_4` shares its producers (see `fanout.rs`).

use std::io::Write;
use std::os::unix::net::UnixStream;

use ipc_channel::ipc::IpcSharedMemory;
use memfile_core::{Frozen, MemFile, Seal};
use memfile_ipc::Fd;
use memmap2::{Advice, MmapOptions};

use crate::cases::{Alt, Params, drive_linked, seed, time_ops};
use crate::proc::{Linked, ipc_spawn, ours_spawn, stream_spawn};
use crate::work::{Res, check, checksum, expected, fill, warm_buffer};

/// The alternatives, ours first.
pub const ALTS: &[Alt] = &[
    Alt::new("ours", ours),
    Alt::new("in_process", in_process),
    Alt::new("socket_copy", socket_copy),
    Alt::new("ipc_channel_shmem", ipc_shmem),
    Alt::new("variant:from_bytes", ours_from_bytes),
    Alt::new("variant:madv_hugepage", ours_hugepage),
    Alt::new("variant:populate_write", ours_populate),
    Alt::new("variant:fallocate", ours_fallocate),
];

/// Runs the `Fd<Frozen>` producer `make` against one consumer.
fn ours_with(p: &Params, mut make: impl FnMut(u8) -> std::io::Result<Frozen>) -> Res<f64> {
    let links = ours_spawn::<Fd<Frozen>, u64>("frozen.consume", p.size, 1, "")?;
    drive_linked(p, 1, links, |tx, s| Ok(tx[0].send(&Fd::new(make(s)?))?))
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
    time_ops(p, |i| {
        let s = seed(i);
        fill(&mut buf, s);
        check(
            "in_process",
            std::hint::black_box(checksum(&buf)),
            expected(p.size, s),
        )
    })
}

/// Writes `buf` to every socket (one thread per socket when several, so the consumers copy
/// in parallel as they would with shared memory).
fn stream_send(socks: &[UnixStream], buf: &[u8]) -> Res<()> {
    if let [one] = socks {
        (&*one).write_all(buf)?;
        return Ok(());
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = socks
            .iter()
            .map(|s| scope.spawn(move || (&*s).write_all(buf)))
            .collect();
        for h in handles {
            h.join().map_err(|_| "writer thread panicked")??;
        }
        Ok(())
    })
}

/// `socket_copy` to `n` consumers: a warm buffer filled and written to each stream socket;
/// each consumer reads it into a warm buffer of its own.
pub fn socket_copy_to(p: &Params, n: usize) -> Res<f64> {
    let links = Linked::spawn_n(n, |_| stream_spawn("stream.consume", p.size, 1, ""))?;
    let mut buf = warm_buffer(p.size);
    drive_linked(p, 1, links, |socks, s| {
        fill(&mut buf, s);
        stream_send(socks, &buf)
    })
}

fn socket_copy(p: &Params) -> Res<f64> {
    socket_copy_to(p, 1)
}

fn ipc_shmem(p: &Params) -> Res<f64> {
    let links = ipc_spawn::<IpcSharedMemory, u64>("shm.consume", p.size, 1)?;
    let mut src = warm_buffer(p.size);
    drive_linked(p, 1, links, |tx, s| {
        fill(&mut src, s);
        Ok(tx[0].send(IpcSharedMemory::from_bytes(&src))?)
    })
}
