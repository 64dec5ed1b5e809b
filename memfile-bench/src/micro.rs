//! `memfile-bench __micro`: single-process timings of the pieces the cases are made of,
//! to find where the fixed cost of a buffer goes (evidence for the optimisations in
//! `docs/performance.md`). Not part of the table.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use memfile_core::{Frozen, MemFile};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::stat::fstat;

use crate::syscalls::{sealed_memfd, verify_read};
use crate::work::{Res, checksum, fill};

const SIZE: usize = 4096;

fn time(name: &str, n: usize, mut f: impl FnMut() -> Res<()>) -> Res<()> {
    for _ in 0..n / 10 {
        f()?;
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            f()?;
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    println!("{name:<48} {:>9.2} µs", best * 1e6);
    Ok(())
}

/// Runs the micro timings.
pub fn run() -> Res<()> {
    let n = 20_000;
    println!("per 4 KiB buffer, one process, best of 5 x {n}:");
    time("create+fill+seal: raw syscalls (mmap fill)", n, || {
        drop(sealed_memfd(SIZE, 3)?);
        Ok(())
    })?;
    time("create+fill+seal: Frozen::build", n, || {
        drop(Frozen::build("micro", SIZE, |b| fill(b, 3))?);
        Ok(())
    })?;
    let src = vec![3u8; SIZE];
    time("create+fill+seal: Frozen::from_bytes (pwrite)", n, || {
        drop(Frozen::from_bytes("micro", &src)?);
        Ok(())
    })?;
    time(
        "create+pwrite+seal: MemFile + add_seals (no Frozen)",
        n,
        || {
            use std::os::unix::fs::FileExt;
            let f = MemFile::create_sealable("micro")?;
            f.write_all_at(&src, 0)?;
            f.add_seals(
                memfile_core::Seal::Write
                    | memfile_core::Seal::Shrink
                    | memfile_core::Seal::Grow
                    | memfile_core::Seal::Seal,
            )?;
            Ok(())
        },
    )?;
    time("memfd_create + close alone", n, || {
        drop(memfd_create(
            c"micro",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?);
        Ok(())
    })?;
    let sealed = sealed_memfd(SIZE, 3)?;
    time(
        "receive side: raw fstat+F_GET_SEALS+mmap+read+munmap",
        n,
        || {
            std::hint::black_box(verify_read(&sealed)?);
            Ok(())
        },
    )?;
    let fd = sealed.as_fd();
    time("receive side: Frozen::from_fd(dup)+read+drop", n, || {
        let dup = fd.try_clone_to_owned()?;
        let f = Frozen::from_fd(dup).map_err(std::io::Error::from)?;
        std::hint::black_box(checksum(&f));
        Ok(())
    })?;
    time("dup + close alone", n, || {
        drop(fd.try_clone_to_owned()?);
        Ok(())
    })?;
    let path = format!("/proc/self/fd/{}", sealed.as_raw_fd());
    time("readlink /proc/self/fd/N alone", n, || {
        std::hint::black_box(std::fs::read_link(&path)?);
        Ok(())
    })?;
    time("fstatfs alone", n, || {
        std::hint::black_box(nix::sys::statfs::fstatfs(fd)?);
        Ok(())
    })?;
    time("fstat alone", n, || {
        std::hint::black_box(fstat(fd)?);
        Ok(())
    })?;
    Ok(())
}

/// Body of memfile-ipc's `CappedWriter::write` (appends, refusing to pass `max` bytes),
/// in two copies that differ only in inlining.
macro_rules! capped_writer {
    ($name:ident, $inline:meta) => {
        struct $name<'a> {
            out: &'a mut Vec<u8>,
            start: usize,
            max: u64,
        }

        impl bincode::enc::write::Writer for $name<'_> {
            #[$inline]
            fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
                let would_be = (self.out.len() - self.start) as u64 + bytes.len() as u64;
                if would_be > self.max {
                    return Err(bincode::error::EncodeError::Other("too large"));
                }
                self.out.extend_from_slice(bytes);
                Ok(())
            }
        }
    };
}

