//! [`Frozen`]: a memfd whose contents can never change again, verified, readable as `&[u8]`.
//!
//! The soundness argument is in the crate docs and in `docs/safety.md`; in short: a mapping
//! may be handed out as `&[u8]` only while nobody can change or shrink the bytes under it, and
//! the seals `Write` + `Shrink` make the kernel refuse every way to do either, for every
//! descriptor of the file, in every process, forever (seals can never be removed).

use std::borrow::Borrow;
use std::error::Error;
use std::fmt;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[cfg(any(target_os = "linux", target_os = "android"))]
use memmap2::Advice;
use memmap2::{Mmap, MmapMut, MmapOptions};
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::{MemFile, Seal, Seals, sys};

/// The seals a reader needs before it may treat the bytes as immutable: no write (through
/// `write()`, hole punching, or any shared mapping) and no shrink (which would turn part of
/// the mapping into SIGBUS).
pub(crate) fn required_for_frozen() -> Seals {
    Seal::Write | Seal::Shrink
}

/// The seals [`MemFile::freeze`] adds: the required ones, plus `Grow` (the length is final)
/// and `Seal` (nobody can add anything later, e.g. to get in the way of a future owner).
fn freeze_seals() -> Seals {
    Seal::Write | Seal::Shrink | Seal::Grow | Seal::Seal
}

/// A memfd whose contents can never change again, verified, read through a read-only
/// mapping.
///
/// A `Frozen` exists only for a file whose seals include `Write` and `Shrink` (checked with
/// `F_GET_SEALS` before mapping), so the kernel refuses every write and every shrink, by
/// any process, through any descriptor or mapping made from now on, and no writable shared
/// mapping can exist (adding `Write` fails with `EBUSY` while one does). That is what makes
/// it sound to read the mapping as a plain `&[u8]` (through [`Deref`]) without `unsafe`,
/// copies, or SIGBUS, even when the file came from a process you do not trust.
///
/// The mapping is `PROT_READ` + `MAP_PRIVATE` (see `docs/safety.md` for why not
/// `MAP_SHARED`): no copy is made, the pages are the file's own. When it is made:
/// - [`Frozen::from_fd`] and [`MemFile::freeze`] map at once, and return a mapping error.
/// - A `Frozen` this process filled itself ([`Frozen::build`], [`Frozen::try_build`],
///   [`Frozen::from_bytes`], [`WritableRegion::freeze`](crate::WritableRegion::freeze)) is
///   mapped on its first read only: one that is just sent on costs no `mmap` and `munmap`
///   (a tenth of a 4 KiB buffer's round trip). A failure of that `mmap` makes
///   [`Deref`]/[`Frozen::as_slice`] panic; [`Frozen::try_as_slice`] returns it instead.
///
/// `Frozen` is `Send + Sync`; `Clone` is cheap (an `Arc`: clones share one mapping and one
/// descriptor). To send the file to another process, use [`Frozen::try_clone_fd`] or
/// [`Frozen::as_fd`]; the receiver builds its own `Frozen` with [`Frozen::from_fd`], which
/// checks the seals again (never trust a sender).
///
/// ```
/// use memfile_core::Frozen;
///
/// let frozen = Frozen::build("greeting", 5, |buf| buf.copy_from_slice(b"hello"))?;
/// assert_eq!(&frozen[..], b"hello");
/// assert_eq!(frozen.len(), 5);
///
/// // Another process would receive a descriptor and verify it again:
/// let again = Frozen::from_fd(frozen.try_clone_fd()?)?;
/// assert_eq!(&*again, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Frozen {
    inner: Arc<Inner>,
}

struct Inner {
    /// The read-only mapping, `None` for an empty file (there is nothing to map, and `mmap`
    /// of length 0 is `EINVAL`). Made at once for a descriptor from elsewhere; on the first
    /// read for a file this crate froze itself, as a sender seldom reads what it sends.
    map: OnceLock<Option<Mmap>>,
    len: usize,
    fd: OwnedFd,
    seals: Seals,
}

// Compile-time proof of the promise in the docs.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Frozen>();
};

