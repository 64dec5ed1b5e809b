//! Holes (issue 10, item 4): what `lseek(SEEK_HOLE)` reports on a memfd (pinned, as the
//! checks rely on it), `Frozen::from_fd_fully_allocated`, and the crate's producers, which
//! must always make fully allocated buffers.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::os::unix::fs::FileExt;

use memfile_core::{Frozen, FrozenErrorKind, MemFile, Seal, WritableRegion};
use nix::fcntl::{FallocateFlags, fallocate};

const PAGE: u64 = 4096;

fn sealed(file: MemFile) -> Frozen {
    file.add_seals(Seal::Write | Seal::Shrink | Seal::Grow)
        .unwrap();
    Frozen::from_fd(file.into_fd()).unwrap()
}

fn allocated_bytes(f: &Frozen) -> u64 {
    nix::sys::stat::fstat(f).unwrap().st_blocks as u64 * 512
}

/// The kernel facts the checks stand on (Linux 6.18 here): a page that `fallocate` reserved
/// but nobody touched is a hole to `SEEK_HOLE` (tmpfs marks it up to date only when written
/// or faulted in); pages allocated past the end (`FALLOC_FL_KEEP_SIZE`) count in
/// `st_blocks` but hide no hole from `SEEK_HOLE`; a page written with zeros is data.
#[test]
fn seek_hole_on_memfds() {
    let reserved = MemFile::create_sealable("reserved").unwrap();
    reserved.allocate(0, 4 * PAGE).unwrap();
    let reserved = sealed(reserved);
    assert_eq!(allocated_bytes(&reserved), 4 * PAGE);
    assert_eq!(reserved.first_hole().unwrap(), Some(0));

    let padded = MemFile::create_sealable("padded").unwrap();
    padded.set_len(4 * PAGE).unwrap();
    padded.write_at(&[0; PAGE as usize], 0).unwrap();
    fallocate(
        padded.as_fd(),
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        (4 * PAGE) as i64,
        (4 * PAGE) as i64,
    )
    .unwrap();
    let padded = sealed(padded);
    assert!(allocated_bytes(&padded) >= 4 * PAGE, "st_blocks is fooled");
    assert_eq!(padded.first_hole().unwrap(), Some(PAGE), "SEEK_HOLE is not");

    let written = MemFile::create_sealable("written").unwrap();
    written.write_at(&[0; 4 * PAGE as usize], 0).unwrap();
    assert_eq!(sealed(written).first_hole().unwrap(), None);
}

#[test]
fn fully_allocated_check_refuses_holes_and_gives_the_fd_back() {
    let file = MemFile::create_sealable("hole-at-two").unwrap();
    file.write_at(&[1; 2 * PAGE as usize], 0).unwrap();
    file.write_at(&[1], 3 * PAGE).unwrap(); // page 2 stays a hole
    file.add_seals(Seal::Write | Seal::Shrink).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    let err = Frozen::from_fd_fully_allocated(file.into_fd(), u64::MAX).unwrap_err();
    match err.kind() {
        FrozenErrorKind::Sparse { len, first_hole } => {
            assert_eq!((*len, *first_hole), (3 * PAGE + 1, Some(2 * PAGE)));
        }
        other => panic!("expected Sparse, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!("fd {raw}")) && text.contains("first hole is at offset 8192"),
        "{text}"
    );
    // The same file, taken back: `from_fd` (holes allowed) takes it.
    let (fd, _) = err.into_parts();
    let sparse = Frozen::from_fd(fd).unwrap();
    assert_eq!(sparse.first_hole().unwrap(), Some(2 * PAGE));
    assert_eq!(sparse[2 * PAGE as usize], 0);

    // Written in full: accepted.
    let file = MemFile::create_sealable("full").unwrap();
    file.write_at(&[1; 3 * PAGE as usize], 0).unwrap();
    file.add_seals(Seal::Write | Seal::Shrink).unwrap();
    let fd = file.into_fd();
    let f = Frozen::from_fd_fully_allocated(fd, u64::MAX).unwrap();
    assert_eq!(f.len() as u64, 3 * PAGE);
    // Empty files have nothing to allocate.
    let empty = MemFile::create_sealable("empty").unwrap();
    empty.add_seals(Seal::Write | Seal::Shrink).unwrap();
    let empty = Frozen::from_fd_fully_allocated(empty.into_fd(), u64::MAX).unwrap();
    assert_eq!(empty.first_hole().unwrap(), None);
}

/// Every producer, whatever its caller left unwritten, makes a buffer without holes.
#[test]
fn producers_leave_no_hole() {
    let len = 64 * PAGE as usize;
    let check = |what: &str, f: Frozen| {
        assert_eq!(f.first_hole().unwrap(), None, "{what}");
        let again = Frozen::from_fd_fully_allocated(f.try_clone_fd().unwrap(), u64::MAX);
        assert!(again.is_ok(), "{what}: {again:?}");
    };
    check(
        "build, nothing written",
        Frozen::build("b", len, |_| {}).unwrap(),
    );
    check(
        "build, odd length",
        Frozen::build("b", len + 3, |b| b[0] = 1).unwrap(),
    );
    check("build, empty", Frozen::build("b", 0, |_| {}).unwrap());
    check(
        "from_bytes",
        Frozen::from_bytes("f", &vec![0; len]).unwrap(),
    );
    check("from_bytes, empty", Frozen::from_bytes("f", &[]).unwrap());
    let mut region = WritableRegion::new("r", len).unwrap();
    region[5 * PAGE as usize] = 1;
    check("WritableRegion, one page written", region.freeze().unwrap());

    let holey = MemFile::create_sealable("m").unwrap();
    holey.set_len(len as u64).unwrap();
    holey.write_at(b"x", 7 * PAGE).unwrap();
    let frozen = holey.freeze().unwrap();
    assert_eq!(frozen[7 * PAGE as usize], b'x');
    check("MemFile::freeze, set_len", frozen);
    let reserved = MemFile::create_sealable("m").unwrap();
    reserved.allocate(0, len as u64).unwrap();
    check("MemFile::freeze, fallocate", reserved.freeze().unwrap());
    // Already sealed with Seal (no seal can be added): freeze still fills the holes.
    let final_seals = MemFile::create_sealable("m").unwrap();
    final_seals.set_len(len as u64).unwrap();
    final_seals
        .add_seals(Seal::Write | Seal::Shrink | Seal::Seal)
        .unwrap();
    check(
        "MemFile::freeze, sealed already",
        final_seals.freeze().unwrap(),
    );
}