capped_writer!(CappedOutOfLine, inline(never));
capped_writer!(CappedInline, inline);

/// A 16 MiB plain `Vec<u8>` field, as in `typed_vec`.
#[derive(serde::Serialize, serde::Deserialize)]
struct VecMsg {
    id: u64,
    data: Vec<u8>,
}

fn time_once(name: &str, reps: usize, mut f: impl FnMut() -> Res<()>) -> Res<()> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{name:<48} {:>9.2} ms", best * 1e3);
    Ok(())
}

/// Codec timings for a 16 MiB `Vec<u8>` field (bincode 2 serde, `config::standard()`).
pub fn codec() -> Res<()> {
    let cfg = bincode::config::standard();
    let msg = VecMsg {
        id: 1,
        data: vec![7u8; 16 << 20],
    };
    let mut out: Vec<u8> = Vec::with_capacity(32 << 20);
    println!("16 MiB Vec<u8> field, bincode 2 serde, best of 5:");
    time_once(
        "encode, writer out of line (memfile-ipc before #[inline])",
        5,
        || {
            out.clear();
            let mut w = CappedOutOfLine {
                out: &mut out,
                start: 0,
                max: u64::MAX,
            };
            bincode::serde::encode_into_writer(&msg, &mut w, cfg)?;
            Ok(())
        },
    )?;
    time_once("encode, same writer #[inline]", 5, || {
        out.clear();
        let mut w = CappedInline {
            out: &mut out,
            start: 0,
            max: u64::MAX,
        };
        bincode::serde::encode_into_writer(&msg, &mut w, cfg)?;
        Ok(())
    })?;
    time_once("encode, #[inline], into a fresh Vec each time", 5, || {
        let mut fresh = Vec::new();
        let mut w = CappedInline {
            out: &mut fresh,
            start: 0,
            max: u64::MAX,
        };
        bincode::serde::encode_into_writer(&msg, &mut w, cfg)?;
        std::hint::black_box(fresh);
        Ok(())
    })?;
    out.clear();
    bincode::serde::encode_into_writer(
        &msg,
        &mut CappedInline {
            out: &mut out,
            start: 0,
            max: u64::MAX,
        },
        cfg,
    )?;
    time_once("decode from a slice (limit 1 GiB)", 5, || {
        let (m, _): (VecMsg, usize) = bincode::serde::decode_from_slice(
            &out,
            bincode::config::standard().with_limit::<{ 1 << 30 }>(),
        )?;
        std::hint::black_box(m);
        Ok(())
    })?;
    time_once("decode from a slice (no limit)", 5, || {
        let (m, _): (VecMsg, usize) = bincode::serde::decode_from_slice(&out, cfg)?;
        std::hint::black_box(m);
        Ok(())
    })?;
    Ok(())
}

/// How often `MemFile::freeze` (no retry) fails with EBUSY right after the only mapping
/// was unmapped, for fills of 16 MiB done different ways.
pub fn seal_ebusy() -> Res<()> {
    use memmap2::Advice;
    let tries = 40;
    let ways: [(&str, Option<Advice>, bool); 4] = [
        ("mmap fill", None, false),
        ("fallocate + mmap fill", None, true),
        ("MADV_HUGEPAGE + mmap fill", Some(Advice::HugePage), false),
        (
            "fallocate + MADV_HUGEPAGE + mmap fill",
            Some(Advice::HugePage),
            true,
        ),
    ];
    println!("EBUSY from freeze() right after munmap, 16 MiB, {tries} tries each:");
    for (name, advice, allocate) in ways {
        let mut busy = 0;
        for i in 0..tries {
            match crate::cases::large::build_tuned(16 << 20, (i % 200) as u8 + 1, advice, allocate)
            {
                Ok(f) => drop(f),
                Err(e) if e.to_string().contains("os error 16") => busy += 1,
                Err(e) => return Err(e),
            }
        }
        println!("{name:<48} {busy:>3} / {tries}");
    }
    Ok(())
}