impl Frozen {
    /// Verifies that `fd` is a memfd sealed against writing and shrinking, and maps it
    /// read-only.
    ///
    /// Checks before anything is mapped: the descriptor is not `O_PATH`; `F_GET_SEALS` ⊇
    /// `{Write, Shrink}` (extra seals are fine; `FutureWrite` does **not** count, see
    /// `docs/safety.md`), which on Linux only a memfd can have (a `/dev/shm` file can gain
    /// no seal); it is readable (not `O_WRONLY`); `fstat` says an unlinked regular file
    /// whose size fits in `isize`; a hugetlb file has no holes. The size is read *after*
    /// the seals, so it is a size the file can never go below. Whatever fails, the error
    /// says what the descriptor is (a pipe, a `/dev/shm` file, ...).
    ///
    /// # Errors
    ///
    /// A [`FrozenError`] whose [`kind`](FrozenError::kind) says what was wrong (the seals
    /// found and required, or why the fd is not a memfd) and which gives the fd back with
    /// [`FrozenError::into_fd`].
    ///
    /// ```
    /// use memfile_core::{FrozenErrorKind, MemFile, Seal};
    /// use memfile_core::Frozen;
    ///
    /// let file = MemFile::create_sealable("not-frozen")?;
    /// file.add_seals(Seal::Shrink)?;
    /// let err = Frozen::from_fd(file.into_fd()).unwrap_err();
    /// assert!(matches!(err.kind(), FrozenErrorKind::NotSealed { .. }));
    /// let fd = err.into_fd(); // the descriptor is not lost
    /// # drop(fd);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Result<Frozen, FrozenError> {
        Frozen::verify_and_map(fd, u64::MAX)
    }

    /// Like [`Frozen::from_fd`], but rejects a file larger than `max_len` bytes before
    /// mapping it.
    ///
    /// Use this for descriptors from another process: a peer can send a sealed sparse file
    /// of a terabyte at no cost to itself.
    ///
    /// # Errors
    ///
    /// As [`Frozen::from_fd`], plus [`FrozenErrorKind::TooLarge`].
    pub fn from_fd_with_max_len(fd: OwnedFd, max_len: u64) -> Result<Frozen, FrozenError> {
        Frozen::verify_and_map(fd, max_len)
    }

    /// Creates a sealed memfd of `len` bytes, lets `fill` write it in place, and freezes it.
    ///
    /// The closure writes through a writable shared mapping (marked `MADV_DONTFORK`, so a
    /// child forked meanwhile by another thread does not inherit it), which is unmapped
    /// before sealing: the pages filled are the pages later read, nothing is copied. The
    /// memory starts zeroed. `name` is the memfd's name (see [`MemFile::create`]).
    ///
    /// For data that already sits in a buffer, [`Frozen::from_bytes`] is faster (page faults
    /// on a fresh mapping cost more than `pwrite`).
    ///
    /// The read-only mapping for reading is not made here but on the first read (see
    /// [`Frozen::try_as_slice`]).
    ///
    /// # Errors
    ///
    /// Creating, sizing, mapping writable or sealing the memfd can fail (e.g. `ENOMEM`,
    /// `EMFILE`, an invalid `name`).
    ///
    /// ```
    /// use memfile_core::Frozen;
    ///
    /// let squares = Frozen::build("squares", 16, |buf| {
    ///     for (i, b) in buf.iter_mut().enumerate() {
    ///         *b = (i * i) as u8;
    ///     }
    /// })?;
    /// assert_eq!(squares[3], 9);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build(name: &str, len: usize, fill: impl FnOnce(&mut [u8])) -> io::Result<Frozen> {
        Frozen::try_build(name, len, |buf| {
            fill(buf);
            Ok::<(), io::Error>(())
        })
    }

    /// Like [`Frozen::build`], with a closure that can fail; its error is returned as is
    /// (and the memfd is closed).
    ///
    /// # Errors
    ///
    /// The closure's error, or (converted with `From<io::Error>`) any error of
    /// [`Frozen::build`].
    ///
    /// ```
    /// use memfile_core::Frozen;
    /// use std::io::Read;
    ///
    /// let mut source: &[u8] = b"from a reader";
    /// let f = Frozen::try_build("read", 13, |buf| source.read_exact(buf))?;
    /// assert_eq!(&f[..], b"from a reader");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_build<E: From<io::Error>>(
        name: &str,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Frozen, E> {
        let file = MemFile::create_sealable(name)?;
        if len == 0 {
            fill(&mut [])?;
        } else {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let huge_pages_need_mapping = len >= HUGE_PAGE_MIN && sys::shmem_thp_advise();
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let huge_pages_need_mapping = false;
            if huge_pages_need_mapping {
                file.set_len(len as u64)?;
            } else {
                // Allocates (and zeroes) every page in one call, so the fill takes only
                // minor faults: 4–8% faster here. Not under shmem THP `advise`: pages
                // allocated without a mapping are small pages, and the mapping's
                // MADV_HUGEPAGE would come too late.
                file.allocate(0, len as u64)?;
            }
            let mut map = map_writable(&file, len)?;
            fill(&mut map)?;
            // Unmap before sealing: `F_SEAL_WRITE` fails with EBUSY while it exists.
            drop(map);
        }
        Ok(freeze_unmapped(file, len)?)
    }

    /// Creates a sealed memfd holding a copy of `bytes`, written with `pwrite`.
    ///
    /// `pwrite` into a fresh memfd is faster than filling a fresh mapping (no page faults
    /// in this process), so this is the way to freeze data you already have. (From 2 MiB
    /// up, when shmem huge pages are set to `advise`, it copies through a mapping that asks
    /// for them instead, as [`Frozen::build`] does.)
    ///
    /// The file is mapped for reading on the first read, not here (see
    /// [`Frozen::try_as_slice`]).
    ///
    /// # Errors
    ///
    /// Creating, writing or sealing the memfd can fail (e.g. `ENOMEM`, `ENOSPC`, `EMFILE`,
    /// an invalid `name`).
    ///
    /// ```
    /// use memfile_core::Frozen;
    ///
    /// let f = Frozen::from_bytes("copy", b"abc")?;
    /// assert_eq!(&f[..], b"abc");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_bytes(name: &str, bytes: &[u8]) -> io::Result<Frozen> {
        // Under shmem THP `advise`, `pwrite` gets 4 KiB pages only; a copy through a
        // mapping that asks for huge pages is 4–10× faster for large buffers.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if bytes.len() >= HUGE_PAGE_MIN && sys::shmem_thp_advise() {
            return Frozen::build(name, bytes.len(), |buf| buf.copy_from_slice(bytes));
        }
        let file = MemFile::create_sealable(name)?;
        file.write_all_at(bytes, 0)?;
        freeze_unmapped(file, bytes.len())
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes (also available through `Deref` and `AsRef`).
    ///
    /// # Panics
    ///
    /// A `Frozen` made by this process ([`Frozen::build`], [`Frozen::try_build`],
    /// [`Frozen::from_bytes`], [`WritableRegion::freeze`](crate::WritableRegion::freeze))
    /// maps its file on the first read; if that `mmap` fails (`ENOMEM`: out of address space
    /// or mappings), this panics, as an allocation failure would. Call
    /// [`Frozen::try_as_slice`] first to get that error instead; once it succeeded, neither
    /// can fail again. A `Frozen` from [`Frozen::from_fd`] or [`MemFile::freeze`] is mapped
    /// already and never panics here.
    pub fn as_slice(&self) -> &[u8] {
        self.try_as_slice().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The bytes, mapping the file first if it is not mapped yet, or the error of that
    /// `mmap`.
    ///
    /// Only a `Frozen` this process made with [`Frozen::build`], [`Frozen::try_build`],
    /// [`Frozen::from_bytes`] or [`WritableRegion::freeze`](crate::WritableRegion::freeze)
    /// is mapped lazily (a sender seldom reads what it sends); after the first success this
    /// is as cheap as [`Frozen::as_slice`].
    ///
    /// # Errors
    ///
    /// The `mmap` error (`ENOMEM` when the process is out of address space or of mappings),
    /// naming the fd and the length. Nothing is cached: a later call tries again.
    ///
    /// ```
    /// use memfile_core::Frozen;
    ///
    /// let f = Frozen::from_bytes("lazy", b"mapped on first read")?;
    /// let bytes: &[u8] = f.try_as_slice()?;
    /// assert_eq!(bytes, b"mapped on first read");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_as_slice(&self) -> io::Result<&[u8]> {
        let inner = &*self.inner;
        if let Some(map) = inner.map.get() {
            return Ok(map.as_deref().unwrap_or(&[]));
        }
        let map = map_read_only(&inner.fd, inner.len).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "fd {}: mapping a frozen memfd of {} bytes failed: {e}",
                    inner.fd.as_raw_fd(),
                    inner.len
                ),
            )
        })?;
        // Threads racing here each map; one mapping is kept, the others are unmapped.
        let map = inner.map.get_or_init(|| map);
        Ok(map.as_deref().unwrap_or(&[]))
    }

    /// The seals the file had when it was verified.
    ///
    /// Seals can be added but never removed, so the file has at least these now; always a
    /// superset of `Write | Shrink`.
    pub fn seals(&self) -> Seals {
        self.inner.seals
    }

    /// Borrows the descriptor, e.g. to send it over a Unix socket.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// A new descriptor of the same file (`F_DUPFD_CLOEXEC`), to send or keep after this
    /// `Frozen` is dropped.
    ///
    /// The duplicate shares the file offset with this one (`dup` semantics); the seals
    /// make that harmless for readers that map or use `pread`.
    ///
    /// # Errors
    ///
    /// `EMFILE` when the process is out of descriptors.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.inner.fd.try_clone()
    }

    /// Opens the file again read-only through `/proc/self/fd`, giving a descriptor with
    /// its own file offset, at 0.
    ///
    /// Use it where a reader consumes the file with `read()`, e.g. as a child's stdin
    /// ([`Frozen::to_stdio`] does this): a `dup`ed descriptor would share (and move) the
    /// offset of every other copy. To read in this process, [`Frozen::reader`] needs no
    /// descriptor at all.
    ///
    /// Linux and Android only: FreeBSD has no `/proc/self/fd`, and its `/dev/fd/N`
    /// (fdescfs) gives a `dup` of a shared memory object's descriptor, offset included, so
    /// there is no way to get a fresh offset there. On FreeBSD, pass a
    /// [`try_clone_fd`](Frozen::try_clone_fd) rewound with `lseek` instead (its offset is
    /// shared), or read through [`Frozen::reader`].
    ///
    /// # Errors
    ///
    /// `/proc` not mounted, or `EMFILE`.
    ///
    /// ```
    /// use memfile_core::Frozen;
    /// use std::process::{Command, Stdio};
    ///
    /// let f = Frozen::from_bytes("stdin", b"through a pipe of no pipe\n")?;
    /// let out = Command::new("cat").stdin(Stdio::from(f.open_reader()?)).output()?;
    /// assert_eq!(out.stdout, b"through a pipe of no pipe\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn open_reader(&self) -> io::Result<File> {
        File::open(format!("/proc/self/fd/{}", self.inner.fd.as_raw_fd()))
    }

    fn verify_and_map(fd: OwnedFd, max_len: u64) -> Result<Frozen, FrozenError> {
        let required = required_for_frozen();
        match verify(
            fd.as_fd(),
            max_len,
            |found| found.contains(required_for_frozen()),
            required,
        ) {
            Ok((seals, len)) => match map_read_only(&fd, len) {
                Ok(map) => Ok(Frozen {
                    inner: Arc::new(Inner {
                        map: OnceLock::from(map),
                        len,
                        fd,
                        seals,
                    }),
                }),
                Err(e) => Err(FrozenError::new(fd, FrozenErrorKind::Io(e), "mmap")),
            },
            Err((kind, op)) => Err(FrozenError::new(fd, kind, op)),
        }
    }
}

