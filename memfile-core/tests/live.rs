//! `LiveWriter` / `LiveView`: the owner keeps writing, readers copy out, nobody else writes.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use memfile_core::{Frozen, FrozenErrorKind, LiveView, LiveWriter, MemFile, Seal, Seals};
use memmap2::MmapOptions;

#[test]
fn writes_are_visible_to_copy_out_reads() {
    let mut writer = LiveWriter::new("live", 3 * 4096).unwrap();
    let view = LiveView::from_fd(writer.try_clone_fd().unwrap()).unwrap();
    assert_eq!(view.len(), 3 * 4096);
    // Fault the reader's pages in before the writer touches them: later writes must still
    // show (a shared mapping of the same pages, not a private copy of holes).
    assert!(view.to_vec().iter().all(|&b| b == 0));
    writer[..5].copy_from_slice(b"hello");
    writer[4096 * 2 + 7] = 0xAB;
    let mut buf = [0u8; 5];
    assert_eq!(view.read_at(0, &mut buf), 5);
    assert_eq!(&buf, b"hello");
    assert_eq!(view.to_vec()[4096 * 2 + 7], 0xAB);
    writer[..5].copy_from_slice(b"world");
    assert_eq!(view.read_at(0, &mut buf), 5);
    assert_eq!(&buf, b"world");
    // Short reads at the end, nothing past it, never a panic.
    let mut big = [0u8; 10];
    assert_eq!(view.read_at(3 * 4096 - 3, &mut big), 3);
    assert_eq!(view.read_at(3 * 4096, &mut big), 0);
    assert_eq!(view.read_at(usize::MAX, &mut big), 0);
    // Unaligned starts go through the byte-wise head of the copy.
    let mut odd = [0u8; 13];
    assert_eq!(view.read_at(1, &mut odd), 13);
    assert_eq!(&odd[..4], b"orld");
}

#[test]
fn atomic_store_and_load() {
    let mut writer = LiveWriter::new("atomic", 64).unwrap();
    let view = LiveView::from_fd(writer.try_clone_fd().unwrap()).unwrap();
    assert!(writer.store_u64(8, 0x0123_4567_89ab_cdef, Ordering::Release));
    assert!(writer.store_u32(20, 77, Ordering::Relaxed));
    assert_eq!(
        view.load_u64(8, Ordering::Acquire),
        Some(0x0123_4567_89ab_cdef)
    );
    assert_eq!(view.load_u32(20, Ordering::Relaxed), Some(77));
    assert_eq!(
        view.load_u64(8, Ordering::SeqCst),
        Some(0x0123_4567_89ab_cdef)
    );
    // Misaligned or out of range: refused, never a panic.
    assert!(!writer.store_u64(4, 1, Ordering::Relaxed));
    assert!(!writer.store_u64(64, 1, Ordering::Relaxed));
    assert!(!writer.store_u64(usize::MAX - 3, 1, Ordering::Relaxed));
    assert_eq!(view.load_u64(3, Ordering::Relaxed), None);
    assert_eq!(view.load_u64(60, Ordering::Relaxed), None);
    assert_eq!(view.load_u32(usize::MAX - 1, Ordering::Relaxed), None);
}

#[test]
fn publish_from_another_thread() {
    let mut writer = LiveWriter::new("publish", 4096).unwrap();
    let view = LiveView::from_fd(writer.try_clone_fd().unwrap()).unwrap();
    let reader = std::thread::spawn(move || {
        while view.load_u64(0, Ordering::Acquire) != Some(1) {
            std::hint::spin_loop();
        }
        let mut payload = [0u8; 6];
        view.read_at(8, &mut payload);
        payload
    });
    writer[8..14].copy_from_slice(b"ready!");
    assert!(writer.store_u64(0, 1, Ordering::Release));
    assert_eq!(&reader.join().unwrap(), b"ready!");
}

#[test]
fn nobody_but_the_writer_can_write() {
    let mut writer = LiveWriter::new("owner", 4096).unwrap();
    let seals = MemFile::from_fd(writer.try_clone_fd().unwrap())
        .unwrap()
        .get_seals()
        .unwrap();
    assert!(seals.contains(Seal::FutureWrite | Seal::Shrink | Seal::Grow | Seal::Seal));
    let other = MemFile::from_fd(writer.try_clone_fd().unwrap()).unwrap();
    // Every refusal is the seals' EPERM (the MemFile errors keep the kind and name the seal).
    let e = other.write_at(b"x", 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "write: {e}");
    let e = other.set_len(0).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("Shrink seal"), "{e}");
    let e = other.set_len(8192).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("Grow seal"), "{e}");
    let e = other.punch_hole(0, 4096).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    // SAFETY: if this succeeded the test fails; the mapping is not used.
    let e = unsafe { MmapOptions::new().len(4096).map_mut(&other.as_fd()) }.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "writable mmap: {e}");
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&writer));
    let reopened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let e = (&reopened).write_all(b"x").unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EPERM),
        "write after reopen: {e}"
    );
    // ... while the owner's mapping still writes.
    writer[0] = 1;
    let mut one = [0u8; 1];
    other.read_at(&mut one, 0).unwrap();
    assert_eq!(one[0], 1);
}

fn sealed(seals: impl Into<Seals>) -> MemFile {
    let f = MemFile::create_sealable("sealed").unwrap();
    f.set_len(4096).unwrap();
    let seals = seals.into();
    if !seals.is_empty() {
        f.add_seals(seals).unwrap();
    }
    f
}

