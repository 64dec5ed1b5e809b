//! `Frozen`: what it accepts, what it rejects, and that nobody can change it afterwards.

// Several tests need Linux (`/proc/self/fd`, `FutureWrite`, `fallocate`); on FreeBSD their
// helpers and imports go unused.
#![cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(unused_imports, dead_code)
)]

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use memfile_core::{Frozen, FrozenError, FrozenErrorKind, MemFile, Seal, Seals};
use memmap2::MmapOptions;

fn sealable_with(name: &str, bytes: &[u8], seals: impl Into<Seals>) -> MemFile {
    let mut file = MemFile::create_sealable(name).unwrap();
    file.write_all(bytes).unwrap();
    let seals = seals.into();
    if !seals.is_empty() {
        file.add_seals(seals).unwrap();
    }
    file
}

/// Asserts the rejection is `NotSealed` with these seals missing, that the message names
/// the seals found and required, and that the fd comes back.
fn assert_not_sealed(fd: OwnedFd, missing: Seals) {
    let raw = fd.as_raw_fd();
    let err = Frozen::from_fd(fd).unwrap_err();
    match err.kind() {
        FrozenErrorKind::NotSealed { found, required } => {
            assert_eq!(*required, Seal::Write | Seal::Shrink);
            assert_eq!(*required - *found, missing);
            let msg = err.to_string();
            assert!(msg.contains(&format!("fd {raw}")), "{msg}");
            assert!(msg.contains(&format!("seals found: {found}")), "{msg}");
            assert!(msg.contains("required: Shrink | Write"), "{msg}");
        }
        other => panic!("expected NotSealed, got {other:?}"),
    }
    let back = err.into_fd();
    assert_eq!(back.as_raw_fd(), raw);
    // The descriptor is still open and usable.
    assert!(MemFile::from_fd(back).is_ok());
}

#[test]
fn freeze_seals_and_maps() {
    let frozen = sealable_with("freeze", b"hello frozen", Seals::empty())
        .freeze()
        .unwrap();
    assert_eq!(&frozen[..], b"hello frozen");
    assert_eq!(frozen.len(), 12);
    assert!(!frozen.is_empty());
    assert!(
        frozen
            .seals()
            .contains(Seal::Write | Seal::Shrink | Seal::Grow | Seal::Seal)
    );
    let again = Frozen::from_fd(frozen.try_clone_fd().unwrap()).unwrap();
    assert_eq!(again.as_ref(), b"hello frozen");
}

#[test]
fn freeze_tolerates_seals_already_there() {
    let f = sealable_with("pre", b"x", Seal::Write).freeze().unwrap();
    assert_eq!(&f[..], b"x");
    // Seal already set, but Write and Shrink too: nothing to add, fine.
    let f = sealable_with("sealed", b"y", Seal::Write | Seal::Shrink | Seal::Seal)
        .freeze()
        .unwrap();
    assert_eq!(&f[..], b"y");
    assert!(!f.seals().contains(Seal::Grow));
}

#[test]
fn freeze_fails_clearly_when_seal_forbids_adding() {
    for (name, file) in [
        (
            "sealed-early",
            sealable_with("s", b"z", Seal::Shrink | Seal::Seal),
        ),
        ("not-sealable", MemFile::create_default("d").unwrap()),
    ] {
        let raw = file.as_fd().as_raw_fd();
        let err = file.freeze().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("fd {raw} cannot be frozen")),
            "{name}: {msg}"
        );
        assert!(msg.contains("required: Shrink | Write"), "{name}: {msg}");
        assert!(
            msg.contains("seals found: ") && msg.contains("Seal"),
            "{name}: {msg}"
        );
        // The file is inside the io::Error, and can be taken back.
        let inner = err.into_inner().unwrap().downcast::<FrozenError>().unwrap();
        assert_eq!(inner.into_fd().as_raw_fd(), raw);
    }
}

