//! Owner-writable sharing: the owner keeps updating a buffer, a reader in another process
//! watches it by copying out, and nobody but the owner can write.
//!
//! ```text
//! cargo run --example live_view
//! ```
//!
//! [`LiveWriter`] maps the memfd writable and only then adds `FutureWrite | Shrink | Grow |
//! Seal`: its mapping stays writable, every other way to write is refused. The reader's
//! [`LiveView`] never hands out a `&[u8]`: the bytes change while it looks at them, and Rust
//! lets the compiler assume that the bytes behind a `&[u8]` never change. It copies out
//! (`read_at`) or loads aligned words atomically (`load_u64`). When the bytes are final,
//! share a [`memfile::Frozen`] instead: that one is a plain `&[u8]`.
//!
//! The layout of the shared page: a `u64` generation at offset 0, published with a release
//! store after the text at offset 8 (length at 8, bytes from 16).

use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::atomic::Ordering;

use memfile::ipc::{self, Fd};
use memfile::{LiveView, LiveWriter, MemFile};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum ToReader {
    /// The live file, once.
    Attach(Fd<OwnedFd>),
    /// Generation `n` is published: read it.
    Check(u64),
    Stop,
}

#[derive(Serialize, Deserialize)]
struct Seen {
    generation: u64,
    text: String,
    /// What happened when the reader tried to write to the file itself.
    write_attempt: String,
}

const ROLE_ENV: &str = "MEMFILE_EXAMPLE_ROLE";
const TEXT_AT: usize = 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(ROLE_ENV).is_some_and(|r| r == "reader") {
        return reader();
    }
    let mut live = LiveWriter::new("status", 4096)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, "reader");
    let (mut child, tx, rx) = ipc::spawn::<ToReader, Seen>(&mut cmd)?;
    tx.send(&ToReader::Attach(Fd::new(live.try_clone_fd()?)))?;

    for generation in 1..=3u64 {
        let text = format!("update number {generation}");
        // Write the data, then publish its generation with a release store.
        live[TEXT_AT..TEXT_AT + 8].copy_from_slice(&(text.len() as u64).to_le_bytes());
        live[TEXT_AT + 8..TEXT_AT + 8 + text.len()].copy_from_slice(text.as_bytes());
        assert!(live.store_u64(0, generation, Ordering::Release));

        tx.send(&ToReader::Check(generation))?;
        let seen = rx.recv()?;
        println!(
            "reader saw generation {}: {:?}; its own write: {}",
            seen.generation, seen.text, seen.write_attempt
        );
        assert_eq!(seen.generation, generation);
        assert_eq!(seen.text, text);
        assert!(
            seen.write_attempt.starts_with("refused"),
            "the reader could write"
        );
    }
    tx.send(&ToReader::Stop)?;
    assert!(child.wait()?.success());
    println!("ok: the reader followed 3 updates and could not write");
    Ok(())
}

fn reader() -> Result<(), Box<dyn std::error::Error>> {
    let (tx, rx) = ipc::from_parent::<Seen, ToReader>()?;
    let ToReader::Attach(fd) = rx.recv()? else {
        return Err("expected the live file first".into());
    };
    let fd = fd.into_inner();
    // A second handle, only to show that writing through it is refused.
    let file = MemFile::from_fd(fd.try_clone()?).map_err(|e| e.to_string())?;
    let view = LiveView::from_fd(fd)?;

    while let ToReader::Check(_) = rx.recv()? {
        let generation = view
            .load_u64(0, Ordering::Acquire)
            .ok_or("page too small")?;
        let mut len = [0u8; 8];
        view.read_at(TEXT_AT, &mut len);
        let mut text = vec![0u8; (u64::from_le_bytes(len) as usize).min(view.len() - 16)];
        view.read_at(TEXT_AT + 8, &mut text);
        let write_attempt = match std::os::unix::fs::FileExt::write_at(&file, b"x", 100) {
            Ok(_) => "ALLOWED".to_string(),
            Err(e) => format!("refused ({e})"),
        };
        tx.send(&Seen {
            generation,
            text: String::from_utf8(text)?,
            write_attempt,
        })?;
    }
    Ok(())
}
