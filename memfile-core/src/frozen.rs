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

use nix::fcntl::{FcntlArg, OFlag, fcntl};

#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::map::HUGE_PAGE_MIN;
use crate::map::{self, ReadMap, WritableMap};
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
/// use memfile::Frozen;
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
    map: OnceLock<Option<ReadMap>>,
    len: usize,
    /// The huge page size of a hugetlb file (whose mapping covers whole huge pages), `None`
    /// for any other file.
    huge_page: Option<u64>,
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
    /// Checks before anything is mapped, in this order: `F_GET_SEALS` ⊇ `{Write, Shrink}`
    /// (extra seals are fine; `FutureWrite` does **not** count, see `docs/safety.md`),
    /// which on Linux only a memfd can have (a `/dev/shm` file can gain no seal) and which
    /// is the first call, as it answers at once for any other file (no call that a FUSE
    /// file's daemon could hold up comes before it); it is readable (not `O_WRONLY`);
    /// `fstat` says an unlinked regular file whose size fits in `isize` (and in
    /// `max_len`); a hugetlb file has as many bytes allocated as its huge pages hold. The
    /// size is read *after* the seals, so it is a size the file can never go below.
    /// Whatever fails, the error says what the descriptor is (a pipe, a `/dev/shm` file,
    /// ...).
    ///
    /// The file may have holes (pages never written): reading one allocates a page of
    /// zeros, charged to the reader. For a descriptor from a process you do not trust, use
    /// [`Frozen::from_fd_fully_allocated`].
    ///
    /// # Errors
    ///
    /// A [`FrozenError`] whose [`kind`](FrozenError::kind) says what was wrong (the seals
    /// found and required, or why the fd is not a memfd) and which gives the fd back with
    /// [`FrozenError::into_fd`].
    ///
    /// ```
    /// use memfile::{FrozenErrorKind, MemFile, Seal};
    /// use memfile::Frozen;
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
        Frozen::verify_and_map(fd, u64::MAX, false)
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
        Frozen::verify_and_map(fd, max_len, false)
    }

    /// Like [`Frozen::from_fd_with_max_len`], but also refuses a file with a hole below its
    /// end, before mapping it: every byte of a `Frozen` made this way is backed by memory
    /// that its sender paid for.
    ///
    /// A sparse sealed file costs its sender nothing; a reader that touches a hole makes the
    /// kernel allocate a page of zeros charged to the reader's memory cgroup (and under
    /// `vm.overcommit_memory = 2` a read fault on a hole can fail with SIGBUS). The check is
    /// one `lseek(SEEK_HOLE)`, exact on tmpfs: a page counts once written, faulted in
    /// through a mapping or swapped out, not when merely reserved by `fallocate`. It moves
    /// the file offset that the descriptor shares with its `dup`s (the sender's included);
    /// `Frozen` itself never uses the offset.
    ///
    /// A hugetlb file is always refused here: hugetlbfs reports no holes to `lseek` (it
    /// says the whole file is data) and counts pages allocated past the end in `st_blocks`,
    /// so no unprivileged call can prove it has none, and reading a hole of a hugetlb file
    /// is SIGBUS when no huge page is free.
    ///
    /// The crate's own producers ([`MemFile::freeze`], [`Frozen::build`],
    /// [`Frozen::from_bytes`], [`WritableRegion::freeze`](crate::WritableRegion::freeze))
    /// always make buffers that pass.
    ///
    /// # Errors
    ///
    /// As [`Frozen::from_fd_with_max_len`], plus [`FrozenErrorKind::Sparse`].
    ///
    /// ```
    /// use memfile::{Frozen, FrozenErrorKind, MemFile};
    ///
    /// // Written in full: accepted.
    /// let whole = Frozen::from_bytes("whole", &[1; 8192])?;
    /// Frozen::from_fd_fully_allocated(whole.try_clone_fd()?, 1 << 20)?;
    ///
    /// // 8 KiB of which only the first page was ever written: refused, naming the hole.
    /// let file = MemFile::create_sealable("sparse")?;
    /// file.set_len(8192)?;
    /// std::os::unix::fs::FileExt::write_at(&file, b"head", 0)?;
    /// file.add_seals(memfile::Seal::Write | memfile::Seal::Shrink)?;
    /// let err = Frozen::from_fd_fully_allocated(file.into_fd(), 1 << 20).unwrap_err();
    /// assert!(matches!(
    ///     err.kind(),
    ///     FrozenErrorKind::Sparse { len: 8192, first_hole: Some(4096) }
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd_fully_allocated(fd: OwnedFd, max_len: u64) -> Result<Frozen, FrozenError> {
        Frozen::verify_and_map(fd, max_len, true)
    }

    /// Creates a sealed memfd of `len` bytes, lets `fill` write it in place, and freezes it.
    ///
    /// The closure writes through a writable shared mapping (marked `MADV_DONTFORK`, so a
    /// child forked meanwhile by another thread does not inherit it), which is unmapped
    /// before sealing: the pages filled are the pages later read, nothing is copied. The
    /// memory starts zeroed; pages the closure does not write are allocated as zeros before
    /// sealing, so the result is fully allocated (see [`Frozen::from_fd_fully_allocated`]):
    /// the memory cost is always `len`. `name` is the memfd's name (see [`MemFile::create`]).
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
    /// use memfile::Frozen;
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
    /// use memfile::Frozen;
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
            let mut map = WritableMap::new(&file, len, "Frozen::build")?;
            fill(map.bytes_mut())?;
            // Pages the closure left alone are holes (also after `fallocate`, which only
            // reserves them): make them pages of zeros, so the buffer passes
            // `from_fd_fully_allocated`.
            map.populate_holes(file.as_fd())?;
            // Unmap before sealing: `F_SEAL_WRITE` fails with EBUSY while it exists.
            drop(map);
        }
        Ok(freeze_unmapped(file, len)?)
    }

    /// Like [`Frozen::build`], and also returns what the closure returns: a checksum, a
    /// count or an index computed while filling, without a captured `mut` variable.
    ///
    /// # Errors
    ///
    /// As for [`Frozen::build`]; the closure's result is dropped then.
    ///
    /// ```
    /// use memfile::Frozen;
    ///
    /// let (frozen, sum) = Frozen::build_with("numbers", 100, |buf| {
    ///     let mut sum = 0u32;
    ///     for (i, b) in buf.iter_mut().enumerate() {
    ///         *b = i as u8;
    ///         sum += u32::from(*b);
    ///     }
    ///     sum
    /// })?;
    /// assert_eq!(sum, 4950);
    /// assert_eq!(frozen.iter().map(|&b| u32::from(b)).sum::<u32>(), sum);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build_with<R>(
        name: &str,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> io::Result<(Frozen, R)> {
        Frozen::try_build_with(name, len, |buf| Ok::<R, io::Error>(fill(buf)))
    }

    /// Like [`Frozen::try_build`], and also returns the closure's `Ok` value (see
    /// [`Frozen::build_with`]).
    ///
    /// # Errors
    ///
    /// The closure's error, or (converted with `From<io::Error>`) any error of
    /// [`Frozen::build`].
    ///
    /// ```
    /// use memfile::Frozen;
    /// use std::io::Read;
    ///
    /// // Read up to 64 bytes from a source; keep how many were read.
    /// let mut source: &[u8] = b"a short message";
    /// let (f, n) = Frozen::try_build_with("read", 64, |buf| source.read(buf))?;
    /// assert_eq!(&f[..n], b"a short message");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_build_with<R, E: From<io::Error>>(
        name: &str,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<R, E>,
    ) -> Result<(Frozen, R), E> {
        let mut result = None;
        let frozen = Frozen::try_build(name, len, |buf| {
            result = Some(fill(buf)?);
            Ok::<(), E>(())
        })?;
        match result {
            Some(result) => Ok((frozen, result)),
            // `try_build` returns `Ok` only after calling the closure, which returned `Ok`.
            None => unreachable!("Frozen::try_build succeeded without calling its closure"),
        }
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
    /// use memfile::Frozen;
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
    /// use memfile::Frozen;
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
        let map_len = map_len(inner.len as u64, inner.huge_page).unwrap_or(inner.len);
        // SAFETY: a `Frozen` exists only for a file with seals Write and Shrink whose size
        // was at least `len` after they were seen (`verify`, or sealed by this crate after
        // sizing it: `freeze_unmapped`).
        let mapped = unsafe { map::map_read_only(inner.fd.as_fd(), inner.len, map_len) };
        let map = mapped.map_err(|e| {
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
    /// use memfile::Frozen;
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

    fn verify_and_map(
        fd: OwnedFd,
        max_len: u64,
        fully_allocated: bool,
    ) -> Result<Frozen, FrozenError> {
        let required = required_for_frozen();
        let checks = Checks {
            max_len,
            accept: |found| found.contains(required_for_frozen()),
            required,
            fully_allocated,
        };
        let v = match verify(fd.as_fd(), &checks) {
            Ok(v) => v,
            Err((kind, op)) => return Err(FrozenError::new(fd, kind, op)),
        };
        // SAFETY: `verify` saw seals Write and Shrink, then a size of at least `v.len`;
        // `v.map_len` is `v.len` or, for hugetlb, `v.len` rounded up to whole huge pages.
        match unsafe { map::map_read_only(fd.as_fd(), v.len, v.map_len) } {
            Ok(map) => Ok(Frozen {
                inner: Arc::new(Inner {
                    map: OnceLock::from(map),
                    len: v.len,
                    huge_page: v.huge_page,
                    fd,
                    seals: v.seals,
                }),
            }),
            Err(e) => Err(FrozenError::new(fd, FrozenErrorKind::Io(e), "mmap")),
        }
    }

    /// The offset of the first hole below the end of the file (`lseek(SEEK_HOLE)`), or
    /// `None` when every byte is allocated: what [`Frozen::from_fd_fully_allocated`]
    /// checks. A `Frozen` made by this crate's producers has none.
    ///
    /// Moves the file offset the descriptor shares with its `dup`s (see
    /// [`Frozen::try_clone_fd`]).
    ///
    /// # Errors
    ///
    /// `lseek` failing, naming the fd; `Unsupported` for a hugetlb file (hugetlbfs reports
    /// its whole length as data, holes included).
    ///
    /// ```
    /// use memfile::Frozen;
    ///
    /// let f = Frozen::build("mostly-zeros", 1 << 20, |buf| buf[0] = 1)?;
    /// assert_eq!(f.first_hole()?, None); // untouched pages were allocated as zeros
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn first_hole(&self) -> io::Result<Option<u64>> {
        let fd = self.inner.fd.as_fd();
        if self.inner.huge_page.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "fd {}: hugetlbfs reports no holes, so the holes of a hugetlb file cannot be found",
                    fd.as_raw_fd()
                ),
            ));
        }
        map::first_hole(fd, self.len() as u64).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("fd {}: lseek(SEEK_HOLE) failed: {e}", fd.as_raw_fd()),
            )
        })
    }
}