/// safety.md §6: `MemFile::freeze` cannot know about the caller's mappings; it reports
/// `EBUSY` with a message saying what to do, and the file comes back from the error and
/// freezes once the mapping is gone. (The ~0.25 s retry of `Frozen::build` and
/// `WritableRegion` is tested inside the crate, where an `EBUSY` can be made to happen.)
#[test]
fn ebusy_while_a_writable_mapping_lives() {
    let file = MemFile::create_sealable("busy").unwrap();
    file.set_len(4096).unwrap();
    let raw = file.as_fd().as_raw_fd();
    // SAFETY: a fresh private memfd; nobody else can truncate it.
    let mut map = unsafe { MmapOptions::new().len(4096).map_mut(&file.as_fd()) }.unwrap();
    map[0] = 7;
    let e = file.add_seals(Seal::Write).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
    assert!(e.to_string().contains("writable shared mapping"), "{e}");
    let err = file.freeze().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("fd {raw}")), "{text}");
    assert!(text.contains("F_ADD_SEALS failed"), "{text}");
    assert!(
        text.contains("a writable shared mapping of the file exists")
            && text.contains("unmap it before sealing"),
        "{text}"
    );
    // The file is in the error, unsealed (the refused add left no seal behind).
    let frozen_err = err.into_inner().unwrap().downcast::<FrozenError>().unwrap();
    assert!(
        matches!(frozen_err.kind(), FrozenErrorKind::Io(e) if e.raw_os_error() == Some(libc::EBUSY)),
        "{frozen_err:?}"
    );
    let file = MemFile::from_fd(frozen_err.into_fd()).unwrap();
    assert!(!file.get_seals().unwrap().contains(Seal::Write));
    // Once unmapped, the recovered file freezes, with what was written through the mapping.
    drop(map);
    let frozen = file.freeze().unwrap();
    assert_eq!(frozen[0], 7);
}

