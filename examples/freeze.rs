//! Write once, then freeze: after `freeze`, nobody can change the bytes, not even us.
//!
//! ```text
//! cargo run --example freeze
//! ```

use std::io::Write;
use std::os::unix::fs::FileExt;

use memfile::{CreateOptions, MemFile, Seal};

fn main() -> std::io::Result<()> {
    // 1. Write the region once.
    let mut file = MemFile::create("greeting", CreateOptions::new().allow_sealing(true))?;
    file.write_all(b"Hello, frozen world!")?;

    // A second handle to the same file, kept to show what is refused afterwards.
    let other = file.try_clone()?;

    // 2. Freeze: seals Write | Shrink | Grow | Seal, then maps the file read-only.
    let frozen = file.freeze()?;
    println!(
        "frozen: {} bytes, seals: {}",
        frozen.len(),
        other.get_seals()?
    );

    // 3. Every way of changing it fails, through any fd of the file.
    let write = other.write_at(b"J", 0);
    println!("write:            {}", outcome(&write));
    let truncate = other.set_len(5);
    println!("truncate:         {}", outcome(&truncate));
    let grow = other.set_len(1 << 20);
    println!("grow:             {}", outcome(&grow));
    // SAFETY: the mapping is never used: we only want to see that the kernel refuses it.
    let map = unsafe { memmap2::MmapMut::map_mut(&other) };
    println!("writable mapping: {}", outcome(&map));
    let unseal = other.add_seals(Seal::FutureWrite);
    println!("more seals:       {}", outcome(&unseal));

    // 4. The read-only view still reads, as a plain &[u8].
    let text = std::str::from_utf8(&frozen).expect("we wrote UTF-8");
    println!("read-only view:   {text:?}");

    let all_refused = write.is_err() && truncate.is_err() && grow.is_err() && map.is_err();
    assert!(all_refused, "a frozen file accepted a change");
    assert_eq!(&frozen[..], b"Hello, frozen world!");
    println!("ok: every change was refused and the bytes are intact");
    Ok(())
}

fn outcome<T>(r: &std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ALLOWED (unexpected)".to_string(),
        Err(e) => format!("refused ({e})"),
    }
}
