//! The kernel's sealing rules, pinned through `MemFile` (see DESIGN.md, "Kernel facts").

#![cfg(any(target_os = "linux", target_os = "android"))]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use memfile_core::{CreateOptions, MemFile, Seal, Seals};
use memmap2::{Mmap, MmapMut, MmapOptions};

const PAGE: u64 = 4096;

fn sealable(len: u64) -> MemFile {
    let file = MemFile::create_sealable("seals").unwrap();
    file.set_len(len).unwrap();
    file
}

fn map_shared_mut(file: &MemFile) -> io::Result<MmapMut> {
    // SAFETY: test-only mapping of a memfd this test owns; nobody else resizes it while the
    // mapping lives (Shrink-sealed or never shrunk in these tests).
    unsafe { MmapMut::map_mut(file.as_file()) }
}

fn map_shared_ro(file: &MemFile) -> io::Result<Mmap> {
    // SAFETY: as above.
    unsafe { Mmap::map(file.as_file()) }
}

fn map_private_mut(file: &MemFile) -> io::Result<MmapMut> {
    // SAFETY: as above; a private mapping never writes back to the file.
    unsafe { MmapOptions::new().map_copy(file.as_file()) }
}

/// `/proc/self/fd/N` of `file`, the path a reopen goes through.
fn proc_path(file: &MemFile) -> String {
    format!("/proc/self/fd/{}", file.as_raw_fd())
}

fn assert_denied<T: std::fmt::Debug>(r: io::Result<T>, what: &str) -> io::Error {
    let err = r.expect_err(what);
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{what}: {err}");
    err
}