#[test]
fn build_and_region_do_not_hit_ebusy() {
    for i in 0..50 {
        let f = Frozen::build("build", 8192, |buf| buf.fill(i as u8)).unwrap();
        assert!(f.iter().all(|&b| b == i as u8));
        let mut r = memfile_core::WritableRegion::new("region", 8192).unwrap();
        r.fill(i as u8 + 1);
        let f = r.freeze().unwrap();
        assert!(f.iter().all(|&b| b == i as u8 + 1));
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn rejects_every_file_that_could_change() {
    // No seals at all (on 6.3+ it has Exec, which does not help).
    let f = sealable_with("none", b"a", Seals::empty());
    let found = f.get_seals().unwrap();
    assert_not_sealed(f.into_fd(), (Seal::Write | Seal::Shrink) - found);
    // FutureWrite does not stop the owner's old writable mappings: not enough.
    let f = sealable_with(
        "future",
        b"a",
        Seal::FutureWrite | Seal::Shrink | Seal::Grow,
    );
    assert_not_sealed(f.into_fd(), Seal::Write.into());
    // Write without Shrink: the file could shrink under the mapping (SIGBUS).
    assert_not_sealed(
        sealable_with("w", b"a", Seal::Write).into_fd(),
        Seal::Shrink.into(),
    );
    // Shrink without Write.
    assert_not_sealed(
        sealable_with("s", b"a", Seal::Shrink).into_fd(),
        Seal::Write.into(),
    );
    // Not sealable at all: only {Seal}.
    assert_not_sealed(
        MemFile::create_default("plain").unwrap().into_fd(),
        Seal::Write | Seal::Shrink,
    );
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn accepts_extra_seals() {
    let f = sealable_with(
        "extra",
        b"abc",
        Seal::Write | Seal::Shrink | Seal::FutureWrite,
    );
    let frozen = Frozen::try_from(f).unwrap();
    assert_eq!(&frozen[..], b"abc");
    assert!(frozen.seals().contains(Seal::FutureWrite));
}

fn assert_not_memfd(fd: OwnedFd, what: &str) {
    let raw = fd.as_raw_fd();
    let err = Frozen::from_fd(fd).unwrap_err();
    assert!(
        matches!(err.kind(), FrozenErrorKind::NotMemfd(_)),
        "{what}: {err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&format!("fd {raw}")), "{what}: {msg}");
    let io_err = io::Error::from(Frozen::from_fd(err.into_fd()).unwrap_err());
    assert_eq!(io_err.kind(), io::ErrorKind::InvalidInput, "{what}");
}

#[test]
fn rejects_what_is_not_a_memfd() {
    // A /dev/shm file is tmpfs too, and reports seals {Seal}.
    if let Ok(file) = tempfile::tempfile_in("/dev/shm") {
        file.write_all_at(b"shm", 0).unwrap();
        assert_not_memfd(file.into(), "/dev/shm file");
    } else {
        println!("skipped: /dev/shm is not available");
    }
    let (reader, _writer) = io::pipe().unwrap();
    assert_not_memfd(reader.into(), "pipe");
    let disk = tempfile::tempfile().unwrap();
    assert_not_memfd(disk.into(), "disk file");
    // An O_PATH descriptor of a sealed memfd can be neither read nor mapped.
    let f = sealable_with("opath", b"a", Seal::Write | Seal::Shrink);
    let path = format!("/proc/self/fd/{}", f.as_fd().as_raw_fd());
    let opath = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&path)
        .unwrap();
    assert_not_memfd(opath.into(), "O_PATH descriptor");
}

#[test]
fn accepts_a_read_only_reopen() {
    // Receivers may well get an O_RDONLY descriptor: that is all a Frozen needs.
    let f = sealable_with("rdonly", b"read me", Seal::Write | Seal::Shrink);
    let path = format!("/proc/self/fd/{}", f.as_fd().as_raw_fd());
    let rdonly = std::fs::File::open(&path).unwrap();
    assert_eq!(&Frozen::from_fd(rdonly.into()).unwrap()[..], b"read me");
}

#[test]
fn rejects_a_write_only_descriptor() {
    let f = sealable_with("wronly", b"a", Seal::Write | Seal::Shrink);
    let path = format!("/proc/self/fd/{}", f.as_fd().as_raw_fd());
    let wronly = OpenOptions::new().write(true).open(&path).unwrap();
    let err = Frozen::from_fd(wronly.into()).unwrap_err();
    assert!(
        matches!(err.kind(), FrozenErrorKind::NotReadable(_)),
        "{err:?}"
    );
}

/// Tries every way to change a frozen file through `fd`; returns a list of every attempt
/// that was not refused with the seals' `EPERM` (so a success, or a refusal for another
/// reason, both show up). `MemFile`'s own errors keep the kind (`PermissionDenied`) and
/// name the seal; the raw calls keep the errno.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn try_to_change(fd: std::os::fd::BorrowedFd<'_>) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut expect_eperm = |what: &str, result: io::Result<()>| match result {
        Err(e)
            if e.raw_os_error() == Some(libc::EPERM)
                || (e.raw_os_error().is_none() && e.kind() == io::ErrorKind::PermissionDenied) => {}
        other => wrong.push(format!("{what}: {other:?}")),
    };
    let file = MemFile::from_fd(fd.try_clone_to_owned().unwrap()).unwrap();
    expect_eperm("pwrite", file.write_at(b"X", 0).map(drop));
    expect_eperm("shrink", file.set_len(1));
    expect_eperm("grow", file.set_len(1 << 20));
    expect_eperm("punch_hole", file.punch_hole(0, 4096));
    expect_eperm("fallocate", file.allocate(0, 1 << 20));
    // SAFETY: if this succeeded the test fails anyway; nothing reads through the mapping.
    let map = unsafe { MmapOptions::new().len(4).map_mut(&file.as_fd()) };
    expect_eperm("writable shared mmap", map.map(drop));
    expect_eperm("add seal", file.add_seals(Seal::FutureWrite));
    // A reopen through /proc is a new open file description: the seals are the inode's.
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let reopened = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    expect_eperm("pwrite after reopen", reopened.write_at(b"Y", 0).map(drop));
    // SAFETY: as above.
    let map = unsafe { MmapOptions::new().len(4).map_mut(&reopened) };
    expect_eperm("writable mmap after reopen", map.map(drop));
    wrong
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn nobody_can_change_a_frozen_file() {
    let frozen = Frozen::from_bytes("immutable", &[42u8; 8192]).unwrap();
    let changed = try_to_change(frozen.as_fd());
    assert!(changed.is_empty(), "changed through: {changed:?}");
    let changed = try_to_change(frozen.try_clone_fd().unwrap().as_fd());
    assert!(changed.is_empty(), "changed through a clone: {changed:?}");
    assert_eq!(frozen.len(), 8192);
    assert!(frozen.iter().all(|&b| b == 42));
    // The errors are EPERM from the kernel, not something this crate made up.
    let e = nix::unistd::ftruncate(frozen.as_fd(), 0).unwrap_err();
    assert_eq!(e, nix::errno::Errno::EPERM);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn a_child_process_cannot_change_it() {
    let frozen = Frozen::build("fork", 4096, |b| b.fill(9)).unwrap();
    let fd = frozen.as_raw_fd();
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
    // SAFETY: the child only makes raw system calls (async-signal-safe) and `_exit`s; it
    // allocates nothing, so other test threads holding locks cannot deadlock it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut worked = 0;
        // SAFETY: raw syscalls (async-signal-safe) on a descriptor and buffers that the
        // child owns; `mmap` results are only compared with MAP_FAILED.
        unsafe {
            if libc::pwrite(fd, b"X".as_ptr().cast(), 1, 0) >= 0 {
                worked |= 1;
            }
            if libc::ftruncate(fd, 0) == 0 {
                worked |= 2;
            }
            if libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                4096,
            ) == 0
            {
                worked |= 4;
            }
            let prot = libc::PROT_READ | libc::PROT_WRITE;
            if libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_SHARED, fd, 0)
                != libc::MAP_FAILED
            {
                worked |= 8;
            }
            let fd2 = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd2 >= 0 {
                if libc::pwrite(fd2, b"Y".as_ptr().cast(), 1, 0) >= 0 {
                    worked |= 16;
                }
                if libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_SHARED, fd2, 0)
                    != libc::MAP_FAILED
                {
                    worked |= 32;
                }
            }
            libc::_exit(worked);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status));
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child changed it (bit mask of ways)"
    );
    assert!(frozen.iter().all(|&b| b == 9));
}