#[test]
fn view_rejects_files_that_could_shrink_or_anyone_could_write() {
    for (what, file) in [
        ("FutureWrite without Shrink", sealed(Seal::FutureWrite)),
        ("Write without Shrink", sealed(Seal::Write | Seal::Grow)),
        ("Shrink without a write seal", sealed(Seal::Shrink)),
        ("no seals", sealed(Seals::empty())),
    ] {
        let err = LiveView::from_fd(file.into_fd()).unwrap_err();
        match err.kind() {
            FrozenErrorKind::NotSealed { required, .. } => {
                assert_eq!(*required, Seal::FutureWrite | Seal::Shrink, "{what}");
            }
            other => panic!("{what}: expected NotSealed, got {other:?}"),
        }
        assert!(
            err.to_string().contains("required: Shrink | FutureWrite"),
            "{what}: {err}"
        );
        let io_err = io::Error::from(err);
        assert_eq!(io_err.kind(), io::ErrorKind::InvalidInput, "{what}");
    }
    let (pipe, _w) = io::pipe().unwrap();
    let err = LiveView::from_fd(pipe.into()).unwrap_err();
    assert!(
        matches!(err.kind(), FrozenErrorKind::NotMemfd(_)),
        "{err:?}"
    );
}

#[test]
fn view_accepts_a_frozen_file_and_empty_files() {
    let frozen = Frozen::from_bytes("frozen", b"fixed").unwrap();
    let view = LiveView::from_fd(frozen.try_clone_fd().unwrap()).unwrap();
    assert_eq!(view.to_vec(), b"fixed");
    assert!(view.seals().contains(Seal::Write));
    let writer = LiveWriter::new("empty", 0).unwrap();
    assert!(writer.is_empty());
    let view = LiveView::from_fd(writer.try_clone_fd().unwrap()).unwrap();
    assert!(view.is_empty());
    assert_eq!(view.to_vec(), b"");
    assert_eq!(view.load_u64(0, Ordering::Relaxed), None);
}

#[test]
fn view_max_len() {
    let writer = LiveWriter::new("max", 8192).unwrap();
    let err = LiveView::from_fd_with_max_len(writer.try_clone_fd().unwrap(), 4096).unwrap_err();
    assert!(matches!(
        err.kind(),
        FrozenErrorKind::TooLarge {
            len: 8192,
            max: 4096
        }
    ));
    assert!(LiveView::from_fd_with_max_len(writer.try_clone_fd().unwrap(), 8192).is_ok());
}

#[test]
fn send_sync_and_debug() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<LiveView>();
    send_sync::<LiveWriter>();
    let mut writer = LiveWriter::new("dbg", 8).unwrap();
    writer.copy_from_slice(b"SECRETXX");
    let view = LiveView::from_fd(writer.try_clone_fd().unwrap()).unwrap();
    for s in [format!("{writer:?}"), format!("{view:?}")] {
        assert!(s.contains("len: 8"), "{s}");
        assert!(!s.contains("SECRET") && !s.contains("83, 69"), "{s}");
    }
}

/// Run by `another_process_sees_the_writes` in a child process (hence `ignore`d in a normal
/// run): opens the parent's writer through `/proc/<ppid>/fd`, waits for the flag, checks the
/// payload, and checks that it cannot write.
#[test]
#[ignore = "helper, run in a child process by another_process_sees_the_writes"]
fn live_child_reader() {
    let Ok(path) = std::env::var("MEMFILE_LIVE_CHILD_PATH") else {
        println!("skipped: only meaningful when run by another_process_sees_the_writes");
        return;
    };
    let file = std::fs::File::open(&path).unwrap();
    let view = LiveView::from_fd(file.into()).unwrap();
    // The parent writes only after this line: the view must see a write made after it
    // was created.
    assert_eq!(view.load_u64(0, Ordering::Acquire), Some(0));
    println!("LIVE_CHILD_READY");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while view.load_u64(0, Ordering::Acquire) != Some(1) {
        assert!(std::time::Instant::now() < deadline, "flag never came");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut payload = [0u8; 12];
    assert_eq!(view.read_at(8, &mut payload), 12);
    assert_eq!(&payload, b"from parent!");
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let e = rw.write_at(b"child", 8).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EPERM),
        "the child's write: {e}"
    );
    println!("LIVE_CHILD_OK");
}

#[test]
fn another_process_sees_the_writes() {
    let mut writer = LiveWriter::new("cross-process", 4096).unwrap();
    let path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&writer)
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "live_child_reader", "--nocapture"])
        .env("MEMFILE_LIVE_CHILD_PATH", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the child's view (a ready line, not a sleep): the write below must come
    // after the view exists, or the test would not show that the view sees later writes.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(n > 0, "the child ended before it was ready: {seen}");
        seen.push_str(&line);
        if line.contains("LIVE_CHILD_READY") {
            break;
        }
    }
    writer[8..20].copy_from_slice(b"from parent!");
    assert!(writer.store_u64(0, 1, Ordering::Release));
    std::io::Read::read_to_string(&mut stdout, &mut seen).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success() && seen.contains("LIVE_CHILD_OK"),
        "child: {seen}"
    );
    assert_eq!(&writer[8..20], b"from parent!");
}
