//! `MemFile` and `CreateOptions`: creation, names, `from_fd`, and the std traits.

#![cfg(any(target_os = "linux", target_os = "android"))]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::{Command, Stdio};

use memfile_core::{CreateOptions, FromFdError, MAX_NAME_LEN, MemFile, Seal};

/// The `/proc/self/fd/N` link of a descriptor.
fn link(fd: impl AsFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Whether a raw descriptor is still open.
fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table entry; it touches no memory.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// The inode number of the file behind fd number `fd`, if it is open. Tests run in
/// parallel threads, so after a close another test may get the same number at once: a
/// closed file is told by its inode no longer being behind the number, not by the number
/// being free.
fn inode_at(fd: i32) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fstat` writes a `stat` into `st` or fails; on an fd number that is not open
    // (or was reused) it touches nothing but `st`.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    // SAFETY: `fstat` succeeded, so it initialized `st`.
    (rc == 0).then(|| unsafe { st.assume_init() }.st_ino)
}

#[test]
fn seed_example_compiles_and_seals() -> io::Result<()> {
    let mut file = MemFile::create("foo", CreateOptions::new().allow_sealing(true))?;
    file.write_all(b"Hello world!")?;
    file.add_seals(Seal::Write | Seal::Shrink | Seal::Grow)?;
    assert!(
        file.get_seals()?
            .contains(Seal::Write | Seal::Shrink | Seal::Grow)
    );
    assert_eq!(
        file.write(b"x").unwrap_err().kind(),
        io::ErrorKind::PermissionDenied
    );
    Ok(())
}

#[test]
fn create_variants_and_name_in_proc() -> io::Result<()> {
    let a = MemFile::create_default("alpha")?;
    assert_eq!(link(&a), "/memfd:alpha (deleted)");
    assert!(a.get_seals()?.contains(Seal::Seal));

    let b = MemFile::create_sealable("beta")?;
    assert!(!b.get_seals()?.contains(Seal::Seal));
    b.add_seal(Seal::Grow)?;

    let c = CreateOptions::new()
        .allow_sealing(true)
        .create_cstr(c"gamma")?;
    assert_eq!(link(&c), "/memfd:gamma (deleted)");
    assert!(!c.get_seals()?.contains(Seal::Seal));

    let d = MemFile::create_cstr(c"", CreateOptions::default())?;
    assert_eq!(link(&d), "/memfd: (deleted)");

    let e = MemFile::create("ünïcødé", CreateOptions::new())?;
    assert_eq!(link(&e), "/memfd:ünïcødé (deleted)");

    let meta = a.metadata()?;
    assert!(meta.is_file());
    assert_eq!(meta.len(), 0);
    Ok(())
}

#[test]
fn options_builder_reports_its_settings() {
    let o = CreateOptions::new();
    assert!(!o.is_sealing_allowed() && !o.is_exec() && o.huge_tlb_size().is_none());
    assert_eq!(o, CreateOptions::default());
    let o = o
        .allow_sealing(true)
        .exec(true)
        .huge_tlb(memfile_core::HugeTlb::Huge2MB);
    assert!(o.is_sealing_allowed() && o.is_exec());
    assert_eq!(o.huge_tlb_size(), Some(memfile_core::HugeTlb::Huge2MB));
    assert_eq!(o.huge_tlb(None).huge_tlb_size(), None);
}

#[test]
fn name_limits() -> io::Result<()> {
    let longest = "n".repeat(MAX_NAME_LEN);
    assert_eq!(MAX_NAME_LEN, 249);
    let file = MemFile::create_default(&longest)?;
    assert_eq!(link(&file), format!("/memfd:{longest} (deleted)"));

    let too_long = "n".repeat(MAX_NAME_LEN + 1);
    let err = MemFile::create_default(&too_long).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("250 bytes"), "{err}");
    assert!(err.to_string().contains("249"), "{err}");

    let cstr = std::ffi::CString::new(too_long).unwrap();
    let err = MemFile::create_cstr(&cstr, CreateOptions::new()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

    // Multi-byte characters count in bytes: 125 two-byte characters are 250 bytes.
    let err = MemFile::create_default(&"é".repeat(125)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

    let err = MemFile::create_default("bad\0name").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("NUL byte at offset 3"), "{err}");
    Ok(())
}

#[test]
fn read_write_seek_and_file_ext() -> io::Result<()> {
    let mut file = MemFile::create_default("rw")?;
    file.write_all(b"0123456789")?;
    assert_eq!(file.stream_position()?, 10);
    file.seek(SeekFrom::Start(2))?;
    let mut two = [0; 2];
    file.read_exact(&mut two)?;
    assert_eq!(&two, b"23");

    // Through a shared reference, with the shared offset.
    let mut r = &file;
    r.seek(SeekFrom::Start(8))?;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)?;
    assert_eq!(rest, b"89");
    (&file).write_all(b"ab")?;
    assert_eq!(file.metadata()?.len(), 12);

    // Positioned I/O leaves the offset alone.
    file.write_all_at(b"XY", 0)?;
    let mut buf = [0; 4];
    file.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"XY23");
    assert_eq!(file.stream_position()?, 12);

    // A clone shares contents and offset.
    let clone = file.try_clone()?;
    assert_ne!(clone.as_raw_fd(), file.as_raw_fd());
    (&clone).seek(SeekFrom::Start(0))?;
    assert_eq!(file.stream_position()?, 0);
    let mut all = String::new();
    file.read_to_string(&mut all)?;
    assert_eq!(all, "XY23456789ab");
    Ok(())
}

#[test]
fn set_len_and_allocate() -> io::Result<()> {
    let file = MemFile::create_default("len")?;
    file.set_len(10_000)?;
    assert_eq!(file.metadata()?.len(), 10_000);
    file.allocate(0, 20_000)?;
    assert_eq!(file.metadata()?.len(), 20_000);
    // Allocating inside the file does not change its length.
    file.allocate(100, 100)?;
    assert_eq!(file.metadata()?.len(), 20_000);
    file.write_all_at(b"data", 4096)?;
    file.punch_hole(4096, 4096)?;
    let mut buf = [1; 4];
    file.read_exact_at(&mut buf, 4096)?;
    assert_eq!(buf, [0; 4]);
    assert_eq!(file.metadata()?.len(), 20_000);
    file.set_len(0)?;
    assert_eq!(file.metadata()?.len(), 0);
    let err = file.allocate(0, 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let err = file.allocate(u64::MAX, 1).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    Ok(())
}

#[test]
fn fd_conversions() -> io::Result<()> {
    let file = MemFile::create_default("conv")?;
    let raw = file.as_raw_fd();
    assert_eq!(file.as_fd().as_raw_fd(), raw);
    assert_eq!(AsFd::as_fd(&file).as_raw_fd(), raw);

    let fd: OwnedFd = file.into();
    assert_eq!(fd.as_raw_fd(), raw);
    let file = MemFile::try_from(fd).map_err(io::Error::from)?;
    let file: File = file.into();
    let file = MemFile::from_file(file)?;
    let file = MemFile::try_from(file.into_file())?;
    let raw2 = file.into_raw_fd();
    assert_eq!(raw2, raw);
    // SAFETY: `raw2` came from `into_raw_fd` just above, so nothing else owns it.
    let file = unsafe { MemFile::from_raw_fd(raw2) };
    let fd = file.into_fd();
    assert_eq!(fd.as_raw_fd(), raw);
    let inode = inode_at(raw).expect("open before the drop");
    drop(fd);
    // The memfd's inode lives as long as a descriptor of it does, and no other test has
    // one: if `raw` names it still, the drop did not close it.
    assert_ne!(
        inode_at(raw),
        Some(inode),
        "fd {raw} still open after the drop"
    );
    Ok(())
}

#[test]
fn stdio_for_a_child() -> io::Result<()> {
    let mut file = MemFile::create_default("stdin")?;
    file.write_all(b"through a memfd\n")?;
    file.rewind()?;
    let out = Command::new("cat")
        .stdin(file)
        .stdout(Stdio::piped())
        .output()?;
    assert!(out.status.success());
    assert_eq!(out.stdout, b"through a memfd\n");

    // And as stdout: the child writes into the memfd.
    let file = MemFile::create_default("stdout")?;
    let status = Command::new("echo")
        .arg("hi")
        .stdout(file.try_clone()?)
        .status()?;
    assert!(status.success());
    let mut buf = String::new();
    (&file).rewind()?;
    (&file).read_to_string(&mut buf)?;
    assert_eq!(buf, "hi\n");
    Ok(())
}

#[test]
fn descriptors_are_close_on_exec() -> io::Result<()> {
    let file = MemFile::create_default("cloexec")?;
    let clone = file.try_clone()?;
    for f in [&file, &clone] {
        let flags = nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_GETFD)?;
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "fd {}", f.as_raw_fd());
    }
    Ok(())
}

/// Asserts that `from_fd` refuses `fd` with InvalidInput, says `expect`, and gives it back.
fn assert_rejected(fd: OwnedFd, expect: &str) -> FromFdError {
    let raw = fd.as_raw_fd();
    let err = MemFile::from_fd(fd).unwrap_err();
    assert_eq!(err.error().kind(), io::ErrorKind::InvalidInput);
    let msg = err.to_string();
    assert!(msg.contains(&format!("fd {raw}")), "{msg}");
    assert!(msg.contains(expect), "expected {expect:?} in {msg:?}");
    assert_eq!(err.fd().as_raw_fd(), raw);
    assert!(format!("{err:?}").contains("FromFdError"));
    assert!(is_open(raw));
    err
}

#[test]
fn from_fd_rejects_dev_shm_files() -> io::Result<()> {
    let Ok(shm) = tempfile::tempfile_in("/dev/shm") else {
        println!("skipped: /dev/shm is not available");
        return Ok(());
    };
    // A /dev/shm file reports seals, so F_GET_SEALS alone would let it through.
    assert!(nix::fcntl::fcntl(&shm, nix::fcntl::FcntlArg::F_GET_SEALS).is_ok());
    let raw = shm.as_raw_fd();
    let err = assert_rejected(shm.into(), "/dev/shm");
    assert!(err.to_string().contains("regular file"));
    let (error, fd) = err.into_parts();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(fd.as_raw_fd(), raw);
    Ok(())
}

#[test]
fn from_fd_rejects_other_kinds_of_file() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("plain");
    let plain = File::create(&path)?;
    assert_rejected(plain.into(), "is not a memfd: it is a regular file");

    let (reader, writer) = nix::unistd::pipe()?;
    let err = assert_rejected(reader, "it is a pipe");
    let _reader: OwnedFd = err.into_fd();
    assert_rejected(writer, "it is a pipe");

    let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    assert_rejected(a.into(), "it is a socket");

    let d = File::open(dir.path())?;
    assert_rejected(d.into(), "it is a directory");

    let null = File::open("/dev/null")?;
    assert_rejected(null.into(), "character device");

    // `?` turns the error into an io::Error that keeps the reason.
    let err: io::Error = MemFile::from_fd(File::open("/dev/null")?.into())
        .unwrap_err()
        .into();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("character device"));
    Ok(())
}

#[test]
fn from_fd_rejects_o_path_descriptors_even_of_a_memfd() -> io::Result<()> {
    let file = MemFile::create_default("opath")?;
    let o_path = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    assert!(link(&o_path).starts_with("/memfd:opath"));
    assert_rejected(o_path.into(), "O_PATH");
    Ok(())
}

#[test]
fn from_fd_accepts_memfds_also_reopened_read_only() -> io::Result<()> {
    let file = MemFile::create_default("accept")?;
    file.write_all_at(b"kept", 0)?;
    let raw = file.as_raw_fd();
    let file = MemFile::from_fd(file.into_fd())?;
    assert_eq!(file.as_raw_fd(), raw);

    let ro = File::open(format!("/proc/self/fd/{raw}"))?;
    let ro = MemFile::from_file(ro)?;
    let mut buf = [0; 4];
    ro.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"kept");
    assert!(ro.write_at(b"x", 0).is_err());
    Ok(())
}
