//! The `memfile` 0.3.2 API, item by item, through this facade: code written for 0.3 must
//! keep compiling (the facade is its successor, 0.3 -> 0.4), and behave as documented in
//! CHANGELOG.md's "Upgrading from memfile 0.3".
//!
//! Every call below has the signature 0.3.2 had (see its `lib.rs` and `seal.rs`); a compile
//! error here is a breaking change for 0.3 users. The one known source incompatibility is
//! not here: `add_seals` takes `impl Into<Seals>` (0.3: `Seals`), so `add_seals(x.into())`
//! no longer infers its type; CHANGELOG.md says so.

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use memfile::{CreateOptions, FromFdError, HugeTlb, MemFile, Seal, Seals, SealsIterator};

#[test]
fn memfile_constructors_and_conversions() -> std::io::Result<()> {
    let a: MemFile = MemFile::create("a", CreateOptions::new())?;
    let b: MemFile = MemFile::create_cstr(&CString::new("b").unwrap(), CreateOptions::new())?;
    let c: MemFile = MemFile::create_default("c")?;
    let d: MemFile = MemFile::create_sealable("d")?;
    let e: MemFile = CreateOptions::new().allow_sealing(true).create("e")?;
    let f: MemFile = CreateOptions::new().create_cstr(&CString::new("f").unwrap())?;
    let _ = CreateOptions::default()
        .huge_tlb(None)
        .huge_tlb(HugeTlb::Huge2MB);
    let _: Option<HugeTlb> = Some(HugeTlb::Huge1GB);
    println!("{:?}", CreateOptions::new());

    let a2: MemFile = a.try_clone()?;
    let fd: OwnedFd = a2.into_fd();
    let a3: MemFile = MemFile::from_fd(fd).map_err(std::io::Error::from)?;
    let owned: OwnedFd = a3.into();
    let a4 = MemFile::try_from(owned).map_err(|e: FromFdError| e.into_error())?;
    let _borrowed: BorrowedFd<'_> = a4.as_fd();
    let _borrowed: BorrowedFd<'_> = AsFd::as_fd(&a4);
    let raw = a4.into_raw_fd();
    // SAFETY: `raw` was just released by `into_raw_fd`; nothing else owns it.
    let a5 = unsafe { MemFile::from_raw_fd(raw) };
    assert!(a5.as_raw_fd() >= 0);
    let file: std::fs::File = a5.into_file();
    drop(file);
    let _stdio: std::process::Stdio = b.into();
    println!("{c:?} {e:?} {f:?}");

    let mut d = d;
    d.write_all(b"hello")?;
    d.seek(SeekFrom::Start(0))?;
    let mut s = String::new();
    d.read_to_string(&mut s)?;
    assert_eq!(s, "hello");
    d.write_at(b"J", 0)?;
    let mut buf = [0u8; 5];
    d.read_at(&mut buf, 0)?;
    assert_eq!(&buf, b"Jello");
    d.set_len(3)?;
    assert_eq!(d.metadata()?.len(), 3);
    Ok(())
}

#[test]
fn from_fd_error_gives_the_fd_back() {
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let err: FromFdError = MemFile::from_fd(OwnedFd::from(sock)).unwrap_err();
    let _: &std::io::Error = err.error();
    let _: BorrowedFd<'_> = err.fd();
    let (_io, fd): (std::io::Error, OwnedFd) = err.into_parts();
    let err = MemFile::from_fd(fd).unwrap_err();
    let _fd: OwnedFd = err.into_fd();
}

#[test]
fn seals_as_in_0_3() -> std::io::Result<()> {
    let file = MemFile::create_sealable("seals")?;
    file.add_seal(Seal::Shrink)?;
    file.add_seals(Seal::Grow | Seal::Write)?;
    file.add_seals(Seals::empty())?;
    let seals: Seals = file.get_seals()?;
    assert!(seals.contains(Seal::Shrink | Seal::Grow | Seal::Write));
    assert!(seals.contains(Seal::Write));
    assert!(seals.intersects(Seal::Grow | Seal::Seal));

    // The set operations of 0.3.
    let mut s = Seals::empty();
    s |= Seal::Write;
    s |= Seals::from(Seal::Grow);
    s &= Seal::Write | Seal::Grow;
    s -= Seal::Grow;
    s ^= Seal::Shrink;
    assert_eq!(s, Seal::Write | Seal::Shrink);
    assert_eq!(Seal::Write & Seal::Write, Seals::from(Seal::Write));
    assert_eq!(Seal::Write - Seal::Write, Seals::empty());
    assert_eq!(Seal::Write ^ Seal::Shrink, s);
    assert_eq!(s | Seal::Grow, Seal::Grow | s);
    assert_eq!(Seal::Write & s, Seals::from(Seal::Write));
    assert_eq!(Seal::Write - s, Seals::empty());
    assert_eq!(Seal::Grow ^ s, s ^ Seal::Grow);
    assert_eq!(s & Seal::Shrink, Seals::from(Seal::Shrink));
    assert_eq!(s - Seal::Shrink, Seals::from(Seal::Write));
    assert_eq!(!Seals::all(), Seals::empty());

    // Constructors and queries, `const` as in 0.3.
    const NONE: Seals = Seals::empty();
    const ALL: Seals = Seals::all();
    const WRITE: Seals = Seals::from_bits_truncate(Seal::Write as u32);
    assert!(NONE.is_empty() && ALL.is_all() && !WRITE.is_all());
    assert_eq!(WRITE.len(), 1);
    assert_eq!(WRITE.bits(), libc::F_SEAL_WRITE as u32);
    assert_eq!(Seal::FutureWrite as u32, libc::F_SEAL_FUTURE_WRITE as u32);
    assert_eq!(HugeTlb::Huge2MB as u32, libc::MFD_HUGE_2MB);

    // Iteration: by value, by reference and through the named iterator type.
    let it: SealsIterator = s.iter();
    assert_eq!(it.collect::<Vec<Seal>>(), [Seal::Shrink, Seal::Write]);
    assert_eq!(s.into_iter().count(), 2);
    assert_eq!((&s).into_iter().count(), 2);
    let _: Vec<String> = s.iter().map(|seal| format!("{seal:?}")).collect();
    println!("{s:?}");
    Ok(())
}