#[test]
fn without_allow_sealing_every_add_fails() -> io::Result<()> {
    for options in [CreateOptions::new(), CreateOptions::new().exec(true)] {
        let file = match MemFile::create("unsealable", options) {
            Ok(f) => f,
            // vm.memfd_noexec=2 refuses MFD_EXEC; exec.rs checks that case.
            Err(e) if options.is_exec() && e.kind() == io::ErrorKind::PermissionDenied => {
                println!("skipped: exec(true): {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let seals = file.get_seals()?;
        assert!(seals.contains(Seal::Seal), "{options:?}: {seals}");
        let clone = file.try_clone()?;
        for &seal in Seal::ALL {
            let err = assert_denied(file.add_seal(seal), "add to unsealable file");
            assert!(err.to_string().contains("allow_sealing"), "{err}");
            assert_denied(clone.add_seal(seal), "add through a clone");
        }
        assert_eq!(file.get_seals()?, seals);
    }
    Ok(())
}

#[test]
fn adding_is_idempotent_and_seal_seals_for_every_fd() -> io::Result<()> {
    let file = sealable(PAGE);
    file.add_seal(Seal::Shrink)?;
    file.add_seal(Seal::Shrink)?;
    file.add_seals(Seal::Shrink | Seal::Grow)?;
    file.add_seals(Seals::empty())?;
    assert!(file.get_seals()?.contains(Seal::Shrink | Seal::Grow));

    let clone = file.try_clone()?;
    clone.add_seal(Seal::Seal)?;
    for f in [&file, &clone] {
        for &seal in Seal::ALL {
            let err = assert_denied(f.add_seal(seal), "add after Seal");
            let msg = err.to_string();
            assert!(msg.contains("seals found: Seal | Shrink | Grow"), "{msg}");
        }
    }
    Ok(())
}

#[test]
fn write_seal_blocks_every_write_path() -> io::Result<()> {
    let mut file = sealable(2 * PAGE);
    file.write_all_at(b"sealed", 0)?;
    file.add_seal(Seal::Write)?;

    assert_denied(file.write(b"x"), "write");
    assert_denied(file.write_at(b"x", 0), "pwrite");
    assert_denied(file.punch_hole(0, PAGE), "hole punch");
    assert_denied(map_shared_mut(&file), "writable MAP_SHARED");

    // A private mapping is fine, and its writes stay private.
    let mut private = map_private_mut(&file)?;
    private[0] = b'S';
    let mut buf = [0; 6];
    file.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"sealed");

    // A read-only shared mapping works on this kernel (not before 6.7), but can never be
    // made writable: the kernel drops VM_MAYWRITE from it.
    match map_shared_ro(&file) {
        Ok(ro) => {
            assert_eq!(&ro[..6], b"sealed");
            let err = ro.make_mut().expect_err("mprotect to writable");
            assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        }
        Err(e) => println!("skipped: mprotect part: read-only MAP_SHARED of a sealed file: {e}"),
    }
    Ok(())
}

#[test]
fn write_seal_is_busy_while_a_writable_shared_mapping_lives() -> io::Result<()> {
    let file = sealable(PAGE);
    let mut map = map_shared_mut(&file)?;
    map[0] = 1;
    let err = file
        .add_seal(Seal::Write)
        .expect_err("EBUSY with a writable mapping");
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
    assert!(err.to_string().contains("writable shared mapping"), "{err}");
    drop(map);
    file.add_seal(Seal::Write)?;
    let mut buf = [0; 1];
    file.read_exact_at(&mut buf, 0)?;
    assert_eq!(buf, [1]);
    Ok(())
}

#[test]
fn future_write_keeps_old_mappings_and_blocks_new_writers() -> io::Result<()> {
    let mut file = sealable(PAGE);
    let mut old = map_shared_mut(&file)?;
    old[0] = b'a';
    file.add_seal(Seal::FutureWrite)?;

    // The mapping made before the seal keeps writing, and the file sees it.
    old[1] = b'b';
    let mut buf = [0; 2];
    file.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"ab");

    assert_denied(file.write(b"x"), "write after FutureWrite");
    assert_denied(file.write_at(b"x", 0), "pwrite after FutureWrite");
    assert_denied(map_shared_mut(&file), "new writable MAP_SHARED");
    assert!(map_private_mut(&file).is_ok());

    // A reopen through /proc gets a new open file, but the seal is on the inode.
    let reopened = OpenOptions::new()
        .read(true)
        .write(true)
        .open(proc_path(&file))?;
    let mut reopened = MemFile::from_file(reopened)?;
    assert_denied(reopened.write(b"x"), "write through a reopen");
    assert_denied(
        map_shared_mut(&reopened),
        "writable MAP_SHARED through a reopen",
    );
    Ok(())
}

#[test]
fn seals_are_shared_by_dup_and_proc_reopen() -> io::Result<()> {
    let file = sealable(PAGE);
    let dup = file.try_clone()?;
    let reopened = OpenOptions::new()
        .read(true)
        .write(true)
        .open(proc_path(&file))?;
    let reopened = MemFile::from_file(reopened)?;

    file.add_seal(Seal::Shrink)?;
    assert!(dup.get_seals()?.contains(Seal::Shrink));
    assert!(reopened.get_seals()?.contains(Seal::Shrink));

    reopened.add_seal(Seal::Grow)?;
    assert!(file.get_seals()?.contains(Seal::Shrink | Seal::Grow));
    assert_denied(dup.set_len(2 * PAGE), "grow through the dup");
    Ok(())
}

#[test]
fn adding_seals_needs_a_writable_fd() -> io::Result<()> {
    let file = sealable(PAGE);
    let ro = MemFile::from_file(File::open(proc_path(&file))?)?;
    let err = assert_denied(ro.add_seal(Seal::Shrink), "add through O_RDONLY");
    assert!(err.to_string().contains("not open for writing"), "{err}");
    // Reading the seals works, and the failed add left none behind.
    assert!(!ro.get_seals()?.contains(Seal::Shrink));
    Ok(())
}

#[test]
fn shrink_seal_refuses_only_shrinking() -> io::Result<()> {
    let file = sealable(4 * PAGE);
    file.add_seal(Seal::Shrink)?;
    let err = assert_denied(file.set_len(PAGE), "shrink with set_len");
    let msg = err.to_string();
    assert!(msg.contains("seals: Shrink"), "{msg}");
    assert!(msg.contains(&format!("to {PAGE} bytes")), "{msg}");
    assert!(msg.contains(&format!("length {}", 4 * PAGE)), "{msg}");
    assert!(msg.contains("the Shrink seal forbids shrinking"), "{msg}");
    file.set_len(8 * PAGE)?;
    file.allocate(0, 16 * PAGE)?;
    assert_eq!(file.metadata()?.len(), 16 * PAGE);
    // Punching a hole does not change the length, so Shrink allows it.
    file.punch_hole(0, PAGE)?;
    assert_eq!(file.metadata()?.len(), 16 * PAGE);
    Ok(())
}

#[test]
fn grow_seal_refuses_only_growing() -> io::Result<()> {
    let mut file = sealable(4 * PAGE);
    file.add_seal(Seal::Grow)?;
    assert_denied(file.set_len(8 * PAGE), "grow with set_len");
    let err = assert_denied(file.allocate(0, 8 * PAGE), "grow with fallocate");
    assert!(err.to_string().contains("seals: Grow"), "{err}");
    assert!(
        err.to_string().contains("the Grow seal forbids growing"),
        "{err}"
    );
    assert_denied(
        file.write_at(b"x", 4 * PAGE),
        "grow with pwrite past the end",
    );
    file.allocate(0, 4 * PAGE)?; // inside the file: no growth
    file.set_len(PAGE)?;
    assert_eq!(file.metadata()?.len(), PAGE);
    // Writing inside the file is fine.
    file.write_all(b"inside")?;
    Ok(())
}

#[test]
fn private_mappings_stay_private_across_fork_under_future_write() -> io::Result<()> {
    let file = sealable(PAGE);
    file.write_all_at(b"file", 0)?;
    file.add_seals(Seal::FutureWrite | Seal::Shrink | Seal::Grow)?;
    let mut private = map_private_mut(&file)?;
    private[..6].copy_from_slice(b"parent");

    // SAFETY: the child only writes to its own copy of the private mapping, calls pread and
    // _exit: no allocation, no locks, nothing the other test threads could hold.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        private[..5].copy_from_slice(b"child");
        let mut buf = [0u8; 4];
        // SAFETY: `buf` is a live local buffer of the length passed.
        let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 0) };
        let code = if n == 4 && &buf == b"file" && &private[..5] == b"child" {
            0
        } else {
            1
        };
        // SAFETY: _exit ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `status` is a live local; `pid` is our child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child saw a change"
    );
    assert_eq!(&private[..6], b"parent");
    let mut buf = [0; 4];
    file.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"file");
    Ok(())
}

/// `Seals::all()` holds `Exec` (6.3+); `add_seals` adds it where the kernel knows it and
/// drops it where not (5.1–6.2: EINVAL), so the call succeeds on every supported kernel.
#[test]
fn adding_all_seals_succeeds() -> io::Result<()> {
    let file = sealable(PAGE);
    file.add_seals(Seals::all())?;
    let found = file.get_seals()?;
    assert!(found.contains(Seals::all() - Seal::Exec), "seals: {found}");
    // `Exec` is there exactly when the kernel knows it (it then also reports it for a
    // file created non-executable, which this one was).
    let kernel_knows_exec = std::fs::metadata("/proc/sys/vm/memfd_noexec").is_ok();
    if kernel_knows_exec {
        assert!(found.is_all(), "seals: {found}");
    } else {
        println!("skipped: kernel older than 6.3 has no Exec seal (checked it was dropped)");
        assert!(!found.contains(Seal::Exec), "seals: {found}");
    }
    assert!(file.set_len(2 * PAGE).is_err());
    Ok(())
}