/// The length to map for `len` bytes: whole huge pages for a hugetlb file.
fn map_len(len: u64, huge_page: Option<u64>) -> Option<usize> {
    let rounded = match huge_page {
        Some(page) => map::round_up_to(len, page)?,
        None => len,
    };
    usize::try_from(rounded).ok()
}

/// What [`verify`] checks besides "a memfd".
pub(crate) struct Checks {
    /// The largest length accepted.
    pub(crate) max_len: u64,
    /// Decides on the seals; must require `Shrink` and one of `Write`, `FutureWrite`.
    pub(crate) accept: fn(Seals) -> bool,
    /// What the error reports as needed.
    pub(crate) required: Seals,
    /// Whether a file with holes is refused ([`Frozen::from_fd_fully_allocated`]).
    pub(crate) fully_allocated: bool,
}

/// What [`verify`] found.
pub(crate) struct Verified {
    pub(crate) seals: Seals,
    pub(crate) len: usize,
    /// The length to map: `len`, or for a hugetlb file `len` rounded up to whole huge
    /// pages (the kernel maps, and unmaps, only whole ones).
    pub(crate) map_len: usize,
    /// The huge page size of a hugetlb file.
    pub(crate) huge_page: Option<u64>,
}

/// Everything [`Frozen::from_fd`] (and [`LiveView::from_fd`](crate::LiveView::from_fd))
/// checks, on a borrowed fd, in this order: the seals (`F_GET_SEALS`), readability
/// (`F_GETFL`), type, links and size (`fstat`), hugetlb allocation (`fstatfs`, only for a
/// file whose block size is larger than a page), and holes if asked (`lseek`).
///
/// `F_GET_SEALS` comes first because it answers at once for every file that is not on
/// tmpfs or hugetlbfs (`EINVAL`; `EBADF` for `O_PATH`), so the first call on a descriptor
/// from a peer cannot wait on a file system the peer serves (a FUSE file's `fstat`
/// waits for its daemon); every later call is made on a tmpfs or hugetlbfs file only.
///
/// A file that passes costs `F_GET_SEALS`, `F_GETFL` and `fstat` (plus one `lseek` when
/// holes are refused). That is enough on Linux because only a memfd can carry such seals:
/// `F_GET_SEALS` works only on shmem (tmpfs) and hugetlbfs files, and every such file that
/// `open()` or `O_TMPFILE` makes starts with `F_SEAL_SEAL`, so no seal can ever be added to
/// it; only `memfd_create` makes files that start without it. (The `/proc/self/fd/N` link,
/// 3 µs to read, is needed only to tell an *unsealed* memfd from a `/dev/shm` file, which
/// [`MemFile::from_fd`] does.) Whenever a check fails, the error says what the descriptor
/// is instead ([`sys::check_memfd`], which makes no call that can wait either).
pub(crate) fn verify(
    fd: BorrowedFd<'_>,
    checks: &Checks,
) -> Result<Verified, (FrozenErrorKind, &'static str)> {
    // Elsewhere the fast path's reasoning has not been checked: identify the file first.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    sys::check_memfd(fd).map_err(|reason| (FrozenErrorKind::NotMemfd(reason), "check"))?;
    // Seals first, size second: once Shrink is there the size can only grow, so the size
    // read now is safe to map for as long as the mapping lives.
    let found = match sys::get_seals(fd) {
        Ok(found) => found,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Err(e) => {
            return Err((
                FrozenErrorKind::NotMemfd(sys::describe_not_shmem(fd, &e)),
                "check",
            ));
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Err(_) => return Err(not_a_memfd(fd)),
    };
    if !(checks.accept)(found) {
        // A `/dev/shm` file (seals `{Seal}`) is reported as not a memfd, not as unsealed.
        if let Err(reason) = sys::check_memfd(fd) {
            return Err((FrozenErrorKind::NotMemfd(reason), "check"));
        }
        return Err((
            FrozenErrorKind::NotSealed {
                found,
                required: checks.required,
            },
            "F_GET_SEALS",
        ));
    }
    // From here on the file is a memfd (see above); the seals make it one for good. An
    // `O_PATH` descriptor never gets here: `F_GET_SEALS` refuses it (EBADF).
    let flags = OFlag::from_bits_retain(
        fcntl(fd, FcntlArg::F_GETFL).map_err(|e| (FrozenErrorKind::Io(e.into()), "F_GETFL"))?,
    );
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
    let max = checks.max_len.min(isize::MAX as u64);
    if len > max {
        return Err((FrozenErrorKind::TooLarge { len, max }, "fstat"));
    }
    let huge_page = map::hugetlb_page_size(fd, st.st_blksize as u64)
        .map_err(|e| (FrozenErrorKind::Io(e), "fstatfs"))?;
    let too_large = || (FrozenErrorKind::TooLarge { len, max }, "fstat");
    let map_len = map_len(len, huge_page).ok_or_else(too_large)?;
    if map_len as u64 > isize::MAX as u64 {
        return Err(too_large());
    }
    if huge_page.is_some() {
        // Reading a hole of a hugetlb file needs a free huge page, SIGBUS when there is
        // none. Every huge page the mapping covers must be there, the partial last one too
        // (past the end of the file, the kernel does not allocate one: SIGBUS always).
        let allocated = (st.st_blocks as u64).saturating_mul(512);
        if allocated < map_len as u64 {
            return Err((FrozenErrorKind::HugeTlbHoles { len, allocated }, "fstat"));
        }
        // Pages allocated past the end (`FALLOC_FL_KEEP_SIZE`) count in `st_blocks` too,
        // and hugetlbfs has no `SEEK_HOLE`: the count above cannot prove there is no hole.
        if checks.fully_allocated {
            return Err((
                FrozenErrorKind::Sparse {
                    len,
                    first_hole: None,
                },
                "fstatfs",
            ));
        }
    } else if checks.fully_allocated {
        if let Some(hole) =
            map::first_hole(fd, len).map_err(|e| (FrozenErrorKind::Io(e), "lseek"))?
        {
            return Err((
                FrozenErrorKind::Sparse {
                    len,
                    first_hole: Some(hole),
                },
                "lseek",
            ));
        }
    }
    Ok(Verified {
        seals: found,
        len: len as usize,
        map_len,
        huge_page,
    })
}

/// The error for a descriptor that is not a memfd, saying what it is ([`sys::check_memfd`]).
fn not_a_memfd(fd: BorrowedFd<'_>) -> (FrozenErrorKind, &'static str) {
    let reason = sys::check_memfd(fd)
        .err()
        .unwrap_or_else(|| format!("fd {} is not a memfd that can be frozen", fd.as_raw_fd()));
    (FrozenErrorKind::NotMemfd(reason), "check")
}

/// Freezes a memfd that this crate created (sealable, no seals added yet, not hugetlb) with
/// `len` bytes, of which it holds no mapping any more.
///
/// Nothing of [`Frozen::from_fd`]'s check is needed here, and none is made: the crate made
/// the file with `memfd_create`, sized it itself and never gave the descriptor out, so it
/// knows what it is and how long it is; `F_ADD_SEALS` succeeding is proof of the seals, and
/// `F_GET_SEALS` only fetches the exact set for [`Frozen::seals`] (it may include `Exec`).
///
/// EBUSY can only come from a child forked by another thread in the instant between our
/// `mmap` and `madvise(MADV_DONTFORK)` that has not exec'd or exited yet: retry for about
/// 0.25 s ([`SEAL_RETRY_DELAYS_MS`]) before giving up.
pub(crate) fn freeze_unmapped(file: MemFile, len: usize) -> io::Result<Frozen> {
    freeze_unmapped_with(file, len, |_| {})
}

/// The pauses between attempts to seal while `F_ADD_SEALS` says `EBUSY`: 255 ms in all.
pub(crate) const SEAL_RETRY_DELAYS_MS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// [`freeze_unmapped`], calling `on_busy(attempt)` after each `EBUSY` (for tests).
pub(crate) fn freeze_unmapped_with(
    file: MemFile,
    len: usize,
    mut on_busy: impl FnMut(usize),
) -> io::Result<Frozen> {
    let fd = file.into_fd();
    let mut delays = SEAL_RETRY_DELAYS_MS.iter();
    let mut attempt = 0;
    while let Err(e) = sys::add_seals(fd.as_fd(), freeze_seals()) {
        attempt += 1;
        let busy = e.raw_os_error() == Some(libc::EBUSY);
        let delay = match delays.next() {
            Some(&ms) if busy => ms,
            _ => {
                let op = if busy {
                    "F_ADD_SEALS (retried for 255 ms)"
                } else {
                    "F_ADD_SEALS"
                };
                return Err(FrozenError::new(fd, FrozenErrorKind::Io(e), op).into());
            }
        };
        on_busy(attempt);
        std::thread::sleep(Duration::from_millis(delay));
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
            huge_page: None,
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
    /// # Holes
    ///
    /// Every hole of the file (a page never written: after `set_len`, or reserved by
    /// `fallocate` but not written) becomes an allocated page of zeros, so that the result
    /// passes [`Frozen::from_fd_fully_allocated`]: a regular memfd's holes are read once
    /// through the new mapping (`MADV_POPULATE_READ`), a hugetlb memfd's are allocated with
    /// `fallocate` before sealing (which fails cleanly with `ENOSPC` when the pool has no
    /// free huge page, instead of a reader's `SIGBUS` later). A file that is mostly holes
    /// therefore costs its full length in memory once frozen; the bytes read as zeros
    /// either way.
    ///
    /// ```
    /// use memfile::{MemFile, Seal};
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
        if let Err((kind, op)) = add_freeze_seals(fd.as_fd()) {
            return Err(FrozenError::new(fd, kind, op).into());
        }
        let frozen = Frozen::from_fd(fd)?;
        if frozen.inner.huge_page.is_some() {
            return Ok(frozen); // allocated in full before sealing
        }
        let populated = match frozen.inner.map.get() {
            Some(Some(map)) => map::populate_holes(frozen.as_fd(), map),
            _ => Ok(()), // empty
        };
        match populated {
            Ok(()) => Ok(frozen),
            Err(e) => {
                // Fresh, so not shared: the descriptor goes back in the error.
                let fd = match Arc::try_unwrap(frozen.inner) {
                    Ok(inner) => inner.fd,
                    Err(_) => unreachable!("a Frozen just made has no clone"),
                };
                Err(
                    FrozenError::new(fd, FrozenErrorKind::Io(e), "madvise(MADV_POPULATE_READ)")
                        .into(),
                )
            }
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
///
/// `fallocate` of the whole length: it skips the huge pages that are there already, and it
/// is the only way to know there is no hole (hugetlbfs has no `SEEK_HOLE`, and `st_blocks`
/// counts pages past the end too).
fn allocate_hugetlb_holes(fd: BorrowedFd<'_>) -> io::Result<()> {
    let st = nix::sys::stat::fstat(fd)?;
    if map::hugetlb_page_size(fd, st.st_blksize as u64)?.is_some() && st.st_size > 0 {
        sys::allocate(fd, 0, st.st_size as u64)?;
    }
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
/// use memfile::{Frozen, FrozenErrorKind, MemFile, Seal};
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
/// use memfile::{Frozen, FrozenErrorKind, MemFile};
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
    /// The file has a hole below its end (a page nobody wrote), and full allocation was
    /// required ([`Frozen::from_fd_fully_allocated`]): reading the hole would allocate a
    /// page charged to the reader instead of the sender.
    Sparse {
        /// The file's size in bytes.
        len: u64,
        /// The offset of the first hole (`lseek(SEEK_HOLE)`); `None` for a hugetlb file,
        /// whose holes cannot be located (hugetlbfs reports the whole file as data), and
        /// which is therefore refused whenever full allocation is required.
        first_hole: Option<u64>,
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
            FrozenErrorKind::Sparse {
                len,
                first_hole: Some(hole),
            } => write!(
                f,
                "fd {fd} is a sparse memfd of {len} bytes, not fully allocated: its first hole \
                 is at offset {hole}; reading it would allocate memory the sender never paid for"
            ),
            FrozenErrorKind::Sparse {
                len,
                first_hole: None,
            } => write!(
                f,
                "fd {fd} is a hugetlb memfd of {len} bytes, refused where full allocation is \
                 required: hugetlbfs cannot report holes (lseek says all data, st_blocks counts \
                 pages past the end), and reading a hole is SIGBUS when no huge page is free"
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

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A sealable memfd of one page, written through a plain writable shared mapping (no
    /// `MADV_DONTFORK`): while the mapping lives, `F_SEAL_WRITE` fails with `EBUSY`, as it
    /// would for a child forked between the crate's `mmap` and `madvise`.
    fn busy_file() -> (MemFile, memmap2::MmapMut) {
        let file = MemFile::create_sealable("busy").unwrap();
        file.set_len(4096).unwrap();
        let options = memmap2::MmapOptions::new().len(4096).clone();
        // SAFETY: a fresh memfd of this test; nobody else can resize it.
        let mut map = unsafe { options.map_mut(&file.as_fd()) }.unwrap();
        map[0] = 7;
        (file, map)
    }

    /// safety.md §6: the crate's own freeze retries `EBUSY` over about 0.25 s (8 pauses,
    /// 255 ms in all), then fails with a message that says so and why, and the file comes
    /// back in the error, unsealed, ready to freeze once the mapping is gone.
    #[test]
    fn ebusy_is_retried_for_a_quarter_second_then_reported() {
        let (file, map) = busy_file();
        let raw = file.as_fd().as_raw_fd();
        let mut attempts = Vec::new();
        let started = Instant::now();
        let err = freeze_unmapped_with(file, 4096, |a| attempts.push(a)).unwrap_err();
        let waited = started.elapsed();
        assert_eq!(attempts, (1..=8).collect::<Vec<_>>());
        assert_eq!(SEAL_RETRY_DELAYS_MS.iter().sum::<u64>(), 255);
        // Sleeps last at least as long as asked: a lower bound, not a timing target.
        assert!(waited >= Duration::from_millis(255), "{waited:?}");
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "fd {raw}: F_ADD_SEALS (retried for 255 ms) failed"
            )),
            "{text}"
        );
        assert!(
            text.contains("a writable shared mapping of the file exists"),
            "{text}"
        );
        let fd = err
            .into_inner()
            .unwrap()
            .downcast::<FrozenError>()
            .unwrap()
            .into_fd();
        let file = MemFile::from_fd(fd).unwrap();
        assert!(!file.get_seals().unwrap().contains(Seal::Write));
        drop(map);
        let frozen = freeze_unmapped(file, 4096).unwrap();
        assert_eq!(frozen[0], 7);
    }

    /// A mapping that goes away during the retries (the forked child exec'd or exited) lets
    /// the next attempt succeed.
    #[test]
    fn ebusy_retry_succeeds_once_the_mapping_is_gone() {
        let (file, map) = busy_file();
        let mut map = Some(map);
        let mut attempts = Vec::new();
        let frozen = freeze_unmapped_with(file, 4096, |a| {
            attempts.push(a);
            map = None; // the "child" unmaps
        })
        .unwrap();
        assert_eq!(attempts, [1]);
        assert!(frozen.seals().contains(freeze_seals()));
        assert_eq!(frozen[0], 7);
    }
}
