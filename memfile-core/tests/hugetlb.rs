//! Hugetlb memfds. Creating and sizing one needs no huge pages; touching its memory does, so
//! that part skips when `/proc/meminfo` shows none free (tests never change sysctls).

#![cfg(any(target_os = "linux", target_os = "android"))]

use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use memfile_core::{CreateOptions, HugeTlb, MemFile, Seal};

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
    // write() is not supported on hugetlbfs.
    assert!(file.write(b"x").is_err());
    // It is a memfd (on hugetlbfs, not tmpfs), and sealing works as usual.
    let file = MemFile::from_fd(file.into_fd())?;
    file.add_seals(Seal::Shrink | Seal::Grow)?;
    assert!(file.set_len(2 * page).is_err());
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
    assert!(file.add_seal(Seal::Grow).is_err());
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
