//! The seed README's example, as written, against the facade.

use memfile::{CreateOptions, MemFile, Seal};
use std::io::Write;

#[test]
fn seed_readme_example_compiles_and_runs() -> std::io::Result<()> {
    let mut file = MemFile::create("foo", CreateOptions::new().allow_sealing(true))?;
    file.write_all(b"Hello world!")?;
    file.add_seals(Seal::Write | Seal::Shrink | Seal::Grow)?;
    // From now on, all writes or attempts to created shared, writable memory mappings will fail.

    let seals = file.get_seals()?;
    assert!(
        seals.contains(Seal::Write | Seal::Shrink | Seal::Grow),
        "seals: {seals}"
    );
    let err = file
        .write_all(b"more")
        .expect_err("a write-sealed file accepted a write");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    // SAFETY: the mapping is never used; we only check that the kernel refuses it.
    let map = unsafe { memmap2::MmapMut::map_mut(&file) };
    assert_eq!(
        map.expect_err("writable mapping allowed").raw_os_error(),
        Some(libc::EPERM)
    );
    Ok(())
}
