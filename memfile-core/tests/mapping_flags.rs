//! safety.md §4: a `Frozen` is read through a `PROT_READ`, `MAP_PRIVATE`, `MAP_NORESERVE`
//! mapping, and a `LiveView` through a read-only one; `/proc/self/smaps` shows the flags the
//! kernel actually set (`VmFlags`: `rd` readable, `wr` writable, `sh` shared, `nr` no swap
//! reserved). (The hugetlb case, `ht`, needs a free huge page: see tests/hugetlb.rs.)
#![cfg(any(target_os = "linux", target_os = "android"))]

use memfile_core::{Frozen, LiveView, LiveWriter};

/// The `/proc/self/smaps` entry of the mapping that contains `addr`: its permissions
/// column and its `VmFlags` words.
fn mapping_of(addr: usize) -> (String, Vec<String>) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                current = (lo..hi)
                    .contains(&addr)
                    .then(|| line.split_whitespace().nth(1).unwrap().to_owned());
                continue;
            }
        }
        if let (Some(perms), Some(flags)) = (&current, line.strip_prefix("VmFlags:")) {
            return (
                perms.clone(),
                flags.split_whitespace().map(str::to_owned).collect(),
            );
        }
    }
    panic!("no mapping contains {addr:#x}");
}

fn assert_private_read_only(what: &str, addr: usize) {
    let (perms, flags) = mapping_of(addr);
    assert_eq!(perms, "r--p", "{what}: {perms} {flags:?}");
    for want in ["rd", "nr"] {
        assert!(
            flags.iter().any(|f| f == want),
            "{what}: no {want}: {flags:?}"
        );
    }
    for never in ["wr", "sh"] {
        assert!(
            !flags.iter().any(|f| f == never),
            "{what}: {never}: {flags:?}"
        );
    }
}

#[test]
fn frozen_mappings_are_private_read_only_and_reserve_nothing() {
    // Verified from a descriptor: mapped at once.
    let made = Frozen::from_bytes("flags", &[1; 8192]).unwrap();
    let received = Frozen::from_fd(made.try_clone_fd().unwrap()).unwrap();
    assert_private_read_only("from_fd", received.as_ptr() as usize);
    // Made by this process: mapped on the first read, the same way.
    assert_private_read_only("from_bytes", made.as_ptr() as usize);
    let built = Frozen::build("flags", 4096, |b| b.fill(2)).unwrap();
    assert_private_read_only("build", built.as_ptr() as usize);
}

#[test]
fn live_views_are_read_only() {
    let writer = LiveWriter::new("flags", 4096).unwrap();
    let view = LiveView::from_fd(writer.try_clone_fd().unwrap()).unwrap();
    // `LiveView` has no pointer accessor: find its mapping as the one of this file that is
    // not the writer's.
    let writer_addr = writer.as_ptr() as usize;
    let (perms, flags) = mapping_of(writer_addr);
    assert_eq!(perms, "rw-s", "the writer's own mapping: {flags:?}");
    assert!(
        flags.iter().any(|f| f == "dc"),
        "writer not DONTFORK: {flags:?}"
    );
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let ino = nix::sys::stat::fstat(&view).unwrap().st_ino.to_string();
    let views: Vec<&str> = maps
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some(ino.as_str()))
        .filter(|l| !l.starts_with(&format!("{writer_addr:x}-")))
        .collect();
    assert_eq!(views.len(), 1, "{views:?}");
    let perms = views[0].split_whitespace().nth(1).unwrap();
    assert!(perms == "r--s" || perms == "r--p", "{}", views[0]);
}