/// Everything [`Frozen::from_fd`] (and [`LiveView::from_fd`](crate::LiveView::from_fd))
/// checks, on a borrowed fd: returns the seals found and the length.
///
/// `accept` decides on the seals and must require `Shrink` and one of `Write`,
/// `FutureWrite`; `required` is what the error reports as needed.
///
/// A file that passes costs `F_GETFL`, `F_GET_SEALS` and `fstat`, plus `fstatfs` only when
/// it has holes. That is enough on Linux because only a memfd can carry such seals:
/// `F_GET_SEALS` works only on shmem (tmpfs) and hugetlbfs files, and every such file that
/// `open()` or `O_TMPFILE` makes starts with `F_SEAL_SEAL`, so no seal can ever be added to
/// it; only `memfd_create` makes files that start without it. (The `/proc/self/fd/N` link,
/// 3 µs to read, is needed only to tell an *unsealed* memfd from a `/dev/shm` file, which
/// [`MemFile::from_fd`] does.) Whenever a check fails, the full [`sys::check_memfd`] runs
/// to say what the descriptor is instead.
pub(crate) fn verify(
    fd: BorrowedFd<'_>,
    max_len: u64,
    accept: fn(Seals) -> bool,
    required: Seals,
) -> Result<(Seals, usize), (FrozenErrorKind, &'static str)> {
    // Elsewhere the fast path's reasoning has not been checked: identify the file first.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    sys::check_memfd(fd).map_err(|reason| (FrozenErrorKind::NotMemfd(reason), "check"))?;
    let flags = OFlag::from_bits_retain(
        fcntl(fd, FcntlArg::F_GETFL).map_err(|e| (FrozenErrorKind::Io(e.into()), "F_GETFL"))?,
    );
    // Until F_GET_SEALS has answered, the file may be anything a peer chose, e.g. a file
    // of a FUSE daemon that never answers: `fstat`/`fstatfs` would block on it. F_GETFL and
    // F_GET_SEALS never block (F_GET_SEALS answers EINVAL at once for anything but a
    // tmpfs or hugetlbfs file), and neither does reading the `/proc/self/fd` link that the
    // error quotes; so nothing else touches the file before the seals are known.
    if flags.contains(OFlag::O_PATH) {
        return Err(not_shmem(fd, "an O_PATH descriptor"));
    }
    // Seals first, size second: once Shrink is there the size can only grow, so the size
    // read now is safe to map for as long as the mapping lives.
    let found = sys::get_seals(fd).map_err(|_| not_shmem(fd, "neither on tmpfs nor hugetlbfs"))?;
    if !accept(found) {
        // A `/dev/shm` file (seals `{Seal}`) is reported as not a memfd, not as unsealed.
        if let Err(reason) = sys::check_memfd(fd) {
            return Err((FrozenErrorKind::NotMemfd(reason), "check"));
        }
        return Err((
            FrozenErrorKind::NotSealed { found, required },
            "F_GET_SEALS",
        ));
    }
    // From here on the file is a memfd (see above); the seals make it one for good.
    if flags & OFlag::O_ACCMODE == OFlag::O_WRONLY {
        return Err((
            FrozenErrorKind::NotReadable("it was opened write-only"),
            "F_GETFL",
        ));
    }
    let st = nix::sys::stat::fstat(fd).map_err(|e| (FrozenErrorKind::Io(e.into()), "fstat"))?;
    // Cannot fail for a sealed memfd; kept as cheap insurance (same `fstat`).
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink != 0 {
        return Err(not_a_memfd(fd));
    }
    let len = st.st_size as u64;
    let max = max_len.min(isize::MAX as u64);
    if len > max {
        return Err((FrozenErrorKind::TooLarge { len, max }, "fstat"));
    }
    // Only a file with holes can be a hugetlb file with holes: skip `fstatfs` otherwise.
    let allocated = (st.st_blocks as u64).saturating_mul(512);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if allocated < len && is_hugetlbfs(fd).map_err(|e| (FrozenErrorKind::Io(e), "fstatfs"))? {
        return Err((FrozenErrorKind::HugeTlbHoles { len, allocated }, "fstat"));
    }
    let _ = allocated;
    Ok((found, len as usize))
}