#[test]
fn empty_files() {
    let a = Frozen::build("empty", 0, |b| assert!(b.is_empty())).unwrap();
    let b = Frozen::from_bytes("empty", b"").unwrap();
    let c = sealable_with("empty", b"", Seals::empty())
        .freeze()
        .unwrap();
    let d = memfile_core::WritableRegion::new("empty", 0)
        .unwrap()
        .freeze()
        .unwrap();
    for f in [a, b, c, d] {
        assert!(f.is_empty());
        assert_eq!(f.len(), 0);
        assert_eq!(&f[..], b"");
        let again = Frozen::from_fd(f.try_clone_fd().unwrap()).unwrap();
        assert!(again.is_empty());
    }
}

#[test]
fn max_len_rejects_a_sparse_terabyte_before_mapping() {
    const TIB: u64 = 1 << 40;
    let f = MemFile::create_sealable("sparse").unwrap();
    f.set_len(TIB).unwrap();
    f.add_seals(Seal::Write | Seal::Shrink).unwrap();
    let err = Frozen::from_fd_with_max_len(f.into_fd(), 1 << 30).unwrap_err();
    match err.kind() {
        FrozenErrorKind::TooLarge { len, max } => {
            assert_eq!((*len, *max), (TIB, 1 << 30));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("1099511627776"), "{err}");
    let fd = err.into_fd();
    // Within the limit it is accepted.
    let small = sealable_with("small", b"ok", Seal::Write | Seal::Shrink);
    assert_eq!(
        &Frozen::from_fd_with_max_len(small.into_fd(), 2).unwrap()[..],
        b"ok"
    );
    let io_err = io::Error::from(Frozen::from_fd_with_max_len(fd, 0).unwrap_err());
    assert_eq!(io_err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn clone_shares_one_mapping_and_is_send_sync() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_sync::<Frozen>();
    let a = Frozen::from_bytes("shared", b"shared bytes").unwrap();
    let b = a.clone();
    assert_eq!(a.as_ptr(), b.as_ptr());
    assert_eq!(a.as_raw_fd(), b.as_raw_fd());
    let t = std::thread::spawn(move || b.to_vec());
    assert_eq!(t.join().unwrap(), b"shared bytes");
}

#[test]
fn debug_shows_fd_len_seals_not_bytes() {
    let f = Frozen::from_bytes("dbg", b"SECRETBYTES").unwrap();
    let s = format!("{f:?}");
    assert!(s.contains(&format!("fd: {}", f.as_raw_fd())), "{s}");
    assert!(s.contains("len: 11"), "{s}");
    assert!(s.contains("Write"), "{s}");
    assert!(!s.contains("SECRET") && !s.contains("83, 69"), "{s}");
}

#[test]
fn from_bytes_round_trips_large_data() {
    let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 251) as u8).collect();
    let f = Frozen::from_bytes("big", &data).unwrap();
    assert_eq!(&f[..], &data[..]);
}

