//! Hugetlb memfds. Creating and sizing one needs no huge pages; touching its memory does, so
//! that part skips when `/proc/meminfo` shows none free (tests never change sysctls).

#![cfg(any(target_os = "linux", target_os = "android"))]

use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use memfile_core::{CreateOptions, Frozen, FrozenError, FrozenErrorKind, HugeTlb, MemFile, Seal};

/// A `/proc/meminfo` field, in its unit (pages or kB).
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The default huge page size of this machine, if it has one the crate can name.
fn default_huge_page() -> Option<HugeTlb> {
    HugeTlb::from_size_bytes(meminfo("Hugepagesize")? * 1024)
}

#[test]
fn sizes_match_the_kernel_flags() {
    let expected: [u64; 12] = [
        64 << 10,
        512 << 10,
        1 << 20,
        2 << 20,
        8 << 20,
        16 << 20,
        32 << 20,
        256 << 20,
        512 << 20,
        1 << 30,
        2 << 30,
        16 << 30,
    ];
    for (size, bytes) in HugeTlb::ALL.into_iter().zip(expected) {
        assert_eq!(size.size_bytes(), bytes, "{size:?}");
        assert_eq!(HugeTlb::from_size_bytes(bytes), Some(size));
        // MFD_HUGE_SHIFT is 26: the flag carries log2 of the size.
        assert_eq!(size.flag_bits() >> 26, bytes.trailing_zeros(), "{size:?}");
    }
    assert_eq!(HugeTlb::Huge2MB.flag_bits(), libc::MFD_HUGE_2MB);
    assert_eq!(HugeTlb::Huge16GB.flag_bits(), libc::MFD_HUGE_16GB);
}

fn create_huge(size: HugeTlb, sealable: bool) -> Option<MemFile> {
    let options = CreateOptions::new().huge_tlb(size).allow_sealing(sealable);
    match MemFile::create("huge", options) {
        Ok(file) => Some(file),
        Err(e) => {
            println!("skipped: cannot create a {size:?} hugetlb memfd: {e}");
            None
        }
    }
}

#[test]
fn size_must_be_a_multiple_of_the_huge_page() -> io::Result<()> {
    let Some(size) = default_huge_page() else {
        println!("skipped: no default huge page size in /proc/meminfo");
        return Ok(());
    };
    let Some(mut file) = create_huge(size, true) else {
        return Ok(());
    };
    let page = size.size_bytes();
    file.set_len(page)?;
    assert_eq!(file.metadata()?.len(), page);
    let err = file.set_len(page + 1).expect_err("unaligned size");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(file.metadata()?.len(), page);
    // write() is not supported on hugetlbfs (no write_iter: the VFS says EINVAL).
    let err = file.write(b"x").expect_err("write() on hugetlbfs");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    // It is a memfd (on hugetlbfs, not tmpfs), and sealing works as usual.
    let file = MemFile::from_fd(file.into_fd())?;
    file.add_seals(Seal::Shrink | Seal::Grow)?;
    let err = file.set_len(2 * page).expect_err("grow past the Grow seal");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("Grow seal"), "{err}");
    Ok(())
}

#[test]
fn unsealable_stays_unsealable_with_huge_pages() -> io::Result<()> {
    let Some(size) = default_huge_page() else {
        println!("skipped: no default huge page size in /proc/meminfo");
        return Ok(());
    };
    let Some(file) = create_huge(size, false) else {
        return Ok(());
    };
    assert!(file.get_seals()?.contains(Seal::Seal));
    let err = file
        .add_seal(Seal::Grow)
        .expect_err("sealing an unsealable file");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("the Seal seal forbids"), "{err}");
    Ok(())
}

#[test]
fn huge_pages_hold_data_when_free_ones_exist() -> io::Result<()> {
    let free = meminfo("HugePages_Free").unwrap_or(0);
    if free == 0 {
        println!("skipped: HugePages_Free is 0 (vm.nr_hugepages reserves none)");
        return Ok(());
    }
    let Some(size) = default_huge_page() else {
        println!("skipped: no default huge page size in /proc/meminfo");
        return Ok(());
    };
    let Some(file) = create_huge(size, true) else {
        return Ok(());
    };
    let page = size.size_bytes();
    file.set_len(page)?;
    {
        // SAFETY: test-only mapping of a memfd this test owns and does not resize meanwhile.
        let mut map = unsafe { memmap2::MmapMut::map_mut(file.as_file())? };
        map[0] = 7;
        map[page as usize - 1] = 9;
    }
    let mut buf = [0; 1];
    file.read_exact_at(&mut buf, page - 1)?;
    assert_eq!(buf, [9]);
    file.add_seals(Seal::Write | Seal::Shrink | Seal::Grow)?;
    file.read_exact_at(&mut buf, 0)?;
    assert_eq!(buf, [7]);
    Ok(())
}