/// The error for a descriptor that is not a memfd, saying what it is ([`sys::check_memfd`]).
fn not_a_memfd(fd: BorrowedFd<'_>) -> (FrozenErrorKind, &'static str) {
    let reason = sys::check_memfd(fd)
        .err()
        .unwrap_or_else(|| format!("fd {} is not a memfd that can be frozen", fd.as_raw_fd()));
    (FrozenErrorKind::NotMemfd(reason), "check")
}

/// The error for a descriptor refused before `F_GET_SEALS` succeeded: says what it is from
/// the `/proc/self/fd/N` link alone (which never blocks), not from `fstat`/`fstatfs` (which
/// can block on a FUSE file, see [`verify`]).
fn not_shmem(fd: BorrowedFd<'_>, why: &str) -> (FrozenErrorKind, &'static str) {
    let raw = fd.as_raw_fd();
    let what = match std::fs::read_link(format!("/proc/self/fd/{raw}")) {
        Ok(target) => format!(" ({})", target.display()),
        Err(_) => String::new(),
    };
    let reason = format!("fd {raw}{what} is not a memfd: it is {why}");
    (FrozenErrorKind::NotMemfd(reason), "F_GET_SEALS")
}

/// Whether `fd` is on hugetlbfs (`fstatfs`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_hugetlbfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    use nix::sys::statfs::{HUGETLBFS_MAGIC, fstatfs};
    Ok(fstatfs(fd)?.filesystem_type() == HUGETLBFS_MAGIC)
}