#[test]
fn try_build_returns_the_closures_error() {
    let r = Frozen::try_build("fails", 10, |_| Err(io::Error::other("no data")));
    assert_eq!(r.unwrap_err().to_string(), "no data");
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn open_reader_has_its_own_offset() {
    let f = Frozen::from_bytes("reader", b"0123456789").unwrap();
    let mut r1 = f.open_reader().unwrap();
    let mut r2 = f.open_reader().unwrap();
    let mut buf = [0u8; 4];
    r1.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"0123");
    let mut all = Vec::new();
    r2.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"0123456789");
    // Read-only: writing through it fails.
    assert!(r1.write_all(b"x").is_err());
}

#[test]
fn hugetlb_frozen_when_huge_pages_are_free() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if free == 0 {
        println!("skipped: no free huge pages (vm.nr_hugepages)");
        return;
    }
    let opts = memfile_core::CreateOptions::new()
        .allow_sealing(true)
        .huge_tlb(memfile_core::HugeTlb::Huge2MB);
    let f = MemFile::create("huge", opts).unwrap();
    f.set_len(2 << 20).unwrap();
    let frozen = f.freeze().unwrap();
    assert_eq!(frozen.len(), 2 << 20);
    assert!(frozen.iter().all(|&b| b == 0));
}

#[test]
fn a_shared_read_only_mapping_cannot_be_made_writable() {
    let frozen = Frozen::from_bytes("mprotect", &[1u8; 4096]).unwrap();
    // SAFETY: the file is sealed Write | Shrink (it is a Frozen): the bytes cannot change.
    let map = match unsafe { MmapOptions::new().len(4096).map(&frozen.as_fd()) } {
        Ok(map) => map,
        Err(e) => {
            // Kernels before 6.7 refuse even this (the reason Frozen maps MAP_PRIVATE).
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
            println!("skipped: read-only MAP_SHARED of a write-sealed memfd is EPERM here");
            return;
        }
    };
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: only asks for a protection change; on failure nothing changes, and on
    // success the test fails before anything is written.
    let rc = unsafe { libc::mprotect(map.as_ptr() as *mut libc::c_void, 4096, prot) };
    assert_eq!(rc, -1, "mprotect to writable succeeded");
    assert_eq!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::EACCES)
    );
    assert_eq!(map[0], 1);
}