/// safety.md §8: `MemFile::freeze` allocates the holes of a hugetlb memfd before sealing.
/// With no free huge page (the default pool here is empty) that fails cleanly with
/// `ENOSPC`, naming the `fallocate`, before any seal is added, and the file comes back in
/// the error; with free pages the result is fully backed.
#[test]
fn freeze_fills_hugetlb_holes_or_fails_cleanly_with_enospc() -> io::Result<()> {
    let Some(size) = default_huge_page() else {
        println!("skipped: no default huge page size in /proc/meminfo");
        return Ok(());
    };
    let Some(file) = create_huge(size, true) else {
        return Ok(());
    };
    let page = size.size_bytes();
    file.set_len(page)?; // one huge page, all hole: no page is allocated by set_len
    match file.freeze() {
        Err(err) => {
            assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
            let text = err.to_string();
            assert!(text.contains("fallocate failed"), "{text}");
            let frozen_err = err
                .into_inner()
                .expect("the error keeps the FrozenError")
                .downcast::<FrozenError>()
                .expect("a FrozenError");
            assert!(
                matches!(frozen_err.kind(), FrozenErrorKind::Io(e) if e.raw_os_error() == Some(libc::ENOSPC)),
                "{frozen_err:?}"
            );
            // Nothing was sealed: the file can still be resized, and sealed later.
            let file = MemFile::from_fd(frozen_err.into_fd())?;
            assert!(!file.get_seals()?.intersects(Seal::Write | Seal::Shrink));
            file.set_len(0)?;
            println!("hugetlb pool empty: freeze failed cleanly with ENOSPC");
        }
        Ok(frozen) => {
            // A free huge page was there: now allocated, readable, no hole.
            assert_eq!(frozen.len() as u64, page);
            assert_eq!(frozen[page as usize - 1], 0);
            let st = nix::sys::stat::fstat(&frozen)?;
            assert!(st.st_blocks as u64 * 512 >= page);
            println!("hugetlb pool had a free page: freeze allocated it");
        }
    }
    Ok(())
}

/// A sealed hugetlb memfd with holes is refused by both `from_fd` and
/// `from_fd_fully_allocated` (`HugeTlbHoles`, with the counts); needs no huge page.
#[test]
fn sealed_hugetlb_with_holes_is_refused() -> io::Result<()> {
    let Some(size) = default_huge_page() else {
        println!("skipped: no default huge page size in /proc/meminfo");
        return Ok(());
    };
    let Some(file) = create_huge(size, true) else {
        return Ok(());
    };
    let page = size.size_bytes();
    file.set_len(page)?;
    file.add_seals(Seal::Write | Seal::Shrink | Seal::Grow)?;
    let fd = file.into_fd();
    for strict in [false, true] {
        let clone = fd.try_clone()?;
        let err = if strict {
            Frozen::from_fd_fully_allocated(clone, u64::MAX)
        } else {
            Frozen::from_fd(clone)
        }
        .expect_err("holes");
        match err.kind() {
            FrozenErrorKind::HugeTlbHoles { len, allocated } => {
                assert_eq!((*len, *allocated), (page, 0), "{err}");
            }
            other => panic!("strict {strict}: expected HugeTlbHoles, got {other:?}"),
        }
        assert!(err.to_string().contains("hugetlb"), "{err}");
    }
    Ok(())
}

/// With a free huge page: a frozen hugetlb memfd is accepted by `from_fd` but refused by
/// `from_fd_fully_allocated` (hugetlbfs cannot report holes: `Sparse` without an offset),
/// and one whose size is not a multiple of the huge page (`fallocate` can make that) is
/// mapped as whole huge pages and unmapped completely on drop.
#[test]
fn frozen_hugetlb_strict_refusal_and_mapping_length() -> io::Result<()> {
    let free = meminfo("HugePages_Free").unwrap_or(0);
    if free == 0 {
        println!("skipped: HugePages_Free is 0 (vm.nr_hugepages reserves none)");
        return Ok(());
    }
    let Some(size) = default_huge_page() else {
        println!("skipped: no default huge page size in /proc/meminfo");
        return Ok(());
    };
    let Some(file) = create_huge(size, true) else {
        return Ok(());
    };
    let page = size.size_bytes();
    // Half a huge page long: fallocate sets the size to offset + len, unrounded.
    file.allocate(0, page / 2)?;
    let frozen = file.freeze()?;
    assert_eq!(frozen.len() as u64, page / 2);
    assert_eq!(frozen[0], 0);
    let start = frozen.as_ptr() as usize;
    let line = maps_line(start).expect("the mapping is in /proc/self/maps");
    let (lo, hi) = range(&line);
    assert_eq!(
        hi - lo,
        page as usize,
        "mapped as one whole huge page: {line}"
    );
    let err = Frozen::from_fd_fully_allocated(frozen.try_clone_fd()?, u64::MAX)
        .expect_err("hugetlb is refused where full allocation is required");
    assert!(
        matches!(
            err.kind(),
            FrozenErrorKind::Sparse {
                first_hole: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        frozen.first_hole().unwrap_err().kind(),
        io::ErrorKind::Unsupported
    );
    drop(frozen);
    assert_eq!(maps_line(start), None, "unmapped on drop");
    Ok(())
}

/// The `/proc/self/maps` line of the mapping that contains `addr`.
fn maps_line(addr: usize) -> Option<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .find(|l| {
            let (lo, hi) = range(l);
            (lo..hi).contains(&addr)
        })
        .map(str::to_owned)
}

fn range(line: &str) -> (usize, usize) {
    let r = line.split_whitespace().next().unwrap();
    let (lo, hi) = r.split_once('-').unwrap();
    (
        usize::from_str_radix(lo, 16).unwrap(),
        usize::from_str_radix(hi, 16).unwrap(),
    )
}