/// For a hugetlbfs file with holes below `len`: the bytes allocated (`st_blocks * 512`).
///
/// Reading a hole of a hugetlb file through a mapping needs a free huge page; when there is
/// none the reader gets SIGBUS. A regular memfd just allocates a normal page.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn hugetlb_holes(fd: BorrowedFd<'_>, len: u64) -> io::Result<Option<u64>> {
    use nix::sys::statfs::{HUGETLBFS_MAGIC, fstatfs};
    if fstatfs(fd)?.filesystem_type() != HUGETLBFS_MAGIC {
        return Ok(None);
    }
    let allocated = (nix::sys::stat::fstat(fd)?.st_blocks as u64).saturating_mul(512);
    Ok((allocated < len).then_some(allocated))
}

/// `PROT_READ`, `MAP_PRIVATE`, `MAP_NORESERVE` of the first `len` bytes; `None` for 0 bytes.
fn map_read_only(fd: &OwnedFd, len: usize) -> io::Result<Option<Mmap>> {
    if len == 0 {
        return Ok(None);
    }
    // MAP_NORESERVE: a read-only private mapping never copies a page, so it needs no
    // reservation (it matters for hugetlb files, where a reservation would take huge pages).
    //
    // SAFETY: memmap2 calls mapping a file unsafe because the file may be changed or
    // truncated underneath. Seals Write + Shrink (never removed) were seen, then a length
    // of at least `len`: nobody can change these bytes or shrink the file.
    let map = unsafe {
        MmapOptions::new()
            .len(len)
            .no_reserve_swap()
            .map_copy_read_only(fd)?
    };
    Ok(Some(map))
}