#[test]
fn write_without_shrink_does_not_keep_the_bytes() {
    // Why Frozen needs Shrink for immutability too, not only against SIGBUS: a
    // write-sealed file can still be cut and grown back, which zeroes its tail.
    let f = sealable_with("cut", b"precious", Seal::Write);
    f.set_len(0).unwrap();
    f.set_len(8).unwrap();
    let mut buf = [0xFFu8; 8];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0u8; 8]);
}

/// Every `Frozen` this process fills itself is mapped on the first read; `try_as_slice`
/// makes that mapping, and later reads reuse it.
#[test]
fn try_as_slice_maps_on_first_read_and_reuses_the_mapping() -> io::Result<()> {
    let mut region = memfile_core::WritableRegion::new("region", 3)?;
    region.copy_from_slice(b"reg");
    let made = [
        (
            Frozen::from_bytes("bytes", b"from bytes")?,
            &b"from bytes"[..],
        ),
        (
            Frozen::build("build", 5, |b| b.copy_from_slice(b"built"))?,
            b"built",
        ),
        (region.freeze()?, b"reg"),
        (Frozen::from_bytes("empty", b"")?, b""),
        (MemFile::create_sealable("freeze")?.freeze()?, b""),
    ];
    for (frozen, expected) in &made {
        let first = frozen.try_as_slice()?;
        assert_eq!(first, *expected);
        assert_eq!(
            first.as_ptr(),
            frozen.as_slice().as_ptr(),
            "one mapping, reused"
        );
        assert_eq!(frozen.clone().try_as_slice()?.as_ptr(), first.as_ptr());
    }
    Ok(())
}

/// Out of address space, the lazy mapping fails: `try_as_slice` returns the error (naming
/// the fd and the length), `as_slice` panics with it, and once there is room again the next
/// call maps. Runs in a child process, as the address-space limit is per process.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn try_as_slice_returns_the_mapping_error() {
    const CHILD: &str = "MEMFILE_CORE_TRY_AS_SLICE_CHILD";
    const NAME: &str = "try_as_slice_returns_the_mapping_error";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("child: mapping refused and retried"),
            "{stdout}"
        );
        return;
    }

    // 512 MiB: the freeze allocates it (the crate's producers leave no hole), but the
    // read-only mapping, made on the first read, needs 512 MiB of address space more.
    const LEN: usize = 512 << 20;
    let frozen = memfile_core::WritableRegion::new("too-big", LEN)
        .unwrap()
        .freeze()
        .unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid, writable rlimit for getrlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    // Room for the allocations of the failure path (glibc may reserve a 64 MiB arena), not
    // for the 512 MiB mapping.
    let limited = libc::rlimit {
        rlim_cur: (vm_kib * 1024 + (256 << 20)) as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: plain syscall on a valid rlimit; it lowers only this child's soft limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limited) }, 0);

    let err = frozen
        .try_as_slice()
        .expect_err("512 MiB mapping over the limit");
    let msg = err.to_string();
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{msg}");
    assert!(msg.contains(&format!("fd {}", frozen.as_raw_fd())), "{msg}");
    assert!(msg.contains(&format!("{LEN} bytes")), "{msg}");
    let panic = std::panic::catch_unwind(|| frozen.as_slice().len()).expect_err("as_slice");
    let panic_msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(panic_msg.contains("mapping a frozen memfd"), "{panic_msg}");

    // SAFETY: as above; raises the soft limit back to where it was.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
    let bytes = frozen.try_as_slice().expect("mapping with room again");
    assert_eq!(bytes.len(), LEN);
    assert_eq!(bytes[LEN - 1], 0);
    println!("child: mapping refused and retried");
}