/// A writable `MAP_SHARED` mapping of `len > 0` bytes of `file`, not inherited by a fork
/// (`MADV_DONTFORK` on Linux, `minherit(INHERIT_NONE)` on FreeBSD).
///
/// A child forked while the mapping exists (by any thread) would otherwise keep a writable
/// mapping of its own, and `F_SEAL_WRITE` would fail with EBUSY until it exits or execs.
pub(crate) fn map_writable(file: &MemFile, len: usize) -> io::Result<MmapMut> {
    // SAFETY: the file is a memfd this crate just created and has not shared; nobody else
    // can truncate or write it. Callers only hand the mapping out as `&mut [u8]` tied to
    // their own borrow, and share the fd only after sealing Shrink and (Future)Write.
    let map = unsafe { MmapOptions::new().len(len).map_mut(&file.as_fd())? };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    map.advise(Advice::DontFork)?;
    #[cfg(target_os = "freebsd")]
    {
        // memmap2 has no `minherit` (FreeBSD's `madvise` has no DONTFORK), so call libc.
        // SAFETY: `map` is a live mapping of exactly `map.len()` bytes starting at a page
        // boundary, owned by `map`; `minherit` changes only what a future fork inherits.
        let rc = unsafe {
            libc::minherit(
                map.as_ptr().cast_mut().cast(),
                map.len(),
                libc::INHERIT_NONE,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if len >= HUGE_PAGE_MIN {
        // Lets shmem THP (`shmem_enabled` = `advise`) back the file with huge pages: one
        // fault and one page clear per 2 MiB instead of 512, 10× the fill rate. At `never`
        // the kernel accepts it and does nothing; a kernel without THP says EINVAL, which
        // only means no huge pages, so the result is ignored.
        let _ = map.advise(Advice::HugePage);
    }
    Ok(map)
}

/// From this length up, writable mappings ask for transparent huge pages: the size of one
/// x86-64/arm64 (4 KiB base page) PMD huge page. Smaller files could not use one anyway.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const HUGE_PAGE_MIN: usize = 2 << 20;

/// Freezes a memfd that this crate created (sealable, no seals added yet, not hugetlb) with
/// `len` bytes, of which it holds no mapping any more.
///
/// Nothing of [`Frozen::from_fd`]'s check is needed here, and none is made: the crate made
/// the file with `memfd_create`, sized it itself and never gave the descriptor out, so it
/// knows what it is and how long it is; `F_ADD_SEALS` succeeding is proof of the seals, and
/// `F_GET_SEALS` only fetches the exact set for [`Frozen::seals`] (it may include `Exec`).
///
/// EBUSY can only come from a child forked by another thread in the instant between our
/// `mmap` and `madvise(MADV_DONTFORK)` that has not exec'd or exited yet: retry for a short
/// while before giving up.
pub(crate) fn freeze_unmapped(file: MemFile, len: usize) -> io::Result<Frozen> {
    let fd = file.into_fd();
    let mut delay = Duration::from_millis(1);
    let mut attempts = 0;
    while let Err(e) = sys::add_seals(fd.as_fd(), freeze_seals()) {
        attempts += 1;
        if e.raw_os_error() != Some(libc::EBUSY) || attempts == 8 {
            return Err(FrozenError::new(fd, FrozenErrorKind::Io(e), "F_ADD_SEALS").into());
        }
        std::thread::sleep(delay);
        delay *= 2;
    }
    let seals = match sys::get_seals(fd.as_fd()) {
        Ok(seals) => seals,
        Err(e) => return Err(FrozenError::new(fd, FrozenErrorKind::Io(e), "F_GET_SEALS").into()),
    };
    // Not mapped yet: see `Inner::map`.
    Ok(Frozen {
        inner: Arc::new(Inner {
            map: OnceLock::new(),
            len,
            fd,
            seals,
        }),
    })
}

impl MemFile {
    /// Seals the file for good (`Write | Shrink | Grow | Seal`) and maps it read-only, now.
    ///
    /// Seals already present are fine; so is a file that already has `Seal`, as long as it
    /// also has `Write` and `Shrink`. The mapping and the checks are those of
    /// [`Frozen::from_fd`], made at once (the file came from the caller, so it is checked
    /// like any received descriptor): unlike [`Frozen::build`], the `Frozen` returned is
    /// mapped already, and a mapping error is returned here.
    ///
    /// # Errors
    ///
    /// - `EBUSY` (kind `ResourceBusy`): a writable shared mapping of the file exists
    ///   (unmap it first; a forked child may also hold one).
    /// - `InvalidInput`: the file has `Seal` but lacks `Write` or `Shrink`, or was created
    ///   without sealing allowed (its seals are `{Seal}`), so it can never be frozen; the
    ///   message names the seals found and required.
    /// - `ENOMEM` from the `mmap` (out of address space or mappings), and every other
    ///   refusal of [`Frozen::from_fd`].
    ///
    /// The error owns the file until dropped: `err.into_inner()` downcasts to a
    /// [`FrozenError`], whose [`into_fd`](FrozenError::into_fd) gives it back.
    ///
    /// ```
    /// use memfile_core::{MemFile, Seal};
    /// use std::io::Write;
    ///
    /// let mut file = MemFile::create_sealable("config")?;
    /// file.write_all(b"key = value\n")?;
    /// let frozen = file.freeze()?;
    /// assert_eq!(&frozen[..], b"key = value\n");
    /// assert!(frozen.seals().contains(Seal::Write | Seal::Shrink | Seal::Grow | Seal::Seal));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn freeze(self) -> io::Result<Frozen> {
        let fd = self.into_fd();
        match add_freeze_seals(fd.as_fd()) {
            Ok(()) => Frozen::from_fd(fd).map_err(io::Error::from),
            Err((kind, op)) => Err(FrozenError::new(fd, kind, op).into()),
        }
    }
}

/// Adds `Write | Shrink | Grow | Seal` unless present; fine if `Seal` is already there with
/// `Write | Shrink`.
fn add_freeze_seals(fd: BorrowedFd<'_>) -> Result<(), (FrozenErrorKind, &'static str)> {
    let io = |op| move |e| (FrozenErrorKind::Io(e), op);
    let found = sys::get_seals(fd).map_err(io("F_GET_SEALS"))?;
    let wanted = freeze_seals();
    if found.contains(wanted) {
        return Ok(());
    }
    if found.contains(Seal::Seal) {
        // No seal can be added: frozen enough if Write and Shrink are there already.
        let required = required_for_frozen();
        if found.contains(required) {
            return Ok(());
        }
        return Err((
            FrozenErrorKind::NotSealed { found, required },
            "F_ADD_SEALS",
        ));
    }
    allocate_hugetlb_holes(fd).map_err(io("fallocate"))?;
    sys::add_seals(fd, wanted - found).map_err(io("F_ADD_SEALS"))
}

/// Allocates every hole of a hugetlb memfd (before sealing), so that no reader can SIGBUS
/// for lack of a free huge page; no-op for other files.
fn allocate_hugetlb_holes(fd: BorrowedFd<'_>) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let len = sys::file_len(fd)?;
        if hugetlb_holes(fd, len)?.is_some() {
            sys::allocate(fd, 0, len)?;
        }
    }
    let _ = fd;
    Ok(())
}

impl Deref for Frozen {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Frozen {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Frozen {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsFd for Frozen {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl AsRawFd for Frozen {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }
}

impl fmt::Debug for Frozen {
    /// Shows the descriptor, length and seals, never the bytes (they may be large).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frozen")
            .field("fd", &self.inner.fd.as_raw_fd())
            .field("len", &self.len())
            .field("seals", &self.inner.seals)
            .finish()
    }
}

impl TryFrom<OwnedFd> for Frozen {
    type Error = FrozenError;

    /// [`Frozen::from_fd`]: verifies, never adds seals.
    fn try_from(fd: OwnedFd) -> Result<Frozen, FrozenError> {
        Frozen::from_fd(fd)
    }
}

impl TryFrom<MemFile> for Frozen {
    type Error = FrozenError;

    /// [`Frozen::from_fd`] on the file: verifies the seals it has, never adds any (that is
    /// what [`MemFile::freeze`] does).
    fn try_from(file: MemFile) -> Result<Frozen, FrozenError> {
        Frozen::from_fd(file.into_fd())
    }
}

/// Why a descriptor could not become a [`Frozen`] (or a [`LiveView`](crate::LiveView)).
///
/// Names the descriptor and what was wrong; [`FrozenError::into_fd`] gives the descriptor
/// back. Converts into an `io::Error` (kind `InvalidInput` for a descriptor of the wrong
/// sort, `InvalidData` for a file that is too large, the OS error's kind otherwise) that
/// keeps this error as its inner error.
///
/// ```
/// use memfile_core::{Frozen, FrozenErrorKind, MemFile, Seal};
///
/// // Sealed against shrinking only: its bytes could still change, so it is refused.
/// let file = MemFile::create_sealable("unsealed")?;
/// file.add_seals(Seal::Shrink)?;
/// let err = Frozen::from_fd(file.into_fd()).unwrap_err();
/// match err.kind() {
///     FrozenErrorKind::NotSealed { found, required } => {
///         assert!(found.contains(Seal::Shrink));
///         assert_eq!(*required, Seal::Write | Seal::Shrink);
///         assert_eq!(*required - *found, Seal::Write.into()); // what is missing
///     }
///     other => panic!("unexpected: {other:?}"),
/// }
/// assert!(err.to_string().contains("missing: Write"), "{err}");
///
/// // The descriptor comes back; here the file can still be sealed and frozen.
/// let frozen = MemFile::from_fd(err.into_fd())?.freeze()?;
/// assert!(frozen.seals().contains(Seal::Write));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FrozenError {
    fd: OwnedFd,
    kind: FrozenErrorKind,
    op: &'static str,
}

/// What was wrong, in a [`FrozenError`].
///
/// ```
/// use memfile_core::{Frozen, FrozenErrorKind, MemFile};
///
/// // A memfd with no seal added: `found` (only `Exec` on Linux 6.3+) has neither `Write`
/// // nor `Shrink`, which are `required`.
/// let err = Frozen::from_fd(MemFile::create_sealable("open")?.into_fd()).unwrap_err();
/// if let FrozenErrorKind::NotSealed { found, required } = err.kind() {
///     assert!(!found.intersects(*required), "found: {found}");
///     assert_eq!(required.to_string(), "Shrink | Write");
/// } else {
///     panic!("expected NotSealed, got {:?}", err.kind());
/// }
///
/// // A pipe is not a memfd at all.
/// let (read_end, _write_end) = nix::unistd::pipe()?;
/// let err = Frozen::from_fd(read_end).unwrap_err();
/// assert!(matches!(err.kind(), FrozenErrorKind::NotMemfd(what) if what.contains("pipe")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum FrozenErrorKind {
    /// The seals found do not include every seal required.
    NotSealed {
        /// The seals `F_GET_SEALS` reported.
        found: Seals,
        /// The seals needed (for [`Frozen`]: `Write | Shrink`).
        required: Seals,
    },
    /// The descriptor is not a memfd (a pipe, a socket, a `/dev/shm` or disk file, an
    /// `O_PATH` descriptor, ...). The string names the fd and says what it is.
    NotMemfd(String),
    /// The descriptor cannot be mapped for reading (it was opened `O_WRONLY`).
    NotReadable(&'static str),
    /// The file is larger than the maximum allowed (or than `isize::MAX`).
    TooLarge {
        /// The file's size in bytes.
        len: u64,
        /// The largest size accepted.
        max: u64,
    },
    /// A hugetlb memfd with holes: reading a hole would need a free huge page, and
    /// SIGBUS when there is none. (A regular memfd simply allocates a page there.)
    HugeTlbHoles {
        /// The file's size in bytes.
        len: u64,
        /// The bytes that are allocated.
        allocated: u64,
    },
    /// A system call failed.
    Io(io::Error),
}

impl FrozenError {
    pub(crate) fn new(fd: OwnedFd, kind: FrozenErrorKind, op: &'static str) -> FrozenError {
        FrozenError { fd, kind, op }
    }

    /// What was wrong.
    pub fn kind(&self) -> &FrozenErrorKind {
        &self.kind
    }

    /// The descriptor that was rejected, as a raw number (for messages).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Gives the descriptor back.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Splits into the descriptor and the kind.
    pub fn into_parts(self) -> (OwnedFd, FrozenErrorKind) {
        (self.fd, self.kind)
    }

    fn io_kind(&self) -> io::ErrorKind {
        match &self.kind {
            FrozenErrorKind::TooLarge { .. } => io::ErrorKind::InvalidData,
            FrozenErrorKind::Io(e) => e.kind(),
            _ => io::ErrorKind::InvalidInput,
        }
    }
}

impl fmt::Display for FrozenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fd = self.fd.as_raw_fd();
        match &self.kind {
            FrozenErrorKind::NotSealed { found, required } if self.op == "F_ADD_SEALS" => write!(
                f,
                "fd {fd} cannot be frozen: seals found: {found} (Seal forbids adding any); \
                 required: {required}; missing: {}",
                *required - *found
            ),
            FrozenErrorKind::NotSealed { found, required } => write!(
                f,
                "fd {fd} lacks required seals: seals found: {found}; \
                 required: {required}; missing: {}",
                *required - *found
            ),
            // The reason already names the fd and says what it is.
            FrozenErrorKind::NotMemfd(reason) => f.write_str(reason),
            FrozenErrorKind::NotReadable(reason) => {
                write!(f, "fd {fd} cannot be mapped for reading: {reason}")
            }
            FrozenErrorKind::TooLarge { len, max } => {
                write!(
                    f,
                    "fd {fd} holds {len} bytes, more than the maximum of {max}"
                )
            }
            FrozenErrorKind::HugeTlbHoles { len, allocated } => write!(
                f,
                "fd {fd} is a hugetlb memfd of {len} bytes of which only {allocated} are \
                 allocated: reading a hole could SIGBUS when no huge page is free"
            ),
            FrozenErrorKind::Io(e) if e.raw_os_error() == Some(libc::EBUSY) => write!(
                f,
                "fd {fd}: {} failed: {e}: a writable shared mapping of the file exists \
                 (perhaps inherited by a forked child); unmap it before sealing",
                self.op
            ),
            FrozenErrorKind::Io(e) => write!(f, "fd {fd}: {} failed: {e}", self.op),
        }
    }
}

impl fmt::Debug for FrozenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrozenError")
            .field("fd", &self.fd.as_raw_fd())
            .field("kind", &self.kind)
            .field("op", &self.op)
            .finish()
    }
}

impl Error for FrozenError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            FrozenErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<FrozenError> for io::Error {
    /// Keeps the [`FrozenError`] (and its descriptor) as the inner error.
    fn from(e: FrozenError) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}
